"""A lean JetStream reader for full reads of a stream (replays), beside nats-py.

nats-py spends 13-17 µs of CPU per received message (a Msg object, header parsing with a
per-character check, a queue and a task hop per message); a replay of a big log is bound
by that. This module speaks the NATS client protocol itself on one asyncio connection and
parses the MSG/HMSG frames of a whole read (up to ``CHUNK`` bytes) in one loop, handing the
caller batches of ``(seq, subject, data, ts)``.

The consumer is an ephemeral *push* consumer (no acks, flow control, idle heartbeats) with
its deliver subject in the user's inbox. A pull consumer would be the obvious choice, but
the reader roles (auditor, client, operator: ``hive replay`` connects as an auditor) may
not publish ``$JS.API.CONSUMER.MSG.NEXT`` nor delete consumers (edge/auth/roles.py): they
may create ephemeral consumers with the five-token ``$JS.API.CONSUMER.CREATE.<stream>``
and answer flow control (``$JS.FC.>``), which is what a push consumer needs. At the end the
reader unsubscribes and asks for the consumer's deletion; where the role may not, the
server deletes it itself ``INACTIVE_S`` after its deliver subject lost interest.

Protocol as nats-py 2.16 (nats/aio/client.py ``_connect_command``, ``_process_headers``,
``_process_msg``) and nats-server 2.15 (consumer.go: flow control, heartbeats, ack reply
subjects) speak it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import nkeys

from edge.auth.jwt import read_creds
from edge.bus import JS_DOMAIN, credentials, explain
from edge.config import Target
from edge.errors import BadCredentials, Denied, HiveError, Unreachable

Record = tuple[int, str, bytes, float]  # (stream sequence, subject, payload, server time in s)
BatchSink = Callable[[list[Record]], Awaitable[None] | None]
Sink = Callable[[int, str, bytes, float], Awaitable[None] | None]

CHUNK = 1 << 20  # one read; a batch for the sink is what one read completed
HEARTBEAT_S = 1.0
STALL_S = 10.0  # no byte in this long (heartbeats come every HEARTBEAT_S): the read is stuck
INACTIVE_S = 2.0  # the server deletes the consumer this long after we stop listening
REQUEST_S = 5.0
CONNECT_S = 5.0
RESTARTS = 10  # consumers recreated after dropped deliveries before giving up

_REPLIES = b"r"  # the requests' subscription id; deliveries get 1, 2, ... (one per consumer)


class _Gap(Exception):
    """A delivery was skipped (the server dropped it): read again from the next sequence."""


class _Conn:
    def __init__(self, target: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.target = target
        self.reader = reader
        self.writer = writer
        self.buf = b""
        self.pos = 0
        self.info: dict[str, Any] = {}
        self.errors: list[str] = []  # -ERR texts not yet looked at
        self.replies: dict[bytes, bytes] = {}  # reply subject -> payload (or b"503" status)
        self.pongs = 0
        self.inbox = ""
        self.api = "$JS.API."
        self.requests = 0
        self.dsid = b""  # the subscription of the current consumer's deliveries
        self.consumers = 0
        self.delivered = 0  # the consumer sequence of the last delivery
        self.out: list[Record] = []  # deliveries parsed, not yet handed on (some come before the create reply)
        self.pending = -1  # what the last delivery says is left (-1: none parsed yet)
        self.last_seq = 0  # the stream sequence of the last record handed on
        self.handed = 0
        self.need = 0  # the length of a frame only partly here

    # -- I/O ------------------------------------------------------------------------

    async def fill(self, timeout: float = STALL_S) -> None:
        have = len(self.buf) - self.pos
        try:
            if self.need > have + 65536:  # a big message: read it in one go, not join it piece by piece
                chunk = await asyncio.wait_for(self.reader.readexactly(self.need - have), timeout)
            else:
                chunk = await asyncio.wait_for(self.reader.read(CHUNK), timeout)
        except asyncio.IncompleteReadError:
            chunk = b""
        except TimeoutError:
            raise Unreachable(f"{explain(self.target, 'no answer')}: nothing received in {timeout:.0f}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise Unreachable(explain(self.target, str(exc) or type(exc).__name__)) from None
        if not chunk:
            raise Unreachable(explain(self.target, self.errors[-1] if self.errors else "connection closed"))
        # keep the unparsed tail; a frame bigger than CHUNK is joined over a few reads
        self.buf = self.buf[self.pos :] + chunk if self.pos < len(self.buf) else chunk
        self.pos = 0

    def pub(self, subject: str, payload: bytes = b"", reply: str = "") -> None:
        head = f"PUB {subject} {reply} {len(payload)}\r\n" if reply else f"PUB {subject} {len(payload)}\r\n"
        self.writer.write(head.encode() + payload + b"\r\n")

    def check(self) -> None:
        """Raise the first -ERR that says something went wrong for us."""
        for text in self.errors:
            if "permissions violation" in text.lower():
                who = (read_creds(self.target.creds).claims.get("name") if self.target.creds else None) or "this user"
                raise Denied(f"the NATS server refused {who}: {text}")
            raise Unreachable(explain(self.target, text))

    async def request(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        self.requests += 1
        reply = f"{self.inbox}.r.{self.requests}"
        self.pub(subject, json.dumps(body).encode() if body is not None else b"", reply)
        key = reply.encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REQUEST_S
        while key not in self.replies:
            self.parse()
            self.check()
            if key in self.replies:
                break
            if loop.time() > deadline:
                raise Unreachable(f"{explain(self.target, 'no reply')}: {subject} unanswered in {REQUEST_S:.0f}s")
            await self.fill(max(0.01, deadline - loop.time()))
        data = self.replies.pop(key)
        if data == b"503":
            raise HiveError(f"no JetStream answers {subject} for this account at {self.target.url}")
        answer: dict[str, Any] = json.loads(data)
        return answer

    # -- frames ---------------------------------------------------------------------

    def parse(self) -> None:
        """Handle every complete frame in the buffer; deliveries go to ``out`` as records,
        what the last one says is left to ``pending``."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        find = buf.find
        out = self.out
        pending = self.pending
        self.need = 0
        while True:
            eol = find(b"\r\n", pos)
            if eol < 0:
                break
            op = buf[pos : pos + 4]
            if op == b"HMSG" or op == b"MSG ":
                parts = buf[pos:eol].split(b" ")
                if op == b"HMSG":
                    hlen, size = int(parts[-2]), int(parts[-1])
                else:
                    hlen, size = 0, int(parts[-1])
                start = eol + 2
                if start + size + 2 > end:
                    self.need = start + size + 2 - pos  # the payload is not all here yet
                    break
                pos = start + size + 2
                sid = parts[2]
                reply = parts[3] if len(parts) == (6 if op == b"HMSG" else 5) else b""
                if sid == self.dsid:
                    if hlen and buf[start + 8 : start + 9] == b" ":  # "NATS/1.0 100 ...": a status
                        self.status(buf[start : start + hlen], reply)
                        continue
                    tokens = reply.split(b".")
                    if len(tokens) == 9:
                        seq, cseq, ts, pending = int(tokens[5]), int(tokens[6]), int(tokens[7]), int(tokens[8])
                    else:  # with domain and account hash
                        seq, cseq, ts, pending = int(tokens[7]), int(tokens[8]), int(tokens[9]), int(tokens[10])
                    if cseq != self.delivered + 1:
                        self.pos, self.pending = pos, pending
                        raise _Gap
                    self.delivered = cseq
                    out.append((seq, parts[1].decode(), buf[start + hlen : start + size], ts / 1e9))
                elif sid == _REPLIES:
                    if hlen and buf[start + 9 : start + 12] == b"503":
                        self.replies[parts[1]] = b"503"  # no responders: no JetStream here
                    else:
                        self.replies[parts[1]] = buf[start + hlen : start + size]
                continue
            line = buf[pos:eol]
            pos = eol + 2
            if line == b"PING":
                self.writer.write(b"PONG\r\n")
            elif line == b"PONG":
                self.pongs += 1
            elif line.startswith(b"-ERR"):
                self.errors.append(line[4:].strip().strip(b"'").decode("utf-8", "replace"))
            elif line.startswith(b"INFO "):
                self.info = json.loads(line[5:])
            # +OK and anything else: nothing to do
        self.pos = pos
        self.pending = pending

    def status(self, header: bytes, reply: bytes) -> None:
        """A status message on the deliver subject: flow control or a heartbeat, answered
        as nats-py does (an empty publish to the FC subject, or to the one a heartbeat names
        in ``Nats-Consumer-Stalled``); anything else ends the read."""
        code = header[9:12]
        if code == b"100":
            if reply:
                self.pub(reply.decode())
            else:
                for line in header.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"nats-consumer-stalled" and value.strip():
                        self.pub(value.strip().decode())
            return
        first = header.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        raise HiveError(f"the server ended the read: {first}")


