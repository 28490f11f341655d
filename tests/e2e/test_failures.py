"""Failure handling on the shared two-node cluster: retries with backoff on another node,
cascading cancellation of dependents, deadlines, cancellation reaching child processes."""

from __future__ import annotations

import asyncio
import subprocess
import time

from events.task import TaskSpec
from hive.client import HiveClient


def sh(script: str, **kw: object) -> TaskSpec:
    return TaskSpec(command=["sh", "-c", script], **kw)  # type: ignore[arg-type]


async def test_failed_attempt_is_retried_elsewhere_after_backoff(client: HiveClient) -> None:
    task = await client.submit(sh('[ "$HIVE_ATTEMPT" = 1 ] && exit 7; echo "ran on $HIVE_NODE_ID"', max_attempts=3))
    final = await client.wait(task, timeout=30)
    assert final["state"] == "completed" and final["attempt"] == 2
    events = [e for _, _, e in await client.history(task)]
    assigned = [e for e in events if type(e).__name__ == "TaskAssigned"]
    failed = next(e for e in events if type(e).__name__ == "TaskFailed")
    assert assigned[0].node_id != assigned[1].node_id  # prefers another node
    assert final["stdout"].strip() == f"ran on {assigned[1].node_id}"
    assert assigned[1].ts - failed.ts >= 0.45  # backoff 0.5 s before the second attempt
    assert failed.exit_code == 7 and failed.reason == "exit_code"


async def test_last_attempt_fails_for_good_and_cancels_dependents(client: HiveClient) -> None:
    run = time.time_ns()
    a, b, c = (f"casc-{run}-{n}" for n in "abc")
    await client.submit_many(
        [
            (a, sh("exit 1", max_attempts=2)),
            (b, sh("true", after=[a])),
            (c, sh("true", after=[b])),
        ]
    )
    finals = [await client.wait(t, timeout=30) for t in (a, b, c)]
    assert [f["state"] for f in finals] == ["failed", "cancelled", "cancelled"]
    assert finals[0]["attempt"] == 2
    assert finals[1]["reason"] == f"dependency {a} failed"
    assert finals[2]["reason"] == f"dependency {b} cancelled"


async def test_deadline_stops_the_work(client: HiveClient) -> None:
    started = time.monotonic()
    task = await client.submit(TaskSpec(command=["sleep", "311"], timeout_s=1.0))
    final = await client.wait(task, timeout=30)
    assert final["state"] == "failed" and final["reason"] == "timeout"
    assert final["error"] == "timed out after 1s"
    assert time.monotonic() - started < 10
    assert subprocess.run(["pgrep", "-f", "sleep 311"], capture_output=True).returncode == 1


async def test_cancel_stops_the_process_and_its_children(client: HiveClient) -> None:
    task = await client.submit(sh("sleep 313 & sleep 313 & echo hive:progress 0.1 started; wait"))
    for _ in range(100):
        if (await client.task(task))["state"] == "running":
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    assert subprocess.run(["pgrep", "-f", "sleep 313"], capture_output=True).returncode == 0
    await client.cancel(task, reason="operator changed their mind")
    final = await client.wait(task, timeout=30)
    assert final["state"] == "cancelled" and final["reason"] == "operator changed their mind"
    for _ in range(100):
        if subprocess.run(["pgrep", "-f", "sleep 313"], capture_output=True).returncode == 1:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("child processes survived the cancel")


async def test_cancel_of_a_function_handler(client: HiveClient) -> None:
    task = await client.submit(TaskSpec(executor="function", type="sleep", payload={"seconds": 60}))
    for _ in range(100):
        if (await client.task(task))["state"] == "running":
            break
        await asyncio.sleep(0.05)
    await client.cancel(task)
    final = await client.wait(task, timeout=10)
    assert final["state"] == "cancelled"
    nodes = {n["node_id"]: n for n in await client.nodes()}
    await asyncio.sleep(0.2)
    assert all(n["running"] >= 0 for n in nodes.values())
