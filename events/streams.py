"""JetStream stream definitions and their creation."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from events.subjects import (
    AUDIT_STREAM,
    AUDIT_SUBJECTS,
    RESULTS_BUCKET,
    TELEMETRY_STREAM,
    TELEMETRY_SUBJECTS,
)

DUPLICATE_WINDOW_S = 120.0


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


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the streams, or update them to the current definition (idempotent)."""
    for cfg in stream_configs(replicas):
        try:
            await js.stream_info(cfg.name or "")
        except NotFoundError:
            await js.add_stream(cfg)
            continue
        try:
            await js.update_stream(cfg)
        except BadRequestError:
            # e.g. a replica count a running cluster refuses to change: keep what is there
            pass
    try:
        await js.object_store(RESULTS_BUCKET)
    except (NotFoundError, Exception):
        await js.create_object_store(RESULTS_BUCKET, description="HiveMind task result files")
