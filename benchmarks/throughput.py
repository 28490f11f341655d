"""End-to-end throughput: submitted -> completed for N no-op function tasks, then replay.

With the embedded nats-server, one coordinator and two nodes (real processes, as in the
tests), submit N ``noop`` function tasks pipelined, and measure from the events themselves:

* tasks/s: N / (last TaskCompleted.ts - first TaskSubmitted.ts);
* latency per task: TaskCompleted.ts - TaskSubmitted.ts, reported as p50 and p99 in ms;
* replay: ``coordinator.replay.rebuild`` of the whole audit log into a fresh file, events/s.

A warm-up batch (not counted) runs first. The last line of output is one JSON object:
``{"tasks_per_s": ..., "p50_ms": ..., "p99_ms": ..., "replay_events_per_s": ...}``.

Run from the repository root: ``python benchmarks/throughput.py --tasks 2000``.
``--profile-coordinator FILE`` runs the coordinator under cProfile and writes its stats there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
import psutil  # noqa: E402

from coordinator.replay import rebuild  # noqa: E402
from edge import wire  # noqa: E402
from edge.config import Target, resolve  # noqa: E402
from events.subjects import AUDIT_STREAM  # noqa: E402
from events.task import TaskSpec  # noqa: E402
from hive.client import HiveClient  # noqa: E402
from hive.logs import configure  # noqa: E402
from tests.cluster import Proc, Server, coordinator, node  # noqa: E402

NOOP = TaskSpec(executor="function", type="noop")


class BenchError(Exception):
    """The cluster did not come up or the run stalled."""


# -- the cluster ---------------------------------------------------------------------------


class ProfiledCoordinator(Proc):
    """The coordinator run as ``python -m cProfile -o FILE -m hive coordinator``."""

    def __init__(self, server: Server, output: Path, *extra: str) -> None:
        plain = coordinator(server, *extra)
        super().__init__(plain.name, plain.args, server, plain.ready_text)
        self.output = output

    def start(self, wait: bool = True, timeout: float = 20.0) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "cProfile", "-o", str(self.output), "-m", "hive", *self.args],
                env=self.server.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=ROOT,
            )
        if wait:
            self.wait_for_log(self.ready_text, timeout)
        return self


@contextmanager
def cluster(args: argparse.Namespace, directory: Path) -> Iterator[tuple[Server, list[Proc]]]:
    server = Server(directory).start()
    procs: list[Proc] = []
    try:
        extra = ["--log-level", args.log_level]
        if args.profile_coordinator:
            procs.append(ProfiledCoordinator(server, Path(args.profile_coordinator).resolve(), *extra))
        else:
            procs.append(coordinator(server, *extra))
        for i in range(args.nodes):
            procs.append(node(server, f"bench{i}", "--max-tasks", str(args.max_tasks), "--no-docker", *extra))
        for proc in procs:
            proc.start(wait=False)
        yield server, procs
    finally:
        for proc in reversed(procs):
            proc.stop(timeout=30.0)
        server.stop()


async def wait_until_ready(client: HiveClient, nodes: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            active = [n for n in await client.nodes() if n["state"] == "active"]
            if len(active) >= nodes:
                return
        except Exception:  # the coordinator is not answering yet
            pass
        await asyncio.sleep(0.2)
    raise BenchError(f"{nodes} nodes did not become active within {timeout:g}s")


# -- measuring -----------------------------------------------------------------------------


def cpu_seconds(server: Server, procs: list[Proc]) -> dict[str, float]:
    """User + system CPU time used so far by each process of the cluster and by this one."""
    pids = {proc.name: proc.proc.pid for proc in procs if proc.proc is not None}
    if server.server.proc is not None:
        pids["nats-server"] = server.server.proc.pid
    used = {"bench client": time.process_time()}
    for name, pid in pids.items():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        used[name] = times.user + times.system
    return used


WATCHED = ("hive.task.*.submitted.by.*", "hive.task.*.completed.*", "hive.task.*.failed.*")


class Seen(msgspec.Struct):
    """What the observer reads of an event: the benchmark's own plain decode, not the
    services' checked one (the log holds only events the cluster accepted or refused)."""

    task_id: str
    ts: float


