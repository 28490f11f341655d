"""Garbage on event subjects: acked, counted, recorded as rejected; nothing else changes."""

from __future__ import annotations

import asyncio
import json

import nats

from events.subjects import AUDIT_STREAM
from events.task import TaskSpec
from hive.client import HiveClient
from tests.cluster import Server, coordinator, hive


async def test_malformed_events_are_rejected_not_fatal(fresh_server: Server) -> None:
    coord = coordinator(fresh_server).start()
    try:
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            queued = await client.submit(TaskSpec(command=["true"]))
            before = await client.tasks()
            nc = await nats.connect(fresh_server.url, user="client", password=fresh_server.creds["client"])
            js = nc.jetstream()
            bad = [
                (f"hive.task.{queued}.submitted", b"\x00\xffnot json"),
                (f"hive.task.{queued}.submitted", b'{"type": "TaskSubmitted", "task_id": 5}'),
                (f"hive.task.{queued}.submitted", b'{"type": "TaskExploded", "task_id": "x"}'),
                (f"hive.task.{queued}.cancel_requested", b"[1, 2, 3]"),
                (
                    "hive.task.other.cancel_requested",
                    json.dumps({"type": "TaskCancelRequested", "task_id": queued}).encode(),
                ),
            ]
            for subject, data in bad:
                await js.publish(subject, data)
            last = (await js.stream_info(AUDIT_STREAM)).state.last_seq
            client.last_seq = last
            after = await client.tasks()
            await nc.close()
            assert after == before
            assert after[0]["state"] == "queued"
            stats = await client.request("stats")
            assert stats["rejected"] == len(bad)
            assert stats["seq"] == last
        assert coord.alive()
        text = coord.text()
        assert text.count("rejected malformed event") == len(bad)
        # replay records the same rejects and agrees with the live projection
        done = hive(fresh_server, "replay", "--json")
        report = json.loads(done.stdout)
        assert report["matches"] is True and report["rejected"] == len(bad)
    finally:
        coord.stop()
    await asyncio.sleep(0)
