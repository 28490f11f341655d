"""The web service's own Prometheus metrics (its own registry: see edge/health.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hive_web_requests_total", "HTTP requests answered, by status code", ["status"], registry=self.registry
        )
        self.actions = Counter(
            "hive_web_actions_total", "actions taken for a person, by action and outcome", ["action", "outcome"],
            registry=self.registry,
        )
        self.sse_clients = Gauge("hive_web_sse_clients", "open server-sent event streams", registry=self.registry)
        self.events = Gauge(
            "hive_web_events_followed", "events read from the log since start, by stream", ["stream"],
            registry=self.registry,
        )
        self.connected = Gauge("hive_web_nats_connected", "1 while connected to NATS", registry=self.registry)
