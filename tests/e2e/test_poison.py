"""Every poison message and hostile-but-valid event the hardening issue found, published with
a real credential into a running cluster: each is refused and recorded, nothing it touches
changes, every service stays up, and stays up across a restart with the poison still in the
log; new work still runs and a replay equals the live projection."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import nats
import pytest

from coordinator.api import MAX_WAITING
from edge.errors import HiveError
from events.base import Resources
from events.subjects import AUDIT_STREAM, api_subject
from events.task import TaskSpec
from hive.client import HiveClient
from tests.cluster import Proc, Server, coordinator, hive, node
from tests.e2e.test_recovery import assert_replay_matches

pytestmark = pytest.mark.slow


def event(kind: str, emitter: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "id": f"p{time.time_ns()}", "ts": time.time(), "emitter": emitter} | fields


def submission(task_id: str, **spec: Any) -> dict[str, Any]:
    body = {"executor": "function", "type": "noop"} | spec
    return event("TaskSubmitted", "client:mallory", task_id=task_id, spec=body)


def registration(node_id: str, emitter: str, **fields: Any) -> dict[str, Any]:
    base = {"capacity": {"cpu": 4, "memory_gb": 8}, "max_tasks": 4, "executors": ["function"]}
    return event("NodeRegistered", emitter, node_id=node_id, **(base | fields))


def deep(body: dict[str, Any], field: str, depth: int = 10_000) -> bytes:
    """``body`` with ``field`` (a dotted path) set to arrays nested ``depth`` deep."""
    *path, last = field.split(".")
    inner = body
    for key in path:
        inner = inner[key]
    inner[last] = "DEEP"
    return json.dumps(body).encode().replace(b'"DEEP"', b"[" * depth + b"]" * depth)


def raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


@pytest.fixture
def poisoned(fresh_server: Server) -> Iterator[dict[str, Proc]]:
    procs = {
        "coordinator": coordinator(fresh_server, "--startup-grace", "1"),
        "n1": node(fresh_server, "n1", "--no-docker", "--heartbeat", "0.5"),
        "n2": node(fresh_server, "n2", "--no-docker", "--heartbeat", "0.5"),
    }
    try:
        for proc in procs.values():
            proc.start()
        yield procs
    finally:
        for proc in procs.values():
            proc.stop()


@pytest.fixture
async def client(fresh_server: Server, poisoned: dict[str, Proc]) -> AsyncIterator[HiveClient]:
    hive = await HiveClient.connect(fresh_server.url, fresh_server.directory)
    yield hive
    await hive.close()


def poisons(queued: str, running: str, on: str, other: str) -> list[tuple[str, str, str, bytes]]:
    """(what, user, subject, payload): each is a finding of the issue, published as ``user``;
    ``running`` runs on node ``on``, ``other`` is the other node."""
    long_id = "x" * 300
    return [
        (
            "nested 10,000 deep",
            "client",
            "hive.task.deep1.submitted.by.mallory",
            deep(submission("deep1"), "spec.payload"),
        ),
        (
            "nested 10,000 deep in a node event",
            "node",
            f"hive.task.{running}.completed.{on}",
            deep(event("TaskCompleted", f"node:{on}", task_id=running, node_id=on, attempt=1), "result"),
        ),
        (
            "nested in a node's own registration",
            "node",
            f"hive.node.{on}.registered",
            deep(registration(on, f"node:{on}", gpus=[]), "gpus"),
        ),
        (
            "just under the max payload",
            "client",
            "hive.task.big1.submitted.by.mallory",
            raw(submission("big1", payload="x" * (8 * 1024 * 1024 - 4096))),
        ),
        ("priority 2**70", "client", "hive.task.prio1.submitted.by.mallory", raw(submission("prio1", priority=2**70))),
        (
            "negative resources",
            "client",
            "hive.task.neg1.submitted.by.mallory",
            raw(submission("neg1", resources={"cpu": -1000})),
        ),
        ("id with *", "client", "hive.task.*.submitted.by.mallory", raw(submission("a*b"))),
        ("id with >", "client", "hive.task.a>b.submitted.by.mallory", raw(submission("a>b"))),
        ("non-ASCII id", "client", "hive.task.tâche.submitted.by.mallory", raw(submission("tâche"))),
        ("300-char id", "client", f"hive.task.{long_id}.submitted.by.mallory", raw(submission(long_id))),
        (
            "depends on itself",
            "client",
            "hive.task.self1.submitted.by.mallory",
            raw(submission("self1", after=["self1"])),
        ),
        ("max_attempts 0", "client", "hive.task.att0.submitted.by.mallory", raw(submission("att0", max_attempts=0))),
        ("max_attempts -1", "client", "hive.task.att1.submitted.by.mallory", raw(submission("att1", max_attempts=-1))),
        ("negative timeout", "client", "hive.task.tmo1.submitted.by.mallory", raw(submission("tmo1", timeout_s=-5))),
        (
            "no ts",
            "client",
            "hive.task.nots1.submitted.by.mallory",
            raw({k: v for k, v in submission("nots1").items() if k != "ts"}),
        ),
        (
            "heartbeat interval 1e9 s",
            "node",
            "hive.node.sleepy.registered",
            raw(registration("sleepy", "node:sleepy", heartbeat_s=1e9)),
        ),
        (
            "forged drained",
            "node",
            f"hive.node.{other}.drained",
            raw(event("NodeDrained", f"node:{on}", node_id=other)),
        ),
        (
            "drained without a drain request",
            "node",
            f"hive.node.{other}.drained",
            raw(event("NodeDrained", f"node:{other}", node_id=other)),
        ),
        (
            "zero capacity for another node",
            "node",
            f"hive.node.{other}.registered",
            raw(registration(other, f"node:{on}", capacity={"cpu": 0, "memory_gb": 0})),
        ),
        (
            "shrinks below its running task",
            "node",
            f"hive.node.{on}.registered",
            raw(registration(on, f"node:{on}", capacity={"cpu": 0.5, "memory_gb": 8})),
        ),
        (
            "a submission on a node's completion subject (dotted id)",
            "node",
            "hive.task.x.completed.submitted.by.mallory",
            raw(submission("x.completed")),
        ),
        (
            "a cancellation on a node's completion subject (dotted id)",
            "node",
            "hive.task.y.completed.cancelled",
            raw(event("TaskCancelled", "coordinator", task_id="y.completed", reason="forged")),
        ),
        (
            "completion of an attempt never assigned to that node",
            "node",
            f"hive.task.{running}.completed.{other}",
            raw(event("TaskCompleted", f"node:{other}", task_id=running, node_id=other, attempt=1)),
        ),
        (
            "report on an unknown task",
            "node",
            "hive.task.ghost.started.n1",
            raw(event("TaskStarted", "node:n1", task_id="ghost", node_id="n1", attempt=1)),
        ),
        (
            "cancel another task",
            "client",
            "hive.task.other.cancel_requested.by.mallory",
            raw(event("TaskCancelRequested", "client:mallory", task_id=queued)),
        ),
        ("garbage", "client", f"hive.task.{queued}.submitted.by.mallory", b"\x00\xffnot json"),
        (
            "wrong type",
            "client",
            f"hive.task.{queued}.submitted.by.mallory",
            b'{"type": "TaskSubmitted", "task_id": 5}',
        ),
        (
            "unknown tag",
            "client",
            f"hive.task.{queued}.submitted.by.mallory",
            b'{"type": "TaskExploded", "task_id": "x"}',
        ),
        ("an array", "client", f"hive.task.{queued}.cancel_requested.by.mallory", b"[1, 2, 3]"),
    ]


async def test_poison_is_refused_and_survives_restarts(
    fresh_server: Server, poisoned: dict[str, Proc], client: HiveClient
) -> None:
    queued = await client.submit(TaskSpec(executor="function", type="noop", resources=Resources(cpu=1000)))
    hold = TaskSpec(executor="function", type="test_hold", payload={"seconds": 30}, resources=Resources(cpu=1))
    running = await client.submit(hold)
    deadline = time.monotonic() + 20
    while (await client.task(running))["state"] != "running":
        assert time.monotonic() < deadline, "the holding task never started"
        time.sleep(0.1)
    before = {t["task_id"]: t for t in await client.tasks()}
    nodes_before = {n["node_id"]: n for n in await client.nodes()}

    on = (await client.task(running))["node_id"]
    cases = poisons(queued, running, on, "n2" if on == "n1" else "n1")
    # each as the user it claims to be (the node the holding task runs on, the client
    # mallory); what the server refuses to them, again with the coordinator's credential,
    # which may say anything: the coordinator's own rules must hold even then
    conns = {
        "node": await nats.connect(fresh_server.url, **fresh_server.options("node", on)),
        "client": await nats.connect(fresh_server.url, **fresh_server.options("client", "mallory")),
        "stolen": await nats.connect(fresh_server.url, **fresh_server.options("coordinator", "coordinator")),
    }
    written, refused = 0, []
    try:
        for what, user, subject, data in cases:
            for who in (user, "stolen"):
                try:
                    await conns[who].jetstream().publish(subject, data, timeout=1)
                    written += 1
                    break
                except Exception as exc:  # refused by the server (permissions, max payload, no stream)
                    refused.append((what, who, type(exc).__name__))
    finally:
        for conn in conns.values():
            await conn.close()
    print(f"server refused: {refused}")
    assert any(who == "node" for _, who, _ in refused), "the server let a node speak for another"
    client.last_seq = (await client.js.stream_info(AUDIT_STREAM)).state.last_seq

    stats = await client.request("stats")
    assert stats["seq"] == client.last_seq
    assert stats["rejected"] == written, stats  # every one that reached the log was refused
    assert stats["decide_errors"] == 0
    assert {t["task_id"]: t for t in await client.tasks()} == before
    assert {n["node_id"]: {k: v for k, v in n.items() if k != "live"} for n in await client.nodes()} == {
        k: {kk: vv for kk, vv in v.items() if kk != "live"} for k, v in nodes_before.items()
    }
    assert all(p.alive() for p in poisoned.values()), {n: p.text()[-2000:] for n, p in poisoned.items()}

    # one line per rule, not one per reject; tracebacks none
    text = poisoned["coordinator"].text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    firsts = [r for r in lines if r.get("event") == "event rejected"]
    assert len(firsts) == len({r["rule"] for r in firsts}) == len(stats["rejected_by_rule"])
    assert "Traceback" not in text

    # the request-reply API is on the wire too
    for verb, body in [
        ("tasks", b"[" * 10_000 + b"]" * 10_000),
        ("task", b'{"task_id": {"a": [1, 2]}}'),
        ("stats", b'{"min_seq": "many"}'),
        ("validate", b'{"tasks": [{"task_id": 1, "after": 5}]}'),
        ("trust_reset", b'{"node_id": "n1", "score": "high"}'),
        ("guide", b"\xff\xfe"),
    ]:
        reply = json.loads((await client.nc.request(api_subject(verb, client.user), body, timeout=5)).data)
        assert reply["ok"] is False and reply["error"], (verb, reply)

    # the CLI reads the same log: every read command still answers
    for args in (["events", "--json"], ["tasks", "--json"], ["nodes", "--json"], ["task", running, "--json"]):
        done = hive(fresh_server, *args)
        assert done.returncode == 0, (args, done.stderr[-2000:])

    # the poison stays in the log: every service restarts over it
    for name in ("coordinator", on):
        poisoned[name].kill9()
        poisoned[name].start()
    client.last_seq = 0
    again = await client.request("stats")
    assert again["rejected"] == written and again["decide_errors"] == 0
    fresh = await client.submit(TaskSpec(executor="function", type="noop", payload={"after": "poison"}))
    assert (await client.wait(fresh, timeout=30))["state"] == "completed"
    assert (await client.task(queued))["state"] == "queued"
    assert all(p.alive() for p in poisoned.values())
    # its node was killed: the attempt was interrupted (one attempt allowed, so it failed)
    ended = await client.wait(running, timeout=30)
    assert (ended["state"], ended["reason"]) == ("failed", "interrupted"), ended
    assert_replay_matches(fresh_server)


async def test_cli_refuses_what_the_wire_refuses(fresh_server: Server, poisoned: dict[str, Proc]) -> None:
    """The same rules, before anything is written: a one-line error, exit 1."""
    for args, words in [
        (["submit", "--id", "a.b", "--", "true"], "invalid task id"),
        (["submit", "--id", "selfish", "--after", "selfish", "--", "true"], "cannot depend on itself"),
        (["submit", "--priority", str(2**70), "--", "true"], "priority"),
        (["submit", "--cpu", "-1", "--", "true"], "negative"),
        (["submit", "--attempts", "0", "--", "true"], "attempts"),
        (["submit", "--timeout", "-1", "--", "true"], "timeout"),
    ]:
        done = hive(fresh_server, *args)
        assert done.returncode != 0 and words in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    # a payload too large for one argument: the Python API refuses it the same way
    async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as api:
        with pytest.raises(HiveError, match="size"):
            await api.submit(TaskSpec(executor="function", type="noop", payload="x" * (2 * 1024 * 1024)))
    assert json.loads(hive(fresh_server, "tasks", "--json").stdout) == []


async def test_a_request_waiting_for_the_log_holds_up_nobody(fresh_server: Server, client: HiveClient) -> None:
    """A caller may ask to be answered once the log reaches ``min_seq``; one naming a position
    the log never reaches waits alone (answered, as things are, when its wait ends), and only
    so many of one caller's requests wait at once."""
    mallory = await nats.connect(fresh_server.url, **fresh_server.options("client", "mallory"))
    subject, far = api_subject("stats", "mallory"), b'{"min_seq": 1000000000}'

    def ask() -> asyncio.Task[Any]:
        return asyncio.ensure_future(mallory.request(subject, far, timeout=30))

    try:
        waiting = [ask() for _ in range(5)]
        await mallory.flush()
        # (before: each request waited for the one before it, so this came after all five waits)
        stats = await client.request("stats", timeout=30)
        assert not any(w.done() for w in waiting), "a far-future request was answered before its wait ended"
        for _ in range(40):  # (each wait registers when its task first runs, after the request that spawned it)
            if stats["waiting_for_log"] == len(waiting):
                break
            await asyncio.sleep(0.05)
            stats = await client.request("stats", timeout=30)
        assert stats["waiting_for_log"] == len(waiting)
        assert not any(w.done() for w in waiting)
        more = [ask() for _ in range(MAX_WAITING - len(waiting) + 1)]  # one over the cap
        replies = [json.loads(r.data) for r in await asyncio.gather(*waiting, *more)]
        refused = [r for r in replies if not r["ok"]]
        assert len(refused) == 1 and "already wait for the log" in refused[0]["error"], refused[:2]
        # the waits are over and forgotten: none is kept for a position the log may never reach,
        # and the caller's next request waits again
        assert (await client.request("stats"))["waiting_for_log"] == 0
        assert json.loads((await mallory.request(subject, far, timeout=30)).data)["ok"] is True
    finally:
        await mallory.close()


