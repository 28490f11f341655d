"""HiveMind's vocabulary: event types, subjects, streams and the codec.

The codec's names load on first use: its typed decoder takes ~10 ms to build, which a
read command (that only needs subjects) should not pay."""

from __future__ import annotations

from events.base import Event, Resources, new_id
from events.lazy import attributes
from events.negotiation import (
    GuidanceGiven,
    HelpRequested,
    ResourceDenied,
    ResourceGranted,
    ResourceRequested,
)
from events.node import (
    GpuInfo,
    GpuUsage,
    NodeDrained,
    NodeDrainRequested,
    NodeHeartbeat,
    NodeLost,
    NodeRegistered,
    NodeTrustReset,
)
from events.task import (
    OutputFile,
    TaskAssigned,
    TaskCancelled,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskReassigned,
    TaskRejected,
    TaskSpec,
    TaskStarted,
    TaskSubmitted,
)

__all__ = [
    "AnyEvent",
    "BadEvent",
    "Event",
    "GpuInfo",
    "GpuUsage",
    "GuidanceGiven",
    "HelpRequested",
    "NodeDrainRequested",
    "NodeDrained",
    "NodeHeartbeat",
    "NodeLost",
    "NodeRegistered",
    "NodeTrustReset",
    "OutputFile",
    "ResourceDenied",
    "ResourceGranted",
    "ResourceRequested",
    "Resources",
    "TaskAssigned",
    "TaskCancelRequested",
    "TaskCancelled",
    "TaskCompleted",
    "TaskFailed",
    "TaskProgress",
    "TaskReassigned",
    "TaskRejected",
    "TaskSpec",
    "TaskStarted",
    "TaskSubmitted",
    "decode",
    "encode",
    "new_id",
]

__getattr__ = attributes(
    "events",
    {"AnyEvent": "events.codec", "BadEvent": "events.validation", "decode": "events.codec", "encode": "events.codec"},
    globals(),
)
