"""Where things are: data directory, server URL, and whose credentials to use.

The server URL comes from ``--server``, then ``HIVE_SERVER``, then the local ``hive up``.
Credentials are a NATS ``.creds`` file (operator mode: a user JWT and its seed): ``--creds``,
then ``HIVE_CREDS``, then the local key store ``hive up`` keeps under ``<data>/auth``,
where each service and the local person have their own (issued on first use there). The
server's CA for ``tls://`` URLs: ``--ca``, then ``HIVE_CA``, then the local key store's.
"""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path

import msgspec

from events.subjects import as_id

DEFAULT_PORT = 4222
STATE_FILE = "cluster.json"
AUTH_DIR = "auth"  # the key store: operator, accounts, role signing keys, issued creds
CA_FILE = "tls/ca.pem"
COORDINATOR_USER = "coordinator"
PERSON_ROLES = ("client", "operator", "auditor")


def data_dir(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get("HIVE_DATA") or ".hive").resolve()


def auth_dir(data: str | Path | None = None) -> Path:
    return data_dir(data) / AUTH_DIR


def local_person() -> str:
    """The name the person at this machine gets in the local key store (an id: their login
    name, with anything else replaced)."""
    try:
        login = getpass.getuser()
    except (KeyError, OSError):
        login = "operator"
    return as_id(login) or "operator"


class Target(msgspec.Struct, frozen=True):
    url: str
    creds: str | None = None  # a .creds file; None: an unauthenticated server (or userinfo in the URL)
    ca: str | None = None  # verify a tls:// server against this CA
    user: str | None = None  # who this is when it has no credential of its own: its inbox prefix


def _local_default(directory: Path) -> str:
    state = directory / STATE_FILE
    if state.exists():
        try:
            return str(json.loads(state.read_text())["server"])
        except (ValueError, KeyError):
            pass
    return f"nats://127.0.0.1:{DEFAULT_PORT}"


def local_creds(directory: Path, role: str, name: str) -> Path | None:
    """The creds of ``name`` in the local key store, issued now if the store exists but
    has none yet (a node or person on the machine that runs ``hive up``); None without a
    store."""
    store = directory / AUTH_DIR
    if not (store / "operator.jwt").exists():
        return None
    from edge.auth import issue_user, users

    known = users(store).get(name)
    path = store / "creds" / f"{role}-{name}.creds"
    if known is not None and known["role"] == role and not known.get("revoked") and path.exists():
        return path
    if known is not None and (known["role"] != role or known.get("revoked")):
        return path if path.exists() else None  # revoked or another role's: let the server refuse it
    return issue_user(store, role, name)


def resolve(
    server: str | None,
    role: str,
    data: str | Path | None = None,
    *,
    name: str | None = None,
    creds: str | Path | None = None,
    ca: str | Path | None = None,
) -> Target:
    """Where to connect and as whom. ``role``/``name``: who this process is in the local key
    store (a person's roles share the local person's credential)."""
    directory = data_dir(data)
    url = server or os.environ.get("HIVE_SERVER") or _local_default(directory)
    url = ",".join(u if "://" in u else f"nats://{u}" for u in url.split(","))
    chosen = creds or os.environ.get("HIVE_CREDS") or None
    if chosen is None and "@" not in url:
        if role in PERSON_ROLES:
            role, name = "operator", local_person()
        found = local_creds(directory, role, name or (COORDINATOR_USER if role == "coordinator" else role))
        chosen = str(found) if found else None
    authority = ca or os.environ.get("HIVE_CA") or None
    if authority is None and (directory / AUTH_DIR / CA_FILE).exists():
        authority = str(directory / AUTH_DIR / CA_FILE)
    user = None if chosen else name
    return Target(url, str(chosen) if chosen else None, str(authority) if authority else None, user)


def user_of(target: Target) -> str:
    """The name the server knows ``target``'s credential by (its JWT's ``name``)."""
    if not target.creds:
        return local_person()
    from edge.auth.jwt import read_creds

    try:
        return str(read_creds(target.creds).claims.get("name") or local_person())
    except ValueError:
        return local_person()  # connect() reports the bad file in one line
