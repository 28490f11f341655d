"""A node keeps only work still to run in memory: finished tasks leave after their rows
are written, load back as attempts only, and an old assignment seen again stays done."""

from __future__ import annotations

import asyncio
from pathlib import Path

from events.task import TaskAssigned, TaskCompleted, TaskReassigned, TaskSpec
from node.state import LocalState, NodeLocal, apply
from node.store import NodeStore

SPEC = TaskSpec(executor="function", type="noop")


def assigned(task_id: str, attempt: int = 1) -> TaskAssigned:
    return TaskAssigned(task_id=task_id, node_id="n1", attempt=attempt, spec=SPEC, emitter="coordinator")


async def _flushed_and_loaded(local: NodeLocal, path: Path) -> NodeLocal:
    store = await NodeStore.open(path)
    await store.flush(local)
    loaded = await store.load(NodeLocal("n1"))
    await store.close()
    return loaded


def test_finished_work_leaves_memory_and_stays_done(tmp_path: Path) -> None:
    local = NodeLocal("n1")
    events = [
        assigned("done"),
        TaskCompleted(task_id="done", node_id="n1", attempt=1, emitter="node:n1"),
        assigned("moved"),
        TaskReassigned(task_id="moved", attempt=1, reason="x", emitter="coordinator"),
        assigned("waiting"),
    ]
    for seq, event in enumerate(events, 1):
        apply(local, event, seq)
    loaded = asyncio.run(_flushed_and_loaded(local, tmp_path / "n.db"))
    for view in (local, loaded):  # after the flush, and after a restart
        assert set(view.tasks) == {"waiting"} and view.tasks["waiting"].state == LocalState.ASSIGNED
        assert view.settled == {"done": 1, "moved": 1}
    apply(loaded, assigned("done"), 6)  # the same assignment again: not run twice
    assert "done" not in loaded.tasks
    apply(loaded, assigned("moved", attempt=2), 7)  # a new attempt on this node: runs
    assert loaded.tasks["moved"].state == LocalState.ASSIGNED and "moved" not in loaded.settled
