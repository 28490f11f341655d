"""Crash recovery with real processes: kill -9 the coordinator or a node, restart
nats-server, publish duplicates. Every task completes exactly once and nothing is lost."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest

from edge.logread import read_stream
from events.codec import decode, encode
from events.subjects import AUDIT_STREAM, MSG_ID_HEADER, subject_for
from events.task import TaskCompleted, TaskSpec, TaskSubmitted
from hive.client import HiveClient
from tests.cluster import Server, coordinator, hive, node

pytestmark = pytest.mark.slow


async def completions(client: HiveClient) -> Counter[str]:
    """How many TaskCompleted events each task has in the audit log."""
    seen: Counter[str] = Counter()

    def add(seq: int, msg: object) -> None:
        event = decode(msg.data)  # type: ignore[attr-defined]
        if isinstance(event, TaskCompleted):
            seen[event.task_id] += 1

    await read_stream(client.js, AUDIT_STREAM, add, filters=["hive.task.*.completed.*"])
    return seen


async def wait_counts(client: HiveClient, want: int, state: str = "completed", timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done = len(await client.tasks(state=state))
        except Exception:  # the coordinator may be down right now
            done = -1
        if done >= want:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"only {done} of {want} tasks {state} after {timeout}s")


def assert_exactly_once(counts: Counter[str], items: list[tuple[str, TaskSpec]]) -> None:
    """Each task of ``items`` has one TaskCompleted in the log (``completions``), no more."""
    bad = {t: counts[t] for t, _ in items if counts[t] != 1}
    assert not bad, f"{len(bad)} tasks not completed exactly once: {list(bad.items())[:5]}"


def workload(n: int, seconds: float) -> list[tuple[str, TaskSpec]]:
    run = time.time_ns()
    spec = TaskSpec(executor="function", type="test_hold", payload={"seconds": seconds}, max_attempts=3)
    return [(f"w-{run}-{i}", spec) for i in range(n)]


def assert_replay_matches(server: Server) -> None:
    done = hive(server, "replay", "--json")
    report = json.loads(done.stdout)
    assert report["matches"] is True, report


async def test_coordinator_killed_mid_workload_resumes(fresh_server: Server) -> None:
    coord = coordinator(fresh_server).start()
    nodes = [node(fresh_server, n, "--max-tasks", "8", "--no-docker").start() for n in ("n1", "n2")]
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            items = workload(300, 0.05)
            await client.submit_many(items)
            await wait_counts(client, 60)
            coord.kill9()
            await asyncio.sleep(1.0)  # nodes keep finishing what they have; nobody assigns
            coord.start()
            client.last_seq = 0
            await wait_counts(client, len(items))
            counts = await completions(client)
            bad = [t for t, _ in items if counts[t] != 1]
            if bad:
                hist = [
                    (s, type(e).__name__, getattr(e, "node_id", None), getattr(e, "attempt", None), round(e.ts, 3))
                    for s, _, e in await client.history(bad[0])
                ]
                raise AssertionError(f"{len(bad)} tasks not completed exactly once: {bad[0]}: {hist}")
            assert "coordinator starting" in coord.text()
        assert_replay_matches(fresh_server)
    finally:
        for proc in (*nodes, coord):
            proc.stop()


async def test_node_killed_its_tasks_run_elsewhere(fresh_server: Server) -> None:
    coord = coordinator(fresh_server, "--missed-heartbeats", "3", "--startup-grace", "0.5").start()
    fast = ("--heartbeat", "0.5", "--max-tasks", "8", "--no-docker")  # room for the victim's work
    victim, survivor = node(fresh_server, "victim", *fast).start(), node(fresh_server, "survivor", *fast).start()
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            items = workload(8, 3.0)
            await client.submit_many(items)
            await wait_counts(client, 8, state="running", timeout=30)
            on_victim = [t["task_id"] for t in await client.tasks(state="running") if t["node_id"] == "victim"]
            assert on_victim
            killed_at = time.time()
            victim.kill9()
            await wait_counts(client, 8, timeout=60)
            restarted = []
            for task_id in on_victim:
                events = [e for _, _, e in await client.history(task_id)]
                kinds = [type(e).__name__ for e in events]
                assert "TaskReassigned" in kinds, kinds
                start = next(e for e in events if type(e).__name__ == "TaskStarted" and e.node_id == "survivor")
                restarted.append(start.ts - killed_at)
            lost = next(n for n in await client.nodes() if n["node_id"] == "victim")
            assert lost["state"] == "lost"
        print(f"\nnode death -> its tasks running elsewhere: max {max(restarted):.2f}s (heartbeat 0.5s x 3 missed)")
        (fresh_server.directory / "failover.json").write_text(json.dumps({"seconds": restarted}))
    finally:
        for proc in (victim, survivor, coord):
            proc.stop()


async def test_nats_server_restart_mid_workload(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    coord = coordinator(server).start()
    nodes = [node(server, n, "--max-tasks", "8", "--no-docker").start() for n in ("n1", "n2")]
    try:
        async with await HiveClient.connect(server.url, server.directory) as client:
            items = workload(200, 0.05)
            await client.submit_many(items)
            await wait_counts(client, 40)
        server.stop()
        await asyncio.sleep(1.0)
        server.start()
        async with await HiveClient.connect(server.url, server.directory) as client:
            await wait_counts(client, len(items), timeout=120)
            counts = await completions(client)
            assert all(counts[t] == 1 for t, _ in items)
        assert all(p.alive() for p in (coord, *nodes))
        assert "reconnected to nats" in coord.text()
        assert_replay_matches(server)
    finally:
        for proc in (*nodes, coord):
            proc.stop()
        server.stop()


async def test_same_event_twice_is_applied_once(fresh_server: Server) -> None:
    coord = coordinator(fresh_server).start()
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            event = TaskSubmitted(
                task_id=f"dup-{time.time_ns()}", spec=TaskSpec(command=["true"]), emitter=client.emitter
            )
            data, subject = encode(event), subject_for(event)
            first = await client.js.publish(subject, data, headers={MSG_ID_HEADER: event.id})
            again = await client.js.publish(subject, data, headers={MSG_ID_HEADER: event.id})
            assert again.duplicate and again.seq == first.seq  # JetStream dropped it
            # past the dedupe window (a different message id), the projection still ignores it
            other = await client.js.publish(subject, data, headers={MSG_ID_HEADER: event.id + "-late"})
            client.last_seq = other.seq
            tasks = [t for t in await client.tasks() if t["task_id"] == event.task_id]
            assert len(tasks) == 1 and tasks[0]["submitted_at"] == event.ts
            stats = await client.request("stats")
            assert stats["ignored"] >= 1
        assert_replay_matches(fresh_server)
    finally:
        coord.stop()
    assert msgspec.json.decode(data)["type"] == "TaskSubmitted"


async def test_drain_finishes_work_then_leaves(fresh_server: Server) -> None:
    coord = coordinator(fresh_server).start()
    drained = node(fresh_server, "d1", "--no-docker").start()
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            task = await client.submit(TaskSpec(executor="function", type="test_hold", payload={"seconds": 1.5}))
            await wait_counts(client, 1, state="running", timeout=20)
            done = hive(fresh_server, "drain", "d1")
            assert done.returncode == 0, done.stderr
            later = await client.submit(TaskSpec(command=["true"]))
            assert (await client.wait(task, timeout=30))["state"] == "completed"
            drained.proc.wait(15)  # type: ignore[union-attr]
            assert "drained; leaving" in drained.text()
            nodes = {n["node_id"]: n for n in await client.nodes()}
            assert nodes["d1"]["state"] == "drained"
            assert (await client.task(later))["state"] == "queued"  # no new work went to it
            assert hive(fresh_server, "drain", "nope").returncode == 1
    finally:
        drained.stop()
        coord.stop()


def test_node_started_before_the_coordinator_waits_then_joins(fresh_server: Server) -> None:
    early = node(fresh_server, "early", "--no-docker").start(wait=False)
    coord = coordinator(fresh_server)
    try:
        early.wait_for_log("waiting for the coordinator", 20)
        coord.start()
        early.wait_for_log("node started", 20)
        assert early.text().count("waiting for the coordinator") == 1
        nodes = json.loads(hive(fresh_server, "nodes", "--json").stdout)
        assert [(n["node_id"], n["state"]) for n in nodes] == [("early", "active")]
    finally:
        early.stop()
        coord.stop()


async def test_a_submission_rides_out_a_server_restart(tmp_path: Path) -> None:
    """A publish that meets a restarting server is retried with the same id, and lands once."""
    server = Server(tmp_path).start()
    coord = coordinator(server).start()
    try:
        async with await HiveClient.connect(server.url, server.directory) as client:
            server.stop()
            submitting = asyncio.ensure_future(client.submit(TaskSpec(command=["true"])))
            await asyncio.sleep(2.0)
            assert not submitting.done()  # still trying, not failed
            server.start()
            task_id = await asyncio.wait_for(submitting, 20)
            assert (await client.task(task_id))["state"] == "queued"  # the coordinator has it (no node here)
            seen: list[int] = []
            await read_stream(client.js, AUDIT_STREAM, lambda s, m: seen.append(s), filters=[f"hive.task.{task_id}.submitted.>"])
            assert len(seen) == 1
    finally:
        coord.stop()
        server.stop()
