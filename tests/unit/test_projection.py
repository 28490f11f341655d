from __future__ import annotations

import msgspec
import pytest

from coordinator.projection import Implausible, apply
from coordinator.state import NodeState, TaskState
from events import NodeLost, Resources, TaskCancelled, TaskCancelRequested, TaskReassigned
from tests.unit.factories import assign, complete, fail, fold, register, start, submit


def test_lifecycle_allocates_and_releases() -> None:
    state = fold(register("n1"), submit("t1", resources=Resources(cpu=2, memory_gb=1)), assign("t1", "n1"))
    assert state.nodes["n1"].available == Resources(cpu=2, memory_gb=7)
    apply(state, start("t1", "n1"))
    apply(state, complete("t1", "n1"))
    state.validate()
    assert state.tasks["t1"].state == TaskState.COMPLETED
    assert state.nodes["n1"].available == Resources(cpu=4, memory_gb=8)
    assert state.nodes["n1"].trust == 52


def test_an_attempt_that_ended_before_its_start_report_is_folded_like_one_that_sent_it() -> None:
    """node.startreport: a short attempt's only report carries its start."""
    state = fold(register("n1"), submit("t1", resources=Resources(cpu=2, memory_gb=1)), assign("t1", "n1"))
    end = complete("t1", "n1")
    apply(state, msgspec.structs.replace(end, started_at=end.ts - 0.5))
    state.validate()
    task = state.tasks["t1"]
    assert task.state == TaskState.COMPLETED and task.started_at == end.ts - 0.5
    assert state.nodes["n1"].available == Resources(cpu=4, memory_gb=8) and state.nodes["n1"].trust == 52
    # a retry's own start replaces the first attempt's, whichever way it came
    state = fold(register("n1"), submit("t2", max_attempts=2), assign("t2", "n1"), start("t2", "n1"))
    first = state.tasks["t2"].started_at
    apply(state, fail("t2", "n1"))
    assert state.tasks["t2"].started_at == first  # a failure with no started_at keeps it
    apply(state, TaskReassigned(task_id="t2", attempt=1, reason="retry"))
    apply(state, assign("t2", "n1", attempt=2))
    end = fail("t2", "n1", attempt=2)
    apply(state, msgspec.structs.replace(end, started_at=end.ts))
    assert state.tasks["t2"].state == TaskState.FAILED and state.tasks["t2"].started_at == end.ts


def test_applying_an_event_twice_changes_nothing() -> None:
    events = [register("n1"), submit("t1"), assign("t1", "n1"), start("t1", "n1"), complete("t1", "n1")]
    once = fold(*events)
    twice = fold(*[e for e in events for _ in (0, 1)])
    assert once.tasks == twice.tasks and once.nodes == twice.nodes and once.allocations == twice.allocations


def test_reports_of_superseded_attempts_are_ignored() -> None:
    state = fold(
        register("n1"),
        register("n2"),
        submit("t1", max_attempts=3),
        assign("t1", "n1"),
        NodeLost(node_id="n1", reason="gone"),
        TaskReassigned(task_id="t1", attempt=1, reason="lost", from_node="n1"),
        assign("t1", "n2", attempt=2),
    )
    apply(state, complete("t1", "n1", attempt=1))  # the lost node comes back with a late result
    assert state.tasks["t1"].state == TaskState.ASSIGNED
    ignored = state.ignored
    # reports about attempts a node was never given are implausible: refused, nothing changes
    for forged in (complete("t1", "n2", attempt=1), fail("t1", "n1", attempt=2), start("t1", "n2", attempt=3)):
        with pytest.raises(Implausible, match="never assigned"):
            apply(state, forged)
    with pytest.raises(Implausible, match="unknown task"):
        apply(state, complete("ghost", "n2"))
    assert state.tasks["t1"].state == TaskState.ASSIGNED and state.ignored == ignored
    apply(state, complete("t1", "n2", attempt=2))
    apply(state, complete("t1", "n2", attempt=2))
    assert state.tasks["t1"].state == TaskState.COMPLETED
    assert state.nodes["n2"].completed == 1
    assert state.nodes["n1"].state == NodeState.LOST
    state.validate()


