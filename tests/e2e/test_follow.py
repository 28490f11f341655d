"""The lean live follower (edge.follow) against a real operator-mode nats-server: every
message once and in order, from a start sequence and with filters; core subscriptions on
the same connection; a consumer deleted under it, a server killed and started again on the
same store, and a connection the server drops are ridden out with nothing lost or doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import nats
import pytest
from nats.js.api import StreamConfig

from edge.bus import Publisher
from edge.config import Target, resolve
from edge.errors import Unreachable
from edge.follow import STALL_S, Follower
from edge.wire import Record
from events.node import NodeDrained
from events.subjects import subject_for
from tests.cluster import Server

pytestmark = pytest.mark.slow

STREAM = "FOLLOW"


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("follow")).start()
    yield srv
    srv.stop()


def target(server: Server) -> Target:
    return resolve(
        server.url,
        "coordinator",
        server.directory,
        name="coordinator",
        creds=server.creds("coordinator", "coordinator"),
    )


@asynccontextmanager
async def following(*args: Any, **options: Any) -> AsyncIterator[Follower]:
    """A started ``Follower(*args, **options)``, closed on the way out."""
    follower = Follower(*args, **options)
    await follower.start()
    try:
        yield follower
    finally:
        await follower.close()


class Seen:
    def __init__(self) -> None:
        self.records: list[Record] = []
        self.core: list[tuple[str, bytes]] = []

    def on_records(self, batch: list[Record]) -> None:
        self.records.extend(batch)

    def on_core(self, batch: list[tuple[str, bytes]]) -> None:
        self.core.extend(batch)

    async def until(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.records) < count:
            assert time.monotonic() < deadline, f"{len(self.records)} of {count} records arrived"
            await asyncio.sleep(0.02)


async def publish(server: Server, start: int, count: int, subject: str = "hive.fw.a") -> None:
    nc = await nats.connect(server.url, **server.options("coordinator", "coordinator"))
    js = nc.jetstream(timeout=30)
    await js.add_stream(StreamConfig(name=STREAM, subjects=["hive.fw.>"]))
    acks = [await js.publish_async(subject, str(i).encode()) for i in range(start, start + count)]
    await asyncio.gather(*acks)
    await nc.close()


def payloads(seen: Seen) -> list[int]:
    return [int(data) for _, _, data, _ in seen.records]


async def test_follows_from_a_sequence_with_filters_and_core_subjects(server: Server) -> None:
    await publish(server, 0, 500)
    await publish(server, 500, 100, subject="hive.fw.b")
    seen = Seen()
    async with following(
        target(server),
        STREAM,
        seen.on_records,
        start_seq=101,
        filters=["hive.fw.a"],
        subs={"hive.core.*": seen.on_core},
    ):
        await seen.until(400)
        await publish(server, 600, 300)  # live, after the start
        await seen.until(700)
        assert payloads(seen) == list(range(100, 500)) + list(range(600, 900))
        assert [seq for seq, *_ in seen.records] == list(range(101, 501)) + list(range(601, 901))
        nc = await nats.connect(server.url, **server.options("coordinator", "coordinator"))
        for i in range(50):
            await nc.publish(f"hive.core.{i}", b"beat")
        await nc.flush()
        await nc.close()
        for _ in range(200):
            if len(seen.core) == 50:
                break
            await asyncio.sleep(0.02)
        assert [subject for subject, _ in seen.core] == [f"hive.core.{i}" for i in range(50)]


async def test_a_deleted_consumer_is_made_again_where_it_left_off(server: Server) -> None:
    await publish(server, 0, 200)
    seen = Seen()
    async with following(target(server), STREAM, seen.on_records) as follower:
        await seen.until(200)
        nc = await nats.connect(server.url, **server.options("coordinator", "coordinator"))
        js = nc.jetstream(timeout=30)
        infos = await js.consumers_info(STREAM)
        assert len(infos) == 1
        await js.delete_consumer(STREAM, infos[0].config.name or infos[0].name)
        await nc.close()
        await publish(server, 200, 300)
        await seen.until(500)
        await asyncio.sleep(0.5)
        assert payloads(seen) == list(range(500)), "nothing lost, nothing twice"
        assert follower.recreated + follower.reconnects >= 1


async def test_a_server_restart_is_ridden_out(server: Server) -> None:
    await publish(server, 0, 300)
    seen = Seen()
    reconnected = []
    async with following(
        target(server),
        STREAM,
        seen.on_records,
        subs={"hive.core.x": seen.on_core},
        on_reconnect=lambda: reconnected.append(1),
    ):
        await seen.until(300)
        server.kill()
        await asyncio.sleep(1.0)
        server.start()
        await publish(server, 300, 300)
        await seen.until(600, timeout=60)
        await asyncio.sleep(0.5)
        assert payloads(seen) == list(range(600))
        assert reconnected, "the reconnect was reported (the coordinator's grace period hangs on it)"
        # the core subscription was made again on the new connection
        nc = await nats.connect(server.url, **server.options("coordinator", "coordinator"))
        for _ in range(100):
            await nc.publish("hive.core.x", b"again")
            await nc.flush()
            if seen.core:
                break
            await asyncio.sleep(0.05)
        await nc.close()
        assert seen.core and seen.core[0] == ("hive.core.x", b"again")


async def test_a_silent_server_is_left_for_a_new_connection(server: Server) -> None:
    """No byte for STALL_S (a stopped server, or a partition, keeps the socket open): the
    follower gives that connection up and makes a new one once the server answers."""
    await publish(server, 0, 10)
    seen = Seen()
    async with following(target(server), STREAM, seen.on_records) as follower:
        await seen.until(10)
        first = follower.conn
        assert server.server.proc is not None
        os.kill(server.server.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(STALL_S + 2)
        finally:
            os.kill(server.server.proc.pid, signal.SIGCONT)
        await publish(server, 10, 10)
        await seen.until(20, timeout=30)
        assert payloads(seen) == list(range(20))
        assert follower.reconnects >= 1 and follower.conn is not first


async def test_a_failing_sink_gets_the_batch_again(server: Server) -> None:
    """A bug in what the follower hands on to must not end the follow, nor lose the batch."""
    await publish(server, 0, 50)
    seen = Seen()
    failures = []

    def flaky(batch: list[Record]) -> None:
        if not failures:
            failures.append(len(batch))
            raise RuntimeError("a sink's bug")
        seen.on_records(batch)

    async with following(target(server), STREAM, flaky):
        await seen.until(50)
        await publish(server, 50, 10)
        await seen.until(60)
        assert failures and payloads(seen) == list(range(60))


async def test_publishes_on_the_followers_connection_are_acknowledged_and_deduplicated(server: Server) -> None:
    """edge.bus.Publisher with ``lean``: acks read by the follower's parse loop; a retry with
    the same id is the same message; a subject no stream holds fails as worth a retry."""
    await publish(server, 0, 1)
    seen = Seen()
    async with following(target(server), STREAM, seen.on_records) as follower:
        conn = follower.publishing()
        assert conn is not None
        first = await asyncio.wait_for(conn.publish_acked("hive.fw.a", b"1", "id-1"), 5)
        again = await asyncio.wait_for(conn.publish_acked("hive.fw.a", b"1", "id-1"), 5)
        assert first == again == 2, "the server deduplicated the retry by its Nats-Msg-Id"
        futures = [conn.publish_acked("hive.fw.a", str(i).encode(), f"burst-{i}") for i in range(2, 502)]
        assert await asyncio.gather(*futures) == list(range(3, 503))
        with pytest.raises(Unreachable, match="no responders"):
            await asyncio.wait_for(conn.publish_acked("hive.nostream.x", b"x", "id-x"), 5)
        await seen.until(502)
        assert payloads(seen) == list(range(502)), "each published once, delivered once"
        pending = conn.publish_acked("hive.fw.a", b"late", "id-late")
        conn.fail_acks("gone")
        if not pending.done() or pending.exception() is not None:
            with pytest.raises(Unreachable):
                await pending


async def test_an_ack_that_never_comes_times_out(server: Server) -> None:
    """``publish_acked`` with a timeout (``Publisher.publish_reliably``'s): the follower's
    reads expire it, with no timer per publish; an ack that came in time stays as it was."""
    await publish(server, 0, 1)
    silent = await nats.connect(server.url, **server.options("coordinator", "coordinator"))

    async def hear(msg: object) -> None:  # a listener, so no "no responders"; it never acks
        pass

    await silent.subscribe("hive.fwsilent.>", cb=hear)
    await silent.flush()
    try:
        async with following(target(server), STREAM, Seen().on_records) as follower:
            conn = follower.publishing()
            assert conn is not None
            lost = conn.publish_acked("hive.fwsilent.x", b"x", "id-silent", timeout=0.5)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(lost, 10)  # (a safety net: the follower expires it first)
            assert not conn.acks and not conn.expiring
            answered = conn.publish_acked("hive.fw.a", b"in time", "id-in-time", timeout=0.5)
            assert await asyncio.wait_for(answered, 10) >= 2
            await asyncio.sleep(1.5)  # past its deadline: expiring an answered ack changes nothing
            assert answered.result() >= 2 and not conn.expiring
    finally:
        await silent.close()


async def test_the_publisher_rides_out_a_server_restart_on_the_lean_connection(server: Server) -> None:
    await publish(server, 0, 1)
    nc = await nats.connect(server.url, **server.options("coordinator", "coordinator"))
    seen = Seen()
    try:
        async with following(target(server), STREAM, seen.on_records) as follower:
            publisher = Publisher(nc.jetstream(timeout=10), lean=follower.publishing)
            events = [NodeDrained(node_id=f"n{i}", emitter="coordinator") for i in range(3)]
            subjects = [subject_for(e) for e in events]
            nc2 = await nats.connect(server.url, **server.options("coordinator", "coordinator"))
            await nc2.jetstream(timeout=30).add_stream(StreamConfig(name="FWNODES", subjects=["hive.node.>"]))
            await nc2.close()
            assert await publisher.publish_reliably(events[0]) == 1
            server.kill()
            await asyncio.sleep(0.5)
            server.start()
            # published while the follower reconnects: retried until a connection takes it
            assert await asyncio.wait_for(publisher.publish_reliably(events[1]), 60) == 2
            assert follower.reconnects >= 1
            await publisher.publish(events[2])
            assert await publisher.flush() == 0
            assert subjects[2].startswith("hive.node.n2.")
    finally:
        await nc.close()
