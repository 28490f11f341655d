"""Help and resource negotiation between a running task and the coordinator (seed 000).

A node asks (``HelpRequested``, ``ResourceRequested``); the coordinator's policies or an
operator answer (``GuidanceGiven``, ``ResourceGranted``, ``ResourceDenied``). Answers carry
the ``request_id`` they answer and the ``node_id`` that waits for them.
"""

from __future__ import annotations

from typing import Literal

from events.base import Event

GuidanceAction = Literal["retry", "skip", "wait", "fail", "continue", "ask_operator"]


class HelpRequested(Event, frozen=True, kw_only=True):
    task_id: str
    node_id: str
    attempt: int
    request_id: str
    problem: str
    kind: str = "other"  # missing_input, dependency_not_ready, oom, other
    details: str = ""


class GuidanceGiven(Event, frozen=True, kw_only=True):
    task_id: str
    node_id: str | None
    request_id: str | None
    action: GuidanceAction
    message: str = ""
    by: str = "policy"


class ResourceRequested(Event, frozen=True, kw_only=True):
    task_id: str
    node_id: str
    attempt: int
    request_id: str
    resource: str  # cpu, memory_gb, gpu, gpu_memory_gb
    amount: float
    reason: str = ""


class ResourceGranted(Event, frozen=True, kw_only=True):
    task_id: str
    node_id: str
    request_id: str
    resource: str
    amount: float
    message: str = ""
    preempted: list[str] = []
    by: str = "policy"


class ResourceDenied(Event, frozen=True, kw_only=True):
    task_id: str
    node_id: str
    request_id: str
    resource: str
    amount: float
    reason: str
    by: str = "policy"
