"""The lean connection's frame parser (edge.wire) on hand-made frames (the e2e test reads a real server):
frames split at every byte, status messages answered, a dropped delivery noticed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from edge import wire
from edge.config import Target


class Writer:
    def __init__(self) -> None:
        self.sent = b""

    def write(self, data: bytes) -> None:
        self.sent += data


def conn() -> wire.Conn:
    c = wire.Conn(Target("nats://127.0.0.1:1"), None, Writer())  # type: ignore[arg-type]  # no I/O here
    c.dsid = b"1"
    return c


def delivery(seq: int, cseq: int, pending: int, data: bytes, headers: bool = True) -> bytes:
    reply = f"$JS.ACK.S.c.1.{seq}.{cseq}.{seq * 1_000_000_000}.{pending}"
    if not headers:
        return f"MSG hive.x.{seq} 1 {reply} {len(data)}\r\n".encode() + data + b"\r\n"
    head = b"NATS/1.0\r\nNats-Msg-Id: m\r\n\r\n"
    return f"HMSG hive.x.{seq} 1 {reply} {len(head)} {len(head) + len(data)}\r\n".encode() + head + data + b"\r\n"


def status(text: str, reply: str = "", extra: str = "") -> bytes:
    head = f"NATS/1.0 {text}\r\n{extra}\r\n".encode()
    return f"HMSG _INBOX.u.x.d1 1 {reply} {len(head)} {len(head)}\r\n".replace("  ", " ").encode() + head + b"\r\n"


def stream() -> tuple[bytes, list[wire.Record]]:
    frames, want = [b"PING\r\n"], []
    for i in range(1, 8):
        data = bytes([i]) * (i * 37) + b"\r\n MSG x"  # a payload that looks like frames
        frames.append(delivery(i, i, 7 - i, data, headers=i % 2 == 0))
        want.append((i, f"hive.x.{i}", data, float(i)))
        if i == 3:
            frames.append(status("100 FlowControl Request", reply="$JS.FC.S.x.1"))
        if i == 5:
            frames.append(status("100 Idle Heartbeat", extra="Nats-Consumer-Stalled: $JS.FC.S.y.2\r\n"))
    return b"".join(frames), want


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 50, 4096])
def test_frames_split_anywhere(cut: int) -> None:
    data, want = stream()
    c = conn()
    for i in range(0, len(data), cut):
        c.buf = c.buf[c.pos :] + data[i : i + cut]
        c.pos = 0
        c.parse()
    assert c.out == want
    assert c.pending == 0 and c.pos == len(c.buf)
    sent: Any = c.writer.sent  # type: ignore[attr-defined]
    assert sent == b"PONG\r\nPUB $JS.FC.S.x.1 0\r\n\r\nPUB $JS.FC.S.y.2 0\r\n\r\n"


def test_a_dropped_delivery_is_a_gap() -> None:
    c = conn()
    c.buf = delivery(1, 1, 5, b"a") + delivery(3, 3, 3, b"c")
    with pytest.raises(wire.Gap):
        c.parse()
    assert [r[0] for r in c.out] == [1]


def test_a_status_that_ends_the_read() -> None:
    c = conn()
    c.buf = status("409 Consumer Deleted")
    with pytest.raises(wire.HiveError, match="409 Consumer Deleted"):
        c.parse()


def test_a_late_answer_to_a_request_given_up_is_dropped() -> None:
    c = conn()
    waited = b"_INBOX.u.x.r.1"
    c.asked.add(waited)  # what ask() does while it waits
    c.buf = f"MSG {waited.decode()} r 2\r\nok\r\nMSG _INBOX.u.x.r.2 r 4\r\nlate\r\n".encode()
    c.parse()
    assert c.replies == {waited: b"ok"}  # the second one, which nobody waits for (any more), is not kept


@pytest.mark.parametrize(
    ("ack", "outcome"),
    [
        (b'{"stream":"HIVE_AUDIT","seq":42}', 42),
        (b'{"stream":"HIVE_AUDIT","seq":42,"duplicate":true}', 42),  # a retry the server deduped
        (b'{"error":{"code":503,"err_code":10077,"description":"JetStream not enabled"}}', wire.Unreachable),
        (b'{"error":{"code":400,"description":"maximum payload exceeded"}}', wire.HiveError),
        (b"not json", wire.HiveError),
        (b'{"seq":"42"}', wire.HiveError),
        (None, wire.Unreachable),  # no responders: no stream takes the subject
    ],
)
async def test_a_publish_ack_settles_its_future(ack: bytes | None, outcome: Any) -> None:
    future: Any = asyncio.get_running_loop().create_future()
    wire._settle(future, ack)
    if isinstance(outcome, int):
        assert future.result() == outcome
    else:
        with pytest.raises(outcome):
            future.result()
        # an Unreachable is worth a retry elsewhere; any other refusal is not
        assert isinstance(future.exception(), wire.Unreachable) == (outcome is wire.Unreachable)


def test_a_read_that_always_has_data_still_hears_its_cancellation() -> None:
    """A replay or a follower reads a connection that is never idle; a stop (Ctrl-C, a
    service's SIGTERM) cancels the reading task. On Python 3.11 ``asyncio.wait_for`` around
    each read lost such a cancellation whenever the read was already done, and the read
    went on. Over a real socket that a server keeps full, every one of 20 cancellations
    must end its reader."""

    async def main() -> int:
        async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    writer.write(b"+OK\r\n" * 20_000)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                writer.close()

        server = await asyncio.start_server(flood, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        heard = 0
        try:
            for _ in range(20):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                c = wire.Conn(Target(f"nats://127.0.0.1:{port}"), reader, writer)

                stop = asyncio.Event()

                async def spin(c: wire.Conn = c, stop: asyncio.Event = stop) -> None:
                    while not stop.is_set():
                        await c.fill()
                        c.pos = len(c.buf)  # (consumed)

                task = asyncio.create_task(spin())
                await asyncio.sleep(0.05)
                task.cancel()
                await asyncio.wait([task], timeout=1.0)
                if task.cancelled():
                    heard += 1
                stop.set()  # (a reader that did not hear it ends here)
                await asyncio.wait([task], timeout=5.0)
                writer.close()
        finally:
            server.close()
        return heard

    assert asyncio.run(main()) == 20