HOSTILE_TEXT = "\x1b[2J\x1b]0;owned\x07[red]red[/red] [link=http://evil.example]click[/link]\x9b\u202egnp.exe"


async def test_what_others_wrote_reaches_the_terminal_as_text(fresh_server: Server, client: HiveClient) -> None:
    """What a node or a client wrote (a hostname, a command and its output), shown by the
    CLI: no escape sequence of theirs reaches the operator's terminal (nothing clears it,
    retitles it or plants a link), and rich markup in it is shown as it was written."""
    rogue = await nats.connect(fresh_server.url, **fresh_server.options("node", "n9"))
    try:
        body = registration("n9", "node:n9", hostname=HOSTILE_TEXT)
        await rogue.jetstream().publish("hive.node.n9.registered", raw(body), timeout=5)
    finally:
        await rogue.close()
    task_id = await client.submit(TaskSpec(executor="process", command=["echo", HOSTILE_TEXT]))
    assert (await client.wait(task_id, timeout=30))["state"] == "completed"
    for args in (["events"], ["tasks"], ["task", task_id]):
        done = hive(fresh_server, *args, input_env={"COLUMNS": "400"})
        assert done.returncode == 0, (args, done.stderr[-500:])
        assert "owned" in done.stdout and "[red]" in done.stdout, (args, done.stdout[-2000:])
        for control in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert control not in done.stdout + done.stderr, (args, repr(control), done.stdout[-2000:])
