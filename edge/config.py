"""Where things are: data directory, server URL and role credentials.

The server URL comes from ``--server``, then ``HIVE_SERVER``, then the local ``hive up``
default. Credentials: userinfo in the URL wins; otherwise ``HIVE_USER``/``HIVE_PASSWORD``;
otherwise the role's entry in ``<data>/credentials.json`` that ``hive up`` wrote.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import msgspec

ROLES = ("coordinator", "node", "client", "auditor")
DEFAULT_PORT = 4222
CREDENTIALS_FILE = "credentials.json"
STATE_FILE = "cluster.json"


def data_dir(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get("HIVE_DATA") or ".hive").resolve()


def password_env(role: str) -> str:
    return f"HIVE_{role.upper()}_PASSWORD"


def make_credentials(directory: Path) -> dict[str, str]:
    """Load the role passwords kept in ``directory``, creating them on first use."""
    path = directory / CREDENTIALS_FILE
    if path.exists():
        return json.loads(path.read_text())
    directory.mkdir(parents=True, exist_ok=True)
    # nats-server parses an environment value like a config token: a leading digit makes
    # it a number, so passwords start with a letter and hold only letters and digits
    creds = {role: "p" + secrets.token_hex(16) for role in ROLES}
    path.write_text(json.dumps(creds, indent=2))
    path.chmod(0o600)
    return creds


class Target(msgspec.Struct, frozen=True):
    url: str
    user: str | None = None
    password: str | None = None


def _local_default(directory: Path) -> str:
    state = directory / STATE_FILE
    if state.exists():
        try:
            return str(json.loads(state.read_text())["server"])
        except (ValueError, KeyError):
            pass
    return f"nats://127.0.0.1:{DEFAULT_PORT}"


def resolve(server: str | None, role: str, data: str | Path | None = None) -> Target:
    directory = data_dir(data)
    url = server or os.environ.get("HIVE_SERVER") or _local_default(directory)
    if "://" not in url:
        url = f"nats://{url}"
    parts = urlsplit(url)
    if parts.username:
        return Target(url)
    if os.environ.get("HIVE_USER"):
        return Target(url, os.environ["HIVE_USER"], os.environ.get("HIVE_PASSWORD", ""))
    if os.environ.get(password_env(role)):
        return Target(url, role, os.environ[password_env(role)])
    creds_file = directory / CREDENTIALS_FILE
    if creds_file.exists():
        creds = json.loads(creds_file.read_text())
        if role in creds:
            return Target(url, role, creds[role])
    return Target(url)
