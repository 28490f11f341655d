"""Encoding and the one typed decoder. Validation happens here, at the edge, once."""

from __future__ import annotations

import msgspec

from events.base import Event
from events.negotiation import (
    GuidanceGiven,
    HelpRequested,
    ResourceDenied,
    ResourceGranted,
    ResourceRequested,
)
from events.node import (
    NodeDrained,
    NodeDrainRequested,
    NodeHeartbeat,
    NodeLost,
    NodeRegistered,
    NodeTrustReset,
    TrustPolicySet,
)
from events.subjects import subject_for
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
    | HelpRequested
    | GuidanceGiven
    | ResourceRequested
    | ResourceGranted
    | ResourceDenied
)

_decoder = msgspec.json.Decoder(AnyEvent)
_encoder = msgspec.json.Encoder()


class BadEvent(ValueError):
    """A message on an event subject that is not a valid event for that subject."""


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(data: bytes, subject: str | None = None) -> Event:
    """Decode one payload; with ``subject``, also check the event belongs there, so a
    message cannot claim to be about another task or node than its subject says."""
    try:
        event: Event = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BadEvent(str(exc)) from exc
    if subject is not None and subject_for(event) != subject:
        raise BadEvent(f"event {type(event).__name__} does not belong on {subject}")
    return event
