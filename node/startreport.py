"""The ``TaskStarted`` an attempt owes, sent late or not at all.

A no-op task runs in well under a millisecond, and its ``TaskStarted`` was a quarter of
the messages a task costs every process (the node's publish and ack, the server's store
and deliveries, the coordinator's decode and fold). So for an in-process handler (an
executor's ``defers_start``; a process or a container reports its start before it is
spawned, as it outlives a killed node) the report waits ``START_REPORT_S``:
an attempt still running then reports its start as before; one that ends first says when
it started in its final report (``started_at``) and sends no ``TaskStarted``. Temporal
writes a short activity's started event together with its completion, for the same reason.

Anything else the attempt reports (progress, a help or resource request) sends the owed
start first, so the log never holds a report of an attempt before its start. A node that
dies inside the window leaves the attempt assigned, not started: it runs it again on
restart (the same attempt; no report of the first run reached the log).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from events.base import Event
from events.task import TaskStarted

log = structlog.get_logger("hive.node")

# long enough that a short task ends inside it, short against every timeout the
# coordinator keeps on a started task (seconds: heartbeats times start_timeout_heartbeats)
START_REPORT_S = 0.05


class StartReport:
    """``make(started_at)`` is the attempt's ``TaskStarted``, built only if it is sent (most
    are not: building it was a twentieth of a node's CPU per no-op task)."""

    def __init__(
        self,
        make: Callable[[float], TaskStarted],
        send: Callable[[Event], Awaitable[None]],
        delay: float | None = START_REPORT_S,
    ):
        self._make = make
        self.started_at = time.time()
        self._send = send
        self._sending: asyncio.Task[None] | None = None
        self._waived = False  # no start will be sent: the final report carries started_at
        self._timer: asyncio.TimerHandle | None = None  # (None: flushed by the caller)
        if delay is not None:
            self._timer = asyncio.get_running_loop().call_later(delay, self._due)

    @property
    def sent(self) -> bool:
        return self._sending is not None

    def _due(self) -> None:
        self._timer = None
        if self._sending is None and not self._waived:
            self._sending = asyncio.create_task(self._send(self._make(self.started_at)))
            self._sending.add_done_callback(_log_failure)

    async def flush(self) -> None:
        """Send the start now if it is still owed, and wait until it is in the log."""
        self._cancel_timer()
        if self._waived:
            return
        if self._sending is None:
            self._sending = asyncio.create_task(self._send(self._make(self.started_at)))
        await asyncio.shield(self._sending)

    async def settle(self) -> float | None:
        """Before the final report: ``started_at`` for it if no start was sent (nor will
        be), else None once the sent start is in the log (so it comes first there)."""
        self._cancel_timer()
        if self._sending is None:
            self._waived = True
            return self.started_at
        await asyncio.shield(self._sending)
        return None

    def cancel(self) -> None:
        """The attempt was stopped: no start is owed any more (one in flight goes on)."""
        self._cancel_timer()
        self._waived = self._sending is None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("the start report was not sent", error=str(task.exception())[:300])
