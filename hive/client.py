"""The Python API, what the command line is built on.

async with await HiveClient.connect() as hive:
    task_id = await hive.submit(TaskSpec(executor="process", command=["echo", "hi"]))
    final = await hive.wait(task_id)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from edge.bus import MSG_ID_HEADER, TRANSIENT, connect
from edge.config import Target, resolve, user_of
from edge.errors import Denied, HiveError, NotFound, Unreachable
from edge.logread import read_stream
from edge.waits import woken
from edge.wire import open_conn, read_acks
from events.base import Event, new_id
from events.codec import BadEvent, check_outgoing, decode, encode
from events.node import NodeDrainRequested
from events.subjects import api_subject, subject_for, task_filter, valid_id
from events.task import TaskCancelRequested, TaskSpec, TaskSubmitted
from events.validation import spec_problem
from hive.reads import HISTORY_STREAMS, NODES_PAGE, History, all_nodes, answer, no_answer, refused

TERMINAL = ("completed", "failed", "cancelled")
ENDING_VERBS = frozenset({"completed", "failed", "cancelled"})
RETRY_S = 15.0  # how long a publish rides out a leader election or a server restart
ACK_S = 10.0  # a pipelined publish not acknowledged in this long is published again, on its own
LEAN_BATCH = 100  # a batch at least this big is submitted on a lean connection of its own
# publishes written before the next is made: the server stores and passes on the first
# while the rest are built (a lean publish only buffers; 1,000 of them took 6 ms to build)
WRITE_EVERY = 50
ProgressFn = Callable[[float, str], None]


class Refusals:
    """What the server refused this connection (its error callback's permission violations)."""

    def __init__(self) -> None:
        self.seen = asyncio.Event()
        self.last = ""

    def add(self, text: str) -> None:
        self.last = text
        self.seen.set()


class HiveClient:
    def __init__(self, nc: Client, name: str = "cli") -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=10)
        self.user = name  # who the server knows this connection as: its requests say so
        self.emitter = f"client:{name}"
        self.last_seq = 0
        self.refusals = Refusals()  # permission violations the server reported
        self.target: Target | None = None  # where ``connect`` connected: a batch's lean connection goes there too

    async def _unless_refused(self, work: Awaitable[Any], what: str) -> Any:
        """``work``, or ``Denied`` as soon as the server reports refusing it (nats-py only
        tells the error callback; the publish itself would wait for its timeout)."""
        self.refusals.seen.clear()
        task = asyncio.ensure_future(work)
        refusal = asyncio.ensure_future(self.refusals.seen.wait())
        try:
            await asyncio.wait([task, refusal], return_when=asyncio.FIRST_COMPLETED)
        finally:
            refusal.cancel()
        if not task.done():
            task.cancel()
            subject = self.refusals.last.rsplit(" ", 1)[-1].strip('"')
            raise refused(what, self.user, subject)
        return task.result()

    @classmethod
    async def connect(
        cls,
        server: str | None = None,
        data: str | Path | None = None,
        role: str = "client",
        deadline: float = 5.0,
        *,
        creds: str | Path | None = None,
        ca: str | Path | None = None,
    ) -> HiveClient:
        target = resolve(server, role, data, creds=creds, ca=ca)
        refusals = Refusals()
        nc = await connect(target, "hive-client", deadline=deadline, persistent=False, on_denied=refusals.add)
        client = cls(nc, user_of(target))
        client.refusals = refusals
        client.target = target
        return client

    async def __aenter__(self) -> HiveClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if not self.nc.is_closed:
            await self.nc.close()

    # -- writes ------------------------------------------------------------------------

    async def _publish(self, event: Event, data: bytes | None = None) -> int:
        """Publish and await the ack. Timeouts and no-responders (a stream electing a new
        leader, a server restarting) are retried with the same message id, which the server
        deduplicates, for up to ``RETRY_S`` seconds."""
        data = data if data is not None else self._outgoing(event)
        deadline = time.monotonic() + RETRY_S
        tries = 0
        while True:
            tries += 1
            try:
                publish = self.js.publish(subject_for(event), data, timeout=5, headers={MSG_ID_HEADER: event.id})
                ack = await self._unless_refused(publish, type(event).__name__)
                break
            except Denied:
                raise
            except TRANSIENT as exc:
                if time.monotonic() >= deadline:
                    raise Unreachable(f"could not record {type(event).__name__} within {RETRY_S:g}s: {exc}") from None
                await asyncio.sleep(min(1.0, 0.1 * tries))
            except Exception as exc:
                raise Unreachable(f"could not record {type(event).__name__}: {exc or type(exc).__name__}") from None
        self.last_seq = max(self.last_seq, ack.seq)
        return ack.seq

    async def submit(self, spec: TaskSpec, task_id: str | None = None) -> str:
        task_id = task_id or f"t-{new_id()}"
        await self.check_submission([(task_id, spec)])
        await self._publish(TaskSubmitted(task_id=task_id, spec=spec, emitter=self.emitter))
        return task_id

    def _outgoing(self, event: Event) -> bytes:
        """The event encoded, if the readers will accept it (the same rules as theirs)."""
        try:
            return check_outgoing(event)
        except BadEvent as exc:
            raise HiveError(f"refusing to publish {type(event).__name__}: {exc}") from None

    async def submit_many(self, items: list[tuple[str, TaskSpec]], window: int = 1000) -> list[str]:
        """Submit a batch (a DAG may refer within it), pipelined: ids in order. A large
        batch goes out on a lean connection of its own (``edge.wire``): nats-py spends more
        on each publish and its ack than the rest of a submission costs."""
        await self.check_submission(items)
        for task_id, spec in items:  # all refused before any is written
            self._outgoing(TaskSubmitted(task_id=task_id, spec=spec, emitter=self.emitter))
        conn = None
        if self.target is not None and len(items) >= LEAN_BATCH:
            try:
                conn = await open_conn(self.target, "hive-submit")
            except HiveError:
                conn = None  # nats-py's connection still works: it has its own retries
        if conn is None:
            await self._submit_pipelined(items, window, self._publish_async)
            return [task_id for task_id, _ in items]
        acks = asyncio.create_task(read_acks(conn))

        async def lean(subject: str, data: bytes, msg_id: str) -> asyncio.Future[Any]:
            if acks.done():  # the lean connection is lost (its acks failed): the rest through nats-py
                return await self._publish_async(subject, data, msg_id)
            return conn.publish_acked(subject, data, msg_id)

        try:
            await self._submit_pipelined(items, window, lean)
        finally:
            acks.cancel()
            await asyncio.gather(acks, return_exceptions=True)
            await conn.close()
        return [task_id for task_id, _ in items]

    async def _publish_async(self, subject: str, data: bytes, msg_id: str) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.js.publish_async(subject, data, headers={MSG_ID_HEADER: msg_id})
        return future

    async def _submit_pipelined(
        self,
        items: list[tuple[str, TaskSpec]],
        window: int,
        publish: Callable[[str, bytes, str], Awaitable[asyncio.Future[Any]]],
    ) -> None:
        futures = []
        for task_id, spec in items:
            # stamped as it is written (what was checked differs only in id and time)
            event = TaskSubmitted(task_id=task_id, spec=spec, emitter=self.emitter)
            data = encode(event)
            futures.append((await publish(subject_for(event), data, event.id), event, data))
            if len(futures) % WRITE_EVERY == 0:
                await asyncio.sleep(0)
            if len(futures) >= window:
                await self._settle(futures)
                futures = []
        await self._settle(futures)

    async def _settle(self, pending: list[tuple[asyncio.Future[Any], Event, bytes]]) -> None:
        """Wait for pipelined acks; what failed, or was not answered in ``ACK_S``, is
        published again, one by one, with retries (the same id: what did land the first
        time is deduplicated)."""
        if not pending:
            return
        await asyncio.wait([future for future, _, _ in pending], timeout=ACK_S)
        again = []
        for future, event, data in pending:  # every outcome looked at before a retry may raise
            if not future.done():
                future.cancel()
                again.append((event, data))
            elif future.cancelled() or future.exception() is not None:
                again.append((event, data))
            else:
                ack = future.result()
                self.last_seq = max(self.last_seq, ack if isinstance(ack, int) else ack.seq)
        for event, data in again:
            await self._publish(event, data)

    async def check_submission(self, items: list[tuple[str, TaskSpec]]) -> None:
        for task_id, spec in items:
            if not valid_id(task_id):
                raise HiveError(f"invalid task id {task_id!r}: use letters, digits, '-' and '_' (max 64)")
            check_spec(spec)
            if task_id in spec.after:
                raise HiveError(f"task {task_id} cannot depend on itself")
        if any(spec.after for _, spec in items) or any(not tid.startswith("t-") for tid, _ in items):
            batch = [{"task_id": tid, "after": spec.after} for tid, spec in items]
            await self.request("validate", {"tasks": batch})

    async def cancel(self, task_id: str, reason: str = "cancelled by user") -> dict[str, Any]:
        task = await self.task(task_id)
        if task["state"] in TERMINAL:
            raise HiveError(f"task {task_id} is already {task['state']}")
        # someone else's task: only an operator may, on the subject only operators may use
        others = task.get("submitted_by") not in (None, self.user)
        event = TaskCancelRequested(task_id=task_id, reason=reason, as_operator=others, emitter=self.emitter)
        try:
            await self._publish(event)
        except Denied:
            raise Denied(f"{self.user} may cancel only their own tasks ({task_id} is {task['submitted_by']}'s)") from None
        return task

    async def drain(self, node_id: str) -> None:
        nodes = {n["node_id"]: n for n in await self.nodes()}
        if node_id not in nodes:
            raise NotFound(f"unknown node {node_id}")
        await self._publish(NodeDrainRequested(node_id=node_id, emitter=self.emitter))

    # -- reads -------------------------------------------------------------------------

    async def request(self, verb: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        payload = dict(body or {})
        if self.last_seq:
            payload["min_seq"] = self.last_seq
        try:
            asked = self.nc.request(api_subject(verb, self.user), msgspec.json.encode(payload), timeout=timeout)
            msg = await self._unless_refused(asked, f"the request {verb!r}")
        except Denied:
            raise
        except Exception as exc:
            name = type(exc).__name__
            if "NoResponders" in name or "Timeout" in name:
                raise no_answer(verb, self.user) from None
            raise Unreachable(f"request {verb} failed: {exc or name}") from None
        return answer(msgspec.json.decode(msg.data))

    async def tasks(self, state: str | None = None, limit: int = 0) -> list[dict[str, Any]]:
        return await self.request("tasks", {"state": state, "limit": limit})

    async def task(self, task_id: str) -> dict[str, Any]:
        return await self.request("task", {"task_id": task_id})

    async def nodes(self, page: int = NODES_PAGE) -> list[dict[str, Any]]:
        """Every node, asked for ``page`` at a time (a reply for 10,000 nodes is ~4.5 MB)."""
        return await all_nodes(lambda body: self.request("nodes", body), page)

    async def history(self, task_id: str) -> list[tuple[int, str, Event]]:
        """Every logged event of one task (audit and still-retained telemetry), by time."""
        history = History()
        for stream in HISTORY_STREAMS:
            await read_stream(
                self.js, stream, lambda seq, msg, stream=stream: history.add(stream, seq, msg.data), filters=[task_filter(task_id)]
            )
        return history.events()

    async def wait(
        self, task_id: str, on_progress: ProgressFn | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Wait until the task is completed, failed for good or cancelled; return its view."""
        changed = asyncio.Event()
        ending = False  # an attempt just ended: the projection is a moment behind the event

        async def on_msg(msg: Msg) -> None:
            nonlocal ending
            verb = msg.subject.split(".")[3] if msg.subject.count(".") >= 3 else ""
            ending = ending or verb in ENDING_VERBS
            if verb == "progress" and on_progress is not None:
                try:
                    event = decode(msg.data)
                except BadEvent:
                    return
                on_progress(getattr(event, "fraction", 0.0), getattr(event, "message", ""))
            else:
                changed.set()

        sub = await self.nc.subscribe(task_filter(task_id), cb=on_msg)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                task = await self.task(task_id)
                if task["state"] in TERMINAL:
                    return task
                pause = 0.02 if ending else 2.0
                left = pause if deadline is None else min(pause, deadline - time.monotonic())
                if left <= 0:
                    raise HiveError(f"task {task_id} still {task['state']} after {timeout:g}s")
                await woken(changed, left)
                changed.clear()
        finally:
            await sub.unsubscribe()


def check_spec(spec: TaskSpec) -> None:
    """Refuse what can never run, before anything is written, in the command line's words;
    ``HiveClient._outgoing`` then applies every rule the readers apply."""
    problem = spec_problem(spec)
    if problem is not None:
        flag = {"process": "(after --)", "function": "(--type)", "docker": "(--image)"}[spec.executor]
        raise HiveError(f"{problem} {flag}")
    res = spec.resources
    if min(res.cpu, res.memory_gb, res.gpu, res.gpu_memory_gb) < 0:
        raise HiveError("resource requests cannot be negative")
    if spec.max_attempts < 1:
        raise HiveError("--attempts must be at least 1")
    if spec.timeout_s is not None and spec.timeout_s <= 0:
        raise HiveError("--timeout must be positive")
    for dep in spec.after:
        if not valid_id(dep):
            raise HiveError(f"invalid task id in --after: {dep!r}")
