"""Operator mode against a real nats-server: identities from ``edge.auth``, permissions
from the role templates expanded by the server, revocation pushed to the running server.

One server for the module (config: port, JetStream store, the operator-mode snippet);
every role connects with its own creds file and inbox prefix ``_INBOX.<name>``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig

import edge.auth as auth
from edge.auth.jwt import read_creds
from hive.children import tied_to_parent
from hive.server import free_port, port_open, server_binary

STREAM = "OPMODE"
USERS = {
    "coord": "coordinator",
    "n1": "node",
    "n2": "node",
    "alice": "client",
    "olga": "operator",
    "eve": "auditor",
}
DENY_WAIT = 0.5  # how long a refused publish waits for the ack that never comes


@dataclass
class OperatorServer:
    directory: Path
    port: int
    creds: dict[str, Path]
    conf: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "nats-server.log"

    def write_conf(self, path: Path) -> Path:
        store = self.directory / "jetstream"
        path.write_text(
            f"port: {self.port}\nhost: 127.0.0.1\nserver_name: opmode\n"
            f"jetstream {{ store_dir: {json.dumps(str(store))} }}\n"
            + auth.server_config(self.directory / "auth", self.directory / "resolver")
        )
        return path

    def start(self, conf: Path | None = None) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [server_binary(), "-c", str(conf or self.conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=tied_to_parent(),  # a killed test run leaves no server behind
            )
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def operator_server(directory: Path, users: dict[str, str]) -> Iterator[OperatorServer]:
    """A started ``OperatorServer`` with a credential for each user (name -> role)."""
    creds = {name: auth.issue_user(directory / "auth", role, name) for name, role in users.items()}
    srv = OperatorServer(directory, free_port(), creds, directory / "nats.conf")
    srv.write_conf(srv.conf)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorServer]:
    yield from operator_server(tmp_path_factory.mktemp("opmode"), USERS)


@dataclass
class Conn:
    nc: Client
    errors: list[str] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    closed_at: list[float] = field(default_factory=list)

    def violations(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e]

    def refused(self, subject: str) -> bool:
        return any(f'for publish to "{subject.lower()}"' in e for e in self.violations())


async def connect(url: str, creds: Path, name: str) -> Conn:
    read_creds(creds)  # nats-py would loop forever on a creds file without its JWT block
    errors: list[str] = []
    closed = asyncio.Event()
    closed_at: list[float] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    async def on_closed() -> None:
        closed_at.append(time.perf_counter())
        closed.set()

    nc = await nats.connect(
        url,
        user_credentials=str(creds),
        inbox_prefix=f"_INBOX.{name}",
        error_cb=on_error,
        closed_cb=on_closed,
        allow_reconnect=False,
        connect_timeout=2,
    )
    return Conn(nc, errors, closed, closed_at)


@pytest.fixture(scope="module")
async def conns(server: OperatorServer) -> AsyncIterator[dict[str, Conn]]:
    opened = {name: await connect(server.url, server.creds[name], name) for name in USERS}
    await opened["coord"].nc.jetstream(timeout=5).add_stream(name=STREAM, subjects=["hive.>"])
    yield opened
    for conn in opened.values():
        if not conn.nc.is_closed:
            await conn.nc.close()


async def acked(conn: Conn, subject: str) -> int:
    ack = await conn.nc.jetstream(timeout=3).publish(subject, b"{}")
    assert ack.stream == STREAM
    return ack.seq


async def refused(conn: Conn, subject: str) -> None:
    """The server drops the publish (no ack) and says why on the connection (in lower
    case: nats-py lowercases the whole -ERR line, the subject included)."""
    with pytest.raises(nats.errors.TimeoutError):
        await conn.nc.jetstream(timeout=DENY_WAIT).publish(subject, b"{}")
    for _ in range(20):
        if conn.refused(subject):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no permissions violation reported for {subject}: {conn.errors}")


async def test_permission_matrix(conns: dict[str, Conn]) -> None:
    n1, alice, olga, eve, coord = (conns[n] for n in ("n1", "alice", "olga", "eve", "coord"))
    for subject in ("hive.task.t1.completed.n1", "hive.task.t1.started.n1", "hive.node.n1.heartbeat"):
        await acked(n1, subject)
    await acked(alice, "hive.task.t1.submitted.by.alice")
    await acked(alice, "hive.node.n1.drain_requested.by.alice")
    await acked(olga, "hive.task.t1.cancel_requested.by.olga")
    for subject in ("hive.task.t1.assigned.n1", "hive.task.t1.cancelled.n1", "hive.coordinator.trust_policy"):
        await acked(coord, subject)
    await asyncio.gather(
        refused(n1, "hive.task.t1.completed.n2"),  # another node's report
        refused(n1, "hive.node.n2.heartbeat"),
        refused(n1, "hive.task.t1.assigned.n1"),  # a decision
        refused(alice, "hive.task.t1.assigned.n1"),
        refused(alice, "hive.task.t1.submitted.by.bob"),  # someone else's name
        refused(alice, "hive.task.t1.submitted"),  # no name at all
        refused(olga, "hive.task.t1.guidance.n1"),  # guidance goes through hiveapi.guide
        refused(eve, "hive.task.t1.submitted.by.eve"),
        refused(eve, "hive.node.eve.heartbeat"),
        refused(eve, "hive.anything"),
    )
    for conn in (n1, alice, olga, eve, coord):
        assert conn.nc.is_connected  # a permissions violation does not cost the connection


async def test_api_requests_carry_the_authenticated_user(conns: dict[str, Conn]) -> None:
    coord = conns["coord"]

    async def serve(msg: Msg) -> None:
        _, verb, user = msg.subject.split(".")
        await msg.respond(json.dumps({"verb": verb, "user": user}).encode())

    sub = await coord.nc.subscribe("hiveapi.*.*", cb=serve)
    # not flush(): nats-py 2.16 writes the PING straight to the socket, ahead of a SUB
    # still in its buffer; a request on the same connection is queued behind the SUB
    await coord.nc.request("hiveapi.ping.coord", b"{}", timeout=2)
    try:

        async def ask(name: str, verb: str, as_user: str | None = None) -> dict[str, str] | None:
            conn = conns[name]
            try:
                reply = await conn.nc.request(f"hiveapi.{verb}.{as_user or name}", b"{}", timeout=DENY_WAIT)
            except nats.errors.TimeoutError:
                assert any("permissions violation" in e and f"hiveapi.{verb}." in e for e in conn.errors)
                return None
            return json.loads(reply.data)

        results = await asyncio.gather(
            ask("alice", "tasks"),
            ask("alice", "validate"),
            ask("olga", "grant"),
            ask("eve", "stats"),
            ask("alice", "tasks", as_user="olga"),
            ask("alice", "grant"),
            ask("eve", "validate"),
            ask("n1", "tasks"),
        )
        assert results[:4] == [
            {"verb": "tasks", "user": "alice"},
            {"verb": "validate", "user": "alice"},
            {"verb": "grant", "user": "olga"},
            {"verb": "stats", "user": "eve"},
        ]
        assert results[4:] == [None, None, None, None]
    finally:
        await sub.unsubscribe()


async def test_auditor_reads_through_ephemeral_consumers_only(conns: dict[str, Conn]) -> None:
    eve = conns["eve"]
    seen: list[str] = []
    got = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        seen.append(msg.subject)
        if msg.subject == "hive.task.t1.submitted.by.alice":
            got.set()

    js = eve.nc.jetstream(timeout=2)
    sub = await js.subscribe("hive.>", stream=STREAM, cb=on_msg, ordered_consumer=True)
    await asyncio.wait_for(got.wait(), 5)
    await sub.unsubscribe()
    assert (await js.stream_info(STREAM)).state.messages >= len(seen) > 0

    # a durable consumer: the legacy subject is not allowed, the new one carries a name
    for config in (ConsumerConfig(durable_name="eve"), ConsumerConfig(name="eve")):
        before = len(eve.violations())
        with pytest.raises(nats.errors.TimeoutError):
            await eve.nc.jetstream(timeout=DENY_WAIT).add_consumer(STREAM, config)
        await asyncio.sleep(0.1)
        assert len(eve.violations()) > before
    # ... and the ephemeral subject refuses a durable name in the request
    body = {"stream_name": STREAM, "config": {"durable_name": "eve", "ack_policy": "none"}}
    reply = json.loads((await eve.nc.request(f"$JS.API.CONSUMER.CREATE.{STREAM}", json.dumps(body).encode())).data)
    assert reply["error"]["err_code"] == 10020, reply  # JSConsumerEphemeralWithDurableNameErr
    # no bucket writes
    await eve.nc.publish("$O.hive-results.C.x", b"x")
    with pytest.raises(nats.errors.TimeoutError):
        await eve.nc.request("$JS.API.STREAM.PURGE.OBJ_hive-results", b"{}", timeout=DENY_WAIT)
    assert eve.refused("$O.hive-results.C.x")
    assert eve.refused("$JS.API.STREAM.PURGE.OBJ_hive-results")


async def test_results_bucket_written_by_nodes_read_by_all(conns: dict[str, Conn]) -> None:
    await conns["coord"].nc.jetstream(timeout=5).create_object_store("hive-results")
    store = await conns["n1"].nc.jetstream(timeout=3).object_store("hive-results")
    await store.put("t1/out.txt", b"first" * 1000)
    await store.put("t1/out.txt", b"again" * 1000)  # a replacement purges the old chunks
    for name in ("alice", "eve"):
        conn = conns[name]
        reader = await conn.nc.jetstream(timeout=DENY_WAIT).object_store("hive-results")
        assert (await reader.get("t1/out.txt")).data == b"again" * 1000
        with pytest.raises(nats.errors.TimeoutError):
            await reader.put("t1/forged.txt", b"x")
        assert any('for publish to "$o.hive-results.c.' in e for e in conn.violations())


async def test_revocation_disconnects_at_once(server: OperatorServer, conns: dict[str, Conn]) -> None:
    n2 = conns["n2"]
    assert n2.nc.is_connected
    stale_conf = server.write_conf(server.directory / "stale.conf")  # preloads the unrevoked account
    store = server.directory / "auth"
    system = await nats.connect(server.url, user_credentials=str(auth.ensure(store).system_creds))
    try:
        account_jwt = auth.revoke_user(store, "n2")
        pushed = time.perf_counter()
        data = await auth.push_account(system, account_jwt)
        assert data == {"account": auth.ensure(store).account, "code": 200, "message": "jwt updated"}
        await asyncio.wait_for(n2.closed.wait(), 5)
    finally:
        await system.close()
    took = n2.closed_at[0] - pushed
    print(f"\nrevocation pushed -> n2 disconnected in {took * 1000:.1f} ms")
    assert "revoked" in str(n2.nc.last_error).lower()

    # at connect nats-py raises a plain Error with the server's -ERR text
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(server.url, server.creds["n2"], "n2")

    # the others keep their connections and their rights
    assert all(conns[n].nc.is_connected for n in USERS if n != "n2")
    await acked(conns["n1"], "hive.task.t2.completed.n1")

    # a restart with the old preload keeps the revocation: the full resolver keeps the newer JWT
    for conn in conns.values():
        if not conn.nc.is_closed:
            await conn.nc.close()
    assert account_jwt not in stale_conf.read_text()
    server.stop()
    server.start(stale_conf)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect(server.url, server.creds["n2"], "n2")
    n1 = await connect(server.url, server.creds["n1"], "n1")
    try:
        await acked(n1, "hive.task.t3.completed.n1")
    finally:
        await n1.nc.close()
