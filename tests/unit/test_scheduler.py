from __future__ import annotations

import copy
import random

import msgspec
import pytest

from coordinator.core import CoordinatorCore, CoreConfig, backoff
from coordinator.projection import apply
from coordinator.scheduler import AGING_S, NodeIndex, ReadyIndex, Reservation, eligible, place, queue_key
from coordinator.state import ClusterState, NodeState
from events import NodeHeartbeat, Resources, TaskAssigned, TaskSubmitted
from events.node import NodeLost, NodeTrustReset
from events.task import TaskReassigned
from tests.unit.factories import assign, complete, fail, fold, register, submit


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


# -- the node index places exactly as a full scan of every node ----------------------------


def _scan_place(
    state: ClusterState, now: float, reserved: dict[str, Reservation], busy: set[str]
) -> list[TaskAssigned]:
    """The placement rule written as the plain scan it was before the node index: every
    active node considered for every task, the least ``(avoided, load, -free cpu)`` wins,
    the first registered among equals."""
    nodes = [n for n in state.nodes.values() if n.state == NodeState.ACTIVE]
    held = {n.node_id: reserved.setdefault(n.node_id, Reservation()) for n in nodes}
    free_gpus = {n.node_id: [g for g in n.free_gpus(state.allocations) if g not in held[n.node_id].gpus] for n in nodes}
    out: list[TaskAssigned] = []
    for task in sorted((state.tasks[t] for t in state.queue), key=queue_key):
        if task.not_before > now or task.task_id in busy:
            continue
        need = task.spec.resources
        others = [
            n
            for n in nodes
            if n.node_id != task.avoid_node
            and eligible(state, n, task)
            and need.fits_in(n.capacity)
            and need.gpu <= len(n.gpus)
        ]
        avoid = task.avoid_node if task.avoid_node and others else None
        best, best_key = None, None
        for n in nodes:
            h = held[n.node_id]
            if n.node_id == avoid or not eligible(state, n, task) or n.running + h.count >= n.max_tasks:
                continue
            if need.gpu > len(free_gpus[n.node_id]) or not need.fits_in(n.available - h.resources):
                continue
            key = (
                n.node_id == task.avoid_node,
                (n.running + h.count) / n.max_tasks,
                -(n.available.cpu - h.resources.cpu),
            )
            if best_key is None or key < best_key:
                best, best_key = n, key
        if best is None:
            continue
        gpus = free_gpus[best.node_id][: need.gpu]
        free_gpus[best.node_id] = [g for g in free_gpus[best.node_id] if g not in gpus]
        h = held[best.node_id]
        h.resources, h.count, h.gpus = h.resources + need, h.count + 1, h.gpus + gpus
        out.append(TaskAssigned(task_id=task.task_id, node_id=best.node_id, attempt=task.attempt + 1, gpus=gpus))
    return out


def _random_world(rng: random.Random, n_nodes: int) -> list[object]:
    events: list[object] = []
    for i in range(n_nodes):
        events.append(
            register(
                f"n{i}",
                cpu=rng.choice([1, 2, 4, 4, 8]),
                memory_gb=rng.choice([2, 8, 8, 16]),
                max_tasks=rng.choice([1, 2, 4]),
                gpus=rng.choice([0, 0, 0, 1, 2]),
                executors=rng.choice([("process", "function"), ("process",), ("function",)]),
            )
        )
    return events


def _random_task(rng: random.Random, task_id: str) -> TaskSubmitted:
    return submit(
        task_id,
        executor=rng.choice(["process", "process", "function"]),
        type="noop",
        resources=Resources(
            cpu=rng.choice([0, 0, 0.5, 1, 2, 3]), memory_gb=rng.choice([0, 1, 4]), gpu=rng.choice([0, 0, 0, 1])
        ),
        priority=rng.choice([0, 0, 1, 5]),
        min_trust=rng.choice([None, None, None, "medium", "high"]),
        max_attempts=2,
    )


