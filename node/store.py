"""SQLite persistence of a node's own projection (rebuilt from the log at every start)."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import msgspec

from node.state import NodeLocal

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, attempt INTEGER NOT NULL, state TEXT NOT NULL,
    updated_at REAL NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoint (projection TEXT PRIMARY KEY, seq INTEGER NOT NULL);
"""

_enc = msgspec.json.Encoder()


class NodeStore:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    @classmethod
    async def fresh(cls, path: Path) -> NodeStore:
        """A new, empty projection file: the node rebuilds it from the log."""
        path.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        db = await aiosqlite.connect(str(path))
        await db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;" + SCHEMA)
        await db.commit()
        return cls(db)

    async def flush(self, local: NodeLocal) -> None:
        if local.dirty:
            rows = [
                (t.task_id, t.attempt, t.state.value, t.updated_at, _enc.encode(t))
                for t in (local.tasks[i] for i in local.dirty)
            ]
            await self.db.executemany("INSERT OR REPLACE INTO tasks VALUES (?,?,?,?,?)", rows)
            local.dirty.clear()
        await self.db.execute("INSERT OR REPLACE INTO checkpoint VALUES ('node', ?)", (local.seq,))
        await self.db.commit()

    async def close(self) -> None:
        await self.db.close()
