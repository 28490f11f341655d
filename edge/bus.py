"""The NATS edge: connecting with one clear error, publishing events, reading the log.

Connections never print nats-py tracebacks: errors go to structlog at debug level, a
disconnect is one warning line, and the first connect is bounded by a deadline so an
unreachable server is reported within seconds. After that, services reconnect forever
(a restarted nats-server is picked up by itself).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from edge.config import Target
from edge.errors import Unreachable
from edge.options import JS_DOMAIN, credentials, explain
from edge.wire import Conn
from events.base import Event
from events.codec import encode
from events.subjects import MSG_ID_HEADER, subject_for

log = structlog.get_logger("edge.bus")

T = TypeVar("T")


TRANSIENT = (asyncio.TimeoutError, NoStreamResponseError, nats.errors.TimeoutError, nats.errors.ConnectionClosedError)


class _Client(Client):
    """A nats-py client whose JetStream contexts find JetStream where it is: on the server
    it is connected to when that one runs it (its INFO says ``jetstream``), else on the hub
    behind it, in the domain ``JS_DOMAIN`` (a leaf server). So a node on a leaf server
    needs nothing of its own to say so."""

    def jetstream(self, **opts: Any) -> JetStreamContext:
        if "domain" not in opts and "prefix" not in opts and not (self._server_info or {}).get("jetstream"):
            opts["domain"] = JS_DOMAIN
        return super().jetstream(**opts)


async def connect(
    target: Target,
    name: str,
    *,
    deadline: float = 5.0,
    persistent: bool = True,
    on_reconnect: Callable[[], None] | None = None,
    on_denied: Callable[[str], None] | None = None,
    on_closed: Callable[[], None] | None = None,
) -> Client:
    """Connect or raise ``Unreachable`` after ``deadline`` seconds, with the last reason."""
    last_error: list[str] = []
    refusal: list[str] = []
    asked_to_close = False
    connected = asyncio.Event()
    holder: list[Client] = []

    async def on_error(exc: Exception) -> None:
        text = str(exc) or type(exc).__name__
        if connected.is_set() and (not last_error or last_error[-1] != text):
            log.debug("nats error", error=text)
        last_error[:] = [text]
        if any(word in text.lower() for word in ("revoked", "authorization", "authentication", "expired")):
            refusal[:] = [text]  # the reason a close for good gives; an EOF after it says less
        if on_denied is not None and "permissions violation" in text:
            on_denied(text)  # the server refused a publish or subscribe: nothing else says so

    async def on_disconnect() -> None:
        if connected.is_set() and not closing(holder):
            log.warning("disconnected from nats; reconnecting", server=target.url.split("@")[-1])

    async def closed() -> None:
        # a close nobody asked for: the server refused us for good (a revoked credential)
        if connected.is_set() and persistent and holder and not holder[0].is_draining and not asked_to_close:
            reason = (refusal or last_error or ["connection closed"])[-1]
            log.error("the NATS server closed this connection for good; stopping", error=reason)
            refused_for_good.append(explain(target, reason))
            stop = on_closed or stop_service
            if stop is not None:
                stop()

    async def reconnected() -> None:
        log.info("reconnected to nats")
        if on_reconnect is not None:
            on_reconnect()

    options: dict[str, Any] = {
        "servers": target.url.split(","),
        "name": name,
        "error_cb": on_error,
        "disconnected_cb": on_disconnect,
        "reconnected_cb": reconnected,
        "closed_cb": closed,
        "connect_timeout": 2,
        "reconnect_time_wait": 0.5,
        "max_reconnect_attempts": -1 if persistent else 30,  # a client rides out ~15 s (RETRY_S)
        "allow_reconnect": True,
        "pending_size": 64 * 1024 * 1024,
        # a dead link (a partition: no RST, no FIN) is noticed within ~40 s, not nats-py's ~4 min
        "ping_interval": 10,
        "max_outstanding_pings": 3,
    }
    options.update(credentials(target))
    try:
        nc = _Client()
        await asyncio.wait_for(nc.connect(**options), timeout=deadline)
    except (TimeoutError, OSError, nats.errors.Error, ssl.SSLError) as exc:
        reason = (refusal or last_error or [str(exc) or type(exc).__name__])[-1]
        raise Unreachable(explain(target, reason)) from None
    holder.append(nc)
    connected.set()
    original_close = nc.close

    async def close() -> None:
        nonlocal asked_to_close
        asked_to_close = True
        await original_close()

    nc.close = close  # type: ignore[method-assign]
    return nc


# why a service's connection was closed for good, for its command to exit with (cli.serve),
# and how to stop that service (set by whoever runs it)
refused_for_good: list[str] = []
stop_service: Callable[[], None] | None = None


def closing(holder: list[Client]) -> bool:
    return bool(holder) and (holder[0].is_closed or holder[0].is_draining)


def headers_for(event: Event) -> dict[str, str]:
    return {MSG_ID_HEADER: event.id}


class Publisher:
    """Publishes events to JetStream. ``publish`` pipelines (a bounded window of acks in
    flight, awaited by ``flush``); ``publish_reliably`` awaits the ack and retries transient
    failures with the same id, so a retry after a lost ack is deduplicated by the server.

    ``lean``: where to publish instead of nats-py when it gives a connection (the log's
    ``edge.follow.Follower.publishing``): the acks are then read by the follower's parse
    loop, which costs a fraction of nats-py's receive path (edge/follow.py says why)."""

    def __init__(self, js: JetStreamContext, window: int = 2000, lean: Callable[[], Conn | None] | None = None) -> None:
        self.js = js
        self.window = window
        self.lean = lean
        self.pending: list[asyncio.Future[Any]] = []

    def _conn(self) -> Conn | None:
        return self.lean() if self.lean is not None else None

    async def publish(self, event: Event) -> None:
        conn = self._conn()
        if conn is not None:
            future: asyncio.Future[Any] = conn.publish_acked(subject_for(event), encode(event), event.id)
        else:
            future = await self.js.publish_async(subject_for(event), encode(event), headers=headers_for(event))
        self.pending.append(future)
        if len(self.pending) >= self.window:
            await self.flush()

    async def flush(self, timeout: float = 10.0) -> int:
        """Wait for the acks in flight; return how many failed."""
        pending, self.pending = self.pending, []
        if not pending:
            return 0
        done, not_done = await asyncio.wait(pending, timeout=timeout)
        for future in not_done:
            future.cancel()
        failed = len(not_done) + sum(1 for f in done if f.cancelled() or f.exception() is not None)
        if failed:
            log.warning("publishes not acknowledged", failed=failed, total=len(pending))
        return failed

    def reap(self) -> int:
        """Drop acks already received; return how many of them were failures."""
        failed = sum(1 for f in self.pending if f.done() and (f.cancelled() or f.exception() is not None))
        self.pending = [f for f in self.pending if not f.done()]
        return failed

    async def publish_reliably(
        self, event: Event, attempts: int = 0, timeout: float = 5.0, data: bytes | None = None
    ) -> int:
        """Await the ack and return the stream sequence; retry transient failures with the
        same message id (``attempts`` 0 = until it works). ``data``: the event already encoded."""
        subject, headers = subject_for(event), headers_for(event)
        data = data if data is not None else encode(event)
        tries = 0
        while True:
            tries += 1
            try:
                conn = self._conn()
                if conn is None:
                    ack = await self.js.publish(subject, data, timeout=timeout, headers=headers)
                    return int(ack.seq)
                # a connection's reader expires it (``Conn.expire``): no timer per publish
                return await conn.publish_acked(subject, data, event.id, timeout)
            except (*TRANSIENT, Unreachable) as exc:
                if attempts and tries >= attempts:
                    raise
                if tries == 2:  # once per event: cut off, or the stream electing a leader
                    log.warning("no ack from JetStream; retrying", subject=subject[:200], error=type(exc).__name__)
                await asyncio.sleep(min(2.0, 0.1 * tries))


