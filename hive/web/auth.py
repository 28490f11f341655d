"""Web logins: an HMAC-signed ``{name, exp}`` token, the role read from the key store.

The token names a person and when it expires, nothing else: the role is looked up in the
key store (``edge.auth.users``) on every request, so revoking a person or changing their
role takes effect at once, without a token list to keep. The signing secret lives next to
the key store (``<data>/auth/web.secret``, 0600), made on first use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from edge.auth import users
from edge.config import PERSON_ROLES

SECRET_FILE = "web.secret"
DEFAULT_TTL_S = 7 * 24 * 3600
COOKIE = "hive_session"
CSRF_HEADER = "X-Hive-Request"  # a custom header no cross-site form or image can send
MAX_TOKEN_CHARS = 1024


class BadToken(Exception):
    """A token that is malformed, forged, expired, or names nobody who may log in."""


@dataclass(frozen=True)
class Person:
    name: str
    role: str  # operator, client or auditor
    expires: int

    @property
    def can_act(self) -> bool:
        return self.role in ("operator", "client")

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


def load_secret(store: Path) -> bytes:
    """The signing secret, created 0600 on first use; two racing processes agree (O_EXCL)."""
    path = store / SECRET_FILE
    store.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the winner may be between open and write
            text = path.read_text().strip()
            if text:
                return bytes.fromhex(text)
            time.sleep(0.01)
        raise BadToken(f"{path} is empty: delete it to make a new one") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text().strip())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, name: str, ttl_s: float = DEFAULT_TTL_S, now: float | None = None) -> str:
    exp = int((time.time() if now is None else now) + ttl_s)
    body = _b64(json.dumps({"n": name, "exp": exp}, separators=(",", ":")).encode())
    return f"{body}.{_b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())}"


def verify(secret: bytes, token: str, now: float | None = None) -> tuple[str, int]:
    """(name, expiry) of a token this secret signed and that has not expired."""
    if not token or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise BadToken("malformed login token")
    body, mac = token.split(".")
    expected = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac, expected):
        raise BadToken("login token not signed by this service")
    try:
        claims = json.loads(_unb64(body))
        name, exp = str(claims["n"]), int(claims["exp"])
    except (ValueError, KeyError, TypeError):
        raise BadToken("malformed login token") from None
    if exp <= (time.time() if now is None else now):
        raise BadToken("login token expired: ask for a new one (`hive web token NAME`)")
    return name, exp


def person(store: Path, secret: bytes, token: str) -> Person:
    """Who ``token`` logs in now: its name's role in the key store, unless revoked."""
    name, exp = verify(secret, token)
    known = users(store).get(name) if (store / "users.json").exists() else None
    if known is None:
        raise BadToken(f"no person {name!r} in the key store")
    if known.get("revoked"):
        raise BadToken(f"{name}'s credential was revoked")
    if known["role"] not in PERSON_ROLES:
        raise BadToken(f"{name} is a {known['role']}, not a person")
    return Person(name, known["role"], exp)
