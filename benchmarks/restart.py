"""Restarts against history (issue 11, targets 4 and 6): after N finished tasks, how long a
restarted coordinator and a restarted node take to be ready, and the coordinator's memory.

A real nats-server, a coordinator and two nodes run N ``noop`` tasks; then the services
stop and start again on the same data, each timed from its start to its ready line in the
log (``coordinator ready``, ``node started``). The last line is one JSON object.

Run from the repository root: ``python benchmarks/restart.py --tasks 200000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from benchmarks.throughput import wait_until_ready  # noqa: E402
from events.task import TaskSpec  # noqa: E402
from hive.client import HiveClient  # noqa: E402
from hive.logs import configure  # noqa: E402
from tests.cluster import Server, coordinator, node  # noqa: E402

NOOP = TaskSpec(executor="function", type="noop")
BATCH = 10_000


async def fill(server: Server, tasks: int) -> float:
    async with await HiveClient.connect(server.url, server.directory) as client:
        await wait_until_ready(client, 2)
        started = time.monotonic()
        for first in range(0, tasks, BATCH):
            size = min(BATCH, tasks - first)
            await client.submit_many([(f"rs-{i}", NOOP) for i in range(first, first + size)])
            while (await client.request("stats"))["tasks_by_state"].get("completed", 0) < first + size:
                await asyncio.sleep(0.5)
        return time.monotonic() - started


def run(tasks: int, directory: Path) -> dict[str, float]:
    server = Server(directory).start()
    coord = coordinator(server)
    nodes = [node(server, f"n{i}", "--max-tasks", "64", "--no-docker") for i in range(2)]
    try:
        coord.start()
        for proc in nodes:
            proc.start()
        filled = asyncio.run(fill(server, tasks))
        assert coord.proc is not None
        live_rss = psutil.Process(coord.proc.pid).memory_info().rss / 1e6  # after running them all
        for proc in (*nodes, coord):
            proc.stop(timeout=30)
        ready: dict[str, float] = {}
        for name, proc in (("coordinator", coord), ("node", nodes[0])):
            started = time.monotonic()
            proc.start(timeout=300)
            ready[f"{name}_ready_s"] = round(time.monotonic() - started, 2)
        assert coord.proc is not None
        rss = psutil.Process(coord.proc.pid).memory_info().rss / 1e6
        return {
            "tasks": tasks,
            "fill_s": round(filled, 1),
            **ready,
            "coordinator_rss_mb": round(rss),  # restarted, ready
            "coordinator_rss_live_mb": round(live_rss),  # the one that ran them, at the end
        }
    finally:
        for proc in (*nodes, coord):
            proc.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    args = parser.parse_args()
    configure("warning")
    os.chdir(ROOT)  # the services (`python -m hive`) are this tree's, run from a worktree too
    with tempfile.TemporaryDirectory(prefix="hive-restart-") as tmp:
        print(json.dumps(run(args.tasks, Path(tmp))))


if __name__ == "__main__":
    main()