def position(msg: Msg) -> tuple[int, int]:
    """(stream sequence, messages pending) of a JetStream message (see ``delivery``)."""
    seq, pending, _ = delivery(msg)
    return seq, pending


def delivery(msg: Msg) -> tuple[int, int, float]:
    """(stream sequence, messages pending, the server's time of the message in seconds),
    read straight from its ack subject: ``$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.
    <cseq>.<ts>.<pending>``, or the 12-token form with domain and account hash. nats-py's
    ``msg.metadata`` builds objects and datetimes we do not need, at a cost that shows at
    10k messages/s."""
    tokens = (msg.reply or "").split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[8]), int(tokens[7]) / 1e9
    if len(tokens) >= 11:
        return int(tokens[7]), int(tokens[10]), int(tokens[9]) / 1e9
    meta = msg.metadata
    return meta.sequence.stream, meta.num_pending, meta.timestamp.timestamp() if meta.timestamp else 0.0


MsgHandler = Callable[[Msg], Awaitable[None]]


# How long reading the log waits for a JetStream that does not answer: a cluster electing
# its meta leader leaves API requests unanswered (or 503) for seconds; a coordinator
# starting then, or a replay, waits it out instead of failing.
JS_API_WAIT_S = 60.0
UNAVAILABLE = (*TRANSIENT, ServiceUnavailableError, nats.errors.NoRespondersError)


async def answered(call: Callable[[], Awaitable[T]], what: str, **fields: Any) -> T:
    """``call()``, asked again every half second while JetStream does not answer (see
    ``JS_API_WAIT_S``), saying so once; after that, its error."""
    deadline = asyncio.get_running_loop().time() + JS_API_WAIT_S
    warned = False
    while True:
        try:
            return await call()
        except UNAVAILABLE as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            if not warned:
                log.warning(f"jetstream did not answer {what}; retrying", error=type(exc).__name__, **fields)
                warned = True
            await asyncio.sleep(0.5)


async def follow(
    js: JetStreamContext,
    stream: str,
    handler: MsgHandler,
    *,
    filters: list[str] | None = None,
    start_seq: int = 1,
) -> Any:
    """An ordered push consumer from ``start_seq``: no acks, gap-free, recreated by the
    client after a server restart. Resuming position is the caller's job (a checkpoint).
    Creating it is retried while JetStream does not answer (see ``JS_API_WAIT_S``)."""
    subject = filters[0] if filters else ">"

    async def subscribe() -> Any:
        config = ConsumerConfig(  # fresh each try: nats-py fills in the one it is given
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if start_seq > 1 else DeliverPolicy.ALL,
            opt_start_seq=start_seq if start_seq > 1 else None,
            filter_subjects=filters if filters and len(filters) > 1 else None,
            max_ack_pending=-1,
        )
        return await js.subscribe(
            subject,
            stream=stream,
            cb=handler,
            ordered_consumer=True,
            config=config,
            idle_heartbeat=2.0,
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )

    return await answered(subscribe, "a consumer creation", stream=stream)
