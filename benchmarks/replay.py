"""Full replay: build a log of N realistic events, then time rebuilding the coordinator's
projection from sequence 0 into a fresh SQLite file, against the ceiling measured in the
same run.

The log is made the honest way: a real nats-server, coordinator and two nodes run
``noop`` function tasks until the audit stream holds N events (each task: submitted,
assigned, started, completed; plus the nodes' registrations and trust changes). Failing
tasks are left out: each failure costs its node trust, and a few hundred would take every
node below the trust floor. Then the services stop and, with the server alone:

* ceilings: read every message and decode and check it (the codec's validation), no
  fold, no SQLite: what any replay must pay; once with nats-py (``edge.logread``), once
  with the lean reader (``edge.fastread``, batch sink and per-message sink);
* replay: ``coordinator.replay.rebuild`` (the fold and the SQLite tables), best of
  ``--runs``, with each reader; and once ``replay_and_compare`` against the live
  projection with the lean reader (must match).

Ratios are to the lean reader's ceiling, measured in the same run.

``--keep DIR`` keeps the data; run again with the same DIR to time replays of that log
without building it again. The last line is one JSON object.

Run from the repository root: ``python benchmarks/replay.py --events 300000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.throughput import wait_until_ready  # noqa: E402
from coordinator.replay import ReplayReport, rebuild, replay_and_compare  # noqa: E402
from edge import fastread  # noqa: E402
from edge.bus import delivery  # noqa: E402
from edge.config import Target, resolve  # noqa: E402
from edge.logread import read_stream  # noqa: E402
from events.codec import BadEvent, decode  # noqa: E402
from events.subjects import AUDIT_STREAM  # noqa: E402
from events.task import TaskSpec  # noqa: E402
from hive.client import HiveClient  # noqa: E402
from hive.logs import configure  # noqa: E402
from tests.cluster import Server, coordinator, node  # noqa: E402

NOOP = TaskSpec(executor="function", type="noop")
BATCH = 5000


async def log_end(client: HiveClient) -> int:
    return int((await client.js.stream_info(AUDIT_STREAM)).state.last_seq)


async def build(server: Server, events: int) -> None:
    procs = [coordinator(server, "--log-level", "warning")]
    procs += [node(server, f"r{i}", "--max-tasks", "64", "--no-docker", "--log-level", "warning") for i in range(2)]
    for proc in procs:
        proc.start(wait=False)
    try:
        async with await HiveClient.connect(server.url, server.directory) as client:
            await wait_until_ready(client, 2, timeout=60)
            batch = 0
            started = time.monotonic()
            while (end := await log_end(client)) < events:
                ids = [(f"rp-{batch}-{i}", NOOP) for i in range(BATCH)]
                await client.submit_many(ids)
                batch += 1
                while True:  # one batch at a time keeps the nodes' queues short
                    stats = await client.request("stats")
                    by_state = stats.get("tasks_by_state", {})
                    if by_state.get("completed", 0) + by_state.get("failed", 0) >= batch * BATCH:
                        break
                    await asyncio.sleep(0.2)
                print(f"log: {end:,} events after {time.monotonic() - started:.0f}s", flush=True)
            client.last_seq = await log_end(client)
            await client.request("stats")  # the coordinator has folded all of it
    finally:
        for proc in reversed(procs):
            proc.stop(timeout=30.0)


async def lean_ceiling(target: Target, per_message: bool = False) -> tuple[int, float]:
    """The same as ``ceiling`` with the lean reader."""
    count = 0

    def each(seq: int, subject: str, data: bytes, ts: float) -> None:
        nonlocal count
        try:
            decode(data, subject, ts)
            count += 1
        except BadEvent:
            pass

    def batch(records: list[fastread.Record]) -> None:
        nonlocal count
        for _, subject, data, ts in records:
            try:
                decode(data, subject, ts)
                count += 1
            except BadEvent:
                pass

    started = time.perf_counter()
    if per_message:
        await fastread.read_stream(target, AUDIT_STREAM, each)
    else:
        await fastread.read_batches(target, AUDIT_STREAM, batch)
    return count, time.perf_counter() - started


async def ceiling(client: HiveClient) -> tuple[int, float]:
    """Read, decode and check every event with nats-py; no fold. (events, seconds)"""
    count = 0

    def sink(seq: int, msg: Any) -> None:
        nonlocal count
        try:
            decode(msg.data, msg.subject, delivery(msg)[2])
            count += 1
        except BadEvent:
            pass

    started = time.perf_counter()
    await read_stream(client.js, AUDIT_STREAM, sink)
    return count, time.perf_counter() - started


async def measure(server: Server, runs: int) -> dict[str, Any]:
    target = resolve(server.url, "client", server.directory)  # whom HiveClient.connect is
    async with await HiveClient.connect(server.url, server.directory) as client:
        end = await log_end(client)
        rates: dict[str, float] = {}
        # CPU of this process per event: steadier than rates on a machine shared with others
        cpu_us: dict[str, float] = {}
        for name, measured in (
            ("natspy", ceiling(client)),
            ("lean", lean_ceiling(target)),
            ("lean_per_message", lean_ceiling(target, per_message=True)),
        ):
            cpu = time.process_time()
            read, read_s = await measured
            cpu_us[f"ceiling_{name}"] = round((time.process_time() - cpu) / max(read, 1) * 1e6, 2)
            rates[name] = read / read_s if read_s else 0.0
            print(f"ceiling {name}: {read:,} events in {read_s:.2f}s ({rates[name]:,.0f}/s)")
        best: dict[str, ReplayReport] = {}
        for name, source in (("lean", target), ("natspy", client.js)):
            for i in range(runs):
                cpu = time.process_time()
                report = await rebuild(source, server.directory / f"replay-bench-{i}.db")
                used = round((time.process_time() - cpu) / max(report.events, 1) * 1e6, 2)
                cpu_us[f"replay_{name}"] = min(cpu_us.get(f"replay_{name}", used), used)
                print(
                    f"replay {name} {i + 1}/{runs}: {report.events:,} events in {report.seconds:.2f}s "
                    f"({report.events_per_s:,.0f}/s)"
                )
                if name not in best or report.seconds < best[name].seconds:
                    best[name] = report
        compared = await replay_and_compare(
            target, server.directory / "replay-compare.db", server.directory / "coordinator.db"
        )
    lean, natspy = best["lean"], best["natspy"]
    ceiling_rate = rates["lean"]
    return {
        "log_events": end,
        "ceiling_natspy_events_per_s": round(rates["natspy"], 1),
        "ceiling_events_per_s": round(ceiling_rate, 1),
        "ceiling_lean_per_message_events_per_s": round(rates["lean_per_message"], 1),
        "replay_events_per_s": lean.events_per_s,
        "replay_s": lean.seconds,
        "replay_natspy_events_per_s": natspy.events_per_s,
        "ratio_to_ceiling": round(lean.events_per_s / ceiling_rate, 3) if ceiling_rate else None,
        "natspy_ratio_to_ceiling": round(natspy.events_per_s / ceiling_rate, 3) if ceiling_rate else None,
        "lean_vs_natspy_ceiling": round(ceiling_rate / rates["natspy"], 2) if rates["natspy"] else None,
        "lean_vs_natspy_replay": round(lean.events_per_s / natspy.events_per_s, 2) if natspy.events_per_s else None,
        "same_tables": lean.counts == natspy.counts and lean.rejected == natspy.rejected,
        "cpu_us_per_event": cpu_us,
        "tasks": lean.counts.get("tasks"),
        "matches_live": compared.matches,
        "differences": compared.differences,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="events in the log (default 300000)")
    parser.add_argument("--runs", type=int, default=3, help="replays timed; the best counts (default 3)")
    parser.add_argument("--keep", metavar="DIR", help="keep the data in DIR; reuse its log if it has one")
    args = parser.parse_args()
    configure("warning")
    with tempfile.TemporaryDirectory(prefix="hive-replay-") as tmp:
        directory = Path(args.keep).resolve() if args.keep else Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        reuse = (directory / "coordinator.db").exists()
        server = Server(directory, port=_port(directory)).start()
        try:
            if not reuse:
                asyncio.run(build(server, args.events))
            result = asyncio.run(measure(server, args.runs))
        finally:
            server.stop()
    print(
        f"ceiling: nats-py {result['ceiling_natspy_events_per_s']:,.0f}, lean {result['ceiling_events_per_s']:,.0f} "
        f"events/s; replay: nats-py {result['replay_natspy_events_per_s']:,.0f}, lean "
        f"{result['replay_events_per_s']:,.0f} events/s ({result['ratio_to_ceiling']:.0%} of the lean ceiling); "
        f"matches the live projection: {result['matches_live']}"
    )
    print(json.dumps(result))
    return 0 if result["matches_live"] else 1


def _port(directory: Path) -> int:
    """The same port for a kept directory (the key store names no port; nothing else does)."""
    from hive.server import free_port

    saved = directory / "replay-bench-port"
    if saved.exists():
        return int(saved.read_text())
    port = free_port()
    saved.write_text(str(port))
    return port


if __name__ == "__main__":
    sys.exit(main())
