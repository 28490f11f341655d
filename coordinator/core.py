"""Theory of operation: the coordinator's decision core, with no I/O and no clock.

``handle(event, seq)`` folds one logged event into the state; ``decide(now)`` returns the
decision events the state calls for (reassign work of lost nodes, requeue failed
attempts with backoff, carry out cancellations, place queued tasks, answer requests).
The shell publishes the decisions; they take effect only when they come back through
the log, so a replay sees exactly what the live coordinator saw. Until then a decision is
"in flight": its key suppresses a duplicate decision and an assignment's resources stay
reserved. In-flight entries expire, so a publish lost in a server restart is decided anew.

Nothing in ``decide`` walks every node: liveness deadlines sit in a heap
(coordinator/liveness.py), placement uses the scheduler's node index, and the heartbeat
interval the nodes are asked for (``HeartbeatIntervalSet``) is an event, so a replay
counts on the same interval the live coordinator did.
"""

from __future__ import annotations

import math

import msgspec

from coordinator.liveness import Liveness
from coordinator.policies import DEFAULT, PolicyConfig, answer_requests
from coordinator.projection import apply
from coordinator.scheduler import NodeIndex, ReadyIndex, Reservation, place
from coordinator.state import ON_NODE, ClusterState, NodeState, NodeView
from events.base import Event
from events.limits import clip
from events.negotiation import ResourceGranted
from events.node import HeartbeatIntervalSet, NodeDrained, NodeDrainRequested, NodeLost, NodeRegistered
from events.task import TaskAssigned, TaskCancelled, TaskFailed, TaskReassigned

EMITTER = "coordinator"
UNSTARTED_CHECK_S = 1.0
# assignments per decide(): the shell publishes them and yields to the loop before asking
# for more, so a large round does not hold the loop (heartbeats, API) for its whole length
PLACE_CHUNK = 250
# events that change a node's registration or state, hence its liveness deadline
NODE_EVENTS = (NodeRegistered, NodeLost, NodeDrained, NodeDrainRequested)


class CoreConfig(msgspec.Struct, frozen=True, kw_only=True):
    missed_heartbeats: int = 3
    # Nomad's rule: the interval the coordinator announces (HeartbeatIntervalSet) stretches
    # with the cluster so the heartbeats it takes stay under this bound; 2,500/s keeps a
    # lost node's detection within 12 s at 10,000 nodes for a few % of a core
    max_heartbeats_per_s: float = 2500.0
    heartbeat_step_s: float = 0.5  # announced intervals are multiples of this
    # after a coordinator (re)start, nodes get this long to show up before being lost
    startup_grace_s: float = 5.0
    # an assignment its node has not started after this many of its heartbeat intervals is
    # taken back and placed again (a node that restarted and never saw it, a lost message)
    start_timeout_heartbeats: float = 5.0
    retry_base_s: float = 0.5
    retry_max_s: float = 30.0
    inflight_ttl_s: float = 15.0


def backoff(attempt: int, config: CoreConfig) -> float:
    return min(config.retry_max_s, config.retry_base_s * 2 ** max(0, attempt - 1))


class _Inflight(msgspec.Struct):
    key: str
    decided_at: float
    event: Event


