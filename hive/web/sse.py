"""``GET /api/stream``: the log as server-sent events, for every page.

Each event's ``id`` is the position after it (``AUDIT_SEQ:TELEMETRY_SEQ``), so a browser
that reconnects by itself sends it back as ``Last-Event-ID`` and gets exactly what it
missed; a page that reloads passes the id it stored as ``?after=``. A ``status`` event
(no id) says whether NATS and the coordinator answer, for the banner shown while cut off.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from events.subjects import ALL_EVENTS
from hive.web import keys
from hive.web.live import Hub
from hive.web.query import BadQuery, Position, valid_pattern

PING_S = 15.0


def status_of(hub: Hub) -> dict[str, Any]:
    stats = hub.stats or {}
    leader = (stats.get("leader") or {}).get("id")
    return {"nats": hub.connected, "coordinator": hub.stats is not None, "leader": leader, "error": hub.stats_error}


def _frame(item: dict[str, Any]) -> bytes:
    return f"id: {item['pos']}\nevent: log\ndata: {json.dumps(item, separators=(',', ':'))}\n\n".encode()


async def stream(request: web.Request) -> web.StreamResponse:
    hub = request.app[keys.HUB]
    pattern = request.query.get("subject") or ALL_EVENTS
    if not valid_pattern(pattern):
        raise BadQuery("subject must be a NATS subject or wildcard, e.g. hive.task.*.completed or hive.>")
    after = Position.parse(request.headers.get("Last-Event-ID") or request.query.get("after"))
    tail = request.query.get("tail", "0")
    if not tail.isdigit() or int(tail) > 1000:
        raise BadQuery("tail must be between 0 and 1000")
    subscriber = hub.subscribe(pattern)  # before the backlog is read: nothing falls between
    metrics = request.app[keys.METRICS]
    metrics.sse_clients.inc()
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    try:
        await response.prepare(request)
        await response.write(b"retry: 1000\n\n")
        if after is not None:
            backlog, skipped = await hub.since(pattern, after)
            if skipped:
                await response.write(b'event: gap\ndata: {"skipped": true}\n\n')
        else:
            backlog = hub.tail(pattern, int(tail))
        sent = {"audit": after.audit if after else 0, "telemetry": after.telemetry if after else 0}
        shown = status_of(hub)
        await response.write(f"event: status\ndata: {json.dumps(shown)}\n\n".encode())
        for item in backlog:
            sent[item["stream"]] = max(sent[item["stream"]], item["seq"])
            await response.write(_frame(item))
        last_write = time.monotonic()
        while True:
            try:  # (not wait_for: on Python 3.11 it can lose the cancellation of a closed stream, see edge.wire)
                async with asyncio.timeout(1.0):
                    item = await subscriber.queue.get()
            except TimeoutError:
                item = {}
            if item is None:
                break  # cut off (too slow, or shutting down): the browser resumes by id
            now_status = status_of(hub)
            if now_status != shown:
                shown = now_status
                await response.write(f"event: status\ndata: {json.dumps(shown)}\n\n".encode())
            if item and item["seq"] > sent[item["stream"]]:
                sent[item["stream"]] = item["seq"]
                await response.write(_frame(item))
                last_write = time.monotonic()
            elif time.monotonic() - last_write > PING_S:
                await response.write(b": ping\n\n")
                last_write = time.monotonic()
    except ConnectionResetError:
        pass  # the page went away
    finally:
        hub.unsubscribe(subscriber)
        metrics.sse_clients.dec()
    return response
