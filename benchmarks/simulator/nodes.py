"""Many light simulated nodes in one process, over the real wire.

Each simulated node registers with a valid ``NodeRegistered`` (JetStream, with its message
id), heartbeats on core NATS at its interval or the longer one the coordinator announces
(phases spread over the interval, like independent machines), answers each assignment with ``TaskStarted`` and ``TaskCompleted``,
and registers again when it is declared lost, as ``node/service.py`` does. Every event is
the node's own (``emitter`` ``node:<id>``, its own subjects), so the coordinator validates
and folds exactly what real nodes send.

Credentials: one connection per process, with a credential of the coordinator role (the
only role whose permissions may publish on many nodes' subjects). A node credential per
simulated node would add ten thousand Python clients to the 2-core machine that also runs
the coordinator under measurement; the coordinator's work per message is the same either
way (it checks the subject against the content, the server checked the permission).

Control on stdin, one command a line: ``kill <node_id>`` stops that node's heartbeats (it
stays silent, as a dead machine would); ``quit``. Reports on stdout, one JSON object a line.

Run by benchmarks/scale.py: ``python -m benchmarks.simulator.nodes --server URL --creds FILE
--prefix s0 --count 2500``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import msgspec
import nats
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from edge.bus import Publisher
from events.base import Resources
from events.codec import BadEvent, decode, encode
from events.node import NodeHeartbeat, NodeRegistered
from events.subjects import subject_for
from events.task import TaskAssigned, TaskCompleted, TaskStarted

TICK_S = 0.05
INTERVAL_SUBJECT = "hive.coordinator.heartbeat_interval"
AUDIT_STREAM = "HIVE_EVENTS"


def say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Simulator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ids = [f"{args.prefix}-{i:05d}" for i in range(args.count)]
        self.hosted = set(self.ids)
        self.dead: set[str] = set()
        self.running: dict[str, int] = {}
        self.heartbeat_s = args.heartbeat_s
        self.counts = {"assigned": 0, "completed": 0, "lost": 0, "reregistered": 0, "heartbeats": 0}
        self.answers: asyncio.Queue[TaskAssigned] = asyncio.Queue()

    async def run(self) -> None:
        self.nc = await nats.connect(
            self.args.server,
            user_credentials=self.args.creds,
            name=f"sim-{self.args.prefix}",
            max_reconnect_attempts=-1,
            pending_size=64 * 1024 * 1024,
        )
        self.js = self.nc.jetstream(timeout=30)
        self.publisher = Publisher(self.js)
        sub_opts: dict[str, Any] = {"pending_msgs_limit": -1, "pending_bytes_limit": -1}
        await self.nc.subscribe("hive.task.*.assigned.*", cb=self._on_assigned, **sub_opts)
        await self.nc.subscribe("hive.node.*.lost", cb=self._on_lost, **sub_opts)
        await self.nc.subscribe(INTERVAL_SUBJECT, cb=self._on_interval)
        try:  # the interval in force, if the coordinator announced one before we started
            self._interval(msgspec.json.decode((await self.js.get_last_msg(AUDIT_STREAM, INTERVAL_SUBJECT)).data))
        except NotFoundError:
            pass
        started = time.monotonic()
        for node_id in self.ids:
            await self.publisher.publish(self._registration(node_id))
        await self.publisher.flush(timeout=60)
        say(event="registered", count=len(self.ids), seconds=round(time.monotonic() - started, 2))
        tasks = [asyncio.create_task(c) for c in (self._heartbeats(), self._answer(), self._control())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        say(event="bye", **self.counts)
        await self.nc.close()

    def _registration(self, node_id: str) -> NodeRegistered:
        return NodeRegistered(
            node_id=node_id,
            capacity=Resources(cpu=self.args.cpu, memory_gb=self.args.memory_gb),
            max_tasks=self.args.max_tasks,
            executors=["function"],
            hostname=f"sim-{self.args.prefix}",
            heartbeat_s=self.heartbeat_s,
            emitter=f"node:{node_id}",
        )

    async def _heartbeats(self) -> None:
        tick = 0
        next_at = time.monotonic()
        while True:
            buckets = max(1, round(self.heartbeat_s / TICK_S))
            for node_id in self.ids[tick % buckets :: buckets]:
                if node_id in self.dead:
                    continue
                beat = NodeHeartbeat(node_id=node_id, running=self.running.get(node_id, 0), emitter=f"node:{node_id}")
                await self.nc.publish(subject_for(beat), encode(beat))
                self.counts["heartbeats"] += 1
            tick += 1
            next_at += TICK_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _on_interval(self, msg: Msg) -> None:
        try:
            self._interval(msgspec.json.decode(msg.data))
        except (msgspec.DecodeError, TypeError):
            pass

    def _interval(self, announced: dict[str, Any]) -> None:
        """Beat at the larger of our own interval and the one the coordinator announced
        (events.node.HeartbeatIntervalSet; read as plain JSON, so older code runs too)."""
        self.heartbeat_s = max(self.args.heartbeat_s, float(announced.get("interval_s", 0.0)))
        say(event="interval", heartbeat_s=self.heartbeat_s)

    async def _on_assigned(self, msg: Msg) -> None:
        if msg.subject.rsplit(".", 1)[-1] not in self.hosted:
            return
        try:
            event = decode(msg.data, msg.subject)
        except BadEvent:
            return
        if isinstance(event, TaskAssigned) and event.node_id not in self.dead:
            self.counts["assigned"] += 1
            self.answers.put_nowait(event)

    async def _answer(self) -> None:
        while True:
            batch = [await self.answers.get()]
            while not self.answers.empty():
                batch.append(self.answers.get_nowait())
            for a in batch:
                self.running[a.node_id] = self.running.get(a.node_id, 0) + 1
                await self.publisher.publish(
                    TaskStarted(task_id=a.task_id, node_id=a.node_id, attempt=a.attempt, emitter=f"node:{a.node_id}")
                )
            if self.args.task_s:
                await asyncio.sleep(self.args.task_s)
            for a in batch:
                self.running[a.node_id] -= 1
                await self.publisher.publish(
                    TaskCompleted(task_id=a.task_id, node_id=a.node_id, attempt=a.attempt, emitter=f"node:{a.node_id}")
                )
                self.counts["completed"] += 1
            await self.publisher.flush(timeout=60)

    async def _on_lost(self, msg: Msg) -> None:
        node_id = msg.subject.split(".")[2]
        if node_id not in self.hosted:
            return
        self.counts["lost"] += 1
        say(event="lost", node_id=node_id, at=time.time(), dead=node_id in self.dead)
        if node_id not in self.dead:  # a live node told it is lost registers again
            self.counts["reregistered"] += 1
            await self.publisher.publish(self._registration(node_id))

    async def _control(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := (await reader.readline()).decode().strip():
            command, _, arg = line.partition(" ")
            if command == "kill" and arg in self.hosted:
                self.dead.add(arg)
                say(event="killed", node_id=arg, at=time.time())
            elif command == "stats":
                say(event="stats", **self.counts)
            elif command == "quit":
                return


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="simulated nodes for benchmarks/scale.py")
    parser.add_argument("--server", required=True)
    parser.add_argument("--creds", required=True)
    parser.add_argument("--prefix", required=True, help="node ids are PREFIX-00000 ...")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--heartbeat-s", type=float, default=1.0)
    parser.add_argument("--max-tasks", type=int, default=4)
    parser.add_argument("--cpu", type=float, default=4.0)
    parser.add_argument("--memory-gb", type=float, default=8.0)
    parser.add_argument("--task-s", type=float, default=0.0, help="how long each task 'runs'")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(Simulator(parse()).run())
