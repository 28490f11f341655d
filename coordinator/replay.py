"""Rebuild the coordinator projection from sequence 0 into a fresh SQLite file, and
compare it with the live one. The live file is first copied with SQLite's backup API so
the comparison is against one consistent snapshot; the rebuild stops at that snapshot's
checkpoint.

The log is read with the lean reader (``edge.fastread``) when the caller gives a
``Target`` to connect to, and with nats-py (``edge.logread``) for a caller that has only a
JetStream context; both hand on the same (seq, subject, data, server time)."""

from __future__ import annotations

import gc
import sqlite3
import time
from functools import partial
from pathlib import Path

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from coordinator.intake import take
from coordinator.projection import apply
from coordinator.state import ClusterState, TrustPolicy
from coordinator.store import COMPARED_TABLES, ProjectionStore, comparable
from edge import fastread
from edge.bus import delivery
from edge.config import Target
from edge.errors import HiveError
from edge.logread import read_stream
from events.subjects import AUDIT_STREAM

# Every so many events a rebuild forks a child that builds and writes the rows changed since
# the last one (``edge.bulkwrite``), so SQLite works on the other core while this one reads
# and folds; a task row is written once unless its task is still running at a flush (a few
# of each batch). Fewer forks cost fewer page faults, but leave more for the last child.
FLUSH_EVERY = 60_000


class ReplayReport(msgspec.Struct, kw_only=True):
    db: str
    events: int
    seconds: float
    events_per_s: float
    last_seq: int
    counts: dict[str, int]
    rejected: int
    compared_with: str | None = None
    matches: bool | None = None
    differences: list[str] = []


def snapshot(live: Path, copy: Path) -> int:
    """Copy the live projection consistently; return its checkpoint."""
    try:
        src = sqlite3.connect(f"file:{live}?mode=ro", uri=True)
        try:
            dst = sqlite3.connect(str(copy))
            try:
                src.backup(dst)
                row = dst.execute("SELECT seq FROM checkpoint WHERE projection = 'coordinator'").fetchone()
                return int(row[0]) if row else 0
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise HiveError(f"cannot copy the live projection {live} to {copy}: {exc}") from None


def compare(a: Path, b: Path) -> list[str]:
    diffs = []
    da, db = sqlite3.connect(str(a)), sqlite3.connect(str(b))
    try:
        for table in COMPARED_TABLES:
            query = f"SELECT * FROM {table} ORDER BY 1, 2"
            left, right = da.execute(query).fetchall(), db.execute(query).fetchall()
            if left == right:
                continue  # the same bytes (the usual case): the same rows, nothing to normalise
            left, right = comparable(table, left), comparable(table, right)
            if left != right:
                only_a = len(set(left) - set(right))
                only_b = len(set(right) - set(left))
                diffs.append(
                    f"{table}: {len(left)} vs {len(right)} rows, {only_a} only in {a.name}, {only_b} only in {b.name}"
                )
    finally:
        da.close()
        db.close()
    return diffs


async def rebuild(
    source: JetStreamContext | Target, db_path: Path, until_seq: int | None = None, trust: TrustPolicy | None = None
) -> ReplayReport:
    """Fold the audit log from sequence 1 (to ``until_seq``) into a fresh ``db_path``;
    ``source`` is where to read it: a ``Target`` (the lean reader) or a JetStream context."""
    store = await ProjectionStore.open(db_path, bulk=True)  # (deletes what was there)
    state = ClusterState(trust)
    events = 0
    pending: list[tuple[int, Msg]] = []
    apply_one = partial(apply, state)

    def fold(batch: list[tuple[int, Msg]]) -> None:
        nonlocal events
        for seq, msg in batch:
            rejection = take(state, apply_one, msg.data, msg.subject, seq, delivery(msg)[2])
            if rejection is not None:
                store.reject(seq, msg.subject, rejection.error)
            else:
                events += 1

    unflushed = 0

    async def fold_records(batch: list[fastread.Record]) -> None:
        nonlocal events, unflushed
        for seq, subject, data, stamp in batch:
            rejection = take(state, apply_one, data, subject, seq, stamp)
            if rejection is not None:
                store.reject(seq, subject, rejection.error)
            else:
                events += 1
        unflushed += len(batch)
        if unflushed >= FLUSH_EVERY:
            unflushed = 0
            await store.flush(state)

    async def sink(seq: int, msg: Msg) -> None:
        pending.append((seq, msg))
        if len(pending) >= FLUSH_EVERY:
            fold(pending)
            pending.clear()
            await store.flush(state)

    started = time.perf_counter()
    # what the fold builds lives until the end: the cyclic collector would walk all of it
    # again and again for nothing (about a third of a rebuild's time)
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        if isinstance(source, Target) and (until_seq is None or until_seq > 0):
            await fastread.read_batches(source, AUDIT_STREAM, fold_records, until_seq=until_seq)
        elif until_seq is None or until_seq > 0:
            await read_stream(source, AUDIT_STREAM, sink, until_seq=until_seq)
        fold(pending)
        await store.flush(state)
        await store.close()  # (waits for the writer to finish the file)
    except BaseException:
        await store.abort()  # (a half-written file: the next rebuild deletes it)
        raise
    finally:
        gc.enable()
        gc.unfreeze()
    seconds = time.perf_counter() - started
    conn = sqlite3.connect(str(db_path))
    try:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COMPARED_TABLES}
        rejected = conn.execute("SELECT count(*) FROM rejected").fetchone()[0]
    finally:
        conn.close()
    return ReplayReport(
        db=str(db_path),
        events=events,
        seconds=round(seconds, 3),
        events_per_s=round(events / seconds, 1) if seconds > 0 else 0.0,
        last_seq=state.seq,
        counts=counts,
        rejected=rejected,
    )


async def replay_and_compare(source: JetStreamContext | Target, db_path: Path, live: Path | None) -> ReplayReport:
    if live is None or not live.exists():
        return await rebuild(source, db_path)
    snap = db_path.with_name(db_path.name + ".live-snapshot")
    upto = snapshot(live, snap)
    try:
        report = await rebuild(source, db_path, until_seq=upto)
        report.compared_with = str(live)
        report.differences = compare(snap, db_path)
        report.matches = not report.differences
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{snap}{suffix}").unlink(missing_ok=True)
    return report
