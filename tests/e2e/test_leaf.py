"""A remote site: a node that reaches the hub only through a local leaf server.

The hub is a real nats-server with a leafnode listener (and so a JetStream domain), with a
real coordinator; the site is a real ``hive leaf`` (its own nats-server, no JetStream,
trusting the hub's operator from the file ``hive leaf trust`` wrote) and a real ``hive
node`` given only the leaf's URL and its own credential. Tasks submitted on the hub run on
the site's node, exactly once, with its reports and result files in the hub's log; the
hub sees one leaf connection and not the node. Then the leaf server is restarted and the
node carries on by itself (slow)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import nats
import pytest

from edge.auth import ensure
from edge.config import CA_FILE, Target, auth_dir
from edge.options import JS_DOMAIN, credentials
from events.codec import decode
from events.subjects import AUDIT_STREAM
from hive.client import HiveClient
from hive.server import free_port
from tests.cluster import Proc, Server, coordinator, hive, node
from tests.e2e.test_recovery import completions, wait_counts, workload

SITE_NODE = "site-1"


class Site:
    """The remote site's directory: the node's credential and the hub's trust file copied
    in, as an operator would; ``hive leaf`` and ``hive node`` run with ``--data`` there."""

    def __init__(self, hub: Server, leaf_port: int, directory: Path, tls: bool = False) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        enrolled = hive(hub, "node", "enroll", SITE_NODE, "--out", str(directory / f"{SITE_NODE}.creds"))
        assert enrolled.returncode == 0, enrolled.stderr
        self.creds = directory / f"{SITE_NODE}.creds"
        trusted = hive(hub, "leaf", "trust", "--out", str(directory / "hub-trust.json"))
        assert trusted.returncode == 0, trusted.stderr
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        # a TLS hub: the leaf connection is TLS too, verified against the hub's CA
        secure = ["--ca", str(auth_dir(hub.directory) / "tls" / "ca.pem")] if tls else []
        self.leaf = Proc(
            "leaf",
            [
                "leaf",
                *secure,
                "--hub",
                f"{'tls' if tls else 'nats-leaf'}://127.0.0.1:{leaf_port}",
                "--creds",
                str(self.creds),
                "--port",
                str(self.port),
                "--data",
                str(directory),
            ],
            hub,
            "leaf server ready",
        )
        self.node = node(
            hub, SITE_NODE, "--server", self.url, "--creds", str(self.creds), "--data", str(directory), "--no-docker"
        )


@pytest.fixture(params=[False, True], ids=["plain", "tls"])
def hub(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    server = Server(tmp_path / "hub", tls=request.param)
    server.server.leaf_port = free_port()
    server.start()
    yield server
    server.stop()


async def sys_request(hub: Server, subject: str) -> dict[str, Any]:
    """One ``$SYS.REQ.SERVER.PING.*`` answer of the hub, as its system user."""
    system = Target(
        hub.url, str(ensure(auth_dir(hub.directory)).system_creds), ca=str(auth_dir(hub.directory) / CA_FILE)
    )
    nc = await nats.connect(hub.url, **credentials(system))
    try:
        msg = await nc.request(subject, b"{}", timeout=5)
        return dict(json.loads(msg.data)["data"])
    finally:
        await nc.close()


async def wait_leaf(hub: Server, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        leafz = await sys_request(hub, "$SYS.REQ.SERVER.PING.LEAFZ")
        if leafz.get("leafs"):
            return leafz
        if time.monotonic() > deadline:
            raise AssertionError(f"no leaf connection on the hub: {leafz}")
        await asyncio.sleep(0.2)


async def site_reports(client: HiveClient) -> set[str]:
    """The verbs of everything the site's node put in the audit log."""
    from edge.logread import read_stream

    verbs: set[str] = set()

    def add(seq: int, msg: Any) -> None:
        event = decode(msg.data)
        if event.emitter == f"node:{SITE_NODE}":
            verbs.add(type(event).__name__)

    await read_stream(client.js, AUDIT_STREAM, add)
    return verbs


def ran_on(view: dict[str, Any]) -> str | None:
    return view.get("node_id") or view.get("last_node")


async def run_and_check(client: HiveClient, n: int, done_before: int) -> None:
    items = workload(n, 0.05)
    await client.submit_many(items)
    await wait_counts(client, done_before + n, timeout=60)
    counts = await completions(client)
    bad = {t: counts[t] for t, _ in items if counts[t] != 1}
    assert not bad, f"not completed exactly once: {bad}"
    for task_id, _ in items[:3]:
        assert ran_on(await client.task(task_id)) == SITE_NODE


