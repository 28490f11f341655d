"""Node membership and liveness events. Heartbeats are telemetry (own stream, limited
retention); registration, drain and loss are audit facts."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from events.base import Event, Resources
from events.limits import (
    Gigabytes,
    GpuIndex,
    HeartbeatFloor,
    HeartbeatInterval,
    Id,
    Line,
    MaxTasks,
    Name,
    NodeCount,
    Percent,
    Pid,
    Score,
    ScoreDelta,
    TaskCount,
    Term,
    TimeOrZero,
    Token,
)
from events.task import ExecutorKind


class GpuInfo(msgspec.Struct, frozen=True, kw_only=True):
    index: GpuIndex
    name: Name
    memory_gb: Gigabytes


class GpuUsage(msgspec.Struct, frozen=True, kw_only=True):
    index: GpuIndex
    utilization: Percent
    memory_used_gb: Gigabytes


class NodeRegistered(Event, frozen=True, kw_only=True):
    node_id: Id
    capacity: Resources
    max_tasks: MaxTasks
    executors: Annotated[list[ExecutorKind], Meta(max_length=8)]
    gpus: Annotated[list[GpuInfo], Meta(max_length=1024)] = []
    hostname: Name = ""
    disk_free_gb: Gigabytes = 0.0
    heartbeat_s: HeartbeatInterval = 2.0


class NodeHeartbeat(Event, frozen=True, kw_only=True):
    node_id: Id
    running: TaskCount = 0
    cpu_percent: Percent = 0.0
    memory_used_gb: Gigabytes = 0.0
    gpus: Annotated[list[GpuUsage], Meta(max_length=1024)] = []


class NodeDrainRequested(Event, frozen=True, kw_only=True):
    node_id: Id


class NodeDrained(Event, frozen=True, kw_only=True):
    node_id: Id


class NodeLost(Event, frozen=True, kw_only=True):
    node_id: Id
    reason: Line
    last_seen: TimeOrZero = 0.0
    term: Term = 0  # the leader's term (events.node.LeaderElected); 0 from a node or before leases


class NodeTrustReset(Event, frozen=True, kw_only=True):
    node_id: Id
    score: Score | None = None
    by: Token | None = None  # operator:<name> who asked
    term: Term = 0  # the leader's term (events.node.LeaderElected); 0 from a node or before leases


class TrustPolicySet(Event, frozen=True, kw_only=True):
    """The coordinator's trust rules, logged whenever they change, so that a replay scores
    nodes with the rules that were in force (not with whatever the replaying process has)."""

    initial: Score
    success: ScoreDelta
    failure: ScoreDelta
    high: Score
    medium: Score
    floor: Score
    term: Term = 0  # the leader's term (events.node.LeaderElected); 0 from a node or before leases


class HeartbeatIntervalSet(Event, frozen=True, kw_only=True):
    """The heartbeat interval the coordinator asks of every node, set for the number of
    live nodes so the heartbeats it takes stay within its budget (a Nomad-style TTL that
    grows with the cluster). A node beats at the larger of this and its own interval, and
    liveness counts on the same; 0: no cluster-wide floor (each node's own interval)."""

    interval_s: HeartbeatFloor
    nodes: NodeCount = 0  # the live nodes it was set for
    term: Term = 0  # the leader's term (events.node.LeaderElected); 0 from a node or before leases


class LeaderElected(Event, frozen=True, kw_only=True):
    """A coordinator won the lease (coordinator/lease.py) with ``term``, the revision of its
    key in the lease bucket. Published before its first decision: from here on the
    projection ignores coordinator decisions of a lower term (a leader that was paused)."""

    coordinator_id: Id
    term: Term
    host: Name = ""
    pid: Pid = 0