class Watcher:
    """Collects TaskSubmitted / TaskCompleted / TaskFailed timestamps from plain (core)
    subscriptions, read on a lean connection (``edge.wire``): the observer shares the two
    cores with the cluster, so what it costs per message comes off what is measured."""

    def __init__(self) -> None:
        self.submitted: dict[str, float] = {}
        self.completed: dict[str, float] = {}
        self.failed: dict[str, float] = {}
        self.changed = asyncio.Event()
        # the batch waited for, and how many of it finished: counted as they arrive, so the
        # observer's CPU, which the cluster's processes share, does not grow with the batch
        self.ids: list[str] = []
        self.batch: frozenset[str] = frozenset()
        self.finished = 0
        self.conn: wire.Conn | None = None
        self.reading: asyncio.Task[None] | None = None

    async def start(self, target: Target) -> None:
        """Subscribe on a connection of its own; return once the server has the subscriptions."""
        self.conn = conn = await wire.open_conn(target, "bench-watch")
        sids = [f"w{i}".encode() for i in range(len(WATCHED))]
        for sid, subject in zip(sids, WATCHED, strict=True):
            conn.subs[sid] = []
            conn.writer.write(f"SUB {subject} {sid.decode()}\r\n".encode())
        pongs = conn.pongs
        conn.writer.write(b"PING\r\n")
        while conn.pongs == pongs:
            await conn.fill()
            conn.parse()
            conn.check()
        self.reading = asyncio.create_task(self._read(conn, sids))

    async def _read(self, conn: wire.Conn, sids: list[bytes]) -> None:
        while True:
            await conn.fill(3600.0)
            conn.parse()
            for sid in sids:
                box = conn.subs[sid]
                if box:
                    conn.subs[sid] = []
                    for subject, data in box:
                        self.on_message(subject, data)

    async def close(self) -> None:
        if self.reading is not None:
            self.reading.cancel()
            await asyncio.gather(self.reading, return_exceptions=True)
        if self.conn is not None:
            await self.conn.close()

    def on_message(self, subject: str, data: bytes) -> None:
        try:
            event = _seen.decode(data)
        except msgspec.DecodeError:
            return
        verb = subject.split(".")[3]
        target = {"submitted": self.submitted, "completed": self.completed, "failed": self.failed}.get(verb)
        if target is not None:
            task_id = event.task_id
            first = task_id not in self.completed and task_id not in self.failed
            target[task_id] = event.ts
            if verb != "submitted" and first and task_id in self.batch:
                self.finished += 1
            self.changed.set()

    def wait_for(self, ids: list[str]) -> None:
        self.ids, self.batch = ids, frozenset(ids)
        self.finished = sum(1 for t in self.batch if t in self.completed or t in self.failed)

    def done(self, ids: list[str]) -> int:
        if ids is not self.ids:
            self.wait_for(ids)
        return self.finished


_seen = msgspec.json.Decoder(Seen)


async def run_batch(
    client: HiveClient, watcher: Watcher, ids: list[str], stall_s: float, limit_s: float
) -> tuple[float, bool]:
    """Submit the batch and wait for all of it; return (wall seconds, finished)."""
    watcher.wait_for(ids)
    started = time.perf_counter()
    await client.submit_many([(t, NOOP) for t in ids])
    deadline = time.monotonic() + limit_s
    last_progress, last_done = time.monotonic(), -1
    while True:
        done = watcher.done(ids)
        if done == len(ids):
            return time.perf_counter() - started, True
        now = time.monotonic()
        if done != last_done:
            last_progress, last_done = now, done
        if now - last_progress > stall_s or now > deadline:
            return time.perf_counter() - started, False
        watcher.changed.clear()
        try:
            await asyncio.wait_for(watcher.changed.wait(), 1.0)
        except TimeoutError:
            pass


