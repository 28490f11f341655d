"""Thousands of generated payloads (tests.strategies) published with real credentials
against a live cluster, plus a handful of valid events that lie. Nothing dies, nothing
that existed before changes, the log stays readable, new work still runs, and a replay
still equals the live projection, also after a kill -9 of the coordinator."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import string
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import nats
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from events.base import Event, Resources
from events.codec import BadEvent, decode, encode
from events.negotiation import GuidanceGiven, HelpRequested
from events.node import NodeDrained, NodeDrainRequested, NodeRegistered
from events.subjects import AUDIT_STREAM, COORDINATOR_VERBS, NODE_VERBS, TASK_VERBS, api_subject, subject_for
from events.task import TaskCompleted, TaskFailed, TaskSpec, TaskStarted, TaskSubmitted
from events.validation import WRITERS
from hive.client import HiveClient
from tests.cluster import Proc, Server, coordinator, hive, node
from tests.e2e.test_recovery import assert_replay_matches, wait_counts
from tests.strategies import wire

pytestmark = pytest.mark.slow

EXAMPLES = 6000  # Hypothesis repeats some, valid decisions are dropped: over 3,000 remain
BIG = 256 * 1024
MAX_BIG = 25  # payloads over BIG that are kept (each crosses the wire several times)
HOLD_S = 4.0
NODE_ARGS = ("--no-docker", "--max-tasks", "4", "--heartbeat", "0.5")
# fresh ids for the valid events: any legal id, drawn faster than from_regex (the default)
FRESH = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=24)
VERB_TYPES = {verb: cls for table in (TASK_VERBS, NODE_VERBS, COORDINATOR_VERBS) for cls, verb in table.items()}
NOOP = TaskSpec(executor="function", type="noop")
HOLD = TaskSpec(executor="function", type="test_hold", payload={"seconds": HOLD_S})
# runs through the whole test: a registration below what runs on a node is a lie only while
# something runs there, and the HOLD_S holds may be over (on a slow machine) before it lands
PIN = TaskSpec(executor="function", type="test_hold", payload={"seconds": 3600.0}, resources=Resources(cpu=0.5))
PINNED = "fz-pin"
# cpu=1000 fits no real node; min_trust=high keeps it off the phantom nodes the fuzz registers
# (anyone with the node credential can register a 100k-core node; a new node starts at medium trust)
NEVER = TaskSpec(executor="function", type="noop", resources=Resources(cpu=1000), min_trust="high")
# what a running attempt that just finishes keeps; "reason" of a queued task may say why, as nodes come and go
STABLE = ("attempt", "node_id", "what", "priority", "max_attempts", "submitted_at")


class NoPrograms(Server):
    """Processes started with an empty PATH: a generated process task (a client may submit
    any command) names no real program, so the fuzz never runs `rm` or `yes` here."""

    def env(self) -> dict[str, str]:
        empty = self.directory / "no-programs"
        empty.mkdir(exist_ok=True)
        return super().env() | {"PATH": str(empty)}


def generate(targets: list[str], protected: list[str]) -> tuple[list[tuple[str, bytes]], Counter[str]]:
    """The payloads to publish: distinct, few huge ones, none that is valid and about a real
    task or node (a valid event there would legitimately change it: see ``lies``)."""
    drawn: list[tuple[str, bytes]] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(wire(FRESH, st.sampled_from(targets)))
    def collect(pair: tuple[str, bytes]) -> None:
        drawn.append(pair)

    collect()
    counts: Counter[str] = Counter(drawn=len(drawn))
    names = [f'"{name}"'.encode() for name in protected]
    kept = []
    for subject, data in dict.fromkeys(drawn):
        if len(data) > BIG:
            counts["big"] += 1
            if counts["big"] > MAX_BIG:
                continue
        try:
            event = decode(data, subject)
            counts["valid_locally"] += 1
            # by the decoded ids: a JSON escape ("fz-\u006e...") names a real task too
            about = {getattr(event, f, None) for f in ("task_id", "node_id", "from_node", "avoid_node", "request_id")}
            if event.emitter == "coordinator":
                # published with the coordinator's credential, a valid decision is a real one
                # (a trust reset, an assignment): it may change anything; invalid ones stay
                counts["dropped_valid_decision"] += 1
                continue
            if about & set(protected) or any(name in data for name in names):
                counts["dropped_valid_about_real"] += 1
                continue
        except BadEvent as exc:
            counts[f"local_reject_{exc.rule}"] += 1
        kept.append((subject, data))
    counts["kept"] = len(kept)
    return kept, counts


def passes(subject: str, data: bytes) -> bool:
    try:
        decode(data, subject)
        return True
    except BadEvent:
        return False


def writer_user(subject: str) -> str | None:
    """The NATS user whose kind WRITERS lets state the event that belongs on ``subject``."""
    parts = subject.split(".")
    verb = parts[2] if parts[1] == "coordinator" else parts[3]
    kinds = WRITERS.get(VERB_TYPES.get(verb, Event), frozenset())
    return "client" if "client" in kinds else "node" if "node" in kinds else None


def lies(before: dict[str, dict[str, Any]], holds: list[str], never: list[str], done: list[str]) -> list[Event]:
    """Valid in every way, hostile in meaning: each must be rejected or ignored."""
    other = {"n1": "n2", "n2": "n1"}
    cap = Resources(cpu=64, memory_gb=256)
    busy = before[PINNED]["node_id"]  # the pin holds 0.5 cores there
    out: list[Event] = [
        NodeRegistered(node_id="n1", emitter="node:n2", capacity=cap, max_tasks=64, executors=["function"]),
        # shrinking a node below what runs on it
        NodeRegistered(
            node_id=busy,
            emitter=f"node:{busy}",
            capacity=Resources(cpu=0.01, memory_gb=0.01),
            max_tasks=1,
            executors=["function"],
        ),
        # a huge node that never sends a heartbeat: it takes the fuzz's work until it is lost
        NodeRegistered(
            node_id="fz-ghost",
            emitter="node:fz-ghost",
            capacity=Resources(cpu=100_000, memory_gb=1e6),
            max_tasks=10_000,
            executors=["process", "function", "docker"],
            heartbeat_s=0.5,
        ),
        NodeDrained(node_id="n2", emitter="node:n2"),  # nobody asked it to drain
        NodeDrainRequested(node_id="no-such-node", emitter="client:fuzz"),
        TaskCompleted(task_id=never[0], node_id="n1", attempt=1, emitter="node:n1", result="forged"),
        TaskStarted(task_id=never[1], node_id="n2", attempt=1, emitter="node:n2"),
        TaskStarted(task_id="no-such-task", node_id="n1", attempt=1, emitter="node:n1"),
        TaskFailed(task_id="no-such-task", node_id="n2", attempt=3, error="x", emitter="node:n2"),
        HelpRequested(task_id="no-such-task", node_id="n1", attempt=1, request_id="r1", problem="?", emitter="node:n1"),
        # a late, forged duplicate of a finished attempt
        TaskCompleted(
            task_id=done[0],
            node_id=before[done[0]]["node_id"],
            attempt=1,
            result="forged",
            emitter=f"node:{before[done[0]]['node_id']}",
        ),
        # submissions reusing ids: the first spec stays
        TaskSubmitted(task_id=never[0], spec=NOOP, emitter="client:fuzz"),
        TaskSubmitted(task_id=done[1], spec=HOLD, emitter="client:fuzz"),
    ]
    for task_id in holds:
        ran_on = before[task_id]["node_id"]
        out += [
            TaskCompleted(task_id=task_id, node_id=ran_on, attempt=2, emitter=f"node:{ran_on}", result="early"),
            TaskFailed(
                task_id=task_id, node_id=other[ran_on], attempt=1, error="not mine", emitter=f"node:{other[ran_on]}"
            ),
            HelpRequested(
                task_id=task_id,
                node_id=other[ran_on],
                attempt=1,
                request_id=f"h-{task_id}",
                problem="not mine",
                emitter=f"node:{other[ran_on]}",
            ),
            # guidance nobody asked for, straight to the node running the attempt
            GuidanceGiven(
                task_id=task_id, node_id=ran_on, request_id="never-asked", action="fail", emitter="client:fuzz"
            ),
        ]
    return out


def publishers(server: Server) -> dict[str, dict[str, Any]]:
    """Who publishes: node-side payloads with the coordinator's credential (the server lets
    it say anything, so every payload reaches the coordinator's own checks, as from a
    compromised credential), a person's as the user ``fuzz`` (the emitter the strategies use)."""
    return {"node": server.options("coordinator", "coordinator"), "client": server.options("client", "fuzz")}


