"""The coordinator's SQLite store, on real files: what a flush writes, and a rebuild's bulk
file. (That a replay's tables equal the live ones, row for row, is the property test's:
tests/unit/test_resources_property.py folds into a bulk file and compares.)"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from coordinator.projection import apply
from coordinator.state import ClusterState, TaskView
from coordinator.store import ProjectionStore
from events import Resources
from tests.unit.factories import assign, complete, register, start, submit


def rows(path: Path, query: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def test_an_allocation_is_deleted_only_where_it_was_written(tmp_path: Path) -> None:
    async def run() -> list[list[str]]:
        store = await ProjectionStore.open(tmp_path / "p.db")
        state = await store.load(ClusterState())
        seen: list[list[str]] = []
        for event in (register("n1"), submit("a", resources=Resources(cpu=1)), assign("a", "n1")):
            apply(state, event, state.seq + 1)
        await store.flush(state)  # a's allocation is written
        seen.append([r[0] for r in rows(tmp_path / "p.db", "SELECT task_id FROM allocations")])
        for event in (submit("b"), assign("b", "n1"), start("b", "n1"), complete("b", "n1")):
            apply(state, event, state.seq + 1)  # b's allocation comes and goes between flushes
        for event in (start("a", "n1"), complete("a", "n1")):
            apply(state, event, state.seq + 1)
        changes = store.collect(state)
        assert changes.allocs_gone == [("a",)]  # no DELETE for b, which was never written
        await store.write(changes)
        seen.append([r[0] for r in rows(tmp_path / "p.db", "SELECT task_id FROM allocations")])
        await store.close()

        # a restart knows which allocations have rows
        store = await ProjectionStore.open(tmp_path / "q.db")
        state = await store.load(ClusterState())
        for event in (register("n1"), submit("c"), assign("c", "n1")):
            apply(state, event, state.seq + 1)
        await store.flush(state)
        await store.close()
        store = await ProjectionStore.open(tmp_path / "q.db")
        state = await store.load(ClusterState())
        for event in (start("c", "n1"), complete("c", "n1")):
            apply(state, event, state.seq + 1)
        await store.flush(state)
        await store.close()
        seen.append([r[0] for r in rows(tmp_path / "q.db", "SELECT task_id FROM allocations")])
        return seen

    assert asyncio.run(run()) == [["a"], [], []]


def test_what_changes_while_a_flush_is_written_goes_into_the_next(tmp_path: Path) -> None:
    async def run() -> tuple[str, str]:
        store = await ProjectionStore.open(tmp_path / "p.db")
        state = await store.load(ClusterState())
        for event in (register("n1"), submit("a")):
            apply(state, event, state.seq + 1)
        writing = asyncio.ensure_future(store.write(store.collect(state)))
        apply(state, assign("a", "n1"), state.seq + 1)  # while the rows above are written
        await writing
        first = rows(tmp_path / "p.db", "SELECT state FROM tasks")[0][0]
        await store.flush(state)
        second = rows(tmp_path / "p.db", "SELECT state FROM tasks")[0][0]
        await store.close()
        return str(first), str(second)

    assert asyncio.run(run()) == ("queued", "assigned")


def test_a_bulk_file_ends_like_a_live_one(tmp_path: Path) -> None:
    log = [register("n1"), *[e for i in range(20) for e in (submit(f"t{i}"), assign(f"t{i}", "n1"))]]

    async def fill(path: Path, bulk: bool) -> None:
        store = await ProjectionStore.open(path, bulk=bulk)
        state = ClusterState()
        for seq, event in enumerate(log, 1):
            apply(state, event, seq)
        await store.flush(state)
        await store.close()

    asyncio.run(fill(tmp_path / "live.db", bulk=False))
    asyncio.run(fill(tmp_path / "bulk.db", bulk=True))
    schema = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
    assert rows(tmp_path / "bulk.db", schema) == rows(tmp_path / "live.db", schema)  # the same tables and indexes
    assert rows(tmp_path / "bulk.db", "PRAGMA journal_mode") == [("wal",)]
    for table in ("tasks", "nodes", "allocations", "trust_changes", "checkpoint"):
        query = f"SELECT * FROM {table} ORDER BY 1"
        assert rows(tmp_path / "bulk.db", query) == rows(tmp_path / "live.db", query), table


def test_the_rows_of_a_flush_that_failed_go_into_the_next(tmp_path: Path) -> None:
    async def run() -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], int]:
        store = await ProjectionStore.open(tmp_path / "p.db")
        state = await store.load(ClusterState())
        for event in (register("n1"), submit("a"), assign("a", "n1"), start("a", "n1"), complete("a", "n1")):
            apply(state, event, state.seq + 1)
        real = store.db.executemany
        failures = 1

        async def failing(sql: str, rows: object) -> object:
            nonlocal failures
            if sql.startswith("INSERT INTO trust_changes") and failures:
                failures -= 1
                raise sqlite3.OperationalError("disk I/O error")  # after the task's row was written
            return await real(sql, rows)

        store.db.executemany = failing  # type: ignore[method-assign]
        try:
            try:
                await store.flush(state)
            except sqlite3.OperationalError:
                pass
            else:
                raise AssertionError("the flush did not fail")
            rolled_back = rows(tmp_path / "p.db", "SELECT task_id FROM tasks")
            apply(state, submit("b"), state.seq + 1)
            await store.flush(state)  # the next flush: its own rows and the failed one's
        finally:
            await store.close()
        checkpoint = rows(tmp_path / "p.db", "SELECT seq FROM checkpoint")[0][0]
        assert isinstance(checkpoint, int)
        return rolled_back, rows(tmp_path / "p.db", "SELECT task_id, state FROM tasks ORDER BY 1"), checkpoint

    rolled_back, tasks, checkpoint = asyncio.run(run())
    assert rolled_back == []
    assert tasks == [("a", "completed"), ("b", "queued")]
    assert checkpoint == 6
    trust = rows(tmp_path / "p.db", "SELECT task_id, cause FROM trust_changes")
    assert trust == [("a", "completed")]  # once: the failed insert was rolled back


def test_a_row_leaves_defaults_out_and_reads_back_whole(tmp_path: Path) -> None:
    from coordinator.views import task_detail
    from events.codec import full_builtins

    async def run() -> tuple[bytes, ClusterState, ClusterState]:
        store = await ProjectionStore.open(tmp_path / "p.db")
        state = await store.load(ClusterState())
        for event in (register("n1"), submit("a"), assign("a", "n1"), start("a", "n1"), complete("a", "n1")):
            apply(state, event, state.seq + 1)
        await store.flush(state)
        await store.close()
        store = await ProjectionStore.open(tmp_path / "p.db")
        again = await store.load(ClusterState())
        again.tasks.update(await store.tasks_by_id(["a"]))
        await store.close()
        return rows(tmp_path / "p.db", "SELECT data FROM tasks")[0][0], state, again  # type: ignore[return-value]

    data, state, again = asyncio.run(run())
    assert b"stdout" not in data and b"cancel_requested" not in data  # at their defaults
    assert again.tasks["a"] == state.tasks["a"]
    detail = task_detail(again.tasks["a"])
    assert detail == full_builtins(state.tasks["a"]) and detail["stdout"] == "" and detail["spec"]["max_attempts"] == 1


def test_a_row_written_with_every_field_compares_equal_to_a_lean_one(tmp_path: Path) -> None:
    """A live file from before defaults were left out against a rebuild made now: the same
    views, so `hive replay` finds no difference; a real difference is still found."""
    import msgspec

    from coordinator.replay import compare
    from events.codec import full_builtins

    async def run() -> None:
        store = await ProjectionStore.open(tmp_path / "new.db")
        state = await store.load(ClusterState())
        for event in (register("n1"), submit("a"), assign("a", "n1"), submit("b")):
            apply(state, event, state.seq + 1)
        await store.flush(state)
        await store.close()

    asyncio.run(run())
    old = tmp_path / "old.db"
    db = sqlite3.connect(tmp_path / "new.db")
    db.execute(f"VACUUM INTO '{old}'")
    db.close()
    db = sqlite3.connect(old)
    for task_id, data in db.execute("SELECT task_id, data FROM tasks").fetchall():
        whole = msgspec.json.encode(full_builtins(msgspec.json.decode(data, type=TaskView)))
        assert len(whole) > len(data) + 200
        db.execute("UPDATE tasks SET data = ? WHERE task_id = ?", (whole, task_id))
    db.commit()
    assert compare(old, tmp_path / "new.db") == []
    db.execute("UPDATE tasks SET data = replace(data, '\"priority\":0', '\"priority\":3') WHERE task_id = 'b'")
    db.commit()
    db.close()
    assert compare(old, tmp_path / "new.db") == ["tasks: 2 vs 2 rows, 1 only in old.db, 1 only in new.db"]
