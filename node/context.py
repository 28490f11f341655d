"""What a running task sees: its ids, its workspace, and the calls that reach the
coordinator: progress, and the seed's negotiation (``request_help`` -> guidance,
``request_resource`` -> grant or denial), each waiting with a timeout."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import msgspec

from events.base import Event, new_id
from events.negotiation import GuidanceGiven, HelpRequested, ResourceGranted, ResourceRequested
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
Ask = Callable[[Event, float], Awaitable[Event]]


class NegotiationTimeout(TimeoutError):
    """No answer to a help or resource request in time."""


class Guidance(msgspec.Struct, frozen=True):
    action: str  # continue or retry (skip and fail end the attempt before the handler sees them)
    message: str = ""


class Grant(msgspec.Struct, frozen=True):
    granted: bool
    resource: str
    amount: float
    message: str = ""


class ProcessTracker(Protocol):
    """Who kills a task's process group if the node dies (``node.reaper.Reaper``)."""

    def track(self, pgid: int) -> None: ...

    def untrack(self, pgid: int) -> None: ...


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
        ask: Ask | None = None,
        reaper: ProcessTracker | None = None,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.node_id = node_id
        self.spec = spec
        self._workspace = workspace
        self.workspace_used = False
        self.gpus = gpus
        self._emit_telemetry = emit_telemetry
        self._emit = emit
        self._ask = ask
        self.reaper = reaper  # an executor that starts processes registers their groups here
        self.emitter = f"node:{node_id}"

    @property
    def workspace(self) -> Path:
        """This attempt's scratch directory, made on first use (most handlers never touch
        one, and a mkdir per task is measurable at thousands of tasks per second)."""
        if not self.workspace_used:
            self._workspace.mkdir(parents=True, exist_ok=True)
            self.workspace_used = True
        return self._workspace

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
                message=message[:4096],
                emitter=self.emitter,
            )
        )

    async def request_help(
        self, problem: str, kind: str = "other", details: str = "", timeout: float = 300.0
    ) -> Guidance:
        """Ask the coordinator what to do. Kinds with a policy: ``missing_input``,
        ``dependency_not_ready`` (``details``: the task id); others go to an operator.
        Guidance ``skip``/``fail`` ends the attempt right there; ``retry`` is followed by the
        task moving to another node; ``continue`` returns here."""
        event = HelpRequested(
            task_id=self.task_id,
            node_id=self.node_id,
            attempt=self.attempt,
            request_id=new_id(),
            problem=problem,
            kind=kind,
            details=details,
            emitter=self.emitter,
        )
        answer = await self._negotiate(event, timeout, f"no guidance for {problem!r}")
        assert isinstance(answer, GuidanceGiven)
        return Guidance(action=answer.action, message=answer.message)

    async def request_resource(self, resource: str, amount: float, reason: str = "", timeout: float = 60.0) -> Grant:
        """Ask for more of ``resource`` (cpu, memory_gb, gpu, gpu_memory_gb) for this attempt."""
        event = ResourceRequested(
            task_id=self.task_id,
            node_id=self.node_id,
            attempt=self.attempt,
            request_id=new_id(),
            resource=resource,
            amount=amount,
            reason=reason,
            emitter=self.emitter,
        )
        answer = await self._negotiate(event, timeout, f"no answer to the request for {amount:g} {resource}")
        if isinstance(answer, ResourceGranted):
            return Grant(granted=True, resource=resource, amount=answer.amount, message=answer.message)
        return Grant(granted=False, resource=resource, amount=0.0, message=getattr(answer, "reason", ""))

    async def _negotiate(self, event: Event, timeout: float, what: str) -> Event:
        if self._ask is None:
            raise RuntimeError("this context cannot reach a coordinator")
        try:
            return await self._ask(event, timeout)
        except TimeoutError:
            raise NegotiationTimeout(f"{what} within {timeout:g}s") from None
