"""Reading the event log back: a finite read to the current end, or a live follow."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import BadRequestError, NotFoundError

from edge.bus import answered, follow, position

Sink = Callable[[int, Msg], Awaitable[None] | None]


async def read_stream(
    js: JetStreamContext,
    stream: str,
    sink: Sink,
    *,
    filters: list[str] | None = None,
    start_seq: int = 1,
    until_seq: int | None = None,
    live: bool = False,
) -> int:
    """Feed ``sink(seq, msg)`` every message of ``stream`` matching ``filters`` from
    ``start_seq``; stop at the end of the log (or ``until_seq``) unless ``live``. Returns
    the number of messages read. A filter that matches nothing in this stream reads none."""
    done = asyncio.Event()
    count = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal count
        seq, pending = position(msg)
        if until_seq is not None and seq > until_seq:
            done.set()
            return
        count += 1
        result = sink(seq, msg)
        if result is not None:
            await result
        if not live and (pending == 0 or (until_seq is not None and seq >= until_seq)):
            done.set()

    try:
        sub = await follow(js, stream, on_msg, filters=filters, start_seq=start_seq)
    except (BadRequestError, NotFoundError):
        return 0
    try:
        if not live and (await answered(sub.consumer_info, "a consumer info")).num_pending == 0 and count == 0:
            # nothing to read; but a message may already be in flight, give it a moment
            await asyncio.sleep(0.05)
            if count == 0:
                return 0
        await done.wait()
    finally:
        try:
            await sub.unsubscribe()
        except Exception:  # the connection may be closing; the consumer is ephemeral anyway
            pass
    return count
