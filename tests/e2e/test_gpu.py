"""The NVIDIA path (pynvml): fingerprint, pinning and utilisation, on a machine with a GPU.
Skipped where there is no NVIDIA driver, which is the normal case (CI has none)."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from events.base import Resources
from events.codec import decode
from events.node import NodeHeartbeat
from events.task import TaskSpec
from hive.client import HiveClient
from node.resources import detect_gpus, gpu_usage
from tests.cluster import Server, coordinator, hive, node

GPUS = detect_gpus()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not GPUS, reason="no NVIDIA GPU or driver on this machine")]


def test_fingerprint_reads_every_gpu() -> None:
    assert all(g.memory_gb > 1 and g.name for g in GPUS)
    assert [g.index for g in GPUS] == list(range(len(GPUS)))
    usage = gpu_usage()
    assert [u.index for u in usage] == [g.index for g in GPUS]
    assert all(0 <= u.utilization <= 100 and u.memory_used_gb >= 0 for u in usage)


async def test_gpu_tasks_are_pinned_and_heartbeats_carry_usage(fresh_server: Server) -> None:
    procs = [coordinator(fresh_server), node(fresh_server, "gpu-node", "--no-docker", "--heartbeat", "0.5")]
    try:
        for proc in procs:
            proc.start()
        nodes = json.loads(hive(fresh_server, "nodes", "--json").stdout)
        [me] = [n for n in nodes if n["node_id"] == "gpu-node"]
        assert me["capacity"]["gpu"] == len(GPUS)
        assert me["capacity"]["gpu_memory_gb"] == pytest.approx(sum(g.memory_gb for g in GPUS), abs=0.05)
        assert [g["name"] for g in me["gpus"]] == [g.name for g in GPUS]
        probe = "echo visible=$CUDA_VISIBLE_DEVICES; nvidia-smi -L | wc -l"
        async with await HiveClient.connect(fresh_server.url, fresh_server.directory) as client:
            pinned = await client.submit(TaskSpec(command=["sh", "-c", probe], resources=Resources(gpu=1)))
            plain = await client.submit(TaskSpec(command=["sh", "-c", "echo visible=[$CUDA_VISIBLE_DEVICES]"]))
            too_many = await client.submit(TaskSpec(command=["true"], resources=Resources(gpu=len(GPUS) + 1)))
            first, second = await client.wait(pinned, timeout=60), await client.wait(plain, timeout=60)
            assert first["state"] == "completed", first
            lines = first["stdout"].split()
            assert lines[0] == f"visible={first['gpus'][0]}" and lines[1] == "1", first["stdout"]
            assert second["stdout"].strip() == "visible=[]"
            assert (await client.task(too_many))["state"] == "queued"
            await client.cancel(too_many)
            nc = await nats.connect(fresh_server.url, **fresh_server.options("auditor", "audrey"))
            beat: asyncio.Future[NodeHeartbeat] = asyncio.get_running_loop().create_future()

            async def on_beat(msg: nats.aio.msg.Msg) -> None:
                event = decode(msg.data)
                if isinstance(event, NodeHeartbeat) and not beat.done():
                    beat.set_result(event)

            await nc.subscribe("hive.node.gpu-node.heartbeat", cb=on_beat)
            heartbeat = await asyncio.wait_for(beat, 10)
            await nc.close()
            assert [g.index for g in heartbeat.gpus] == [g.index for g in GPUS]
        print(f"\nGPUs: {[(g.index, g.name, g.memory_gb) for g in GPUS]}; heartbeat: {heartbeat.gpus}")
    finally:
        for proc in procs:
            proc.stop()
