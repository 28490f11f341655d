"""Theory of operation: the projection is a fold, ``apply(state, event, seq)``.

It reads time only from events, never from the clock, and ignores what cannot happen in
the current state (a second completion, a report from a superseded attempt or from a node
the attempt is not on), so redeliveries and late acks change nothing. Every change marks
the touched rows dirty for the store to write in the same transaction as ``seq``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import singledispatch

from coordinator.state import (
    ON_NODE,
    TERMINAL,
    TRANSITIONS,
    Allocation,
    ClusterState,
    TaskState,
    TaskView,
    TrustChange,
)
from events.base import Event, Resources
from events.fencing import COORDINATOR, FENCED, superseded
from events.task import (
    TaskAssigned,
    TaskCancelled,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskReassigned,
    TaskRejected,
    TaskStarted,
    TaskSubmitted,
)

# the states as globals: ``TaskState.QUEUED`` is a lookup through the enum's metaclass (about
# 90 ns against 20), and the fold names a state several times per event
PENDING, QUEUED, ASSIGNED, RUNNING = TaskState.PENDING, TaskState.QUEUED, TaskState.ASSIGNED, TaskState.RUNNING
RETRYING, COMPLETED, FAILED, CANCELLED = TaskState.RETRYING, TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED

# failures that say nothing about the node's reliability
NO_FAULT_REASONS = frozenset({"preempted", "interrupted", "guidance", "unrunnable"})
# failures that are final whatever attempts are left
NO_RETRY_REASONS = frozenset({"guidance"})
OUTPUT_TAIL = 4096
EPS = 1e-9
NOTHING = Resources()


class Forbidden(Exception):
    """A request its (authenticated) user may not make, e.g. a client cancelling another
    user's task. Raised before anything changed: rejected and recorded, not applied."""


class Implausible(Exception):
    """A fact its emitter could not honestly state in the current state (a report on an
    attempt never assigned to that node, a drain nobody asked for, a registration that
    shrinks a node below what runs on it). Raised before anything changed: the event is
    rejected and recorded, not applied."""


EMITTER = COORDINATOR
QUEUE_LOG_MAX = 1_000_000  # nobody drains it during a replay; the scheduler rebuilds past this


def apply(state: ClusterState, event: Event, seq: int = 0) -> None:
    if seq:
        state.seq = seq
    cls = type(event)
    if cls in FENCED and superseded(state.term, event):
        state.ignored += 1  # a decision of a deposed leader (one that was paused past its lease)
        return
    handler = _handlers.get(cls)
    if handler is None:
        handler = _handlers[cls] = _apply.dispatch(cls)
    handler(event, state, seq)


@singledispatch
def _apply(event: Event, state: ClusterState, seq: int) -> None:
    """Telemetry and events with no effect on the projection."""


# singledispatch's own lookup (a weak-keyed cache behind a wrapper) is a tenth of a
# replay's fold; the event types are a closed set, so a plain dict of them does
_handlers: dict[type, Callable[[Event, ClusterState, int], None]] = {}

# the derived index of each state that has one (ClusterState's attribute)
_INDEXED = {QUEUED: "queue", RETRYING: "retrying", ASSIGNED: "assigned"}


def _move(state: ClusterState, task: TaskView, new: TaskState, ts: float) -> bool:
    old = task.state
    if new not in TRANSITIONS[old]:
        state.ignored += 1
        return False
    task_id = task.task_id
    task.state = new
    task.updated_at = ts
    state.dirty_tasks.add(task_id)
    index = _INDEXED.get(old)
    if index is not None:
        getattr(state, index).discard(task_id)
    index = _INDEXED.get(new)
    if index is not None:
        getattr(state, index).add(task_id)
        if new == QUEUED:
            task.queued_at = ts
            if len(state.queue_log) < QUEUE_LOG_MAX:
                state.queue_log.append(task_id)
    if new not in ON_NODE and state.reassign_wanted:
        state.reassign_wanted.pop(task_id, None)
    if new in TERMINAL:
        task.finished_at = ts
        state.cancel_wanted.discard(task_id)
        state.doomed.pop(task_id, None)
        if task_id in state.dependents:
            _settle_dependents(state, task)
    return True


def _settle_dependents(state: ClusterState, task: TaskView) -> None:
    for dep_id in state.dependents.get(task.task_id, ()):
        dependent = state.tasks.get(dep_id)
        if dependent is None or dependent.state != PENDING:
            continue  # (None: evicted, so finished)
        if task.state == COMPLETED:
            dependent.waiting_on = [d for d in dependent.waiting_on if d != task.task_id]
            state.dirty_tasks.add(dep_id)
            if not dependent.waiting_on:
                _move(state, dependent, QUEUED, task.updated_at)
        else:
            state.doomed[dep_id] = f"dependency {task.task_id} {task.state}"


