"""The NATS client protocol on one asyncio connection, for the two places where nats-py
costs too much: full reads of a stream (``edge.fastread``) and the read commands
(``hive.reads``), which would spend ~65 ms of a 250 ms budget importing it.

nats-py spends 13-17 µs of CPU per received message (a Msg object, header parsing with a
per-character check, a queue and a task hop per message). ``Conn`` parses the MSG/HMSG
frames of a whole read (up to ``CHUNK`` bytes) in one loop; deliveries of the current
consumer (``dsid``) become records in ``out``, replies to requests (subscription ``r``) are
kept by reply subject. It connects as nats-py does: the same checked creds, inbox prefix
and TLS context (``edge.options.credentials``), the nonce signed with the creds' seed.

Protocol as nats-py 2.16 (nats/aio/client.py ``_connect_command``, ``_process_headers``,
``_process_msg``) and nats-server 2.15 (consumer.go: flow control, heartbeats, ack reply
subjects) speak it; tests/e2e/test_fastread.py and tests/e2e/test_reads.py hold it to a
real server.
"""

from __future__ import annotations

import asyncio
import base64
import heapq
import json
import secrets
import ssl
from typing import Any
from urllib.parse import urlsplit

import msgspec
import nkeys

from edge.auth.jwt import read_creds
from edge.config import Target
from edge.errors import BadCredentials, Denied, HiveError, Unreachable
from edge.options import JS_DOMAIN, credentials, explain

Record = tuple[int, str, bytes, float]  # (stream sequence, subject, payload, server time in s)

CHUNK = 1 << 20  # one read; a batch for the sink is what one read completed
STALL_S = 10.0  # no byte in this long (heartbeats come every second): the read is stuck
REQUEST_S = 5.0
CONNECT_S = 5.0

_REPLIES = b"r"  # the requests' subscription id; deliveries get 1, 2, ... (one per consumer)


class NoReply(Unreachable):
    """A request nobody answered in time."""


class Stalled(Unreachable):
    """Nothing at all came from the server in the time allowed."""


class Gap(Exception):
    """A delivery was skipped (the server dropped it): read again from the next sequence."""


