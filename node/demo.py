"""The seed's sample handlers (data_clean, model_train), used by ``hive up --demo``."""

from __future__ import annotations

import asyncio
from typing import Any

from node.handlers import handler


@handler("data_clean")
async def data_clean(ctx: Any, payload: Any) -> Any:
    rows = int((payload or {}).get("rows", 1000))
    kept = 0
    for step in range(5):
        await asyncio.sleep(0.2)
        kept += rows // 5 - step
        await ctx.progress((step + 1) / 5, f"cleaned {(step + 1) * rows // 5} rows")
    return {"rows_in": rows, "rows_kept": kept}


@handler("model_train")
async def model_train(ctx: Any, payload: Any) -> Any:
    epochs = int((payload or {}).get("epochs", 5))
    loss = 1.0
    for epoch in range(epochs):
        await asyncio.sleep(0.2)
        loss *= 0.6
        await ctx.progress((epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs} loss {loss:.3f}")
    return {"epochs": epochs, "loss": round(loss, 4)}


@handler("evaluate")
async def evaluate(ctx: Any, payload: Any) -> Any:
    await asyncio.sleep(0.2)
    await ctx.progress(1.0, "evaluated")
    return {"accuracy": 0.93}
