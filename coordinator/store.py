"""SQLite persistence of the coordinator projection. All SQL of this projection lives here.

Each flush writes the rows the projection marked dirty and the stream sequence reached,
in one transaction, so after a crash the tables and the checkpoint agree and the
coordinator resumes from ``checkpoint + 1``. Rows hold queryable columns plus the whole
view as JSON, which is what a load decodes.

A load decodes only the tasks not finished: the finished ones (most of a long history)
are known by id and state, and read from their rows when wanted (``ClusterState.task``,
and the API's lists through ``tasks_by_id``/``task_rows``), so a restart does not grow
with the history.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite
import msgspec

from coordinator.state import (
    TERMINAL,
    Allocation,
    ClusterState,
    HeartbeatView,
    LeaderView,
    NodeView,
    OpenRequest,
    TaskState,
    TaskView,
    TrustPolicy,
)
from edge.bulkwrite import BulkWriteError, ForkedWriter
from edge.sqlite import open_projection, sql_list
from events.codec import fill_defaults

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, state TEXT NOT NULL, priority INTEGER NOT NULL,
    executor TEXT NOT NULL, node_id TEXT, attempt INTEGER NOT NULL,
    submitted_at REAL NOT NULL, updated_at REAL NOT NULL, data BLOB NOT NULL, ord INTEGER);
CREATE TABLE IF NOT EXISTS nodes (
    node_id TEXT PRIMARY KEY, state TEXT NOT NULL, trust REAL NOT NULL,
    running INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS allocations (
    task_id TEXT PRIMARY KEY, node_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    cpu REAL NOT NULL, memory_gb REAL NOT NULL, gpu INTEGER NOT NULL,
    gpu_memory_gb REAL NOT NULL, gpus TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, kind TEXT NOT NULL,
    state TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS trust_changes (
    seq INTEGER NOT NULL, node_id TEXT NOT NULL, delta REAL NOT NULL, score REAL NOT NULL,
    task_id TEXT, cause TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY, subject TEXT NOT NULL, error TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoint (projection TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""
# apart from the tables: a bulk load (a rebuild into a fresh file) makes them at the end,
# which sorts once instead of inserting into each index row by row
INDEXES = """
CREATE INDEX IF NOT EXISTS trust_changes_node ON trust_changes(node_id, seq);
CREATE INDEX IF NOT EXISTS tasks_ord ON tasks(ord);
CREATE INDEX IF NOT EXISTS tasks_state_id ON tasks(state, task_id);
"""
# a rebuild's file is fresh and worthless if the rebuild stops halfway (the next one
# deletes it), so it is written without a journal or syncs until it is complete
BULK_PRAGMAS = "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"

# what `hive replay` compares; the checkpoint is where each copy stopped, not what it holds
COMPARED_TABLES = ("tasks", "nodes", "allocations", "requests", "trust_changes", "rejected", "settings")
PROJECTION = "coordinator"

_enc = msgspec.json.Encoder()
_dec_task = msgspec.json.Decoder(TaskView)


class SpecRow(msgspec.Struct):
    """The part of a stored ``TaskSpec`` a list row shows; plain types: the rows are ours."""

    executor: str = "process"
    command: list[str] = []
    type: str | None = None
    image: str | None = None
    priority: int = 0
    max_attempts: int = 1
    name: str | None = None


class TaskRow(msgspec.Struct):
    """What ``coordinator.views.task_summary`` reads of a stored ``TaskView`` (the rest,
    outputs and results, is skipped unread): a list page decodes several times faster."""

    task_id: str
    spec: SpecRow
    state: TaskState
    order: int
    submitted_at: float
    updated_at: float
    attempt: int = 0
    node_id: str | None = None
    last_node: str | None = None
    duration_s: float | None = None
    exit_code: int | None = None
    error: str | None = None
    reason: str | None = None
    waiting_on: list[str] = []
    submitted_by: str | None = None
    cancelled_by: str | None = None


_dec_row = msgspec.json.Decoder(TaskRow)
_STATE_TEXT = {s: s.value for s in TaskState}  # (an enum's .value is a Python property)
_by_order = attrgetter("order")


class Changes(NamedTuple):
    """One flush's rows, taken from the projection at once (``ProjectionStore.collect``)."""

    tasks: list[tuple[Any, ...]]
    nodes: list[tuple[Any, ...]]
    allocs_gone: list[tuple[str]]
    allocs: list[tuple[Any, ...]]
    requests: list[tuple[Any, ...]]
    trust: list[tuple[Any, ...]]
    settings: list[tuple[str, bytes]]
    rejected: list[tuple[int, str, str]]
    seq: int


