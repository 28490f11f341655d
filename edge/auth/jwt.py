"""NATS JWT v2: encoding, decoding and signing the claims nats-server trusts, and creds files.

A token is ``base64url(header).base64url(claims).base64url(signature)`` without padding,
the signature the issuer nkey's ed25519 signature of the first two parts. ``jti`` is as
github.com/nats-io/jwt/v2 computes it: base32 (no padding) of a SHA-512/256 hash of the
JSON of the standard claims alone (``aud exp iat iss name nbf sub``, in that order, empty
ones left out). The builders write the fields of that library's v2 structs.

Two things the server relies on: a limit left out is 0, and 0 means *none* (a user with
``subs`` 0 is disconnected at once), so every limit not meant to bind is -1; and a user
issued by a ``user_scope`` signing key carries no permissions and no limits (the server
takes them from the scope's ``template`` and refuses the user otherwise).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import nkeys

from edge.auth import keys

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
VERSION = 2
UNLIMITED = -1
_STANDARD = ("aud", "exp", "iat", "iss", "name", "nbf", "sub")  # ClaimsData's field order

Claims = dict[str, Any]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def jti(claims: Claims) -> str:
    """The claim id: the hash of the standard claims (not of ``nats``: two claims that
    differ only there, issued in the same second, share a ``jti``)."""
    standard = {key: claims[key] for key in _STANDARD if claims.get(key)}
    digest = hashlib.new("sha512_256", _json(standard)).digest()
    return base64.b32encode(digest).rstrip(b"=").decode()


def encode(claims: Claims, signer: nkeys.KeyPair, *, iat: int | None = None) -> str:
    """Sign ``claims`` (``sub``, ``name``, ``nats`` set by a builder) as ``signer``: sets
    ``iss``, ``iat`` (now, unless given) and ``jti``; the caller's dict is not changed."""
    if not claims.get("sub"):
        raise ValueError("claims need a subject")
    body = {key: value for key, value in claims.items() if key != "jti"}
    body["iss"] = keys.public_key(signer)
    body["iat"] = int(time.time()) if iat is None else int(iat)
    body = {"jti": jti(body), **body}
    signed = f"{_b64(_json(HEADER))}.{_b64(_json(body))}"
    return f"{signed}.{_b64(signer.sign(signed.encode()))}"


def decode(token: str, *, verify: bool = True) -> Claims:
    """The claims of ``token``; ValueError if it is malformed or (``verify``) its
    signature is not its issuer's. Says nothing about whether the issuer is trusted."""
    parts = token.strip().split(".")
    if len(parts) != 3 or not all(parts):
        raise ValueError("not a JWT: expected three dot-separated parts")
    try:
        header, claims, signature = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1])), _unb64(parts[2])
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("not a JWT: a part is not base64url JSON") from None
    if not isinstance(header, dict) or str(header.get("typ", "")).upper() != "JWT":
        raise ValueError("not a NATS JWT: header typ is not JWT")
    if str(header.get("alg", "")).lower() != HEADER["alg"]:
        raise ValueError(f"not a NATS JWT v2: alg {header.get('alg')!r}")
    if not isinstance(claims, dict) or not isinstance(claims.get("nats"), dict):
        raise ValueError("not a NATS JWT: no nats claims")
    if verify:
        issuer = str(claims.get("iss", ""))
        if not keys.verify(issuer, f"{parts[0]}.{parts[1]}".encode(), signature):
            raise ValueError(f"JWT signature is not {issuer[:12]}...'s")
    return claims


def _nats(kind: str, **fields: Any) -> dict[str, Any]:
    return {**{k: v for k, v in fields.items() if v not in (None, [], {})}, "type": kind, "version": VERSION}


def operator_claims(subject: str, name: str, signing_keys: list[str], system_account: str) -> Claims:
    """Self-signed by the operator's identity key; accounts are signed by a signing key."""
    return {
        "sub": subject,
        "name": name,
        "nats": _nats("operator", signing_keys=sorted(signing_keys), system_account=system_account),
    }


def permission(allow: list[str] | None = None, deny: list[str] | None = None) -> dict[str, list[str]]:
    return {k: list(v) for k, v in (("allow", allow), ("deny", deny)) if v}


def user_limits(template: dict[str, Any]) -> dict[str, Any]:
    """A permission template (``{"pub": {...}, "sub": {...}}``) as user permission limits."""
    limits: dict[str, Any] = {"subs": UNLIMITED, "data": UNLIMITED, "payload": UNLIMITED}
    for side in ("pub", "sub"):
        limits[side] = permission(template.get(side, {}).get("allow"), template.get(side, {}).get("deny"))
    return limits


def user_scope(key: str, role: str, template: dict[str, Any], description: str = "") -> dict[str, Any]:
    """A scoped signing key: every user it signs gets ``template``'s permissions."""
    return {
        "kind": "user_scope",
        "key": key,
        "role": role,
        "template": user_limits(template),
        "description": description,
    }


