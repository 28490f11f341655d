"""The node's side of negotiation: a running task asks (help, resources) and waits; the
answers arrive on the node's subjects and are routed here to the waiting task. Guidance
``skip`` and ``fail`` are carried out by the node itself, whatever the handler does."""

from __future__ import annotations

import asyncio

import structlog

from events.base import Event, Resources
from events.codec import BadEvent, check_outgoing
from events.negotiation import GuidanceGiven, ResourceDenied, ResourceGranted
from node.context import Outcome

log = structlog.get_logger("hive.node")

Attempt = tuple[str, int]


class Negotiator:
    """Mixed into ``Node``: what it needs from the node is declared here."""

    waiters: dict[str, tuple[Attempt, asyncio.Future[Event]]]  # request id -> (attempt, answer)
    forced: dict[Attempt, Outcome]  # how guidance ended an attempt
    extra: dict[Attempt, Resources]  # granted on top of the request
    allocated: Resources

    def _stop(self, task_id: str, attempt: int) -> None: ...

    async def _report(self, event: Event, data: bytes | None = None) -> None: ...

    def _answered(self, event: ResourceGranted | ResourceDenied) -> None:
        waiter = self.waiters.get(event.request_id)
        if waiter is None or waiter[1].done():
            return
        if isinstance(event, ResourceGranted):
            extra = Resources.of(event.resource, event.amount)
            self.extra[waiter[0]] = self.extra.get(waiter[0], Resources()) + extra
            self.allocated = self.allocated + extra
        waiter[1].set_result(event)

    def _guided(self, event: GuidanceGiven) -> None:
        waiter = self.waiters.get(event.request_id or "")
        if waiter is None or waiter[1].done():
            return
        key, future = waiter
        task_id = key[0]
        if event.action in ("skip", "fail"):
            # the node carries these out itself, whatever the handler would do
            self.forced[key] = (
                Outcome(ok=True, skipped=True, result={"skipped": event.message})
                if event.action == "skip"
                else Outcome.failure(f"failed on guidance: {event.message}", reason="guidance")
            )
            self._stop(*key)
        elif event.action in ("continue", "retry"):
            future.set_result(event)
        else:
            log.info("guidance: keep waiting", task_id=task_id, action=event.action, message=event.message)

    async def _ask(self, event: Event, timeout: float) -> Event:
        request_id: str = event.request_id  # type: ignore[attr-defined]
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self.waiters[request_id] = ((event.task_id, event.attempt), future)  # type: ignore[attr-defined]
        try:
            try:
                data = check_outgoing(event)
            except BadEvent as exc:  # told to the handler now, not by a timeout later
                raise ValueError(f"cannot send this request: {exc}") from None
            await self._report(event, data)
            return await asyncio.wait_for(future, timeout)
        finally:
            self.waiters.pop(request_id, None)
