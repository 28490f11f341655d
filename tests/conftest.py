"""Shared fixtures: a session nats-server, a session cluster (coordinator + two nodes),
and a connected Python client. Tests that break things start their own server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hive.client import HiveClient
from hive.logs import configure
from tests.cluster import Proc, Server, coordinator, node

configure("warning")


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("hive")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster(nats_server: Server) -> Iterator[dict[str, Proc]]:
    procs = {"coordinator": coordinator(nats_server)}
    for node_id in ("alpha", "beta"):
        procs[node_id] = node(nats_server, node_id, "--max-tasks", "4", "--max-memory-gb", "8", "--no-docker")
    try:
        for proc in procs.values():
            proc.start()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.fixture
async def client(nats_server: Server, cluster: dict[str, Proc]) -> AsyncIterator[HiveClient]:
    hive = await HiveClient.connect(nats_server.url, nats_server.directory)
    yield hive
    await hive.close()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own, for tests that kill or corrupt things."""
    server = Server(tmp_path).start()
    yield server
    server.stop()
