"""Running one attempt on the node: its executor, its share of the node's resources, the
reports of its start and its end. Mixed into ``Node``; what it needs from the node is
declared below (methods as annotations, so that none of them shadows the real one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from nats.js import JetStreamContext

from events.base import Event, Resources
from events.codec import BadEvent, check_outgoing
from events.limits import BLOCK_MAX, clip
from events.task import TaskCompleted, TaskFailed, TaskStarted
from node.context import Outcome, TaskContext
from node.executors import Executor
from node.reaper import Reaper
from node.results import upload_outputs
from node.startreport import START_REPORT_S, StartReport
from node.state import LocalTask

log = structlog.get_logger("hive.node")

Attempt = tuple[str, int]


class Attempts:
    node_id: str
    emitter: str
    js: JetStreamContext
    reaper: Reaper
    workdir: Path
    executors: dict[str, Executor]
    capacity: Resources
    allocated: Resources
    running: dict[Attempt, asyncio.Task[None]]
    extra: dict[Attempt, Resources]
    forced: dict[Attempt, Outcome]
    wake: asyncio.Event
    _report: Callable[..., Awaitable[None]]
    _telemetry: Callable[[Event], Awaitable[None]]
    _ask: Callable[..., Awaitable[Any]]

    def _start(self, task: LocalTask) -> None:
        key = (task.task_id, task.attempt)
        if key not in self.running:
            self.running[key] = asyncio.create_task(self._run_attempt(task))

    def _stop(self, task_id: str, attempt: int) -> None:
        job = self.running.get((task_id, attempt))
        if job is not None:
            log.info("stopping task", task_id=task_id, attempt=attempt)
            job.cancel()

    async def _run_attempt(self, task: LocalTask) -> None:
        structlog.contextvars.bind_contextvars(task_id=task.task_id, attempt=task.attempt)
        spec = task.spec
        need = spec.resources
        try:
            executor = self.executors.get(spec.executor)
            if executor is None or not need.fits_in(self.capacity - self.allocated):
                why = f"executor {spec.executor} not offered" if executor is None else "not enough free resources"
                outcome = Outcome.failure(f"node {self.node_id} cannot run it: {why}", reason="unrunnable")
                await self._finish(task, outcome, 0.0)
                return
            self.allocated = self.allocated + need
            try:
                await self._execute(task, executor)
            finally:
                self.allocated = self.allocated - need - self.extra.pop((task.task_id, task.attempt), Resources())
                self.forced.pop((task.task_id, task.attempt), None)
        finally:
            self.running.pop((task.task_id, task.attempt), None)
            self.wake.set()

    async def _execute(self, task: LocalTask, executor: Executor) -> None:
        spec = task.spec
        workspace = self.workdir / f"{task.task_id}-{task.attempt}"
        start = StartReport(
            lambda ts: TaskStarted(
                task_id=task.task_id, node_id=self.node_id, attempt=task.attempt, emitter=self.emitter, ts=ts
            ),
            self._report,
            delay=START_REPORT_S if executor.defers_start else None,
        )
        if not executor.defers_start:
            await start.flush()
        ctx = TaskContext(
            task_id=task.task_id,
            attempt=task.attempt,
            node_id=self.node_id,
            spec=spec,
            workspace=workspace,
            gpus=task.gpus,
            emit_telemetry=lambda event: self._after_start(start, self._telemetry, event),
            emit=lambda event: self._after_start(start, self._report, event),
            ask=lambda event, timeout: self._after_start(start, self._ask, event, timeout),
            reaper=self.reaper,
        )
        try:
            started = time.monotonic()
            try:
                if spec.timeout_s:
                    outcome = await asyncio.wait_for(executor.run(ctx), spec.timeout_s)
                else:
                    outcome = await executor.run(ctx)
            except TimeoutError:
                outcome = Outcome.failure(f"timed out after {spec.timeout_s:g}s", reason="timeout")
            except asyncio.CancelledError:
                forced = self.forced.get((task.task_id, task.attempt))
                if forced is None:
                    log.info("task stopped", task_id=task.task_id)
                    return  # the coordinator already recorded why (cancelled or reassigned)
                outcome = forced
            except Exception as exc:  # an executor bug must not take the node down
                log.exception("executor failed")
                outcome = Outcome.failure(f"executor error: {type(exc).__name__}: {exc}")
            if outcome.ok and ctx.workspace_used:
                outcome.outputs = await upload_outputs(self.js, task.task_id, workspace / "out")
            duration = time.monotonic() - started
            await self._finish(task, outcome, duration, started_at=await start.settle())
        finally:
            start.cancel()  # stopped, or failed past the executor: no start owed

    @staticmethod
    async def _after_start(start: StartReport, report: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        await start.flush()  # the log never holds a report of an attempt before its start
        return await report(*args)

    async def _finish(
        self, task: LocalTask, outcome: Outcome, duration: float, started_at: float | None = None
    ) -> None:
        common: dict[str, Any] = {
            "task_id": task.task_id,
            "node_id": self.node_id,
            "attempt": task.attempt,
            "emitter": self.emitter,
            "exit_code": outcome.exit_code,
            "duration_s": round(duration, 6),
            "started_at": started_at,
            "stdout": outcome.stdout,
            "stderr": outcome.stderr,
        }
        if outcome.ok:
            event: Event = TaskCompleted(
                result=outcome.result, outputs=outcome.outputs, skipped=outcome.skipped, **common
            )
            # (debug: a line per success is a busy node's log and a sixth of its CPU; the
            # events are the record, and failures stay at info)
            log.debug("task completed", task_id=task.task_id, duration_s=round(duration, 3))
        else:
            event = TaskFailed(
                error=clip(outcome.error),
                details=outcome.details[-BLOCK_MAX:],
                reason=outcome.reason,
                **common,  # type: ignore[arg-type]
            )
            log.info("task failed", task_id=task.task_id, error=outcome.error[:300], reason=outcome.reason)
        try:
            data = check_outgoing(event)
        except BadEvent as exc:
            # e.g. a result over the size limit: the readers would refuse the report and the
            # task would wait forever, so the attempt fails, with the reason, instead
            log.warning("the attempt's report breaks the event rules; reporting a failure", error=str(exc)[:300])
            common.update(stdout=outcome.stdout[-BLOCK_MAX:], stderr=outcome.stderr[-BLOCK_MAX:])
            event = TaskFailed(error=clip(f"the attempt's report was refused: {exc}"), reason="error", **common)
            data = None
        await self._report(event, data)
