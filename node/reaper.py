"""The node's watchdog: work a node started dies with the node.

A task process runs in a process group of its own (so that a stop reaches its children),
which also means that a SIGKILL of the node's process group does not reach it: without
help it would run on, and finish, while the coordinator retries the task elsewhere.

So each node starts one reaper, ``python -m node.reaper``, in a session of its own (a
signal to the node's process group does not reach it), with a pipe on its stdin. The node
writes one short line per change, ``+<pgid>`` when a task's process group started and
``-<pgid>`` when it is gone. When the reaper reads EOF, because the node died or closed the
pipe on a clean shutdown, it SIGKILLs every process group still registered, force-removes
the containers labelled ``hive.node=<node id>`` if the node offers docker, and exits. A
clean shutdown stops the tasks first, so the reaper then finds nothing to do.

The reaper keeps the registered groups in ``<work dir>/pgids``. If it was killed together
with the node, the next start of the same node kills the groups recorded there that still
exist and really belong to this node: some member's environment holds
``HIVE_NODE_ID=<node id>`` (the process executor sets it), so an unrelated process that got
a recycled pid is never touched.

The node side (:class:`Reaper`) costs one non-blocking ``os.write`` per process task start
and end; function tasks never touch it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import structlog

log = structlog.get_logger("hive.node.reaper")

STATE_FILE = "pgids"
CLOSE_TIMEOUT_S = 10.0  # how long a clean shutdown waits for the reaper to exit
DOCKER_TIMEOUT_S = 10  # each docker API call of the reaper
HARD_LIMIT_S = 45  # the reaper's whole cleanup, docker included: SIGALRM ends it after that
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)  # where ``node`` is importable from


# -- the node's side ----------------------------------------------------------------------


class Reaper:
    """The node's handle on its reaper process: register task process groups with
    :meth:`track` / :meth:`untrack`, end it with :meth:`close`.

    If the reaper process dies while the node runs, the node notices (its exit, a broken
    pipe, or its return code at the next write), logs one warning and starts a new one,
    which gets every group still registered."""

    def __init__(self, node_id: str, work_dir: Path, docker: bool) -> None:
        self.node_id = node_id
        self.state_file = work_dir / STATE_FILE
        self.docker = docker
        self.groups: set[int] = set()
        self._proc: asyncio.subprocess.Process | None = None
        self._fd: int | None = None  # the pipe's write end, non-blocking
        self._pending = bytearray()  # what a full pipe did not take yet, written once it drains
        self._waiting = False  # for the pipe to take self._pending
        self._closing = False
        self._respawning: asyncio.Task[None] | None = None
        self._watchers: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, node_id: str, work_dir: Path, docker: bool) -> Reaper:
        """Sweep what a previous life of this node left running (when its reaper died with
        it), then start this life's reaper."""
        reaper = cls(node_id, work_dir, docker)
        killed = await asyncio.to_thread(sweep, node_id, reaper.state_file)
        if killed:
            log.warning("killed task process groups that a previous run of this node left", pgids=killed)
        await reaper._spawn()
        return reaper

    def track(self, pgid: int) -> None:
        """A task's process group started: the reaper kills it if the node dies."""
        self.groups.add(pgid)
        self._send(b"+%d\n" % pgid)

    def untrack(self, pgid: int) -> None:
        """The group is gone (stopped, or its leader ended)."""
        self.groups.discard(pgid)
        self._send(b"-%d\n" % pgid)

    async def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Clean shutdown (tasks already stopped): close the pipe, so the reaper sweeps
        whatever is still registered and exits; wait for it, at most ``timeout``."""
        self._closing = True
        if self._respawning is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._respawning), timeout)
        for watcher in self._watchers:
            watcher.cancel()
        self._drop()
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("the reaper did not exit in time; leaving it to finish", pid=proc.pid)

    # -- internals

    def _send(self, line: bytes) -> None:
        if self._fd is None or (self._proc is not None and self._proc.returncode is not None):
            self._lost()  # restarting, or it died: the new one gets all of self.groups
            return
        if self._waiting:  # keep the order: after what waits already
            self._pending += line
            return
        data = bytes(self._pending) + line if self._pending else line
        try:
            written = os.write(self._fd, data) if data else 0
        except BlockingIOError:  # a full pipe (the reaper is busy); never block the node
            written = 0
        except OSError:  # BrokenPipeError: the reaper is gone
            self._lost()
            return
        self._pending = bytearray(data[written:])
        if self._pending:
            asyncio.get_running_loop().add_writer(self._fd, self._drained)
            self._waiting = True

    def _drained(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_writer(self._fd)
        self._waiting = False
        self._send(b"")

    async def _spawn(self) -> None:
        read_end, write_end = os.pipe()  # both close-on-exec: no task inherits them
        try:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
            args = ["--node-id", self.node_id, "--state", str(self.state_file), *(["--docker"] if self.docker else [])]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "node.reaper",
                *args,
                stdin=read_end,
                env=env,
                start_new_session=True,  # a signal to the node's process group does not reach it
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        os.set_blocking(write_end, False)
        self._proc, self._fd, self._pending = proc, write_end, bytearray()
        watcher = asyncio.create_task(self._watch(proc))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        if self.groups:
            self._send(b"".join(b"+%d\n" % pgid for pgid in sorted(self.groups)))

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        await proc.wait()
        if proc is self._proc:
            self._lost()

    def _lost(self) -> None:
        """The reaper died under a running node: start another (once at a time)."""
        if self._closing or self._respawning is not None:
            return
        proc = self._proc
        self._drop()
        log.warning(
            "the reaper exited while the node runs; starting a new one",
            returncode=proc.returncode if proc is not None else None,
            tracked=len(self.groups),
        )
        self._respawning = asyncio.get_running_loop().create_task(self._respawn())

    async def _respawn(self) -> None:
        try:
            await self._spawn()
        except Exception as exc:  # fork failure: try again at the next change
            log.warning("cannot start a new reaper", error=str(exc))
        finally:
            self._respawning = None

    def _drop(self) -> None:
        fd, self._fd, self._pending = self._fd, None, bytearray()
        if fd is not None:
            if self._waiting:
                asyncio.get_running_loop().remove_writer(fd)
            os.close(fd)
        self._waiting = False


def sweep(node_id: str, state_file: Path) -> list[int]:
    """SIGKILL the process groups recorded in ``state_file`` that still have a member whose
    environment says ``HIVE_NODE_ID=<node_id>``; empty the file. Returns the groups killed.
    Without ``/proc`` (not Linux) nothing can be verified, so nothing is killed."""
    try:
        recorded = {int(word) for word in state_file.read_text().split() if word.isdigit()}
    except FileNotFoundError:
        return []
    recorded -= {0, 1, os.getpgrp()}
    ours = _groups_of(node_id, recorded)
    killed = []
    for pgid in sorted(ours):
        try:
            os.killpg(pgid, signal.SIGKILL)
            killed.append(pgid)
        except (ProcessLookupError, PermissionError):
            pass
    _save(state_file, set())
    return killed


def _groups_of(node_id: str, candidates: set[int]) -> set[int]:
    """Those of ``candidates`` that have a live member started by a task of ``node_id``."""
    if not candidates:
        return set()
    marker = f"HIVE_NODE_ID={node_id}".encode()
    found: set[int] = set()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return set()
    for name in entries:
        if not name.isdigit():
            continue
        try:
            pgid = os.getpgid(int(name))
            if pgid not in candidates or pgid in found:
                continue
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in environ.split(b"\0"):
            found.add(pgid)
    return found


def _save(state_file: Path, groups: set[int]) -> None:
    tmp = state_file.with_name(state_file.name + ".tmp")
    try:
        tmp.write_text("".join(f"{pgid}\n" for pgid in sorted(groups)))
        os.replace(tmp, state_file)
    except OSError:
        pass  # the node's data dir is gone; only the restart sweep loses its record


# -- the reaper process -------------------------------------------------------------------


def _say(level: str, event: str, **kw: object) -> None:
    """One log line on the inherited stderr, shaped like the node's own; never raises
    (the stderr pipe may be gone with the node)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
    try:
        if sys.stderr.isatty():
            pairs = " ".join(f"{k}={v}" for k, v in kw.items())
            line = f"{stamp} [{level:<8}] {event:<40} {pairs}"
        else:
            line = json.dumps({"event": event, **kw, "level": level, "logger": "hive.reaper", "timestamp": stamp})
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _follow(state_file: Path) -> set[int]:
    """Read the node's lines until EOF; keep ``state_file`` up to date. Returns what is
    still registered."""
    groups: set[int] = set()
    partial = b""
    while True:
        try:
            chunk = os.read(0, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            return groups
        *lines, partial = (partial + chunk).split(b"\n")
        before = set(groups)
        for line in lines:
            op, number = line[:1], line[1:].strip()
            if not number.isdigit():
                continue
            if op == b"+":
                groups.add(int(number))
            elif op == b"-":
                groups.discard(int(number))
        if groups != before:
            _save(state_file, groups)


def _kill_groups(groups: set[int]) -> list[int]:
    killed = []
    for pgid in sorted(groups - {0, 1, os.getpgrp()}):
        try:
            os.killpg(pgid, signal.SIGKILL)
            killed.append(pgid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def _remove_containers(node_id: str) -> list[str]:
    import docker  # only a docker node pays for the import, and only at the end

    client = docker.from_env(timeout=DOCKER_TIMEOUT_S)
    removed = []
    try:
        # sparse: the list alone, no inspect per container (one may vanish in between)
        found = client.containers.list(all=True, filters={"label": f"hive.node={node_id}"}, sparse=True)
        for container in found:
            try:
                container.remove(force=True)
                removed.append(",".join(name.lstrip("/") for name in container.attrs.get("Names", [])))
            except docker.errors.NotFound:
                pass
    finally:
        client.close()
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.reaper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--state", required=True, type=Path, help="file that records the registered groups")
    parser.add_argument("--docker", action="store_true", help="also remove the node's containers")
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only EOF ends it
    groups = _follow(args.state)
    signal.alarm(HARD_LIMIT_S)  # never hang: SIGALRM's default action ends the process
    killed = _kill_groups(groups)
    _save(args.state, set())
    if killed:
        _say(
            "warning",
            "the node's pipe closed; killed the task process groups it left",
            node_id=args.node_id,
            pgids=killed,
        )
    if args.docker:
        try:
            removed = _remove_containers(args.node_id)
        except Exception as exc:  # no engine, a timeout: nothing more to do
            _say("warning", "cannot remove the node's containers", node_id=args.node_id, error=str(exc))
        else:
            if removed:
                _say(
                    "warning",
                    "the node's pipe closed; removed its containers",
                    node_id=args.node_id,
                    containers=removed,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
