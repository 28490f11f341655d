"""Function handlers the tests load into their nodes (``--handlers tests.handlers``)."""

from __future__ import annotations

import asyncio
from typing import Any

from node.handlers import handler


@handler("test_progress")
async def progress(ctx: Any, payload: Any) -> Any:
    steps = int((payload or {}).get("steps", 3))
    for i in range(steps):
        await asyncio.sleep(float((payload or {}).get("delay", 0.05)))
        await ctx.progress((i + 1) / steps, f"step {i + 1}/{steps}")
    return {"steps": steps, "node": ctx.node_id}


@handler("test_node")
async def which_node(ctx: Any, payload: Any) -> Any:
    await asyncio.sleep(float((payload or {}).get("delay", 0.0)))
    return ctx.node_id
