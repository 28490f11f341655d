"""Help and resource negotiation between a running task and the coordinator (seed 000).

A node asks (``HelpRequested``, ``ResourceRequested``); the coordinator's policies or an
operator answer (``GuidanceGiven``, ``ResourceGranted``, ``ResourceDenied``). Answers carry
the ``request_id`` they answer and the ``node_id`` that waits for them.
"""

from __future__ import annotations

from typing import Literal

from events.base import Event
from events.limits import Amount, AmountOrZero, Attempt, Id, Line, ManyIds, Term, Token

Resource = Literal["cpu", "memory_gb", "gpu", "gpu_memory_gb"]
GuidanceAction = Literal["retry", "skip", "wait", "fail", "continue", "ask_operator"]


class HelpRequested(Event, frozen=True, kw_only=True):
    task_id: Id
    node_id: Id
    attempt: Attempt
    request_id: Id
    problem: Line
    kind: Token = "other"  # missing_input, dependency_not_ready, oom, other
    details: Line = ""


class GuidanceGiven(Event, frozen=True, kw_only=True):
    task_id: Id
    node_id: Id | None
    request_id: Id | None
    action: GuidanceAction
    message: Line = ""
    by: Token = "policy"
    term: Term = 0  # the leader's term (events.node.LeaderElected); 0 from a node or before leases


class ResourceRequested(Event, frozen=True, kw_only=True):
    task_id: Id
    node_id: Id
    attempt: Attempt
    request_id: Id
    resource: Resource
    amount: Amount
    reason: Line = ""


class ResourceGranted(Event, frozen=True, kw_only=True):
    task_id: Id
    node_id: Id
    request_id: Id
    resource: Resource
    amount: Amount
    message: Line = ""
    preempted: ManyIds = []
    by: Token = "policy"
    term: Term = 0  # the leader's term (events.node.LeaderElected); 0 from a node or before leases


class ResourceDenied(Event, frozen=True, kw_only=True):
    task_id: Id
    node_id: Id
    request_id: Id
    resource: Resource
    amount: AmountOrZero
    reason: Line
    by: Token = "policy"
    term: Term = 0  # the leader's term (events.node.LeaderElected); 0 from a node or before leases
