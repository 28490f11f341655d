"""Finished tasks leave the coordinator's memory (``--keep-finished 0``: all of them, at
each flush) and stay visible: lists, pages, one task, counts, dependencies and duplicate
ids answer from their rows, before and after a restart, and replay still matches."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from edge.auth import issue_user
from edge.config import auth_dir
from edge.errors import HiveError
from events.task import TaskCancelRequested, TaskSpec
from hive.client import HiveClient
from tests.cluster import Server, coordinator, node
from tests.e2e.test_recovery import assert_replay_matches, wait_counts
from tests.e2e.test_task_pages import pages

NOOP = TaskSpec(executor="function", type="noop")


async def evicted(client: HiveClient, finished: int) -> dict:
    """The coordinator's stats once ``finished`` tasks are done and none is in memory."""
    for _ in range(100):
        stats = await client.request("stats")
        done = sum(stats["tasks_by_state"].get(s, 0) for s in ("completed", "cancelled"))
        if done >= finished and stats["tasks_in_memory"] == 0:
            return stats
        await asyncio.sleep(0.1)
    raise AssertionError(f"finished tasks still in memory: {stats}")


async def test_finished_tasks_leave_memory_and_stay_visible(fresh_server: Server) -> None:
    coord = coordinator(fresh_server, "--keep-finished", "0").start()
    worker = node(fresh_server, "w1", "--no-docker", "--max-tasks", "8").start()
    bob = issue_user(auth_dir(fresh_server.directory), "client", "bob")
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            run = time.time_ns()
            ids = [f"ev-{run}-{i:02d}" for i in range(30)]
            await client.submit_many([(t, NOOP) for t in ids])
            await wait_counts(client, len(ids))
            stats = await evicted(client, len(ids))
            assert stats["tasks_by_state"] == {"completed": len(ids)}

            # lists, the newest few, pages and one task come from the rows
            assert [t["task_id"] for t in await client.tasks(state="completed")] == ids
            assert [t["task_id"] for t in await client.tasks(limit=4)] == ids[-4:]
            assert await client.tasks(state="running") == []
            # a number SQLite cannot hold is the caller's mistake, said in one line, not a crash
            with pytest.raises(HiveError, match="too large"):
                await client.request("tasks", {"limit": 10**30})
            first, rows = await pages(client, 0, 7)
            assert first["total"] == len(ids) and [r["task_id"] for r in rows] == ids
            detail = await client.task(ids[0])
            assert detail["state"] == "completed" and detail["task_id"] == ids[0]

            # a dependency on an evicted task is met; its id stays taken
            dependent = f"ev-{run}-dep"
            await client.submit_many([(dependent, msgspec.structs.replace(NOOP, after=[ids[0]]))])
            assert (await client.wait(dependent, timeout=30))["state"] == "completed"
            with pytest.raises(HiveError, match="already exists"):
                await client.submit_many([(ids[1], NOOP)])
            with pytest.raises(HiveError, match="unknown dependency"):
                await client.submit_many([(f"ev-{run}-x", msgspec.structs.replace(NOOP, after=["ev-nope"]))])

            # what changed since a position includes evicted tasks
            mark = first["seq"]
            _, changed = await pages(client, mark, 5)
            assert dependent in [r["task_id"] for r in changed]

        # someone else's cancel of a finished, evicted task: refused by the fold as if it were in memory
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory, creds=bob) as as_bob:
            await as_bob._publish(TaskCancelRequested(task_id=ids[2], reason="not mine", emitter=as_bob.emitter))
            for _ in range(50):
                stats = await as_bob.request("stats")
                if stats["rejected_by_rule"].get("forbidden"):
                    break
                await asyncio.sleep(0.1)
            assert stats["rejected_by_rule"].get("forbidden") == 1, stats

        coord.stop()
        coord.start()  # a restart leaves the finished tasks in their rows
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            stats = await evicted(client, len(ids) + 1)
            assert stats["tasks_by_state"] == {"completed": len(ids) + 1}
            assert len(await client.tasks(state="completed")) == len(ids) + 1
            again = f"ev-{run}-after-restart"
            await client.submit_many([(again, msgspec.structs.replace(NOOP, after=[ids[-1]]))])
            assert (await client.wait(again, timeout=30))["state"] == "completed"
            listed = [t["task_id"] for t in await client.tasks()]
            assert listed == [*ids, dependent, again]  # submission order survives the restart
        worker.stop()
        coord.stop()
        assert_replay_matches(fresh_server)
    finally:
        worker.stop()
        coord.stop()
