"""A large batch goes out on a lean connection of its own (``HiveClient.submit_many``,
``edge.wire.read_acks``), against a real server and coordinator: each task logged once,
its acks read, a refused batch refused in one error with nothing logged."""

from __future__ import annotations

from typing import Any

import pytest

from edge import wire
from edge.errors import Denied
from events.subjects import AUDIT_STREAM
from events.task import TaskSpec
from hive.client import LEAN_BATCH, HiveClient
from tests.cluster import Server, coordinator

NOOP = TaskSpec(executor="function", type="noop")


async def test_a_large_batch_is_logged_once_each_on_its_own_connection(fresh_server: Server) -> None:
    coord = coordinator(fresh_server).start()
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            before = (await client.js.stream_info(AUDIT_STREAM)).state.last_seq
            sent = client.nc.stats["out_msgs"]
            count = LEAN_BATCH * 3 + 7
            ids = [f"t-batch{i:04d}" for i in range(count)]
            assert await client.submit_many([(t, NOOP) for t in ids], window=LEAN_BATCH) == ids
            info = await client.js.stream_info(AUDIT_STREAM, subjects_filter="hive.task.*.submitted.>")
            assert info.state.last_seq == before + count
            assert sum((info.state.subjects or {}).values()) == count  # none twice
            assert client.last_seq == before + count  # every ack was read
            assert client.nc.stats["out_msgs"] - sent < LEAN_BATCH  # not through nats-py
            queued = await client.tasks(state="queued")
            assert sorted(t["task_id"] for t in queued) == ids
            # a small batch takes nats-py's connection, as before
            assert await client.submit_many([("t-small", NOOP)]) == ["t-small"]
            assert client.last_seq == before + count + 1
    finally:
        coord.stop()


async def test_a_refused_batch_is_one_error_and_logs_nothing(fresh_server: Server) -> None:
    coord = coordinator(fresh_server).start()
    try:
        creds = fresh_server.creds("auditor", "aud")  # may read the log, not write to it
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory, creds=creds) as client:
            before = (await client.js.stream_info(AUDIT_STREAM)).state.last_seq
            with pytest.raises(Denied, match="aud"):
                await client.submit_many([(f"t-no{i}", NOOP) for i in range(LEAN_BATCH * 2)])
            assert (await client.js.stream_info(AUDIT_STREAM)).state.last_seq == before
    finally:
        coord.stop()


async def test_a_batch_whose_connection_drops_halfway_lands_once_each(
    fresh_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lean connection cut in the second window: what it had not acknowledged, and
    the rest, go through nats-py's connection, and the server's dedup keeps one of each."""
    coord = coordinator(fresh_server).start()
    published = 0
    real = wire.Conn.publish_acked

    def cut_halfway(self: wire.Conn, *args: Any, **kwargs: Any) -> Any:
        nonlocal published
        published += 1
        if published == LEAN_BATCH + LEAN_BATCH // 2:
            self.writer.transport.abort()  # as a dead link would: the socket is gone
        return real(self, *args, **kwargs)

    monkeypatch.setattr(wire.Conn, "publish_acked", cut_halfway)
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            before = (await client.js.stream_info(AUDIT_STREAM)).state.last_seq
            count = LEAN_BATCH * 3
            ids = [f"t-cut{i:04d}" for i in range(count)]
            assert await client.submit_many([(t, NOOP) for t in ids], window=LEAN_BATCH) == ids
            assert LEAN_BATCH + LEAN_BATCH // 2 <= published < count  # cut, and the rest went elsewhere
            info = await client.js.stream_info(AUDIT_STREAM, subjects_filter="hive.task.*.submitted.>")
            assert info.state.last_seq == before + count
            assert sum((info.state.subjects or {}).values()) == count  # none lost, none twice
    finally:
        coord.stop()
