"""Trust end to end: a real coordinator and node, scores moved by real tasks, `hive trust`."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

from coordinator.state import TrustPolicy
from events.task import TaskSpec
from hive.client import HiveClient
from tests.cluster import Proc, Server, coordinator, hive, node

POLICY = TrustPolicy()
OK = TaskSpec(executor="function", type="noop")
FAIL = TaskSpec(executor="function", type="fail")
TRUE = TaskSpec(command=["true"])
FALSE = TaskSpec(command=["false"])
SLOW_FAIL = TaskSpec(command=["sh", "-c", "sleep 1; exit 1"])


class Expected:
    """The trust model the coordinator should follow: +2 / -5, clamped to 0..100."""

    def __init__(self) -> None:
        self.score = POLICY.initial
        self.changes: list[tuple[float, float, str | None, str]] = []  # delta, score, task, cause

    def add(self, delta: float, task_id: str | None, cause: str) -> None:
        new = min(100.0, max(0.0, self.score + delta))
        self.changes.append((new - self.score, new, task_id, cause))
        self.score = new

    def reset(self, score: float | None = None) -> None:
        self.add((POLICY.initial if score is None else score) - self.score, None, "reset by operator")


async def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(hive, server, *args)


async def cli_json(server: Server, *args: str) -> Any:
    done = await cli(server, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def run_one(client: HiveClient, spec: TaskSpec, expected: Expected) -> str:
    task_id = await client.submit(spec)
    final = await client.wait(task_id, timeout=30)
    if final["state"] == "completed":
        expected.add(POLICY.success, task_id, "completed")
    else:
        assert final["state"] == "failed", final
        expected.add(POLICY.failure, task_id, f"failed: {final['reason']}")
    return final["state"]


async def assert_stays_queued(client: HiveClient, task_id: str, seconds: float = 1.5) -> None:
    await asyncio.sleep(seconds)
    view = await client.task(task_id)
    assert view["state"] == "queued" and view["attempt"] == 0, view


async def trust_report(server: Server, changes: int, timeout: float = 3.0) -> dict[str, Any]:
    """`hive trust n1 --explain --json`, once it lists ``changes`` changes. The coordinator
    flushes its projection in batches and the API reads the changes from SQLite, so a change
    can show up a moment after the score moved."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        report = await cli_json(server, "trust", "n1", "--explain")
        if len(report["changes"]) >= changes or asyncio.get_running_loop().time() > deadline:
            return report
        await asyncio.sleep(0.1)


