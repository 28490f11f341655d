"""The dashboard rides out a restart of the coordinator and of NATS: a banner while cut
off, then live again without a reload (a cluster of its own: these tests break things)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hive.server import free_port
from tests.cluster import Proc, Server, coordinator, hive, node
from tests.web.conftest import Web, people, web_proc

pytestmark = pytest.mark.slow


@pytest.fixture
def fragile(tmp_path: Path) -> Iterator[tuple[Web, dict[str, Proc]]]:
    server = Server(tmp_path).start()
    procs = {"coordinator": coordinator(server), "n1": node(server, "n1", "--no-docker", "--heartbeat", "0.5")}
    port = free_port()
    tokens, names = people(server)
    site = web_proc(server, port)
    try:
        for proc in procs.values():
            proc.start()
        site.start()
        yield Web(server, f"http://127.0.0.1:{port}", site, tokens, names), procs
    finally:
        for proc in (site, *procs.values()):
            proc.stop()
        server.stop()


def test_survives_coordinator_and_nats_restarts(fragile: tuple[Web, dict[str, Proc]], browser: Any) -> None:
    web, procs = fragile

    def submit() -> str:
        creds = web.server.creds("client", "alice")
        done = hive(web.server, "submit", "--json", "--type", "noop", input_env={"HIVE_CREDS": str(creds)})
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["task_id"]

    context = browser.new_context()
    page: Any = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(web.login("operator"))
    page.wait_for_selector("#who:has-text('(')")
    page.goto(f"{web.url}/#/tasks")
    page.wait_for_selector("#tasks")

    procs["coordinator"].stop()
    page.wait_for_selector("#banner:has-text('No coordinator answers')")
    procs["coordinator"].start()
    page.wait_for_selector("#banner", state="hidden")
    first = submit()
    page.wait_for_selector(f"tr[data-task='{first}'] .s-completed")

    web.server.stop()  # the same store and port come back
    page.wait_for_selector("#banner:has-text('lost NATS')")
    web.server.start()
    page.wait_for_selector("#banner", state="hidden", timeout=40_000)
    second = submit()
    page.wait_for_selector(f"tr[data-task='{second}'] .s-completed", timeout=30_000)  # live again, no reload
    assert web.proc.alive()
    context.close()
