"""Theory of operation: the coordinator's view of the cluster, as plain data.

``ClusterState`` holds one ``TaskView`` per task, one ``NodeView`` per node, the resources
allocated to running attempts, and the open help/resource requests. It is changed only by
``coordinator.projection.apply`` (a fold over the event log), so a rebuild from sequence 0
gives the same state. Derived indexes (the ready queue, the reverse dependency map) are
rebuilt from the views after a load.

Finished tasks do not stay in memory: a coordinator evicts (``evict``) the views of terminal
tasks whose rows are flushed, keeping only their ids and states (``finished``), and the
fold faults a view back in from its row when an event needs it (``task``), so the fold
decides alike whether a view was in memory or not.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import msgspec

from events.base import Resources
from events.node import GpuInfo
from events.task import OutputFile, TaskSpec


class TaskState(StrEnum):
    PENDING = "pending"  # waiting for dependencies
    QUEUED = "queued"  # ready, waiting for a node
    ASSIGNED = "assigned"
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt failed; the coordinator will requeue it
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED})
ON_NODE = frozenset({TaskState.ASSIGNED, TaskState.RUNNING})

# Legal transitions; anything else is ignored by the projection (and counted).
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.PENDING: frozenset({TaskState.QUEUED, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.QUEUED: frozenset({TaskState.ASSIGNED, TaskState.CANCELLED, TaskState.PENDING, TaskState.FAILED}),
    TaskState.ASSIGNED: frozenset(
        {TaskState.RUNNING, TaskState.COMPLETED, TaskState.FAILED, TaskState.RETRYING}
        | {TaskState.CANCELLED, TaskState.QUEUED}
    ),
    TaskState.RUNNING: frozenset(
        {TaskState.COMPLETED, TaskState.FAILED, TaskState.RETRYING, TaskState.CANCELLED, TaskState.QUEUED}
    ),
    TaskState.RETRYING: frozenset({TaskState.QUEUED, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.COMPLETED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}


class NodeState(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    DRAINED = "drained"
    LOST = "lost"


LIVE = frozenset({NodeState.ACTIVE, NodeState.DRAINING})  # expected to heartbeat


class TaskView(msgspec.Struct, kw_only=True, omit_defaults=True):
    # its stored row leaves defaults out: a no-op task's is a third of the bytes to encode and
    # write; the API shows every field (coordinator.views.task_detail)
    task_id: str
    spec: TaskSpec
    state: TaskState
    order: int  # submission order, the FIFO tie-breaker
    submitted_at: float
    updated_at: float
    queued_at: float = 0.0
    attempt: int = 0
    node_id: str | None = None
    gpus: list[int] = []
    waiting_on: list[str] = []
    not_before: float = 0.0
    avoid_node: str | None = None
    last_node: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    exit_code: int | None = None
    error: str | None = None
    reason: str | None = None
    duration_s: float | None = None
    outputs: list[OutputFile] = []
    stdout: str = ""  # the last few KB; the event has the bounded whole
    stderr: str = ""
    cancel_requested: bool = False
    blocked_on: str | None = None  # an open help request keeps a task waiting
    extra: Resources = Resources()  # granted on top of the request while running
    attempt_nodes: list[str] = []  # the node of each attempt, in order
    submitted_by: str | None = None  # the authenticated user (the subject's by.<user>)
    cancelled_by: str | None = None

    def attempt_node(self, attempt: int) -> str | None:
        """Where ``attempt`` was assigned; None if unknown (rows from before this was kept)."""
        if 0 < attempt <= len(self.attempt_nodes):
            return self.attempt_nodes[attempt - 1] or None
        if attempt == self.attempt and not self.attempt_nodes:
            return self.last_node
        return None


class NodeView(msgspec.Struct, kw_only=True):
    node_id: str
    state: NodeState
    capacity: Resources
    max_tasks: int
    executors: list[str]
    gpus: list[GpuInfo] = []
    hostname: str = ""
    registered_at: float = 0.0
    updated_at: float = 0.0
    heartbeat_s: float = 2.0
    allocated: Resources = Resources()
    running: int = 0
    trust: float = 50.0
    completed: int = 0
    failed: int = 0
    drain_requested: bool = False  # since it last registered

    @property
    def available(self) -> Resources:
        return self.capacity - self.allocated

    def free_gpus(self, allocations: dict[str, Allocation]) -> list[int]:
        used = {g for a in allocations.values() if a.node_id == self.node_id for g in a.gpus}
        return [g.index for g in self.gpus if g.index not in used]


class Allocation(msgspec.Struct, kw_only=True):
    task_id: str
    node_id: str
    attempt: int
    resources: Resources
    gpus: list[int] = []


class OpenRequest(msgspec.Struct, kw_only=True):
    request_id: str
    task_id: str
    node_id: str
    attempt: int
    kind: str  # "help" or "resource"
    asked_at: float
    problem: str = ""
    help_kind: str = ""
    details: str = ""
    resource: str = ""
    amount: float = 0.0
    state: str = "open"  # open, waiting_operator, answered
    answer: str = ""


class TrustChange(msgspec.Struct, kw_only=True, array_like=True):
    seq: int
    node_id: str
    delta: float
    score: float
    task_id: str | None
    cause: str


class TrustPolicy(msgspec.Struct, frozen=True, kw_only=True):
    initial: float = 50.0
    success: float = 2.0
    failure: float = -5.0
    high: float = 80.0
    medium: float = 50.0
    floor: float = 10.0

    def group(self, score: float) -> str:
        if score >= self.high:
            return "high"
        if score >= self.medium:
            return "medium"
        return "low"


TRUST_RANK = {"low": 0, "medium": 1, "high": 2}


class LeaderView(msgspec.Struct, kw_only=True):
    """The coordinator that won the newest term (events.node.LeaderElected)."""

    coordinator_id: str
    term: int
    since: float
    host: str = ""
    pid: int = 0


class HeartbeatView(msgspec.Struct, kw_only=True):
    """The cluster-wide heartbeat interval (events.node.HeartbeatIntervalSet) and the one
    it replaced at ``since``: nodes learn of a shorter interval only as they see it, so the
    coordinator keeps counting on the longer one for a while (``CoordinatorCore``)."""

    interval_s: float = 0.0  # 0: none, each node's own interval
    previous_s: float = 0.0
    since: float = 0.0
    nodes: int = 0


class ClusterState:
    def __init__(self, trust: TrustPolicy | None = None) -> None:
        self.trust = trust or TrustPolicy()
        self.tasks: dict[str, TaskView] = {}  # every task not evicted
        # evicted: terminal tasks whose views are only in their rows, by id; ``load_task``
        # reads such a row back (None: nothing is ever evicted, as in a replay)
        self.finished: dict[str, TaskState] = {}
        self.finished_counts: Counter[TaskState] = Counter()
        self.finished_order: deque[str] = deque()  # terminal, flushed, still in memory: oldest first
        self.load_task: Callable[[str], TaskView | None] | None = None
        self.nodes: dict[str, NodeView] = {}
        self.allocations: dict[str, Allocation] = {}
        self.requests: dict[str, OpenRequest] = {}
        self.seq = 0  # last stream sequence applied
        self.next_order = 0
        # derived indexes
        self.queue: set[str] = set()
        self.queue_log: list[str] = []  # newly queued tasks, for the scheduler's ready index
        self.dependents: dict[str, set[str]] = {}
        self.retrying: set[str] = set()
        self.assigned: set[str] = set()  # assigned, not started yet: watched for a start timeout
        self.doomed: dict[str, str] = {}  # pending task -> why it can never run
        self.cancel_wanted: set[str] = set()
        self.reassign_wanted: dict[str, int] = {}  # task -> attempt an operator/policy said to retry
        # node indexes, so the core's per-step work does not grow with the number of nodes
        self.live: set[str] = set()  # nodes in LIVE states
        self.lost: set[str] = set()
        # nodes whose view changed, in order of change (a new node is first logged when it
        # registers), for the scheduler's node index; bounded by the number of nodes
        self.node_log: dict[str, None] = {}
        # persistence bookkeeping: what changed since the last flush
        self.dirty_tasks: set[str] = set()
        self.dirty_nodes: set[str] = set()
        self.dirty_allocs: set[str] = set()
        self.dirty_requests: set[str] = set()
        self.new_trust: list[TrustChange] = []
        self.dirty_settings = False
        self.ignored = 0
        # the highest LeaderElected applied: decisions of a lower term are ignored (fencing)
        self.term = 0
        self.leader: LeaderView | None = None
        self.dirty_leader = False
        self.heartbeat = HeartbeatView()
        self.dirty_heartbeat = False

    # -- tasks in memory or evicted ---------------------------------------------------

    def task(self, task_id: str) -> TaskView | None:
        """The task's view, read back into memory if it was evicted."""
        task = self.tasks.get(task_id)
        if task is None and task_id in self.finished and self.load_task is not None:
            task = self.load_task(task_id)
            if task is not None:
                self.finished_counts[self.finished.pop(task_id)] -= 1
                self.tasks[task_id] = task
                self.finished_order.append(task_id)  # evicted again in its turn
        return task

    def state_of(self, task_id: str) -> TaskState | None:
        task = self.tasks.get(task_id)
        return task.state if task is not None else self.finished.get(task_id)

    def known(self, task_id: str) -> bool:
        return task_id in self.tasks or task_id in self.finished

    def __contains__(self, task_id: object) -> bool:  # `task_id in state`: coordinator.dag
        return isinstance(task_id, str) and self.known(task_id)

    def counts(self) -> Counter[str]:
        """Tasks by state, evicted ones included."""
        counts = Counter(t.state.value for t in self.tasks.values())
        for state, n in self.finished_counts.items():
            if n:
                counts[state.value] += n
        return counts

    def evict(self, keep: int) -> int:
        """Drop the views of the oldest finished tasks beyond ``keep`` (their rows are
        flushed: only those reach ``finished_order``). Returns how many were dropped."""
        dropped = 0
        order = self.finished_order
        while len(order) > keep:
            task_id = order.popleft()
            task = self.tasks.get(task_id)
            if task is None or task.state not in TERMINAL:
                continue
            if task_id in self.dirty_tasks:  # changed again since (a late cancel, say): next time
                order.append(task_id)
                break
            del self.tasks[task_id]
            self.finished[task_id] = task.state
            self.finished_counts[task.state] += 1
            self.dependents.pop(task_id, None)  # settled when it finished; never read again
            dropped += 1
        return dropped

    def reindex(self) -> None:
        """Rebuild the derived indexes from the views (after loading from SQLite)."""
        self.queue = {t.task_id for t in self.tasks.values() if t.state == TaskState.QUEUED}
        self.queue_log = list(self.queue)
        self.retrying = {t.task_id for t in self.tasks.values() if t.state == TaskState.RETRYING}
        self.assigned = {t.task_id for t in self.tasks.values() if t.state == TaskState.ASSIGNED}
        self.cancel_wanted = {t.task_id for t in self.tasks.values() if t.cancel_requested and t.state not in TERMINAL}
        self.reassign_wanted = {
            r.task_id: r.attempt
            for r in self.requests.values()
            if r.state == "answered"
            and r.answer.startswith("retry")
            and (t := self.tasks.get(r.task_id)) is not None
            and t.state in ON_NODE
            and t.attempt == r.attempt
        }
        self.dependents = {}
        self.doomed = {}
        for task in self.tasks.values():
            for dep in task.waiting_on:
                dep_state = self.state_of(dep)
                if dep_state is None:
                    if task.state == TaskState.PENDING:
                        self.doomed[task.task_id] = f"unknown dependency {dep}"
                    continue
                self.dependents.setdefault(dep, set()).add(task.task_id)
                if task.state == TaskState.PENDING and dep_state in (TaskState.FAILED, TaskState.CANCELLED):
                    self.doomed[task.task_id] = f"dependency {dep} {dep_state}"
        self.next_order = max(self.next_order, max((t.order for t in self.tasks.values()), default=-1) + 1)
        self.live = {n.node_id for n in self.nodes.values() if n.state in LIVE}
        self.lost = {n.node_id for n in self.nodes.values() if n.state == NodeState.LOST}
        self.node_log = dict.fromkeys(self.nodes)

    def node_changed(self, node: NodeView) -> None:
        """Record a change of ``node`` (the projection calls this on every one): its row is
        dirty, and the node indexes follow its state."""
        node_id = node.node_id
        self.dirty_nodes.add(node_id)
        self.node_log[node_id] = None
        if node.state in LIVE:
            self.live.add(node_id)
        else:
            self.live.discard(node_id)
        if node.state == NodeState.LOST:
            self.lost.add(node_id)
        else:
            self.lost.discard(node_id)

    def validate(self) -> None:
        """Invariants the tests check: allocations match node accounting, never over capacity."""
        for node in self.nodes.values():
            allocs = [a for a in self.allocations.values() if a.node_id == node.node_id]
            total = Resources()
            for a in allocs:
                total = total + a.resources
            assert total == node.allocated, (node.node_id, total, node.allocated)
            assert len(allocs) == node.running, (node.node_id, len(allocs), node.running)
        for alloc in self.allocations.values():
            task = self.tasks[alloc.task_id]
            assert task.state in ON_NODE and task.node_id == alloc.node_id, (task, alloc)
        for task in self.tasks.values():
            if task.state in ON_NODE:
                assert task.task_id in self.allocations, task.task_id
