"""Opening a service's SQLite projection file (the coordinator's and each node's)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import aiosqlite


def sql_list(values: Iterable[str]) -> str:
    """``('a','b')`` for ``IN``: of our own enum values only, never of input."""
    return "(" + ",".join(f"'{v}'" for v in values) + ")"


WAL = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"


async def open_projection(path: str | Path, schema: str, pragmas: str | None = None) -> aiosqlite.Connection:
    """The file at ``path`` in WAL mode (or with ``pragmas``) with ``schema`` applied. WAL +
    NORMAL: a crash loses at most the last transactions, which a replay from the checkpoint
    restores."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(str(path))
    try:
        await db.executescript((pragmas or WAL) + schema)
        await db.commit()
    except BaseException:
        await db.close()  # its worker thread would keep the process from exiting
        raise
    return db