def test_failure_retries_until_attempts_run_out() -> None:
    state = fold(register("n1"), submit("t1", max_attempts=2), assign("t1", "n1"), fail("t1", "n1"))
    assert state.tasks["t1"].state == TaskState.RETRYING and state.retrying == {"t1"}
    apply(state, TaskReassigned(task_id="t1", attempt=1, reason="retry", not_before=5.0))
    assert state.tasks["t1"].state == TaskState.QUEUED and state.tasks["t1"].not_before == 5.0
    apply(state, assign("t1", "n1", attempt=2))
    apply(state, fail("t1", "n1", attempt=2))
    assert state.tasks["t1"].state == TaskState.FAILED
    assert state.nodes["n1"].trust == 40


def test_dependencies_gate_and_doom() -> None:
    state = fold(register("n1"), submit("a"), submit("b", after=["a"]), submit("c", after=["b"]))
    assert state.tasks["b"].state == TaskState.PENDING and state.queue == {"a"}
    apply(state, assign("a", "n1"))
    apply(state, complete("a", "n1"))
    assert state.tasks["b"].state == TaskState.QUEUED and state.tasks["c"].state == TaskState.PENDING
    apply(state, assign("b", "n1"))
    apply(state, fail("b", "n1"))
    assert state.doomed == {"c": "dependency b failed"}
    apply(state, TaskCancelled(task_id="c", reason=state.doomed["c"]))
    assert state.tasks["c"].state == TaskState.CANCELLED and not state.doomed


def test_cancel_request_then_decision() -> None:
    state = fold(register("n1"), submit("t1"), assign("t1", "n1"), TaskCancelRequested(task_id="t1"))
    assert state.cancel_wanted == {"t1"}
    apply(state, TaskCancelled(task_id="t1", reason="cancelled by user", node_id="n1", attempt=1))
    assert state.tasks["t1"].state == TaskState.CANCELLED and not state.cancel_wanted
    assert state.nodes["n1"].running == 0
    state.validate()


def test_reindex_rebuilds_derived_indexes() -> None:
    state = fold(register("n1"), submit("a"), submit("b", after=["a"]), assign("a", "n1"), fail("a", "n1"))
    queue, doomed, retrying = set(state.queue), dict(state.doomed), set(state.retrying)
    state.reindex()
    assert (state.queue, state.doomed, state.retrying) == (queue, doomed, retrying)


def test_trust_rules_come_from_the_log() -> None:
    from events.node import TrustPolicySet

    rules = TrustPolicySet(initial=70, success=1, failure=-10, high=90, medium=60, floor=30)
    state = fold(rules, register("n1"), submit("t1"), assign("t1", "n1"), fail("t1", "n1"))
    assert state.trust.initial == 70 and state.nodes["n1"].trust == 60
    assert state.trust.group(60) == "medium"


def test_a_task_the_node_could_not_start_costs_it_no_trust() -> None:
    """A client naming a program that does not exist must not be able to push every node
    below the trust floor (and so stop all scheduling)."""
    events: list[object] = [register("n1")]
    for i in range(20):
        events += [submit(f"bad{i}"), assign(f"bad{i}", "n1"), fail(f"bad{i}", "n1", reason="unrunnable")]
    state = fold(*events)
    assert state.nodes["n1"].trust == 50 and state.nodes["n1"].failed == 0
    assert all(state.tasks[f"bad{i}"].state == TaskState.FAILED for i in range(20))


def test_node_indexes_follow_node_states_and_survive_a_reload() -> None:
    from events.node import NodeDrainRequested

    state = fold(
        register("a"),
        register("b"),
        register("c"),
        NodeLost(node_id="b", reason="silent", emitter="coordinator"),
        NodeDrainRequested(node_id="c", emitter="client:op"),
    )
    assert (state.live, state.lost) == ({"a", "c"}, {"b"})
    assert list(state.node_log) == ["a", "b", "c"]  # registration order, for the scheduler's ranks
    live, lost = set(state.live), set(state.lost)
    state.reindex()
    assert (state.live, state.lost) == (live, lost)


def test_the_announced_heartbeat_interval_is_folded_with_the_one_it_replaced() -> None:
    from events.node import HeartbeatIntervalSet

    state = fold(
        HeartbeatIntervalSet(interval_s=4.0, nodes=10_000, ts=10.0, emitter="coordinator"),
        HeartbeatIntervalSet(interval_s=2.0, nodes=5_000, ts=20.0, emitter="coordinator"),
    )
    beat = state.heartbeat
    assert (beat.interval_s, beat.previous_s, beat.since, beat.nodes) == (2.0, 4.0, 20.0, 5_000)
    assert state.dirty_heartbeat
