"""A real cluster for the web tests: nats-server (operator mode), a coordinator, one node,
and ``hive web`` as a subprocess, with login tokens for a person of each role."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.auth import issue_user
from edge.config import auth_dir
from hive.server import free_port
from hive.web.auth import load_secret, sign
from tests.cluster import Proc, Server, coordinator, node

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Web:
    server: Server
    url: str
    proc: Proc
    tokens: dict[str, str]  # role -> a token of a person with that role
    names: dict[str, str]  # role -> that person's name

    def login(self, role: str) -> str:
        return f"{self.url}/?token={self.tokens[role]}"

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def web_proc(server: Server, port: int, *extra: str) -> Proc:
    return Proc("web", ["web", "--port", str(port), *extra], server, "web ready")


def people(server: Server) -> tuple[dict[str, str], dict[str, str]]:
    store = auth_dir(server.directory)
    names = {"operator": "olga", "client": "alice", "auditor": "audrey"}
    for role, name in names.items():
        issue_user(store, role, name)
    issue_user(store, "client", "bob")
    secret = load_secret(store)
    tokens = {role: sign(secret, name, 3600) for role, name in names.items()}
    tokens["other-client"] = sign(secret, "bob", 3600)
    return tokens, names


@pytest.fixture(scope="session")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    yield from running_web(tmp_path_factory.mktemp("web"))


def running_web(directory: Path, *coordinator_args: str) -> Iterator[Web]:
    """A server, a coordinator (with ``coordinator_args``), one node and ``hive web``."""
    server = Server(directory).start()
    procs = [
        coordinator(server, *coordinator_args),
        node(server, "w1", "--max-tasks", "4", "--no-docker", "--heartbeat", "0.5"),
    ]
    port = free_port()
    tokens, names = people(server)
    site = web_proc(server, port)
    try:
        for proc in procs:
            proc.start()
        site.start()
        yield Web(server, f"http://127.0.0.1:{port}", site, tokens, names)
    finally:
        for proc in (site, *reversed(procs)):
            proc.stop()
        server.stop()


def browser_or_skip() -> str:
    """The Debian chromium; its absence skips, except under CI where it must be there."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing under CI=true (.ci/run installs it)")
    found = shutil.which("chromium")
    if found:
        return found
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium); browser tests need it")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    path = browser_or_skip()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as play:
        chromium = play.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def bare_web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """A coordinator and no node: what a fuzzer submits stays queued, never runs."""
    server = Server(tmp_path_factory.mktemp("bare-web")).start()
    coord = coordinator(server)
    port = free_port()
    tokens, names = people(server)
    site = web_proc(server, port)
    try:
        coord.start()
        site.start()
        yield Web(server, f"http://127.0.0.1:{port}", site, tokens, names)
    finally:
        site.stop()
        coord.stop()
        server.stop()
