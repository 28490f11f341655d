"""How long the coordinator's event loop was held: a task that sleeps ``PERIOD_S`` and
records how late it woke. Anything that runs long between awaits (a placement round,
a large fold) shows up here, and heartbeats and API requests waited that long."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import structlog

log = structlog.get_logger("hive.coordinator")

PERIOD_S = 0.05
WINDOW = 1200  # the last minute of samples
STALL_S = 0.5  # a lag this long is logged


class LoopLag:
    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.max_s = 0.0
        self.stalls = 0

    async def run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(PERIOD_S)
            lag = max(0.0, time.monotonic() - before - PERIOD_S)
            self.recent.append(lag)
            self.max_s = max(self.max_s, lag)
            if lag >= STALL_S:
                self.stalls += 1
                log.warning("the event loop was held", lag_ms=round(lag * 1000))

    def stats(self) -> dict[str, Any]:
        ordered = sorted(self.recent)
        p99 = ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0
        return {
            "recent_max_ms": round(1000 * max(ordered, default=0.0), 1),
            "recent_p99_ms": round(1000 * p99, 1),
            "max_ms": round(1000 * self.max_s, 1),
            "stalls": self.stalls,
        }
