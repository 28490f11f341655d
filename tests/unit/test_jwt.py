"""edge.auth without a server: NATS JWT v2 encoding, signatures, jti, creds files, the
role templates and the key store on disk."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path

import nkeys
import pytest

import edge.auth as auth
from edge.auth import jwt, keys, roles


def _parts(token: str) -> tuple[dict, dict, bytes]:
    def unb64(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    head, body, sig = token.split(".")
    assert "=" not in token  # base64url without padding
    return json.loads(unb64(head)), json.loads(unb64(body)), unb64(sig)


def test_encode_decode_round_trip() -> None:
    account = keys.create("account")
    user = keys.create("user")
    claims = jwt.user_claims(keys.public_key(user), "n1", issuer_account="A" + "B" * 55)
    token = jwt.encode(claims, account, iat=1_800_000_000)
    header, body, _ = _parts(token)
    assert header == {"typ": "JWT", "alg": "ed25519-nkey"}
    decoded = jwt.decode(token)
    assert decoded == body
    assert decoded["iss"] == keys.public_key(account)
    assert decoded["sub"] == keys.public_key(user) and decoded["name"] == "n1"
    assert decoded["iat"] == 1_800_000_000
    assert decoded["nats"] == {"issuer_account": "A" + "B" * 55, "type": "user", "version": 2}
    assert "jti" not in claims  # the caller's claims are left alone


def test_signature_verifies_with_nkeys() -> None:
    operator = keys.create("operator")
    token = jwt.encode(jwt.operator_claims(keys.public_key(operator), "op", [], "A" * 56), operator)
    head, body, sig = token.split(".")
    raw_sig = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    assert operator.verify(f"{head}.{body}".encode(), raw_sig)  # nkeys' own check
    assert keys.verify(keys.public_key(operator), f"{head}.{body}".encode(), raw_sig)
    assert not keys.verify(keys.public_key(keys.create("operator")), f"{head}.{body}".encode(), raw_sig)

    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["nats"]["system_account"] = "A" * 55 + "B"  # the claims changed, the signature kept
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    with pytest.raises(ValueError, match="signature"):
        jwt.decode(f"{head}.{forged}.{sig}")
    jwt.decode(f"{head}.{forged}.{sig}", verify=False)  # still parses without the check


def test_jti_is_stable_and_covers_the_standard_claims_only() -> None:
    signer = keys.create("account")
    subject = keys.public_key(keys.create("user"))
    one = jwt.decode(jwt.encode(jwt.user_claims(subject, "a"), signer, iat=1_800_000_000))
    two = jwt.decode(
        jwt.encode(jwt.user_claims(subject, "a", template={"pub": {"allow": ["x"]}}), signer, iat=1_800_000_000)
    )
    assert one["jti"] == two["jti"]  # as github.com/nats-io/jwt: the nats part is not hashed
    assert one["nats"] != two["nats"]
    later = jwt.decode(jwt.encode(jwt.user_claims(subject, "a"), signer, iat=1_800_000_001))
    renamed = jwt.decode(jwt.encode(jwt.user_claims(subject, "b"), signer, iat=1_800_000_000))
    assert len({one["jti"], later["jti"], renamed["jti"]}) == 3
    # base32, no padding, of SHA-512/256 over {"iat","iss","name","sub"} in the Go field order
    standard = json.dumps({"iat": one["iat"], "iss": one["iss"], "name": "a", "sub": subject}, separators=(",", ":"))
    digest = hashlib.new("sha512_256", standard.encode()).digest()
    assert one["jti"] == base64.b32encode(digest).decode().rstrip("=")
    assert jwt.jti(one) == one["jti"]


def test_malformed_tokens_are_refused() -> None:
    for bad in ("", "a.b", "a.b.c", "x" * 40, "e30.e30.e30"):
        with pytest.raises(ValueError):
            jwt.decode(bad)
    header = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"ed25519"}').rstrip(b"=").decode()
    with pytest.raises(ValueError, match="alg"):
        jwt.decode(f"{header}.e30.AA")


def test_scoped_user_carries_no_permissions_and_limits_are_never_zero() -> None:
    scoped = jwt.user_claims("U" * 56, "n1", issuer_account="A" * 56)
    assert set(scoped["nats"]) == {"issuer_account", "type", "version"}
    plain = jwt.user_claims("U" * 56, "sys")
    assert plain["nats"]["subs"] == plain["nats"]["data"] == plain["nats"]["payload"] == -1
    account = jwt.account_claims("A" * 56, "HIVE", jetstream=True)
    limits = account["nats"]["limits"]
    assert all(limits[k] == -1 for k in ("subs", "data", "payload", "imports", "exports", "conn", "leaf"))
    assert all(limits[k] == -1 for k in ("mem_storage", "disk_storage", "streams", "consumer"))
    assert "mem_storage" not in jwt.account_claims("A" * 56, "SYS")["nats"]["limits"]
    scope = jwt.user_scope("A" * 56, "node", roles.TEMPLATES["node"])
    assert scope["kind"] == "user_scope" and scope["template"]["subs"] == -1
    assert "hive.task.*.completed.{{name()}}" in scope["template"]["pub"]["allow"]


def test_creds_file_round_trip(tmp_path: Path) -> None:
    user = keys.create("user")
    token = jwt.encode(jwt.user_claims(keys.public_key(user), "alice"), keys.create("account"))
    text = jwt.creds_file(token, keys.seed_text(user))
    lines = text.splitlines()
    assert lines[0] == "-----BEGIN NATS USER JWT-----" and lines[1] == token
    assert lines[2] == "------END NATS USER JWT------"
    assert lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1] == keys.seed_text(user)
    path = tmp_path / "alice.creds"
    path.write_text(text)
    creds = jwt.read_creds(path)
    assert creds.jwt == token and creds.seed == keys.seed_text(user)
    assert creds.claims["name"] == "alice"
    # what nats-py signs the nonce with is the same key
    assert keys.public_key(nkeys.from_seed(bytearray(creds.seed.encode()))) == creds.claims["sub"]


def _creds(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "bad.creds"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_read_creds_refuses_broken_files_with_one_line(tmp_path: Path) -> None:
    user, other = keys.create("user"), keys.create("user")
    token = jwt.encode(jwt.user_claims(keys.public_key(user), "alice"), keys.create("account"))
    good = jwt.creds_file(token, keys.seed_text(user))
    seed_only = good[good.index("***") :]
    cases = {
        "no user JWT block": seed_only,
        "no user nkey seed block": good[: good.index("***")],
        "bad user JWT": good.replace(token, "garbage.garbage.garbage"),
        "must be one line": good.replace(token + "\n", ""),
        "not a user nkey seed": good.replace(keys.seed_text(user), "S" * 58),
        "does not belong": jwt.creds_file(token, keys.seed_text(other)),
        "CRLF": good.replace("\n", "\r\n"),
        "not a creds file": b"\xff\xfe binary",
        "cannot read": None,
    }
    for expected, text in cases.items():
        path = tmp_path / "missing.creds" if text is None else _creds(tmp_path, text)
        with pytest.raises(ValueError, match=expected) as caught:
            jwt.read_creds(path)
        assert "\n" not in str(caught.value)
        assert str(caught.value).startswith(str(path))
    account = keys.create("account")
    account_jwt = jwt.encode(jwt.account_claims(keys.public_key(account), "A"), keys.create("operator"))
    with pytest.raises(ValueError, match="not a user JWT"):
        jwt.read_creds(_creds(tmp_path, jwt.creds_file(account_jwt, keys.seed_text(user))))


def test_keys_kinds_and_checksums() -> None:
    for kind, letter in (("operator", "O"), ("account", "A"), ("user", "U")):
        pair = keys.create(kind)
        assert keys.public_key(pair).startswith(letter) and keys.seed_text(pair).startswith("S" + letter)
        assert keys.kind_of(keys.public_key(pair)) == kind
        assert keys.public_key(keys.load(keys.seed_text(pair))) == keys.public_key(pair)
    public = keys.public_key(keys.create("user"))
    with pytest.raises(ValueError, match="checksum"):
        keys.kind_of(public[:-1] + ("A" if public[-1] != "A" else "B"))
    with pytest.raises(ValueError):
        keys.load("SUNOTASEED")


def test_names_must_be_ids_so_templates_cannot_widen() -> None:
    for bad in ("*", ">", "a.b", "a b", "", "x" * 65, "n1\n"):
        with pytest.raises(ValueError):
            roles.check_name(bad)
    with pytest.raises(ValueError, match="unknown role"):
        roles.check_role("admin")
    node = roles.expand("node", "n1")
    assert "hive.task.*.completed.n1" in node["pub"]["allow"] and "_INBOX.n1.>" in node["sub"]["allow"]
    for role in roles.ROLES:
        for rules in roles.expand(role, "someone").values():
            for subject in (s for subjects in rules.values() for s in subjects):
                assert " " not in subject and "" not in subject.split("."), subject


def test_store_creates_once_and_keeps_secrets_private(tmp_path: Path) -> None:
    first = auth.ensure(tmp_path)
    again = auth.ensure(tmp_path)
    assert first == again  # loaded, not re-created or re-signed
    claims = jwt.decode(first.account_jwt)
    scopes = {s["role"]: s for s in claims["nats"]["signing_keys"]}
    assert set(scopes) == set(roles.ROLES)
    assert claims["nats"]["limits"]["disk_storage"] == -1
    assert jwt.decode(first.operator_jwt)["nats"]["system_account"] == first.system_account
    path = auth.issue_user(tmp_path, "node", "n1")
    assert path == tmp_path / "creds" / "node-n1.creds"
    user = jwt.read_creds(path).claims
    assert user["iss"] == scopes["node"]["key"] and user["nats"]["issuer_account"] == first.account
    for secret in [*tmp_path.glob("keys/*.nk"), *tmp_path.glob("creds/*.creds")]:
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    assert auth.users(tmp_path)["n1"]["role"] == "node"
    with pytest.raises(ValueError, match="is a node"):
        auth.issue_user(tmp_path, "client", "n1")


def test_revocation_resigns_the_account_with_a_later_iat(tmp_path: Path) -> None:
    before = auth.ensure(tmp_path).account_jwt
    auth.issue_user(tmp_path, "client", "alice")
    old_key = auth.users(tmp_path)["alice"]["public_key"]
    auth.issue_user(tmp_path, "client", "alice")  # a second key for the same name
    new_key = auth.users(tmp_path)["alice"]["public_key"]
    after = auth.revoke_user(tmp_path, "alice")
    revoked = jwt.decode(after)
    assert set(revoked["nats"]["revocations"]) == {old_key, new_key}
    assert revoked["iat"] > jwt.decode(before)["iat"] and revoked["jti"] != jwt.decode(before)["jti"]
    assert auth.ensure(tmp_path).account_jwt == after
    assert auth.users(tmp_path)["alice"]["revoked"]
    with pytest.raises(KeyError):
        auth.revoke_user(tmp_path, "nobody")


def test_server_config_snippet(tmp_path: Path) -> None:
    authority = auth.ensure(tmp_path / "auth")
    text = auth.server_config(tmp_path / "auth", tmp_path / "resolver")
    assert f'operator: "{authority.operator_jwt}"' in text
    assert f"system_account: {authority.system_account}" in text
    assert "type: full" in text and "allow_delete: false" in text
    assert json.dumps(str((tmp_path / "resolver").resolve())) in text
    for key, token in authority.accounts.items():
        assert f'{key}: "{token}"' in text


def test_readme_permission_table_is_generated() -> None:
    from edge.auth.matrix import matrix_markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- matrix:begin", 1)[1].split("-->", 1)[1].split("<!-- matrix:end -->", 1)[0]
    assert block.strip() == matrix_markdown().strip(), "README permission table is stale: paste matrix_markdown()"
