"""Fail-over between coordinators on one server: two coordinators (one leads through the KV
lease, coordinator/lease.py), two nodes, 200 short tasks. (a) SIGKILL the leader mid-
workload: the standby takes over, every task completes exactly once, replay matches.
(b) SIGSTOP the leader past its lease, let the standby take over and assign, SIGCONT the
old one: its decisions are fenced, nothing is assigned twice, it stays a standby."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import pytest

from edge.logread import read_stream
from events.codec import decode
from events.fencing import superseded
from events.node import LeaderElected
from events.subjects import AUDIT_STREAM
from events.task import TaskAssigned
from hive.client import HiveClient
from tests.cluster import Proc, Server, node
from tests.e2e.test_recovery import assert_exactly_once, assert_replay_matches, completions, wait_counts, workload

pytestmark = pytest.mark.slow

LEASE = "1.5"


def coordinator_named(server: Server, name: str) -> Proc:
    return Proc(name, ["coordinator", "--id", name, "--lease-s", LEASE], server, "coordinator ready")


async def audit(client: HiveClient) -> list[tuple[int, object]]:
    out: list[tuple[int, object]] = []
    await read_stream(client.js, AUDIT_STREAM, lambda seq, msg: out.append((seq, decode(msg.data))))  # type: ignore[attr-defined]
    return out


def takeover_s(events: list[tuple[int, object]], since: float, new_leader_term: int) -> float:
    """From ``since`` (the fault) to the first decision of the new leader, by event times."""
    first = min(e.ts for _, e in events if getattr(e, "term", 0) == new_leader_term and not isinstance(e, LeaderElected))  # type: ignore[attr-defined]
    return first - since


def assigned_twice(events: list[tuple[int, object]]) -> list[tuple[str, int]]:
    """Task+attempt pairs whose TaskAssigned the projection applied more than once (a fenced
    one is in the log, but void: events.fencing, by the term in force at its position)."""
    term, seen = 0, Counter()
    for _, e in events:
        if isinstance(e, LeaderElected):
            term = max(term, e.term)
        elif isinstance(e, TaskAssigned) and not superseded(term, e):
            seen[(e.task_id, e.attempt)] += 1
    return [k for k, n in seen.items() if n > 1]


def assert_assigned_once(events: list[tuple[int, object]]) -> None:
    twice = assigned_twice(events)
    assert not twice, twice[:5]


async def leader_of(client: HiveClient, other_than: int | None = None, timeout: float = 10.0) -> dict:
    """The leader's stats once one answers (one whose term is not ``other_than``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stats = await client.request("stats", timeout=2)
            if stats["role"] == "leader" and stats["term"] != other_than:
                return stats
        except Exception:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("no leader answers")


async def test_leader_killed_standby_takes_over(fresh_server: Server) -> None:
    first = coordinator_named(fresh_server, "coordinator").start()
    second = coordinator_named(fresh_server, "coordinator-2").start()
    nodes = [node(fresh_server, n, "--max-tasks", "8", "--no-docker").start() for n in ("n1", "n2")]
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            stats = await leader_of(client)
            assert stats["id"] == "coordinator", stats
            for _ in range(50):  # the standby announces itself within a lease period
                if [s["id"] for s in stats.get("standbys", [])] == ["coordinator-2"]:
                    break
                await asyncio.sleep(0.1)
                stats = await leader_of(client)
            assert [s["id"] for s in stats["standbys"]] == ["coordinator-2"], stats
            items = workload(200, 0.05)
            await client.submit_many(items)
            await wait_counts(client, 40)
            killed_at = time.time()
            first.kill9()
            second.wait_for_log("elected leader", timeout=20)
            client.last_seq = 0
            await wait_counts(client, len(items))
            counts = await completions(client)
            assert_exactly_once(counts, items)
            stats = await leader_of(client)
            assert stats["id"] == "coordinator-2" and stats["leader"]["id"] == "coordinator-2", stats
            events = await audit(client)
            took = takeover_s(events, killed_at, stats["term"])
            assert_assigned_once(events)
        print(f"\nSIGKILL of the leader -> first decision of the new leader: {took:.2f}s (lease {LEASE}s)")
        assert_replay_matches(fresh_server)
    finally:
        for proc in (*nodes, first, second):
            proc.stop()


async def test_paused_leader_is_fenced(fresh_server: Server) -> None:
    first = coordinator_named(fresh_server, "coordinator").start()
    second = coordinator_named(fresh_server, "coordinator-2").start()
    nodes = [node(fresh_server, n, "--max-tasks", "8", "--no-docker").start() for n in ("n1", "n2")]
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            assert (await leader_of(client))["id"] == "coordinator"
            items = workload(200, 0.05)
            await client.submit_many(items)
            await wait_counts(client, 30)
            assert first.proc is not None
            stopped_at = time.time()
            os.kill(first.proc.pid, signal.SIGSTOP)
            try:
                second.wait_for_log("elected leader", timeout=20)
                await asyncio.sleep(1.0)  # the new leader assigns work meanwhile
            finally:
                os.kill(first.proc.pid, signal.SIGCONT)
            first.wait_for_log("stepped down", timeout=10)
            client.last_seq = 0
            await wait_counts(client, len(items))
            counts = await completions(client)
            assert_exactly_once(counts, items)
            stats = await leader_of(client)
            assert stats["id"] == "coordinator-2", stats
            events = await audit(client)
            took = takeover_s(events, stopped_at, stats["term"])
            assert_assigned_once(events)
            # the projection agrees: every task ran once, on one attempt per assignment
            for task in await client.tasks(state="completed"):
                assert task["attempt"] >= 1
            await asyncio.sleep(2.0)  # the old one stays a standby
            assert "elected leader" not in first.text().split("stepped down", 1)[1]
            answers = []
            for _ in range(3):
                answers.append((await client.request("stats"))["id"])
            assert set(answers) == {"coordinator-2"}, answers
        print(f"\nSIGSTOP of the leader -> first decision of the new leader: {took:.2f}s (lease {LEASE}s)")
        assert_replay_matches(fresh_server)
    finally:
        for proc in (*nodes, first, second):
            proc.stop()
