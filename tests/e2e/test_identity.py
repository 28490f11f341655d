"""Identity the server enforces (operator mode, a credential per node and per person): what
each may say, revocation on the running server, who did what, and bad credentials as one
line. The permission matrix itself is tests/e2e/test_permissions.py."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import nats
import pytest

from edge.auth import issue_user
from edge.config import auth_dir
from events import TaskCompleted, encode
from events.subjects import AUDIT_STREAM, subject_for
from events.task import TaskSpec
from hive.client import HiveClient
from tests.cluster import Server, coordinator, hive, node
from tests.e2e.test_recovery import wait_counts

pytestmark = pytest.mark.slow

HOLD = TaskSpec(executor="function", type="test_hold", payload={"seconds": 20}, max_attempts=3)


def one_line_error(done: object, code: int = 2) -> str:
    err = done.stderr.strip()  # type: ignore[attr-defined]
    assert done.returncode == code, (done.returncode, err)  # type: ignore[attr-defined]
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


async def test_a_node_cannot_speak_for_another(fresh_server: Server) -> None:
    coord = coordinator(fresh_server).start()
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            before = (await client.js.stream_info(AUDIT_STREAM)).state.last_seq
            errors: list[str] = []

            async def on_error(exc: Exception) -> None:
                errors.append(str(exc))

            nc = await nats.connect(fresh_server.url, **fresh_server.options("node", "n1"), error_cb=on_error)
            forged = TaskCompleted(task_id="t1", node_id="n2", attempt=1, emitter="node:n2")
            with pytest.raises(Exception):  # noqa: B017 - refused: no ack comes
                await nc.jetstream().publish(subject_for(forged), encode(forged), timeout=1)
            await nc.close()
            assert any("permissions violation" in e and "n2" in e for e in errors), errors
            assert (await client.js.stream_info(AUDIT_STREAM)).state.last_seq == before  # nothing reached the log
    finally:
        coord.stop()


async def test_revoked_node_is_cut_off_and_its_work_moves(fresh_server: Server) -> None:
    coord = coordinator(fresh_server, "--startup-grace", "0.5").start()
    fast = ("--heartbeat", "0.5", "--no-docker", "--max-tasks", "4")
    victim, other = node(fresh_server, "victim", *fast).start(), node(fresh_server, "other", *fast).start()
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            run = time.time_ns()
            await client.submit_many([(f"rv-{run}-{i}", HOLD) for i in range(6)])
            await wait_counts(client, 6, state="running", timeout=30)
            on_victim = [t["task_id"] for t in await client.tasks(state="running") if t["node_id"] == "victim"]
            assert on_victim
            offset = len(victim.text())
            started = time.monotonic()
            done = hive(fresh_server, "node", "revoke", "victim", "--json")
            assert done.returncode == 0, done.stderr
            report = json.loads(done.stdout)
            victim.wait_for_log("closed this connection for good", 10, offset)
            cut_s = time.monotonic() - started
            nodes = {n["node_id"]: n["state"] for n in await client.nodes()}
            assert nodes["victim"] == "lost"  # declared at once, not after the heartbeat timeout
            for task_id in on_victim:
                kinds = [type(e).__name__ for _, _, e in await client.history(task_id)]
                assert "TaskReassigned" in kinds, kinds
            await asyncio.sleep(2)
            assert victim.proc.wait(10) == 2 and "reconnected to nats" not in victim.text(offset)  # and it stays out
            listed = json.loads(hive(fresh_server, "creds", "list", "--json").stdout)
            assert next(u for u in listed if u["name"] == "victim")["revoked"]
        print(f"\nrevoke -> node disconnected: {cut_s:.2f}s (push {report['pushed_s']}s)")
        (fresh_server.directory / "revoke.json").write_text(json.dumps({"revoke_to_disconnect_s": cut_s}))
    finally:
        for proc in (victim, other, coord):
            proc.stop()


async def test_who_may_cancel_and_the_history_says_who(fresh_server: Server, tmp_path: Path) -> None:
    coord = coordinator(fresh_server).start()
    worker = node(fresh_server, "w1", "--no-docker").start()
    store = auth_dir(fresh_server.directory)
    alice, bob = issue_user(store, "client", "alice"), issue_user(store, "client", "bob")
    olga = issue_user(store, "operator", "olga")
    try:
        as_alice = {"HIVE_CREDS": str(alice)}
        done = hive(fresh_server, "submit", "--json", "--type", "test_hold", "--payload", '{"seconds": 30}', input_env=as_alice)
        task_id = json.loads(done.stdout)["task_id"]
        mine = json.loads(hive(fresh_server, "submit", "--json", "--type", "noop", input_env=as_alice).stdout)["task_id"]
        err = one_line_error(hive(fresh_server, "cancel", task_id, input_env={"HIVE_CREDS": str(bob)}))
        assert "bob may cancel only their own tasks" in err
        assert "alice" in err
        # a client may not give guidance: the server refuses, at once
        started = time.monotonic()
        err = one_line_error(hive(fresh_server, "guide", task_id, "--action", "skip", input_env=as_alice))
        assert "refused" in err and time.monotonic() - started < 20  # refused at once, not after a timeout
        assert hive(fresh_server, "cancel", task_id, input_env={"HIVE_CREDS": str(olga)}).returncode == 0
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory, creds=olga) as client:
            final = await client.wait(task_id, timeout=30)
            assert final["state"] == "cancelled" and final["submitted_by"] == "alice" and final["cancelled_by"] == "olga"
            await client.wait(mine, timeout=30)
        shown = hive(fresh_server, "task", task_id)
        assert "client:alice" in shown.stdout and "client:olga" in shown.stdout
        table = hive(fresh_server, "tasks").stdout
        assert "alice" in table
    finally:
        worker.stop()
        coord.stop()


def test_bad_credentials_are_one_line(fresh_server: Server, tmp_path: Path) -> None:
    coord = coordinator(fresh_server).start()
    try:
        no_jwt = tmp_path / "no-jwt.creds"
        text = Path(issue_user(auth_dir(fresh_server.directory), "client", "carol")).read_text()
        no_jwt.write_text(text[text.index("-----BEGIN USER NKEY SEED") :])
        elsewhere = Server(tmp_path / "elsewhere")  # a key store this server does not trust
        stranger = elsewhere.creds("client", "stranger")
        cases = [
            (["tasks", "--creds", str(no_jwt)], "JWT"),
            (["tasks", "--creds", str(tmp_path / "missing.creds")], "missing.creds"),
            (["tasks", "--creds", str(stranger)], "refused the credentials"),
            (["user", "add", "a.b"], "user name"),
            (["user", "add", "x", "--role", "root"], "--role"),
            (["node", "enroll", "*"], "user name"),
        ]
        for args, words in cases:
            started = time.monotonic()
            done = hive(fresh_server, *args, timeout=20)
            err = done.stderr.strip()
            assert done.returncode != 0 and words in err, (args, err)
            assert len(err.splitlines()) == 1 and "Traceback" not in err, (args, err)
            assert time.monotonic() - started < 20, args  # a hang guard, not a timing check
        revoked = issue_user(auth_dir(fresh_server.directory), "client", "dave")
        assert hive(fresh_server, "user", "revoke", "dave").returncode == 0
        err = one_line_error(hive(fresh_server, "tasks", "--creds", str(revoked)))
        assert "refused the credentials" in err
    finally:
        coord.stop()


def test_tls_server_and_a_client_without_its_ca(tmp_path: Path) -> None:
    server = Server(tmp_path, tls=True).start()
    coord = coordinator(server).start()
    try:
        assert server.url.startswith("tls://")
        assert hive(server, "tasks", "--json").returncode == 0  # the local CA is found in DATA/auth
        other_ca = Server(tmp_path / "other", tls=True)
        other_ca.server.write_config()  # makes that store's CA
        for url, ca in ((server.url, other_ca.directory / "auth/tls/ca.pem"), (server.url.replace("tls", "nats"), None)):
            args = ["tasks", "--server", url] + (["--ca", str(ca)] if ca else [])
            env = {"HIVE_DATA": str(tmp_path / "empty")}  # no local CA to fall back on
            creds = server.creds("operator", "remote")
            done = hive(server, *args, "--creds", str(creds), input_env=env, timeout=20)
            err = one_line_error(done)
            assert "TLS" in err or "certificate" in err, err
    finally:
        coord.stop()
        server.stop()