async def unloaded_latency(client: HiveClient, watcher: Watcher, count: int, stall_s: float) -> dict[str, Any]:
    """One task at a time through an idle cluster: the pipeline's own latency, no queueing."""
    ids = [f"t-probe{i:05d}" for i in range(count)]
    for task_id in ids:
        _, ok = await run_batch(client, watcher, [task_id], stall_s, stall_s)
        if not ok:
            raise BenchError(f"probe task {task_id} did not finish")
    return summarise(watcher, ids)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarise(watcher: Watcher, ids: list[str]) -> dict[str, Any]:
    done = [t for t in ids if t in watcher.completed and t in watcher.submitted]
    latencies = [(watcher.completed[t] - watcher.submitted[t]) * 1000 for t in done]
    if not latencies:
        return {"completed": 0, "failed": 0, "tasks_per_s": 0.0, "p50_ms": 0.0, "p99_ms": 0.0, "span_s": 0.0}
    first = min(watcher.submitted[t] for t in ids if t in watcher.submitted)
    last = max(watcher.completed[t] for t in done)
    span = max(last - first, 1e-9)
    return {
        "completed": len(done),
        "failed": sum(1 for t in ids if t in watcher.failed),
        "tasks_per_s": round(len(done) / span, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "span_s": round(span, 3),
    }


# -- the run -------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, server: Server, procs: list[Proc]) -> dict[str, Any]:
    client = await HiveClient.connect(server.url, server.directory)
    watcher = Watcher()
    try:
        await wait_until_ready(client, args.nodes)
        await watcher.start(resolve(server.url, "auditor", server.directory, creds=server.creds("auditor", "bench-watch")))
        limit = max(120.0, args.tasks / 20)
        if args.warmup:
            warm = [f"t-warm{i:06d}" for i in range(args.warmup)]
            _, ok = await run_batch(client, watcher, warm, args.stall_s, limit)
            if not ok:
                raise BenchError(f"warm-up stalled: {watcher.done(warm)}/{len(warm)} finished")
        probe = await unloaded_latency(client, watcher, args.probe, args.stall_s)
        ids = [f"t-bench{i:07d}" for i in range(args.tasks)]
        cpu_before = cpu_seconds(server, procs)
        wall, finished = await run_batch(client, watcher, ids, args.stall_s, limit)
        cpu = {k: round(v - cpu_before.get(k, 0.0), 2) for k, v in cpu_seconds(server, procs).items()}
        result = summarise(watcher, ids) | {"wall_s": round(wall, 3), "finished": finished, "cpu_s": cpu}
        result["probe"] = probe
        # the coordinator's counters once it has folded the whole log
        client.last_seq = (await client.js.stream_info(AUDIT_STREAM)).state.last_seq
        stats = await client.request("stats")
        replay = await rebuild(client.js, server.directory / "bench-replay.db")
        return result | {"stats": stats, "replay": replay}
    finally:
        await watcher.close()
        await client.close()


def report(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    stats, replay = result["stats"], result["replay"]
    print(f"tasks: {args.tasks} noop function tasks on {args.nodes} nodes (--max-tasks {args.max_tasks})")
    print(
        f"finished: {result['completed']} completed, {result.get('failed', 0)} failed"
        + ("" if result["finished"] else f" -- STALLED: {args.tasks - result['completed']} never finished")
    )
    print(f"wall: {result['wall_s']:.2f}s (submit until the last one finished); event span {result['span_s']:.2f}s")
    print(f"latency submitted->completed: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
    if result["probe"]["completed"]:
        probe = result["probe"]
        print(
            f"unloaded latency ({probe['completed']} tasks one at a time): "
            f"p50 {probe['p50_ms']:.1f} ms, p99 {probe['p99_ms']:.1f} ms"
        )
    print(f"coordinator: seq {stats['seq']}, rejected {stats['rejected']}, ignored {stats['ignored']}")
    cpu = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in result["cpu_s"].items())
    print(f"cpu during the measured run ({psutil.cpu_count()} cpus): {cpu}")
    print(f"replay: {replay.events} events in {replay.seconds:.2f}s ({replay.events_per_s:,.0f} events/s)")
    done = max(1, result["completed"])
    return {
        "tasks_per_s": result["tasks_per_s"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "replay_events_per_s": replay.events_per_s,
        "idle_p50_ms": result["probe"]["p50_ms"],  # one task at a time through an idle cluster
        "idle_p99_ms": result["probe"]["p99_ms"],
        "cpu_us_per_task": {name: round(seconds / done * 1e6) for name, seconds in result["cpu_s"].items()},
        "code": str(ROOT),
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks measured (default 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="tasks run first, not measured (default 100)")
    # a p99 of 20 would be their maximum: one hiccup of the machine (another process's turn,
    # a page fault) would be the figure
    parser.add_argument("--probe", type=int, default=200, help="tasks run one at a time first, for idle latency")
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes (default 2)")
    parser.add_argument("--max-tasks", type=int, default=64, help="concurrent tasks per node (default 64)")
    parser.add_argument("--stall-s", type=float, default=30.0, help="give up after this long without progress")
    parser.add_argument("--log-level", default="info", help="log level of the services (default info)")
    parser.add_argument("--profile-coordinator", metavar="FILE", help="run the coordinator under cProfile")
    parser.add_argument("--keep", metavar="DIR", help="use DIR for the data (kept) instead of a temp dir")
    parser.add_argument(
        "--dask-python",
        metavar="PYTHON",
        help="then run benchmarks/dask_baseline.py with this interpreter (one with dask) for the same-run ratio",
    )
    return parser.parse_args(argv)


def dask_figure(args: argparse.Namespace) -> dict[str, Any]:
    """Dask's figure for the same tasks and workers, run now, after ours (not at once: 2 cores)."""
    script = Path(__file__).resolve().parent / "dask_baseline.py"
    done = subprocess.run(
        [args.dask_python, str(script), "--tasks", str(args.tasks), "--workers", str(args.nodes)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"dask baseline failed: {done.stderr.strip()[-500:]}")
    figure: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figure


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    configure("warning")
    # the services run as `python -m hive` from the working directory: from this tree's
    # root, a copy of the repository (a worktree of an older commit) runs its own services
    for name in ("keep", "profile_coordinator"):  # (paths given are the caller's: resolved first)
        if getattr(args, name):
            setattr(args, name, str(Path(getattr(args, name)).resolve()))
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory(prefix="hive-bench-") as tmp:
        directory = Path(args.keep).resolve() if args.keep else Path(tmp)
        try:
            with cluster(args, directory) as (server, procs):
                result = asyncio.run(bench(args, server, procs))
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    summary = report(args, result)
    if args.dask_python:
        try:
            dask = dask_figure(args)
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        summary |= {**dask, "ratio_to_dask": round(summary["tasks_per_s"] / dask["dask_tasks_per_s"], 2)}
        print(f"dask: {dask['dask_tasks_per_s']:,.0f} tasks/s; HiveMind/Dask {summary['ratio_to_dask']:.2f}x")
    print(json.dumps(summary))
    return 0 if result["finished"] else 1


if __name__ == "__main__":
    sys.exit(main())
