"""The dashboard's task list at scale: N tasks in the cluster, how long the Tasks page's REST
call takes (first load, warm pages, filters, sorts, a deep page, and after a change).

A real nats-server, a coordinator, two nodes running N ``noop`` tasks, and ``hive web`` as
a subprocess; requests are plain HTTP with an operator's bearer token, timed here. The
last line is one JSON object of milliseconds.

Run from the repository root: ``python benchmarks/web_tasks.py --tasks 100000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from benchmarks.throughput import wait_until_ready  # noqa: E402
from events.task import TaskSpec  # noqa: E402
from hive.client import HiveClient  # noqa: E402
from hive.logs import configure  # noqa: E402
from hive.server import free_port  # noqa: E402
from tests.cluster import Server, coordinator, node  # noqa: E402
from tests.web.conftest import people, web_proc  # noqa: E402

NOOP = TaskSpec(executor="function", type="noop")
BATCH = 10_000


async def fill(client: HiveClient, tasks: int) -> None:
    started = time.monotonic()
    for first in range(0, tasks, BATCH):
        ids = [(f"wt-{i:07d}", NOOP) for i in range(first, min(tasks, first + BATCH))]
        await client.submit_many(ids)
        while True:
            done = (await client.request("stats")).get("tasks_by_state", {}).get("completed", 0)
            if done >= first + len(ids):
                break
            await asyncio.sleep(0.5)
        print(f"{first + len(ids):,} tasks completed after {time.monotonic() - started:.0f}s", flush=True)


async def timed(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[float, Any]:
    started = time.perf_counter()
    async with session.get(url, headers=headers) as resp:
        body = await resp.json()
        assert resp.status == 200, body
    return (time.perf_counter() - started) * 1000, body


async def measure(base: str, headers: dict[str, str], client: HiveClient, tasks: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        out["first_page_cold_ms"], body = await timed(session, f"{base}/api/tasks?limit=50", headers)
        assert body["total"] >= tasks, body["total"]
        warm = [(await timed(session, f"{base}/api/tasks?limit=50&offset={50 * i}", headers))[0] for i in range(20)]
        out["page_warm_p50_ms"] = round(statistics.median(warm), 1)
        out["page_warm_max_ms"] = round(max(warm), 1)
        queries = {
            "filter_state": "state=completed&limit=50",
            "filter_text": "q=wt-00123&limit=50",
            "sort_duration": "sort=duration_s&order=desc&limit=50",
            "deep_page": f"limit=50&offset={tasks - 100}",
        }
        for name, query in queries.items():
            first, _ = await timed(session, f"{base}/api/tasks?{query}", headers)
            again, _ = await timed(session, f"{base}/api/tasks?{query}", headers)
            out[f"{name}_first_ms"], out[f"{name}_again_ms"] = round(first, 1), round(again, 1)
        await client.submit(NOOP, "wt-after-change")  # the log moves: the web syncs what changed
        await asyncio.sleep(0.5)
        out["after_change_ms"], body = await timed(session, f"{base}/api/tasks?limit=50", headers)
        assert body["total"] >= tasks + 1, body["total"]
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}


async def run(tasks: int, directory: Path) -> dict[str, Any]:
    server = Server(directory).start()
    procs = [coordinator(server, "--log-level", "warning")]
    procs += [node(server, f"wt{i}", "--max-tasks", "64", "--no-docker", "--log-level", "warning") for i in range(2)]
    port = free_port()
    tokens, _ = people(server)
    site = web_proc(server, port)
    try:
        for proc in procs:
            proc.start(wait=False)
        async with await HiveClient.connect(server.url, server.directory) as client:
            await wait_until_ready(client, 2)
            await fill(client, tasks)
            site.start(timeout=60)
            headers = {"Authorization": f"Bearer {tokens['operator']}"}
            result = await measure(f"http://127.0.0.1:{port}", headers, client, tasks)
        return {"tasks": tasks, **result}
    finally:
        for proc in (site, *reversed(procs)):
            proc.stop(timeout=30)
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    args = parser.parse_args()
    configure("warning")
    with tempfile.TemporaryDirectory(prefix="hive-web-tasks-") as tmp:
        result = asyncio.run(run(args.tasks, Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