async def test_a_node_behind_a_leaf_server_works_like_one_on_the_hub(hub: Server, tmp_path: Path) -> None:
    site = Site(hub, hub.server.leaf_port, tmp_path / "site", tls=hub.server.tls)
    coord = coordinator(hub).start()
    procs = [coord]
    try:
        procs.append(site.leaf.start())
        leafz = await wait_leaf(hub)
        assert leafz["leafs"][0]["name"] == f"hive-leaf-{SITE_NODE}", leafz
        procs.append(site.node.start(timeout=40))
        async with await HiveClient.connect(hub.url, hub.directory) as client:
            nodes = {n["node_id"]: n for n in await client.nodes()}
            assert nodes[SITE_NODE]["state"] == "active", nodes
            await run_and_check(client, 20, 0)
            # a process task with a result file: the object store through the leaf as well
            cmd = ["sh", "-c", 'mkdir -p "$HIVE_WORKSPACE/out" && echo from-the-site > "$HIVE_WORKSPACE/out/r.txt"']
            task_id = await client.submit(_process(cmd))
            final = await client.wait(task_id)
            assert final["state"] == "completed", final
            assert ran_on(final) == SITE_NODE and final.get("outputs"), final
            assert {"NodeRegistered", "TaskStarted", "TaskCompleted"} <= await site_reports(client)
        # the hub knows the site as one leaf connection; the node itself is not its client
        connz = await sys_request(hub, "$SYS.REQ.SERVER.PING.CONNZ")
        names = [c.get("name") for c in connz.get("connections") or []]
        assert f"hive-node-{SITE_NODE}" not in names, names
        assert "jetstream" not in (await _leaf_info(site)), "the leaf server must run no JetStream"
        assert all(p.alive() for p in procs)
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.mark.slow
async def test_the_site_node_rides_out_a_leaf_server_restart(hub: Server, tmp_path: Path) -> None:
    if hub.server.tls:
        pytest.skip("the TLS hub is covered by the first test")
    site = Site(hub, hub.server.leaf_port, tmp_path / "site")
    procs = [coordinator(hub).start(), site.leaf.start()]
    try:
        await wait_leaf(hub)
        procs.append(site.node.start(timeout=40))
        async with await HiveClient.connect(hub.url, hub.directory) as client:
            await run_and_check(client, 10, 0)
            site.leaf.stop()  # its nats-server with it: the node is cut off
            await asyncio.sleep(1.0)
            items = workload(10, 0.05)
            await client.submit_many(items)  # queued on the hub meanwhile
            site.leaf.start()
            await wait_leaf(hub)
            await wait_counts(client, 20, timeout=60)
            counts = await completions(client)
            assert all(counts[t] == 1 for t, _ in items), {t: counts[t] for t, _ in items}
            assert ran_on(await client.task(items[0][0])) == SITE_NODE
        assert site.node.alive(), site.node.text()[-2000:]
        assert "reconnected to nats" in site.node.text()
    finally:
        for proc in reversed(procs):
            proc.stop()


async def _leaf_info(site: Site) -> dict[str, Any]:
    nc = await nats.connect(site.url, user_credentials=str(site.creds), inbox_prefix=f"_INBOX.{SITE_NODE}")
    try:
        info = dict(nc._server_info)
        # what a site's process gets without saying anything: the hub's JetStream, in its domain
        js = nc.jetstream(domain=JS_DOMAIN, timeout=5)
        assert (await js.stream_info(AUDIT_STREAM)).config.name == AUDIT_STREAM
        return info
    finally:
        await nc.close()


def _process(command: list[str]) -> Any:
    from events.task import TaskSpec

    return TaskSpec(executor="process", command=command)


async def test_revoking_the_site_node_cuts_the_leaf_connection(hub: Server, tmp_path: Path) -> None:
    if hub.server.tls:
        pytest.skip("the same on a TLS hub")
    site = Site(hub, hub.server.leaf_port, tmp_path / "site")
    coord = coordinator(hub).start()
    try:
        site.leaf.start()
        await wait_leaf(hub)
        revoked = hive(hub, "node", "revoke", SITE_NODE)
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 10
        while (await sys_request(hub, "$SYS.REQ.SERVER.PING.LEAFZ")).get("leafs"):
            assert time.monotonic() < deadline, "the revoked site's leaf connection is still up"
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # the leaf retries every second: each one is refused
        assert not (await sys_request(hub, "$SYS.REQ.SERVER.PING.LEAFZ")).get("leafs")
    finally:
        site.leaf.stop()
        coord.stop()
