"""What a connection to a target needs, for nats-py (``edge.bus``) and the lean client
(``edge.wire``) alike: the checked credentials, the inbox, TLS, and one line when it fails.
Nothing here imports nats-py, so a read command need not load it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.auth.jwt import read_creds
from edge.config import Target
from edge.errors import BadCredentials
from events.subjects import inbox_prefix

# The JetStream domain of a hub that leaf servers connect to (hive.server.EmbeddedServer
# with a leaf port). A client of a leaf server (``hive leaf``, which runs no JetStream)
# reaches the hub's JetStream as ``$JS.hive.API.>``: nats-server never forwards ``$JS.API.>``
# of an ordinary account over a leaf connection.
JS_DOMAIN = "hive"


def credentials(target: Target) -> dict[str, Any]:
    """nats-py options for who ``target`` connects as: its checked creds file (nats-py
    would loop forever on one without its JWT block), the inbox only that user may read,
    and TLS verified against the target's CA for a tls:// server."""
    options: dict[str, Any] = {}
    if target.creds:
        try:
            user = read_creds(target.creds).claims.get("name") or ""
        except ValueError as exc:
            raise BadCredentials(str(exc)) from None
        options["user_credentials"] = target.creds
        if user:
            options["inbox_prefix"] = inbox_prefix(user)
    elif target.user:
        options["inbox_prefix"] = inbox_prefix(target.user)
    if any(url.startswith("tls://") for url in target.url.split(",")) or (target.ca and "tls" in target.url):
        try:
            from edge.auth.tls import client_context  # cryptography: ~50 ms a plain nats:// command need not pay

            options["tls"] = client_context(Path(target.ca) if target.ca else None)
        except ValueError as exc:
            raise BadCredentials(str(exc)) from None
    return options


def explain(target: Target, reason: str) -> str:
    """One line for a connection that failed, naming what to check."""
    where = safe_url(target.url)
    low = reason.lower()
    if "authorization" in low or "authentication" in low or "revoked" in low or "expired" in low:
        who = f" ({target.creds})" if target.creds else ""
        return f"NATS server at {where} refused the credentials{who}: {reason}"
    if "certificate" in low or "ssl" in low or "tls" in low:
        return f"TLS with the NATS server at {where} failed (check --ca / $HIVE_CA): {reason}"
    return f"cannot reach NATS server at {where} ({reason})"


def safe_url(url: str) -> str:
    """The URL without credentials, for messages."""
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url