async def _open(target: Target) -> _Conn:
    options = credentials(target)  # the same checks, inbox prefix and TLS context as nats-py's connect
    context: ssl.SSLContext | None = options.get("tls")
    last = "no server URL"
    for url in target.url.split(","):
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=4 * CHUNK), CONNECT_S)
        except (OSError, TimeoutError) as exc:
            last = str(exc) or type(exc).__name__
            continue
        conn = _Conn(target, reader, writer)
        try:
            await _handshake(conn, parts, host, context, options.get("inbox_prefix") or "_INBOX")
        except BaseException:
            writer.close()
            raise
        return conn
    raise Unreachable(explain(target, last))


async def _handshake(conn: _Conn, url: Any, host: str, context: ssl.SSLContext | None, prefix: str) -> None:
    while not conn.info:
        await conn.fill(CONNECT_S)
        conn.parse()
    if conn.info.get("tls_required") or url.scheme == "tls":
        # nats-server sends INFO in the clear, then expects the handshake (as nats-py does it)
        try:
            await asyncio.wait_for(
                conn.writer.start_tls(context or ssl.create_default_context(), server_hostname=host), CONNECT_S
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise Unreachable(explain(conn.target, f"TLS: {exc}")) from None
    connect: dict[str, Any] = {
        "verbose": False,
        "pedantic": False,
        "lang": "python3",
        "version": "hive-fastread",
        "protocol": 1,
        "headers": True,
        "no_responders": True,
        "name": "hive-fastread",
    }
    if conn.target.creds:
        try:
            creds = read_creds(conn.target.creds)
        except ValueError as exc:
            raise BadCredentials(str(exc)) from None
        connect["jwt"] = creds.jwt
        if "nonce" in conn.info:
            signed = nkeys.from_seed(creds.seed.encode()).sign(conn.info["nonce"].encode())
            connect["sig"] = base64.b64encode(signed).decode()
    elif url.username:
        connect.update({"user": url.username, "pass": url.password} if url.password else {"auth_token": url.username})
    conn.writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
    while not conn.pongs:
        conn.parse()
        conn.check()
        if conn.pongs:
            break
        await conn.fill(CONNECT_S)
    if not conn.info.get("jetstream"):
        conn.api = f"$JS.{JS_DOMAIN}.API."  # a leaf server: JetStream is the hub's (edge.bus._Client)
    conn.inbox = f"{prefix}.{secrets.token_hex(8)}"
    conn.writer.write(f"SUB {conn.inbox}.r.* r\r\n".encode())


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
    conn = await _open(target)
    try:
        return await _read(conn, stream, sink, filters, max(1, start_seq), until_seq)
    finally:
        conn.writer.close()
        try:
            await conn.writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


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
    conn: _Conn, stream: str, sink: BatchSink, filters: list[str] | None, start: int, until_seq: int | None
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
        name, pending = await _create(conn, stream, filters, start)
        if name is None:
            break
        try:
            await _deliveries(conn, sink, stop, pending)
            start = stop + 1
        except _Gap:
            # a dropped delivery: start over after the last one handed on
            start = max(start, conn.last_seq + 1)
        finally:
            await _delete(conn, stream, name)
    return conn.handed


async def _create(conn: _Conn, stream: str, filters: list[str] | None, start: int) -> tuple[str | None, int]:
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


async def _deliveries(conn: _Conn, sink: BatchSink, stop: int, pending: int) -> None:
    while pending:
        gap = False
        try:
            conn.parse()
        except _Gap:
            gap = True  # what came before the gap is still good: hand it on first
        batch, conn.out = conn.out, []
        if batch:
            await _hand(sink, batch, stop, conn)
            if batch[-1][0] >= stop:
                return
        if gap:
            raise _Gap
        conn.check()
        pending = conn.pending if conn.pending >= 0 else 1  # -1: no delivery yet
        if pending:
            await conn.fill()


async def _hand(sink: BatchSink, batch: list[Record], stop: int, conn: _Conn) -> None:
    if batch[-1][0] > stop:
        batch = [record for record in batch if record[0] <= stop]
        if not batch:
            return
    conn.last_seq = batch[-1][0]
    conn.handed += len(batch)
    result = sink(batch)
    if result is not None:
        await result


async def _delete(conn: _Conn, stream: str, name: str) -> None:
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
