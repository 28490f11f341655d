"""Encoding and the one typed decoder. Validation happens here, at the edge, once."""

from __future__ import annotations

from typing import Any

import msgspec

from events.base import MISSING_ID, Event, decoding
from events.negotiation import (
    GuidanceGiven,
    HelpRequested,
    ResourceDenied,
    ResourceGranted,
    ResourceRequested,
)
from events.node import (
    HeartbeatIntervalSet,
    LeaderElected,
    NodeDrained,
    NodeDrainRequested,
    NodeHeartbeat,
    NodeLost,
    NodeRegistered,
    NodeTrustReset,
    TrustPolicySet,
)
from events.subjects import legacy_subject_for, subject_for
from events.task import (
    TaskAssigned,
    TaskCancelled,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskReassigned,
    TaskRejected,
    TaskStarted,
    TaskSubmitted,
)
from events.validation import BadEvent, check_envelope, check_event, check_ids, check_raw

AnyEvent = (
    TaskSubmitted
    | TaskAssigned
    | TaskStarted
    | TaskProgress
    | TaskCompleted
    | TaskFailed
    | TaskCancelRequested
    | TaskCancelled
    | TaskReassigned
    | TaskRejected
    | NodeRegistered
    | NodeHeartbeat
    | NodeDrainRequested
    | NodeDrained
    | NodeLost
    | NodeTrustReset
    | TrustPolicySet
    | HeartbeatIntervalSet
    | LeaderElected
    | HelpRequested
    | GuidanceGiven
    | ResourceRequested
    | ResourceGranted
    | ResourceDenied
)

_decoder = msgspec.json.Decoder(AnyEvent)
_encoder = msgspec.json.Encoder()


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes, subject: str | None = None, stamp: float | None = None) -> Event:
    """Decode and validate one payload (``events.validation``); raise ``BadEvent``. With
    ``subject``, the event must belong exactly there; with ``stamp`` (the server's time of
    the message), its ``ts`` must be close to it."""
    check_raw(data)
    decoding.on = True
    try:
        event: Event = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadEvent("schema", str(exc)) from exc
    except RecursionError:  # malformed nesting that the depth check let through
        raise BadEvent("depth", "JSON nested too deep") from None
    finally:
        decoding.on = False
    if event.id == MISSING_ID or event.ts != event.ts:  # (the marker for a missing ts is NaN)
        raise BadEvent("envelope", f"Object missing required field `{'id' if event.id == MISSING_ID else 'ts'}`")
    check_ids(event)
    check_envelope(event, stamp)
    if subject is not None and subject_for(event) != subject and legacy_subject_for(event) != subject:
        raise BadEvent("subject", f"event {type(event).__name__} does not belong on {subject}")
    check_event(event, len(data))
    return event


def full_builtins(value: Any) -> Any:
    """``value`` as plain JSON types with every field of every struct, defaults too: what
    people and the web read. (The wire leaves defaults out; ``msgspec.to_builtins`` would
    as well, and a reader should not have to know each default.)"""
    if isinstance(value, msgspec.Struct):
        config = value.__struct_config__
        out: dict[str, Any] = {} if config.tag is None else {config.tag_field: config.tag}
        for name, key in zip(value.__struct_fields__, value.__struct_encode_fields__, strict=True):
            out[key] = full_builtins(getattr(value, name))
        return out
    if isinstance(value, list | tuple):
        return [full_builtins(v) for v in value]
    if isinstance(value, dict):
        return {msgspec.to_builtins(k): full_builtins(v) for k, v in value.items()}
    return msgspec.to_builtins(value)


def check_outgoing(event: Event) -> bytes:
    """Encode an event we are about to publish and apply the readers' rules to it, so that
    an honest writer learns here, not from a silent reject, that it broke one."""
    data = encode(event)
    decode(data, subject_for(event))
    return data
