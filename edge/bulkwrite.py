"""Filling a fresh SQLite file from forked children, while this process goes on working.

A rebuild folds the log on one core and writes its rows: a fifth to a quarter of its time
is building rows and SQLite. Neither overlaps the fold on a thread: Python's ``sqlite3``
lets go of the GIL for each row's step and must take it back from a fold that never idles,
so a writer thread waits a switch interval (5 ms) per row. Sending the rows to a writer
process moves SQLite off this core but not the rows: encoding and piping 100 MB of them
cost this process about what it saved. A forked child needs nothing sent: it has the
state as it was at the fork (copy-on-write), builds the rows from it and writes them; this
process pays for the fork (a few ms) and goes on folding. Redis's background save works
the same way.

Children write one after another, in the order they were forked: each waits for the one
before it to report (a pipe each: ``ok``, or the reason it failed, which is passed on), so
the file gets the batches in order. ``finish`` waits for the last; a failure anywhere is a
``BulkWriteError`` with the first failure's one-line reason. Where no process can be forked
(no memory for one, say), the batch is written in this process, after those before it.

POSIX only (``os.fork``), and only for a file nobody reads while it is written (a
rebuild's). A child touches no asyncio, socket or file of its parent and leaves with
``os._exit``, so nothing of the parent runs twice. Nor may the process use SQLite on
another thread meanwhile: a child inherits whatever lock SQLite held there at the fork,
held forever. ``hive replay`` and the benchmarks rebuild in a process that uses SQLite
through the rebuild alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from collections.abc import Callable

from edge.errors import HiveError

Job = Callable[[sqlite3.Connection], None]
OK = b"ok"
DIED = b"a writer process died"  # (the report of a child that ended without one)


class BulkWriteError(HiveError):
    """Writing the file failed; the message is the child's one-line reason."""


class ForkedWriter:
    def __init__(self, path: str, pragmas: str = "") -> None:
        self.path = path
        self.pragmas = pragmas
        self.last: int | None = None  # read end of the newest child's report
        self.children: list[int] = []

    def submit(self, job: Job) -> None:
        """Fork a child that waits for the previous one, then runs ``job`` on a connection
        of its own to the file and commits. Returns at once."""
        self._reap()
        read_end, write_end = os.pipe()
        before = self.last
        try:
            pid = os.fork()
        except OSError:  # (no memory for another process, say): write it here, in turn
            os.close(read_end)
            os.close(write_end)
            self._write_here(job)
            return
        if pid == 0:  # the child: never returns
            os.close(read_end)
            with contextlib.suppress(ValueError):  # (not the main thread: no handlers of the parent's)
                signal.set_wakeup_fd(-1)  # a signal to the child must not wake the parent's loop
            os._exit(_child(self.path, self.pragmas, job, before, write_end))
        os.close(write_end)  # (so that a later child does not hold it open)
        if before is not None:
            os.close(before)
        self.last = read_end
        self.children.append(pid)

    def _write_here(self, job: Job) -> None:
        if self.last is not None:
            fd, self.last = self.last, None
            try:
                report = _read_blocking(fd)  # (the children before it write first)
            finally:
                os.close(fd)
            _check(report)
        try:
            conn = _connect(self.path, self.pragmas)
            try:
                job(conn)
                conn.commit()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise BulkWriteError(f"writing {self.path} failed: {type(exc).__name__}: {exc}") from None

    async def finish(self) -> None:
        """Wait for every child; raise ``BulkWriteError`` if any failed."""
        if self.last is None:
            return
        fd, self.last = self.last, None
        try:
            report = await _read_all(fd)
        finally:
            os.close(fd)
        self._reap(block=True)
        _check(report)

    def abort(self) -> None:
        """Stop every child; the file is left half written (the next rebuild deletes it)."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._reap(block=True)
        if self.last is not None:
            os.close(self.last)
            self.last = None

    def _reap(self, block: bool = False) -> None:
        waiting = []
        for pid in self.children:
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
                if done == 0:
                    waiting.append(pid)
        self.children = waiting


async def _read_all(fd: int) -> bytes:
    """Everything until end of file on ``fd``, without blocking the loop."""
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    done = loop.create_future()

    def readable() -> None:
        chunk = os.read(fd, 65536)
        if chunk:
            chunks.append(chunk)
        elif not done.done():
            done.set_result(None)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
    return b"".join(chunks)


def _child(path: str, pragmas: str, job: Job, before: int | None, report: int) -> int:
    """The child's whole life: its exit status."""
    try:
        # the file is opened before the wait, so that a child left behind by a parent that
        # was killed writes into that parent's file, never into the one a new rebuild makes
        # under the same name
        conn = _connect(path, pragmas)
        try:
            if before is not None:
                previous = _read_blocking(before)
                if previous != OK:
                    os.write(report, previous or DIED)
                    return 1
            job(conn)
            conn.commit()
        finally:
            conn.close()
        os.write(report, OK)
        return 0
    except BaseException as exc:  # (its parent raises this line)
        with contextlib.suppress(OSError):
            os.write(report, f"writing {path} failed: {type(exc).__name__}: {exc}".encode()[:1000])
        return 1


def _connect(path: str, pragmas: str) -> sqlite3.Connection:
    """A connection to ``path`` with ``pragmas`` run, which opens the file now."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(pragmas or "PRAGMA schema_version;")
    except BaseException:
        conn.close()
        raise
    return conn


def _check(report: bytes) -> None:
    if report != OK:
        raise BulkWriteError((report or DIED).decode(errors="replace"))


def _read_blocking(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)