def _task_rows(tasks: Iterable[TaskView]) -> list[tuple[Any, ...]]:
    return [
        (
            t.task_id,
            _STATE_TEXT[t.state],
            t.spec.priority,
            t.spec.executor,
            t.node_id,
            t.attempt,
            t.submitted_at,
            t.updated_at,
            _enc.encode(t),
            t.order,
        )
        for t in tasks
    ]


def _whole_view(data: bytes) -> bytes:
    return _enc.encode(fill_defaults(TaskView, msgspec.json.decode(data)))


def comparable(table: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` of ``table`` (``SELECT *``) as a comparison of two files sees them: each task's
    view with every field. A row leaves out what is at its default, but msgspec tells a
    default by identity, so an equal value decoded from a row, or a row written before
    defaults were left out, is there at length: the same view in other bytes."""
    if table != "tasks":
        return rows
    return [(*row[:8], _whole_view(row[8]), *row[9:]) for row in rows]


_UNFINISHED_SQL = sql_list(s.value for s in TaskState if s not in TERMINAL)
_IN_CHUNK = 500  # ids per `IN (...)`: under SQLite's variable limit


class ProjectionStore:
    def __init__(self, db: aiosqlite.Connection | None, bulk: ForkedWriter | None = None) -> None:
        self.db: aiosqlite.Connection = db  # type: ignore[assignment]  # (None only when bulk)
        # a bulk store (a rebuild's) is written by children forked for each flush (see
        # ``edge.bulkwrite``) and reads nothing back
        self.writer = bulk
        self.rejected: list[tuple[int, str, str]] = []
        # tasks with a row in `allocations`: a released allocation that was never written
        # needs no DELETE (a rebuild's flush would otherwise delete every allocation)
        self.stored_allocs: set[str] = set()
        self.unwritten: list[Changes] = []  # collected by a flush that failed

    @classmethod
    async def open(cls, path: str | Path, bulk: bool = False) -> ProjectionStore:
        """The projection file at ``path``; ``bulk``: a fresh file that a rebuild fills (any
        file there before is deleted; no journal; indexes made at the end), written while
        the rebuild goes on, and not read until it is closed."""
        if bulk:
            try:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                with contextlib.closing(sqlite3.connect(str(path))) as conn:
                    conn.executescript(BULK_PRAGMAS + SCHEMA)
            except (OSError, sqlite3.Error) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise BulkWriteError(f"cannot make the projection file {path}: {why}") from None
            return cls(None, ForkedWriter(str(path), BULK_PRAGMAS))
        db = await open_projection(path, SCHEMA)
        store = cls(db)
        try:
            await _add_order_column(db)
            async with db.execute("SELECT task_id FROM allocations") as cur:
                store.stored_allocs = {row[0] for row in await cur.fetchall()}
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        if self.writer is None:
            await self.db.close()
            return
        self.writer.submit(_finish_bulk)
        await self.writer.finish()  # (raises what a writer failed at)

    async def abort(self) -> None:
        """Close without finishing: a bulk file is left half written (the next rebuild
        deletes it)."""
        if self.writer is None:
            await self.db.close()
        else:
            self.writer.abort()

    async def load(self, state: ClusterState) -> ClusterState:
        dec_task = msgspec.json.Decoder(TaskView)
        dec_node = msgspec.json.Decoder(NodeView)
        dec_req = msgspec.json.Decoder(OpenRequest)
        async with self.db.execute(f"SELECT data FROM tasks WHERE state IN {_UNFINISHED_SQL} ORDER BY ord") as cur:
            for (data,) in await cur.fetchall():
                task = dec_task.decode(data)
                state.tasks[task.task_id] = task
        for finished in TERMINAL:  # ids only, from the index; one shared state object each
            async with self.db.execute("SELECT task_id FROM tasks WHERE state = ?", (finished.value,)) as cur:
                rows = await cur.fetchall()
            state.finished.update(dict.fromkeys(map(itemgetter(0), rows), finished))
            state.finished_counts[finished] = len(rows)
        async with self.db.execute("SELECT max(ord) FROM tasks") as cur:
            row = await cur.fetchone()
        state.next_order = max(state.next_order, (row[0] if row and row[0] is not None else -1) + 1)
        async with self.db.execute("SELECT data FROM nodes") as cur:
            for (data,) in await cur.fetchall():
                node = dec_node.decode(data)
                state.nodes[node.node_id] = node
        async with self.db.execute("SELECT data FROM requests") as cur:
            for (data,) in await cur.fetchall():
                req = dec_req.decode(data)
                state.requests[req.request_id] = req
        async with self.db.execute(
            "SELECT task_id, node_id, attempt, cpu, memory_gb, gpu, gpu_memory_gb, gpus FROM allocations"
        ) as cur:
            for row in await cur.fetchall():
                res = {"cpu": row[3], "memory_gb": row[4], "gpu": row[5], "gpu_memory_gb": row[6]}
                alloc = msgspec.convert(
                    {
                        "task_id": row[0],
                        "node_id": row[1],
                        "attempt": row[2],
                        "resources": res,
                        "gpus": msgspec.json.decode(row[7]),
                    },
                    Allocation,
                )
                state.allocations[alloc.task_id] = alloc
        async with self.db.execute("SELECT value FROM settings WHERE key = 'trust'") as cur:
            row = await cur.fetchone()
        if row:
            state.trust = msgspec.json.decode(row[0], type=TrustPolicy)
        async with self.db.execute("SELECT value FROM settings WHERE key = 'leader'") as cur:
            row = await cur.fetchone()
        if row:
            state.leader = msgspec.json.decode(row[0], type=LeaderView)
            state.term = state.leader.term
        async with self.db.execute("SELECT value FROM settings WHERE key = 'heartbeat'") as cur:
            row = await cur.fetchone()
        if row:
            state.heartbeat = msgspec.json.decode(row[0], type=HeartbeatView)
        state.seq = await self.checkpoint()
        state.reindex()
        return state

    async def checkpoint(self) -> int:
        async with self.db.execute("SELECT seq FROM checkpoint WHERE projection = ?", (PROJECTION,)) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def rejected_by_rule(self) -> Counter[str]:
        """Rejected events so far, by rule (an error starts with its rule's name)."""
        query = "SELECT substr(error, 1, instr(error, ':') - 1), count(*) FROM rejected GROUP BY 1"
        async with self.db.execute(query) as cur:
            return Counter({str(rule or "schema"): int(n) for rule, n in await cur.fetchall()})

    def reject(self, seq: int, subject: str, error: str) -> None:
        self.rejected.append((seq, subject, error[:500]))

    async def flush(self, state: ClusterState) -> None:
        """Write what changed since the last flush, and the checkpoint, in one transaction.
        The rows of a flush that failed (rolled back) go first in the next one: the
        projection's marks of them were cleared when they were collected."""
        if self.writer is not None:
            # a child builds the rows from the state as it is now, and writes them
            gone, live = self._allocs(state)
            self.writer.submit(lambda conn: _write_sync(conn, self._changes(state, gone, live)))
            self._forget(state, gone, live)
            return
        pending, self.unwritten = [*self.unwritten, self.collect(state)], []
        try:
            await self.write(*pending)
        except BaseException:
            self.unwritten = pending
            raise

    def collect(self, state: ClusterState) -> Changes:
        """The rows that changed since the last collect, as they are now; the projection's
        dirty marks are cleared, so what changes next goes into the next one."""
        gone, live = self._allocs(state)
        changes = self._changes(state, gone, live)
        self._forget(state, gone, live)
        return changes

    def _allocs(self, state: ClusterState) -> tuple[list[str], list[str]]:
        """The allocations to delete (released, and written before) and to write."""
        stored, allocations = self.stored_allocs, state.allocations
        gone = [t for t in state.dirty_allocs if t not in allocations and t in stored]
        return gone, [t for t in state.dirty_allocs if t in allocations]

    def _changes(self, state: ClusterState, gone: list[str], live: list[str]) -> Changes:
        tasks = [state.tasks[t] for t in state.dirty_tasks]
        if self.writer is not None:  # (bulk) in the order of their making, as the log has them
            tasks.sort(key=_by_order)
        settings = []
        if state.dirty_settings:
            settings.append(("trust", _enc.encode(state.trust)))
        if state.dirty_leader and state.leader is not None:
            settings.append(("leader", _enc.encode(state.leader)))
        if state.dirty_heartbeat:
            settings.append(("heartbeat", _enc.encode(state.heartbeat)))
        return Changes(
            tasks=_task_rows(tasks),
            nodes=[
                (n.node_id, n.state.value, n.trust, n.running, _enc.encode(n))
                for n in (state.nodes[i] for i in state.dirty_nodes)
            ],
            allocs_gone=[(t,) for t in gone],
            allocs=[
                (
                    a.task_id,
                    a.node_id,
                    a.attempt,
                    a.resources.cpu,
                    a.resources.memory_gb,
                    a.resources.gpu,
                    a.resources.gpu_memory_gb,
                    _enc.encode(a.gpus).decode(),
                )
                for a in (state.allocations[t] for t in live)
            ],
            requests=[
                (r.request_id, r.task_id, r.kind, r.state, _enc.encode(r))
                for r in (state.requests[i] for i in state.dirty_requests)
            ],
            trust=[(c.seq, c.node_id, c.delta, c.score, c.task_id, c.cause) for c in state.new_trust],
            settings=settings,
            rejected=self.rejected,
            seq=state.seq,
        )

    def _forget(self, state: ClusterState, gone: list[str], live: list[str]) -> None:
        """Clear the marks of what was collected."""
        self.stored_allocs.difference_update(gone)
        self.stored_allocs.update(live)
        self.rejected = []
        state.dirty_tasks.clear()
        state.dirty_nodes.clear()
        state.dirty_allocs.clear()
        state.dirty_requests.clear()
        state.new_trust.clear()
        state.dirty_settings = False
        state.dirty_leader = False
        state.dirty_heartbeat = False

    async def write(self, *batches: Changes) -> None:
        """``batches``, in order, and the last one's checkpoint, in one transaction; rolled
        back if any of it fails."""
        db = self.db
        try:
            for changes in batches:
                for sql, rows in _statements(changes):
                    await db.executemany(sql, rows)
            await db.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await db.rollback()
            raise

    # -- reading finished tasks back (the API's lists; ClusterState.load_task) --------

    async def tasks_by_id(self, ids: Iterable[str]) -> dict[str, TaskView]:
        """The stored views of ``ids`` (those that have a row)."""
        wanted = list(ids)
        found: dict[str, TaskView] = {}
        for first in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[first : first + _IN_CHUNK]
            query = f"SELECT data FROM tasks WHERE task_id IN ({','.join('?' * len(chunk))})"
            async with self.db.execute(query, chunk) as cur:
                for (data,) in await cur.fetchall():
                    task = _dec_task.decode(data)
                    found[task.task_id] = task
        return found

    async def task_rows(
        self, state: str | None = None, offset: int = 0, limit: int = -1, newest: bool = False
    ) -> list[TaskRow]:
        """Stored tasks, as much as a list shows, in submission order (``newest``: the
        newest first): those in ``state`` (None: all), a page of them."""
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        query = f"SELECT data FROM tasks {where} ORDER BY ord {'DESC' if newest else ''} LIMIT ? OFFSET ?"
        async with self.db.execute(query, [*args, limit, offset]) as cur:
            rows = await cur.fetchall()
        return [_dec_row.decode(data) for (data,) in rows]

    async def task_count(self) -> tuple[int, int]:
        """How many task rows there are, and the highest submission order among them."""
        async with self.db.execute("SELECT count(*), max(ord) FROM tasks") as cur:
            row = await cur.fetchone()
        return (int(row[0]), -1 if row[1] is None else int(row[1])) if row else (0, -1)


def _statements(changes: Changes) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """What writing ``changes`` runs: each statement and its rows, the checkpoint last."""
    for sql, rows in (
        ("INSERT OR REPLACE INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?)", changes.tasks),
        ("INSERT OR REPLACE INTO nodes VALUES (?,?,?,?,?)", changes.nodes),
        ("DELETE FROM allocations WHERE task_id = ?", changes.allocs_gone),
        ("INSERT OR REPLACE INTO allocations VALUES (?,?,?,?,?,?,?,?)", changes.allocs),
        ("INSERT OR REPLACE INTO requests VALUES (?,?,?,?,?)", changes.requests),
        ("INSERT INTO trust_changes VALUES (?,?,?,?,?,?)", changes.trust),
        ("INSERT OR REPLACE INTO settings VALUES (?,?)", changes.settings),
        ("INSERT OR REPLACE INTO rejected VALUES (?,?,?)", changes.rejected),
    ):
        if rows:
            yield sql, rows
    yield "INSERT OR REPLACE INTO checkpoint VALUES (?, ?)", [(PROJECTION, changes.seq)]


def _write_sync(conn: sqlite3.Connection, changes: Changes) -> None:
    """``write`` for a bulk store's child (``edge.bulkwrite`` commits)."""
    for sql, rows in _statements(changes):
        conn.executemany(sql, rows)


def _finish_bulk(conn: sqlite3.Connection) -> None:
    """A bulk file's last step: its indexes, sorted once, and the WAL mode a service expects.
    (``executescript`` commits the open transaction first.)"""
    conn.executescript(INDEXES + "PRAGMA journal_mode=WAL;")


class RowReader:
    """Reads one task's stored view, for ``ClusterState.load_task``: a blocking read on a
    connection of its own (the fold is synchronous; it needs a row only for an event about
    an evicted task, which is rare)."""

    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def __call__(self, task_id: str) -> TaskView | None:
        row = self.db.execute("SELECT data FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return _dec_task.decode(row[0]) if row else None

    def close(self) -> None:
        self.db.close()


async def _add_order_column(db: aiosqlite.Connection) -> None:
    """Files written before ``ord`` existed get the column, filled from their rows; and the
    index by state also holds the id, so a load reads the finished ids from it alone."""
    async with db.execute("PRAGMA table_info(tasks)") as cur:
        columns = {row[1] for row in await cur.fetchall()}
    if "ord" not in columns:
        await db.execute("ALTER TABLE tasks ADD COLUMN ord INTEGER")
        async with db.execute("SELECT data FROM tasks") as cur:
            rows = [(t.order, t.task_id) for t in (_dec_task.decode(d) for (d,) in await cur.fetchall())]
        await db.executemany("UPDATE tasks SET ord = ? WHERE task_id = ?", rows)
    await db.execute("DROP INDEX IF EXISTS tasks_state")
    await db.executescript(INDEXES)
    await db.commit()
