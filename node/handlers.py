"""Function handlers, registered by task type:

    from node.handlers import handler

    @handler("data_clean")
    async def clean(ctx, payload):
        await ctx.progress(0.5, "halfway")
        return {"rows": 10}

A node imports the modules named on its command line (``--handlers pkg.mod``), which
registers their handlers; ``node.builtin`` is always loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from typing import Any

HandlerFn = Callable[[Any, Any], Awaitable[Any]]

REGISTRY: dict[str, HandlerFn] = {}


def handler(task_type: str) -> Callable[[HandlerFn], HandlerFn]:
    def register(fn: HandlerFn) -> HandlerFn:
        REGISTRY[task_type] = fn
        return fn

    return register


def load(modules: list[str]) -> list[str]:
    """Import handler modules; return the task types now registered."""
    importlib.import_module("node.builtin")
    for name in modules:
        importlib.import_module(name)
    return sorted(REGISTRY)
