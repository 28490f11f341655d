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


@handler("test_missing_input")
async def missing_input(ctx: Any, payload: Any) -> Any:
    """Needs <dir>/<node id>/input.txt; asks for help when this node lacks it."""
    from pathlib import Path

    path = Path(payload["dir"]) / ctx.node_id / "input.txt"
    if not path.exists():
        guidance = await ctx.request_help(f"input file {path} missing", kind="missing_input", timeout=30)
        await asyncio.sleep(30)  # a retry moves the task away; this attempt is stopped meanwhile
        return {"unexpected": guidance.action}
    return {"read": path.read_text(), "node": ctx.node_id}


@handler("test_needs_memory")
async def needs_memory(ctx: Any, payload: Any) -> Any:
    grant = await ctx.request_resource("memory_gb", float(payload["gb"]), "dataset larger than expected", timeout=30)
    if not grant.granted:
        raise MemoryError(f"denied: {grant.message}")
    await asyncio.sleep(float(payload.get("hold", 0.0)))
    return {"granted": grant.amount, "message": grant.message}


@handler("test_wait_dependency")
async def wait_dependency(ctx: Any, payload: Any) -> Any:
    guidance = await ctx.request_help(
        f"dependency {payload['dep']} not finished", kind="dependency_not_ready", details=payload["dep"], timeout=60
    )
    return {"guidance": guidance.action, "message": guidance.message}


@handler("test_ask_operator")
async def ask_operator(ctx: Any, payload: Any) -> Any:
    guidance = await ctx.request_help("strange data, what now?", kind="other", timeout=60)
    return {"guidance": guidance.action, "message": guidance.message}


@handler("test_hold")
async def hold(ctx: Any, payload: Any) -> Any:
    await asyncio.sleep(float((payload or {}).get("seconds", 1.0)))
    return {"node": ctx.node_id}
