"""The seed's scenarios end to end: missing input, memory exhausted, dependency not
finished, and an operator answering. One cluster for the module: node "a" is small
(1 cpu, 4 GB), node "b" is larger but takes one task at a time (2 cpu, 8 GB)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from events.base import Resources
from events.task import TaskSpec
from hive.client import HiveClient
from tests.cluster import Server, coordinator, hive, node


@pytest.fixture(scope="module")
def negotiation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("negotiation")).start()
    procs = [
        coordinator(server),
        node(server, "a", "--max-cpu", "1", "--max-memory-gb", "4", "--max-tasks", "4", "--no-docker"),
        node(server, "b", "--max-cpu", "2", "--max-memory-gb", "8", "--max-tasks", "1", "--no-docker"),
    ]
    try:
        for proc in procs:
            proc.start()
        yield server
    finally:
        for proc in procs:
            proc.stop()
        server.stop()


@pytest.fixture
async def api(negotiation: Server) -> AsyncIterator[HiveClient]:
    async with await HiveClient.connect(negotiation.url, negotiation.directory) as client:
        yield client


async def types_of(client: HiveClient, task_id: str) -> list[str]:
    return [type(e).__name__ for _, _, e in await client.history(task_id)]


async def test_missing_input_is_retried_on_another_node(api: HiveClient, tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "input.txt").write_text("rows")
    blocker = await api.submit(
        TaskSpec(executor="function", type="test_hold", payload={"seconds": 1.5}, resources=Resources(memory_gb=6))
    )  # only b fits: b is now full
    task = await api.submit(
        TaskSpec(executor="function", type="test_missing_input", payload={"dir": str(tmp_path)}, max_attempts=3)
    )
    final = await api.wait(task, timeout=60)
    assert final["state"] == "completed", final
    assert final["result"] == {"read": "rows", "node": "b"}, [
        (type(e).__name__, e) for _, _, e in await api.history(task)
    ]
    history = await api.history(task)
    kinds = [type(e).__name__ for _, _, e in history]
    assert "HelpRequested" in kinds and "TaskReassigned" in kinds
    guidance = [e for _, _, e in history if type(e).__name__ == "GuidanceGiven"]
    assert [g.action for g in guidance] == ["retry"]
    assert (await api.wait(blocker, timeout=30))["state"] == "completed"


async def test_missing_input_without_attempts_left_is_skipped(api: HiveClient, tmp_path: Path) -> None:
    task = await api.submit(TaskSpec(executor="function", type="test_missing_input", payload={"dir": str(tmp_path)}))
    final = await api.wait(task, timeout=60)
    assert final["state"] == "completed"
    assert final["reason"] == "skipped"
    assert final["result"]["skipped"].startswith("skipped: input file")


async def test_memory_request_granted_from_free_capacity(api: HiveClient) -> None:
    task = await api.submit(
        TaskSpec(executor="function", type="test_needs_memory", payload={"gb": 2}, resources=Resources(memory_gb=1))
    )
    final = await api.wait(task, timeout=30)
    assert final["state"] == "completed", final
    assert final["result"] == {"granted": 2.0, "message": "granted from free capacity"}
    assert "ResourceGranted" in await types_of(api, task)


async def test_memory_request_beyond_the_node_is_denied(api: HiveClient) -> None:
    task = await api.submit(TaskSpec(executor="function", type="test_needs_memory", payload={"gb": 100}))
    final = await api.wait(task, timeout=30)
    assert final["state"] == "failed"
    assert "MemoryError: denied: node" in final["error"] and "in all" in final["error"]
    assert "ResourceDenied" in await types_of(api, task)


async def test_memory_request_preempts_a_lower_priority_task(api: HiveClient) -> None:
    # keep b (one slot) busy so both tasks land on a (4 GB): low holds 3 GB, high 1 GB and
    # asks for 2.5 more, which only preempting low can free
    blocker = await api.submit(
        TaskSpec(executor="function", type="test_hold", payload={"seconds": 4}, resources=Resources(memory_gb=6))
    )
    low = await api.submit(
        TaskSpec(
            executor="function",
            type="test_hold",
            payload={"seconds": 3},
            priority=0,
            resources=Resources(cpu=0.5, memory_gb=3),
        )
    )
    await asyncio.sleep(0.5)
    high = await api.submit(
        TaskSpec(
            executor="function",
            type="test_needs_memory",
            priority=5,
            payload={"gb": 2.5, "hold": 0.2},
            resources=Resources(cpu=0.5, memory_gb=1),
        )
    )
    final = await api.wait(high, timeout=30)
    assert final["state"] == "completed", final
    assert final["result"]["message"] == f"preempted {low}"
    low_final = await api.wait(low, timeout=60)
    assert low_final["state"] == "completed", (low_final, await types_of(api, low))
    assert low_final["attempt"] == 2  # requeued, not lost
    assert "TaskReassigned" in await types_of(api, low)
    assert (await api.wait(blocker, timeout=30))["state"] == "completed"


async def test_dependency_not_finished_waits_for_it(api: HiveClient) -> None:
    dep = await api.submit(TaskSpec(executor="function", type="test_hold", payload={"seconds": 1.5}))
    waiter = await api.submit(TaskSpec(executor="function", type="test_wait_dependency", payload={"dep": dep}))
    final = await api.wait(waiter, timeout=60)
    dep_final = await api.task(dep)
    assert final["state"] == "completed", final
    assert final["result"]["guidance"] == "continue"
    assert dep_final["state"] == "completed"
    assert final["finished_at"] >= dep_final["finished_at"]


async def test_operator_guidance(negotiation: Server, api: HiveClient) -> None:
    first = await api.submit(TaskSpec(executor="function", type="test_ask_operator"))
    second = await api.submit(TaskSpec(executor="function", type="test_ask_operator"))
    third = await api.submit(TaskSpec(executor="function", type="test_ask_operator", max_attempts=3))
    for _ in range(100):
        waiting = json.loads(hive(negotiation, "help-requests", "--json").stdout)
        if {r["task_id"] for r in waiting if r["state"] == "waiting_operator"} >= {first, second, third}:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"requests not waiting for an operator: {waiting}")
    assert "help/other" in hive(negotiation, "help-requests").stdout
    assert hive(negotiation, "guide", first, "--action", "continue", "--message", "looks fine").returncode == 0
    assert hive(negotiation, "guide", second, "--action", "skip").returncode == 0
    assert hive(negotiation, "guide", third, "--action", "fail", "--message", "bad data").returncode == 0
    one, two, three = [await api.wait(t, timeout=30) for t in (first, second, third)]
    assert one["state"] == "completed" and one["result"] == {"guidance": "continue", "message": "looks fine"}
    assert two["state"] == "completed" and two["reason"] == "skipped"
    assert three["state"] == "failed" and three["reason"] == "guidance" and three["attempt"] == 1
    again = hive(negotiation, "guide", first, "--action", "skip")
    assert again.returncode == 1 and "has no open help request" in again.stderr
