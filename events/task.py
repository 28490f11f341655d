"""Task lifecycle events.

Writers: a client submits and asks to cancel; the coordinator assigns, reassigns, cancels
and rejects; the node an attempt runs on reports started, progress, completed and failed.
Every node report carries the ``attempt`` it belongs to: projections ignore reports of an
attempt that is no longer current (a late ack after redelivery, a node that came back
after being declared lost).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from events.base import Event, Resources
from events.limits import (
    Argv,
    Attempt,
    AttemptOrZero,
    Block,
    EnvName,
    ExitCode,
    FilePath,
    FileSize,
    Fraction,
    GpuIndexes,
    Id,
    Ids,
    Line,
    MaxAttempts,
    Name,
    Output,
    Priority,
    RelativePath,
    Seconds,
    Sha256,
    Term,
    TimeOrZero,
    Timeout,
    Timestamp,
    Token,
)

ExecutorKind = Literal["process", "function", "docker"]


class TaskSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What to run and what it needs. Immutable once submitted. (Defaults are left out on
    the wire, as in an ``Event``.)"""

    executor: ExecutorKind = "process"
    command: Argv = []
    env: Annotated[dict[EnvName, Annotated[str, Meta(max_length=131_072)]], Meta(max_length=1024)] = {}
    cwd: FilePath | None = None
    # function executor: the handler registered for this type gets the payload
    type: Token | None = None
    payload: Any = None
    # docker executor
    image: Name | None = None
    network: bool = False
    resources: Resources = Resources()
    priority: Priority = 0
    after: Ids = []
    max_attempts: MaxAttempts = 1
    timeout_s: Timeout | None = None
    min_trust: Literal["low", "medium", "high"] | None = None
    name: Name | None = None


class OutputFile(msgspec.Struct, frozen=True, kw_only=True):
    name: RelativePath
    size: FileSize
    sha256: Sha256


class TaskSubmitted(Event, frozen=True, kw_only=True):
    task_id: Id
    spec: TaskSpec


class TaskAssigned(Event, frozen=True, kw_only=True):
    """Carries the spec, so a node needs nothing but its own subjects to run the task."""

    task_id: Id
    node_id: Id
    attempt: Attempt
    gpus: GpuIndexes = []
    spec: TaskSpec | None = None
    term: Term = 0  # the leader's term (events.node.LeaderElected); 0 from a node or before leases


class TaskStarted(Event, frozen=True, kw_only=True):
    task_id: Id
    node_id: Id
    attempt: Attempt


class TaskProgress(Event, frozen=True, kw_only=True):
    task_id: Id
    node_id: Id
    attempt: Attempt
    fraction: Fraction
    message: Line = ""


class TaskCompleted(Event, frozen=True, kw_only=True):
    task_id: Id
    node_id: Id
    attempt: Attempt
    result: Any = None
    exit_code: ExitCode | None = None
    duration_s: Seconds = 0.0
    stdout: Output = ""
    stderr: Output = ""
    outputs: Annotated[list[OutputFile], Meta(max_length=10_000)] = []
    skipped: bool = False
    # when the attempt began, from an attempt that ended before it sent TaskStarted
    # (node.startreport); None when a TaskStarted says it
    started_at: Timestamp | None = None


# unrunnable: the node could not even start it (no such program, no handler, executor not offered)
FailureReason = Literal[
    "error", "exit_code", "timeout", "oom", "lost", "interrupted", "preempted", "guidance", "unrunnable"
]


class TaskFailed(Event, frozen=True, kw_only=True):
    task_id: Id
    node_id: Id
    attempt: Attempt
    error: Line
    details: Block = ""
    exit_code: ExitCode | None = None
    reason: FailureReason = "error"
    duration_s: Seconds = 0.0
    stdout: Output = ""
    stderr: Output = ""
    term: Term = 0  # the leader's term (events.node.LeaderElected); 0 from a node or before leases
    started_at: Timestamp | None = None  # as in TaskCompleted


class TaskCancelRequested(Event, frozen=True, kw_only=True):
    """A person asks to stop a task: a client only its own tasks, an operator any
    (``as_operator``: published on the ``op`` subject only the operator role may use)."""

    task_id: Id
    reason: Line = "cancelled by user"
    as_operator: bool = False


class TaskCancelled(Event, frozen=True, kw_only=True):
    """The coordinator's decision: the task will not run (further). ``node_id`` is set when
    an attempt was running there, so the node stops it."""

    task_id: Id
    reason: Line
    node_id: Id | None = None
    attempt: AttemptOrZero = 0
    term: Term = 0  # the leader's term (events.node.LeaderElected); 0 from a node or before leases


class TaskReassigned(Event, frozen=True, kw_only=True):
    """The coordinator's decision: the current attempt is over and the task goes back to the
    queue. The next assignment gets ``attempt + 1``; ``avoid_node`` is preferred against."""

    task_id: Id
    attempt: AttemptOrZero
    reason: Line
    from_node: Id | None = None
    avoid_node: Id | None = None
    not_before: TimeOrZero = 0.0
    term: Term = 0  # the leader's term (events.node.LeaderElected); 0 from a node or before leases


class TaskRejected(Event, frozen=True, kw_only=True):
    """The coordinator refused a submission that slipped past client-side checks."""

    task_id: Id
    reason: Line
    term: Term = 0  # the leader's term (events.node.LeaderElected); 0 from a node or before leases
