"""A node killed and restarted quickly, again and again, while assignments are in flight:
every task completes exactly once, none stays assigned, and each command ran to its end
exactly once (a marker file per run: killed attempts' processes die with their node)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from events.task import TaskSpec
from hive.client import HiveClient
from tests.cluster import Server, coordinator, node
from tests.e2e.test_recovery import assert_replay_matches, completions, wait_counts

pytestmark = pytest.mark.slow

SCRIPT = 'touch "$MARK/$HIVE_TASK_ID.$HIVE_ATTEMPT.$$.start"; sleep {s}; touch "$MARK/$HIVE_TASK_ID.$HIVE_ATTEMPT.$$.end"'


def marked(marks: Path, n: int, seconds: float) -> list[tuple[str, TaskSpec]]:
    run = time.time_ns()
    spec = TaskSpec(
        command=["sh", "-c", SCRIPT.format(s=seconds)], env={"MARK": str(marks)}, max_attempts=20, name="marked"
    )
    return [(f"r-{run}-{i}", spec) for i in range(n)]


def runs(marks: Path, ending: str) -> Counter[str]:
    return Counter(p.name.split(".")[0] for p in marks.iterdir() if p.name.endswith(ending))


async def test_node_restarted_quickly_loses_nothing_and_runs_each_command_once(
    fresh_server: Server, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    coord = coordinator(fresh_server, "--startup-grace", "0.5").start()
    fast = ("--heartbeat", "0.5", "--max-tasks", "4", "--no-docker")
    flaky, steady = node(fresh_server, "flaky", *fast).start(), node(fresh_server, "steady", *fast).start()
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            items = marked(marks, 80, 0.4)
            await client.submit_many(items)
            for _ in range(6):
                await asyncio.sleep(0.7)
                flaky.kill9()
                flaky.start()  # at once: re-register, report interrupted, read on
            await wait_counts(client, len(items), timeout=120)
            counts = await completions(client)
            assert all(counts[t] == 1 for t, _ in items), {t: counts[t] for t, _ in items if counts[t] != 1}
            assert not await client.tasks(state="assigned") and not await client.tasks(state="running")
            interrupted = 0
            for task_id, _ in items:
                history = await client.history(task_id)
                interrupted += sum(getattr(e, "reason", "") == "interrupted" for _, _, e in history)
        ends, starts = runs(marks, ".end"), runs(marks, ".start")
        assert all(ends[t] == 1 for t, _ in items), {t: ends[t] for t, _ in items if ends[t] != 1}
        assert interrupted > 0, "no attempt was interrupted: the kills missed the workload"
        summary = {"tasks": len(items), "runs_started": sum(starts.values()), "interrupted": interrupted, "kills": 6}
        print(f"\nrestart race: {json.dumps(summary)}")
        (tmp_path / "restart-race.json").write_text(json.dumps(summary))
        assert "coordinator ready" in coord.text() and steady.alive()
        assert_replay_matches(fresh_server)
    finally:
        for proc in (flaky, steady, coord):
            proc.stop()
