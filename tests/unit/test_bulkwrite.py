"""Filling a SQLite file from forked children (``edge.bulkwrite``), on real files and real
processes: the batches land in order, a failure is raised with its reason and stops the
batches after it, an abort leaves no child behind."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest

from coordinator.projection import apply
from coordinator.state import ClusterState
from coordinator.store import ProjectionStore
from edge.bulkwrite import BulkWriteError, ForkedWriter
from tests.unit.factories import assign, complete, register, submit
from tests.unit.test_store import rows


def fresh(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (i INTEGER, who INTEGER)")
    db.close()


def test_batches_land_in_the_order_they_were_submitted(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    fresh(path)

    def batch(i: int):  # type: ignore[no-untyped-def]
        def job(conn: sqlite3.Connection) -> None:
            if i == 0:
                time.sleep(0.3)  # the first is slow: the others wait for it
            conn.executemany("INSERT INTO t VALUES (?, ?)", [(i * 10 + k, os.getpid()) for k in range(10)])

        return job

    async def main() -> None:
        writer = ForkedWriter(str(path), "PRAGMA synchronous=OFF;")
        for i in range(5):
            writer.submit(batch(i))
        await writer.finish()
        assert writer.children == []  # every child reaped

    asyncio.run(main())
    got = rows(path, "SELECT i, who FROM t ORDER BY rowid")
    assert [i for i, _ in got] == list(range(50))
    assert len({who for _, who in got}) == 5 and os.getpid() not in {who for _, who in got}


def test_a_failed_batch_is_raised_and_nothing_after_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    fresh(path)

    def good(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (1, 0)")

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO nowhere VALUES (1)")

    async def main() -> None:
        writer = ForkedWriter(str(path))
        writer.submit(good)
        writer.submit(bad)
        writer.submit(good)
        with pytest.raises(BulkWriteError, match="no such table: nowhere"):
            await writer.finish()

    asyncio.run(main())
    assert rows(path, "SELECT i FROM t") == [(1,)]


def test_an_abort_leaves_no_child(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    fresh(path)

    async def main() -> None:
        writer = ForkedWriter(str(path))
        writer.submit(lambda conn: time.sleep(30))
        pids = list(writer.children)
        writer.abort()
        for pid in pids:
            with pytest.raises(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reaped already
        assert writer.children == []

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 10  # (killed, not waited for: a sleep of 30 s)


def test_a_bulk_file_flushed_in_batches_ends_like_a_live_one(tmp_path: Path) -> None:
    """Flushes while tasks are running and after they finished: a task row written twice,
    an allocation written and then deleted, trust rows in order."""
    log = [register("n1"), register("n2")]
    for i in range(30):
        node = f"n{1 + i % 2}"
        log += [submit(f"t{i}"), assign(f"t{i}", node)]
        if i % 3:
            log.append(complete(f"t{i}", node))

    async def fill(path: Path, bulk: bool) -> None:
        store = await ProjectionStore.open(path, bulk=bulk)
        state = ClusterState()
        for seq, event in enumerate(log, 1):
            apply(state, event, seq)
            if seq % 7 == 0:
                await store.flush(state)
        await store.flush(state)
        await store.close()

    asyncio.run(fill(tmp_path / "live.db", bulk=False))
    asyncio.run(fill(tmp_path / "bulk.db", bulk=True))
    for table in ("tasks", "nodes", "allocations", "trust_changes", "checkpoint"):
        query = f"SELECT * FROM {table} ORDER BY 1, 2"
        assert rows(tmp_path / "bulk.db", query) == rows(tmp_path / "live.db", query), table
    assert rows(tmp_path / "bulk.db", "SELECT count(*) FROM allocations") == [(10,)]


def test_a_file_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(BulkWriteError, match="cannot make the projection file"):
        asyncio.run(ProjectionStore.open(tmp_path / "file" / "replay.db", bulk=True))


ORPHANS = """
import sys, time
from edge.bulkwrite import ForkedWriter

def first(conn):
    conn.execute("INSERT INTO t VALUES (1, 1)")

def slow(conn):
    time.sleep(1.0)  # writes nothing: it succeeds even though its file is gone by then

def late(conn):
    conn.execute("INSERT INTO t VALUES (3, 3)")

writer = ForkedWriter(sys.argv[1])
for job in (first, slow, late):
    writer.submit(job)
time.sleep(0.3)  # (the first is written)
print("ready", flush=True)
time.sleep(60)
"""


def test_children_of_a_killed_parent_never_write_into_a_new_file_of_that_name(tmp_path: Path) -> None:
    """A rebuild killed with -9 leaves its children running; the next rebuild makes a new
    file under the same name at once. What the orphans still write goes to the old file
    (where SQLite refuses it: the file was deleted), never into the new one."""
    import subprocess
    import sys

    path = tmp_path / "f.db"
    fresh(path)
    parent = subprocess.Popen([sys.executable, "-c", ORPHANS, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "ready"
        parent.kill()
        parent.wait()
        path.unlink()
        fresh(path)  # while the second child sleeps and the third waits for it
        time.sleep(2.0)  # (both children are done by now)
    finally:
        parent.kill()
    assert rows(path, "SELECT * FROM t") == []


def test_a_rebuild_into_a_path_that_cannot_be_a_file_is_one_clear_error(tmp_path: Path) -> None:
    from coordinator.replay import rebuild
    from edge.config import Target
    from edge.errors import HiveError

    (tmp_path / "file").write_text("")
    with pytest.raises(HiveError, match=r"cannot make the projection file .*: Not a directory"):
        asyncio.run(rebuild(Target("nats://127.0.0.1:1"), tmp_path / "file" / "replay.db"))


def test_where_no_process_can_be_forked_the_batch_is_written_here_in_turn(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "f.db"
    fresh(path)
    real_fork = os.fork

    def insert(i: int):  # type: ignore[no-untyped-def]
        def job(conn: sqlite3.Connection) -> None:
            if i == 0:
                time.sleep(0.3)  # the forked one before it is slow: it still goes first
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, os.getpid()))

        return job

    async def main() -> None:
        writer = ForkedWriter(str(path))
        writer.submit(insert(0))
        monkeypatch.setattr(os, "fork", lambda: (_ for _ in ()).throw(OSError(12, "Cannot allocate memory")))
        writer.submit(insert(1))
        monkeypatch.setattr(os, "fork", real_fork)
        writer.submit(insert(2))
        await writer.finish()

    asyncio.run(main())
    got = rows(path, "SELECT i, who FROM t ORDER BY rowid")
    assert [i for i, _ in got] == [0, 1, 2]
    assert got[1][1] == os.getpid() and got[0][1] != os.getpid() and got[2][1] != os.getpid()
