"""The lean JetStream reader (edge.fastread) against a real operator-mode nats-server: it
reads exactly what nats-py (edge.logread.read_stream) reads, over plain TCP and TLS, with
filters and bounds, across frame and read boundaries; it fails with one error, not a hang,
where the server refuses the user; and it leaves no consumer behind."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from edge import fastread, wire
from edge.auth import issue_user, jwt, keys, push_account, revoke_user
from edge.bus import delivery
from edge.config import Target, auth_dir, resolve
from edge.errors import Denied, HiveError, Unreachable
from edge.logread import read_stream
from events.subjects import AUDIT_STREAM
from events.task import TaskSpec
from hive.client import HiveClient
from tests.cluster import Server, coordinator, hive, node

pytestmark = pytest.mark.slow

STREAM, EMPTY = "FR", "FREMPTY"
# sizes that put frame ends everywhere relative to the 1 MiB reads, including messages
# bigger than one read; None: published without headers (a MSG frame, not HMSG)
SIZES = [0, 1, 7, 100, 1000, 65_535, 65_536, 200_000, 1_000_000, 1_048_000, 3, 523_456]


def payload(i: int) -> bytes:
    size = SIZES[i % len(SIZES)] if i % 97 == 0 or i < 2 * len(SIZES) else 50 + (i * 37) % 900
    return (f"{i}:".encode() + bytes(range(256)) * (size // 256 + 1))[:size]


COUNT = 4000
NOOP = TaskSpec(executor="function", type="noop")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("fastread")).start()
    yield srv
    srv.stop()


def target(server: Server, role: str = "coordinator", name: str = "coordinator") -> Target:
    return resolve(server.url, role, server.directory, name=name, creds=server.creds(role, name))


async def raw(server: Server, role: str = "coordinator", name: str = "coordinator", **extra: Any) -> Client:
    return await nats.connect(server.url, **server.options(role, name), allow_reconnect=False, **extra)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def log(server: Server) -> AsyncIterator[Client]:
    nc = await raw(server)
    js = nc.jetstream(timeout=30)
    await js.add_stream(StreamConfig(name=STREAM, subjects=["hive.fr.>"], max_msg_size=-1))
    await js.add_stream(StreamConfig(name=EMPTY, subjects=["hive.frempty.>"]))
    acks = []
    for i in range(COUNT):
        subject = f"hive.fr.{'ab'[i % 2]}.{i % 5}"
        headers = None if i % 3 == 0 else {"Nats-Msg-Id": f"m-{i}"}
        acks.append(await js.publish_async(subject, payload(i), headers=headers))
    await asyncio.gather(*acks)
    yield nc
    await nc.close()


async def natspy(nc: Client, stream: str, **options: Any) -> list[fastread.Record]:
    got: list[fastread.Record] = []

    def sink(seq: int, msg: Msg) -> None:
        got.append((seq, msg.subject, msg.data, delivery(msg)[2]))

    await read_stream(nc.jetstream(), stream, sink, **options)
    return got


async def lean(t: Target, stream: str, **options: Any) -> list[fastread.Record]:
    got: list[fastread.Record] = []
    count = await fastread.read_batches(t, stream, got.extend, **options)
    assert count == len(got)
    return got


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"filters": ["hive.fr.a.>"]},
        {"filters": ["hive.fr.b.1", "hive.fr.a.2"]},
        {"start_seq": 1234},
        {"start_seq": 17, "until_seq": 2999},
        {"filters": ["hive.fr.a.*"], "start_seq": 100, "until_seq": 101},  # seq 101 is on hive.fr.a: ends on it
        {"filters": ["hive.fr.b.*"], "start_seq": 100, "until_seq": 100},  # seq 100 is on hive.fr.b: just it
        {"until_seq": 1},
    ],
)
async def test_reads_what_nats_py_reads(server: Server, log: Client, options: dict[str, Any]) -> None:
    want = await natspy(log, STREAM, **options)
    got = await lean(target(server), STREAM, **options)
    assert [r[0] for r in got] == [r[0] for r in want]
    assert got == want
    if not options:
        assert len(got) == COUNT and max(len(r[2]) for r in got) >= 1_000_000


@pytest.mark.asyncio(loop_scope="module")
async def test_per_message_sink_and_a_reader_role(server: Server, log: Client) -> None:
    got: list[fastread.Record] = []

    async def sink(seq: int, subject: str, data: bytes, ts: float) -> None:
        got.append((seq, subject, data, ts))

    # an auditor may create ephemeral consumers and answer flow control, nothing more
    count = await fastread.read_stream(target(server, "auditor", "aud"), STREAM, sink, filters=["hive.fr.b.>"])
    assert count == len(got) == COUNT // 2
    assert got == await natspy(log, STREAM, filters=["hive.fr.b.>"])


@pytest.mark.asyncio(loop_scope="module")
async def test_empty_stream_and_filters_that_match_nothing(server: Server, log: Client) -> None:
    t = target(server)
    assert await lean(t, EMPTY) == []
    assert await lean(t, STREAM, filters=["hive.fr.zzz.>"]) == []  # inside the stream, no message
    assert await lean(t, STREAM, filters=["other.>"]) == []  # outside the stream (read_stream: none too)
    assert await lean(t, "NOSUCHSTREAM") == []
    assert await lean(t, STREAM, start_seq=COUNT + 1) == []
    assert await natspy(log, EMPTY) == []


async def consumers(nc: Client, stream: str) -> int:
    return int((await nc.jetstream().stream_info(stream)).state.consumer_count)


async def no_consumers_within(nc: Client, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while await consumers(nc, STREAM):
        assert time.monotonic() < deadline, f"a consumer outlived {seconds}s"
        await asyncio.sleep(0.1)


@pytest.mark.asyncio(loop_scope="module")
async def test_no_consumer_is_left_behind(server: Server, log: Client) -> None:
    await no_consumers_within(log, 10)  # nats-py's consumers of the tests before (5 s after their unsubscribe)
    # an auditor may not delete its consumer: the server does once nobody listens
    await lean(target(server, "auditor", "aud"), STREAM, filters=["hive.fr.a.1"])
    assert await consumers(log, STREAM) >= 1
    await no_consumers_within(log, fastread.INACTIVE_S + 3)
    # the coordinator may: it is gone at once
    await lean(target(server), STREAM, filters=["hive.fr.a.1"])
    assert await consumers(log, STREAM) == 0


def custom_user(server: Server, name: str, pub: list[str], sub: list[str]) -> Target:
    """A user signed by the HIVE account key itself with exactly these permissions."""
    store = auth_dir(server.directory)
    account = keys.load((store / "keys" / "HIVE.nk").read_text().strip())
    user = keys.create("user")
    claims = jwt.user_claims(keys.public_key(user), name, template={"pub": {"allow": pub}, "sub": {"allow": sub}})
    path = server.directory / f"{name}.creds"
    path.write_text(jwt.creds_file(jwt.encode(claims, account), keys.seed_text(user)))
    path.chmod(0o600)
    return Target(server.url, str(path))


@pytest.mark.asyncio(loop_scope="module")
async def test_refusals_are_one_error_not_a_hang(server: Server, log: Client) -> None:
    inbox = ["_INBOX.nocreate.>"]
    cases: list[tuple[Target, type[Exception], str]] = [
        # may look at the stream but not create a consumer on it
        (custom_user(server, "nocreate", ["$JS.API.STREAM.INFO.*"], inbox), Denied, "CONSUMER.CREATE"),
        # may not even subscribe to its inbox
        (custom_user(server, "noinbox", ["$JS.API.>"], ["hive.>"]), Denied, "Subscription"),
        # the system account has no JetStream
        (Target(server.url, str(auth_dir(server.directory) / "creds" / "sys.creds")), HiveError, "JetStream"),
    ]
    gone = issue_user(auth_dir(server.directory), "node", "gone")
    account_jwt = revoke_user(auth_dir(server.directory), "gone")
    sys_nc = await nats.connect(server.url, user_credentials=str(auth_dir(server.directory) / "creds" / "sys.creds"))
    await push_account(sys_nc, account_jwt)
    await sys_nc.close()
    cases.append((Target(server.url, str(gone)), Unreachable, "refused the credentials"))
    for t, kind, text in cases:
        with pytest.raises(kind) as info:
            await lean(t, STREAM)
        assert text in str(info.value), (t.creds, str(info.value))
        assert "\n" not in str(info.value)
        assert not isinstance(info.value, wire.NoReply)  # refused, not waited out


@pytest.mark.asyncio(loop_scope="module")
async def test_a_node_reading_another_nodes_subjects_reads_them_like_nats_py(server: Server, log: Client) -> None:
    # nothing forbids it: a node may subscribe to hive.> and create ephemeral consumers;
    # what matters is that both readers agree and neither hangs
    t = target(server, "node", "n1")
    nc = await raw(server, "node", "n1")
    try:
        assert await lean(t, STREAM, filters=["hive.fr.a.2"]) == await natspy(nc, STREAM, filters=["hive.fr.a.2"])
    finally:
        await nc.close()


def test_over_tls(tmp_path: Path) -> None:
    srv = Server(tmp_path, tls=True).start()
    try:

        async def go() -> None:
            nc = await nats.connect(srv.url, **srv.options("coordinator", "coordinator"), allow_reconnect=False)
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name=STREAM, subjects=["hive.fr.>"]))
            await asyncio.gather(*[await js.publish_async(f"hive.fr.x.{i % 3}", payload(i)) for i in range(300)])
            t = resolve(srv.url, "coordinator", srv.directory, name="coordinator")
            assert t.url.startswith("tls://") and t.ca
            assert await lean(t, STREAM) == await natspy(nc, STREAM)
            assert await lean(t, STREAM, filters=["hive.fr.x.1"], start_seq=50) == await natspy(
                nc, STREAM, filters=["hive.fr.x.1"], start_seq=50
            )
            wrong = Target(srv.url.replace("tls://", "nats://"), t.creds)  # no CA: the system store refuses it
            with pytest.raises(Unreachable, match="TLS"):
                await lean(wrong, STREAM)
            await nc.close()

        asyncio.run(go())
    finally:
        srv.stop()


async def test_a_real_log_and_hive_replay(tmp_path: Path) -> None:
    """The audit log of a real coordinator and node: the same records, and ``hive replay``
    (the lean reader) rebuilds a projection equal to the live one."""
    srv = Server(tmp_path).start()
    procs = [coordinator(srv).start(), node(srv, "n1", "--max-tasks", "8", "--no-docker").start()]
    try:
        async with await HiveClient.connect(srv.url, srv.directory) as client:
            await client.submit_many([(f"t{i}", NOOP) for i in range(40)])
            deadline = time.monotonic() + 60
            while len(await client.tasks(state="completed")) < 40:
                assert time.monotonic() < deadline, "the tasks did not complete"
                await asyncio.sleep(0.2)
            t = resolve(srv.url, "client", srv.directory)  # whom HiveClient.connect is
            want = await natspy(client.nc, AUDIT_STREAM)
            assert len(want) >= 120  # submitted, assigned, completed (a no-op sends no TaskStarted)
            assert await lean(t, AUDIT_STREAM) == want
            tasks = await natspy(client.nc, AUDIT_STREAM, filters=["hive.task.*.completed.*"])
            assert len(tasks) == 40
            assert await lean(t, AUDIT_STREAM, filters=["hive.task.*.completed.*"]) == tasks
        done = hive(srv, "replay", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        report = json.loads(done.stdout)
        assert report["matches"] is True and report["events"] >= 120, report
    finally:
        for proc in reversed(procs):
            proc.stop()
        srv.stop()
