"""Executors run one attempt of a task and say how it ended (an ``Outcome``). A
cancelled coroutine means "stop now": each executor cleans up what it started."""

from __future__ import annotations

from typing import Protocol

from node.context import Outcome, TaskContext


class Executor(Protocol):
    name: str
    # whether the attempt's start may be reported late, or not at all if it ends first
    # (node.startreport): in-process handlers only. A process or a container outlives a
    # killed node (its watchdog or its restart sweeps it), so the log says it started
    # before it is spawned, and a restarted node reports it interrupted, never runs it twice.
    defers_start: bool

    async def run(self, ctx: TaskContext) -> Outcome: ...
