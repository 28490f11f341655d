"""What each role may publish and subscribe to, as data: the permission templates of the
HIVE account's scoped signing keys. nats-server applies a role's template to every user
that role's key signs, replacing ``{{name()}}`` with the user's name (the JWT's ``name``),
so a node can report only as itself and a client's requests name who sent them.

Subjects (events/subjects.py, with the authenticated-user scheme this module proposes):

* a node reports on ``hive.task.<task>.<verb>.<node>`` and ``hive.node.<node>.<verb>``;
* what a person asks for carries their name after a ``by`` token:
  ``hive.task.<task>.submitted.by.<user>``, ``hive.task.<task>.cancel_requested.by.<user>``,
  ``hive.node.<node>.drain_requested.by.<user>`` (six tokens, so ``hive.task.*.*.<node>``,
  a node's filter, never matches a user who shares a node's name);
* an operator cancels anyone's task on ``hive.task.<task>.cancel_requested.op.<user>``:
  only the operator role may publish the ``op`` form, so the server vouches for the role,
  not only the name (a client's ``by`` cancel is checked against the task's owner by the
  coordinator);
* request-reply is ``hiveapi.<verb>.<user>``: the coordinator serves ``hiveapi.<verb>.*``
  and reads the caller from the last token;
* every user's inbox prefix is ``_INBOX.<name>`` (nats-py ``inbox_prefix``), so a user
  reads only replies meant for it, while a responder allowed ``_INBOX.>`` can answer anyone
  (``_INBOX_<name>`` would need a wildcard over part of a token, which NATS has not).

A name becomes a subject token: it must be a valid id (``events.limits.ID_PATTERN``), or a
name such as ``*`` or ``>`` would expand a template into a wildcard.
"""

from __future__ import annotations

import re
from typing import Any

from events.limits import ID_PATTERN, ID_RULE

ROLES = ("coordinator", "node", "client", "operator", "auditor")
NAME = "{{name()}}"
BUCKET = "hive-results"
BUCKET_STREAM = f"OBJ_{BUCKET}"

# hiveapi verbs (coordinator/api.py): reads, then what changes something
READ_VERBS = ("tasks", "task", "nodes", "requests", "trust", "stats")
CLIENT_VERBS = (*READ_VERBS, "validate")
OPERATOR_VERBS = (*CLIENT_VERBS, "guide", "grant", "deny", "trust_reset", "node_revoked")

NODE_TASK_VERBS = ("started", "progress", "completed", "failed", "help_requested", "resource_requested")
NODE_VERBS = ("registered", "heartbeat", "drained")

# Through a leaf server (hive leaf): nats-server never lets an ordinary account's
# "$JS.API.>" cross a leaf connection (leafnode.go adds denyAllClientJs on every one), so a
# hub with leaf nodes runs a JetStream domain and answers "$JS.<domain>.API.>" too (mapped
# to "$JS.API.>" in the account; jetstream.go, generateJSMappingTable). Every JetStream API
# permission below is therefore also given in that form, for any domain ("*").
JS_DOMAIN_API = "$JS.*.API."


def with_domain(subjects: list[str]) -> list[str]:
    """``subjects`` and, for each ``$JS.API.`` one, its JetStream-domain form."""
    return [*subjects, *(JS_DOMAIN_API + s[len("$JS.API.") :] for s in subjects if s.startswith("$JS.API."))]


# Reading JetStream: stream and consumer info, single messages, and ephemeral consumers.
# "$JS.API.CONSUMER.CREATE.<stream>" (five tokens) is the ephemeral form: the server
# refuses it with a durable name in the request; named and durable creation have more
# tokens ("CREATE.<stream>.<name>[.<filter>]", "DURABLE.CREATE.<stream>.<name>").
# Ordered push consumers (edge.bus.follow, edge.follow, object store reads) need only this and the
# flow-control replies; they ack nothing. Consumer listing is left out on purpose: the
# ephemeral form also takes a consumer *name* in the request body and then updates the
# existing consumer of that name, durable or not (nats-server 2.15.1 let an auditor change
# a durable's filter and drop its durable name that way), so consumer names must stay
# unknown to readers: server-generated, never listed. Real isolation would need the
# readers in an account of their own, reading a mirror.
JS_READ = with_domain(
    [
        "$JS.API.INFO",
        "$JS.API.STREAM.NAMES",
        "$JS.API.STREAM.INFO.*",
        "$JS.API.STREAM.MSG.GET.*",
        "$JS.API.DIRECT.GET.>",
        "$JS.API.CONSUMER.INFO.*.*",
        "$JS.API.CONSUMER.CREATE.*",
        "$JS.FC.>",
    ]
)
# A node may also own consumers named after itself (durable, pull) and nothing else's.
JS_OWN_CONSUMERS = with_domain(
    [
        f"$JS.API.CONSUMER.CREATE.*.{NAME}",
        f"$JS.API.CONSUMER.CREATE.*.{NAME}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.*.{NAME}",
        f"$JS.API.CONSUMER.DELETE.*.{NAME}",
        f"$JS.API.CONSUMER.MSG.NEXT.*.{NAME}",
        f"$JS.ACK.*.{NAME}.>",
    ]
)
# Writing result files: chunks and metadata, and the purge that replaces an old version.
BUCKET_WRITE = with_domain([f"$O.{BUCKET}.>", f"$JS.API.STREAM.PURGE.{BUCKET_STREAM}"])
INBOX = f"_INBOX.{NAME}.>"