def _release(state: ClusterState, task: TaskView) -> None:
    alloc = state.allocations.pop(task.task_id, None)
    if alloc is None:
        return
    state.dirty_allocs.add(task.task_id)
    node = state.nodes.get(alloc.node_id)
    if node is not None:
        if alloc.resources != NOTHING:
            node.allocated = node.allocated - alloc.resources
        node.running -= 1
        state.node_changed(node)
    if task.extra != NOTHING:
        task.extra = NOTHING


def _current(state: ClusterState, task_id: str, node_id: str | None, attempt: int) -> TaskView | None:
    """The task, if this report belongs to its live attempt (the fencing rule). A report of
    a superseded attempt from the node it ran on is ignored (a late ack, a node back from a
    partition); one about an attempt that node was never given is implausible."""
    task = state.tasks.get(task_id) or state.task(task_id)
    if task is None:
        raise Implausible(f"report on unknown task {task_id}")
    if task.attempt == attempt and task.node_id == node_id and task.state in ON_NODE:
        return task  # (the usual case: the live attempt's node, which it was assigned to)
    ran_on = task.attempt_node(attempt)
    if attempt > task.attempt or (ran_on is not None and ran_on != node_id):
        raise Implausible(f"attempt {attempt} of {task_id} was never assigned to {node_id}")
    if task.state not in ON_NODE or task.attempt != attempt or task.node_id != node_id:
        state.ignored += 1
        return None
    return task


def _trust(state: ClusterState, node_id: str, delta: float, seq: int, task_id: str | None, cause: str) -> None:
    node = state.nodes.get(node_id)
    if node is None:
        return
    score = min(100.0, max(0.0, node.trust + delta))
    change = TrustChange(seq=seq, node_id=node_id, delta=score - node.trust, score=score, task_id=task_id, cause=cause)
    node.trust = score
    state.new_trust.append(change)
    state.node_changed(node)


@_apply.register
def _(event: TaskSubmitted, state: ClusterState, seq: int) -> None:
    if state.known(event.task_id):
        state.ignored += 1
        return
    task = TaskView(
        task_id=event.task_id,
        spec=event.spec,
        state=PENDING,
        order=state.next_order,
        submitted_at=event.ts,
        updated_at=event.ts,
        submitted_by=_user(event),
    )
    state.next_order += 1
    state.tasks[task.task_id] = task
    state.dirty_tasks.add(task.task_id)
    waiting = []
    for dep in dict.fromkeys(event.spec.after):
        dep_state = state.state_of(dep)
        if dep_state is None:
            # kept in waiting_on, so a reload (reindex) finds it doomed again
            waiting.append(dep)
            state.doomed[task.task_id] = f"unknown dependency {dep}"
            continue
        state.dependents.setdefault(dep, set()).add(task.task_id)
        if dep_state == COMPLETED:
            continue
        waiting.append(dep)
        if dep_state in TERMINAL:
            state.doomed[task.task_id] = f"dependency {dep} {dep_state}"
    task.waiting_on = waiting
    if not waiting and task.task_id not in state.doomed:
        _move(state, task, QUEUED, event.ts)


@_apply.register
def _(event: TaskAssigned, state: ClusterState, seq: int) -> None:
    task = state.tasks.get(event.task_id)
    node = state.nodes.get(event.node_id)
    if task is None or node is None or task.state != QUEUED or event.attempt != task.attempt + 1:
        state.ignored += 1
        return
    _move(state, task, ASSIGNED, event.ts)
    attempt = event.attempt
    task.attempt = attempt
    nodes = task.attempt_nodes
    if len(nodes) == attempt - 1:
        task.attempt_nodes = [*nodes, event.node_id]
    else:
        known = nodes[: attempt - 1]  # "" for attempts from before this was kept
        task.attempt_nodes = [*known, *[""] * (attempt - 1 - len(known)), event.node_id]
    task.node_id = event.node_id
    task.last_node = event.node_id
    task.gpus = list(event.gpus)
    request = task.spec.resources
    state.allocations[task.task_id] = Allocation(
        task_id=task.task_id, node_id=node.node_id, attempt=attempt, resources=request, gpus=list(event.gpus)
    )
    state.dirty_allocs.add(task.task_id)
    if request != NOTHING:  # (a sum is already rounded: adding nothing would change nothing)
        node.allocated = node.allocated + request
    node.running += 1
    state.node_changed(node)


