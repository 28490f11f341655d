"""Theory of operation: placement is a pure function of the state and the clock value.

``place(state, now, reserved)`` walks ready tasks by effective priority, then submission
order, and puts each on the least-loaded eligible node: active, offering the task's
executor, trusted enough, with a free slot and the requested resources free (counting
what earlier decisions in flight have reserved). Tasks that fit nowhere stay queued; a
larger task does not block smaller ones behind it. A retried task avoids the node its
last attempt failed on whenever another node could ever run it, even if that means
waiting for that node to have room.

Anti-starvation rule: a queued task's effective priority grows by one for every
``AGING_S`` seconds it has waited, so a low-priority task is eventually ahead of any
newer high-priority stream.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Container, Iterator

import msgspec

from coordinator.projection import QUEUE_LOG_MAX
from coordinator.state import TRUST_RANK, ClusterState, NodeState, NodeView, TaskState, TaskView
from events.base import Resources
from events.task import TaskAssigned

AGING_S = 30.0


class Reservation(msgspec.Struct, kw_only=True):
    """Resources promised by assignments published but not yet seen back in the log."""

    resources: Resources = Resources()
    count: int = 0
    gpus: list[int] = []


def queue_key(task: TaskView) -> tuple[float, int]:
    """Sort key of the ready queue. Effective priority is ``priority + (now - queued_at) /
    AGING_S``; ``now`` is the same for every task, so the order is fixed when a task is
    queued and the queue can stay sorted instead of being sorted on every decision."""
    return (task.queued_at / AGING_S - task.spec.priority, task.order)


class ReadyIndex:
    """The queued tasks in scheduling order, kept sorted incrementally: new entries come
    from ``state.queue_log``; entries of tasks that left the queue are skipped and
    compacted away now and then."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, int, str]] = []
        self.synced = False

    def sync(self, state: ClusterState) -> None:
        if not self.synced or len(state.queue_log) >= QUEUE_LOG_MAX:
            self.entries = sorted((*queue_key(state.tasks[t]), t) for t in state.queue)
            self.synced = True
        else:
            for task_id in state.queue_log:
                task = state.tasks[task_id]
                if task.state == TaskState.QUEUED:
                    insort(self.entries, (*queue_key(task), task_id))
        state.queue_log.clear()

    def ordered(self, state: ClusterState) -> Iterator[TaskView]:
        stale = 0
        yielded: set[str] = set()  # a task requeued with an equal key has two equal entries
        for key0, key1, task_id in self.entries:
            task = state.tasks[task_id]
            if task_id in yielded or task_id not in state.queue or queue_key(task) != (key0, key1):
                stale += 1
                continue
            yielded.add(task_id)
            yield task
        if stale > 64 and stale * 2 > len(self.entries):
            self.entries = [e for e in self.entries if e[2] in state.queue and queue_key(state.tasks[e[2]]) == e[:2]]


def eligible(state: ClusterState, node: NodeView, task: TaskView) -> bool:
    if node.state != NodeState.ACTIVE or task.spec.executor not in node.executors:
        return False
    if node.trust < state.trust.floor:
        return False
    wanted = task.spec.min_trust
    return wanted is None or TRUST_RANK[state.trust.group(node.trust)] >= TRUST_RANK[wanted]


def _fits(node: NodeView, task: TaskView, held: Reservation, free_gpus: list[int]) -> bool:
    if node.running + held.count >= node.max_tasks:
        return False
    need = task.spec.resources
    if need.gpu > len(free_gpus):
        return False
    return need.fits_in(node.available - held.resources)


def _has_alternative(state: ClusterState, nodes: list[NodeView], task: TaskView) -> bool:
    """Whether a node other than the one to avoid could ever run the task (busy or not)."""
    return any(
        n.node_id != task.avoid_node
        and eligible(state, n, task)
        and task.spec.resources.fits_in(n.capacity)
        and task.spec.resources.gpu <= len(n.gpus)
        for n in nodes
    )


def place(
    state: ClusterState,
    now: float,
    reserved: dict[str, Reservation],
    emitter: str = "coordinator",
    busy: Container[str] = (),
    index: ReadyIndex | None = None,
) -> list[TaskAssigned]:
    """Assignments for ready tasks; ``busy`` tasks already have a decision in flight."""
    nodes = [n for n in state.nodes.values() if n.state == NodeState.ACTIVE]
    held = {n.node_id: reserved.setdefault(n.node_id, Reservation()) for n in nodes}
    open_slots = sum(max(0, n.max_tasks - n.running - held[n.node_id].count) for n in nodes)
    if open_slots <= 0 or not state.queue:
        return []
    index = index or ReadyIndex()
    index.sync(state)
    free_gpus = {n.node_id: n.free_gpus(state.allocations) for n in nodes if n.gpus}
    for node_id, res in held.items():
        if res.gpus:
            free_gpus[node_id] = [g for g in free_gpus.get(node_id, []) if g not in res.gpus]
    decisions: list[TaskAssigned] = []
    for task in index.ordered(state):
        if open_slots <= 0:
            break
        if task.not_before > now or task.task_id in busy:
            continue
        best: NodeView | None = None
        best_key: tuple[bool, float, float] | None = None
        avoid = task.avoid_node if task.avoid_node and _has_alternative(state, nodes, task) else None
        for node in nodes:
            gpus = free_gpus.get(node.node_id, [])
            if node.node_id == avoid or not eligible(state, node, task):
                continue
            if not _fits(node, task, held[node.node_id], gpus):
                continue
            load = (node.running + held[node.node_id].count) / max(1, node.max_tasks)
            key = (node.node_id == task.avoid_node, load, -(node.available.cpu - held[node.node_id].resources.cpu))
            if best_key is None or key < best_key:
                best, best_key = node, key
        if best is None:
            continue
        gpus = free_gpus.get(best.node_id, [])[: task.spec.resources.gpu]
        if gpus:
            free_gpus[best.node_id] = [g for g in free_gpus[best.node_id] if g not in gpus]
        res = held[best.node_id]
        res.resources = res.resources + task.spec.resources
        res.count += 1
        res.gpus = res.gpus + gpus
        open_slots -= 1
        decisions.append(
            TaskAssigned(
                task_id=task.task_id,
                node_id=best.node_id,
                attempt=task.attempt + 1,
                gpus=gpus,
                spec=task.spec,
                emitter=emitter,
            )
        )
    return decisions