# What no reader may do, spelled out (the allow lists already leave it out).
READ_ONLY_DENY = with_domain(
    [
        "hive.>",
        "$O.>",
        "$JS.ACK.>",
        "$JS.API.CONSUMER.CREATE.*.>",
        "$JS.API.CONSUMER.DURABLE.CREATE.>",
        "$JS.API.CONSUMER.DELETE.>",
        "$JS.API.CONSUMER.MSG.NEXT.>",
        "$JS.API.STREAM.CREATE.>",
        "$JS.API.STREAM.UPDATE.>",
        "$JS.API.STREAM.DELETE.>",
        "$JS.API.STREAM.PURGE.>",
        "$JS.API.STREAM.MSG.DELETE.>",
    ]
)


def _api(verbs: tuple[str, ...]) -> list[str]:
    return [f"hiveapi.{verb}.{NAME}" for verb in verbs]


_CLIENT_EVENTS = [
    f"hive.task.*.submitted.by.{NAME}",
    f"hive.task.*.cancel_requested.by.{NAME}",
    f"hive.node.*.drain_requested.by.{NAME}",
]
_OPERATOR_EVENTS = [*_CLIENT_EVENTS, f"hive.task.*.cancel_requested.op.{NAME}"]

TEMPLATES: dict[str, dict[str, dict[str, list[str]]]] = {
    "coordinator": {
        "pub": {
            "allow": with_domain(
                ["hive.>", "hiveapi.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$O.>", "$KV.>", "_INBOX.>"]
            )
        },
        "sub": {"allow": ["hive.>", "hiveapi.>", "$O.>", "_INBOX.>"]},
    },
    "node": {
        "pub": {
            "allow": [
                *(f"hive.task.*.{verb}.{NAME}" for verb in NODE_TASK_VERBS),
                *(f"hive.node.{NAME}.{verb}" for verb in NODE_VERBS),
                *JS_READ,
                *JS_OWN_CONSUMERS,
                *BUCKET_WRITE,
            ]
        },
        "sub": {"allow": ["hive.>", INBOX, f"$O.{BUCKET}.>"]},
    },
    "client": {
        "pub": {"allow": [*_CLIENT_EVENTS, *_api(CLIENT_VERBS), *JS_READ]},
        "sub": {"allow": ["hive.>", INBOX]},
    },
    "operator": {
        "pub": {"allow": [*_OPERATOR_EVENTS, *_api(OPERATOR_VERBS), *JS_READ]},
        "sub": {"allow": ["hive.>", INBOX]},
    },
    "auditor": {
        "pub": {"allow": [*_api(READ_VERBS), *JS_READ], "deny": READ_ONLY_DENY},
        "sub": {"allow": ["hive.>", INBOX]},
    },
}

_VALID_NAME = re.compile(ID_PATTERN)


def check_role(role: str) -> str:
    if role not in TEMPLATES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


def check_name(name: str) -> str:
    """A user name is a subject token in its role's permissions: an id, nothing else."""
    if not isinstance(name, str) or not _VALID_NAME.search(name):
        raise ValueError(f"user name {name!r}: {ID_RULE}")
    return name


def expand(role: str, name: str) -> dict[str, Any]:
    """The permissions the server derives for user ``name`` of ``role`` (for display and tests)."""
    check_name(name)
    return {
        side: {kind: [s.replace(NAME, name) for s in subjects] for kind, subjects in rules.items()}
        for side, rules in TEMPLATES[check_role(role)].items()
    }
