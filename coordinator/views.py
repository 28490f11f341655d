"""Read models the API serves: plain dicts built from the in-memory projection."""

from __future__ import annotations

from typing import Any

import msgspec

from coordinator.state import ClusterState, NodeView, OpenRequest, TaskView
from events.limits import clip
from events.node import NodeHeartbeat


def task_summary(task: TaskView) -> dict[str, Any]:
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
    return msgspec.to_builtins(task)


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
    state: ClusterState, changed: dict[str, int], after: int, offset: int, limit: int, epoch: str = ""
) -> dict[str, Any]:
    """Tasks in submission order, a page at a time (``offset``/``limit``); with ``after``, only
    those changed after that log position (``changed``: task -> position of its last flushed
    change, oldest first; unflushed changes are in ``state.dirty_tasks``). ``seq`` is where a
    reader that has applied this reply asks ``after`` next time, of the same ``epoch`` (this
    coordinator's run: another one's positions mean nothing to ``changed``)."""
    limit = max(1, min(limit or PAGE_MAX, PAGE_MAX))
    if after > 0:
        recent: list[str] = []
        for task_id, seq in reversed(changed.items()):
            if seq <= after:
                break
            recent.append(task_id)
        ids = dict.fromkeys([*reversed(recent), *state.dirty_tasks])
        chosen = [state.tasks[t] for t in ids if t in state.tasks]
    else:
        chosen = list(state.tasks.values())
    rows = chosen[offset : offset + limit]
    return {"seq": state.seq, "epoch": epoch, "total": len(chosen), "tasks": [task_summary(t) for t in rows]}


def list_tasks(state: ClusterState, wanted: str | None, limit: int) -> list[dict[str, Any]]:
    tasks = sorted(state.tasks.values(), key=lambda t: t.order)
    if wanted:
        tasks = [t for t in tasks if t.state.value == wanted]
    if limit > 0:
        tasks = tasks[-limit:]
    return [task_summary(t) for t in tasks]
