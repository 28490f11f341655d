"""Every name that goes on the wire: subjects, streams, consumers, buckets, headers.

Subject scheme (see README): all events of one task live under ``hive.task.<task_id>.``,
all events of one node under ``hive.node.<node_id>.``, and every task event that concerns
a node ends with that node's id, so ``hive.task.*.*.<node_id>`` is exactly what a node
must see about its tasks. What a person asks for ends with ``by.<user>`` (``op.<user>``
for an operator acting on others' tasks): the server's permission templates pin that
token to the authenticated user, and the decoder checks it is the event's emitter, so the
log says who asked, and it is true. Audit facts and telemetry share the ``hive.`` namespace but land
in two streams, split by verb, so ``nats sub 'hive.task.T.>'`` shows a task's whole life
while the audit stream stays small.
"""

from __future__ import annotations

import re

from events.base import Event
from events.limits import ID_PATTERN
from events.negotiation import (
    GuidanceGiven,
    HelpRequested,
    ResourceDenied,
    ResourceGranted,
    ResourceRequested,
)
from events.node import (
    HeartbeatIntervalSet,
    LeaderElected,
    NodeDrained,
    NodeDrainRequested,
    NodeHeartbeat,
    NodeLost,
    NodeRegistered,
    NodeTrustReset,
    TrustPolicySet,
)
from events.task import (
    TaskAssigned,
    TaskCancelled,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskReassigned,
    TaskRejected,
    TaskStarted,
    TaskSubmitted,
)

PREFIX = "hive"
AUDIT_STREAM = "HIVE_EVENTS"
TELEMETRY_STREAM = "HIVE_TELEMETRY"
RESULTS_BUCKET = "hive-results"
# the coordinators' election (coordinator/lease.py): one key, whose revision is the term
LEADER_BUCKET = "hive-leader"
LEADER_KEY = "coordinator"


def standby_key(coordinator_id: str) -> str:
    """The lease bucket's key a standby coordinator renews to say it is there ("*": all)."""
    return f"standby.{coordinator_id}"
API_PREFIX = "hiveapi"
MSG_ID_HEADER = "Nats-Msg-Id"
BY, AS_OPERATOR = "by", "op"  # the token before a person's name in a request's subject

# verb of each task event; node-scoped ones get ".<node_id>" appended when a node is known
TASK_VERBS: dict[type[Event], str] = {
    TaskSubmitted: "submitted",
    TaskCancelRequested: "cancel_requested",
    TaskRejected: "rejected",
    TaskAssigned: "assigned",
    TaskStarted: "started",
    TaskProgress: "progress",
    TaskCompleted: "completed",
    TaskFailed: "failed",
    TaskCancelled: "cancelled",
    TaskReassigned: "reassigned",
    HelpRequested: "help_requested",
    GuidanceGiven: "guidance",
    ResourceRequested: "resource_requested",
    ResourceGranted: "resource_granted",
    ResourceDenied: "resource_denied",
}
NODE_VERBS: dict[type[Event], str] = {
    NodeRegistered: "registered",
    NodeHeartbeat: "heartbeat",
    NodeDrainRequested: "drain_requested",
    NodeDrained: "drained",
    NodeLost: "lost",
    NodeTrustReset: "trust_reset",
}
COORDINATOR_VERBS: dict[type[Event], str] = {
    TrustPolicySet: "trust_policy",
    LeaderElected: "leader_elected",
    HeartbeatIntervalSet: "heartbeat_interval",
}
TELEMETRY_TYPES: frozenset[type[Event]] = frozenset({TaskProgress, NodeHeartbeat})
# events that never name a node in their subject, and those that always do
_UNSCOPED = frozenset({TaskSubmitted, TaskCancelRequested, TaskRejected})
_ALWAYS_SCOPED = frozenset(
    {TaskAssigned, TaskStarted, TaskProgress, TaskCompleted, TaskFailed, HelpRequested}
    | {ResourceRequested, ResourceGranted, ResourceDenied}
)

_TOKEN = re.compile(ID_PATTERN)


def valid_id(value: str) -> bool:
    """Ids become subject tokens: the decoder's rule (``events.limits.ID_PATTERN``)."""
    return bool(_TOKEN.search(value))


def filter_problem(subject: str) -> str | None:
    """Why ``subject`` is not a NATS subject filter (None if it is): dot-separated tokens,
    none empty, no whitespace; ``*`` a whole token, ``>`` a whole token and the last."""
    if not subject:
        return "it is empty"
    if any(c.isspace() for c in subject):
        return "it holds whitespace"
    tokens = subject.split(".")
    for i, token in enumerate(tokens):
        if not token:
            return "it has an empty token"
        if ("*" in token or ">" in token) and token not in ("*", ">"):
            return f"a wildcard must be a whole token ({token!r})"
        if token == ">" and i != len(tokens) - 1:
            return "'>' must be the last token"
    return None