async def publish_all(
    url: str, who: dict[str, dict[str, Any]], items: list[tuple[str, bytes]], counts: Counter[str]
) -> None:
    """Publish each payload as the user that may write it (every 7th as the other one), via
    JetStream; half the heartbeats with a core publish. Refusals are counted, not raised."""
    conns = {}
    for user in ("node", "client"):

        async def on_error(exc: Exception, user: str = user) -> None:
            counts[f"{user}_server_error" + ("_permission" if "ermission" in str(exc) else "")] += 1

        nc = await nats.connect(url, **who[user], error_cb=on_error, max_reconnect_attempts=-1)
        conns[user] = (nc, nc.jetstream(timeout=10, publish_async_max_pending=len(items) + 10))
    futures: dict[asyncio.Future[Any], str] = {}
    valid: set[asyncio.Future[Any]] = set()
    for i, (subject, data) in enumerate(items):
        user = writer_user(subject) or ("node", "client")[i % 2]
        if i % 7 == 3:
            user = "client" if user == "node" else "node"
        nc, js = conns[user]
        counts[f"{user}_published"] += 1
        if subject.endswith(".heartbeat") and i % 2:
            await nc.publish(subject, data)
            counts[f"{user}_core_published"] += 1
        else:
            future = await js.publish_async(subject, data)
            futures[future] = user
            if passes(subject, data):
                valid.add(future)
    done, pending = await asyncio.wait(list(futures), timeout=10)
    for future in done:
        exc = future.exception()
        counts[f"{futures[future]}_acked" if exc is None else f"{futures[future]}_error_{type(exc).__name__}"] += 1
        if exc is None and future in valid:
            counts["acked_valid_at_the_edge"] += 1
    for future in pending:
        counts[f"{futures[future]}_no_ack"] += 1  # refused by the server: no stream ever saw it
        future.cancel()
    for nc, _ in conns.values():
        await nc.flush()
        await nc.close()