@_apply.register
def _(event: TaskStarted, state: ClusterState, seq: int) -> None:
    task = _current(state, event.task_id, event.node_id, event.attempt)
    if task is not None and task.state == ASSIGNED:
        _move(state, task, RUNNING, event.ts)
        task.started_at = event.ts


@_apply.register
def _(event: TaskCompleted, state: ClusterState, seq: int) -> None:
    task = _current(state, event.task_id, event.node_id, event.attempt)
    if task is None:
        return
    _release(state, task)
    if event.started_at is not None:
        task.started_at = event.started_at  # an attempt that ended before it sent TaskStarted
    task.result = event.result
    task.exit_code = event.exit_code
    task.duration_s = event.duration_s
    task.outputs = list(event.outputs)
    task.stdout, task.stderr = event.stdout[-OUTPUT_TAIL:], event.stderr[-OUTPUT_TAIL:]
    task.reason = "skipped" if event.skipped else None
    task.error = None
    task.node_id = None
    _move(state, task, COMPLETED, event.ts)
    node = state.nodes.get(event.node_id)
    if node is not None:
        node.completed += 1
        _trust(state, event.node_id, state.trust.success, seq, task.task_id, "completed")


@_apply.register
def _(event: TaskFailed, state: ClusterState, seq: int) -> None:
    task = _current(state, event.task_id, event.node_id, event.attempt)
    if task is None:
        return
    _release(state, task)
    if event.started_at is not None:
        task.started_at = event.started_at
    task.error = event.error
    task.exit_code = event.exit_code
    task.reason = event.reason
    task.duration_s = event.duration_s
    task.stdout, task.stderr = event.stdout[-OUTPUT_TAIL:], event.stderr[-OUTPUT_TAIL:]
    task.node_id = None
    final = task.attempt >= task.spec.max_attempts or event.reason in NO_RETRY_REASONS or task.cancel_requested
    _move(state, task, FAILED if final else RETRYING, event.ts)
    node = state.nodes.get(event.node_id)
    if node is not None and event.reason not in NO_FAULT_REASONS:
        node.failed += 1
        _trust(state, event.node_id, state.trust.failure, seq, task.task_id, f"failed: {event.reason}")


def _user(event: Event) -> str | None:
    """The person behind a request: its emitter's name, which the subject pins (by.<user>)."""
    return event.emitter.partition(":")[2] or None


@_apply.register
def _(event: TaskCancelRequested, state: ClusterState, seq: int) -> None:
    task = state.task(event.task_id)  # a finished one too: whose it is decides the rejection
    user = _user(event)
    if task is not None and not event.as_operator and task.submitted_by not in (None, user):
        raise Forbidden(f"{user} may cancel only their own tasks ({task.task_id} is {task.submitted_by}'s)")
    if task is None or task.state in TERMINAL or task.cancel_requested:
        state.ignored += 1
        return
    task.cancel_requested = True
    task.cancelled_by = user
    task.reason = event.reason
    state.cancel_wanted.add(task.task_id)
    state.dirty_tasks.add(task.task_id)


@_apply.register
def _(event: TaskCancelled, state: ClusterState, seq: int) -> None:
    task = state.tasks.get(event.task_id)
    if task is None or task.state in TERMINAL:
        state.ignored += 1
        return
    _release(state, task)
    task.reason = event.reason
    task.node_id = None
    _move(state, task, CANCELLED, event.ts)


@_apply.register
def _(event: TaskRejected, state: ClusterState, seq: int) -> None:
    task = state.tasks.get(event.task_id)
    if task is None or task.state not in (PENDING, QUEUED):
        state.ignored += 1  # only a submission that has not run yet can be refused
        return
    task.error = event.reason
    _move(state, task, FAILED, event.ts)


@_apply.register
def _(event: TaskReassigned, state: ClusterState, seq: int) -> None:
    task = state.tasks.get(event.task_id)
    if task is None or event.attempt != task.attempt or task.state not in ON_NODE | {RETRYING}:
        state.ignored += 1
        return
    _release(state, task)
    task.node_id = None
    task.not_before = event.not_before
    task.avoid_node = event.avoid_node
    task.reason = event.reason
    task.blocked_on = None
    _move(state, task, QUEUED, event.ts)


# the node, trust-policy and election part of the fold, and the negotiation part, live in
# their own modules; importing them registers them
from coordinator import projection_nodes, projection_requests  # noqa: E402, F401
