"""Many nodes on one coordinator: the figures of issue 11's first target.

With the embedded nats-server (operator mode), one real coordinator (run through
benchmarks/simulator/probe.py, which records its event loop's lag) and a few simulator
processes hosting ``--nodes`` light nodes over the wire (benchmarks/simulator/nodes.py):

* steady state: the coordinator's CPU (psutil, user + system) over ``--steady-s`` seconds
  once every node is active, and the loop's lag meanwhile;
* placing: ``--tasks`` no-op tasks submitted at once; submitted -> assigned latency from
  the events' own timestamps (p50 / p99), placements per second (tasks / (last assigned
  - first submitted)), and the loop's lag while placing;
* liveness: one simulated node stops heartbeating; how long until ``NodeLost`` says so;
* slow consumers: "Slow Consumer" lines in the nats-server log;
* ``hive nodes``: the time and size of the ``nodes`` reply.

The last line of output is one JSON object. Run from the repository root:
``python benchmarks/scale.py --nodes 1000``. ``--profile-coordinator FILE`` runs the
coordinator under cProfile and writes its stats there.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nats  # noqa: E402
import psutil  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402

from events.codec import BadEvent, decode  # noqa: E402
from events.task import TaskSpec  # noqa: E402
from hive.client import HiveClient  # noqa: E402
from hive.logs import configure  # noqa: E402
from tests.cluster import Proc, Server  # noqa: E402

NOOP = TaskSpec(executor="function", type="noop")
NODES_PER_PROC = 2500


class BenchError(Exception):
    pass


class Coordinator(Proc):
    """``hive coordinator`` through the lag probe, optionally under cProfile."""

    def __init__(self, server: Server, lag_file: Path, profile: Path | None, *extra: str) -> None:
        super().__init__("coordinator", ["coordinator", *extra], server, "coordinator ready")
        self.lag_file, self.profile = lag_file, profile

    def start(self, wait: bool = True, timeout: float = 30.0) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        prefix = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        env = self.server.env() | {"HIVE_LAG_FILE": str(self.lag_file)}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *prefix, "-m", "benchmarks.simulator.probe", *self.args],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=ROOT,
            )  # fmt: skip
        if wait:
            self.wait_for_log(self.ready_text, timeout)
        return self


class Sim:
    """One simulator process; its JSON report lines land in ``lines``."""

    def __init__(self, server: Server, prefix: str, count: int, args: argparse.Namespace) -> None:
        creds = server.creds("coordinator", f"sim-{prefix}")  # see nodes.py: one credential for many nodes
        command = [
            sys.executable, "-m", "benchmarks.simulator.nodes", "--server", server.url, "--creds", str(creds),
            "--prefix", prefix, "--count", str(count), "--heartbeat-s", str(args.heartbeat_s),
            "--max-tasks", str(args.max_tasks),
        ]  # fmt: skip
        self.prefix = prefix
        self.proc = subprocess.Popen(
            command, env=server.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, start_new_session=True
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\n".encode())
        self.proc.stdin.flush()

    def wait_for(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"simulator {self.prefix} exited with {self.proc.returncode}")
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line.get("event") == event:
                return line
        raise BenchError(f"simulator {self.prefix}: no {event!r} within {timeout:g}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


class Watcher:
    """Timestamps of submissions, assignments and losses, from a plain subscription."""

    def __init__(self) -> None:
        self.submitted: dict[str, float] = {}
        self.assigned: dict[str, float] = {}
        self.lost: dict[str, float] = {}
        self.seen: dict[str, float] = {}  # when a submission reached this subscriber (as the coordinator)

    async def on_msg(self, msg: Msg) -> None:
        arrived = time.time()
        try:
            event = decode(msg.data)
        except BadEvent:
            return
        kind, verb = msg.subject.split(".")[1], msg.subject.split(".")[3]
        if kind == "node" and verb == "lost":
            self.lost.setdefault(event.node_id, event.ts)  # type: ignore[attr-defined]
        elif kind == "task" and verb in ("submitted", "assigned"):
            getattr(self, verb).setdefault(event.task_id, event.ts)  # type: ignore[attr-defined]
            if verb == "submitted":
                self.seen.setdefault(event.task_id, arrived)  # type: ignore[attr-defined]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else 0.0


def lag_between(path: Path, start: float, end: float) -> dict[str, float]:
    lags = []
    if path.exists():
        for line in path.read_text().splitlines():
            ts, _, ms = line.partition(" ")
            if start <= float(ts) <= end:
                lags.append(float(ms))
    return {"max_ms": max(lags, default=0.0), "p99_ms": percentile(lags, 99), "samples": len(lags)}


def cpu_of(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def until(check: Any, timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(every)


async def bench(args: argparse.Namespace, server: Server, coord: Coordinator, sims: list[Sim]) -> dict[str, Any]:
    result: dict[str, Any] = {"nodes": args.nodes}
    client = await HiveClient.connect(server.url, server.directory)
    watch = await nats.connect(server.url, **server.options("auditor", "scale-watch"))
    watcher = Watcher()
    opts: dict[str, Any] = {"cb": watcher.on_msg, "pending_msgs_limit": -1, "pending_bytes_limit": -1}
    for subject in ("hive.task.*.submitted.by.*", "hive.task.*.assigned.*", "hive.node.*.lost"):
        await watch.subscribe(subject, **opts)
    assert coord.proc is not None
    pid = coord.proc.pid
    try:
        started = time.monotonic()
        for sim in sims:
            await asyncio.to_thread(sim.wait_for, "registered", 60 + args.nodes / 50)

        async def all_active() -> bool:
            try:
                stats = await client.request("stats", timeout=10)
            except Exception:
                return False
            return int(stats["nodes_by_state"].get("active", 0)) >= args.nodes

        await until(all_active, 120 + args.nodes / 20, f"{args.nodes} nodes active", every=1.0)
        result["all_active_s"] = round(time.monotonic() - started, 1)
        await asyncio.sleep(args.settle_s)

        # steady state
        cpu0, t0 = cpu_of(pid), time.time()
        await asyncio.sleep(args.steady_s)
        cpu1, t1 = cpu_of(pid), time.time()
        result["steady_cpu_pct"] = round(100 * (cpu1 - cpu0) / (t1 - t0), 1)
        result["steady_lag"] = lag_between(coord.lag_file, t0, t1)

        # placing a burst
        ids = [f"t-scale{i:05d}" for i in range(args.tasks)]
        cpu0, t0 = cpu_of(pid), time.time()
        await client.submit_many([(t, NOOP) for t in ids])

        async def all_assigned() -> bool:
            return all(t in watcher.assigned for t in ids)

        try:
            await until(all_assigned, args.place_timeout, f"{args.tasks} tasks assigned")
        except BenchError:  # the figures of those placed, and how many were not
            result["unassigned"] = sum(t not in watcher.assigned for t in ids)
        placed = [t for t in ids if t in watcher.assigned]
        first = min(watcher.submitted.get(t, t0) for t in ids)
        if placed:
            t1 = max(watcher.assigned[t] for t in placed)
            latencies = [(watcher.assigned[t] - watcher.submitted[t]) * 1000 for t in placed if t in watcher.submitted]
            result["place_p50_ms"] = round(percentile(latencies, 50), 1)
            result["place_p99_ms"] = round(percentile(latencies, 99), 1)
            result["placements_per_s"] = round(len(placed) / max(1e-9, t1 - first), 1)
            # where the time goes: the client stamping submissions, then the first assignment
            result["first_assigned_ms"] = round(1000 * (min(watcher.assigned[t] for t in placed) - first), 1)
            # split: the submission's way to a subscriber, then the coordinator's part (to the decision)
            way = [(watcher.seen[t] - watcher.submitted[t]) * 1000 for t in placed if t in watcher.seen]
            own = [(watcher.assigned[t] - watcher.seen[t]) * 1000 for t in placed if t in watcher.seen]
            result["to_subscriber_p50_ms"] = round(percentile(way, 50), 1)
            result["to_subscriber_p99_ms"] = round(percentile(way, 99), 1)
            result["coordinator_p50_ms"] = round(percentile(own, 50), 1)
            result["coordinator_p99_ms"] = round(percentile(own, 99), 1)
        result["submit_span_ms"] = round(1000 * (max(watcher.submitted.get(t, first) for t in ids) - first), 1)
        print(f"so far: {json.dumps(result)}", file=sys.stderr, flush=True)
        await asyncio.sleep(1.0)
        result["place_cpu_pct"] = round(100 * (cpu_of(pid) - cpu0) / (time.time() - t0), 1)
        result["place_lag"] = lag_between(coord.lag_file, t0, time.time())

        # hive nodes
        asked = time.perf_counter()
        try:
            reply = await client.request("nodes", timeout=30)
            result["nodes_reply_s"] = round(time.perf_counter() - asked, 2)
            result["nodes_reply_mb"] = round(len(json.dumps(reply)) / 1e6, 2)
        except Exception as exc:
            result["nodes_reply_s"], result["nodes_reply_error"] = None, str(exc)[:200]
        asked = time.perf_counter()
        try:  # what `hive nodes` asks for (in pages where the client and coordinator page)
            listed = await client.nodes()
            result["hive_nodes_s"], result["hive_nodes_count"] = round(time.perf_counter() - asked, 2), len(listed)
        except Exception as exc:
            result["hive_nodes_s"], result["hive_nodes_error"] = None, str(exc)[:200]
        # the command itself, a process of its own (the lean reader, pages of 1,000)
        asked = time.perf_counter()
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hive", "nodes", "--json", env=server.env(), cwd=ROOT,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await cli.communicate()
        result["hive_nodes_cli_s"] = round(time.perf_counter() - asked, 2)
        if cli.returncode == 0:
            result["hive_nodes_cli_count"] = len(json.loads(out))
        else:
            result["hive_nodes_cli_error"] = err.decode(errors="replace")[-200:]

        # a dead node
        victim = f"{sims[0].prefix}-00003"
        before_lost = dict(watcher.lost)
        sims[0].send(f"kill {victim}")
        killed = time.time()

        async def victim_lost() -> bool:
            return victim in watcher.lost

        try:
            await until(victim_lost, args.lost_timeout, f"{victim} declared lost")
            result["lost_after_s"] = round(watcher.lost[victim] - killed, 1)
        except BenchError:
            result["lost_after_s"] = f"> {args.lost_timeout:g}"
        result["steady_after_lag"] = lag_between(coord.lag_file, killed, time.time())
        result["spurious_lost"] = len(set(watcher.lost) - set(before_lost) - {victim}) + len(before_lost)
    finally:
        await watch.close()
        await client.close()
    log = server.directory / "nats-server.log"
    result["slow_consumers"] = log.read_text(errors="replace").count("Slow Consumer") if log.exists() else None
    return result


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="simulated nodes (default 1000)")
    parser.add_argument("--procs", type=int, default=0, help=f"simulator processes (default: one per {NODES_PER_PROC})")
    parser.add_argument("--tasks", type=int, default=1000, help="tasks submitted at once (default 1000)")
    parser.add_argument("--heartbeat-s", type=float, default=1.0, help="the nodes' heartbeat interval (default 1)")
    parser.add_argument("--max-tasks", type=int, default=4, help="slots per simulated node (default 4)")
    parser.add_argument("--settle-s", type=float, default=5.0, help="wait after all nodes are active (default 5)")
    parser.add_argument("--steady-s", type=float, default=15.0, help="steady-state window (default 15)")
    parser.add_argument("--place-timeout", type=float, default=300.0)
    parser.add_argument("--lost-timeout", type=float, default=300.0)
    parser.add_argument("--profile-coordinator", metavar="FILE", help="run the coordinator under cProfile")
    parser.add_argument("--keep", metavar="DIR", help="use DIR for the data (kept) instead of a temp dir")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    configure("warning")
    procs = args.procs or max(1, math.ceil(args.nodes / NODES_PER_PROC))
    with tempfile.TemporaryDirectory(prefix="hive-scale-") as tmp:
        directory = Path(args.keep).resolve() if args.keep else Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        server = Server(directory).start()
        profile = Path(args.profile_coordinator).resolve() if args.profile_coordinator else None
        coord = Coordinator(server, directory / "loop-lag.txt", profile, "--log-level", "info")
        sims: list[Sim] = []
        try:
            coord.start()
            sizes = [args.nodes // procs + (i < args.nodes % procs) for i in range(procs)]
            sims = [Sim(server, f"s{i}", n, args) for i, n in enumerate(sizes)]
            result = asyncio.run(bench(args, server, coord, sims))
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            for sim in sims:
                sim.stop()
            coord.stop(timeout=60.0)
            server.stop()
    import coordinator.core as core

    result["code"] = str(Path(core.__file__).resolve().parent.parent)
    for key, value in result.items():
        print(f"{key}: {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
