"""Coordinator fail-over under load: SIGKILL the leading coordinator K times during an
N-task workload, restarting the killed one as a standby each time.

Default settings throughout (the coordinators' default lease, the nodes' default
heartbeat): a real nats-server, two coordinators, two nodes, N ``test_hold`` tasks. For each
kill, from the audit log's own timestamps:

* election: SIGKILL -> the new leader's ``LeaderElected``;
* take-over: SIGKILL -> the new leader's first decision (an event carrying its term);

and for the whole run: tasks completed exactly once, decisions applied twice (none
expected), ``NodeLost`` events (a take-over must not cause any), and whether a fresh replay
equals the live projection. The last line is one JSON object.

Run from the repository root: ``python benchmarks/failover.py --kills 10 --tasks 1000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.throughput import percentile  # noqa: E402
from events.node import LeaderElected, NodeLost  # noqa: E402
from events.task import TaskSpec  # noqa: E402
from hive.client import HiveClient  # noqa: E402
from hive.logs import configure  # noqa: E402
from tests.cluster import Proc, Server, hive, node  # noqa: E402
from tests.e2e.test_failover import assigned_twice, audit, leader_of  # noqa: E402
from tests.e2e.test_recovery import completions  # noqa: E402


def coordinator_proc(server: Server, name: str) -> Proc:
    return Proc(name, ["coordinator", "--id", name], server, "coordinator ready")


async def completed(client: HiveClient) -> int:
    try:
        return len(await client.tasks(state="completed"))
    except Exception:
        return -1


async def run(kills: int, tasks: int, hold_s: float, directory: Path) -> dict[str, Any]:
    server = Server(directory).start()
    coords = {name: coordinator_proc(server, name) for name in ("coordinator", "coordinator-2")}
    nodes = [node(server, n, "--max-tasks", "8", "--no-docker") for n in ("n1", "n2")]
    try:
        coords["coordinator"].start()
        coords["coordinator-2"].start()
        for proc in nodes:
            proc.start()
        async with await HiveClient.connect(server.url, server.directory) as client:
            stats = await leader_of(client, timeout=30)
            spec = TaskSpec(executor="function", type="test_hold", payload={"seconds": hold_s}, max_attempts=3)
            run_id = time.time_ns()
            items = [(f"fo-{run_id}-{i}", spec) for i in range(tasks)]
            await client.submit_many(items)
            faults: list[tuple[float, int]] = []  # (kill time, the term the new leader won)
            for k in range(kills):
                await asyncio.sleep(1.0)  # let the leader settle and decide for a while
                name, term = stats["id"], stats["term"]
                killed_at = time.time()
                coords[name].kill9()
                stats = await leader_of(client, other_than=term, timeout=30)
                faults.append((killed_at, stats["term"]))
                coords[name].start()  # back as a standby
                done = await completed(client)
                print(f"kill {k + 1}/{kills}: {name} (term {term}) -> {stats['id']} (term {stats['term']}); {done} done")
            deadline = time.monotonic() + 600
            while await completed(client) < tasks:
                if time.monotonic() > deadline:
                    raise RuntimeError("the workload did not finish")
                await asyncio.sleep(0.5)
            events = await audit(client)
            counts = await completions(client)
        elected = {e.term: e.ts for _, e in events if isinstance(e, LeaderElected)}  # type: ignore[attr-defined]
        first: dict[int, float] = {}
        for _, e in events:
            term = getattr(e, "term", 0)
            if term and not isinstance(e, LeaderElected) and term not in first:
                first[term] = e.ts  # type: ignore[attr-defined]
        election = [elected[t] - at for at, t in faults if t in elected]
        takeover = [first[t] - at for at, t in faults if t in first]
        lost = sum(1 for _, e in events if isinstance(e, NodeLost))
        replay = json.loads(hive(server, "replay", "--json", timeout=300).stdout)
        return {
            "kills": kills,
            "tasks": tasks,
            "election_p50_s": round(statistics.median(election), 3),
            "election_max_s": round(max(election), 3),
            "takeover_p50_s": round(statistics.median(takeover), 3),
            "takeover_p90_s": round(percentile(takeover, 90), 3),
            "takeover_max_s": round(max(takeover), 3),
            "exactly_once": sum(1 for t, _ in items if counts[t] == 1),
            "assigned_twice": len(assigned_twice(events)),
            "node_lost": lost,
            "replay_matches": bool(replay.get("matches")),
            "events": len(events),
        }
    finally:
        for proc in (*nodes, *coords.values()):
            proc.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--hold-s", type=float, default=1.0, help="how long each task runs")
    args = parser.parse_args()
    configure("warning")
    os.chdir(ROOT)  # the services (`python -m hive`) are this tree's, run from a worktree too
    with tempfile.TemporaryDirectory(prefix="hive-failover-") as tmp:
        result = asyncio.run(run(args.kills, args.tasks, args.hold_s, Path(tmp)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
