"""What the web service keeps while it runs: the recent log, its subscribers, the task list.

One ``Hub`` follows both streams (audit and telemetry) with one ordered consumer each and
fans every event out to the server-sent-event streams of the open pages, so a hundred open
pages cost the NATS server two consumers, not two hundred. It keeps the last events in
memory (a resume within them costs nothing; an older one reads the gap from JetStream),
counts completions for the throughput chart, and holds the coordinator's task list, fetched
again only when an audit event says it changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.aio.msg import Msg

from edge.bus import follow, position
from edge.errors import HiveError
from edge.logread import read_stream
from events.codec import BadEvent, decode, full_builtins
from events.subjects import ALL_EVENTS, AUDIT_STREAM, TELEMETRY_STREAM
from hive.client import HiveClient
from hive.web.query import Position, TaskQuery, page, subject_matches

log = structlog.get_logger("hive.web")

KEEP_EVENTS = 10_000  # recent events held for resumes and the events page
MAX_BACKFILL = 20_000  # an older resume than this skips ahead (and says so)
BUCKET_S = 5.0
WINDOW_S = 300.0  # the chart: the last five minutes
STATS_EVERY_S = 2.0
TASKS_FRESH_S = 0.25  # at most this often a changed task list is fetched again
TASK_PAGE = 5_000  # task summaries per request (about 2 MB; the verb gives at most 10,000)
QUEUE_MAX = 5_000  # a page this far behind is cut off; its EventSource resumes by id
STREAMS = {AUDIT_STREAM: "audit", TELEMETRY_STREAM: "telemetry"}


def event_json(stream: str, seq: int, msg: Msg, pos: Position) -> dict[str, Any]:
    """One logged event as the API and the pages show it: every field, those the wire left
    out at their defaults too."""
    item: dict[str, Any] = {"seq": seq, "stream": STREAMS.get(stream, stream), "subject": msg.subject, "pos": str(pos)}
    try:
        event = decode(msg.data)
    except BadEvent as exc:
        item.update(type="invalid", ts=0.0, event=None, error=str(exc)[:300])
        return item
    item.update(type=type(event).__name__, ts=event.ts, event=full_builtins(event))
    return item


@dataclass(eq=False)  # by identity: held in a set
class Subscriber:
    pattern: str
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))


class Hub:
    def __init__(self, reader: HiveClient, lag_limit: int = 1000) -> None:
        self.reader = reader
        self.lag_limit = lag_limit
        self.recent: deque[dict[str, Any]] = deque()
        self.base = Position()  # the position just before the oldest event held
        self.pos = Position()
        self.subscribers: set[Subscriber] = set()
        self.buckets: dict[int, dict[str, int]] = {}  # bucket start -> completed, failed, queued
        self.stats: dict[str, Any] | None = None
        self.stats_error = "not asked yet"
        self.stats_at = 0.0
        self.tasks: list[dict[str, Any]] = []
        self.tasks_seq = -1  # the audit position the task list was fetched at
        self.tasks_at = 0.0
        self.truncated = False  # kept in the answers' shape: the list is always whole now
        self.by_id: dict[str, dict[str, Any]] = {}  # every task's summary, kept up to date
        self.synced_seq = 0  # the coordinator's position the summaries are complete to
        self.synced_epoch = ""  # which coordinator run that position belongs to
        self.sorted: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self.fetching = asyncio.Lock()
        self.counts = {"audit": 0, "telemetry": 0}
        self.subs: list[Any] = []
        self.jobs: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for stream in STREAMS:
            try:
                last = (await self.reader.js.stream_info(stream)).state.last_seq
            except Exception as exc:
                raise HiveError(f"cannot read stream {stream}: {exc}") from None
            start = max(1, last - KEEP_EVENTS // 2 + 1)
            self._set_base(stream, start - 1)
            self.subs.append(await follow(self.reader.js, stream, self._handler(stream), start_seq=start))
        await self.refresh_stats()  # before the first task list: how many tasks there are
        self.jobs.append(asyncio.create_task(self._poll_stats()))
        self.jobs.append(asyncio.create_task(self._prefetch()))

    async def _prefetch(self) -> None:
        """The whole task list, read once at start, so the first Tasks page is a slice too
        (100,000 tasks take about a second and a half to read here)."""
        try:
            await self.task_list()
        except Exception as exc:  # the coordinator may not answer yet: the first page asks again
            log.info("task list not prefetched", error=str(exc)[:200])

    def _set_base(self, stream: str, seq: int) -> None:
        if stream == AUDIT_STREAM:
            self.base = Position(seq, self.base.telemetry)
            self.pos = Position(max(seq, self.pos.audit), self.pos.telemetry)
        else:
            self.base = Position(self.base.audit, seq)
            self.pos = Position(self.pos.audit, max(seq, self.pos.telemetry))

    async def stop(self) -> None:
        for job in self.jobs:
            job.cancel()
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        for subscriber in list(self.subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                subscriber.queue.put_nowait(None)

    @property
    def connected(self) -> bool:
        return self.reader.nc.is_connected

    # -- the log ---------------------------------------------------------------------------

    def _handler(self, stream: str) -> Any:
        async def on_msg(msg: Msg) -> None:
            seq, _ = position(msg)
            self.add(stream, seq, msg)

        return on_msg

    def add(self, stream: str, seq: int, msg: Msg) -> None:
        """One event from the log: held, counted, and handed to every page that wants it."""
        audit = stream == AUDIT_STREAM
        if seq <= (self.pos.audit if audit else self.pos.telemetry) and self.recent:
            return  # a redelivery after a reconnect
        self.pos = Position(seq, self.pos.telemetry) if audit else Position(self.pos.audit, seq)
        item = event_json(stream, seq, msg, self.pos)
        self.counts[item["stream"]] += 1
        self.recent.append(item)
        while len(self.recent) > KEEP_EVENTS:
            dropped = self.recent.popleft()
            self.base = Position(*(int(p) for p in dropped["pos"].split(":")))
        if item["type"] in ("TaskCompleted", "TaskFailed"):
            bucket = self._bucket(item["ts"])
            bucket["completed" if item["type"] == "TaskCompleted" else "failed"] += 1
        for subscriber in list(self.subscribers):
            if subject_matches(subscriber.pattern, item["subject"]):
                try:
                    subscriber.queue.put_nowait(item)
                except asyncio.QueueFull:  # too slow: cut off; it resumes from its last id
                    self.subscribers.discard(subscriber)
                    subscriber.queue = asyncio.Queue(1)
                    subscriber.queue.put_nowait(None)

    def _bucket(self, ts: float) -> dict[str, int]:
        start = int(ts // BUCKET_S * BUCKET_S)
        bucket = self.buckets.setdefault(start, {"completed": 0, "failed": 0, "queued": -1})
        horizon = time.time() - WINDOW_S - BUCKET_S
        for old in [b for b in self.buckets if b < horizon]:
            del self.buckets[old]
        return bucket

    def series(self) -> list[dict[str, Any]]:
        """Throughput and queue depth over the last minutes, one point per bucket."""
        now = time.time()
        first = int((now - WINDOW_S) // BUCKET_S * BUCKET_S)
        points, queued = [], None
        for start in range(first, int(now) + 1, int(BUCKET_S)):
            bucket = self.buckets.get(start, {"completed": 0, "failed": 0, "queued": -1})
            queued = bucket["queued"] if bucket["queued"] >= 0 else queued
            points.append(
                {"t": float(start), "completed": bucket["completed"], "failed": bucket["failed"], "queued": queued}
            )
        return points

    def subscribe(self, pattern: str) -> Subscriber:
        subscriber = Subscriber(pattern)
        self.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def since(self, pattern: str, after: Position, limit: int = MAX_BACKFILL) -> tuple[list[dict[str, Any]], bool]:
        """Events matching ``pattern`` after ``after``, oldest first (at most ``limit``), and
        whether some were skipped because they are too far back."""
        per_stream: list[list[dict[str, Any]]] = []
        skipped = False
        for stream, name in STREAMS.items():
            mine = after.audit if name == "audit" else after.telemetry
            held_from = self.base.audit if name == "audit" else self.base.telemetry
            if mine >= held_from:
                continue
            if held_from - mine > limit:
                skipped, mine = True, held_from - limit
            found: list[dict[str, Any]] = []

            def sink(seq: int, msg: Msg, stream: str = stream, found: list[dict[str, Any]] = found) -> None:
                found.append(event_json(stream, seq, msg, after))

            await read_stream(
                self.reader.js, stream, sink, filters=[pattern], start_seq=mine + 1, until_seq=held_from
            )
            per_stream.append(found)
        # merged by time, each stream kept in its own order (emitters' clocks differ)
        older = list(heapq.merge(*per_stream, key=lambda e: e["ts"]))
        running = after  # each one's position, as if it had come live: an SSE id to resume by
        for item in older:
            running = (
                Position(item["seq"], running.telemetry)
                if item["stream"] == "audit"
                else Position(running.audit, item["seq"])
            )
            item["pos"] = str(running)
        held = [e for e in self.recent if _newer(e, after) and subject_matches(pattern, e["subject"])]
        return (older + held)[-limit:], skipped

    def tail(self, pattern: str, count: int) -> list[dict[str, Any]]:
        if count <= 0:
            return []
        found: list[dict[str, Any]] = []
        for item in reversed(self.recent):
            if subject_matches(pattern, item["subject"]):
                found.append(item)
                if len(found) >= count:
                    break
        return found[::-1]

    # -- the coordinator's read models -----------------------------------------------------

    async def _poll_stats(self) -> None:
        while True:
            await self.refresh_stats()
            await asyncio.sleep(STATS_EVERY_S)

    async def refresh_stats(self) -> None:
        try:
            self.stats = await self.reader.request("stats", timeout=2.0)
            self.stats_error, self.stats_at = "", time.time()
            queued = int(self.stats.get("tasks_by_state", {}).get("queued", 0))
            self._bucket(time.time())["queued"] = queued
        except HiveError as exc:
            self.stats, self.stats_error = None, str(exc)
        except Exception as exc:  # a poller must outlive anything one answer does
            self.stats, self.stats_error = None, f"{type(exc).__name__}: {exc}"

    async def task_list(self, min_seq: int = 0) -> list[dict[str, Any]]:
        """The coordinator's task list, brought up to date when the log moved since: all of
        it a page at a time the first time (or when another coordinator answers), then only
        the tasks changed since the last answer (the ``tasks`` verb's ``page`` form)."""
        async with self.fetching:  # concurrent readers share one fetch
            wanted = max(min_seq, self.pos.audit)
            if self.tasks_seq < wanted:
                # a burst of events costs one fetch per TASKS_FRESH_S, never a stale answer
                await asyncio.sleep(max(0.0, self.tasks_at + TASKS_FRESH_S - time.monotonic()))
                wanted = max(wanted, self.pos.audit)
                await self._sync_tasks(wanted)
                self.tasks = list(self.by_id.values())
                self.tasks_seq, self.tasks_at = wanted, time.monotonic()
                self.sorted.clear()
        return self.tasks

    async def _sync_tasks(self, min_seq: int) -> None:
        after = self.synced_seq if self.synced_epoch else 0
        first: dict[str, Any] | None = None
        fresh: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            body = {"page": True, "after": after, "offset": offset, "limit": TASK_PAGE, "min_seq": min_seq}
            reply = await self.reader.request("tasks", body, timeout=10.0)
            if first is None:
                first = reply
                if after and reply.get("epoch") != self.synced_epoch:  # another coordinator: all again
                    after, offset, fresh = 0, 0, {}
                    first = None
                    self.synced_epoch = ""
                    continue
            for row in reply["tasks"]:
                fresh[row["task_id"]] = row
            offset += len(reply["tasks"])
            if not reply["tasks"] or offset >= reply["total"]:
                break
        if not after:
            self.by_id = {}
        self.by_id.update(fresh)
        # changes made while the pages were read come again next time: ask from the first page's position
        self.synced_seq, self.synced_epoch = int(first["seq"]), str(first.get("epoch") or "")

    async def log_end(self, min_seq: int) -> int:
        """``min_seq`` no further than the audit log goes (the coordinator would wait for it)."""
        if min_seq <= self.pos.audit:
            return min_seq
        try:
            return min(min_seq, (await self.reader.js.stream_info(AUDIT_STREAM)).state.last_seq)
        except Exception:
            return self.pos.audit

    async def task_page(self, query: TaskQuery, min_seq: int = 0) -> dict[str, Any]:
        tasks = await self.task_list(min_seq)
        # one ordered list per filter and sort, kept until the list changes: paging is a slice
        key = (query.state, query.node, query.type, query.priority, query.submitter, query.text, query.sort)
        key = (*key, query.descending)
        ordered = self.sorted.get(key)
        if ordered is None:
            full = page(tasks, TaskQuery(**{**query.__dict__, "offset": 0, "limit": len(tasks) + 1}))
            ordered = self.sorted[key] = full["tasks"]
            while len(self.sorted) > 64:
                self.sorted.pop(next(iter(self.sorted)))
        rows = ordered[query.offset : query.offset + query.limit]
        return {
            "total": len(ordered),
            "offset": query.offset,
            "limit": query.limit,
            "truncated": self.truncated,
            "tasks": rows,
        }

    async def health(self) -> dict[str, tuple[bool, str]]:
        """The checks /health runs: NATS connected, a leading coordinator, its lag."""
        nats_ok = self.connected
        try:
            stats = await self.reader.request("stats", timeout=1.5)
        except Exception as exc:
            return {
                "nats": (nats_ok, "connected" if nats_ok else "disconnected"),
                "coordinator": (False, str(exc)),
                "lag": (False, "unknown"),
            }
        leader = stats.get("leader") or {}
        lag = int(stats.get("lag", 0))
        return {
            "nats": (nats_ok, "connected" if nats_ok else "disconnected"),
            "coordinator": (bool(leader), f"leader {leader.get('id')}" if leader else "no leader"),
            "lag": (lag <= self.lag_limit, f"{lag} events behind the log (limit {self.lag_limit})"),
        }


def _newer(item: dict[str, Any], after: Position) -> bool:
    return item["seq"] > (after.audit if item["stream"] == "audit" else after.telemetry)


__all__ = ["ALL_EVENTS", "Hub", "Subscriber", "event_json"]
