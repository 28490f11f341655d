"""Identity the NATS server enforces (operator mode): an operator, a system account and
the HIVE account whose scoped signing keys, one per role, carry each role's permission
template; users issued per role and name, revoked through the account's revocations.

``jwt`` encodes the NATS JWT v2 claims and creds files, ``keys`` wraps nkeys, ``roles``
holds the permission templates as data, ``store`` keeps it all in a directory.
"""

from __future__ import annotations

from events.lazy import attributes

__all__ = [
    "ROLES",
    "TEMPLATES",
    "AccountUpdateError",
    "Authority",
    "ensure",
    "issue_user",
    "push_account",
    "revoke_user",
    "server_config",
    "users",
]

# loaded on first use: edge.auth.jwt (all a connection needs) should not load the store
__getattr__ = attributes(
    "edge.auth",
    {name: "edge.auth.roles" if name in ("ROLES", "TEMPLATES") else "edge.auth.store" for name in __all__},
    globals(),
)
