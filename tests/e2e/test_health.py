"""``--http-port``: ``/health`` and ``/metrics`` of a real coordinator and a real node
(``python -m hive ...`` processes on a real nats-server), asked over real HTTP."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from events.task import TaskSpec
from hive.client import HiveClient
from hive.server import free_port
from tests.cluster import Proc, Server, coordinator, node

FAST = ("--heartbeat", "0.5", "--no-docker", "--max-tasks", "4")


async def get(url: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
        return resp.status, await resp.text()


async def health(port: int) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(f"http://127.0.0.1:{port}/health") as resp,
    ):
        return resp.status, await resp.json()


async def wait_health(port: int, status: int, timeout: float = 30.0) -> dict[str, Any]:
    """Poll ``/health`` until it answers ``status``; its body then."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            got, body = await health(port)
            last = (got, body)
            if got == status:
                return body
        except aiohttp.ClientError as exc:
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"/health on {port} never answered {status} within {timeout}s; last: {last}")


async def metrics(port: int) -> dict[str, Any]:
    status, text = await get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200, text
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], name: str, suffix: str = "", **labels: str) -> float:
    family = families[name]
    for s in family.samples:
        if s.name == name + suffix and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise KeyError(f"{name}{suffix} {labels}: {[(s.name, s.labels) for s in family.samples]}")


def services(server: Server, *coordinator_args: str) -> tuple[Proc, Proc, int, int]:
    c_port, n_port = free_port(), free_port()
    coord = coordinator(server, "--http-port", str(c_port), *coordinator_args).start()
    worker = node(server, "hn1", *FAST, "--http-port", str(n_port)).start()
    return coord, worker, c_port, n_port


async def test_metrics_show_tasks_by_state_and_placements(fresh_server: Server) -> None:
    coord, worker, c_port, n_port = services(fresh_server)
    try:
        body = await wait_health(c_port, 200)
        assert body["service"] == "coordinator" and body["role"] == "leader"
        assert set(body["checks"]) == {"nats", "caught_up", "leader"}
        body = await wait_health(n_port, 200)
        assert body["service"] == "node" and set(body["checks"]) == {"nats", "registered", "consuming"}

        before = await metrics(c_port)
        placed_before = sample(before, "hive_placement_latency_seconds", "_count")
        spec = TaskSpec(executor="function", type="noop")
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            ids = await client.submit_many([(f"h-{time.time_ns()}-{i}", spec) for i in range(6)])
            deadline = time.monotonic() + 30
            while len(await client.tasks(state="completed")) < len(ids):
                assert time.monotonic() < deadline, await client.tasks()
                await asyncio.sleep(0.2)

        deadline = time.monotonic() + 10
        while True:  # the projection may be a few milliseconds behind the API's answer
            after = await metrics(c_port)
            if sample(after, "hive_tasks", state="completed") >= len(ids) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert sample(after, "hive_tasks", state="completed") == len(ids)
        assert sample(after, "hive_tasks", state="queued") == 0
        assert sample(after, "hive_queue_depth") == 0
        assert sample(after, "hive_placement_latency_seconds", "_count") >= placed_before + len(ids)
        assert sample(after, "hive_placement_latency_seconds", "_bucket", le="+Inf") >= placed_before + len(ids)
        assert sample(after, "hive_events_applied", "_total") > 0
        assert sample(after, "hive_consumer_lag_messages") >= 0
        assert sample(after, "hive_nats_connected") == 1
        assert sample(after, "hive_cluster_capacity", resource="cpu") > 0
        assert sample(after, "hive_cluster_node_trust", node="hn1") > 50  # +2 per success
        assert sample(after, "hive_nodes", state="active") == 1

        deadline = time.monotonic() + 10
        while True:  # heartbeats every 0.5 s
            on_node = await metrics(n_port)
            if sample(on_node, "hive_node_heartbeats", "_total") >= 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert sample(on_node, "hive_node_heartbeats", "_total") >= 2
        assert sample(on_node, "hive_node_attempts_finished", "_total", outcome="completed") == len(ids)
        assert sample(on_node, "hive_node_tasks_running") == 0
        assert sample(on_node, "hive_nats_connected") == 1
        assert "hive_node_cpu_percent" in on_node and "hive_node_memory_used_gb" in on_node
    finally:
        worker.stop()
        coord.stop()


@pytest.mark.slow
async def test_health_is_503_while_nats_server_is_down_and_200_when_it_is_back(fresh_server: Server) -> None:
    coord, worker, c_port, n_port = services(fresh_server)
    try:
        await wait_health(c_port, 200)
        await wait_health(n_port, 200)

        fresh_server.stop()
        body = await wait_health(c_port, 503, timeout=15)
        assert body["ok"] is False and body["checks"]["nats"]["ok"] is False, body
        body = await wait_health(n_port, 503, timeout=15)
        assert body["ok"] is False and body["checks"]["nats"]["ok"] is False, body
        status, _ = await get(f"http://127.0.0.1:{c_port}/metrics")  # metrics still answer, saying so
        assert status == 200
        assert sample(await metrics(c_port), "hive_nats_connected") == 0
        assert sample(await metrics(n_port), "hive_nats_connected") == 0

        fresh_server.start()
        body = await wait_health(c_port, 200, timeout=45)
        assert all(c["ok"] for c in body["checks"].values()), body
        body = await wait_health(n_port, 200, timeout=45)
        assert all(c["ok"] for c in body["checks"].values()), body

        # and it still works: a task submitted now completes
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            task_id = await client.submit(TaskSpec(executor="function", type="noop"))
            deadline = time.monotonic() + 30
            while (await client.task(task_id))["state"] != "completed":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
    finally:
        worker.stop()
        coord.stop()


@pytest.mark.slow
async def test_a_standby_is_healthy_while_a_leader_exists(fresh_server: Server) -> None:
    leader_port, standby_port = free_port(), free_port()
    lease = ("--lease-s", "2")
    first = coordinator(fresh_server, "--id", "c1", "--http-port", str(leader_port), *lease).start()
    second = Proc(
        "c2", ["coordinator", "--id", "c2", "--http-port", str(standby_port), *lease], fresh_server, "coordinator ready"
    ).start()
    try:
        body = await wait_health(leader_port, 200)
        assert body["role"] == "leader", body
        body = await wait_health(standby_port, 200)
        assert body["role"] == "standby", body
        assert "c1" in body["checks"]["leader"]["detail"], body
        first.stop()  # steps down cleanly: the standby takes over
        deadline = time.monotonic() + 20
        while True:
            body = await wait_health(standby_port, 200, timeout=20)
            if body["role"] == "leader" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert body["role"] == "leader", body
    finally:
        second.stop()
        first.stop()
