"""Liveness deadlines kept in a heap decide exactly what a scan of every node decides, and
the coordinator announces a heartbeat interval that grows with the cluster."""

from __future__ import annotations

import random

import pytest

from coordinator.core import CoordinatorCore, CoreConfig
from coordinator.state import LIVE, ClusterState
from events.node import HeartbeatIntervalSet, NodeDrainRequested, NodeLost
from tests.unit.factories import register


def _scan(core: CoordinatorCore, now: float) -> set[str]:
    """The rule as a plain scan: a live node silent for longer than its timeout is lost."""
    assert core.started_at is not None
    live = [n for n in core.state.nodes.values() if n.state in LIVE]
    out = set()
    for node in live:
        seen = max(core.last_seen.get(node.node_id, 0.0), core.started_at + core.config.startup_grace_s)
        beat = core.state.heartbeat
        floor = beat.interval_s
        if now < beat.since + beat.previous_s * core.config.missed_heartbeats:
            floor = max(floor, beat.previous_s)  # nodes may not have seen a shorter one yet
        timeout = max(node.heartbeat_s, floor) * core.config.missed_heartbeats
        if now - max(seen, node.updated_at) > timeout:
            out.add(node.node_id)
    return out


def _lost(core: CoordinatorCore, now: float) -> set[str]:
    return {e.node_id for e in core._liveness(now) if isinstance(e, NodeLost)}


@pytest.mark.parametrize("seed", range(30))
def test_heap_liveness_equals_a_scan_of_every_node(seed: int) -> None:
    rng = random.Random(seed)
    core = CoordinatorCore(ClusterState(), CoreConfig(startup_grace_s=rng.choice([0.0, 3.0])))
    now = 1000.0
    core.grace(now)
    names = [f"n{i}" for i in range(rng.randint(1, 15))]
    quiet: set[str] = set()
    reported = 0
    for step in range(200):
        now += rng.choice([0.1, 0.5, 1.0, 3.0])
        roll = rng.random()
        node_id = rng.choice(names)
        node = core.state.nodes.get(node_id)
        if roll < 0.15 and (node is None or node.state not in LIVE or rng.random() < 0.2):
            event = register(node_id, max_tasks=4)
            core.handle(event.__class__(**{**_fields(event), "ts": now, "heartbeat_s": rng.choice([0.5, 1.0, 2.0])}))
        elif roll < 0.2 and node is not None:
            core.handle(NodeDrainRequested(node_id=node_id, ts=now, emitter="client:op"))
        elif roll < 0.22:
            core.grace(now)  # a coordinator restart or reconnect
        elif roll < 0.3:  # the announced interval grows or shrinks
            interval = rng.choice([0.0, 1.5, 3.0, 6.0])
            core.handle(HeartbeatIntervalSet(interval_s=interval, ts=now, emitter="coordinator"))
        for other in names:
            if rng.random() < 0.08:  # a machine goes quiet, or comes back
                quiet ^= {other}
            if other in core.state.nodes and other not in quiet and rng.random() < 0.6:
                core.heartbeat(other, now - rng.choice([0.0, 0.2]))
        expected = _scan(core, now)
        assert _lost(core, now) == expected, (seed, step)
        reported += len(expected)
        for lost in expected:
            if rng.random() < 0.7:  # most decisions come back through the log
                core.handle(NodeLost(node_id=lost, reason="silent", ts=now, emitter="coordinator"))
        assert _lost(core, now) == _scan(core, now), (seed, step)
    assert reported or len(names) == 1


def _fields(event: object) -> dict[str, object]:
    import msgspec

    return msgspec.structs.asdict(event)  # type: ignore[arg-type]


def test_a_reported_node_is_reported_again_until_the_log_shows_it_lost() -> None:
    core = CoordinatorCore(ClusterState(), CoreConfig(startup_grace_s=0))
    core.handle(register("n1"))
    updated = core.state.nodes["n1"].updated_at
    core.grace(updated)
    timeout = core.state.nodes["n1"].heartbeat_s * core.config.missed_heartbeats
    assert _lost(core, updated + timeout - 0.1) == set()
    assert _lost(core, updated + timeout + 1) == {"n1"}
    assert _lost(core, updated + timeout + 2) == {"n1"}  # the publish may have been lost
    core.heartbeat("n1", updated + timeout + 2.5)
    assert _lost(core, updated + timeout + 3) == set()  # heard from again: alive after all


def test_the_announced_interval_follows_the_cluster_size() -> None:
    core = CoordinatorCore(ClusterState(), CoreConfig(max_heartbeats_per_s=10.0))
    for i in range(10):
        core.handle(register(f"n{i}"))
    assert core._announce() == []  # 10 nodes at 1/s fit the budget: each node's own interval
    for i in range(10, 35):
        core.handle(register(f"n{i}"))
    (wanted,) = core._announce()
    assert isinstance(wanted, HeartbeatIntervalSet) and (wanted.interval_s, wanted.nodes) == (3.5, 35)
    core.handle(wanted)
    assert core._announce() == []
    for i in range(5, 35):
        core.handle(NodeLost(node_id=f"n{i}", reason="silent", emitter="coordinator"))
    (shorter,) = core._announce()  # far below: back to each node's own
    assert isinstance(shorter, HeartbeatIntervalSet) and shorter.interval_s == 0.0
    core.handle(shorter)
    # nodes learn of the shorter interval as they see it: the longer one holds a while
    assert core.floor(shorter.ts + 1) == 3.5 and core.floor(shorter.ts + 3 * 3.5 + 1) == 0.0


def test_a_node_beats_at_the_longer_of_its_own_and_the_announced_interval() -> None:
    from events.codec import encode
    from node.cadence import SUBJECT, Cadence

    cadence = Cadence(own_s=2.0)
    cadence.take(encode(HeartbeatIntervalSet(interval_s=4.0, nodes=10_000, emitter="coordinator")), SUBJECT)
    assert cadence.interval_s == 4.0
    cadence.take(encode(HeartbeatIntervalSet(interval_s=0.0, emitter="coordinator")), SUBJECT)
    assert cadence.interval_s == 2.0
    cadence.take(encode(HeartbeatIntervalSet(interval_s=9.0, emitter="node:n1")), SUBJECT)  # not the coordinator's
    assert cadence.interval_s == 2.0