def account_claims(
    subject: str,
    name: str,
    *,
    signing_keys: Sequence[dict[str, Any] | str] = (),
    revocations: dict[str, int] | None = None,
    jetstream: bool = False,
    disallow_bearer: bool = True,
) -> Claims:
    """An account, unlimited but for JetStream (off unless asked: 0 storage means off)."""
    limits: dict[str, Any] = {
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
        "imports": UNLIMITED,
        "exports": UNLIMITED,
        "wildcards": True,
        "conn": UNLIMITED,
        "leaf": UNLIMITED,
    }
    if disallow_bearer:
        limits["disallow_bearer"] = True
    if jetstream:
        limits.update(mem_storage=UNLIMITED, disk_storage=UNLIMITED, streams=UNLIMITED, consumer=UNLIMITED)
    ordered = sorted(signing_keys, key=lambda k: k if isinstance(k, str) else k["key"])
    return {
        "sub": subject,
        "name": name,
        "nats": _nats(
            "account", limits=limits, signing_keys=ordered, revocations=dict(sorted((revocations or {}).items()))
        ),
    }


def user_claims(
    subject: str, name: str, *, issuer_account: str | None = None, template: dict[str, Any] | None = None
) -> Claims:
    """A user. With ``issuer_account`` it is a scoped user (signed by one of that
    account's ``user_scope`` keys) and carries nothing else: ``name`` is what the scope's
    ``{{name()}}`` expands to. Without it, the user has ``template``'s permissions (none
    given: everything)."""
    if issuer_account:
        return {"sub": subject, "name": name, "nats": _nats("user", issuer_account=issuer_account)}
    return {"sub": subject, "name": name, "nats": _nats("user", **user_limits(template or {}))}


# creds files: what `nsc generate creds` writes and nats clients read

_JWT_BEGIN, _JWT_END = "-----BEGIN NATS USER JWT-----", "------END NATS USER JWT------"
_SEED_BEGIN, _SEED_END = "-----BEGIN USER NKEY SEED-----", "------END USER NKEY SEED------"
_NOTICE = """************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets."""
_SEED_LINE = re.compile(r"\ASU[A-Z2-7]{56}\Z")


class Creds(NamedTuple):
    jwt: str
    seed: str
    claims: Claims


def creds_file(user_jwt: str, user_seed: str | bytes) -> str:
    """The text of a creds file: the decorated user JWT, then the decorated seed."""
    seed = user_seed.decode() if isinstance(user_seed, bytes) else user_seed
    return (
        f"{_JWT_BEGIN}\n{user_jwt.strip()}\n{_JWT_END}\n\n{_NOTICE}\n\n"
        f"{_SEED_BEGIN}\n{seed.strip()}\n{_SEED_END}\n\n{'*' * 61}\n"
    )


def read_creds(path: str | Path) -> Creds:
    """Check a creds file the way nats-py reads it (the line after each BEGIN marker is the
    value; it loops forever on a file without the JWT block) and that the JWT is a signed
    user JWT whose subject is the seed's public key. One-line ValueError otherwise."""
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{where}: cannot read creds file: {exc.strerror}") from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not a creds file (not ASCII text)") from None
    if "\r" in text:
        raise ValueError(f"{where}: CRLF line endings (nats clients would read a stray '\\r')")
    lines = text.split("\n")
    token = _block(lines, _JWT_BEGIN, _JWT_END, where, "user JWT")
    seed = _block(lines, _SEED_BEGIN, _SEED_END, where, "user nkey seed")
    try:
        claims = decode(token)
    except ValueError as exc:
        raise ValueError(f"{where}: bad user JWT: {exc}") from None
    if claims["nats"].get("type") != "user":
        raise ValueError(f"{where}: the JWT is a {claims['nats'].get('type')!r} JWT, not a user JWT")
    if not _SEED_LINE.match(seed):
        raise ValueError(f"{where}: the seed is not a user nkey seed (SU...)")
    try:
        public = keys.public_key(keys.load(seed))
    except ValueError as exc:
        raise ValueError(f"{where}: bad user seed: {exc}") from None
    if public != claims.get("sub"):
        raise ValueError(f"{where}: the seed does not belong to the JWT's user {claims.get('sub')}")
    return Creds(token, seed, claims)


def _block(lines: list[str], begin: str, end: str, where: str, what: str) -> str:
    starts = [i for i, line in enumerate(lines) if begin in line]
    if not starts:
        raise ValueError(f"{where}: no {what} block ({begin!r} missing)")
    if len(starts) > 1:
        raise ValueError(f"{where}: more than one {what} block")
    i = starts[0]
    if i + 2 >= len(lines) or end not in lines[i + 2] or not lines[i + 1].strip():
        raise ValueError(f"{where}: the {what} block must be one line between {begin!r} and {end!r}")
    if lines[i + 1] != lines[i + 1].strip():
        raise ValueError(f"{where}: whitespace around the {what} (nats clients read the line as it is)")
    return lines[i + 1]
