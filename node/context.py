"""What a running task sees: its ids, its workspace, and the calls that reach the
coordinator (progress; help and resource requests come with the negotiation work)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from events.base import Event
from events.task import OutputFile, TaskProgress, TaskSpec


class Outcome(msgspec.Struct, kw_only=True):
    """How an attempt ended, as the executor saw it."""

    ok: bool
    result: Any = None
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    error: str = ""
    details: str = ""
    reason: str = "error"
    outputs: list[OutputFile] = []
    skipped: bool = False

    @classmethod
    def failure(cls, error: str, reason: str = "error", **kw: Any) -> Outcome:
        return cls(ok=False, error=error, reason=reason, **kw)


Emit = Callable[[Event], Awaitable[None]]


class TaskContext:
    def __init__(
        self,
        *,
        task_id: str,
        attempt: int,
        node_id: str,
        spec: TaskSpec,
        workspace: Path,
        gpus: list[int],
        emit_telemetry: Emit,
        emit: Emit,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.node_id = node_id
        self.spec = spec
        self.workspace = workspace
        self.gpus = gpus
        self._emit_telemetry = emit_telemetry
        self._emit = emit
        self.emitter = f"node:{node_id}"

    @property
    def payload(self) -> Any:
        return self.spec.payload

    async def progress(self, fraction: float, message: str = "") -> None:
        fraction = min(1.0, max(0.0, float(fraction)))
        await self._emit_telemetry(
            TaskProgress(
                task_id=self.task_id,
                node_id=self.node_id,
                attempt=self.attempt,
                fraction=fraction,
                message=message,
                emitter=self.emitter,
            )
        )
