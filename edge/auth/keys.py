"""NATS nkeys: creating and loading seeds, public keys, verifying signatures.

Seeds and signing come from the ``nkeys`` package; it has no constructor for a new key
and no way to verify against a bare public key, so those two live here (the latter on
PyNaCl, which ``nkeys`` is built on).
"""

from __future__ import annotations

import base64
import binascii
import os

import nacl.exceptions
import nacl.signing
import nkeys

KINDS: dict[str, int] = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,  # public keys start with O, seeds with SO
    "account": nkeys.PREFIX_BYTE_ACCOUNT,  # A, SA
    "user": nkeys.PREFIX_BYTE_USER,  # U, SU
}
_KIND_OF_PREFIX = {prefix: kind for kind, prefix in KINDS.items()}


def create(kind: str) -> nkeys.KeyPair:
    """A fresh key pair of ``kind`` ("operator", "account" or "user")."""
    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), KINDS[kind]))


def load(seed: str | bytes) -> nkeys.KeyPair:
    """The key pair of an encoded seed (``SO...``, ``SA...``, ``SU...``); ValueError if malformed."""
    raw = seed.strip().encode() if isinstance(seed, str) else bytes(seed).strip()
    try:
        pair = nkeys.from_seed(bytearray(raw))
        public_key(pair)  # decodes the prefix: a seed of an unknown kind fails here
    except (nkeys.NkeysError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"not a valid nkey seed ({type(exc).__name__})") from None
    return pair


def public_key(pair: nkeys.KeyPair) -> str:
    return bytes(pair.public_key).decode()


def seed_text(pair: nkeys.KeyPair) -> str:
    return bytes(pair.seed).decode()


def kind_of(public: str) -> str:
    """ "operator", "account" or "user" for a well-formed public key; ValueError otherwise."""
    return _KIND_OF_PREFIX[_decode_public(public)[0]]


def verify(public: str, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the ed25519 signature of ``data`` by ``public``."""
    _, raw = _decode_public(public)
    try:
        nacl.signing.VerifyKey(raw).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, ValueError):
        return False
    return True


def _decode_public(public: str) -> tuple[int, bytes]:
    """(prefix byte, 32 key bytes) of an encoded public key, checksum checked."""
    try:
        raw = base64.b32decode(public.encode() + b"=" * (-len(public) % 8))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise ValueError(f"{public[:12]!r}...: not base32") from None
    if len(raw) != 35:
        raise ValueError(f"{public[:12]!r}...: not a public nkey (wrong length)")
    body, checksum = raw[:-2], raw[-2:]
    if nkeys.crc16_checksum(body) != checksum:
        raise ValueError(f"{public[:12]!r}...: bad nkey checksum")
    if body[0] not in _KIND_OF_PREFIX:
        raise ValueError(f"{public[:12]!r}...: not an operator, account or user key")
    return body[0], body[1:]