def as_id(text: str, limit: int = 64) -> str:
    """``text`` made an id: anything but ASCII letters, digits, '-' and '_' becomes '-' (may be empty)."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "-" for c in text)[:limit]


# requests people make: their subjects end with by.<user> (before: no user; old logs keep those)
_PERSONAL = frozenset({TaskSubmitted, TaskCancelRequested, NodeDrainRequested})


def _person(event: Event) -> str:
    """``by.<user>`` (or ``op.<user>``) of a person's request; the user is the emitter's name."""
    token = AS_OPERATOR if getattr(event, "as_operator", False) else BY
    return f"{token}.{event.emitter.partition(':')[2] or 'nobody'}"


def legacy_subject_for(event: Event) -> str | None:
    """Where a person's request was published before subjects named the user (old logs)."""
    if type(event) not in _PERSONAL:
        return None
    return subject_for(event).rsplit(".", 2)[0]


def _node_of(event: Event) -> str | None:
    if type(event) in _UNSCOPED:
        return None
    if isinstance(event, TaskReassigned):
        return event.from_node
    return getattr(event, "node_id", None)


def subject_for(event: Event) -> str:
    cls = type(event)
    if cls in COORDINATOR_VERBS:
        return f"{PREFIX}.coordinator.{COORDINATOR_VERBS[cls]}"
    if cls in NODE_VERBS:
        base = f"{PREFIX}.node.{event.node_id}.{NODE_VERBS[cls]}"  # type: ignore[attr-defined]
        return f"{base}.{_person(event)}" if cls in _PERSONAL else base
    verb = TASK_VERBS[cls]
    base = f"{PREFIX}.task.{event.task_id}.{verb}"  # type: ignore[attr-defined]
    if cls in _PERSONAL:
        return f"{base}.{_person(event)}"
    node = _node_of(event)
    return f"{base}.{node}" if node else base


def _stream_subjects(telemetry: bool) -> list[str]:
    subjects = []
    for cls, verb in TASK_VERBS.items():
        if (cls in TELEMETRY_TYPES) != telemetry:
            continue
        if cls in _PERSONAL:
            subjects.append(f"{PREFIX}.task.*.{verb}.{BY}.*")
            if cls is TaskCancelRequested:
                subjects.append(f"{PREFIX}.task.*.{verb}.{AS_OPERATOR}.*")
            continue
        if cls not in _ALWAYS_SCOPED:
            subjects.append(f"{PREFIX}.task.*.{verb}")
        if cls not in _UNSCOPED:
            subjects.append(f"{PREFIX}.task.*.{verb}.*")
    for cls, verb in NODE_VERBS.items():
        if (cls in TELEMETRY_TYPES) == telemetry:
            subjects.append(f"{PREFIX}.node.*.{verb}" + (f".{BY}.*" if cls in _PERSONAL else ""))
    if not telemetry:
        subjects += [f"{PREFIX}.coordinator.{verb}" for verb in COORDINATOR_VERBS.values()]
    return subjects


AUDIT_SUBJECTS = _stream_subjects(telemetry=False)
TELEMETRY_SUBJECTS = _stream_subjects(telemetry=True)
ALL_EVENTS = f"{PREFIX}.>"


def task_filter(task_id: str) -> str:
    return f"{PREFIX}.task.{task_id}.>"


def leader_subject() -> str:
    """Where elections are logged: every projection needs them to fence deposed leaders."""
    return f"{PREFIX}.coordinator.{COORDINATOR_VERBS[LeaderElected]}"


def node_filter(node_id: str) -> list[str]:
    """What a node consumes: events about its tasks and about itself, and elections."""
    return [f"{PREFIX}.task.*.*.{node_id}", f"{PREFIX}.node.{node_id}.>", leader_subject()]


def node_inbox_filter(node_id: str) -> list[str]:
    """What others tell a node: the decisions and answers addressed to it, and elections."""
    verbs = ("assigned", "cancelled", "reassigned", "guidance", "resource_granted", "resource_denied")
    return [f"{PREFIX}.task.*.{verb}.{node_id}" for verb in verbs] + [f"{PREFIX}.node.{node_id}.>", leader_subject()]


def heartbeat_filter() -> str:
    return f"{PREFIX}.node.*.heartbeat"


def api_subject(verb: str, user: str) -> str:
    """A request from ``user`` (``*``: the coordinator's subscription to all of them)."""
    return f"{API_PREFIX}.{verb}.{user}"


def api_caller(subject: str) -> tuple[str, str]:
    """(verb, user) of a request's subject."""
    _, verb, user = subject.split(".", 2)
    return verb, user


def inbox_prefix(user: str) -> str:
    """A user's replies arrive under this prefix, which only that user may read."""
    return f"_INBOX.{user}"
