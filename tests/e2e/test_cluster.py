"""End to end against a real nats-server, coordinator and two node processes."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import nats

from events.base import Resources
from events.subjects import ALL_EVENTS
from events.task import TaskCompleted, TaskSpec
from hive.client import HiveClient
from tests.cluster import Server, hive


def test_cli_submit_wait_prints_result(nats_server: Server, cluster: dict) -> None:
    done = hive(nats_server, "submit", "--wait", "--", "sh", "-c", "echo hello-from-cli")
    assert done.returncode == 0, done.stderr
    task_id = done.stderr.split("submitted ", 1)[1].split()[0]
    view = json.loads(hive(nats_server, "task", task_id, "--json").stdout)
    assert view["task"]["state"] == "completed"
    assert view["task"]["stdout"] == "hello-from-cli\n"
    assert view["task"]["exit_code"] == 0
    assert "hello-from-cli" in done.stdout
    types = [e["type"] for e in view["events"]]
    assert types[:4] == ["TaskSubmitted", "TaskAssigned", "TaskStarted", "TaskCompleted"]  # (a process: no late start)


def test_cli_failing_command_exits_nonzero(nats_server: Server, cluster: dict) -> None:
    done = hive(nats_server, "submit", "--wait", "--json", "--", "sh", "-c", "echo boom >&2; exit 3")
    assert done.returncode == 1
    final = json.loads(done.stdout)
    assert final["state"] == "failed"
    assert final["exit_code"] == 3
    assert "exited with code 3: boom" in final["error"]


async def test_python_api_runs_on_both_nodes(client: HiveClient) -> None:
    specs = [
        (f"spread-{i}-{time.time_ns()}", TaskSpec(executor="function", type="test_node", payload={"delay": 0.3}))
        for i in range(8)
    ]
    ids = await client.submit_many(specs)
    finals = await asyncio.gather(*(client.wait(t, timeout=30) for t in ids))
    assert {f["state"] for f in finals} == {"completed"}
    assert {f["result"] for f in finals} == {"alpha", "beta"}


async def test_a_quick_attempt_reports_its_start_with_its_end(client: HiveClient) -> None:
    task_id = await client.submit(TaskSpec(executor="function", type="noop"))
    final = await client.wait(task_id, timeout=30)
    history = [event for _, _, event in await client.history(task_id)]
    assert [type(e).__name__ for e in history] == ["TaskSubmitted", "TaskAssigned", "TaskCompleted"]
    end = history[-1]
    assert isinstance(end, TaskCompleted) and end.started_at is not None
    assert history[1].ts <= end.started_at <= end.ts and final["state"] == "completed"
    assert (await client.task(task_id))["started_at"] == end.started_at


async def test_a_longer_attempt_reports_its_start_while_it_runs(client: HiveClient) -> None:
    task_id = await client.submit(TaskSpec(executor="function", type="test_hold", payload={"seconds": 1.0}))
    deadline = time.monotonic() + 30
    while (await client.task(task_id))["state"] != "running":
        assert time.monotonic() < deadline, "never reported running"
        await asyncio.sleep(0.05)
    await client.wait(task_id, timeout=30)
    history = [event for _, _, event in await client.history(task_id)]
    kinds = [type(e).__name__ for e in history]
    assert kinds == ["TaskSubmitted", "TaskAssigned", "TaskStarted", "TaskCompleted"], kinds
    assert isinstance(history[-1], TaskCompleted) and history[-1].started_at is None
    assert (await client.task(task_id))["started_at"] == history[2].ts


async def test_progress_events_arrive(client: HiveClient) -> None:
    seen: list[tuple[float, str]] = []
    task_id = await client.submit(
        TaskSpec(executor="function", type="test_progress", payload={"steps": 4, "delay": 0.1})
    )
    final = await client.wait(task_id, lambda f, m: seen.append((f, m)), timeout=30)
    assert final["state"] == "completed"
    assert [f for f, _ in seen] == [0.25, 0.5, 0.75, 1.0]
    assert seen[-1][1] == "step 4/4"


async def test_too_large_request_stays_queued(client: HiveClient) -> None:
    task_id = await client.submit(TaskSpec(command=["true"], resources=Resources(cpu=10_000)))
    small = await client.submit(TaskSpec(command=["true"]))
    assert (await client.wait(small, timeout=30))["state"] == "completed"
    await asyncio.sleep(0.5)
    assert (await client.task(task_id))["state"] == "queued"
    await client.cancel(task_id)
    assert (await client.wait(task_id, timeout=10))["state"] == "cancelled"


async def test_dependencies_run_in_order(client: HiveClient) -> None:
    run = time.time_ns()
    a, b, c = (f"dep-{run}-{n}" for n in "abc")
    await client.submit_many(
        [
            (a, TaskSpec(executor="function", type="sleep", payload={"seconds": 0.4, "steps": 1})),
            (b, TaskSpec(executor="function", type="sleep", payload={"seconds": 0.1, "steps": 1}, after=[a])),
            (c, TaskSpec(command=["true"], after=[a, b])),
        ]
    )
    assert (await client.task(c))["state"] == "pending"
    finals = [await client.wait(t, timeout=30) for t in (a, b, c)]
    assert [f["state"] for f in finals] == ["completed"] * 3
    assert finals[0]["finished_at"] <= finals[1]["started_at"]
    assert finals[1]["finished_at"] <= finals[2]["started_at"]


async def test_cli_refuses_unknown_dependency_and_cycles(nats_server: Server, client: HiveClient) -> None:
    before = len(await client.tasks())
    done = hive(nats_server, "submit", "--after", "no-such-task", "--", "true")
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == "error: unknown dependency no-such-task (of task " + done.stderr.split("of task ")[1].strip()
    )
    run = time.time_ns()
    x, y = f"cyc-{run}-x", f"cyc-{run}-y"
    try:
        await client.submit_many(
            [(x, TaskSpec(command=["true"], after=[y])), (y, TaskSpec(command=["true"], after=[x]))]
        )
        raise AssertionError("a cycle was accepted")
    except Exception as exc:  # HiveError
        assert "dependency cycle" in str(exc)
    assert len(await client.tasks()) == before


def test_unknown_task_and_bad_payload_are_one_line(nats_server: Server, cluster: dict) -> None:
    for args in (["task", "nope"], ["cancel", "nope"], ["submit", "--type", "noop", "--payload", "{bad"]):
        done = hive(nats_server, *args)
        assert done.returncode == 1, args
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stderr.startswith("error: ")
        assert "Traceback" not in done.stderr


def test_unreachable_server_is_one_line_exit_2(nats_server: Server) -> None:
    started = time.monotonic()
    done = hive(nats_server, "tasks", "--server", "nats://127.0.0.1:9")
    assert done.returncode == 2
    assert time.monotonic() - started < 10
    assert done.stderr.startswith("error: cannot reach NATS server at nats://127.0.0.1:9")
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


async def test_tables_and_json_reads(nats_server: Server, client: HiveClient) -> None:
    await client.wait(await client.submit(TaskSpec(command=["true"])), timeout=30)
    nodes = json.loads(hive(nats_server, "nodes", "--json").stdout)
    assert {n["node_id"] for n in nodes} >= {"alpha", "beta"}
    assert all(n["capacity"]["memory_gb"] == 8 for n in nodes if n["node_id"] in ("alpha", "beta"))
    table = hive(nats_server, "nodes").stdout
    assert "alpha" in table and "TRUST" in table
    first = json.loads(hive(nats_server, "nodes", "--json", "--limit", "1").stdout)
    rest = json.loads(hive(nats_server, "nodes", "--json", "--after", first[0]["node_id"]).stdout)
    assert len(first) == 1 and [n["node_id"] for n in first + rest] == sorted(n["node_id"] for n in nodes)
    tasks = json.loads(hive(nats_server, "tasks", "--json").stdout)
    assert tasks and all("state" in t for t in tasks)
    assert "TASK" in hive(nats_server, "tasks").stdout


async def test_raw_nats_subscriber_sees_json_with_type(nats_server: Server, client: HiveClient) -> None:
    """What `nats sub 'hive.>'` shows: every message is JSON with a type field."""
    nc = await nats.connect(nats_server.url, **nats_server.options("auditor", "audrey"))
    seen: list[tuple[str, bytes]] = []

    async def collect(msg: nats.aio.msg.Msg) -> None:
        seen.append((msg.subject, msg.data))

    sub = await nc.subscribe(ALL_EVENTS, cb=collect)
    ids = await client.submit_many(
        [(f"raw-{time.time_ns()}-{i}", TaskSpec(executor="function", type="test_progress")) for i in range(3)]
    )
    for t in ids:
        await client.wait(t, timeout=30)
    await asyncio.sleep(0.3)
    await sub.unsubscribe()
    await nc.close()
    mine = [(s, d) for s, d in seen if any(t in s for t in ids)]
    assert len(mine) >= 3 * 7  # submitted, assigned, started, 3 progress, completed
    for subject, data in seen:
        body = msgspec.json.decode(data)
        assert isinstance(body, dict) and isinstance(body.get("type"), str), (subject, data)
    kinds = {s.split(".")[3] for s, _ in mine}
    assert kinds >= {"submitted", "assigned", "started", "progress", "completed"}


async def test_replay_reproduces_live_projection(nats_server: Server, client: HiveClient) -> None:
    await client.wait(await client.submit(TaskSpec(command=["true"])), timeout=30)
    done = hive(nats_server, "replay", "--json", "--db", str(nats_server.directory / "replay-test.db"))
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["matches"] is True, report["differences"]
    assert report["counts"]["tasks"] >= 1 and report["counts"]["nodes"] >= 2
