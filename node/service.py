"""The node's asyncio shell.

Start: fingerprint, register, then replay this node's subjects from the start of the log
into a fresh local projection. Once caught up, assignments not yet started are run,
attempts that a previous life of this node started but never finished are reported
failed ("interrupted") so the coordinator retries them. Then: run each new assignment
as its own task (bounded by what was offered), stop attempts the coordinator cancels or
takes away, heartbeat on an interval, drain on request, re-register if declared lost.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

import nats
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.js.errors import NotFoundError, ServiceUnavailableError

from edge.bus import Publisher, connect, delivery
from edge.config import Target
from edge.follow import Follower
from edge.logread import read_stream
from edge.waits import woken
from edge.wire import Record
from events.base import Event, Resources
from events.codec import BadEvent, decode, encode
from events.negotiation import GuidanceGiven, ResourceDenied, ResourceGranted
from events.node import NodeDrained, NodeHeartbeat, NodeLost, NodeRegistered
from events.subjects import AUDIT_STREAM, as_id, node_filter, node_inbox_filter, subject_for
from events.task import TaskAssigned, TaskCancelled, TaskFailed, TaskReassigned
from node import handlers
from node.attempts import Attempts
from node.cadence import Cadence
from node.context import Outcome
from node.executors import Executor
from node.executors.function import FunctionExecutor
from node.executors.process import ProcessExecutor
from node.negotiation import Negotiator
from node.reaper import Reaper
from node.resources import fingerprint, gpu_usage, offered, utilisation
from node.settings import NodeSettings
from node.state import LocalState, NodeLocal, apply
from node.store import NodeStore

log = structlog.get_logger("hive.node")

# The local projection is rebuilt from the log at every start, so its file only needs to
# follow along, not to be written on every message.
LOCAL_FLUSH_S = 0.5


def default_node_id() -> str:
    host = as_id(socket.gethostname(), 40)
    return host or f"node-{os.getpid()}"


class Node(Attempts, Negotiator):
    def __init__(self, target: Target, settings: NodeSettings, http_port: int | None = None) -> None:
        self.http_port = http_port  # /health and /metrics (node/observe.py); None: off
        self.observer: Any = None  # node.observe.NodeObserver, told of each event this node writes
        self.target = target
        self.settings = settings
        self.node_id = settings.node_id
        self.emitter = f"node:{self.node_id}"
        self.local = NodeLocal(self.node_id)
        self.running: dict[tuple[str, int], asyncio.Task[None]] = {}  # (task, attempt) -> job
        self.allocated = Resources()
        self.inbox: list[Record] = []
        self.consumer: Follower | None = None  # the live follow of what others tell this node
        self.wake = asyncio.Event()
        self.unflushed = False
        self.flushed_at = 0.0
        self.done = asyncio.Event()
        self.executors: dict[str, Executor] = {"process": ProcessExecutor(), "function": FunctionExecutor()}
        self.waiters: dict[str, tuple[tuple[str, int], asyncio.Future[Event]]] = {}  # request -> (attempt, answer)
        self.forced: dict[tuple[str, int], Outcome] = {}  # how guidance ended an attempt
        self.extra: dict[tuple[str, int], Resources] = {}  # granted on top of the request

    async def run(self, ready: asyncio.Event | None = None) -> None:
        structlog.contextvars.bind_contextvars(node_id=self.node_id)
        self.types = handlers.load(self.settings.handler_modules)
        await self._add_docker()
        self.nc: Client = await connect(self.target, f"hive-node-{self.node_id}")
        self.js = self.nc.jetstream(timeout=10)
        self.publisher = Publisher(self.js)
        self.cadence = Cadence(self.settings.heartbeat_s)
        self.store = await NodeStore.open(Path(self.settings.data_dir) / f"node-{self.node_id}.db")
        await self.store.load(self.local)
        self.workdir = Path(self.settings.data_dir) / "work" / self.node_id
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.reaper = await Reaper.start(self.node_id, self.workdir, docker="docker" in self.executors)
        found = await asyncio.to_thread(fingerprint, str(self.workdir))
        self.capacity, self.gpus = offered(
            found, self.settings.max_cpu, self.settings.max_memory_gb, self.settings.gpus
        )
        self.disk_free_gb = found.disk_free_gb
        log_end = await self._wait_for_streams()
        await self.cadence.follow(self.nc, self.js)  # the interval the coordinator announced
        if self.local.seq > log_end:
            log.warning("the local checkpoint is past the log's end (a new log?); starting afresh", seq=self.local.seq)
            await self.store.clear()
            self.local = NodeLocal(self.node_id)
        checkpoint = self.local.seq
        read_to = await self._catch_up(log_end)
        await self._reconcile()
        await self._register()
        # Live, a node only needs what others tell it, from just after what it has read of
        # them (never after its own writes: an assignment made meanwhile sits before those);
        # its own reports it applies itself when it publishes them.
        self.consumer = Follower(
            self.target,
            AUDIT_STREAM,
            self._on_records,
            start_seq=read_to + 1,
            filters=node_inbox_filter(self.node_id),
            name=f"hive-node-{self.node_id}-log",
        )
        await self.consumer.start()
        self.publisher.lean = self.consumer.publishing  # reports and their acks on the log's connection
        http = None
        if self.http_port is not None:
            from node import observe  # aiohttp and prometheus_client only when asked for

            http = await observe.serve(self, self.http_port)
        log.info(
            "node started",
            capacity=self.capacity,
            gpus=len(self.gpus),
            executors=sorted(self.executors),
            handlers=self.types,
            checkpoint=checkpoint,
            read_to=read_to,
        )
        if ready is not None:
            ready.set()
        heartbeat = asyncio.create_task(self._heartbeat_loop())
        try:
            while not self.done.is_set():
                await woken(self.wake, 1.0)
                self.wake.clear()
                await self._step()
        finally:
            heartbeat.cancel()
            if http is not None:
                await http.stop()
            await asyncio.shield(self._abandon_running())
            await self.reaper.close()
            if self.unflushed:
                await self.store.flush(self.local)
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self.store.close()
            if self.consumer is not None:
                await self.consumer.close()
            await self.nc.close()

    async def _wait_for_streams(self) -> int:
        """The log's end before this node reads or writes anything: from there the live
        consumer may safely start. Waits (saying so once) until the coordinator made the streams."""
        warned = False
        while True:
            try:
                return (await self.js.stream_info(AUDIT_STREAM)).state.last_seq
            except NotFoundError:
                if not warned:
                    log.warning("the event streams do not exist yet; waiting for the coordinator")
                    warned = True
                await asyncio.sleep(1.0)
            except (ServiceUnavailableError, NoRespondersError, nats.errors.TimeoutError):
                # JetStream not reachable yet: a cluster electing, a leaf link still coming up
                if not warned:
                    log.warning("JetStream does not answer yet; waiting")
                    warned = True
                await asyncio.sleep(1.0)

    async def _catch_up(self, log_end: int) -> int:
        """Fold what happened on this node's subjects since its checkpoint (all of its
        history on a first start); return the position the live reader continues from.
        ``log_end`` was read before this read began, so every message on these subjects up
        to the returned position has been seen, and none after it can be missed."""
        last = 0

        def fold(seq: int, msg: Msg) -> None:
            nonlocal last
            last = seq
            self._fold(seq, msg.subject, msg.data, delivery(msg)[2])

        await read_stream(self.js, AUDIT_STREAM, fold, filters=node_filter(self.node_id), start_seq=self.local.seq + 1)
        self.local.seq = max(self.local.seq, last, log_end)
        await self.store.flush(self.local)
        return self.local.seq

    def _fold(self, seq: int, subject: str, data: bytes, stamp: float) -> Event | None:
        """Apply one message read from the log; None if it is refused. A bad or unexpected
        event is skipped (the coordinator records rejects), never fatal to the node."""
        try:
            event = decode(data, subject, stamp)
            apply(self.local, event, seq)
            return event
        except BadEvent:
            self.local.seq = max(self.local.seq, seq)
            return None
        except Exception:
            self.local.seq = max(self.local.seq, seq)
            log.exception("applying an event failed; skipped", subject=subject[:200], seq=seq)
            return None

    async def _add_docker(self) -> None:
        if not self.settings.docker:
            return
        try:
            from node.executors.docker import DockerExecutor
        except ImportError:
            return
        executor = await DockerExecutor.connect(self.settings)
        if executor is None:
            log.warning("docker is not available; not offering the docker executor")
            return
        self.executors["docker"] = executor

    async def _register(self) -> None:
        event = NodeRegistered(
            node_id=self.node_id,
            capacity=self.capacity,
            max_tasks=self.settings.max_tasks,
            executors=sorted(self.executors),
            gpus=self.gpus,
            hostname=socket.gethostname(),
            disk_free_gb=self.disk_free_gb,
            heartbeat_s=self.settings.heartbeat_s,
            emitter=self.emitter,
        )
        await self.publisher.publish_reliably(event)
        self.registered_at = event.ts

    def _on_records(self, records: list[Record]) -> None:
        self.inbox.extend(records)
        self.wake.set()

    async def _step(self) -> None:
        batch, self.inbox = self.inbox, []
        fresh: list[Event] = []
        for record in batch:
            event = self._fold(*record)
            if event is not None:
                fresh.append(event)
        if batch:
            self.unflushed = True
        if self.unflushed and time.monotonic() - self.flushed_at >= LOCAL_FLUSH_S:
            await self.store.flush(self.local)
            self.unflushed, self.flushed_at = False, time.monotonic()
        for event in fresh:
            try:
                await self._react(event)
            except Exception:  # no single event may stop the node
                log.exception("reacting to an event failed", event=type(event).__name__)
        await self._maybe_drained()

    async def _abandon_running(self) -> None:
        """On shutdown: stop what runs and say so, so the coordinator requeues it at once
        instead of after the heartbeat timeout."""
        jobs = dict(self.running)
        for job in jobs.values():
            job.cancel()
        await asyncio.gather(*jobs.values(), return_exceptions=True)
        for task_id, attempt in jobs:
            event = TaskFailed(
                task_id=task_id,
                node_id=self.node_id,
                attempt=attempt,
                reason="interrupted",
                error=f"interrupted: node {self.node_id} shut down",
                emitter=self.emitter,
            )
            try:
                await self.publisher.publish_reliably(event, attempts=2, timeout=2.0)
            except Exception:  # the server may be gone too; the heartbeat timeout covers it
                log.warning("could not report an interrupted task", task_id=task_id)

    async def _reconcile(self) -> None:
        for task in self.local.interrupted():
            if (task.task_id, task.attempt) not in self.running:
                await self._report(
                    TaskFailed(
                        task_id=task.task_id,
                        node_id=self.node_id,
                        attempt=task.attempt,
                        error="interrupted: the node restarted while the task ran",
                        reason="interrupted",
                        emitter=self.emitter,
                    )
                )
        for task in self.local.pending_starts():
            self._start(task)

    async def _react(self, event: Event) -> None:
        if isinstance(event, TaskAssigned):
            task = self.local.tasks.get(event.task_id)
            if task is not None and task.state == LocalState.ASSIGNED and task.attempt == event.attempt:
                self._start(task)
        elif isinstance(event, (TaskCancelled, TaskReassigned)):
            self._stop(event.task_id, event.attempt)
        elif isinstance(event, GuidanceGiven):
            self._guided(event)
        elif isinstance(event, (ResourceGranted, ResourceDenied)):
            self._answered(event)
        elif isinstance(event, NodeLost) and self.local.lost_at > self.registered_at:
            log.warning("declared lost by the coordinator; registering again")
            await self._register()

    async def _report(self, event: Event, data: bytes | None = None) -> None:
        await self.publisher.publish_reliably(event, data=data)
        # its own writes change the node's view but not its read position (see run)
        apply(self.local, event)
        self.unflushed = True
        if self.observer is not None:
            self.observer.sent(event)

    async def _telemetry(self, event: Event) -> None:
        # progress and heartbeats are best effort: a plain publish, no ack round trip
        await self.nc.publish(subject_for(event), encode(event))
        if self.observer is not None:
            self.observer.sent(event)

    async def _heartbeat_loop(self) -> None:
        utilisation()  # prime psutil's CPU counter
        while True:
            await asyncio.sleep(self.cadence.interval_s)
            cpu, memory = await asyncio.to_thread(utilisation)
            gpus = await asyncio.to_thread(gpu_usage) if self.gpus else []
            await self._telemetry(
                NodeHeartbeat(
                    node_id=self.node_id,
                    running=len(self.running),
                    cpu_percent=cpu,
                    memory_used_gb=memory,
                    gpus=gpus,
                    emitter=self.emitter,
                )
            )

    async def _maybe_drained(self) -> None:
        if self.local.draining and not self.running:
            await self._report(NodeDrained(node_id=self.node_id, emitter=self.emitter))
            log.info("drained; leaving")
            self.done.set()

    def stop(self) -> None:
        self.done.set()
        self.wake.set()
