"""Node membership and liveness events. Heartbeats are telemetry (own stream, limited
retention); registration, drain and loss are audit facts."""

from __future__ import annotations

import msgspec

from events.base import Event, Resources


class GpuInfo(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    name: str
    memory_gb: float


class GpuUsage(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    utilization: float
    memory_used_gb: float


class NodeRegistered(Event, frozen=True, kw_only=True):
    node_id: str
    capacity: Resources
    max_tasks: int
    executors: list[str]
    gpus: list[GpuInfo] = []
    hostname: str = ""
    disk_free_gb: float = 0.0
    heartbeat_s: float = 2.0


class NodeHeartbeat(Event, frozen=True, kw_only=True):
    node_id: str
    running: int = 0
    cpu_percent: float = 0.0
    memory_used_gb: float = 0.0
    gpus: list[GpuUsage] = []


class NodeDrainRequested(Event, frozen=True, kw_only=True):
    node_id: str


class NodeDrained(Event, frozen=True, kw_only=True):
    node_id: str


class NodeLost(Event, frozen=True, kw_only=True):
    node_id: str
    reason: str
    last_seen: float = 0.0


class NodeTrustReset(Event, frozen=True, kw_only=True):
    node_id: str
    score: float | None = None


class TrustPolicySet(Event, frozen=True, kw_only=True):
    """The coordinator's trust rules, logged whenever they change, so that a replay scores
    nodes with the rules that were in force (not with whatever the replaying process has)."""

    initial: float
    success: float
    failure: float
    high: float
    medium: float
    floor: float
