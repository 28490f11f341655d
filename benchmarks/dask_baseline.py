"""The Dask figure the throughput target is a ratio of: N no-op tasks on a local Dask
distributed cluster shaped like the HiveMind run (a scheduler and ``--workers`` worker
processes, one thread each), submitted at once, timed from the first submission to the last
result.

Dask is not a HiveMind dependency: run this with an interpreter that has it
(``python -m venv /tmp/dask && /tmp/dask/bin/pip install dask distributed``), or let
``benchmarks/throughput.py --dask-python /tmp/dask/bin/python`` run it right after its own
measurement, so both figures come from the same run. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time


def noop(i: int) -> int:
    return i


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from dask.distributed import Client, LocalCluster, wait

    with (
        LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        wait(client.map(noop, range(args.warmup), key=[f"w-{i}" for i in range(args.warmup)]))
        started = time.perf_counter()
        futures = client.map(noop, range(args.tasks), key=[f"t-{i}" for i in range(args.tasks)])
        wait(futures)
        took = time.perf_counter() - started
        assert all(f.status == "finished" for f in futures)
        # one at a time, for the idle latency
        idle = []
        for i in range(20):
            begun = time.perf_counter()
            client.submit(noop, i, key=f"i-{i}").result()
            idle.append((time.perf_counter() - begun) * 1000)
    idle.sort()
    print(
        json.dumps(
            {
                "dask_tasks_per_s": round(args.tasks / took, 1),
                "dask_idle_p50_ms": round(idle[len(idle) // 2], 2),
                "tasks": args.tasks,
                "workers": args.workers,
            }
        )
    )


if __name__ == "__main__":
    main()