class Conn:
    def __init__(self, target: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.target = target
        self.reader = reader
        self.writer = writer
        self.buf = b""
        self.pos = 0
        self.info: dict[str, Any] = {}
        self.errors: list[str] = []  # -ERR texts not yet looked at
        self.replies: dict[bytes, bytes | None] = {}  # reply subject -> payload (None: no responders)
        self.asked: set[bytes] = set()  # reply subjects a request waits on (ask)
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
        # core subscriptions by sid (edge.follow): their (subject, payload) messages, not yet handed on
        self.subs: dict[bytes, list[tuple[str, bytes]]] = {}
        self.acks: dict[bytes, asyncio.Future[int]] = {}  # reply subject -> a publish's ack (publish_acked)
        self.outgoing: list[bytes] = []  # publishes not yet written (publish_acked)
        self.expiring: list[tuple[float, bytes]] = []  # heap of (deadline, reply) of acks awaited with a timeout

    # -- I/O ------------------------------------------------------------------------

    async def fill(self, timeout: float = STALL_S) -> None:
        have = len(self.buf) - self.pos
        try:
            # (asyncio.timeout, not wait_for: on Python 3.11, wait_for loses a cancellation
            # that comes while its read is done already, as a read here almost always is, so
            # Ctrl-C or a service's stop went unheard while data kept coming)
            async with asyncio.timeout(timeout):
                if self.need > have + 65536:  # a big message: read it in one go, not join it piece by piece
                    chunk = await self.reader.readexactly(self.need - have)
                else:
                    chunk = await self.reader.read(CHUNK)
        except asyncio.IncompleteReadError:
            chunk = b""
        except TimeoutError:
            raise Stalled(f"{explain(self.target, 'no answer')}: nothing received in {timeout:.0f}s") from None
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
        """Raise the first -ERR that says something went wrong for us, once: the connection
        lives on after a refused publish, and the next request must not fail by it."""
        if self.errors:
            text = self.errors.pop(0)
            if "permissions violation" in text.lower():
                who = (read_creds(self.target.creds).claims.get("name") if self.target.creds else None) or "this user"
                raise Denied(f"the NATS server refused {who}: {text}")
            raise Unreachable(explain(self.target, text))

    async def ask(self, subject: str, payload: bytes = b"", timeout: float = REQUEST_S) -> bytes | None:
        """A request's reply, or None where nobody listens on ``subject`` (no responders)."""
        self.requests += 1
        reply = f"{self.inbox}.r.{self.requests}"
        self.pub(subject, payload, reply)
        key = reply.encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.asked.add(key)
        try:
            while key not in self.replies:
                self.parse()
                self.check()
                if key in self.replies:
                    break
                if loop.time() > deadline:
                    raise NoReply(f"{explain(self.target, 'no reply')}: {subject} unanswered in {timeout:.0f}s")
                try:
                    await self.fill(max(0.01, deadline - loop.time()))
                except Stalled:  # a quiet server until the deadline: nobody answered (checked above)
                    continue
            return self.replies.pop(key)
        finally:
            self.asked.discard(key)

    def publish_acked(
        self, subject: str, payload: bytes, msg_id: str, timeout: float | None = None
    ) -> asyncio.Future[int]:
        """Publish to JetStream with ``Nats-Msg-Id`` (the server dedupes a retry); the
        future gets the stream sequence of the ack, or ``Unreachable`` where no stream
        answered or the connection was lost (worth a retry), or ``HiveError`` (not), or,
        with ``timeout``, ``TimeoutError`` once the reader's ``expire`` finds it past due.
        (One heap for all, read by the loop that reads anyway: ``asyncio.wait_for`` on each
        ack cost a tenth of a node's CPU in timers, futures and callbacks.)"""
        self.requests += 1
        reply = f"{self.inbox}.r.{self.requests}"
        head = f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n\r\n".encode()
        loop = asyncio.get_running_loop()
        if not self.outgoing:  # one write per loop round: the publishes of a burst go out together
            loop.call_soon(self._write_out)
        self.outgoing += [f"HPUB {subject} {reply} {len(head)} {len(head) + len(payload)}\r\n".encode(), head, payload, b"\r\n"]
        future: asyncio.Future[int] = loop.create_future()
        key = reply.encode()
        self.acks[key] = future
        if timeout is not None:
            heapq.heappush(self.expiring, (loop.time() + timeout, key))
        return future

    def expire(self, now: float) -> None:
        """Fail with ``TimeoutError`` each ack still awaited past its ``publish_acked``
        timeout (``now``: the loop's clock). Whoever reads the connection calls this after
        each read; a follower reads at least once a second (the consumer's heartbeats)."""
        expiring = self.expiring
        while expiring and expiring[0][0] <= now:
            future = self.acks.pop(heapq.heappop(expiring)[1], None)
            if future is not None and not future.done():
                future.set_exception(TimeoutError("no ack in time"))

    def _write_out(self) -> None:
        outgoing, self.outgoing = self.outgoing, []
        if not self.writer.is_closing():
            self.writer.write(b"".join(outgoing))

    def fail_acks(self, why: str | Exception) -> None:
        """The connection is gone (or refused a publish: ``why`` the error itself): every
        ack still awaited fails, to be retried elsewhere."""
        error = why if isinstance(why, Exception) else Unreachable(why)
        acks, self.acks, self.expiring = self.acks, {}, []
        for future in acks.values():
            if not future.done():
                future.set_exception(error)

    async def request(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JetStream API request and its JSON answer."""
        data = await self.ask(subject, json.dumps(body).encode() if body is not None else b"")
        if data is None:
            raise HiveError(f"no JetStream answers {subject} for this account at {self.target.url}")
        answer: dict[str, Any] = json.loads(data)
        return answer

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass

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
                        if self.status(buf[start : start + hlen], reply):
                            self.pos, self.pending = pos, pending
                            raise Gap
                        continue
                    tokens = reply.split(b".")
                    if len(tokens) == 9:
                        seq, cseq, ts, pending = int(tokens[5]), int(tokens[6]), int(tokens[7]), int(tokens[8])
                    else:  # with domain and account hash
                        seq, cseq, ts, pending = int(tokens[7]), int(tokens[8]), int(tokens[9]), int(tokens[10])
                    if cseq != self.delivered + 1:
                        self.pos, self.pending = pos, pending
                        raise Gap
                    self.delivered = cseq
                    out.append((seq, parts[1].decode(), buf[start + hlen : start + size], ts / 1e9))
                elif sid == _REPLIES:
                    data = None if hlen and buf[start + 9 : start + 12] == b"503" else buf[start + hlen : start + size]
                    ack = self.acks.pop(parts[1], None)
                    if ack is not None:
                        _settle(ack, data)
                    elif parts[1] in self.asked:
                        self.replies[parts[1]] = data  # None: no responders
                    # else: a late answer nobody waits for any more, dropped (kept, such answers would pile up)
                elif (box := self.subs.get(sid)) is not None:
                    box.append((parts[1].decode(), buf[start + hlen : start + size]))
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

    def status(self, header: bytes, reply: bytes) -> bool:
        """A status message on the deliver subject: flow control or a heartbeat, answered
        as nats-py does (an empty publish to the FC subject, or to the one a heartbeat names
        in ``Nats-Consumer-Stalled``); anything else ends the read. True: the heartbeat
        says the consumer delivered more than we got (``Nats-Last-Consumer``), so the last
        deliveries were dropped, which no later delivery would reveal on a quiet stream."""
        code = header[9:12]
        if code == b"100":
            if reply:
                self.pub(reply.decode())
                return False
            gap = False
            for line in header.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip()
                if name == b"nats-consumer-stalled" and value:
                    self.pub(value.decode())
                elif name == b"nats-last-consumer" and value.isdigit():
                    gap = int(value) > self.delivered
            return gap
        first = header.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        raise HiveError(f"the server ended the read: {first}")


async def read_acks(conn: Conn) -> None:
    """Parse what arrives until the connection ends, for a connection that only publishes
    (``publish_acked``): each ack settles its future. When the connection is lost, or the
    server refuses a publish (a permissions violation), every ack still awaited fails with
    that reason, and so does this."""
    try:
        while True:
            await conn.fill(timeout=365 * 86400.0)  # an idle publisher hears nothing: not a stall
            conn.parse()
            conn.check()
            conn.expire(asyncio.get_running_loop().time())
    except (Unreachable, Denied) as exc:
        conn.fail_acks(exc)
        raise


class _AckError(msgspec.Struct):
    code: int = 0
    description: str = ""


class _Ack(msgspec.Struct):
    """A JetStream publish ack, or the error in its place (the rest of it is not read)."""

    seq: int = 0
    error: _AckError | None = None


# msgspec reads an ack in a third of json.loads' time: one ack per event published
_ack_decoder = msgspec.json.Decoder(_Ack)


def _settle(future: asyncio.Future[int], data: bytes | None) -> None:
    if future.done():
        return
    if data is None:
        future.set_exception(Unreachable("no stream answered the publish (no responders)"))
        return
    try:
        answer = _ack_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        future.set_exception(HiveError(f"a publish's ack that is not a JetStream ack: {data[:200]!r}"))
        return
    if (error := answer.error) is not None:
        kind = Unreachable if error.code == 503 else HiveError  # 503: JetStream unavailable for now
        future.set_exception(kind(f"the publish was refused: {error.description}"))
        return
    future.set_result(answer.seq)


async def open_conn(target: Target, name: str = "hive-fastread") -> Conn:
    options = credentials(target)  # the same checks, inbox prefix and TLS context as nats-py's connect
    context: ssl.SSLContext | None = options.get("tls")
    last = "no server URL"
    for url in target.url.split(","):
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
        try:
            async with asyncio.timeout(CONNECT_S):
                reader, writer = await asyncio.open_connection(host, port, limit=4 * CHUNK)
        except (OSError, TimeoutError) as exc:
            last = str(exc) or type(exc).__name__
            continue
        conn = Conn(target, reader, writer)
        try:
            await _handshake(conn, parts, host, context, options.get("inbox_prefix") or "_INBOX", name)
        except BaseException:
            writer.close()
            raise
        return conn
    raise Unreachable(explain(target, last))


async def _handshake(
    conn: Conn, url: Any, host: str, context: ssl.SSLContext | None, prefix: str, name: str
) -> None:
    while not conn.info:
        await conn.fill(CONNECT_S)
        conn.parse()
    if conn.info.get("tls_required") or url.scheme == "tls":
        # nats-server sends INFO in the clear, then expects the handshake (as nats-py does it)
        try:
            async with asyncio.timeout(CONNECT_S):
                await conn.writer.start_tls(context or ssl.create_default_context(), server_hostname=host)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            raise Unreachable(explain(conn.target, f"TLS: {exc}")) from None
    connect: dict[str, Any] = {
        "verbose": False,
        "pedantic": False,
        "lang": "python3",
        "version": name,
        "protocol": 1,
        "headers": True,
        "no_responders": True,
        "name": name,
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
