"""``edge.waits.woken``: a timed wait for a wake-up that never swallows a cancellation."""

from __future__ import annotations

import asyncio

import pytest

from edge.waits import woken


async def test_woken_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await woken(event, 0.01) is False
    event.set()
    assert await woken(event, 10.0) is True
    assert event.is_set()  # (the caller clears it)


async def test_a_cancellation_that_comes_with_the_wake_up_is_heard() -> None:
    """The stop of a loop woken at the same moment (``asyncio.wait_for`` on Python 3.11
    returns normally here, and the loop would go on)."""
    for _ in range(20):
        event = asyncio.Event()
        waiter = asyncio.ensure_future(woken(event, 10.0))
        await asyncio.sleep(0)  # (waiting now)
        event.set()  # the wake-up and the stop, in the same turn of the loop
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