async def poke_api(client: HiveClient, items: list[tuple[str, bytes]], counts: Counter[str]) -> None:
    """Garbage to the coordinator's read API: every request must get an answer (an error is fine)."""
    deep = b'{"task_id":' + b"[" * 200_000 + b"]" * 200_000 + b"}"  # past msgspec's recursion limit
    bodies = [data for _, data in items[:60] if len(data) < BIG] + [deep, b"[1]", b"\xff", b'{"state": 5, "limit": -1}']

    async def one(verb: str, body: bytes) -> None:
        try:
            reply = json.loads((await client.nc.request(api_subject(verb, client.user), body, timeout=3)).data)
            counts["api_ok" if reply.get("ok") else "api_error_reply"] += 1
        except Exception as exc:
            counts[f"api_{type(exc).__name__}"] += 1

    verbs = ("tasks", "task", "nodes", "stats", "requests", "trust", "validate")
    await asyncio.gather(*(one(verbs[i % len(verbs)], body) for i, body in enumerate(bodies)))
    unanswered = {k: n for k, n in counts.items() if k.startswith("api_") and k not in ("api_ok", "api_error_reply")}
    assert not unanswered, unanswered


async def caught_up(client: HiveClient, seq: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = await client.request("stats")
        if stats["seq"] >= seq or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.2)


