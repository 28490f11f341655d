"""Event factories for unit tests of the pure core."""

from __future__ import annotations

from itertools import count

from coordinator.state import ClusterState
from events import (
    NodeRegistered,
    Resources,
    TaskAssigned,
    TaskCompleted,
    TaskFailed,
    TaskSpec,
    TaskStarted,
    TaskSubmitted,
)

_clock = count(1000)


def ts() -> float:
    return float(next(_clock))


def register(
    node_id: str,
    cpu: float = 4,
    memory_gb: float = 8,
    max_tasks: int = 4,
    gpus: int = 0,
    executors: tuple[str, ...] = ("process", "function"),
) -> NodeRegistered:
    from events import GpuInfo

    return NodeRegistered(
        node_id=node_id,
        capacity=Resources(cpu=cpu, memory_gb=memory_gb, gpu=gpus, gpu_memory_gb=16.0 * gpus),
        max_tasks=max_tasks,
        executors=list(executors),
        gpus=[GpuInfo(index=i, name="T4", memory_gb=16) for i in range(gpus)],
        ts=ts(),
        emitter=f"node:{node_id}",
    )


def submit(task_id: str, **spec: object) -> TaskSubmitted:
    return TaskSubmitted(task_id=task_id, spec=TaskSpec(command=["true"], **spec), ts=ts())  # type: ignore[arg-type]


def assign(task_id: str, node_id: str, attempt: int = 1, gpus: list[int] | None = None) -> TaskAssigned:
    return TaskAssigned(task_id=task_id, node_id=node_id, attempt=attempt, gpus=gpus or [], ts=ts())


def start(task_id: str, node_id: str, attempt: int = 1) -> TaskStarted:
    return TaskStarted(task_id=task_id, node_id=node_id, attempt=attempt, ts=ts())


def complete(task_id: str, node_id: str, attempt: int = 1) -> TaskCompleted:
    return TaskCompleted(task_id=task_id, node_id=node_id, attempt=attempt, ts=ts(), result={"ok": True})


def fail(task_id: str, node_id: str, attempt: int = 1, reason: str = "error") -> TaskFailed:
    return TaskFailed(task_id=task_id, node_id=node_id, attempt=attempt, error="boom", reason=reason, ts=ts())  # type: ignore[arg-type]


def fold(*events: object) -> ClusterState:
    from coordinator.projection import apply

    state = ClusterState()
    for seq, event in enumerate(events, 1):
        apply(state, event, seq)  # type: ignore[arg-type]
    return state
