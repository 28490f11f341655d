"""The operator-mode key store on disk: an operator, the system account ``SYS`` (with the
user that pushes account updates), and the ``HIVE`` account with one scoped signing key
per role; the users issued, and the revocations.

Layout of the directory (0700; every seed and creds file 0600)::

    keys/operator.nk  keys/operator-signing.nk  keys/SYS.nk  keys/HIVE.nk
    keys/HIVE-<role>.nk  keys/sys-user.nk          seeds
    operator.jwt  accounts/SYS.jwt  accounts/HIVE.jwt
    creds/sys.creds  creds/<role>-<name>.creds
    users.json                                      the registry, revocations included

Every JWT is derived from the keys, the role templates (``edge.auth.roles``) and the
registry; ``ensure`` re-signs one only when what it grants changed, with an ``iat`` past
the last one's (a full resolver drops a JWT whose ``jti`` equals the stored one's, and the
``jti`` covers only the standard claims, so a same-second re-sign would be ignored).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

from edge.auth import jwt, keys
from edge.auth.roles import ROLES, TEMPLATES, check_name, check_role

OPERATOR = "hive-operator"
SYSTEM = "SYS"
ACCOUNT = "HIVE"
REGISTRY = "users.json"
CLAIMS_UPDATE = "$SYS.REQ.CLAIMS.UPDATE"


@dataclass(frozen=True)
class Authority:
    """What the server and the tools need to know of a key store."""

    directory: Path
    operator_jwt: str
    system_account: str  # SYS public key
    account: str  # HIVE public key
    accounts: dict[str, str]  # account public key -> account JWT
    system_creds: Path

    @property
    def account_jwt(self) -> str:
        return self.accounts[self.account]


class AccountUpdateError(RuntimeError):
    """The server refused an account JWT pushed to it."""


def ensure(directory: str | Path) -> Authority:
    """Create the operator, accounts and signing keys in ``directory``, or load them."""
    root = Path(directory)
    with _locked(root):
        return _ensure(root)


def issue_user(directory: str | Path, role: str, name: str) -> Path:
    """A new user ``name`` of ``role``: a fresh key, signed by the role's scoped key.
    Writes ``creds/<role>-<name>.creds`` and records the user; issuing a name again (same
    role) replaces its key, the old one staying valid until revoked."""
    check_role(role)
    check_name(name)
    root = Path(directory)
    with _locked(root):
        authority = _ensure(root)
        registry = _registry(root)
        known = registry["users"].get(name)
        if known is not None and known["role"] != role:
            raise ValueError(f"user {name!r} is a {known['role']}, not a {role}")
        user = keys.create("user")
        signer = _key(root, f"{ACCOUNT}-{role}", "account")
        token = jwt.encode(jwt.user_claims(keys.public_key(user), name, issuer_account=authority.account), signer)
        path = root / "creds" / f"{role}-{name}.creds"
        _write(path, jwt.creds_file(token, keys.seed_text(user)), secret=True)
        earlier = [] if known is None else [*known.get("previous_keys", []), known["public_key"]]
        registry["users"][name] = {
            "role": role,
            "public_key": keys.public_key(user),
            "created": int(time.time()),
            "creds": str(path.relative_to(root)),
            "previous_keys": earlier,
            "revoked": None,
        }
        _save_registry(root, registry)
        return path


def revoke_user(directory: str | Path, name: str) -> str:
    """Revoke every key ever issued to ``name``: adds them to the HIVE account's
    ``revocations`` (JWTs issued up to now) and returns the re-signed account JWT, which
    takes effect once the server has it (``push_account``, or the next start's preload)."""
    root = Path(directory)
    with _locked(root):
        registry = _registry(root)
        user = registry["users"].get(name)
        if user is None:
            raise KeyError(f"no user {name!r} in {root / REGISTRY}")
        now = int(time.time())
        for public in (*user.get("previous_keys", []), user["public_key"]):
            registry["revocations"][public] = now
        user["revoked"] = now
        _save_registry(root, registry)
        return _ensure(root).account_jwt


def users(directory: str | Path) -> dict[str, dict[str, Any]]:
    """The registry: name -> role, public key, created (unix time), revoked (or None)."""
    return _registry(Path(directory))["users"]


def server_config(directory: str | Path, resolver_dir: str | Path) -> str:
    """The operator-mode part of a nats-server config: the trusted operator, the system
    account, a full resolver in ``resolver_dir`` seeded with both accounts. Operator mode
    admits no ``authorization``/``accounts`` blocks beside it."""
    authority = ensure(directory)
    preload = "\n".join(f"  {key}: {json.dumps(token)}" for key, token in sorted(authority.accounts.items()))
    return (
        f"operator: {json.dumps(authority.operator_jwt)}\n"
        f"system_account: {authority.system_account}\n"
        "resolver: {\n"
        "  type: full\n"
        f"  dir: {json.dumps(str(Path(resolver_dir).resolve()))}\n"
        "  allow_delete: false\n"
        "}\n"
        f"resolver_preload: {{\n{preload}\n}}\n"
    )


async def push_account(nc_sys: Any, account_jwt: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send an account JWT to the running server(s) as the system user (a connection made
    with ``Authority.system_creds``); returns the server's ``data`` (code 200, "jwt
    updated"). A revocation takes effect with it: revoked users are disconnected."""
    msg = await nc_sys.request(CLAIMS_UPDATE, account_jwt.encode(), timeout=timeout)
    reply = json.loads(msg.data)
    if reply.get("error"):
        raise AccountUpdateError(str(reply["error"].get("description") or reply["error"]))
    data = reply.get("data") or {}
    if data.get("code") != 200:
        raise AccountUpdateError(f"unexpected reply to {CLAIMS_UPDATE}: {reply}")
    return data


# internals


def _ensure(root: Path) -> Authority:
    for sub in (root, root / "keys", root / "creds", root / "accounts"):
        sub.mkdir(parents=True, exist_ok=True)
        sub.chmod(0o700)
    operator = _key(root, "operator", "operator")
    operator_signing = _key(root, "operator-signing", "operator")
    system = _key(root, SYSTEM, "account")
    account = _key(root, ACCOUNT, "account")
    sys_pub, hive_pub = keys.public_key(system), keys.public_key(account)
    operator_jwt = _signed(
        root / "operator.jwt",
        jwt.operator_claims(keys.public_key(operator), OPERATOR, [keys.public_key(operator_signing)], sys_pub),
        operator,
    )
    system_jwt = _signed(root / "accounts" / f"{SYSTEM}.jwt", jwt.account_claims(sys_pub, SYSTEM), operator_signing)
    scopes = [
        jwt.user_scope(
            keys.public_key(_key(root, f"{ACCOUNT}-{role}", "account")), role, TEMPLATES[role], f"HiveMind {role}s"
        )
        for role in ROLES
    ]
    revocations = _registry(root)["revocations"]
    hive_jwt = _signed(
        root / "accounts" / f"{ACCOUNT}.jwt",
        jwt.account_claims(hive_pub, ACCOUNT, signing_keys=scopes, revocations=revocations, jetstream=True),
        operator_signing,
    )
    system_creds = root / "creds" / "sys.creds"
    if not system_creds.exists():
        user = _key(root, "sys-user", "user")
        token = jwt.encode(jwt.user_claims(keys.public_key(user), "sys"), system)
        _write(system_creds, jwt.creds_file(token, keys.seed_text(user)), secret=True)
    return Authority(root, operator_jwt, sys_pub, hive_pub, {sys_pub: system_jwt, hive_pub: hive_jwt}, system_creds)


def _key(root: Path, name: str, kind: str) -> nkeys.KeyPair:
    path = root / "keys" / f"{name}.nk"
    if path.exists():
        pair = keys.load(path.read_text())
        if keys.kind_of(keys.public_key(pair)) != kind:
            raise ValueError(f"{path}: not an {kind} seed")
        return pair
    pair = keys.create(kind)
    _write(path, keys.seed_text(pair) + "\n", secret=True)
    return pair


def _signed(path: Path, claims: jwt.Claims, signer: nkeys.KeyPair) -> str:
    """The JWT at ``path`` if it already says ``claims`` as ``signer``; else a new one."""
    last_iat = 0
    if path.exists():
        try:
            old = jwt.decode(path.read_text())
        except ValueError:
            old = {}
        same = all(old.get(k) == claims[k] for k in ("sub", "name", "nats"))
        if same and old.get("iss") == keys.public_key(signer):
            return path.read_text().strip()
        last_iat = int(old.get("iat", 0))
    token = jwt.encode(claims, signer, iat=max(int(time.time()), last_iat + 1))
    _write(path, token + "\n", secret=False)
    return token


def _registry(root: Path) -> dict[str, Any]:
    path = root / REGISTRY
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault("users", {})
    data.setdefault("revocations", {})
    return data


def _save_registry(root: Path, registry: dict[str, Any]) -> None:
    _write(root / REGISTRY, json.dumps(registry, indent=2, sort_keys=True) + "\n", secret=True)


def _write(path: Path, text: str, *, secret: bool) -> None:
    """Atomically, and a secret never readable by others, not even for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o600 if secret else 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
