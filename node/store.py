"""SQLite persistence of a node's own projection: its tasks and its read position in the log,
written in one transaction, so a restart resumes reading from ``checkpoint + 1``."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import msgspec

from edge.sqlite import open_projection, sql_list
from node.state import DONE, LocalState, LocalTask, NodeLocal

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, attempt INTEGER NOT NULL, state TEXT NOT NULL,
    updated_at REAL NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoint (projection TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state, task_id, attempt);
"""

_enc = msgspec.json.Encoder()
_DONE_SQL = sql_list(s.value for s in DONE)  # finished ones load as attempts only
_TO_RUN_SQL = sql_list(s.value for s in LocalState if s not in DONE)


class NodeStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    @classmethod
    async def open(cls, path: Path) -> NodeStore:
        return cls(await open_projection(path, SCHEMA))

    async def clear(self) -> None:
        await self.db.executescript("DELETE FROM tasks; DELETE FROM checkpoint;")
        await self.db.commit()

    async def load(self, local: NodeLocal) -> NodeLocal:
        """The tasks and read position stored by this node's previous life, if any."""
        decoder = msgspec.json.Decoder(LocalTask)
        async with self.db.execute(f"SELECT data FROM tasks WHERE state IN {_TO_RUN_SQL}") as cur:
            for (data,) in await cur.fetchall():
                task = decoder.decode(data)
                local.tasks[task.task_id] = task
        async with self.db.execute(f"SELECT task_id, attempt FROM tasks WHERE state IN {_DONE_SQL}") as cur:
            local.settled = dict(await cur.fetchall())
        async with self.db.execute("SELECT seq FROM checkpoint WHERE projection = 'node'") as cur:
            row = await cur.fetchone()
        local.seq = int(row[0]) if row else 0
        async with self.db.execute("SELECT seq FROM checkpoint WHERE projection = 'term'") as cur:
            row = await cur.fetchone()
        local.term = int(row[0]) if row else 0  # elections before the checkpoint are not read again
        return local

    async def flush(self, local: NodeLocal) -> None:
        if local.dirty:
            rows = [
                (t.task_id, t.attempt, t.state.value, t.updated_at, _enc.encode(t))
                for t in (local.tasks[i] for i in local.dirty)
            ]
            await self.db.executemany("INSERT OR REPLACE INTO tasks VALUES (?,?,?,?,?)", rows)
            local.dirty.clear()
        await self.db.execute("INSERT OR REPLACE INTO checkpoint VALUES ('node', ?)", (local.seq,))
        await self.db.execute("INSERT OR REPLACE INTO checkpoint VALUES ('term', ?)", (local.term,))
        await self.db.commit()
        local.settle()

    async def close(self) -> None:
        await self.db.close()