def node_rows(nodes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the real nodes registered (trust, load and heartbeats move on their own)."""
    keys = ("state", "hostname", "executors", "max_tasks", "capacity", "gpus")
    return {n["node_id"]: {k: n[k] for k in keys} for n in nodes if n["node_id"] in ("n1", "n2")}


def snapshot(tasks: list[dict[str, Any]], ids: list[str]) -> dict[str, dict[str, Any]]:
    by_id = {t["task_id"]: t for t in tasks}
    return {task_id: {k: v for k, v in by_id[task_id].items() if k != "reason"} for task_id in ids}


def summary(counts: Counter[str]) -> dict[str, Any]:
    refused = {u: counts[f"{u}_server_error_permission"] for u in ("node", "client")}  # JetStream and core
    return {
        "SUMMARY published": {u: counts[f"{u}_published"] for u in ("node", "client")},
        "SUMMARY refused by the server (permission errors)": refused,
        "SUMMARY stored (acked by JetStream)": {u: counts[f"{u}_acked"] for u in ("node", "client")},
        "SUMMARY rejected by the coordinator, by rule": {
            k.removeprefix("coordinator_rejected_"): v
            for k, v in counts.items()
            if k.startswith("coordinator_rejected_")
        },
        "SUMMARY applied (audit events, the cluster's own included)": counts["audit_applied"],
    }


def cli_ok(server: Server, *args: str) -> str:
    done = hive(server, *args, timeout=120)
    assert done.returncode == 0, f"hive {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stdout


async def test_fuzzed_wire_changes_nothing_it_should_not(tmp_path: Any) -> None:
    server = NoPrograms(tmp_path).start()
    noops, holds, never = (
        [f"fz-noop-{i}" for i in range(5)],
        [f"fz-hold-{i}" for i in range(3)],
        ["fz-never-0", "fz-never-1"],
    )
    real = [*noops, *holds, *never]
    targets = [*real, "n1", "n2"]
    started = time.monotonic()
    # in its own process, starting now: a thread would hold this loop's GIL for the ~40 s it draws,
    # and a client's handshake starved past the server's auth timeout (CI: "Broken pipe")
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    generating = asyncio.get_running_loop().run_in_executor(pool, generate, targets, targets)
    procs: list[Proc] = [coordinator(server), node(server, "n1", *NODE_ARGS), node(server, "n2", *NODE_ARGS)]
    coord = procs[0]
    counts: Counter[str] = Counter()
    try:
        for proc in procs:
            proc.start()
        async with await HiveClient.connect(server.url, server.directory) as client:
            await client.submit_many(
                [(t, NOOP) for t in noops] + [(t, HOLD) for t in holds] + [(t, NEVER) for t in never] + [(PINNED, PIN)]
            )
            await wait_counts(client, len(noops), timeout=30)
            await wait_counts(client, len(holds) + 1, state="running", timeout=30)
            before = snapshot(await client.tasks(), [*real, PINNED])
            nodes_before = node_rows(await client.nodes())
            assert [before[t]["state"] for t in real] == ["completed"] * 5 + ["running"] * 3 + ["queued"] * 2, before
            assert before[PINNED]["state"] == "running", before

            conn = await nats.connect(server.url, **server.options("coordinator", "coordinator"))
            node_js = conn.jetstream()
            for event in lies(before, holds, never, noops):
                await node_js.publish(subject_for(event), encode(event))  # as the coordinator: the server refuses none
                counts["lies_published"] += 1
            await conn.close()

            items, generated = await generating
            counts.update(generated)
            assert len(items) >= 3000, generated
            counts["generate_s"] = round(time.monotonic() - started)  # overlapped with the cluster's start
            await publish_all(server.url, publishers(server), items, counts)
            await poke_api(client, items, counts)
            last = (await client.js.stream_info(AUDIT_STREAM)).state.last_seq
            stats = await caught_up(client, last)
            assert stats["seq"] >= last, stats

            await wait_counts(client, len(noops) + len(holds), timeout=30)
            after = snapshot(await client.tasks(), real)
            for task_id in holds:
                kept = {k: after[task_id][k] for k in STABLE} == {k: before[task_id][k] for k in STABLE}
                assert kept and after[task_id]["state"] == "completed", (before[task_id], after[task_id])
            assert {t: after[t] for t in noops + never} == {t: before[t] for t in noops + never}
            assert node_rows(await client.nodes()) == nodes_before
            assert all(p.alive() for p in procs), [(p.name, p.alive(), p.text()[-2000:]) for p in procs]

            # phantom nodes the fuzz registered (fz-ghost is lost by now) would take new work and never
            # run it until lost: an operator drains them
            for row in await client.nodes():
                if row["node_id"] not in ("n1", "n2") and row["state"] == "active":
                    await client.drain(row["node_id"])
                    counts["phantom_nodes_drained"] += 1
            fresh = [
                (f"fz-after-{i}", TaskSpec(executor="function", type="noop", priority=1_000_000)) for i in range(3)
            ]
            await client.submit_many(fresh)
            for task_id, _ in fresh:
                assert (await client.wait(task_id, timeout=30))["state"] == "completed"

            stats = await client.request("stats")
            assert stats["rejected"] > 0, stats
            counts.update({f"coordinator_rejected_{rule}": n for rule, n in stats["rejected_by_rule"].items()})
            counts["coordinator_rejected"] = stats["rejected"]
            counts["coordinator_ignored"] = stats["ignored"]
            counts["audit_seq"] = stats["seq"]
            counts["audit_applied"] = stats["seq"] - stats["rejected"]  # every logged event applied or rejected
            counts.update({f"trust_{n['node_id']}": n["trust"] for n in await client.nodes()})

            nodes = json.loads(cli_ok(server, "nodes", "--json"))
            assert {"n1", "n2"} <= {n["node_id"] for n in nodes}
            json.loads(cli_ok(server, "tasks", "--json"))
            lines = cli_ok(server, "events", "--json").splitlines()
            counts["events_cli_lines"] = len(lines)
            counts["events_cli_invalid"] = sum("invalid" in json.loads(line) for line in lines)

            coord.kill9()
            coord.start()
            client.last_seq = (await client.js.stream_info(AUDIT_STREAM)).state.last_seq
            assert snapshot(await client.tasks(), real) == after
            assert all(p.alive() for p in procs), [(p.name, p.alive(), p.text()[-2000:]) for p in procs]
        assert_replay_matches(server)
    finally:
        counts["wall_s"] = round(time.monotonic() - started)
        report = summary(counts) | dict(sorted(counts.items()))
        (tmp_path / "fuzz-counts.json").write_text(json.dumps(report, indent=1))
        print("\nfuzz counts:", json.dumps(report, indent=1))
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in reversed(procs):
            proc.stop()
        server.stop()
