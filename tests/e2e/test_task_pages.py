"""The `tasks` verb a page at a time, and only what changed since a position: how the web
service keeps 100,000 tasks without one reply nearing the max payload."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge.errors import HiveError
from events.task import TaskSpec
from hive.client import HiveClient


async def pages(client: HiveClient, after: int, limit: int) -> tuple[dict, list[dict]]:
    rows: list[dict] = []
    first = None
    while True:
        reply = await client.request("tasks", {"page": True, "after": after, "offset": len(rows), "limit": limit})
        first = first or reply
        rows += reply["tasks"]
        if not reply["tasks"] or len(rows) >= reply["total"]:
            return first, rows


async def quiet(client: HiveClient, settle_s: float = 0.5, timeout: float = 20) -> None:
    """Until the log stops growing: the tasks are placed and started (heartbeats are not logged)."""
    last, deadline = -1, time.monotonic() + timeout
    while time.monotonic() < deadline:
        seq = (await client.request("stats"))["seq"]
        if seq == last:
            return
        last = seq
        await asyncio.sleep(settle_s)


async def test_pages_and_changes_since(client: HiveClient) -> None:
    run = time.time_ns()
    spec = TaskSpec(executor="function", type="test_hold", payload={"seconds": 30})
    ids = [f"pg-{run}-{i}" for i in range(23)]
    await client.submit_many([(t, spec) for t in ids])
    await quiet(client)  # else a task placed or started while paging counts as changed
    client.last_seq = (await client.js.stream_info("HIVE_EVENTS")).state.last_seq
    first, rows = await pages(client, 0, 5)
    seen = [r["task_id"] for r in rows]
    assert len(seen) == len(set(seen)) and set(ids) <= set(seen)
    assert seen.index(ids[0]) < seen.index(ids[-1])  # submission order
    mark = first["seq"]
    await client.cancel(ids[3])
    await asyncio.sleep(0.3)  # flushed: the change has a position after `mark`
    _, changed = await pages(client, mark, 5)
    by_id = {r["task_id"]: r for r in changed}
    assert ids[3] in by_id and by_id[ids[3]]["state"] == "cancelled", changed
    assert len(changed) < len(rows)  # only what changed, not everything
    for task_id in ids[:3] + ids[4:]:  # leave the session's nodes free
        await client.cancel(task_id)
    with pytest.raises(HiveError, match="must not be negative"):
        await client.request("tasks", {"page": True, "offset": -1})
