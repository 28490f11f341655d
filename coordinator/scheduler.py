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

Work per round does not grow with the number of nodes: the ready queue and the active
nodes are kept sorted incrementally (``ReadyIndex``, ``NodeIndex``), so a placement takes
the first node in preference order that fits instead of scanning them all, and a round
stops after ``limit`` assignments so the shell can yield to its loop.
"""

from __future__ import annotations

from bisect import bisect_left, insort
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
                task = state.tasks.get(task_id)  # None: finished since, and evicted
                if task is not None and task.state == TaskState.QUEUED:
                    insort(self.entries, (*queue_key(task), task_id))
        state.queue_log.clear()

    def ordered(self, state: ClusterState) -> Iterator[TaskView]:
        stale = 0
        leading = 0  # stale entries before the first live one
        yielded: set[str] = set()  # a task requeued with an equal key has two equal entries
        try:
            for key0, key1, task_id in self.entries:
                task = state.tasks.get(task_id)
                if task is None or task_id in yielded or task_id not in state.queue or queue_key(task) != (key0, key1):
                    stale += 1
                    leading += not yielded
                    continue
                yielded.add(task_id)
                yield task
        finally:  # (also when the caller stops early, as placement does once the nodes are full)
            # the tasks placed from the front of a burst: gone now, not walked again each round
            del self.entries[:leading]
            stale -= leading
            if stale > 64 and stale * 2 > len(self.entries):
                self.entries = [
                    e for e in self.entries if e[2] in state.queue and queue_key(state.tasks[e[2]]) == e[:2]
                ]


def eligible(state: ClusterState, node: NodeView, task: TaskView) -> bool:
    if node.state != NodeState.ACTIVE or task.spec.executor not in node.executors:
        return False
    if node.trust < state.trust.floor:
        return False
    wanted = task.spec.min_trust
    return wanted is None or TRUST_RANK[state.trust.group(node.trust)] >= TRUST_RANK[wanted]


NodeKey = tuple[float, float, int, str]
NOTHING = Resources()


class NodeIndex:
    """Active nodes in the order placement prefers them: least loaded (running plus
    reserved over slots), then most free cpu, then registration order, which is the order
    a full scan picks among equals. Kept sorted incrementally: nodes the projection
    changed come from ``state.node_log``, reservations changed outside ``place`` are
    ``touch``ed. Each entry also keeps the node's free resources net of reservations, so
    checking a fit allocates nothing."""

    def __init__(self) -> None:
        self.order: list[NodeKey] = []
        self.key: dict[str, NodeKey] = {}
        self.free: dict[str, Resources] = {}
        self.rank: dict[str, int] = {}
        self.touched: set[str] = set()
        self.synced = False

    def touch(self, node_id: str) -> None:
        self.touched.add(node_id)

    def invalidate(self) -> None:
        self.synced = False

    def sync(self, state: ClusterState, reserved: dict[str, Reservation]) -> None:
        if not self.synced:
            self.order, self.key, self.free, self.touched = [], {}, {}, set()
            self.rank = {node_id: i for i, node_id in enumerate(state.nodes)}
            for node_id in state.nodes:
                self.update(state, reserved, node_id)
            self.synced = True
        else:
            for node_id in state.node_log:
                self.update(state, reserved, node_id)
            for node_id in self.touched:
                self.update(state, reserved, node_id)
        self.touched.clear()
        state.node_log.clear()

    def update(self, state: ClusterState, reserved: dict[str, Reservation], node_id: str) -> None:
        old = self.key.pop(node_id, None)
        if old is not None:
            del self.order[bisect_left(self.order, old)]
            del self.free[node_id]
        node = state.nodes.get(node_id)
        if node is None or node.state != NodeState.ACTIVE:
            return
        rank = self.rank.setdefault(node_id, len(self.rank))  # new nodes are logged in registration order
        held = reserved.get(node_id)
        available = node.available
        if held is None or (not held.count and held.resources == NOTHING):
            count, cpu, free = 0, available.cpu, available
        else:
            count, cpu, free = held.count, available.cpu - held.resources.cpu, available - held.resources
        key = ((node.running + count) / max(1, node.max_tasks), -cpu, rank, node_id)
        insort(self.order, key)
        self.key[node_id] = key
        self.free[node_id] = free

    def has_room(self) -> bool:
        """Whether any active node has a free slot (the least loaded one is not full)."""
        return bool(self.order) and self.order[0][0] < 1.0


def _fits(node: NodeView, task: TaskView, held: Reservation | None, free: Resources, free_gpus: list[int]) -> bool:
    if node.running + (held.count if held else 0) >= node.max_tasks:
        return False
    need = task.spec.resources
    if need.gpu > len(free_gpus):
        return False
    return need.fits_in(free)


def _has_alternative(state: ClusterState, nodes: NodeIndex, task: TaskView) -> bool:
    """Whether a node other than the one to avoid could ever run the task (busy or not)."""
    return any(
        node_id != task.avoid_node
        and eligible(state, n := state.nodes[node_id], task)
        and task.spec.resources.fits_in(n.capacity)
        and task.spec.resources.gpu <= len(n.gpus)
        for node_id in nodes.key
    )


class _Round:
    """One placement round's view of free GPUs, computed for a node only when a task
    that needs GPUs looks at it."""

    def __init__(self, state: ClusterState, reserved: dict[str, Reservation]) -> None:
        self.state, self.reserved = state, reserved
        self.gpus: dict[str, list[int]] = {}

    def free_gpus(self, node: NodeView) -> list[int]:
        found = self.gpus.get(node.node_id)
        if found is None:
            found = node.free_gpus(self.state.allocations) if node.gpus else []
            held = self.reserved.get(node.node_id)
            if held is not None and held.gpus:
                found = [g for g in found if g not in held.gpus]
            self.gpus[node.node_id] = found
        return found


def _best(
    state: ClusterState, nodes: NodeIndex, reserved: dict[str, Reservation], round_: _Round, task: TaskView
) -> NodeView | None:
    """The first node in the index's order that may run the task and has room for it; the
    node to avoid only if no other could ever run it, and then only as a last resort."""
    avoid = task.avoid_node if task.avoid_node and _has_alternative(state, nodes, task) else None
    wants_gpus = task.spec.resources.gpu > 0
    last_resort: NodeView | None = None
    for load, _, _, node_id in nodes.order:
        if load >= 1.0:
            break  # this node and all after it are full
        node = state.nodes[node_id]
        if node_id == avoid or not eligible(state, node, task):
            continue
        gpus = round_.free_gpus(node) if wants_gpus else []
        if not _fits(node, task, reserved.get(node_id), nodes.free[node_id], gpus):
            continue
        if node_id == task.avoid_node:
            last_resort = last_resort or node
            continue
        return node
    return last_resort


def place(
    state: ClusterState,
    now: float,
    reserved: dict[str, Reservation],
    emitter: str = "coordinator",
    busy: Container[str] = (),
    index: ReadyIndex | None = None,
    nodes: NodeIndex | None = None,
    limit: int = 0,
) -> list[TaskAssigned]:
    """Assignments for ready tasks, at most ``limit`` (0: no limit); ``busy`` tasks
    already have a decision in flight. ``nodes`` must have seen every change to
    ``reserved`` made outside this function (``NodeIndex.touch``); without it a fresh
    index is built."""
    if nodes is not None:
        nodes.sync(state, reserved)  # every round, so a burst finds it current (work per change)
    if not state.queue:
        return []
    if nodes is None:
        nodes = NodeIndex()
        nodes.sync(state, reserved)
    if not nodes.has_room():
        return []
    index = index or ReadyIndex()
    index.sync(state)
    round_ = _Round(state, reserved)
    decisions: list[TaskAssigned] = []
    for task in index.ordered(state):
        if not nodes.has_room() or (limit and len(decisions) >= limit):
            break
        if task.not_before > now or task.task_id in busy:
            continue
        best = _best(state, nodes, reserved, round_, task)
        if best is None:
            continue
        gpus = round_.free_gpus(best)[: task.spec.resources.gpu] if task.spec.resources.gpu else []
        if gpus:
            round_.gpus[best.node_id] = [g for g in round_.gpus[best.node_id] if g not in gpus]
        res = reserved.setdefault(best.node_id, Reservation())
        res.resources = res.resources + task.spec.resources
        res.count += 1
        res.gpus = res.gpus + gpus
        nodes.update(state, reserved, best.node_id)
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
