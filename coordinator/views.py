"""Read models the API serves: plain dicts built from the in-memory projection."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import msgspec

from coordinator.state import ClusterState, NodeView, OpenRequest, TaskView
from events.codec import full_builtins
from events.limits import clip
from events.node import NodeHeartbeat

if TYPE_CHECKING:
    from coordinator.store import TaskRow


def task_summary(task: TaskView | TaskRow) -> dict[str, Any]:
    spec = task.spec
    what = spec.type if spec.executor == "function" else " ".join(spec.command)
    if spec.executor == "docker":
        what = f"{spec.image}: {what}"
    what = clip(what or "", 200)  # a list row, not the whole command
    return {
        "task_id": task.task_id,
        "name": spec.name,
        "state": task.state.value,
        "executor": spec.executor,
        "what": what,
        "priority": spec.priority,
        "attempt": task.attempt,
        "max_attempts": spec.max_attempts,
        "node_id": task.node_id or task.last_node,
        "submitted_at": task.submitted_at,
        "updated_at": task.updated_at,
        "duration_s": task.duration_s,
        "exit_code": task.exit_code,
        "error": task.error,
        "reason": task.reason,
        "waiting_on": task.waiting_on,
        "submitted_by": task.submitted_by,
        "cancelled_by": task.cancelled_by,
    }


def task_detail(task: TaskView) -> dict[str, Any]:
    return full_builtins(task)  # (its stored row leaves defaults out)


def node_summary(state: ClusterState, node: NodeView, beat: NodeHeartbeat | None = None) -> dict[str, Any]:
    available = node.available
    live = None
    if beat is not None:
        live = {
            "at": beat.ts,
            "running": beat.running,
            "cpu_percent": beat.cpu_percent,
            "memory_used_gb": beat.memory_used_gb,
            "gpus": msgspec.to_builtins(beat.gpus),
        }
    return {
        "live": live,
        "node_id": node.node_id,
        "state": node.state.value,
        "hostname": node.hostname,
        "executors": node.executors,
        "running": node.running,
        "max_tasks": node.max_tasks,
        "capacity": msgspec.to_builtins(node.capacity),
        "available": msgspec.to_builtins(available),
        "gpus": msgspec.to_builtins(node.gpus),
        "trust": node.trust,
        "trust_group": state.trust.group(node.trust),
        "completed": node.completed,
        "failed": node.failed,
    }


def request_summary(request: OpenRequest) -> dict[str, Any]:
    return msgspec.to_builtins(request)


PAGE_MAX = 10_000  # task summaries per reply: about 4 MB, half the max payload


def task_page(
    state: ClusterState,
    changed: dict[str, int],
    after: int,
    offset: int,
    limit: int,
    epoch: str = "",
    stored: dict[str, TaskView] | None = None,
    floor: int = 0,
) -> dict[str, Any]:
    """Tasks in submission order, a page at a time (``offset``/``limit``); with ``after``, only
    those changed after that log position (``changed``: task -> position of its last flushed
    change, oldest first; unflushed changes are in ``state.dirty_tasks``). ``seq`` is where a
    reader that has applied this reply asks ``after`` next time, of the same ``epoch`` (this
    coordinator's run: another one's positions mean nothing to ``changed``; an empty epoch
    says the position is older than ``changed`` remembers: read from the first page). ``stored``: the
    rows of the evicted tasks among those changed (``after``), which are not in memory;
    ``floor``: ``changed`` forgot the positions up to there (``forget_oldest``)."""
    limit = max(1, min(limit or PAGE_MAX, PAGE_MAX))
    if 0 < after < floor:  # forgotten: the reader starts again from the first page
        return {"seq": state.seq, "epoch": "", "total": 0, "tasks": []}
    if after > 0:
        ids = dict.fromkeys([*changed_since(changed, after), *state.dirty_tasks])
        rows = stored or {}
        chosen = [t for t in (state.tasks.get(i) or rows.get(i) for i in ids) if t is not None]
    else:
        chosen = list(state.tasks.values())
    rows = chosen[offset : offset + limit]
    return {"seq": state.seq, "epoch": epoch, "total": len(chosen), "tasks": [task_summary(t) for t in rows]}


def forget_oldest(changed: dict[str, int], most: int, floor: int) -> int:
    """Keep ``changed`` (oldest first) under ``most`` entries: past it, drop the oldest down
    to half. Returns the new floor, the newest position forgotten."""
    if len(changed) > most:
        for task_id in list(itertools.islice(changed, len(changed) - most // 2)):
            floor = max(floor, changed.pop(task_id))
    return floor


def changed_since(changed: dict[str, int], after: int) -> list[str]:
    """The tasks whose last flushed change is after ``after``, oldest first."""
    recent: list[str] = []
    for task_id, seq in reversed(changed.items()):
        if seq <= after:
            break
        recent.append(task_id)
    recent.reverse()
    return recent


def stored_page(
    state: ClusterState, page: list[TaskRow], count: int, last_order: int, offset: int, limit: int, epoch: str = ""
) -> dict[str, Any]:
    """``task_page`` from the first page when finished tasks were evicted: ``page`` is the
    stored rows at ``offset`` in submission order (of ``count`` rows, the last of order
    ``last_order``); a task in memory is shown as memory has it, and the tasks not flushed
    yet (newer than every row) come after the rows."""
    limit = max(1, min(limit or PAGE_MAX, PAGE_MAX))
    newer = sorted((t for t in state.tasks.values() if t.order > last_order), key=lambda t: t.order)
    chosen: list[TaskView | TaskRow] = [state.tasks.get(t.task_id, t) for t in page]
    if len(chosen) < limit:
        start = max(0, offset - count)
        chosen += newer[start : start + limit - len(chosen)]
    return {"seq": state.seq, "epoch": epoch, "total": count + len(newer), "tasks": [task_summary(t) for t in chosen]}


def list_tasks(
    state: ClusterState, wanted: str | None, limit: int, stored: list[TaskRow] | None = None
) -> list[dict[str, Any]]:
    """Tasks in submission order (the last ``limit``), in ``wanted`` state; ``stored``: rows of
    evicted tasks to count in (a row of a task in memory is older than memory: left out)."""
    tasks: list[TaskView | TaskRow] = [*state.tasks.values(), *(t for t in stored or () if t.task_id not in state.tasks)]
    tasks.sort(key=lambda t: t.order)
    if wanted:
        tasks = [t for t in tasks if t.state.value == wanted]
    if limit > 0:
        tasks = tasks[-limit:]
    return [task_summary(t) for t in tasks]
