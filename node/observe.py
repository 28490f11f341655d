"""A node's ``/health`` and ``/metrics`` (opt-in: ``hive node --http-port``).

Health checks, each run when ``/health`` is asked:

* ``nats``: the connection to the NATS server is up;
* ``registered``: the node has registered and has not been declared lost since;
* ``consuming``: the server still has the node's live consumer of the audit log (asked
  with ``$JS.API.CONSUMER.INFO``), so assignments reach it; the detail says how many
  messages it has not delivered yet;
* ``docker`` (only when the node offers the docker executor): the engine answers a ping.

Metrics are read from the node at scrape time, except what only passes by: finished
attempts and heartbeats, counted in ``sent`` (called for each event the node writes).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.health import Check, HttpServer, add_routes
from events.base import Event
from events.node import NodeHeartbeat
from events.subjects import AUDIT_STREAM
from events.task import TaskCompleted, TaskFailed

if TYPE_CHECKING:
    from node.service import Node

log = structlog.get_logger("hive.node")

RESOURCES = ("cpu", "memory_gb", "gpu", "gpu_memory_gb")
NATS_TIMEOUT_S = 1.0


class NodeObserver:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.finished: Counter[tuple[str, str]] = Counter()  # (outcome, reason) -> attempts
        self.heartbeats = 0
        self.beat: NodeHeartbeat | None = None
        self.registry = CollectorRegistry()
        self.registry.register(_NodeCollector(self))

    def sent(self, event: Event) -> None:
        """Called with each event the node wrote (reports and telemetry)."""
        kind = type(event)
        if kind is NodeHeartbeat:
            self.heartbeats += 1
            self.beat = event  # type: ignore[assignment]
        elif kind is TaskCompleted:
            self.finished["completed", "skipped" if event.skipped else "ok"] += 1  # type: ignore[attr-defined]
        elif kind is TaskFailed:
            self.finished["failed", event.reason] += 1  # type: ignore[attr-defined]

    @property
    def checks(self) -> dict[str, Check]:
        checks: dict[str, Check] = {
            "nats": self.check_nats,
            "registered": self.check_registered,
            "consuming": self.check_consuming,
        }
        if "docker" in self.node.executors:
            checks["docker"] = self.check_docker
        return checks

    async def check_nats(self) -> tuple[bool, str]:
        nc = self.node.nc
        if nc.is_connected:
            url = nc.connected_url
            return True, f"connected to {url.hostname}:{url.port}" if url is not None else "connected"
        state = "reconnecting" if nc.is_reconnecting else "closed" if nc.is_closed else "not connected"
        return False, f"{state} to NATS"

    async def check_registered(self) -> tuple[bool, str]:
        node = self.node
        registered_at = getattr(node, "registered_at", None)
        if registered_at is None:
            return False, "not registered yet"
        if node.local.lost_at > registered_at:
            return False, "declared lost by the coordinator; registering again"
        draining = "; draining" if node.local.draining else ""
        return True, f"registered as {node.node_id}{draining}"

    async def check_consuming(self) -> tuple[bool, str]:
        node = self.node
        consumer = getattr(node, "consumer", None)
        if consumer is None or consumer.consumer is None:
            return False, "the live consumer of the log is not started yet"
        if not node.nc.is_connected:
            return False, "not connected to NATS"
        info = await asyncio.wait_for(node.js.consumer_info(AUDIT_STREAM, consumer.consumer), NATS_TIMEOUT_S)
        return True, f"consumer {info.name}: {info.num_pending or 0} messages pending"

    async def check_docker(self) -> tuple[bool, str]:
        executor: Any = self.node.executors["docker"]
        await asyncio.to_thread(executor.client.ping)
        return True, "the docker engine answers"

    def about(self) -> dict[str, Any]:
        node = self.node
        return {
            "service": "node",
            "id": node.node_id,
            "running": len(node.running),
            "executors": sorted(node.executors),
        }

    def app(self) -> web.Application:
        app = web.Application()
        add_routes(app, self.checks, self.registry, about=self.about)
        return app


class _NodeCollector(Collector):
    def __init__(self, observer: NodeObserver) -> None:
        self.o = observer

    def collect(self) -> Iterator[Metric]:
        o, node = self.o, self.o.node
        yield GaugeMetricFamily("hive_node_tasks_running", "Attempts running on this node", value=len(node.running))
        finished = CounterMetricFamily(
            "hive_node_attempts_finished",
            "Attempts this node finished since it started, by outcome (completed, failed) and reason",
            labels=["outcome", "reason"],
        )
        for (outcome, reason), count in sorted(o.finished.items()):
            finished.add_metric([outcome, reason], count)
        yield finished
        yield CounterMetricFamily("hive_node_heartbeats", "Heartbeats sent since this node started", value=o.heartbeats)
        if o.beat is not None:
            yield GaugeMetricFamily(
                "hive_node_cpu_percent", "CPU use of this machine (last heartbeat)", value=o.beat.cpu_percent
            )
            yield GaugeMetricFamily(
                "hive_node_memory_used_gb",
                "Memory in use on this machine (last heartbeat)",
                value=o.beat.memory_used_gb,
            )
        capacity = GaugeMetricFamily("hive_node_capacity", "Resources this node offers", labels=["resource"])
        allocated = GaugeMetricFamily("hive_node_allocated", "Resources held by running attempts", labels=["resource"])
        offered = getattr(node, "capacity", None)
        for name in RESOURCES:
            if offered is not None:
                capacity.add_metric([name], getattr(offered, name))
            allocated.add_metric([name], getattr(node.allocated, name))
        yield capacity
        yield allocated
        yield GaugeMetricFamily(
            "hive_nats_connected", "1 while connected to the NATS server", value=int(node.nc.is_connected)
        )


async def serve(node: Node, port: int) -> HttpServer:
    """Start counting what the node sends and serve ``/health`` and ``/metrics`` on ``port``."""
    observer = NodeObserver(node)
    node.observer = observer
    server = HttpServer(observer.app(), port)
    await server.start()
    log.info("serving /health and /metrics", url=f"http://{server.host}:{server.port}")
    return server
