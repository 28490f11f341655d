"""``hive up``: one command for a whole local cluster.

Starts the embedded nats-server (unless ``--server`` names one), creates the streams,
then the coordinator and N nodes as child processes (``python -m hive coordinator|node``)
with their logs under DATA/logs, prints where everything is, optionally runs the demo
workload, and on Ctrl-C/SIGTERM stops nodes, coordinator and server, in that order.

It also supervises them: a child (or the embedded nats-server) that dies is restarted
with backoff, a node that exits 0 has drained and is let go, and a child that crashes
right after starting, again and again, is given up on (the whole cluster stops, exit 1,
unless it was a node). The decisions are the pure ``hive.restarts.decide``;
``Cluster._watch`` only polls processes and keeps the schedule of due restarts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.auth import ensure as ensure_authority
from edge.auth.tls import TlsFiles
from edge.bus import connect
from edge.config import STATE_FILE, auth_dir, local_person, resolve
from edge.errors import HiveError
from events.streams import ensure_streams
from hive import render
from hive.children import tied_to_parent
from hive.restarts import History, RestartPolicy, decide
from hive.server import EmbeddedCluster, EmbeddedServer

SERVER = "nats-server"  # the one embedded server; in a cluster nats-server-1..N
ROUTE_PORT_OFFSET = 2000  # a cluster's route ports: client port + 2000 (4222 -> 6222)


class CrashLoop(Exception):
    """The coordinator or the nats-server keeps crashing: the cluster stops, exit 1."""


# -- the processes ------------------------------------------------------------------------


@dataclass
class Supervised:
    args: list[str]  # empty for the nats-server
    started: float = 0.0
    history: History = field(default_factory=History)
    due: float | None = None  # a restart is scheduled at this time


class Cluster:
    def __init__(
        self,
        data: Path,
        port: int,
        nodes: int,
        server: str | None,
        max_tasks: int = 4,
        tls: bool = False,
        own_tls: TlsFiles | None = None,
        servers: int = 1,
        replicas: int | None = None,
        coordinators: int = 1,
        listen: str = "127.0.0.1",
        leaf_port: int | None = None,
        web_port: int | None = None,
    ) -> None:
        self.data = data
        self.web_port = web_port  # `hive web` as one more supervised child (None: not started)
        self.listen = listen
        self.leaf_port = leaf_port  # leaf servers (hive leaf) connect here; a cluster: +1 each
        self.coordinator_count = coordinators
        self.server_count = servers  # >1: a local JetStream cluster on ports port..port+N-1
        self.replicas = replicas if replicas is not None else (3 if servers >= 3 else 1)
        self.tls = tls or own_tls is not None
        self.own_tls = own_tls
        self.port = port
        self.node_count = nodes
        self.external = server
        self.max_tasks = max_tasks
        self.server: EmbeddedServer | EmbeddedCluster | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.supervised: dict[str, Supervised] = {}  # what is (to be) kept running
        self.policy = RestartPolicy()
        self.fatal: str | None = None
        self.stopping = False
        self.env: dict[str, str] = {}
        self.logs = data / "logs"

    @property
    def url(self) -> str:
        return self.external or (self.server.url if self.server else f"nats://127.0.0.1:{self.port}")

    def run(self, demo: bool = False) -> None:
        logs = self.logs
        logs.mkdir(parents=True, exist_ok=True)
        # the key store: each service and the local person get their own credential from it
        ensure_authority(auth_dir(self.data))
        if self.external is None:
            if self.server_count > 1:
                ports = [self.port + i for i in range(self.server_count)]
                self.server = EmbeddedCluster(
                    self.data,
                    ports,
                    [port + ROUTE_PORT_OFFSET for port in ports],
                    logs,
                    tls=self.tls,
                    own=self.own_tls,
                    host=self.listen,
                    leaf_ports=[self.leaf_port + i for i in range(self.server_count)] if self.leaf_port else None,
                )
            else:
                self.server = EmbeddedServer(
                    self.data, self.port, logs / f"{SERVER}.log", tls=self.tls,
                    own=self.own_tls,
                    host=self.listen,
                    leaf_port=self.leaf_port,
                )
            self.server.start()
            for name in self.embedded():
                self.supervised[name] = Supervised([], started=time.monotonic())
        (self.data / STATE_FILE).write_text(json.dumps({"server": self.url, "pid": os.getpid()}))
        asyncio.run(self._prepare())
        env = dict(os.environ)
        env.pop("HIVE_CREDS", None)  # each child finds its own credential in the key store
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.env = env
        base = [sys.executable, "-m", "hive"]
        common = ["--server", self.url, "--data", str(self.data)]
        self._spawn("coordinator", [*base, "coordinator", *common])
        for i in range(2, self.coordinator_count + 1):  # standbys: one of them takes over if the leader dies
            name = f"coordinator-{i}"
            self._spawn(name, [*base, "coordinator", "--id", name, *common])
        for i in range(1, self.node_count + 1):
            name = f"node-{i}"
            args = [*base, "node", "--id", name, "--max-tasks", str(self.max_tasks), "--handlers", "node.demo", *common]
            self._spawn(name, args)
        if self.web_port is not None:
            self._spawn("web", [*base, "web", "--port", str(self.web_port), *common])
        # Ctrl-C and SIGTERM both end in the same orderly stop (also when started in the
        # background, where a shell leaves SIGINT ignored)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        crashed = False
        try:
            asyncio.run(self._supervising(self._wait_ready()))
            self._banner(logs)
            if demo:
                from hive.demo import run_demo

                asyncio.run(self._supervising(run_demo(self.url, self.data)))
                render.out.print("demo finished; the cluster keeps running (Ctrl-C to stop)")
            while not self.stopping:
                self._watch()
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        except CrashLoop:
            crashed = True
        finally:
            self.stop()
        if crashed:
            raise SystemExit(1)

    def embedded(self) -> dict[str, EmbeddedServer]:
        """The embedded servers to supervise, by name."""
        if isinstance(self.server, EmbeddedCluster):
            return {f"{SERVER}-{i}": server for i, server in enumerate(self.server.servers, start=1)}
        return {SERVER: self.server} if self.server is not None else {}

    async def _prepare(self, timeout: float = 30.0) -> None:
        nc = await connect(resolve(self.url, "coordinator", self.data), "hive-up", deadline=10, persistent=False)
        try:
            if isinstance(self.server, EmbeddedCluster):
                # a new cluster answers JetStream requests once it has elected a meta leader
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        await nc.jetstream(timeout=1).account_info()
                        break
                    except Exception as exc:
                        if time.monotonic() > deadline:
                            raise HiveError(f"the JetStream cluster did not become ready within {timeout:g}s") from exc
                        await asyncio.sleep(0.2)
            await ensure_streams(nc.jetstream(timeout=10), replicas=self.replicas)
        finally:
            await nc.close()

    async def _wait_ready(self, timeout: float = 30.0) -> None:
        """Until the coordinator answers and sees every node registered."""
        from hive.client import HiveClient

        async with await HiveClient.connect(self.url, self.data) as client:
            deadline = time.monotonic() + timeout
            while True:
                expected = sum(name.startswith("node-") for name in self.supervised)  # less those gone
                try:
                    nodes = await client.nodes()
                    if sum(n["state"] == "active" for n in nodes) >= expected:
                        return
                except HiveError:
                    pass
                if time.monotonic() > deadline:
                    raise HiveError(f"the cluster did not come up within {timeout:g}s; see {self.data / 'logs'}")
                await asyncio.sleep(0.2)

    async def _supervising(self, work: Coroutine[Any, Any, Any]) -> Any:
        """Run ``work`` (the ready wait, the demo) while the watch goes on every 0.5 s."""
        task = asyncio.ensure_future(work)
        try:
            while not task.done():
                self._watch()
                await asyncio.wait([task], timeout=0.5)
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait([task])  # let it close its connection

    def log_of(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _spawn(self, name: str, args: list[str]) -> int:
        with open(self.log_of(name), "ab") as log_file:  # the child keeps its own copy
            proc = subprocess.Popen(
                args,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=tied_to_parent(),  # a SIGKILLed hive up takes them along
            )
        self.children[name] = proc
        child = self.supervised.setdefault(name, Supervised(args))
        child.started = time.monotonic()
        return proc.pid

    def _banner(self, logs: Path) -> None:
        if isinstance(self.server, EmbeddedCluster):
            stores = self.data / "jetstream-<i>"
            server = f"{self.url} (embedded cluster of {len(self.server)}, stores {stores}, replicas {self.replicas})"
        elif self.server:
            server = f"{self.url} (embedded, store {self.data / 'jetstream'})"
        else:
            server = f"{self.url} (external)"
        coordinator = self.children.get("coordinator")
        lines = [
            "[bold]HiveMind is up[/bold]",
            f"  nats server   {server}",
            f"  coordinator   pid {coordinator.pid if coordinator else '-'}, projection {self.data / 'coordinator.db'}",
            *(
                [f"  standbys      {', '.join(n for n in self.children if n.startswith('coordinator-'))}"]
                if self.coordinator_count > 1
                else []
            ),
            f"  nodes         {', '.join(n for n in self.supervised if n.startswith('node-')) or 'none'}",
            *([f"  web           {self._web_login()}"] if self.web_port is not None else []),
            f"  logs          {logs}/",
            f"  credentials   {auth_dir(self.data)} (you: operator {local_person()}; `hive creds list`)",
            "  try           hive submit --wait -- echo hello   |   hive tasks   |   hive nodes   |   hive events -f",
            "  stop          Ctrl-C",
        ]
        render.out.print(lines[0], markup=True)
        render.out.print("\n".join(lines[1:]))  # (paths may hold brackets)

    def _web_login(self) -> str:
        """The dashboard's login URL for the local operator (like Jupyter's token URL)."""
        from hive.web.auth import DEFAULT_TTL_S, load_secret, sign

        token = sign(load_secret(auth_dir(self.data)), local_person(), DEFAULT_TTL_S)
        return f"http://127.0.0.1:{self.web_port}/?token={token}  (`hive web token NAME` for others)"

    def _watch(self) -> None:
        """Notice exits, start the restarts that are due; raise CrashLoop when the
        coordinator or the server is given up on. Never waits for a backoff."""
        now = time.monotonic()
        for name, proc in list(self.children.items()):
            code = proc.poll()
            if code is not None:
                del self.children[name]
                self._exited(name, code, f"exited with code {code}", now)
        for name, embedded in self.embedded().items():
            server = self.supervised.get(name)
            if server is not None and server.due is None:
                code = embedded.poll()
                if code is not None:
                    self._exited(name, code, f"exited with code {code}", now)
        for name, child in list(self.supervised.items()):
            if self.fatal is None and child.due is not None and child.due <= time.monotonic():
                child.due = None
                self._restart(name)
        if self.fatal is not None:
            raise CrashLoop(self.fatal)

    def _exited(self, name: str, code: int | None, what: str, now: float) -> None:
        child = self.supervised[name]
        decision = decide(
            code, child.started, now, child.history, may_leave=name.startswith("node-"), policy=self.policy
        )
        child.history = decision.history
        log = self.log_of(name)
        if decision.action == "leave":
            del self.supervised[name]
            say(f"{name} left (drained)")
        elif decision.action == "give_up":
            del self.supervised[name]
            window = f"{self.policy.crash_window:g}s"
            say(
                f"error: {name} crashed {decision.history.quick_exits} times within {window} of starting; giving up (see {log})"
            )
            if not name.startswith("node-") and name != "web":  # the cluster runs on without its dashboard
                self.fatal = f"{name} crashed"
        else:
            child.due = decision.at
            say(f"{name} {what}; restarting in {decision.delay:g}s (see {log})")

    def _restart(self, name: str) -> None:
        child = self.supervised[name]
        embedded = self.embedded().get(name)
        if embedded is not None:
            child.started = time.monotonic()
            try:
                embedded.start()  # same store, port and credentials
            except HiveError as exc:
                self._exited(name, None, f"did not start ({exc})", time.monotonic())
                return
            pid = embedded.proc.pid if embedded.proc else 0
        else:
            pid = self._spawn(name, child.args)
        say(f"{name} restarted (pid {pid})")

    def stop(self, grace_s: float = 10.0) -> None:
        # Another Ctrl-C or SIGTERM while stopping hurries the stop (SIGKILL what is left)
        # instead of abandoning it half way: nothing may outlive `hive up`.
        hurry = threading.Event()

        def hurried(signum: int, frame: object) -> None:
            if not hurry.is_set():
                say("stopping now: killing what is left")
            hurry.set()

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, hurried)
        order = sorted(self.children, key=lambda n: n.startswith("coordinator"))  # nodes first
        for name in order:
            proc = self.children[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for name in order:
            proc = self.children[name]
            while proc.poll() is None and not hurry.is_set() and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.children.clear()
        self.supervised.clear()
        if self.server is not None:
            if hurry.is_set():
                self.server.kill()
            else:
                self.server.stop()
            self.server = None
        state = self.data / STATE_FILE
        state.unlink(missing_ok=True)
        if not self.stopping:
            self.stopping = True
            render.out.print("stopped")


def say(line: str) -> None:
    """One line on stderr (no markup: paths may hold brackets)."""
    render.err.print(line, markup=False)
