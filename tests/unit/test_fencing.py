"""A deposed leader's decision, published late, is void for every projection alike: the
coordinator's and the node's (events.fencing)."""

from __future__ import annotations

from coordinator.projection import apply as coordinator_apply
from coordinator.state import ClusterState
from events.fencing import superseded
from events.node import LeaderElected
from events.task import TaskAssigned, TaskSpec, TaskSubmitted
from node.state import LocalState, NodeLocal
from node.state import apply as node_apply

SPEC = TaskSpec(executor="function", type="noop")


def assigned(term: int, node: str = "n1") -> TaskAssigned:
    return TaskAssigned(task_id="t1", node_id=node, attempt=1, spec=SPEC, term=term, emitter="coordinator")


def test_only_older_terms_of_coordinator_decisions_are_void() -> None:
    assert superseded(5, assigned(4))
    assert not superseded(5, assigned(5)) and not superseded(5, assigned(6))
    assert not superseded(0, assigned(1))  # no election yet: nothing to fence against
    election = LeaderElected(coordinator_id="c2", term=3, emitter="coordinator")
    assert not superseded(5, election)  # not a decision: the fold decides what an old election means


def test_a_node_ignores_an_assignment_of_a_deposed_leader() -> None:
    local = NodeLocal("n1")
    node_apply(local, LeaderElected(coordinator_id="c1", term=2, emitter="coordinator"), 1)
    node_apply(local, LeaderElected(coordinator_id="c2", term=7, emitter="coordinator"), 2)
    node_apply(local, assigned(2), 3)  # made by c1 before it knew, logged after c2 won
    assert "t1" not in local.tasks and local.seq == 3
    node_apply(local, assigned(7), 4)
    assert local.tasks["t1"].state == LocalState.ASSIGNED


def test_the_coordinator_and_the_node_agree() -> None:
    state = ClusterState()
    coordinator_apply(state, TaskSubmitted(task_id="t1", spec=SPEC, emitter="client:alice"), 1)
    coordinator_apply(state, LeaderElected(coordinator_id="c2", term=7, emitter="coordinator"), 2)
    coordinator_apply(state, assigned(2), 3)
    assert state.ignored == 1 and state.tasks["t1"].attempt == 0
