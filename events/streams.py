"""JetStream stream definitions and their creation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, ObjectStoreConfig, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from events.subjects import (
    AUDIT_STREAM,
    AUDIT_SUBJECTS,
    LEADER_BUCKET,
    RESULTS_BUCKET,
    TELEMETRY_STREAM,
    TELEMETRY_SUBJECTS,
)

T = TypeVar("T")

DUPLICATE_WINDOW_S = 120.0
LEASE_TTL_S = 2.0  # the coordinators' lease (coordinator/lease.py)
MAX_REPLICAS = 3  # JetStream's usual: more costs writes and buys little


def stream_configs(replicas: int = 1) -> list[StreamConfig]:
    return [
        # The audit trail: kept (bounded only by size), deduplicated by event id.
        StreamConfig(
            name=AUDIT_STREAM,
            description="HiveMind audit log: tasks, nodes, decisions",
            subjects=AUDIT_SUBJECTS,
            storage=StorageType.FILE,
            max_bytes=8 * 1024**3,
            discard=DiscardPolicy.OLD,
            duplicate_window=DUPLICATE_WINDOW_S,
            num_replicas=replicas,
            allow_direct=True,
        ),
        # High-rate telemetry: an hour, and only the recent messages of each subject.
        StreamConfig(
            name=TELEMETRY_STREAM,
            description="HiveMind telemetry: heartbeats, progress",
            subjects=TELEMETRY_SUBJECTS,
            storage=StorageType.FILE,
            max_age=3600.0,
            max_msgs_per_subject=200,
            max_bytes=512 * 1024**2,
            discard=DiscardPolicy.OLD,
            duplicate_window=10.0,
            num_replicas=replicas,
        ),
    ]


def cluster_size(js: JetStreamContext) -> int:
    """How many servers the connected server says its cluster has (1 outside a cluster):
    its INFO names a cluster and lists every member's client URL in ``connect_urls``."""
    nc: Any = getattr(js, "_nc", None)
    info: dict[str, Any] = getattr(nc, "_server_info", None) or {}
    if not info.get("cluster"):
        return 1
    return max(1, len(set(info.get("connect_urls") or [])))


def default_replicas(js: JetStreamContext) -> int:
    return max(1, min(MAX_REPLICAS, cluster_size(js)))


async def ensure_streams(js: JetStreamContext, replicas: int | None = None, lease_ttl_s: float = LEASE_TTL_S) -> None:
    """Create the streams and the results bucket, or update the streams to the current
    definition (idempotent). ``replicas`` None (what the coordinator passes): a stream that
    exists keeps its replica count, a new one gets min(3, servers in the cluster)."""
    fresh = replicas if replicas is not None else default_replicas(js)
    for cfg in stream_configs(fresh):
        try:
            info = await js.stream_info(cfg.name or "")
        except NotFoundError:
            await _placed(lambda cfg=cfg: js.add_stream(cfg))
            continue
        if replicas is None:
            cfg.num_replicas = info.config.num_replicas
        try:
            await js.update_stream(cfg)
        except BadRequestError:
            # e.g. a replica count a running cluster refuses to change: keep what is there
            pass
    try:
        await js.object_store(RESULTS_BUCKET)
    except (NotFoundError, Exception):
        await _placed(
            lambda: js.create_object_store(
                RESULTS_BUCKET,
                config=ObjectStoreConfig(description="HiveMind task result files", replicas=fresh),
            )
        )
    await ensure_leader_bucket(js, fresh, lease_ttl_s)


async def ensure_leader_bucket(js: JetStreamContext, replicas: int, ttl_s: float = LEASE_TTL_S) -> Any:
    """The coordinators' lease bucket: one key, history 1, entries expire after ``ttl_s``
    (a leader that stops renewing loses the key). Created if missing; an existing one is kept."""
    try:
        return await js.key_value(LEADER_BUCKET)
    except (NotFoundError, Exception):
        config = KeyValueConfig(
            bucket=LEADER_BUCKET, history=1, ttl=ttl_s, replicas=replicas, description="HiveMind coordinator lease"
        )
        return await _placed(lambda: js.create_key_value(config))


PLACEMENT_WAIT_S = 30.0
NO_SUITABLE_PEERS = 10005  # JetStream's err_code while too few servers of a cluster have joined


async def _placed(create: Callable[[], Awaitable[T]]) -> T:
    """Create something replicated. A cluster still forming refuses with "no suitable peers
    for placement" until enough of its servers have joined; wait for them a while."""
    deadline = time.monotonic() + PLACEMENT_WAIT_S
    while True:
        try:
            return await create()
        except BadRequestError as exc:
            if getattr(exc, "err_code", None) != NO_SUITABLE_PEERS or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
