"""Run ``hive coordinator ...`` with an event-loop lag monitor beside it, for benchmarks.

A task on the coordinator's own loop sleeps ``PERIOD_S`` and records how late it woke
(the overshoot is how long something else held the loop). Samples are appended to the
file named by ``HIVE_LAG_FILE`` as ``<unix time> <lag ms>`` lines, written once a second.
It wraps ``Coordinator.run`` from outside, so it measures any version of the coordinator
the same way (benchmarks/scale.py runs it against the committed code too).

``python -m benchmarks.simulator.probe coordinator --log-level info``
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

PERIOD_S = 0.05


async def watch_lag(path: Path) -> None:
    samples: list[str] = []
    written = time.monotonic()
    with open(path, "a") as out:
        while True:
            before = time.monotonic()
            await asyncio.sleep(PERIOD_S)
            lag = max(0.0, time.monotonic() - before - PERIOD_S)
            samples.append(f"{time.time():.3f} {lag * 1000:.1f}\n")
            if time.monotonic() - written >= 1.0:
                out.writelines(samples)
                out.flush()
                samples.clear()
                written = time.monotonic()


def install(path: Path) -> None:
    from coordinator.service import Coordinator

    original = Coordinator.run

    async def run(self: Any, ready: asyncio.Event | None = None) -> None:
        monitor = asyncio.ensure_future(watch_lag(path))
        try:
            await original(self, ready)
        finally:
            monitor.cancel()

    Coordinator.run = run  # type: ignore[method-assign]


def main() -> None:
    lag_file = os.environ.get("HIVE_LAG_FILE")
    if lag_file:
        install(Path(lag_file))
    sys.argv = ["hive", *sys.argv[1:]]
    from hive.cli import main as hive_main

    hive_main()


if __name__ == "__main__":
    main()
