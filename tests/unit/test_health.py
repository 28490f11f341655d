"""edge/health.py over real HTTP (an aiohttp site on a free port, an aiohttp client), and
the coordinator's and a node's metrics read from state, without NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from coordinator.core import CoordinatorCore
from coordinator.intake import RejectLog
from coordinator.observe import CoordinatorObserver
from coordinator.state import ClusterState
from edge import health
from edge.health import HttpServer, add_routes
from events.base import Resources
from events.node import NodeHeartbeat
from events.task import TaskCompleted, TaskFailed
from node.observe import NodeObserver
from tests.unit.factories import assign, register, submit

Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an app with the given checks (and registry); return its base URL."""
    servers: list[HttpServer] = []

    async def start(checks: dict[str, Any], registry: CollectorRegistry | None = None, **kw: Any) -> str:
        app = web.Application()
        add_routes(app, checks, registry or CollectorRegistry(), **kw)
        server = HttpServer(app, 0)
        servers.append(server)
        port = await server.start()
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        await server.stop()


async def get(url: str) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        text = await resp.text()
        body = await resp.json(content_type=None) if resp.content_type == "application/json" else None
        return resp.status, body, text


async def passing() -> tuple[bool, str]:
    return True, "fine"


async def failing() -> tuple[bool, str]:
    return False, "the thing is down"


async def raising() -> tuple[bool, str]:
    raise ConnectionError("no route to the thing")


async def hanging() -> tuple[bool, str]:
    await asyncio.sleep(3600)
    return True, "never"


async def test_all_checks_pass_200_with_each_check_in_the_body(serve: Serve) -> None:
    url = await serve({"a": passing, "b": passing}, about=lambda: {"service": "test", "role": "leader"})
    status, body, _ = await get(f"{url}/health")
    assert status == 200
    assert body["ok"] is True and body["role"] == "leader" and body["service"] == "test"
    assert body["checks"] == {"a": {"ok": True, "detail": "fine"}, "b": {"ok": True, "detail": "fine"}}


@pytest.mark.parametrize(
    ("check", "detail"),
    [(failing, "the thing is down"), (raising, "ConnectionError: no route to the thing")],
)
async def test_a_failing_or_raising_check_gives_503(serve: Serve, check: Any, detail: str) -> None:
    url = await serve({"good": passing, "bad": check})
    status, body, _ = await get(f"{url}/health")
    assert status == 503
    assert body["ok"] is False
    assert body["checks"]["good"]["ok"] is True
    assert body["checks"]["bad"] == {"ok": False, "detail": detail}


async def test_a_hanging_check_gives_503_within_the_timeout(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "CHECK_TIMEOUT_S", 0.3)
    url = await serve({"good": passing, "stuck": hanging})
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, body, _ = await get(f"{url}/health")
    assert loop.time() - started < 2.0
    assert status == 503
    assert body["checks"]["stuck"] == {"ok": False, "detail": "no answer within 0.3 s"}
    assert body["checks"]["good"]["ok"] is True


async def test_no_checks_is_not_healthy(serve: Serve) -> None:
    status, body, _ = await get(f"{await serve({})}/health")
    assert status == 503 and body["ok"] is False


async def test_health_changes_with_the_state_it_checks(serve: Serve) -> None:
    up = {"value": True}

    async def flapping() -> tuple[bool, str]:
        return up["value"], "up" if up["value"] else "down"

    url = await serve({"thing": flapping})
    assert (await get(f"{url}/health"))[0] == 200
    up["value"] = False
    assert (await get(f"{url}/health"))[0] == 503
    up["value"] = True
    assert (await get(f"{url}/health"))[0] == 200


