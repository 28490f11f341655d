"""Event published -> page changed, in a real browser: how live the dashboard is.

A real nats-server (operator mode), a coordinator, ``hive web`` as a subprocess and the
Debian chromium through Playwright. Two paths, N events each:

* progress: a node's ``TaskProgress`` on a task's page, which the page applies straight
  from the server-sent event (log -> web service -> browser);
* submitted: a ``TaskSubmitted`` on the tasks list, which the page answers by asking the
  REST API again (log -> web service -> browser -> REST -> coordinator -> browser).

Latency is the browser's clock when the element showed up (a MutationObserver) minus this
process's clock just before the publish, on one machine. The last line is one JSON object.

Run from the repository root: ``python benchmarks/web_latency.py --events 100``.
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

from edge.bus import Publisher, connect  # noqa: E402
from edge.config import resolve  # noqa: E402
from events.task import TaskProgress, TaskSpec  # noqa: E402
from hive.client import HiveClient  # noqa: E402
from hive.logs import configure  # noqa: E402
from hive.server import free_port  # noqa: E402
from tests.cluster import Server, coordinator  # noqa: E402
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, people, web_proc  # noqa: E402

WATCH = """() => {
  window.__seen = {};
  const note = () => {
    const now = Date.now();
    document.querySelectorAll('.progress[data-fraction]').forEach((el) => {
      const key = 'p' + el.getAttribute('data-fraction');
      if (!(key in window.__seen)) window.__seen[key] = now;
    });
    document.querySelectorAll('tr[data-task]').forEach((el) => {
      const key = 'r' + el.getAttribute('data-task');
      if (!(key in window.__seen)) window.__seen[key] = now;
    });
  };
  new MutationObserver(note).observe(document.body, {subtree: true, childList: true, attributes: true});
}"""


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(statistics.median(ordered), 1), "p99_ms": round(pick(0.99), 1), "max_ms": round(ordered[-1], 1)}


async def seen(page: Any, key: str, timeout: float = 10.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at = await page.evaluate(f"() => window.__seen[{json.dumps(key)}]")
        if at is not None:
            return float(at) / 1000
        await asyncio.sleep(0.005)
    raise TimeoutError(f"the page never showed {key}")


async def measure(events: int, directory: Path) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    server = Server(directory).start()
    coord = coordinator(server).start()
    port = free_port()
    tokens, _ = people(server)
    site = web_proc(server, port).start()
    url = f"http://127.0.0.1:{port}"
    try:
        client = await HiveClient.connect(server.url, server.directory, creds=server.creds("client", "alice"))
        node_nc = await connect(resolve(server.url, "node", server.directory, creds=server.creds("node", "bench")), "bench")
        publisher = Publisher(node_nc.jetstream())
        task_id = await client.submit(TaskSpec(executor="function", type="noop"), "latency-target")
        async with async_playwright() as play:
            browser = await play.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page()
            await page.goto(f"{url}/?token={tokens['operator']}")
            await page.goto(f"{url}/#/tasks/{task_id}")
            await page.wait_for_selector(f".progress[data-task='{task_id}']")
            await page.evaluate(WATCH)
            await asyncio.sleep(1.0)  # the page's stream is open
            progress = []
            for i in range(1, events + 1):
                fraction = i / (events + 1)
                event = TaskProgress(task_id=task_id, node_id="bench", attempt=1, fraction=fraction, emitter="node:bench")
                sent = time.time()
                await publisher.publish_reliably(event)
                progress.append((await seen(page, f"p{fraction}") - sent) * 1000)
                await asyncio.sleep(0.05)
            await page.goto(f"{url}/#/tasks")
            await page.wait_for_selector("#tasks")
            await page.evaluate(WATCH)
            await asyncio.sleep(1.0)
            submitted = []
            for i in range(events):
                sent = time.time()
                new_id = await client.submit(TaskSpec(executor="function", type="noop"), f"latency-{i}")
                submitted.append((await seen(page, f"r{new_id}") - sent) * 1000)
                await asyncio.sleep(0.3)  # past the page's debounce: each event is measured alone
            await browser.close()
        await client.close()
        await node_nc.close()
        return {"events": events, "progress": percentiles(progress), "submitted": percentiles(submitted)}
    finally:
        site.stop()
        coord.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100)
    args = parser.parse_args()
    configure("warning")
    with tempfile.TemporaryDirectory(prefix="hive-web-latency-") as directory:
        result = asyncio.run(measure(args.events, Path(directory)))
    print(f"progress  (SSE -> DOM):           p50 {result['progress']['p50_ms']} ms, p99 {result['progress']['p99_ms']} ms")
    print(f"submitted (SSE -> REST -> DOM):   p50 {result['submitted']['p50_ms']} ms, p99 {result['submitted']['p99_ms']} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
