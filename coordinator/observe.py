"""The coordinator's ``/health`` and ``/metrics`` (opt-in: ``hive coordinator --http-port``).

Health checks, each run when ``/health`` is asked:

* ``nats``: the connection to the NATS server is up;
* ``caught_up``: the projection is behind the audit log by at most ``max_lag_events``
  messages, and the oldest message it has not applied is at most ``max_lag_s`` old (so a
  burst that is being folded is healthy, a stalled reader is not);
* ``leader``: some coordinator leads: this one, or (a standby, with ``--lease-s``) the one
  whose entry is in the lease bucket now. A healthy standby is healthy; the body says
  which role this one has.

Metrics come from the state at scrape time (a collector), except the placement latency
histogram, observed when an assignment is folded. ``fold`` wraps the core's ``handle``
only when the port is given, so a coordinator without it pays nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from aiohttp import web
from nats.aio.client import Client
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.lease import Holder
from coordinator.state import NodeState, TaskState
from edge.health import HttpServer, add_routes
from events.base import Event
from events.subjects import AUDIT_STREAM, LEADER_KEY
from events.task import TaskAssigned

if TYPE_CHECKING:
    from coordinator.service import Coordinator

log = structlog.get_logger("hive.coordinator")

RESOURCES = ("cpu", "memory_gb", "gpu", "gpu_memory_gb")
LIVE = (NodeState.ACTIVE, NodeState.DRAINING)
# seconds from "ready to place" to the assignment's timestamp
PLACEMENT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
NATS_TIMEOUT_S = 1.0


class CoordinatorObserver:
    def __init__(
        self, coordinator: Coordinator, nc: Client, max_lag_events: int = 50_000, max_lag_s: float = 10.0
    ) -> None:
        self.coordinator = coordinator
        self.nc = nc
        self.js = nc.jetstream(timeout=NATS_TIMEOUT_S)
        self.max_lag_events = max_lag_events
        self.max_lag_s = max_lag_s
        self.handle = coordinator.core.handle
        # what was in the log when we started was observed by an earlier run: placements
        # are timed from here on, so a restart does not replay history into the histogram
        self.live_from = coordinator.caught_up_to
        self.applied = 0
        self.rejected_at_start = Counter(coordinator.rejects.total)
        self.log_last: int | None = None
        self.behind_s: float | None = None
        self.registry = CollectorRegistry()
        self.placement = Histogram(
            "hive_placement_latency_seconds",
            "From a task being ready to place (submitted, dependencies done, or requeued and past its "
            "backoff) to its assignment, for assignments folded by this coordinator",
            buckets=PLACEMENT_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))
        self.checks = {"nats": self.check_nats, "caught_up": self.check_caught_up, "leader": self.check_leader}

    # -- the hot path (only when the port is given) ------------------------------------

    def fold(self, event: Event, seq: int) -> None:
        """The core's ``handle`` plus what metrics need to see of an event."""
        if type(event) is not TaskAssigned or seq <= self.live_from:
            self.handle(event, seq)
            self.applied += 1
            return
        task = self.coordinator.core.state.tasks.get(event.task_id)
        ready_at = None if task is None or task.state != TaskState.QUEUED else max(task.queued_at, task.not_before)
        self.handle(event, seq)
        self.applied += 1
        if (
            ready_at is not None
            and task is not None
            and task.state == TaskState.ASSIGNED
            and task.attempt == event.attempt
        ):
            self.placement.observe(max(0.0, event.ts - ready_at))

    # -- health ------------------------------------------------------------------------

    async def check_nats(self) -> tuple[bool, str]:
        if self.nc.is_connected:
            return True, f"connected to {_server(self.nc)}"
        state = "reconnecting" if self.nc.is_reconnecting else "closed" if self.nc.is_closed else "not connected"
        return False, f"{state} to NATS"

    async def lag(self) -> tuple[int, float | None]:
        """(messages of the audit log not applied yet, age in seconds of the oldest of them)."""
        if not self.nc.is_connected:
            raise ConnectionError("not connected to NATS")
        seq = self.coordinator.core.state.seq
        last = (await self.js.stream_info(AUDIT_STREAM)).state.last_seq
        self.log_last = last
        behind = max(0, last - seq)
        age: float | None = 0.0
        if behind:
            try:
                oldest = await self.js.get_msg(AUDIT_STREAM, seq + 1)
                age = max(0.0, time.time() - oldest.time.timestamp()) if oldest.time else None
            except Exception:  # deleted or not answered: judge by the count alone
                age = None
        self.behind_s = age
        return behind, age

    async def check_caught_up(self) -> tuple[bool, str]:
        behind, age = await self.lag()
        seq = self.coordinator.core.state.seq
        if not behind:
            return True, f"at the end of the log (seq {seq})"
        aged = "unknown age" if age is None else f"oldest {age:.1f}s old"
        ok = behind <= self.max_lag_events and (age is None or age <= self.max_lag_s)
        limits = f"limits {self.max_lag_events} messages, {self.max_lag_s:g}s"
        return ok, f"{behind} messages behind the log ({aged}; {limits}) at seq {seq}"

    async def check_leader(self) -> tuple[bool, str]:
        c = self.coordinator
        if c.keeper is None:
            return True, "the only coordinator (no lease): leads"
        if c.leading():
            return True, f"this coordinator leads (term {c.term})"
        if not self.nc.is_connected:
            return False, "standby, not connected to NATS: cannot tell whether a leader exists"
        try:
            entry = await asyncio.wait_for(c.keeper.kv.get(LEADER_KEY), NATS_TIMEOUT_S)
        except TimeoutError:
            return False, "standby; the lease bucket did not answer"
        except Exception as exc:  # KeyNotFoundError / KeyDeletedError: nobody holds the lease
            return False, f"standby and no coordinator holds the lease ({type(exc).__name__})"
        if not entry.value:
            return False, "standby and no coordinator holds the lease"
        try:
            holder = msgspec.json.decode(entry.value, type=Holder)
        except msgspec.DecodeError:
            return True, f"standby; an unreadable holder has the lease (revision {entry.revision})"
        if holder == c.keeper.holder:
            # our own key, left while we lost touch: no leader decides until we reclaim it
            return False, "standby; the lease still names this coordinator, which does not lead now"
        return True, f"standby; {holder.id} on {holder.host or '?'} holds the lease (revision {entry.revision})"

    def about(self) -> dict[str, Any]:
        c = self.coordinator
        leader = c.core.state.leader
        return {
            "service": "coordinator",
            "id": c.coordinator_id,
            "role": "leader" if c.leading() else "standby",
            "term": c.term,
            "leader": None if leader is None else {"id": leader.coordinator_id, "term": leader.term},
            "seq": c.core.state.seq,
        }

    async def before_scrape(self) -> None:
        await self.lag()

    def app(self) -> web.Application:
        app = web.Application()
        add_routes(app, self.checks, self.registry, self.before_scrape, self.about)
        return app


