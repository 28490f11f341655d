"""A live follow of a stream on the lean protocol connection (``edge.wire``), for the
coordinator, whose every event and every node's heartbeat arrives here.

Why not nats-py: its receive path costs 13-17 µs of CPU per message (a ``Msg`` object,
header parsing with a per-character check, a queue and a task hop per message), about
half of what the coordinator spends per event, and with 10,000 nodes heartbeating that
is what delays placements. ``Follower`` parses a whole read of frames in one loop and
hands the batch on at once.

What it keeps of nats-py's ordered consumer: an ephemeral push consumer without acks,
with flow control and idle heartbeats; a skipped delivery, or a heartbeat saying the
consumer delivered more than arrived, recreates it from the next sequence; a connection
that drops, or brings nothing for ``STALL_S`` (a partition: heartbeats come every
``edge.fastread.HEARTBEAT_S``), is opened again, on the next of the target's servers first, and the
consumer recreated where it left off, forever. Core subscriptions ride on the same
connection and are made again after a reconnect.

The same connection carries the service's JetStream publishes (``edge.bus.Publisher``
with ``lean=Follower.publishing``, ``Conn.publish_acked``): their acks are parsed by the
same loop, where nats-py spends a task hop and a ``PubAck`` per ack. While the follower
reconnects, publishes go through nats-py; acks awaited on a lost connection fail as worth
a retry, and a retry keeps its ``Nats-Msg-Id``, so the server keeps one copy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec
import structlog

from edge.config import Target
from edge.errors import Denied, HiveError, Unreachable
from edge.fastread import create_consumer
from edge.wire import Conn, Gap, Record, open_conn

log = structlog.get_logger("edge.follow")

STALL_S = 5.0
START_WAIT_S = 60.0  # the first consumer waits this long for JetStream (a cluster electing)
RETRY_S = 0.5

RecordSink = Callable[[list[Record]], None]
CoreSink = Callable[[list[tuple[str, bytes]]], None]


class Follower:
    """Follows ``stream`` from ``start_seq``: ``sink(records)`` per batch, in order, each
    record once; ``subs`` maps core subjects to ``sink(messages)``. Both sinks are plain
    functions called from the reader's task: they should only queue the work."""

    def __init__(
        self,
        target: Target,
        stream: str,
        sink: RecordSink,
        *,
        start_seq: int = 1,
        filters: list[str] | None = None,
        subs: dict[str, CoreSink] | None = None,
        name: str = "hive-follow",
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self.target = target
        self.stream = stream
        self.sink = sink
        self.next_seq = max(1, start_seq)
        self.filters = filters
        self.subs = list((subs or {}).items())
        self.sids = [f"s{i}".encode() for i in range(len(self.subs))]  # their subscription ids
        self.name = name
        self.on_reconnect = on_reconnect
        self.servers = target.url.split(",")
        self.conn: Conn | None = None
        self.task: asyncio.Task[None] | None = None
        self.reconnects = 0
        self.recreated = 0
        self.consumer: str | None = None  # the server's name of the current consumer
        self.up = False  # connected, with a consumer: publishes may use the connection

    async def start(self) -> None:
        """Connect and create the consumer (raises ``Unreachable``, or ``HiveError`` when
        JetStream refuses it for ``START_WAIT_S``), then follow in the background."""
        self.conn = await self._open(deadline=time.monotonic() + START_WAIT_S)
        self.up = True
        self.task = asyncio.create_task(self._run(), name=f"follow-{self.stream}")
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:  # a bug: say so, loudly
            log.error("the log's follower stopped", stream=self.stream, error=repr(task.exception())[:300])

    async def close(self) -> None:
        self.up = False
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.conn is not None:
            self.conn.fail_acks("the follower was closed")
            await self.conn.close()

    # -- the reader ------------------------------------------------------------------

    async def _run(self) -> None:
        conn = self.conn
        assert conn is not None
        recreate = False
        while True:
            # recovery happens here, in the loop, so that its own failures are handled alike
            try:
                if recreate:
                    await self._consume(conn, deadline=None)
                    recreate = False
                await self._read(conn)
            except Unreachable as exc:  # dropped or silent: another connection
                log.warning("lost the log's connection; reconnecting", stream=self.stream, error=str(exc)[:200])
                conn, recreate = await self._replace(conn), False
            except Denied as exc:  # a refused publish on this connection: its publisher times out
                log.error("the server refused a publish", error=str(exc)[:300])
            except (Gap, HiveError) as exc:  # a dropped delivery, or the server ended the consumer
                self.recreated += 1
                log.info("recreating the log's consumer", stream=self.stream, at=self.next_seq, error=str(exc)[:200])
                recreate = True
            except Exception:  # a sink's bug must not end the follow: what it failed on comes again
                log.exception("handing on the log failed; following again from the failed batch", at=self.next_seq)
                await asyncio.sleep(RETRY_S)
                conn, recreate = await self._replace(conn), False

    async def _replace(self, conn: Conn) -> Conn:
        self.up = False
        conn.fail_acks("the connection was lost before the publish was acknowledged")
        await conn.close()
        self.conn = await self._reopen()
        self.up = True
        return self.conn

    def publishing(self) -> Conn | None:
        """The connection to publish on now (``Conn.publish_acked``), or None while there is none."""
        return self.conn if self.up else None

    async def _read(self, conn: Conn) -> None:
        while True:
            gap = False
            try:
                conn.parse()
            except Gap:
                gap = True  # what came before the gap is good: hand it on first
            self._hand(conn)
            if gap:
                raise Gap
            conn.check()
            conn.expire(asyncio.get_running_loop().time())
            await conn.fill(STALL_S)

    def _hand(self, conn: Conn) -> None:
        for sid, (_, sink) in zip(self.sids, self.subs, strict=True):
            box = conn.subs[sid]
            if box:
                conn.subs[sid] = []
                sink(box)  # core NATS: at most once, like any core subscription
        if conn.out:
            batch, conn.out = conn.out, []
            self.sink(batch)
            self.next_seq = batch[-1][0] + 1  # only once handed on: a failed batch is read again

    # -- connecting -------------------------------------------------------------------

    async def _reopen(self) -> Conn:
        """A new connection, tried until one works; the first server tried is the next one."""
        while True:
            self.servers = self.servers[1:] + self.servers[:1]
            try:
                conn = await self._open(deadline=None)
            except (HiveError, Gap) as exc:
                log.debug("reconnect failed", stream=self.stream, error=str(exc)[:200])
                await asyncio.sleep(RETRY_S)
                continue
            self.reconnects += 1
            log.info("reconnected the log's connection", stream=self.stream, at=self.next_seq)
            if self.on_reconnect is not None:
                self.on_reconnect()
            return conn

    async def _open(self, deadline: float | None) -> Conn:
        conn = await open_conn(msgspec.structs.replace(self.target, url=",".join(self.servers)), self.name)
        try:
            for sid, (subject, _) in zip(self.sids, self.subs, strict=True):
                conn.subs[sid] = []
                conn.writer.write(f"SUB {subject} {sid.decode()}\r\n".encode())
            await self._consume(conn, deadline)
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _consume(self, conn: Conn, deadline: float | None) -> None:
        """A new consumer from ``next_seq``, asked for again while JetStream cannot make it
        (an election, a stream not made yet); until ``deadline``, or forever (None)."""
        warned = False
        while True:
            if conn.dsid:  # the last consumer's deliveries (or a failed try's) go nowhere now
                conn.writer.write(b"UNSUB " + conn.dsid + b"\r\n")
                conn.dsid = b""
            try:
                name, _ = await create_consumer(conn, self.stream, self.filters, self.next_seq)
                if name is not None:
                    self.consumer = name
                    return
                why = f"no stream {self.stream} yet"
            except Unreachable:
                raise
            except (HiveError, Gap) as exc:
                why = str(exc) or type(exc).__name__
            if deadline is not None and time.monotonic() > deadline:
                raise HiveError(f"cannot follow stream {self.stream}: {why}")
            if not warned:
                log.warning("jetstream did not make the log's consumer; retrying", stream=self.stream, error=why[:200])
                warned = True
            await asyncio.sleep(RETRY_S)
