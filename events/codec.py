"""Encoding and the one typed decoder. Validation happens here, at the edge, once."""

from __future__ import annotations

from typing import Any, NamedTuple, get_args

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
    people and the web read. (The wire leaves defaults out, and so does
    ``msgspec.to_builtins``; a reader should not have to know each default.) msgspec
    converts, then what it left out is filled in: several times faster than walking the
    fields here (the web's hub does this for every event of the log)."""
    if isinstance(value, msgspec.Struct):
        return fill_defaults(type(value), msgspec.to_builtins(value))
    if isinstance(value, list | tuple):
        return [full_builtins(v) for v in value]
    return msgspec.to_builtins(value)


class _Plan(NamedTuple):
    base: dict[str, Any]  # every field in order, at its default (a required one: None)
    mutable: list[tuple[str, bytes]]  # fields whose default is a list or dict: each gets its own
    nested: list[tuple[str, type]]  # fields holding a struct that leaves its defaults out too


_PLANS: dict[type, _Plan] = {}


def fill_defaults(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """``data``, a ``cls`` as JSON types, with each field it leaves out at its default, in
    the struct's order."""
    plan = _PLANS.get(cls) or _plan(cls)
    out = plan.base | data
    for key, default in plan.mutable:
        if key not in data:
            out[key] = msgspec.json.decode(default)
    for key, kind in plan.nested:
        if isinstance(got := out[key], dict):
            out[key] = fill_defaults(kind, got)
    return out


def _plan(cls: type) -> _Plan:
    config = cls.__struct_config__  # type: ignore[attr-defined]
    plan = _Plan({} if config.tag is None else {config.tag_field: config.tag}, [], [])
    for field in msgspec.structs.fields(cls):
        default: Any = None  # required, or made per value (id, ts): never left out
        if field.default is not msgspec.NODEFAULT:
            default = msgspec.to_builtins(field.default)
        elif field.default_factory in (list, dict, set):  # (what msgspec leaves out when empty)
            default = msgspec.to_builtins(field.default_factory())
        plan.base[field.encode_name] = default
        if isinstance(default, list | dict):
            plan.mutable.append((field.encode_name, msgspec.json.encode(default)))
        if kind := next((t for t in (field.type, *get_args(field.type)) if _fills(t)), None):
            plan.nested.append((field.encode_name, kind))
    _PLANS[cls] = plan
    return plan


def _fills(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, msgspec.Struct) and kind.__struct_config__.omit_defaults


def check_outgoing(event: Event) -> bytes:
    """Encode an event we are about to publish and apply the readers' rules to it, so that
    an honest writer learns here, not from a silent reject, that it broke one."""
    data = encode(event)
    decode(data, subject_for(event))
    return data
