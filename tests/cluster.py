"""Test harness: a real nats-server and real coordinator/node processes.

Processes are started as ``python -m hive ...`` exactly as an operator would, with logs in
files the tests can read, and can be killed with SIGKILL for the fault tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge.auth import ensure
from edge.config import auth_dir, local_creds, resolve
from edge.options import credentials
from hive.children import tied_to_parent
from hive.server import EmbeddedCluster, EmbeddedServer, free_port


class Server:
    """An embedded nats-server in operator mode on a free port, with its store and key store
    in ``directory``: every process and test user connects with a credential of its own."""

    def __init__(self, directory: Path, port: int | None = None, tls: bool = False, host: str = "127.0.0.1") -> None:
        self.directory = directory
        self.port = port or free_port()
        self.server = EmbeddedServer(directory, self.port, directory / "nats-server.log", tls=tls, host=host)
        ensure(auth_dir(directory))

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> Server:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def kill(self) -> None:
        self.server.kill()

    def creds(self, role: str, name: str) -> Path:
        """The credentials of ``name`` (issued now if new), as `hive` would find them."""
        found = local_creds(self.directory, role, name)
        assert found is not None
        return found

    def options(self, role: str, name: str) -> dict[str, Any]:
        """``nats.connect`` keyword arguments for a raw connection as ``name``."""
        return credentials(resolve(self.url, role, self.directory, name=name, creds=self.creds(role, name)))

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"HIVE_SERVER": self.url, "HIVE_DATA": str(self.directory), "PYTHONUNBUFFERED": "1"})
        for name in ("HIVE_USER", "HIVE_CREDS", "HIVE_CA"):
            env.pop(name, None)
        return env


class Servers(Server):
    """A local JetStream cluster of ``n`` embedded nats-servers in ``directory`` (one key
    store, a store and resolver directory each). ``url`` is every client URL, comma-
    separated; ``kill(i)``/``stop(i)``/``start(i)`` act on server ``i`` (1..n), without
    ``i`` on all. Works wherever a ``Server`` does (``coordinator()``, ``node()``, ``hive()``)."""

    def __init__(self, directory: Path, n: int = 3) -> None:  # not super(): that is one server
        self.directory = directory
        self.cluster = EmbeddedCluster(
            directory, [free_port() for _ in range(n)], [free_port() for _ in range(n)], directory / "logs"
        )
        self.port = self.cluster.servers[0].port
        ensure(auth_dir(directory))

    @property
    def url(self) -> str:
        return self.cluster.url

    @property
    def server(self) -> EmbeddedServer:  # type: ignore[override]
        return self.cluster.servers[0]

    def member(self, i: int) -> EmbeddedServer:
        return self.cluster.server(i)

    def start(self, i: int | None = None) -> Servers:  # type: ignore[override]
        """Start server ``i`` (or all); ``await wait_ready()`` until JetStream answers."""
        if i is None:
            self.cluster.start()
        else:
            self.member(i).start()
        return self

    def stop(self, i: int | None = None) -> None:  # type: ignore[override]
        if i is None:
            self.cluster.stop()
        else:
            self.member(i).stop()

    def kill(self, i: int | None = None) -> None:  # type: ignore[override]
        """SIGKILL server ``i`` (or all)."""
        if i is None:
            self.cluster.kill()
        else:
            self.member(i).kill()

    def index_of(self, server_name: str) -> int:
        """1..n for ``hive-<i>``, the name a stream's ``cluster.leader`` gives."""
        return next(i for i, s in enumerate(self.cluster.servers, start=1) if s.name == server_name)

    async def wait_ready(self, timeout: float = 30.0, url: str | None = None) -> None:
        """Until a JetStream API request through ``url`` (default: any) is answered."""
        import nats

        deadline = time.monotonic() + timeout
        options = self.options("coordinator", "coordinator")
        options["servers"] = (url or self.url).split(",")
        nc = await nats.connect(**options, connect_timeout=2, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        try:
            while True:
                try:
                    await nc.jetstream(timeout=1).account_info()
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def leader(self, stream: str) -> int:
        """Which server (1..n) leads ``stream`` now (``$JS.API.STREAM.INFO`` → cluster.leader)."""
        import nats

        options = self.options("coordinator", "coordinator")
        options["servers"] = self.url.split(",")
        nc = await nats.connect(**options, connect_timeout=2)
        try:
            info = await nc.jetstream(timeout=5).stream_info(stream)
            assert info.cluster is not None and info.cluster.leader, info
            return self.index_of(info.cluster.leader)
        finally:
            await nc.close()


    async def meta_leader(self) -> int:
        """Which server (1..n) leads the JetStream meta group (``$SYS.REQ.SERVER.PING.JSZ``,
        asked as the system account)."""
        import json

        import nats

        nc = await nats.connect(
            servers=self.url.split(","), user_credentials=str(auth_dir(self.directory) / "creds" / "sys.creds")
        )
        try:
            inbox = nc.new_inbox()
            leaders: list[str] = []
            sub = await nc.subscribe(inbox)
            await nc.publish("$SYS.REQ.SERVER.PING.JSZ", b"{}", reply=inbox)
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and not leaders:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except Exception:
                    continue
                meta = (json.loads(msg.data).get("data") or {}).get("meta_cluster") or {}
                if meta.get("leader"):
                    leaders.append(meta["leader"])
            assert leaders, "no server named a meta leader"
            return self.index_of(leaders[0])
        finally:
            await nc.close()


class Proc:
    """A ``python -m hive`` child with its log in a file."""

    def __init__(
        self, name: str, args: list[str], server: Server, ready_text: str, prefix: list[str] | None = None
    ) -> None:
        self.name = name
        self.args = args
        self.prefix = prefix or []  # e.g. `ip netns exec NS`: run it on a host of its own
        self.server = server
        self.ready_text = ready_text
        self.log = server.directory / "logs" / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True, timeout: float = 20.0) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "hive", *self.args],
                env=self.server.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=tied_to_parent(),  # a killed test run leaves no service behind
            )
        if wait:
            self.wait_for_log(self.ready_text, timeout, offset)
        return self

    def text(self, offset: int = 0) -> str:
        if not self.log.exists():
            return ""
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def wait_for_log(self, needle: str, timeout: float = 20.0, offset: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text(offset):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.text(offset)[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: no {needle!r} within {timeout}s:\n{self.text(offset)[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()


def coordinator(server: Server, *extra: str) -> Proc:
    return Proc("coordinator", ["coordinator", *extra], server, "coordinator ready")


def node(server: Server, node_id: str, *extra: str) -> Proc:
    args = ["node", "--id", node_id, "--handlers", "node.demo", "--handlers", "tests.handlers", *extra]
    return Proc(node_id, args, server, "node started")


def hive(
    server: Server, *args: str, timeout: float = 60.0, input_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would."""
    env = server.env()
    env.update(input_env or {})
    return subprocess.run(
        [sys.executable, "-m", "hive", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
