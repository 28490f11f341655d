"""Theory of operation: a node's own projection of the tasks assigned to it.

Folded from the events on the node's subjects only (``hive.task.*.*.<node>`` and
``hive.node.<node>.*``). After a restart it tells the node which assignments are still
to run and which attempts were cut short by the crash (started, never finished).

Only tasks still to run or running stay in memory: once a finished or stopped task's row
is written (``settle``), just its attempt is kept (``settled``), which is all an old
assignment seen again needs, so memory and a restart do not grow with the history.
"""

from __future__ import annotations

from enum import StrEnum
from functools import singledispatch

import msgspec

from events.base import Event
from events.fencing import superseded
from events.node import LeaderElected, NodeDrained, NodeDrainRequested, NodeLost, NodeRegistered
from events.task import TaskAssigned, TaskCancelled, TaskCompleted, TaskFailed, TaskReassigned, TaskSpec, TaskStarted


class LocalState(StrEnum):
    ASSIGNED = "assigned"
    STARTED = "started"
    FINISHED = "finished"
    STOPPED = "stopped"  # cancelled or taken away by the coordinator


DONE = frozenset({LocalState.FINISHED, LocalState.STOPPED})


class LocalTask(msgspec.Struct, kw_only=True):
    task_id: str
    attempt: int
    state: LocalState
    spec: TaskSpec
    gpus: list[int] = []
    updated_at: float = 0.0


class NodeLocal:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.tasks: dict[str, LocalTask] = {}
        self.settled: dict[str, int] = {}  # finished or stopped, row written: task -> attempt
        self.settling: list[str] = []  # finished or stopped since the last flush
        self.draining = False
        self.lost_at = 0.0
        self.registered_at = 0.0
        self.dirty: set[str] = set()
        self.seq = 0
        self.term = 0  # the newest leader's term seen in the log (events.fencing)

    def settle(self) -> None:
        """Drop the finished and stopped tasks whose rows are written (after a flush)."""
        for task_id in self.settling:
            task = self.tasks.get(task_id)
            if task is not None and task.state in DONE and task_id not in self.dirty:
                del self.tasks[task_id]
                self.settled[task_id] = task.attempt
        self.settling.clear()

    def pending_starts(self) -> list[LocalTask]:
        return [t for t in self.tasks.values() if t.state == LocalState.ASSIGNED]

    def interrupted(self) -> list[LocalTask]:
        return [t for t in self.tasks.values() if t.state == LocalState.STARTED]


def apply(local: NodeLocal, event: Event, seq: int = 0) -> None:
    if seq:
        local.seq = max(local.seq, seq)
    if superseded(local.term, event):
        return  # a deposed leader's decision, published late: the coordinator ignores it too
    _apply(event, local)


@singledispatch
def _apply(event: Event, local: NodeLocal) -> None:
    pass


def _set(
    local: NodeLocal, task_id: str, attempt: int, new: LocalState, ts: float, unless: tuple[LocalState, ...] = ()
) -> None:
    task = local.tasks.get(task_id)
    if task is None or task.attempt != attempt or task.state in unless:
        return
    task.state = new
    task.updated_at = ts
    local.dirty.add(task_id)
    if new in DONE:
        local.settling.append(task_id)


@_apply.register
def _(event: TaskAssigned, local: NodeLocal) -> None:
    known = local.tasks.get(event.task_id)
    attempt = known.attempt if known is not None else local.settled.get(event.task_id, 0)
    if event.spec is None or attempt >= event.attempt:
        return
    local.settled.pop(event.task_id, None)
    local.tasks[event.task_id] = LocalTask(
        task_id=event.task_id,
        attempt=event.attempt,
        state=LocalState.ASSIGNED,
        spec=event.spec,
        gpus=list(event.gpus),
        updated_at=event.ts,
    )
    local.dirty.add(event.task_id)


@_apply.register
def _(event: TaskStarted, local: NodeLocal) -> None:
    _set(
        local,
        event.task_id,
        event.attempt,
        LocalState.STARTED,
        event.ts,
        unless=(LocalState.FINISHED, LocalState.STOPPED),
    )


@_apply.register
def _(event: TaskCompleted, local: NodeLocal) -> None:
    _set(local, event.task_id, event.attempt, LocalState.FINISHED, event.ts)


@_apply.register
def _(event: TaskFailed, local: NodeLocal) -> None:
    _set(local, event.task_id, event.attempt, LocalState.FINISHED, event.ts)


@_apply.register
def _(event: TaskCancelled, local: NodeLocal) -> None:
    _set(local, event.task_id, event.attempt, LocalState.STOPPED, event.ts, unless=(LocalState.FINISHED,))


@_apply.register
def _(event: TaskReassigned, local: NodeLocal) -> None:
    _set(local, event.task_id, event.attempt, LocalState.STOPPED, event.ts, unless=(LocalState.FINISHED,))


@_apply.register
def _(event: NodeRegistered, local: NodeLocal) -> None:
    local.draining = False
    local.registered_at = event.ts


@_apply.register
def _(event: NodeDrainRequested, local: NodeLocal) -> None:
    local.draining = True


@_apply.register
def _(event: NodeDrained, local: NodeLocal) -> None:
    local.draining = False


@_apply.register
def _(event: NodeLost, local: NodeLocal) -> None:
    local.lost_at = event.ts


@_apply.register
def _(event: LeaderElected, local: NodeLocal) -> None:
    local.term = max(local.term, event.term)
