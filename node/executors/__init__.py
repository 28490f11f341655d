"""Executors run one attempt of a task and say how it ended (an ``Outcome``). A
cancelled coroutine means "stop now": each executor cleans up what it started."""

from __future__ import annotations

from typing import Protocol

from node.context import Outcome, TaskContext


class Executor(Protocol):
    name: str

    async def run(self, ctx: TaskContext) -> Outcome: ...
