"""A 3-server JetStream cluster: the server that leads HIVE_EVENTS (in another run: the
JetStream meta leader) is SIGKILLed mid-workload and comes back 5 s later. The coordinator and the nodes, given every server's URL, move to
the others by themselves; every task completes exactly once and replay matches."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from edge.logread import read_stream
from events.codec import decode
from events.subjects import AUDIT_STREAM, RESULTS_BUCKET
from events.task import TaskCompleted
from hive.client import HiveClient
from tests.cluster import Servers, coordinator, node
from tests.e2e.test_recovery import assert_exactly_once, assert_replay_matches, completions, wait_counts, workload

pytestmark = pytest.mark.slow

OUTAGE_S = float(os.environ.get("HIVE_TEST_OUTAGE_S", "5"))  # the killed leader is down this long


async def completed_at(client: HiveClient) -> list[float]:
    """When each TaskCompleted in the audit log was stored (the stream's own timestamp)."""
    stamps: list[float] = []

    def add(seq: int, msg: object) -> None:
        event = decode(msg.data)  # type: ignore[attr-defined]
        if isinstance(event, TaskCompleted):
            stamps.append(msg.metadata.timestamp.timestamp())  # type: ignore[attr-defined]

    await read_stream(client.js, AUDIT_STREAM, add, filters=["hive.task.*.completed.*"])
    return stamps


async def first_seen(client: HiveClient, before: int, since: float, timeout: float = 60) -> float:
    """Seconds from ``since`` until the coordinator reports more than ``before`` completed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(await client.tasks(state="completed")) > before:
                return time.time() - since
        except Exception:  # the request may be cut by the failover
            pass
        await asyncio.sleep(0.05)
    return float("nan")


@pytest.mark.parametrize("which", ["stream", "meta"])
async def test_leader_killed_mid_workload(tmp_path: Path, which: str) -> None:
    servers = Servers(tmp_path, 3).start()
    procs = []
    try:
        await servers.wait_ready()
        coord = coordinator(servers).start(timeout=60)  # it creates the streams: 3 servers, so 3 replicas
        procs.append(coord)
        nodes = [node(servers, n, "--max-tasks", "4", "--no-docker").start() for n in ("n1", "n2")]
        procs.extend(nodes)
        async with await HiveClient.connect(servers.url, servers.directory) as client:
            info = await client.js.stream_info(AUDIT_STREAM)
            assert info.config.num_replicas == 3 and info.cluster is not None
            for _ in range(50):  # what `hive status` shows (absent while the stream info times out)
                servers_seen = (await client.request("stats")).get("servers") or {}
                if len(servers_seen.get("members", [])) == 3:
                    break
                await asyncio.sleep(0.2)
            assert servers_seen["replicas"] == 3 and len(servers_seen["members"]) == 3, servers_seen
            bucket = await client.js.stream_info(f"OBJ_{RESULTS_BUCKET}")
            assert bucket.config.num_replicas == 3
            items = workload(150, 0.2)
            await client.submit_many(items)
            await wait_counts(client, 30)
            victim = await (servers.leader(AUDIT_STREAM) if which == "stream" else servers.meta_leader())
            offsets = {p.name: len(p.text()) for p in procs}
            before = len(await client.tasks(state="completed"))
            killed_at = time.time()
            servers.kill(victim)
            seen = asyncio.ensure_future(first_seen(client, before, killed_at))
            print(f"\nSIGKILLed hive-{victim}, the {'leader of ' + AUDIT_STREAM if which == 'stream' else 'meta leader'}")
            await asyncio.sleep(OUTAGE_S)
            servers.start(victim)
            await wait_counts(client, len(items), timeout=120)
            after = [ts for ts in await completed_at(client) if ts > killed_at]
            counts = await completions(client)
            assert_exactly_once(counts, items)
            new_leader = await servers.leader(AUDIT_STREAM)
            seen_after = await seen
        assert all(p.alive() for p in procs), [p.name for p in procs if not p.alive()]
        first = min(after) - killed_at if after else float("nan")
        moved = [p.name for p in procs if "disconnected from nats" in p.text(offsets[p.name])]
        print(
            f"leader kill -> first completion after it: {first:.2f}s (stored in the stream), seen by the coordinator "
            f"{seen_after:.2f}s; {len(after)} completed after the kill; all {len(items)} exactly once; "
            f"new leader hive-{new_leader}; on the killed server: {', '.join(moved) or 'none'}"
        )
        assert_replay_matches(servers)
    finally:
        for proc in procs:
            proc.stop()
        servers.stop()