@pytest.mark.parametrize("seed", range(40))
def test_indexed_placement_equals_a_full_scan_over_many_rounds(seed: int) -> None:
    """Rounds of placement with one long-lived index (as the core keeps it) against the
    plain scan on the same state, while assignments land, reservations settle, tasks
    finish, nodes join, are lost, come back, and change trust."""
    rng = random.Random(seed)
    state = fold(*_random_world(rng, rng.randint(1, 12)))
    nodes, ready = NodeIndex(), ReadyIndex()
    reserved: dict[str, Reservation] = {}
    inflight: list[TaskAssigned] = []
    seq, n_tasks, now = 1000, 0, 5000.0
    for _ in range(25):
        for _ in range(rng.randint(0, 8)):
            seq += 1
            apply(state, _random_task(rng, f"t{n_tasks}"), seq)
            n_tasks += 1
        for task in [state.tasks[t] for t in state.queue]:
            if rng.random() < 0.2:
                task.avoid_node = rng.choice(list(state.nodes))
        busy = {a.task_id for a in inflight}
        expected = _scan_place(state, now, copy.deepcopy(reserved), busy)
        got = place(state, now, reserved, busy=busy, index=ready, nodes=nodes)
        assert [(a.task_id, a.node_id, a.gpus) for a in got] == [(a.task_id, a.node_id, a.gpus) for a in expected]
        inflight += got
        for a in list(inflight):  # most come back through the log, some expire unseen
            roll = rng.random()
            if roll < 0.3:
                continue
            if roll < 0.85:
                seq += 1
                apply(state, msgspec.structs.replace(a, ts=now), seq)
            inflight.remove(a)
            held = reserved[a.node_id]  # what CoordinatorCore._forget does
            held.resources, held.count = held.resources - a.spec.resources, held.count - 1  # type: ignore[union-attr]
            held.gpus = [g for g in held.gpus if g not in a.gpus]
            nodes.touch(a.node_id)
        for task in [state.tasks[t] for t in list(state.allocations)]:
            if rng.random() < 0.4:
                seq += 1
                apply(state, complete(task.task_id, task.node_id or "", task.attempt), seq)
        roll = rng.random()
        node_id = rng.choice(list(state.nodes))
        seq += 1
        if roll < 0.1:
            apply(state, NodeLost(node_id=node_id, reason="silent", emitter="coordinator"), seq)
        elif roll < 0.2:
            apply(state, _random_world(rng, len(state.nodes) + 1)[-1], seq)  # a new node
        elif roll < 0.3 and not state.nodes[node_id].running:
            apply(state, register(node_id, cpu=rng.choice([2, 8]), max_tasks=rng.choice([1, 3])), seq)
        elif roll < 0.4:
            apply(
                state, NodeTrustReset(node_id=node_id, score=rng.choice([5.0, 60.0, 90.0]), emitter="coordinator"), seq
            )
        now += 1.0


def test_placement_stops_at_the_limit_and_resumes() -> None:
    state = fold(register("n1", max_tasks=10), *(submit(f"t{i}") for i in range(5)))
    reserved: dict[str, Reservation] = {}
    nodes, ready = NodeIndex(), ReadyIndex()
    first = place(state, 1000.0, reserved, index=ready, nodes=nodes, limit=2)
    rest = place(state, 1000.0, reserved, busy={a.task_id for a in first}, index=ready, nodes=nodes, limit=2)
    assert [a.task_id for a in first] == ["t0", "t1"] and [a.task_id for a in rest] == ["t2", "t3"]
    assert reserved["n1"].count == 4


def test_the_ready_index_forgets_what_was_placed_from_its_front() -> None:
    # a burst bigger than the cluster's slots: each round places a few from the front and
    # stops early; those entries must not be walked again on every later round
    state = fold(register("n1", max_tasks=200), *[submit(f"t{i:03d}") for i in range(200)])
    index = ReadyIndex()
    index.sync(state)
    for i in range(10):
        apply(state, assign(f"t{i:03d}", "n1"), state.seq + 1)
    walk = index.ordered(state)
    assert next(walk).task_id == "t010"
    walk.close()  # the caller stopped early (the nodes were full)
    assert len(index.entries) == 190
    assert [t.task_id for t in index.ordered(state)][:2] == ["t010", "t011"]
