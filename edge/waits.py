"""Waiting with a time limit without losing a cancellation.

On Python 3.11 ``asyncio.wait_for`` loses a cancellation that arrives while the awaited
thing has just finished, which for a loop woken again and again is most of the time: a
service's stop or a Ctrl-C went unheard (``tests/unit/test_wire.py`` shows it on a socket).
``asyncio.timeout`` does not; the loops that wait for a wake-up use it through here."""

from __future__ import annotations

import asyncio


async def woken(event: asyncio.Event, timeout: float) -> bool:
    """Whether ``event`` was set within ``timeout`` seconds (it is not cleared)."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
        return True
    except TimeoutError:
        return False