class CoordinatorCore:
    def __init__(self, state: ClusterState, config: CoreConfig | None = None, policy: PolicyConfig = DEFAULT) -> None:
        self.state = state
        self.config = config or CoreConfig()
        self.policy = policy
        self.inflight: dict[str, _Inflight] = {}
        self.keys: dict[str, str] = {}
        self.reserved: dict[str, Reservation] = {}
        self.ready = ReadyIndex()
        self.nodes = NodeIndex()
        self.last_seen: dict[str, float] = {}
        self.liveness = Liveness(self.last_seen)
        self.started_at: float | None = None
        self.unstarted_checked_at = 0.0
        self.more = False  # the last decide() stopped at PLACE_CHUNK assignments

    def handle(self, event: Event, seq: int = 0) -> None:
        pending = self.inflight.pop(event.id, None)
        if pending is not None:
            self._forget(pending)
        apply(self.state, event, seq)
        if isinstance(event, NODE_EVENTS):
            self.liveness.touch(event.node_id)

    def reset_inflight(self) -> None:
        """Forget every decision in flight (a new term: what an earlier one decided and the
        log has not shown is not ours to wait for)."""
        self.inflight.clear()
        self.keys.clear()
        self.reserved.clear()
        self.nodes.invalidate()

    def grace(self, now: float) -> None:
        """Restart the liveness clock (after a restart or a reconnect of the coordinator)."""
        self.started_at = now

    def heartbeat(self, node_id: str, now: float) -> None:
        self.last_seen[node_id] = now

    def decide(self, now: float) -> list[Event]:
        if self.started_at is None:
            self.started_at = now
        self._expire(now)
        out: list[Event] = []
        out += self._announce()
        out += self._liveness(now)
        out += self._lost_work()
        out += self._unstarted(now, {e.node_id for e in out if isinstance(e, NodeLost)})
        out += self._cancellations()
        out += self._retries(now)
        out = [e for e in out if self._track(e, now)]
        out += self._track_answers(answer_requests(self.state, now, EMITTER, self.policy), now)
        placed = place(
            self.state,
            now,
            self.reserved,
            EMITTER,
            busy=self.keys,
            index=self.ready,
            nodes=self.nodes,
            limit=PLACE_CHUNK,
        )
        self.more = len(placed) >= PLACE_CHUNK
        for assignment in placed:
            tracked = self._track(assignment, now)
            assert tracked, assignment  # place() skipped tasks with a decision in flight
        return out + list(placed)

    # -- in-flight bookkeeping ---------------------------------------------------------

    @staticmethod
    def _key(event: Event) -> str:
        """What a decision is about. Lifecycle decisions are keyed by the bare task id
        (one in flight per task at a time), which is what ``place(busy=...)`` checks."""
        if isinstance(event, (TaskAssigned, TaskReassigned, TaskCancelled, TaskFailed)):
            return event.task_id
        subject = getattr(event, "task_id", None) or getattr(event, "node_id", "")
        request = getattr(event, "request_id", None)
        return f"{type(event).__name__}:{subject}:{request or ''}"

    def _track(self, event: Event, now: float) -> bool:
        key = self._key(event)
        if key in self.keys:
            return False
        self.keys[key] = event.id
        self.inflight[event.id] = _Inflight(key, now, event)
        return True

    def _track_answers(self, answers: list[Event], now: float) -> list[Event]:
        """A grant that preempts goes out only if every preemption did: a victim with
        another decision in flight would otherwise keep its resources and the node would
        be promised more than it has."""
        out: list[Event] = []
        requeued: set[str] = set()
        for event in answers:
            if isinstance(event, ResourceGranted) and not set(event.preempted) <= requeued:
                continue  # asked again next round, when the victims are settled
            if self._track(event, now):
                out.append(event)
                if isinstance(event, TaskReassigned):
                    requeued.add(event.task_id)
        return out

    def _forget(self, pending: _Inflight) -> None:
        self.keys.pop(pending.key, None)
        event = pending.event
        if isinstance(event, TaskAssigned):
            held = self.reserved.get(event.node_id)
            task = self.state.tasks.get(event.task_id)
            if held is not None and task is not None:
                held.resources = held.resources - task.spec.resources
                held.count -= 1
                held.gpus = [g for g in held.gpus if g not in event.gpus]
                self.nodes.touch(event.node_id)

    def _expire(self, now: float) -> None:
        # entries are in the order they were decided, so the expired ones come first
        expired = []
        for event_id, pending in self.inflight.items():
            if now - pending.decided_at <= self.config.inflight_ttl_s:
                break
            expired.append(event_id)
        for event_id in expired:
            self._forget(self.inflight.pop(event_id))

    # -- decisions ---------------------------------------------------------------------

    def floor(self, now: float) -> float:
        """The cluster-wide interval the coordinator counts on now: the announced one, or
        the one before it while nodes may not have seen a shorter one yet."""
        beat = self.state.heartbeat
        if beat.previous_s > beat.interval_s and now < beat.since + beat.previous_s * self.config.missed_heartbeats:
            return beat.previous_s
        return beat.interval_s

    def _interval(self, node: NodeView, floor: float) -> float:
        return max(node.heartbeat_s, floor)

    def wanted_interval(self, live: int) -> float:
        """The interval to announce for ``live`` nodes (0: none needed)."""
        need = live / self.config.max_heartbeats_per_s
        if need <= 1.0:
            return 0.0
        step = self.config.heartbeat_step_s
        return min(60.0, math.ceil(need / step) * step)

    def _announce(self) -> list[Event]:
        live = len(self.state.live)
        current = self.state.heartbeat.interval_s
        wanted = self.wanted_interval(live)
        # shorter only once well below, so a cluster near a step does not flap
        if wanted > current or (wanted < current and live / self.config.max_heartbeats_per_s < 0.6 * current):
            return [HeartbeatIntervalSet(interval_s=wanted, nodes=live, emitter=EMITTER)]
        return []

    def _liveness(self, now: float) -> list[Event]:
        assert self.started_at is not None
        grace_end = self.started_at + self.config.startup_grace_s
        floor = self.floor(now)
        missed = self.config.missed_heartbeats

        def deadline(node: NodeView, at_least: float) -> float:
            heard = max(self.last_seen.get(node.node_id, 0.0), grace_end, node.updated_at)
            return max(at_least, heard + self._interval(node, floor) * missed)

        def silent(node: NodeView) -> bool:
            seen = max(self.last_seen.get(node.node_id, 0.0), grace_end)
            return now - max(seen, node.updated_at) > self._interval(node, floor) * missed

        out: list[Event] = []
        for node_id in self.liveness.silent(self.state, now, floor, deadline, silent):
            node = self.state.nodes[node_id]
            seen = max(self.last_seen.get(node_id, 0.0), grace_end)
            timeout = self._interval(node, floor) * missed
            out.append(
                NodeLost(
                    node_id=node_id,
                    reason=f"no heartbeat for {now - seen:.1f}s (timeout {timeout:.1f}s)",
                    last_seen=seen,
                    emitter=EMITTER,
                )
            )
        return out

    def _lost_work(self) -> list[Event]:
        out: list[Event] = []
        if not any(self.state.nodes[n].running for n in self.state.lost):
            return out
        for task in self.state.tasks.values():
            if task.state not in ON_NODE or task.node_id is None:
                continue
            node = self.state.nodes.get(task.node_id)
            if node is None or node.state != NodeState.LOST:
                continue
            if task.attempt < task.spec.max_attempts and not task.cancel_requested:
                out.append(
                    TaskReassigned(
                        task_id=task.task_id,
                        attempt=task.attempt,
                        reason=f"node {node.node_id} lost",
                        from_node=node.node_id,
                        avoid_node=node.node_id,
                        emitter=EMITTER,
                    )
                )
            else:
                out.append(
                    TaskFailed(
                        task_id=task.task_id,
                        node_id=node.node_id,
                        attempt=task.attempt,
                        error=f"node {node.node_id} lost",
                        reason="lost",
                        emitter=EMITTER,
                    )
                )
        return out

    def _unstarted(self, now: float, losing: set[str]) -> list[Event]:
        """Take back assignments a live node has not started in time (``losing``: nodes
        this round declares lost, whose work ``_lost_work`` moves next round)."""
        out: list[Event] = []
        assert self.started_at is not None
        # its bounds are seconds: once a second is soon enough, and keeps it off the hot path
        if not self.state.assigned or now - self.unstarted_checked_at < UNSTARTED_CHECK_S:
            return out
        self.unstarted_checked_at = now
        floor = self.floor(now)
        grace_end = self.started_at + self.config.startup_grace_s
        for task_id in self.state.assigned:
            task = self.state.tasks[task_id]
            node = self.state.nodes.get(task.node_id or "")
            if node is None or node.state == NodeState.LOST or node.node_id in losing or task.cancel_requested:
                continue  # lost work and cancellations have their own decisions
            limit = self._interval(node, floor) * self.config.start_timeout_heartbeats
            if now - max(task.updated_at, grace_end) > limit:
                out.append(
                    TaskReassigned(
                        task_id=task_id,
                        attempt=task.attempt,
                        reason=f"not started on {node.node_id} within {limit:.1f}s",
                        from_node=node.node_id,
                        emitter=EMITTER,
                    )
                )
        return out

    def _cancellations(self) -> list[Event]:
        out: list[Event] = []
        for task_id in self.state.cancel_wanted:
            task = self.state.tasks[task_id]
            on_node = task.state in ON_NODE
            out.append(
                TaskCancelled(
                    task_id=task_id,
                    reason=task.reason or "cancelled",
                    node_id=task.node_id if on_node else None,
                    attempt=task.attempt,
                    emitter=EMITTER,
                )
            )
        for task_id, why in self.state.doomed.items():
            out.append(TaskCancelled(task_id=task_id, reason=why, emitter=EMITTER))
        return out

    def _retries(self, now: float) -> list[Event]:
        out: list[Event] = []
        for task_id, attempt in self.state.reassign_wanted.items():
            task = self.state.tasks[task_id]
            out.append(
                TaskReassigned(
                    task_id=task_id,
                    attempt=attempt,
                    reason="retry on guidance",
                    from_node=task.node_id,
                    avoid_node=task.node_id,
                    emitter=EMITTER,
                )
            )
        for task_id in self.state.retrying:
            task = self.state.tasks[task_id]
            out.append(
                TaskReassigned(
                    task_id=task_id,
                    attempt=task.attempt,
                    reason=clip(f"attempt {task.attempt} failed: {task.error}"),
                    avoid_node=task.last_node,
                    not_before=now + backoff(task.attempt, self.config),
                    emitter=EMITTER,
                )
            )
        return out
