"""Which decisions a deposed leader's term voids, for every reader of the log alike.

Each coordinator decision carries the term of the leader that made it
(``events.node.LeaderElected``). A leader cut off from the servers keeps deciding until its
lease runs out, and those publishes may reach the log only when its link returns: after
the next leader's election, and after it decided the same things anew. Every projection
(the coordinator's, each node's) ignores them by one rule, so a node never runs an
assignment the coordinator's view has already voided.
"""

from __future__ import annotations

from events.base import Event
from events.negotiation import GuidanceGiven, ResourceDenied, ResourceGranted
from events.node import HeartbeatIntervalSet, NodeLost, NodeTrustReset, TrustPolicySet
from events.task import TaskAssigned, TaskCancelled, TaskFailed, TaskReassigned, TaskRejected

COORDINATOR = "coordinator"  # the emitter of decisions
FENCED: frozenset[type[Event]] = frozenset(
    {TaskAssigned, TaskReassigned, TaskCancelled, TaskFailed, TaskRejected, NodeLost, NodeTrustReset, TrustPolicySet}
    | {GuidanceGiven, ResourceGranted, ResourceDenied, HeartbeatIntervalSet}
)


def superseded(term_in_force: int, event: Event) -> bool:
    """Whether ``event`` is a decision of a leader older than the term in force."""
    return (
        bool(term_in_force)
        and type(event) in FENCED
        and event.emitter == COORDINATOR
        and event.term < term_in_force  # type: ignore[attr-defined]
    )
