"""A host of its own for a test process: a Linux network namespace joined to this one by a
veth pair (iproute2). ``cut()`` takes the link down (both ends lose carrier: packets are
dropped, nothing is refused, as when a cable or a switch dies) and ``restore()`` brings it
back with its addresses. Needs root (CI runs as root); ``available()`` says why not."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess

_counter = itertools.count(1)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=10)


def available() -> str | None:
    """None when namespaces can be made here, else the reason they cannot."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"hvprobe{os.getpid()}"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


class Netns:
    """Namespace ``hv<pid>-<n>``; this side is ``host_ip``, the namespace side ``ip``."""

    def __init__(self) -> None:
        n = next(_counter)
        tag = f"{os.getpid() % 100000}{n}"
        self.name = f"hv{tag}"
        self.outside = f"hvo{tag}"[:15]  # interface names: 15 characters at most
        self.inside = f"hvi{tag}"[:15]
        subnet = (os.getpid() * 7 + n) % 250 + 1
        self.host_ip = f"10.213.{subnet}.1"
        self.ip = f"10.213.{subnet}.2"

    def create(self) -> Netns:
        _ip("netns", "add", self.name)
        try:
            _ip("link", "add", self.outside, "type", "veth", "peer", "name", self.inside)
            _ip("link", "set", self.inside, "netns", self.name)
            _ip("addr", "add", f"{self.host_ip}/24", "dev", self.outside)
            _ip("link", "set", self.outside, "up")
            self.exec_ip("addr", "add", f"{self.ip}/24", "dev", self.inside)
            self.exec_ip("link", "set", self.inside, "up")
            self.exec_ip("link", "set", "lo", "up")
        except Exception:
            self.delete()
            raise
        return self

    def exec_ip(self, *args: str) -> None:
        _ip("netns", "exec", self.name, "ip", *args)

    @property
    def prefix(self) -> list[str]:
        """Put before a command line to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        _ip("link", "set", self.outside, "down")

    def restore(self) -> None:
        _ip("link", "set", self.outside, "up")

    def delete(self) -> None:
        _ip("link", "del", self.outside, check=False)  # takes its peer with it
        _ip("netns", "del", self.name, check=False)

    def __enter__(self) -> Netns:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.delete()
