"""Every name that goes on the wire: subjects, streams, consumers, buckets, headers.

Subject scheme (see README): all events of one task live under ``hive.task.<task_id>.``,
all events of one node under ``hive.node.<node_id>.``, and every task event that concerns
a node ends with that node's id, so ``hive.task.*.*.<node_id>`` is exactly what a node
must see about its tasks. Audit facts and telemetry share the ``hive.`` namespace but land
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
API_PREFIX = "hiveapi"
MSG_ID_HEADER = "Nats-Msg-Id"

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
COORDINATOR_VERBS: dict[type[Event], str] = {TrustPolicySet: "trust_policy"}
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
        return f"{PREFIX}.node.{event.node_id}.{NODE_VERBS[cls]}"  # type: ignore[attr-defined]
    verb = TASK_VERBS[cls]
    base = f"{PREFIX}.task.{event.task_id}.{verb}"  # type: ignore[attr-defined]
    node = _node_of(event)
    return f"{base}.{node}" if node else base


def _stream_subjects(telemetry: bool) -> list[str]:
    subjects = []
    for cls, verb in TASK_VERBS.items():
        if (cls in TELEMETRY_TYPES) != telemetry:
            continue
        if cls not in _ALWAYS_SCOPED:
            subjects.append(f"{PREFIX}.task.*.{verb}")
        if cls not in _UNSCOPED:
            subjects.append(f"{PREFIX}.task.*.{verb}.*")
    for cls, verb in NODE_VERBS.items():
        if (cls in TELEMETRY_TYPES) == telemetry:
            subjects.append(f"{PREFIX}.node.*.{verb}")
    if not telemetry:
        subjects += [f"{PREFIX}.coordinator.{verb}" for verb in COORDINATOR_VERBS.values()]
    return subjects


AUDIT_SUBJECTS = _stream_subjects(telemetry=False)
TELEMETRY_SUBJECTS = _stream_subjects(telemetry=True)
ALL_EVENTS = f"{PREFIX}.>"


def task_filter(task_id: str) -> str:
    return f"{PREFIX}.task.{task_id}.>"


def node_filter(node_id: str) -> list[str]:
    """What a node consumes: events about its tasks and about itself."""
    return [f"{PREFIX}.task.*.*.{node_id}", f"{PREFIX}.node.{node_id}.*"]


def node_inbox_filter(node_id: str) -> list[str]:
    """What others tell a node: the decisions and answers addressed to it."""
    verbs = ("assigned", "cancelled", "reassigned", "guidance", "resource_granted", "resource_denied")
    return [f"{PREFIX}.task.*.{verb}.{node_id}" for verb in verbs] + [f"{PREFIX}.node.{node_id}.*"]


def heartbeat_filter() -> str:
    return f"{PREFIX}.node.*.heartbeat"


def api_subject(verb: str) -> str:
    return f"{API_PREFIX}.{verb}"
