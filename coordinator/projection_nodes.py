"""The fold for node events, the trust policy, the heartbeat interval and elections.
Registered on ``coordinator.projection``'s dispatcher; the same rules as there apply:
time from events only, and whatever does not fit the current state changes nothing."""

from __future__ import annotations

from coordinator.projection import EPS, Implausible, _apply, _trust
from coordinator.state import ClusterState, HeartbeatView, LeaderView, NodeState, NodeView, TrustPolicy
from events.node import (
    HeartbeatIntervalSet,
    LeaderElected,
    NodeDrained,
    NodeDrainRequested,
    NodeLost,
    NodeRegistered,
    NodeTrustReset,
    TrustPolicySet,
)


@_apply.register
def _(event: NodeRegistered, state: ClusterState, seq: int) -> None:
    node = state.nodes.get(event.node_id)
    if node is not None and node.running and not _holds(event, node):
        raise Implausible(
            f"registration of {node.node_id} offers less than its running tasks hold "
            f"({node.running} tasks, {node.allocated} allocated)"
        )
    if node is None:
        node = NodeView(
            node_id=event.node_id,
            state=NodeState.ACTIVE,
            capacity=event.capacity,
            max_tasks=event.max_tasks,
            executors=list(event.executors),
            trust=state.trust.initial,
            registered_at=event.ts,
        )
        state.nodes[event.node_id] = node
    node.state = NodeState.ACTIVE
    node.drain_requested = False
    node.capacity = event.capacity
    node.max_tasks = event.max_tasks
    node.executors = list(event.executors)
    node.gpus = list(event.gpus)
    node.hostname = event.hostname
    node.heartbeat_s = event.heartbeat_s
    node.updated_at = event.ts
    state.node_changed(node)


def _holds(event: NodeRegistered, node: NodeView) -> bool:
    """Whether the capacity registered still holds what is allocated on the node."""
    cap, used = event.capacity, node.allocated
    return (
        event.max_tasks >= node.running
        and used.cpu <= cap.cpu + EPS
        and used.memory_gb <= cap.memory_gb + EPS
        and used.gpu <= cap.gpu
        and used.gpu_memory_gb <= cap.gpu_memory_gb + EPS
    )


def _set_node_state(state: ClusterState, node_id: str, new: NodeState, ts: float) -> None:
    node = state.nodes.get(node_id)
    if node is None:
        state.ignored += 1
        return
    node.state = new
    node.updated_at = ts
    state.node_changed(node)


@_apply.register
def _(event: NodeDrainRequested, state: ClusterState, seq: int) -> None:
    node = state.nodes.get(event.node_id)
    if node is None:
        state.ignored += 1
        return
    node.drain_requested = True
    state.node_changed(node)
    if node.state == NodeState.ACTIVE:
        _set_node_state(state, event.node_id, NodeState.DRAINING, event.ts)


@_apply.register
def _(event: NodeDrained, state: ClusterState, seq: int) -> None:
    node = state.nodes.get(event.node_id)
    # (DRAINING: rows written before drain_requested was kept)
    if node is None or not (node.drain_requested or node.state == NodeState.DRAINING):
        raise Implausible(f"{event.node_id} reports drained, but no drain was requested")
    _set_node_state(state, event.node_id, NodeState.DRAINED, event.ts)


@_apply.register
def _(event: NodeLost, state: ClusterState, seq: int) -> None:
    _set_node_state(state, event.node_id, NodeState.LOST, event.ts)


@_apply.register
def _(event: NodeTrustReset, state: ClusterState, seq: int) -> None:
    node = state.nodes.get(event.node_id)
    if node is None:
        return
    target = state.trust.initial if event.score is None else event.score
    _trust(state, event.node_id, target - node.trust, seq, None, "reset by operator")


@_apply.register
def _(event: TrustPolicySet, state: ClusterState, seq: int) -> None:
    state.trust = TrustPolicy(
        initial=event.initial,
        success=event.success,
        failure=event.failure,
        high=event.high,
        medium=event.medium,
        floor=event.floor,
    )
    state.dirty_settings = True


@_apply.register
def _(event: HeartbeatIntervalSet, state: ClusterState, seq: int) -> None:
    state.heartbeat = HeartbeatView(
        interval_s=event.interval_s, previous_s=state.heartbeat.interval_s, since=event.ts, nodes=event.nodes
    )
    state.dirty_heartbeat = True


@_apply.register
def _(event: LeaderElected, state: ClusterState, seq: int) -> None:
    if event.term <= state.term:
        state.ignored += 1  # an election older than one already applied
        return
    state.term = event.term
    state.leader = LeaderView(
        coordinator_id=event.coordinator_id, term=event.term, since=event.ts, host=event.host, pid=event.pid
    )
    state.dirty_leader = True
