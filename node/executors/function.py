"""The function executor: calls the Python handler registered for the task's type."""

from __future__ import annotations

import traceback

import msgspec

from node.context import Outcome, TaskContext
from node.handlers import REGISTRY


class FunctionExecutor:
    name = "function"
    defers_start = True

    async def run(self, ctx: TaskContext) -> Outcome:
        fn = REGISTRY.get(ctx.spec.type or "")
        if fn is None:
            return Outcome.failure(f"no handler for task type {ctx.spec.type!r} on node {ctx.node_id}", reason="unrunnable")
        try:
            result = await fn(ctx, ctx.spec.payload)
        except Exception as exc:  # the task's own failure, reported, not raised
            return Outcome.failure(f"{type(exc).__name__}: {exc}", details=traceback.format_exc(limit=20)[-4000:])
        try:
            msgspec.json.encode(result)
        except (TypeError, msgspec.EncodeError) as exc:
            return Outcome.failure(f"handler result is not JSON-serialisable: {exc}")
        return Outcome(ok=True, result=result)
