"""Task lifecycle events.

Writers: a client submits and asks to cancel; the coordinator assigns, reassigns, cancels
and rejects; the node an attempt runs on reports started, progress, completed and failed.
Every node report carries the ``attempt`` it belongs to: projections ignore reports of an
attempt that is no longer current (a late ack after redelivery, a node that came back
after being declared lost).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from events.base import Event, Resources

ExecutorKind = Literal["process", "function", "docker"]


class TaskSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What to run and what it needs. Immutable once submitted."""

    executor: ExecutorKind = "process"
    command: list[str] = []
    env: dict[str, str] = {}
    cwd: str | None = None
    # function executor: the handler registered for this type gets the payload
    type: str | None = None
    payload: Any = None
    # docker executor
    image: str | None = None
    network: bool = False
    resources: Resources = Resources()
    priority: int = 0
    after: list[str] = []
    max_attempts: int = 1
    timeout_s: float | None = None
    min_trust: Literal["low", "medium", "high"] | None = None
    name: str | None = None


class OutputFile(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    size: int
    sha256: str


class TaskSubmitted(Event, frozen=True, kw_only=True):
    task_id: str
    spec: TaskSpec


class TaskAssigned(Event, frozen=True, kw_only=True):
    """Carries the spec, so a node needs nothing but its own subjects to run the task."""

    task_id: str
    node_id: str
    attempt: int
    gpus: list[int] = []
    spec: TaskSpec | None = None


class TaskStarted(Event, frozen=True, kw_only=True):
    task_id: str
    node_id: str
    attempt: int


class TaskProgress(Event, frozen=True, kw_only=True):
    task_id: str
    node_id: str
    attempt: int
    fraction: float
    message: str = ""


class TaskCompleted(Event, frozen=True, kw_only=True):
    task_id: str
    node_id: str
    attempt: int
    result: Any = None
    exit_code: int | None = None
    duration_s: float = 0.0
    stdout: str = ""
    stderr: str = ""
    outputs: list[OutputFile] = []
    skipped: bool = False


FailureReason = Literal["error", "exit_code", "timeout", "oom", "lost", "interrupted", "preempted", "guidance"]


class TaskFailed(Event, frozen=True, kw_only=True):
    task_id: str
    node_id: str
    attempt: int
    error: str
    details: str = ""
    exit_code: int | None = None
    reason: FailureReason = "error"
    duration_s: float = 0.0
    stdout: str = ""
    stderr: str = ""


class TaskCancelRequested(Event, frozen=True, kw_only=True):
    task_id: str
    reason: str = "cancelled by user"


class TaskCancelled(Event, frozen=True, kw_only=True):
    """The coordinator's decision: the task will not run (further). ``node_id`` is set when
    an attempt was running there, so the node stops it."""

    task_id: str
    reason: str
    node_id: str | None = None
    attempt: int = 0


class TaskReassigned(Event, frozen=True, kw_only=True):
    """The coordinator's decision: the current attempt is over and the task goes back to the
    queue. The next assignment gets ``attempt + 1``; ``avoid_node`` is preferred against."""

    task_id: str
    attempt: int
    reason: str
    from_node: str | None = None
    avoid_node: str | None = None
    not_before: float = 0.0


class TaskRejected(Event, frozen=True, kw_only=True):
    """The coordinator refused a submission that slipped past client-side checks."""

    task_id: str
    reason: str
