"""The read commands' lean client (``hive.reads.Reader`` on ``edge.wire``) against the real
server: the same answers as nats-py's ``HiveClient``, the same one-line errors, and a
read command that loads neither nats-py nor structlog."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import nats
import pytest
from nats.aio.msg import Msg

from edge.errors import Denied, HiveError, NotFound, Unreachable
from edge.logread import read_stream
from events.subjects import AUDIT_STREAM, api_subject
from events.task import TaskSpec
from hive.client import HiveClient
from hive.reads import Reader
from tests.cluster import Proc, Server, hive


async def reader(server: Server, role: str = "auditor", name: str = "audrey") -> Reader:
    return await Reader.connect(server.url, server.directory, role, creds=server.creds(role, name))


async def test_a_reader_answers_as_the_nats_py_client_does(
    nats_server: Server, cluster: dict[str, Proc], client: HiveClient
) -> None:
    task_id = await client.submit(TaskSpec(command=["sh", "-c", "echo out; echo err >&2"]))
    await client.wait(task_id, timeout=30)
    async with await reader(nats_server) as lean:
        assert await lean.task(task_id) == await client.task(task_id)
        assert [(s, st, e) for s, st, e in await lean.history(task_id)] == await client.history(task_id)
        assert [n["node_id"] for n in await lean.nodes(page=1)] == [n["node_id"] for n in await client.nodes()]
        mine = [t for t in await lean.tasks() if t["task_id"] == task_id]
        assert mine == [t for t in await client.tasks() if t["task_id"] == task_id]
        stats = await lean.request("stats")
        assert stats["tasks_by_state"].get("completed") and stats["role"] == "leader"
        with pytest.raises(NotFound, match="unknown task nope"):
            await lean.task("nope")
        with pytest.raises(HiveError):
            await lean.request("no_such_verb")
        # one connection serves one request after another, histories included
        assert [e for _, _, e in await lean.history(task_id)] == [e for _, _, e in await lean.history(task_id)]


async def test_a_refused_request_is_denied_at_once(nats_server: Server, cluster: dict[str, Proc]) -> None:
    # a node's credential may not ask the coordinator anything: the server says so at once
    async with await reader(nats_server, "node", "alpha") as lean:
        with pytest.raises(Denied, match=r"may not publish on hiveapi\.stats\.alpha"):
            await lean.request("stats", timeout=30)


async def test_no_coordinator_is_one_clear_error(fresh_server: Server) -> None:
    async with await reader(fresh_server) as lean:  # a server, no coordinator: no responders
        with pytest.raises(Unreachable, match="no coordinator answered stats"):
            await lean.request("stats", timeout=30)
    done = hive(fresh_server, "status")
    assert done.returncode == 2 and done.stderr.startswith("error: no coordinator answered stats"), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


async def test_a_coordinator_that_never_answers_is_no_answer(fresh_server: Server) -> None:
    # a subscriber on the coordinator's subjects that stays silent: the request waits out its
    # timeout on a quiet connection, and says nobody answered (not that NATS is unreachable)
    silent = await nats.connect(fresh_server.url, **fresh_server.options("coordinator", "coordinator"))
    try:
        await silent.subscribe(api_subject("*", "*"), cb=_ignore)
        await silent.flush()
        async with await reader(fresh_server) as lean:
            with pytest.raises(Unreachable, match="no coordinator answered stats") as info:
                await lean.request("stats", timeout=1.0)
            assert "cannot reach" not in str(info.value)
    finally:
        await silent.close()


async def _ignore(msg: Msg) -> None:
    pass


def test_read_commands_load_neither_nats_py_nor_structlog(nats_server: Server, cluster: dict[str, Proc]) -> None:
    heavy = ("nats", "structlog", "rich.progress", "aiohttp")
    reads = (["status", "--json"], ["nodes"], ["tasks", "--json"], ["help-requests"], ["trust", "alpha"])
    for args in (*reads, ["events", "--json"], ["nodes", "--json"]):
        unwanted = (*heavy, "rich") if "--json" in args else heavy  # a table needs rich; JSON none of it
        probe = (
            "import json, sys, runpy\n"
            "sys.argv = ['hive', *sys.argv[1:]]\n"
            "try:\n"
            "    runpy.run_module('hive', run_name='__main__')\n"
            "except SystemExit as exc:\n"
            "    assert not exc.code, exc.code\n"
            f"print(json.dumps(sorted(m for m in {unwanted!r} if m in sys.modules)), file=sys.stderr)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe, *args],
            env=nats_server.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (args, done.stderr)
        assert json.loads(done.stderr.strip().splitlines()[-1]) == [], (args, done.stderr)


def test_a_pruned_command_tree_keeps_help_and_errors(nats_server: Server) -> None:
    top = hive(nats_server, "--help").stdout
    assert "nodes" in top and "submit" in top and "status" in top
    assert "Usage: hive nodes [OPTIONS]" in hive(nats_server, "nodes", "--help").stdout
    bad = hive(nats_server, "nodes", "--bogus")
    assert bad.returncode == 2 and "No such option: --bogus" in bad.stderr
    assert "enroll" in hive(nats_server, "node", "--help").stdout
    typo = hive(nats_server, "nodez")
    assert typo.returncode == 2 and "No such command 'nodez'" in typo.stderr


async def test_events_prints_the_log_as_nats_py_reads_it_and_refuses_a_bad_filter(
    nats_server: Server, cluster: dict[str, Proc], client: HiveClient
) -> None:
    task_id = await client.submit(TaskSpec(executor="function", type="noop"))
    await client.wait(task_id, timeout=30)
    done = await asyncio.to_thread(hive, nats_server, "events", f"hive.task.{task_id}.>", "--json")
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    logged: list[tuple[int, str]] = []
    await read_stream(
        client.js, AUDIT_STREAM, lambda seq, msg: logged.append((seq, msg.subject)), filters=[f"hive.task.{task_id}.>"]
    )
    assert [(e["seq"], e["subject"]) for e in printed if e["stream"] == AUDIT_STREAM] == logged
    assert [e["type"] for e in printed][:2] == ["TaskSubmitted", "TaskAssigned"] and printed[-1][
        "type"
    ] == "TaskCompleted"
    assert all(e["task_id"] == task_id and "invalid" not in e for e in printed)
    for bad, why in (
        ("hive..x", "it has an empty token"),
        ("hive.>.x", "'>' must be the last token"),
        ("a b", "whitespace"),
    ):
        for follow in ([], ["--follow"]):
            refused = await asyncio.to_thread(hive, nats_server, "events", bad, *follow)
            assert refused.returncode == 2 and refused.stderr.startswith(f"error: {bad!r} is not a subject filter"), (
                refused
            )
            assert why in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
