"""``hive up``: one command for a whole local cluster.

Starts the embedded nats-server (unless ``--server`` names one), creates the streams,
then the coordinator and N nodes as child processes (``python -m hive coordinator|node``)
with their logs under DATA/logs, prints where everything is, optionally runs the demo
workload, and on Ctrl-C/SIGTERM stops nodes, coordinator and server, in that order.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from events.streams import ensure_streams
from hive import render
from hive.bus import connect
from hive.config import ROLES, STATE_FILE, make_credentials, password_env, resolve
from hive.errors import HiveError
from hive.server import EmbeddedServer


class Cluster:
    def __init__(self, data: Path, port: int, nodes: int, server: str | None, max_tasks: int = 4) -> None:
        self.data = data
        self.port = port
        self.node_count = nodes
        self.external = server
        self.max_tasks = max_tasks
        self.server: EmbeddedServer | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    @property
    def url(self) -> str:
        return self.external or (self.server.url if self.server else f"nats://127.0.0.1:{self.port}")

    def run(self, demo: bool = False) -> None:
        logs = self.data / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        creds = make_credentials(self.data)
        if self.external is None:
            self.server = EmbeddedServer(self.data / "jetstream", self.port, creds, logs / "nats-server.log")
            self.server.start()
        (self.data / STATE_FILE).write_text(json.dumps({"server": self.url, "pid": os.getpid()}))
        asyncio.run(self._prepare())
        env = dict(os.environ)
        env.update({password_env(role): creds[role] for role in ROLES})
        env.setdefault("PYTHONUNBUFFERED", "1")
        base = [sys.executable, "-m", "hive"]
        common = ["--server", self.url, "--data", str(self.data)]
        self._spawn("coordinator", [*base, "coordinator", *common], env, logs)
        for i in range(1, self.node_count + 1):
            name = f"node-{i}"
            args = [*base, "node", "--id", name, "--max-tasks", str(self.max_tasks), "--handlers", "node.demo", *common]
            self._spawn(name, args, env, logs)
        # Ctrl-C and SIGTERM both end in the same orderly stop (also when started in the
        # background, where a shell leaves SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            asyncio.run(self._wait_ready())
            self._banner(logs)
            if demo:
                from hive.demo import run_demo

                asyncio.run(run_demo(self.url, self.data))
                render.out.print("demo finished; the cluster keeps running (Ctrl-C to stop)")
            while not self.stopping:
                self._watch()
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    async def _prepare(self) -> None:
        nc = await connect(resolve(self.url, "coordinator", self.data), "hive-up", deadline=10, persistent=False)
        try:
            await ensure_streams(nc.jetstream(timeout=10))
        finally:
            await nc.close()

    async def _wait_ready(self, timeout: float = 30.0) -> None:
        """Until the coordinator answers and sees every node registered."""
        from hive.client import HiveClient

        async with await HiveClient.connect(self.url, self.data) as client:
            deadline = time.monotonic() + timeout
            while True:
                self._watch()
                try:
                    nodes = await client.nodes()
                    if sum(n["state"] == "active" for n in nodes) >= self.node_count:
                        return
                except HiveError:
                    pass
                if time.monotonic() > deadline:
                    raise HiveError(f"the cluster did not come up within {timeout:g}s; see {self.data / 'logs'}")
                await asyncio.sleep(0.2)

    def _spawn(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        log_file = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.children[name] = subprocess.Popen(
            args, env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def _banner(self, logs: Path) -> None:
        server = f"{self.url} (embedded, store {self.data / 'jetstream'})" if self.server else f"{self.url} (external)"
        lines = [
            "[bold]HiveMind is up[/bold]",
            f"  nats server   {server}",
            f"  coordinator   pid {self.children['coordinator'].pid}, projection {self.data / 'coordinator.db'}",
            f"  nodes         {', '.join(n for n in self.children if n.startswith('node-')) or 'none'}",
            f"  logs          {logs}/",
            f"  credentials   {self.data / 'credentials.json'} (roles: {', '.join(ROLES)})",
            "  try           hive submit --wait -- echo hello   |   hive tasks   |   hive nodes   |   hive events -f",
            "  stop          Ctrl-C",
        ]
        render.out.print("\n".join(lines))

    def _watch(self) -> None:
        for name, proc in list(self.children.items()):
            code = proc.poll()
            if code is not None:
                render.err.print(f"{name} exited with code {code}; see {self.data / 'logs' / (name + '.log')}")
                del self.children[name]

    def stop(self) -> None:
        order = sorted(self.children, key=lambda n: n == "coordinator")  # nodes first
        for name in order:
            proc = self.children[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in order:
            proc = self.children[name]
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.children.clear()
        if self.server is not None:
            self.server.stop()
            self.server = None
        state = self.data / STATE_FILE
        state.unlink(missing_ok=True)
        if not self.stopping:
            self.stopping = True
            render.out.print("stopped")