class _StateCollector(Collector):
    """Gauges and counters read from the coordinator's state at scrape time."""

    def __init__(self, observer: CoordinatorObserver) -> None:
        self.o = observer

    def collect(self) -> Iterator[Metric]:
        o, c = self.o, self.o.coordinator
        state = c.core.state
        by_state = state.counts()
        tasks = GaugeMetricFamily("hive_tasks", "Tasks by state", labels=["state"])
        for s in TaskState:
            tasks.add_metric([s.value], by_state.get(s.value, 0))
        yield tasks
        yield _gauge("hive_queue_depth", "Tasks ready and waiting for a node (state queued)", len(state.queue))
        nodes_by_state = Counter(n.state for n in state.nodes.values())
        nodes = GaugeMetricFamily("hive_nodes", "Nodes by state", labels=["state"])
        for s in NodeState:
            nodes.add_metric([s.value], nodes_by_state.get(s, 0))
        yield nodes

        yield CounterMetricFamily(
            "hive_events_applied", "Audit-log events folded into the projection by this process", value=o.applied
        )
        rejected = CounterMetricFamily(
            "hive_events_rejected", "Audit-log events rejected since this process started, by rule", labels=["rule"]
        )
        for rule, count in sorted(c.rejects.total.items()):
            rejected.add_metric([rule], max(0, count - o.rejected_at_start.get(rule, 0)))
        yield rejected
        yield CounterMetricFamily(
            "hive_events_ignored",
            "Events folded without effect (stale attempt or term, illegal move)",
            value=state.ignored,
        )
        yield CounterMetricFamily("hive_decide_errors", "Rounds of decisions that failed", value=c.decide_errors)
        yield _gauge(
            "hive_decisions_inflight", "Decisions published and not yet seen back in the log", len(c.core.inflight)
        )

        yield _gauge("hive_projection_seq", "Last audit-log sequence applied to the projection", state.seq)
        if o.log_last is not None:
            yield _gauge("hive_log_last_seq", "Last sequence of the audit log (at the last scrape)", o.log_last)
            yield _gauge(
                "hive_consumer_lag_messages", "Audit-log messages not applied yet", max(0, o.log_last - state.seq)
            )
        if o.behind_s is not None:
            yield _gauge("hive_consumer_lag_seconds", "Age of the oldest audit-log message not applied yet", o.behind_s)
        yield _gauge("hive_nats_connected", "1 while connected to the NATS server", int(o.nc.is_connected))
        yield _gauge("hive_coordinator_leader", "1 while this coordinator leads", int(c.leading()))
        yield _gauge("hive_coordinator_term", "The term this coordinator decides in (0 as a standby)", c.term)

        live = [n for n in state.nodes.values() if n.state in LIVE]
        capacity = GaugeMetricFamily("hive_cluster_capacity", "Resources offered by live nodes", labels=["resource"])
        allocated = GaugeMetricFamily(
            "hive_cluster_allocated", "Resources allocated to attempts on live nodes", labels=["resource"]
        )
        for name in RESOURCES:
            capacity.add_metric([name], sum(getattr(n.capacity, name) for n in live))
            allocated.add_metric([name], sum(getattr(n.allocated, name) for n in live))
        yield capacity
        yield allocated
        beats = [c.live[n.node_id] for n in live if n.node_id in c.live]
        yield _gauge(
            "hive_cluster_memory_used_gb",
            "Memory in use on live nodes (their last heartbeats)",
            sum(b.memory_used_gb for b in beats),
        )
        yield _gauge(
            "hive_cluster_cpu_percent",
            "Mean CPU use of live nodes (their last heartbeats)",
            sum(b.cpu_percent for b in beats) / len(beats) if beats else 0.0,
        )
        gpus = [g.utilization for b in beats for g in b.gpus]
        yield _gauge(
            "hive_cluster_gpu_percent",
            "Mean utilisation of live nodes' GPUs (their last heartbeats)",
            sum(gpus) / len(gpus) if gpus else 0.0,
        )
        trust = GaugeMetricFamily("hive_cluster_node_trust", "Trust score of each known node (0..100)", labels=["node"])
        running = GaugeMetricFamily(
            "hive_cluster_node_running", "Attempts allocated on each live node", labels=["node"]
        )
        for node in sorted(state.nodes.values(), key=lambda n: n.node_id):
            trust.add_metric([node.node_id], node.trust)
            if node.state in LIVE:
                running.add_metric([node.node_id], node.running)
        yield trust
        yield running


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _server(nc: Client) -> str:
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url is not None else "?"


async def serve(coordinator: Coordinator, nc: Client, port: int) -> HttpServer:
    """Wrap the fold and start ``/health`` and ``/metrics`` on ``port``; the caller stops it."""
    observer = CoordinatorObserver(coordinator, nc)
    coordinator.fold = observer.fold
    server = HttpServer(observer.app(), port)
    await server.start()
    log.info("serving /health and /metrics", url=f"http://{server.host}:{server.port}")
    return server
