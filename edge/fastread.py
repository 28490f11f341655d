"""A lean JetStream reader for full reads of a stream (replays), beside nats-py, on the
lean protocol connection of ``edge.wire`` (why: its docstring). It hands the caller
batches of ``(seq, subject, data, ts)``, one per read.

The consumer is an ephemeral *push* consumer (no acks, flow control, idle heartbeats) with
its deliver subject in the user's inbox. A pull consumer would be the obvious choice, but
the reader roles (auditor, client, operator: ``hive replay`` connects as an auditor) may
not publish ``$JS.API.CONSUMER.MSG.NEXT`` nor delete consumers (edge/auth/roles.py): they
may create ephemeral consumers with the five-token ``$JS.API.CONSUMER.CREATE.<stream>``
and answer flow control (``$JS.FC.>``), which is what a push consumer needs. At the end the
reader unsubscribes and asks for the consumer's deletion; where the role may not, the
server deletes it itself ``INACTIVE_S`` after its deliver subject lost interest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from edge.config import Target
from edge.errors import Denied, HiveError, Unreachable
from edge.wire import Conn, Gap, Record, open_conn

BatchSink = Callable[[list[Record]], Awaitable[None] | None]
Sink = Callable[[int, str, bytes, float], Awaitable[None] | None]

HEARTBEAT_S = 1.0
INACTIVE_S = 2.0  # the server deletes the consumer this long after we stop listening
RESTARTS = 10  # consumers recreated after dropped deliveries before giving up


async def read_batches(
    target: Target,
    stream: str,
    sink: BatchSink,
    *,
    filters: list[str] | None = None,
    start_seq: int = 1,
    until_seq: int | None = None,
) -> int:
    """Feed ``sink(records)`` every message of ``stream`` matching ``filters`` from
    ``start_seq`` up to the stream's last sequence when the read starts (or ``until_seq``),
    in order, a batch per read; returns how many. The contract of
    ``edge.logread.read_stream`` (a missing stream or a filter outside the stream reads
    none), with a ``Target`` to connect to instead of a JetStream context."""
    conn = await open_conn(target)
    try:
        return await read_on(conn, stream, sink, filters=filters, start_seq=start_seq, until_seq=until_seq)
    finally:
        await conn.close()


async def read_on(
    conn: Conn,
    stream: str,
    sink: BatchSink,
    *,
    filters: list[str] | None = None,
    start_seq: int = 1,
    until_seq: int | None = None,
) -> int:
    """``read_batches`` on a connection already open (one read after another)."""
    conn.handed = 0
    return await _read(conn, stream, sink, filters, max(1, start_seq), until_seq)


async def read_stream(
    target: Target,
    stream: str,
    sink: Sink,
    *,
    filters: list[str] | None = None,
    start_seq: int = 1,
    until_seq: int | None = None,
) -> int:
    """``read_batches`` with ``sink(seq, subject, data, ts)`` per message."""

    async def each(batch: list[Record]) -> None:
        for seq, subject, data, ts in batch:
            result = sink(seq, subject, data, ts)
            if result is not None:
                await result

    return await read_batches(target, stream, each, filters=filters, start_seq=start_seq, until_seq=until_seq)


async def _read(
    conn: Conn, stream: str, sink: BatchSink, filters: list[str] | None, start: int, until_seq: int | None
) -> int:
    info = await conn.request(f"{conn.api}STREAM.INFO.{stream}")
    if error := info.get("error"):
        if error.get("code") in (400, 404):
            return 0
        raise HiveError(f"stream {stream}: {error.get('description')}")
    last = int(info["state"]["last_seq"])
    stop = min(last, until_seq) if until_seq is not None else last
    while start <= stop:
        if conn.consumers > RESTARTS:
            raise HiveError(f"reading stream {stream}: deliveries kept being dropped ({RESTARTS} restarts)")
        name, pending = await create_consumer(conn, stream, filters, start)
        if name is None:
            break
        try:
            await _deliveries(conn, sink, stop, pending)
            start = stop + 1
        except Gap:
            # a dropped delivery: start over after the last one handed on
            start = max(start, conn.last_seq + 1)
        finally:
            await _delete(conn, stream, name)
    return conn.handed


async def create_consumer(
    conn: Conn, stream: str, filters: list[str] | None, start: int
) -> tuple[str | None, int]:
    """A push consumer of ``stream`` from ``start`` delivering to this connection (its
    deliveries become ``conn.out``): its name and what it has pending, or (None, 0) where
    there is nothing to read (no such stream, a filter outside it); raises ``HiveError``
    with the server's reason for anything else."""
    # a fresh deliver subject each time: what a dropped consumer still had in flight goes nowhere
    conn.consumers += 1
    conn.dsid = str(conn.consumers).encode()
    conn.delivered, conn.out, conn.pending = 0, [], -1
    deliver = f"{conn.inbox}.d{conn.consumers}"
    conn.writer.write(f"SUB {deliver} {conn.consumers}\r\n".encode())
    config: dict[str, Any] = {
        "deliver_policy": "by_start_sequence" if start > 1 else "all",
        "ack_policy": "none",
        "max_deliver": 1,
        "replay_policy": "instant",
        "deliver_subject": deliver,
        "flow_control": True,
        "idle_heartbeat": int(HEARTBEAT_S * 1e9),
        "inactive_threshold": int(INACTIVE_S * 1e9),
        "mem_storage": True,
        "num_replicas": 1,
    }
    if start > 1:
        config["opt_start_seq"] = start
    if filters and len(filters) > 1:
        config["filter_subjects"] = filters
    elif filters:
        config["filter_subject"] = filters[0]
    answer = await conn.request(f"{conn.api}CONSUMER.CREATE.{stream}", {"stream_name": stream, "config": config})
    if error := answer.get("error"):
        if error.get("code") in (400, 404):  # no such stream, a filter outside it: nothing to read
            return None, 0
        raise HiveError(f"cannot read stream {stream}: {error.get('description')}")
    return str(answer["name"]), int(answer.get("num_pending", 0))


async def _deliveries(conn: Conn, sink: BatchSink, stop: int, pending: int) -> None:
    while pending:
        gap = False
        try:
            conn.parse()
        except Gap:
            gap = True  # what came before the gap is still good: hand it on first
        batch, conn.out = conn.out, []
        if batch:
            await _hand(sink, batch, stop, conn)
            if batch[-1][0] >= stop:
                return
        if gap:
            raise Gap
        conn.check()
        pending = conn.pending if conn.pending >= 0 else 1  # -1: no delivery yet
        if pending:
            await conn.fill()


async def _hand(sink: BatchSink, batch: list[Record], stop: int, conn: Conn) -> None:
    if batch[-1][0] > stop:
        batch = [record for record in batch if record[0] <= stop]
        if not batch:
            return
    conn.last_seq = batch[-1][0]
    conn.handed += len(batch)
    result = sink(batch)
    if result is not None:
        await result


async def _delete(conn: Conn, stream: str, name: str) -> None:
    """Stop the deliveries and delete the consumer where this user may (else the server
    does, ``INACTIVE_S`` after the unsubscribe); a failure here loses nothing."""
    conn.writer.write(b"UNSUB " + conn.dsid + b"\r\n")
    conn.dsid = b""
    conn.errors.clear()
    try:
        await conn.request(f"{conn.api}CONSUMER.DELETE.{stream}.{name}")
    except (Denied, Unreachable, HiveError):
        pass
    conn.errors.clear()
