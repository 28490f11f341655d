"""The fold for help and resource negotiation (seed 000): open requests, answers, and
what an answer does to its task (unblocks it, marks it for a retry, grows its allocation).
Registered on ``coordinator.projection``'s dispatcher; the same rules as there apply:
time from events only, and whatever does not fit the current state changes nothing."""

from __future__ import annotations

from typing import Any

from coordinator.projection import _apply, _current
from coordinator.state import ON_NODE, ClusterState, OpenRequest, TaskView
from events.base import Resources
from events.negotiation import GuidanceGiven, HelpRequested, ResourceDenied, ResourceGranted, ResourceRequested

# guidance that leaves the request open: the task stays blocked on it
WAITING_ACTIONS = frozenset({"wait", "ask_operator"})


def _open(state: ClusterState, event: HelpRequested | ResourceRequested, kind: str, **fields: Any) -> TaskView | None:
    """Record a request of the task's live attempt (once); the task, or None if ignored."""
    task = _current(state, event.task_id, event.node_id, event.attempt)
    if task is None or event.request_id in state.requests:
        return None
    state.requests[event.request_id] = OpenRequest(
        request_id=event.request_id,
        task_id=event.task_id,
        node_id=event.node_id,
        attempt=event.attempt,
        kind=kind,
        asked_at=event.ts,
        **fields,
    )
    state.dirty_requests.add(event.request_id)
    return task


@_apply.register
def _(event: HelpRequested, state: ClusterState, seq: int) -> None:
    task = _open(state, event, "help", problem=event.problem, help_kind=event.kind, details=event.details)
    if task is not None:
        task.blocked_on = event.request_id
        state.dirty_tasks.add(task.task_id)


@_apply.register
def _(event: ResourceRequested, state: ClusterState, seq: int) -> None:
    _open(state, event, "resource", problem=event.reason, resource=event.resource, amount=event.amount)


def _answer(state: ClusterState, request_id: str | None, answer: str, final: bool = True) -> OpenRequest | None:
    request = state.requests.get(request_id or "")
    if request is None or request.state == "answered":
        return None
    request.state = "answered" if final else "waiting_operator"
    request.answer = answer
    state.dirty_requests.add(request.request_id)
    return request


@_apply.register
def _(event: GuidanceGiven, state: ClusterState, seq: int) -> None:
    final = event.action not in WAITING_ACTIONS
    request = _answer(state, event.request_id, f"{event.action}: {event.message}".strip(": "), final)
    task = state.task(event.task_id) if request is not None and final else None
    if task is None or request is None or not final:
        return
    if task.blocked_on == request.request_id:
        task.blocked_on = None
        state.dirty_tasks.add(task.task_id)
    if event.action == "retry" and task.state in ON_NODE and task.attempt == request.attempt:
        state.reassign_wanted[task.task_id] = request.attempt


@_apply.register
def _(event: ResourceGranted, state: ClusterState, seq: int) -> None:
    request = _answer(state, event.request_id, f"granted {event.amount:g} {event.resource}")
    task = state.tasks.get(event.task_id)
    alloc = state.allocations.get(event.task_id)
    if request is None or task is None or alloc is None or alloc.node_id != event.node_id:
        return
    extra = Resources.of(event.resource, event.amount)
    alloc.resources = alloc.resources + extra
    task.extra = task.extra + extra
    node = state.nodes[alloc.node_id]
    node.allocated = node.allocated + extra
    state.dirty_allocs.add(task.task_id)
    state.node_changed(node)
    state.dirty_tasks.add(task.task_id)


@_apply.register
def _(event: ResourceDenied, state: ClusterState, seq: int) -> None:
    _answer(state, event.request_id, f"denied: {event.reason}")