async def test_metrics_are_the_services_own_registry_and_parse(serve: Serve) -> None:
    registry = CollectorRegistry()
    hits = Counter("thing_hits", "hits", registry=registry)
    hits.inc(3)
    refreshed: list[int] = []

    async def before() -> None:
        refreshed.append(1)

    url = await serve({"a": passing}, registry, before_scrape=before)
    status, _, text = await get(f"{url}/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["thing_hits"].samples[0].value == 3
    assert "python_gc_objects_collected" not in families  # not the global registry
    assert refreshed == [1]


async def test_a_failing_refresh_still_renders_metrics(serve: Serve) -> None:
    registry = CollectorRegistry()
    Counter("thing_hits", "hits", registry=registry).inc()

    def broken() -> None:
        raise RuntimeError("stream info failed")

    status, _, text = await get(f"{await serve({'a': passing}, registry, before_scrape=broken)}/metrics")
    assert status == 200
    assert "thing_hits_total 1.0" in text


async def test_a_taken_port_raises_and_leaves_nothing_running() -> None:
    first = HttpServer(web.Application(), 0)
    port = await first.start()
    try:
        with pytest.raises(OSError):
            await HttpServer(web.Application(), port).start()
    finally:
        await first.stop()


# -- the services' metrics, read from state ------------------------------------------------


def fake_nc(connected: bool = True) -> Any:
    return SimpleNamespace(
        is_connected=connected,
        is_reconnecting=not connected,
        is_closed=False,
        connected_url=None,
        jetstream=lambda timeout=None: None,
    )


def scrape(registry: CollectorRegistry) -> dict[str, Any]:
    from prometheus_client import generate_latest

    return {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}


def coordinator_with(events: list[Any], live_from: int = 0) -> tuple[Any, CoordinatorObserver]:
    core = CoordinatorCore(ClusterState())
    coordinator = SimpleNamespace(
        core=core,
        caught_up_to=live_from,
        rejects=RejectLog(),
        keeper=None,
        term=0,
        coordinator_id="c1",
        decide_errors=0,
        live={},
        leading=lambda: True,
    )
    observer = CoordinatorObserver(coordinator, fake_nc())  # type: ignore[arg-type]
    for seq, event in enumerate(events, start=1):
        observer.fold(event, seq)
    return coordinator, observer


def test_placement_is_timed_once_per_assignment_that_takes_effect() -> None:
    node, task, assigned = register("n1"), submit("t1"), assign("t1", "n1")
    _, observer = coordinator_with([node, task, assigned, assigned])  # the second: ignored
    families = scrape(observer.registry)
    placement = {s.name: s.value for s in families["hive_placement_latency_seconds"].samples}
    assert placement["hive_placement_latency_seconds_count"] == 1
    assert placement["hive_placement_latency_seconds_sum"] == pytest.approx(assigned.ts - task.ts)
    tasks = {s.labels["state"]: s.value for s in families["hive_tasks"].samples}
    assert tasks["assigned"] == 1 and tasks["queued"] == 0 and tasks["completed"] == 0
    assert families["hive_events_applied"].samples[0].value == 4
    assert families["hive_events_ignored"].samples[0].value == 1
    allocated = {s.labels["resource"]: s.value for s in families["hive_cluster_allocated"].samples}
    capacity = {s.labels["resource"]: s.value for s in families["hive_cluster_capacity"].samples}
    assert capacity["cpu"] == 4 and allocated["cpu"] == task.spec.resources.cpu
    trust = families["hive_cluster_node_trust"].samples
    assert [(s.labels["node"], s.value) for s in trust] == [("n1", 50.0)]


def test_history_replayed_at_start_is_not_timed_again() -> None:
    _, observer = coordinator_with([register("n1"), submit("t1"), assign("t1", "n1")], live_from=3)
    placement = {s.name: s.value for s in scrape(observer.registry)["hive_placement_latency_seconds"].samples}
    assert placement["hive_placement_latency_seconds_count"] == 0


async def test_the_only_coordinator_leads_and_a_dropped_connection_fails_nats() -> None:
    _, observer = coordinator_with([])
    assert (await observer.check_leader())[0] is True
    assert (await observer.check_nats())[0] is True
    observer.nc = fake_nc(connected=False)
    ok, detail = await observer.check_nats()
    assert not ok and "reconnecting" in detail
    with pytest.raises(ConnectionError):
        await observer.check_caught_up()


def test_node_counts_what_it_sent() -> None:
    node = SimpleNamespace(
        nc=fake_nc(),
        node_id="n1",
        running={("t1", 1): None},
        executors={"function": None},
        allocated=Resources(cpu=1.0),
        capacity=Resources(cpu=4.0, memory_gb=8.0),
    )
    observer = NodeObserver(node)  # type: ignore[arg-type]
    observer.sent(NodeHeartbeat(node_id="n1", cpu_percent=12.5, memory_used_gb=3.0, emitter="node:n1"))
    observer.sent(TaskCompleted(task_id="t1", node_id="n1", attempt=1, emitter="node:n1"))
    observer.sent(TaskFailed(task_id="t2", node_id="n1", attempt=1, error="x", reason="timeout", emitter="node:n1"))
    observer.sent(TaskFailed(task_id="t3", node_id="n1", attempt=1, error="x", reason="timeout", emitter="node:n1"))
    families = scrape(observer.registry)
    finished = {
        (s.labels["outcome"], s.labels["reason"]): s.value for s in families["hive_node_attempts_finished"].samples
    }
    assert finished == {("completed", "ok"): 1, ("failed", "timeout"): 2}
    assert families["hive_node_heartbeats"].samples[0].value == 1
    assert families["hive_node_cpu_percent"].samples[0].value == 12.5
    assert families["hive_node_tasks_running"].samples[0].value == 1
    assert families["hive_nats_connected"].samples[0].value == 1
    assert "docker" not in observer.checks


class FakeKv:
    def __init__(self, value: bytes | None) -> None:
        self.value = value

    async def get(self, key: str) -> Any:
        from nats.js.errors import KeyNotFoundError

        if self.value is None:
            raise KeyNotFoundError
        return SimpleNamespace(value=self.value, revision=7)


@pytest.mark.parametrize(
    ("holder", "ok", "says"),
    [
        ({"id": "c1", "host": "a", "pid": 1}, True, "c1 on a holds the lease"),
        (None, False, "no coordinator holds the lease"),
        ({"id": "c2", "host": "b", "pid": 2}, False, "names this coordinator"),
    ],
)
async def test_a_standby_is_healthy_only_while_another_coordinator_holds_the_lease(
    holder: dict[str, Any] | None, ok: bool, says: str
) -> None:
    import msgspec

    from coordinator.lease import Holder

    coordinator, observer = coordinator_with([])
    coordinator.leading = lambda: False
    value = None if holder is None else msgspec.json.encode(holder)
    coordinator.keeper = SimpleNamespace(kv=FakeKv(value), holder=Holder(id="c2", host="b", pid=2))
    verdict, detail = await observer.check_leader()
    assert verdict is ok and says in detail, detail
    assert observer.about()["role"] == "standby"


class FakeJs:
    def __init__(self, last_seq: int, oldest_age_s: float | None) -> None:
        self.last_seq = last_seq
        self.oldest_age_s = oldest_age_s

    async def stream_info(self, stream: str) -> Any:
        return SimpleNamespace(state=SimpleNamespace(last_seq=self.last_seq))

    async def get_msg(self, stream: str, seq: int) -> Any:
        import datetime

        if self.oldest_age_s is None:
            raise RuntimeError("no message")
        when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=self.oldest_age_s)
        return SimpleNamespace(time=when)


@pytest.mark.parametrize(
    ("last_seq", "age", "ok"),
    [
        (0, 0.0, True),  # at the end of the log
        (500, 1.0, True),  # a burst being folded
        (500, 60.0, False),  # a stalled reader: the oldest unapplied message is old
        (10_000, 0.5, False),  # too far behind by count
        (500, None, True),  # age unknown: judged by the count
    ],
)
async def test_caught_up_allows_a_burst_not_a_stall(last_seq: int, age: float | None, ok: bool) -> None:
    _, observer = coordinator_with([])
    observer.max_lag_events, observer.max_lag_s = 5_000, 10.0
    observer.js = FakeJs(last_seq, age)  # type: ignore[assignment]
    verdict, detail = await observer.check_caught_up()
    assert verdict is ok, detail
    families = scrape(observer.registry)
    assert families["hive_consumer_lag_messages"].samples[0].value == last_seq
