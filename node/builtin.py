"""Handlers every node has: handy for smoke tests, demos and benchmarks."""

from __future__ import annotations

import asyncio
from typing import Any

from node.handlers import handler


@handler("noop")
async def noop(ctx: Any, payload: Any) -> Any:
    return payload


@handler("sleep")
async def sleep(ctx: Any, payload: Any) -> Any:
    seconds = float((payload or {}).get("seconds", 1.0))
    steps = max(1, int((payload or {}).get("steps", 4)))
    for i in range(steps):
        await asyncio.sleep(seconds / steps)
        await ctx.progress((i + 1) / steps, f"slept {(i + 1) * seconds / steps:.2f}s")
    return {"slept": seconds}


@handler("fail")
async def fail(ctx: Any, payload: Any) -> Any:
    raise RuntimeError(str((payload or {}).get("message", "failed on purpose")))