async def check_trust(server: Server, expected: Expected) -> None:
    report = await trust_report(server, len(expected.changes))
    assert report["score"] == expected.score
    assert report["group"] == POLICY.group(expected.score)
    got = [(c["delta"], c["score"], c["task_id"], c["cause"]) for c in report["changes"]]
    assert got == expected.changes
    seqs = [c["seq"] for c in report["changes"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    nodes = {n["node_id"]: n for n in await cli_json(server, "nodes")}
    assert nodes["n1"]["trust"] == expected.score
    assert nodes["n1"]["trust_group"] == POLICY.group(expected.score)


async def test_trust_moves_with_outcomes_gates_work_and_replays(fresh_server: Server) -> None:
    procs: list[Proc] = [coordinator(fresh_server), node(fresh_server, "n1", "--no-docker", "--max-tasks", "4")]
    try:
        for proc in procs:
            proc.start()
        client = await HiveClient.connect(fresh_server.url, fresh_server.directory)
        try:
            await _scenario(fresh_server, client)
        finally:
            await client.close()
    finally:
        for proc in reversed(procs):
            proc.stop()


async def wait_for_node(client: HiveClient, node_id: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if any(n["node_id"] == node_id for n in await client.nodes()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{node_id} never registered")


async def _scenario(server: Server, client: HiveClient) -> None:
    await wait_for_node(client, "n1")
    expected = Expected()
    plain = await cli_json(server, "trust", "n1")
    assert plain == {"node_id": "n1", "score": 50.0, "group": "medium", "initial": 50.0}
    await check_trust(server, expected)

    # good and bad work, function and process executors: +2 / -5 each
    states = [await run_one(client, spec, expected) for spec in (OK, TRUE, FALSE, OK, FAIL, TRUE, OK)]
    assert states == ["completed", "completed", "failed", "completed", "failed", "completed", "completed"]
    assert expected.score == 50 + 5 * 2 - 2 * 5
    await check_trust(server, expected)
    human = await cli(server, "trust", "n1", "--explain")
    assert human.returncode == 0 and human.stdout.startswith("n1: 50 (medium)"), human.stdout
    assert "failed: exit_code" in human.stdout and "failed: error" in human.stdout

    await _min_trust_gate(server, client, expected)
    await _upper_clamp(server, client, expected)
    await _floor(server, client, expected)
    await check_trust(server, expected)

    replayed = await cli_json(server, "replay", "--db", str(server.directory / "replay-trust.db"))
    assert replayed["matches"] is True, replayed["differences"]
    assert replayed["counts"]["trust_changes"] == len(expected.changes)


async def _min_trust_gate(server: Server, client: HiveClient, expected: Expected) -> None:
    """A task that wants a highly trusted node waits while n1 is medium, runs once it is high."""
    picky = await client.submit(TaskSpec(executor="function", type="noop", min_trust="high"))
    await assert_stays_queued(client, picky)
    done = await cli(server, "trust", "n1", "--reset", "--score", "80")
    # the second line is the score now: the picky task may already have run and added to it
    assert done.returncode == 0 and done.stdout.startswith("trust of n1 reset to 80\nn1: "), done.stdout + done.stderr
    expected.reset(80)
    assert (await client.wait(picky, timeout=30))["state"] == "completed"
    expected.add(POLICY.success, picky, "completed")
    await check_trust(server, expected)


async def _upper_clamp(server: Server, client: HiveClient, expected: Expected) -> None:
    assert (await cli(server, "trust", "n1", "--reset", "--score", "99")).returncode == 0
    expected.reset(99)
    for _ in range(2):
        await run_one(client, OK, expected)
    assert [c[0] for c in expected.changes[-2:]] == [1.0, 0.0] and expected.score == 100
    await check_trust(server, expected)


async def _floor(server: Server, client: HiveClient, expected: Expected) -> None:
    """Failures drive n1 below the floor; it gets no new work until an operator resets it."""
    assert (await cli(server, "trust", "n1", "--reset")).returncode == 0
    expected.reset()
    assert expected.score == 50
    for _ in range(7):
        assert await run_one(client, FAIL, expected) == "failed"
    assert expected.score == 15
    # four slow failures placed together while n1 is still at 15 (above the floor): 10, 5, 0, then clamped at 0
    slow = await client.submit_many([(f"slow-fail-{i}", SLOW_FAIL) for i in range(4)])
    finals = await asyncio.gather(*(client.wait(t, timeout=30) for t in slow))
    assert {f["state"] for f in finals} == {"failed"}
    report = await trust_report(server, len(expected.changes) + len(slow))
    for change in report["changes"][len(expected.changes) :]:
        expected.add(POLICY.failure, change["task_id"], "failed: exit_code")
    assert expected.score == 0 and [c[0] for c in expected.changes[-4:]] == [-5.0, -5.0, -5.0, 0.0]
    assert expected.score < POLICY.floor
    await check_trust(server, expected)

    waiting = await client.submit(OK)
    await assert_stays_queued(client, waiting)
    done = await cli_json(server, "trust", "n1", "--reset")
    assert done["reset"]["score"] == 50 and done["reset"]["task_id"] is None
    expected.reset()
    assert (await client.wait(waiting, timeout=30))["state"] == "completed"
    expected.add(POLICY.success, waiting, "completed")


def test_trust_errors_are_one_line(fresh_server: Server) -> None:
    procs = [coordinator(fresh_server)]
    try:
        procs[0].start()
        for args, needle in (
            (["trust", "nope"], "error: unknown node nope"),
            (["trust", "nope", "--reset"], "error: unknown node nope"),
            (["trust", "nope", "--score", "3"], "error: --score needs --reset"),
            (["trust", "nope", "--reset", "--score", "101"], "error: --score must be between 0 and 100"),
        ):
            done = hive(fresh_server, *args)
            assert done.returncode == 1, (args, done.stdout, done.stderr)
            assert done.stderr.strip() == needle, done.stderr
    finally:
        for proc in procs:
            proc.stop()


async def test_configured_trust_rules_are_logged_and_replayed(fresh_server: Server) -> None:
    coord = coordinator(fresh_server, "--trust-initial", "70", "--trust-floor", "20").start()
    worker = node(fresh_server, "n1", "--no-docker").start()
    try:
        report = json.loads(hive(fresh_server, "trust", "n1", "--json").stdout)
        assert report["score"] == 70 and report["group"] == "medium" and report["initial"] == 70
        def policies() -> list[str]:  # each start also logs its election (LeaderElected)
            events = hive(fresh_server, "events", "hive.coordinator.>", "--json").stdout.splitlines()
            return [t for t in (json.loads(e)["type"] for e in events) if t != "LeaderElected"]

        assert policies() == ["TrustPolicySet"]
        replayed = json.loads(hive(fresh_server, "replay", "--json").stdout)
        assert replayed["matches"] is True, replayed
        coord.stop()
        coord.start()  # same rules again: nothing new is logged
        assert policies() == ["TrustPolicySet"]
    finally:
        worker.stop()
        coord.stop()
