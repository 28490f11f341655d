from __future__ import annotations

import pytest

from coordinator.core import CoordinatorCore, CoreConfig, backoff
from coordinator.scheduler import AGING_S, Reservation, place
from events import NodeHeartbeat, Resources, TaskAssigned
from events.node import NodeLost
from events.task import TaskReassigned
from tests.unit.factories import assign, fail, fold, register, submit


def test_places_by_priority_then_fifo_within_slots() -> None:
    state = fold(register("n1", max_tasks=2), submit("low"), submit("high", priority=5), submit("low2"))
    decided = place(state, now=1000.0, reserved={})
    assert [d.task_id for d in decided] == ["high", "low"]


def test_resource_aware_and_too_big_stays_queued() -> None:
    state = fold(
        register("small", cpu=2, memory_gb=2),
        register("big", cpu=8, memory_gb=32),
        submit("huge", resources=Resources(cpu=100)),
        submit("mem", resources=Resources(memory_gb=16)),
        submit("tiny"),
    )
    decided = {d.task_id: d.node_id for d in place(state, now=1000.0, reserved={})}
    assert decided["mem"] == "big" and "huge" not in decided and "tiny" in decided


def test_reservations_prevent_double_booking() -> None:
    state = fold(
        register("n1", cpu=2), submit("a", resources=Resources(cpu=2)), submit("b", resources=Resources(cpu=2))
    )
    reserved: dict[str, Reservation] = {}
    first = place(state, 1000.0, reserved)
    assert [d.task_id for d in first] == ["a"]
    assert place(state, 1000.0, reserved, busy={"a"}) == []


def test_gpus_are_pinned_to_free_indices() -> None:
    state = fold(
        register("g", gpus=2),
        submit("a", resources=Resources(gpu=1)),
        submit("b", resources=Resources(gpu=1)),
        submit("c", resources=Resources(gpu=1)),
    )
    decided = place(state, 1000.0, {})
    assert sorted(g for d in decided for g in d.gpus) == [0, 1] and len(decided) == 2


def test_aging_lets_an_old_low_priority_task_overtake() -> None:
    state = fold(register("n1", max_tasks=1), submit("old"), submit("new", priority=2))
    state.tasks["old"].queued_at = 0.0
    state.tasks["new"].queued_at = 3 * AGING_S
    assert place(state, now=3 * AGING_S, reserved={})[0].task_id == "old"


def test_executor_and_trust_requirements() -> None:
    state = fold(
        register("proc", executors=("process",)),
        submit("fn", executor="function", type="x"),
        submit("picky", min_trust="high"),
    )
    assert place(state, 1000.0, {}) == []
    state.nodes["proc"].trust = 90
    assert [d.task_id for d in place(state, 1000.0, {})] == ["picky"]


def test_retry_avoids_the_failing_node_when_another_could_run_it() -> None:
    state = fold(register("n1"), register("n2", max_tasks=1), submit("busy"), submit("t", max_attempts=2))
    state.tasks["t"].avoid_node = "n1"
    state.queue = {"t"}
    decided = place(state, 1000.0, {})
    assert [(d.task_id, d.node_id) for d in decided] == [("t", "n2")]


@pytest.mark.parametrize(("attempt", "expected"), [(1, 0.5), (2, 1.0), (3, 2.0), (10, 30.0)])
def test_backoff_doubles_and_caps(attempt: int, expected: float) -> None:
    assert backoff(attempt, CoreConfig()) == expected


def test_core_declares_silent_nodes_lost_and_reassigns_their_work() -> None:
    core = CoordinatorCore(
        fold(register("n1"), register("n2"), submit("t", max_attempts=2), assign("t", "n1")),
        CoreConfig(startup_grace_s=0),
    )
    base = max(n.updated_at for n in core.state.nodes.values())
    core.decide(now=base)
    core.heartbeat("n2", base + 100)
    decisions = core.decide(now=base + 100)
    lost = [d for d in decisions if isinstance(d, NodeLost)]
    assert [d.node_id for d in lost] == ["n1"]
    for d in lost:
        core.handle(d)
    reassigned = [d for d in core.decide(now=base + 100.1) if isinstance(d, TaskReassigned)]
    assert [(r.task_id, r.from_node) for r in reassigned] == [("t", "n1")]
    core.handle(reassigned[0])
    again = [d for d in core.decide(now=base + 100.2) if isinstance(d, TaskAssigned)]
    assert [(a.task_id, a.node_id, a.attempt) for a in again] == [("t", "n2", 2)]
    assert NodeHeartbeat  # heartbeats are telemetry: they reach the core via heartbeat()


def test_core_retries_a_failed_attempt_with_backoff_once() -> None:
    core = CoordinatorCore(fold(register("n1"), submit("t", max_attempts=3), assign("t", "n1"), fail("t", "n1")))
    first = core.decide(now=2000.0)
    retry = [d for d in first if isinstance(d, TaskReassigned)]
    assert len(retry) == 1 and retry[0].not_before == 2000.5
    assert not [d for d in core.decide(now=2000.1) if isinstance(d, TaskReassigned)]  # in flight: not twice


def test_an_assignment_a_live_node_never_starts_is_taken_back() -> None:
    core = CoordinatorCore(
        fold(register("n1"), register("n2"), submit("t"), assign("t", "n1")), CoreConfig(startup_grace_s=0)
    )
    assigned_at = core.state.tasks["t"].updated_at
    limit = core.state.nodes["n1"].heartbeat_s * core.config.start_timeout_heartbeats
    core.decide(now=assigned_at)  # the coordinator was up when it assigned
    for node_id in ("n1", "n2"):  # both alive: liveness has nothing to say
        core.heartbeat(node_id, assigned_at + limit + 1)
    assert not [d for d in core.decide(now=assigned_at + limit - 0.5) if isinstance(d, TaskReassigned)]
    taken = [d for d in core.decide(now=assigned_at + limit + 1) if isinstance(d, TaskReassigned)]
    assert [(d.task_id, d.attempt, d.from_node) for d in taken] == [("t", 1, "n1")]
    assert "not started" in taken[0].reason
    core.handle(taken[0])
    again = [d for d in core.decide(now=assigned_at + limit + 1.1) if isinstance(d, TaskAssigned)]
    assert [(a.task_id, a.attempt) for a in again] == [("t", 2)]
