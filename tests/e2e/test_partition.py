"""Network partitions on a real network: a process on a host of its own (a Linux network
namespace joined by a veth pair, tests/netns.py) whose link is taken down and back up.

(a) A node cut off mid-task for longer than the liveness timeout: it is declared lost and
its work reassigned; meanwhile it keeps running and keeps its reports (a completion made
while cut off is published when the link returns, and the projection ignores it: that
attempt was superseded); on reconnect it stops the attempt still running, registers again
and gets new work. Every task completes exactly once in the projection; replay agrees.

(b) The leading coordinator cut off (not killed): it loses its lease and stops deciding, a
standby takes over, and when the link returns the old leader stays a standby."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from edge.logread import read_stream
from events.codec import decode
from events.node import NodeLost, NodeRegistered
from events.subjects import AUDIT_STREAM
from events.task import TaskCompleted, TaskSpec
from hive.client import HiveClient
from tests import netns
from tests.cluster import Proc, Server, coordinator, node
from tests.e2e.test_failover import assert_assigned_once, audit, leader_of, takeover_s
from tests.e2e.test_recovery import assert_exactly_once, assert_replay_matches, completions, wait_counts, workload

pytestmark = pytest.mark.slow

WHY_NOT = netns.available()
needs_netns = pytest.mark.skipif(WHY_NOT is not None, reason=f"no network namespaces here: {WHY_NOT}")
HEARTBEAT = "0.5"  # liveness timeout: 3 missed heartbeats, 1.5 s


@pytest.fixture
def open_server(tmp_path) -> Server:  # type: ignore[no-untyped-def]
    """A server every interface reaches: the namespaces come in over their veth."""
    server = Server(tmp_path, host="0.0.0.0").start()
    yield server  # type: ignore[misc]
    server.stop()


def far_node(server: Server, ns: netns.Netns, node_id: str, *extra: str) -> Proc:
    args = ["node", "--id", node_id, "--handlers", "tests.handlers", "--server", f"nats://{ns.host_ip}:{server.port}"]
    return Proc(node_id, [*args, *extra], server, "node started", prefix=ns.prefix)


async def until(what: str, check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout}s")
        await asyncio.sleep(0.1)


def hold(seconds: float) -> TaskSpec:
    return TaskSpec(executor="function", type="test_hold", payload={"seconds": seconds}, max_attempts=3)


@needs_netns
async def test_node_cut_off_then_back(open_server: Server) -> None:
    server = open_server
    with netns.Netns() as ns:
        coord = coordinator(server).start()
        far = far_node(server, ns, "far", "--max-tasks", "2", "--heartbeat", HEARTBEAT, "--no-docker").start()
        near = node(server, "near", "--max-tasks", "2", "--heartbeat", HEARTBEAT, "--no-docker")
        try:
            async with await HiveClient.connect(server.url, server.directory) as client:
                run = time.time_ns()
                short, long = f"short-{run}", f"long-{run}"
                # short ends while the link is down; long still runs when it comes back
                await client.submit(hold(4.0), short)
                await client.submit(hold(20.0), long)

                async def both_running_on_far() -> bool:
                    views = [await client.task(t) for t in (short, long)]
                    return all(v["state"] == "running" and v["node_id"] == "far" for v in views)

                await until("both running on the far node", both_running_on_far)
                near.start()
                cut_at = time.time()
                ns.cut()
                try:

                    async def far_lost() -> bool:
                        return {n["node_id"]: n["state"] for n in await client.nodes()}.get("far") == "lost"

                    await until("the far node declared lost", far_lost, timeout=20)
                    lost_after = time.time() - cut_at
                    await wait_counts(client, 1, timeout=30)  # short, again, on near
                    await asyncio.sleep(max(0.0, cut_at + 8.0 - time.time()))  # short has ended on far too
                finally:
                    ns.restore()
                restored_at = time.time()

                async def far_back() -> bool:
                    return {n["node_id"]: n["state"] for n in await client.nodes()}.get("far") == "active"

                await until("the far node registered again", far_back, timeout=60)
                back_after = time.time() - restored_at
                await wait_counts(client, 2, timeout=60)
                far.wait_for_log("stopping task", timeout=20)  # long's first attempt, on reconnect
                for task_id in (short, long):
                    view = await client.task(task_id)
                    assert view["state"] == "completed", view
                    assert (view["node_id"] or view["last_node"]) == "near" and view["attempt"] == 2, view
                    assert view["result"] == {"node": "near"}, view

                # new work reaches the far node once near is gone
                await client.drain("near")
                near.wait_for_log("drained; leaving", timeout=30)
                fresh = [(f"after-{run}-{i}", hold(0.1)) for i in range(3)]
                await client.submit_many(fresh)
                await wait_counts(client, 5, timeout=60)
                for task_id, _ in fresh:
                    assert (await client.task(task_id))["result"] == {"node": "far"}

                events: list[tuple[int, object]] = []
                await read_stream(client.js, AUDIT_STREAM, lambda seq, msg: events.append((seq, decode(msg.data))))  # type: ignore[attr-defined]
                lost = [seq for seq, e in events if isinstance(e, NodeLost) and e.node_id == "far"]
                again = [seq for seq, e in events if isinstance(e, NodeRegistered) and e.node_id == "far"]
                assert lost and any(seq > lost[0] for seq in again), (lost, again)
                # the completion far made while cut off is in the log, after it was lost, and ignored
                kept = [
                    seq for seq, e in events
                    if isinstance(e, TaskCompleted) and e.task_id == short and e.node_id == "far"
                ]
                assert kept and kept[0] > lost[0], (kept, lost)
                assert not [e for _, e in events if isinstance(e, TaskCompleted) and e.task_id == long and e.node_id == "far"]
                counts = await completions(client)
                assert counts[short] == 2 and counts[long] == 1  # the log has both; the projection one
            print(
                f"\nnode cut off: declared lost after {lost_after:.1f}s; "
                f"registered again {back_after:.1f}s after the link came back"
            )
            assert_replay_matches(server)
        finally:
            for proc in (far, near, coord):
                proc.stop()


@needs_netns
async def test_leading_coordinator_cut_off(open_server: Server) -> None:
    server = open_server
    with netns.Netns() as ns:
        url = f"nats://{ns.host_ip}:{server.port}"
        first = Proc(
            "coordinator",
            ["coordinator", "--id", "coordinator", "--server", url],  # the default lease
            server,
            "coordinator ready",
            prefix=ns.prefix,
        ).start()
        second = Proc(
            "coordinator-2", ["coordinator", "--id", "coordinator-2"], server, "coordinator ready"
        ).start()
        nodes = [node(server, n, "--max-tasks", "8", "--no-docker").start() for n in ("n1", "n2")]
        try:
            async with await HiveClient.connect(server.url, server.directory) as client:
                assert (await leader_of(client))["id"] == "coordinator"
                items = workload(200, 0.05)
                await client.submit_many(items[:100])
                await wait_counts(client, 30)
                # cut while the leader places a fresh burst: some of its assignments are still
                # on their way (in its socket) and reach the log only when the link is back
                await client.submit_many(items[100:])
                await asyncio.sleep(0.02)
                cut_at = time.time()
                ns.cut()
                try:
                    second.wait_for_log("elected leader", timeout=20)
                    await wait_counts(client, 120)  # the new leader assigns while the old one is away
                    first.wait_for_log("stepped down", timeout=10)
                finally:
                    ns.restore()
                await wait_counts(client, len(items))
                await asyncio.sleep(3.0)  # the old leader is back on the network by now
                counts = await completions(client)
                assert_exactly_once(counts, items)
                stats = await leader_of(client)
                assert stats["id"] == "coordinator-2", stats
                events = await audit(client)
                took = takeover_s(events, cut_at, stats["term"])
                late = stats["ignored"]  # decisions the old leader made cut off, logged when its link came back
                assert_assigned_once(events)
                answers = Counter([(await client.request("stats"))["id"] for _ in range(3)])
                assert set(answers) == {"coordinator-2"}, answers
            tail = first.text().split("stepped down", 1)[1]
            assert "elected leader" not in tail, tail[-2000:]
            assert first.alive(), "the cut-off coordinator stays up, as a standby"
            print(
                f"\nleading coordinator cut off -> first decision of the new leader: {took:.2f}s (default lease); "
                f"{late} late decisions of the old term ignored"
            )
            assert_replay_matches(server)
        finally:
            for proc in (*nodes, first, second):
                proc.stop()
