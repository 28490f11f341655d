"""Hypothesis strategies for wire payloads, derived from the event types themselves.

Nothing here lists events or fields by hand: shapes and limits come from
``msgspec.inspect`` over ``events.codec.AnyEvent``, who may write an event from
``events.validation.WRITERS``, and where it goes from ``events.subjects.subject_for``. Each
field gets values inside its constraints (so that many events pass the edge and reach the
projections) or hostile ones: just outside a bound, non-finite numbers written as raw JSON
tokens, ids that break the subject scheme, odd or huge strings, deep nesting, the wrong
JSON type. Whole events are then mutated (a field poisoned, an envelope field dropped, the
wrong tag, a lying emitter, a bad clock) or replaced by raw garbage. ``wire()`` yields
``(subject, payload)`` pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec
from hypothesis import strategies as st
from msgspec import Raw
from msgspec import inspect as mi

from events.base import Event
from events.codec import AnyEvent
from events.limits import ID_PATTERN, ID_RULE, MAX_EVENT_BYTES
from events.subjects import subject_for, valid_id
from events.validation import WRITERS

MEMBERS: list[mi.StructType] = list(mi.multi_type_info(AnyEvent.__args__))  # type: ignore[attr-defined]
ENVELOPE = frozenset(f.name for f in mi.type_info(Event).fields)  # type: ignore[attr-defined]
TAGS = [m.tag for m in MEMBERS]
# one clock for all generated events: generation must not depend on when it runs (Hypothesis replays draws)
NOW = time.time()
Ids = st.SearchStrategy[str]

# fmt: off
ODD_STRINGS = [
    "", " ", "a.b", "a*b", "a>b", "*", ">", "a b", "a\n", "\n", "a\tb", "tâche", "x" * 300, "a\x00b",
    "\u202eevil", "\u200b", "\ufeff", "𝔘𝔫𝔦", "🐝" * 70, "ǅ", "..", "../x", "/etc/passwd", "$JS.API", "_INBOX.x",
]
# fmt: on
BAD_NUMBERS = [Raw(b"1e400"), Raw(b"-1e400"), Raw(b"NaN"), Raw(b"Infinity"), Raw(b"-Infinity"), "1", None, True, []]
# sizes around the event limit: some just fit, most are too big (rare: see rarely())
HUGE = st.integers(MAX_EVENT_BYTES - 4096, MAX_EVENT_BYTES * 6 // 5).map(lambda n: "x" * n)


def rarely(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any], odds: int = 50) -> st.SearchStrategy[Any]:
    """``rare`` about once in ``odds`` draws (``one_of`` does not weight repeated branches,
    and Hypothesis favours the ends of a range, hence the middle)."""
    return st.integers(0, odds - 1).flatmap(lambda k: rare if k == odds // 2 else common)


def deep(depth: int, closed: bool = True, obj: bool = False) -> Raw:
    """Nesting written as bytes (json.dumps and msgspec would hit their recursion limits)."""
    opening, closing = (b'{"a":', b"}") if obj else (b"[", b"]")
    return Raw(opening * depth + b"1" + (closing * depth if closed else b""))


DEEP = st.builds(deep, st.sampled_from([20, 31, 33, 200, 10_000]), st.booleans(), st.booleans())
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _bounds(t: Any, step: float) -> tuple[Any, Any]:
    lo = t.ge if t.ge is not None else (t.gt + step if t.gt is not None else None)
    hi = t.le if t.le is not None else (t.lt - step if t.lt is not None else None)
    return lo, hi


def _outside(t: Any, step: float) -> list[Any]:
    """The nearest values that break a numeric type's bounds."""
    near = [t.gt, t.lt]
    if t.ge is not None:
        near.append(t.ge - max(step, abs(t.ge) * 1e-12))
    if t.le is not None:
        near.append(t.le + max(step, abs(t.le) * 1e-12))
    return [v for v in near if v is not None]


def valid(t: mi.Type, ids: Ids) -> st.SearchStrategy[Any]:
    """Values inside ``t``'s constraints."""
    if isinstance(t, mi.Metadata):
        # an id is known by its rule (its alphabet is checked per event, not by a pattern)
        return ids if (t.extra_json_schema or {}).get("description") == ID_RULE else valid(t.type, ids)
    if isinstance(t, mi.UnionType):
        return st.one_of(*[valid(m, ids) for m in t.types])
    if isinstance(t, mi.NoneType):
        return st.none()
    if isinstance(t, mi.BoolType):
        return st.booleans()
    if isinstance(t, mi.LiteralType):
        return st.sampled_from(t.values)
    if isinstance(t, mi.IntType):
        lo, hi = _bounds(t, 1)
        return st.integers(-(2**63) if lo is None else lo, 2**63 - 1 if hi is None else hi)
    if isinstance(t, mi.FloatType):
        return st.floats(
            t.ge if t.ge is not None else t.gt,
            t.le if t.le is not None else t.lt,
            exclude_min=t.gt is not None,
            exclude_max=t.lt is not None,
            allow_nan=False,
            allow_infinity=False,
        )
    if isinstance(t, mi.StrType):
        if t.pattern == ID_PATTERN:
            return ids
        if t.pattern:
            return st.from_regex(t.pattern, fullmatch=True)
        return st.text(min_size=t.min_length or 0, max_size=min(t.max_length or 40, 40))
    if isinstance(t, mi.ListType):
        return st.lists(valid(t.item_type, ids), min_size=t.min_length or 0, max_size=min(t.max_length or 4, 4))
    if isinstance(t, mi.DictType):
        return st.dictionaries(valid(t.key_type, ids), valid(t.value_type, ids), max_size=3)
    if isinstance(t, mi.AnyType):
        return JSON
    if isinstance(t, mi.StructType):
        return _body(t, ids)
    raise TypeError(f"no strategy for {t!r}: add one, the event types have grown")


def hostile(t: mi.Type, ids: Ids) -> st.SearchStrategy[Any]:
    """Values just outside ``t``'s constraints, or of the wrong kind altogether."""
    if isinstance(t, mi.Metadata):
        return hostile(t.type, ids)
    if isinstance(t, mi.UnionType):
        return st.one_of(*[hostile(m, ids) for m in t.types if not isinstance(m, mi.NoneType)])
    if isinstance(t, mi.IntType):
        return st.sampled_from([*_outside(t, 1), 2**70, -(2**63) - 1, 2**64, 1.5, *BAD_NUMBERS])
    if isinstance(t, mi.FloatType):
        return st.sampled_from([*_outside(t, 1e-6), -1000.0, -0.0, 1e308, *BAD_NUMBERS])
    if isinstance(t, mi.StrType):
        over = [] if t.max_length is None or t.max_length > 200_000 else ["x" * (t.max_length + 1)]
        return rarely(st.sampled_from([*ODD_STRINGS, *over, 5, None, ["a"]]), HUGE, 16)
    if isinstance(t, mi.ListType):
        too_many = [] if t.max_length is None else [valid(t.item_type, ids).map(lambda v: [v] * (t.max_length + 1))]
        return st.one_of(*too_many, hostile(t.item_type, ids).map(lambda v: [v]), st.sampled_from(["[]", {}, None]))
    if isinstance(t, mi.DictType):
        bad_key = st.sampled_from(ODD_STRINGS[:12]).map(lambda k: {k: "v"})
        return st.one_of(bad_key, hostile(t.value_type, ids).map(lambda v: {"K": v}), st.sampled_from([[], "x"]))
    if isinstance(t, mi.AnyType):
        return rarely(DEEP | st.sampled_from([2**70, -(2**63) - 1, *BAD_NUMBERS, *ODD_STRINGS]), HUGE, 8)
    if isinstance(t, mi.StructType):
        return st.one_of(st.sampled_from([[], "x", None, 0]), _body(t, ids).flatmap(lambda b: _poisoned(t, b, ids)))
    return st.sampled_from([None, 0, "", [], {}, *ODD_STRINGS[:6]])  # bool, literal, none: anything else


@st.composite
def _body(draw: Callable[..., Any], t: mi.StructType, ids: Ids) -> dict[str, Any]:
    """A struct as a JSON object within its limits; an event gets an honest envelope."""
    body: dict[str, Any] = {t.tag_field: t.tag} if t.tag_field else {}
    for f in t.fields:
        if f.name not in ENVELOPE and (f.required or draw(st.booleans())):
            body[f.encode_name] = draw(valid(f.type, ids))
    if issubclass(t.cls, Event):
        kind = draw(st.sampled_from(sorted(WRITERS.get(t.cls, {"client"}))))
        emitter = {"coordinator": "coordinator", "client": "client:fuzz"}.get(kind, f"node:{body.get('node_id')}")
        body |= {"id": draw(st.uuids()).hex, "ts": NOW + draw(st.floats(-30, 30)), "emitter": emitter}
        if draw(st.booleans()):
            body["causation_id"] = draw(ids)
    return body


@st.composite
def _poisoned(draw: Callable[..., Any], t: mi.StructType, body: dict[str, Any], ids: Ids) -> dict[str, Any]:
    """``body`` with one field, at any depth, replaced by a hostile value."""
    body = dict(body)
    f = draw(st.sampled_from(t.fields))
    inner = f.type.type if isinstance(f.type, mi.Metadata) else f.type
    if isinstance(inner, mi.StructType) and isinstance(body.get(f.encode_name), dict) and draw(st.booleans()):
        body[f.encode_name] = draw(_poisoned(inner, body[f.encode_name], ids))
    else:
        body[f.encode_name] = draw(hostile(f.type, ids))
    return body


@st.composite
def _mutated(
    draw: Callable[..., Any], t: mi.StructType, body: dict[str, Any], ids: Ids, targets: Ids
) -> dict[str, Any]:
    """One to three things wrong with an event: content, envelope, tag, writer, clock, targets."""
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["poison"] * 4 + ["drop", "tag", "emitter", "clock", "target", "extra"]))
        if how == "poison":
            body = draw(_poisoned(t, body, ids))
        elif how == "drop":
            body.pop(draw(st.sampled_from(["id", "ts", "emitter", "type", *body])), None)
        elif how == "tag":
            body["type"] = draw(st.sampled_from([*TAGS, "", "Event", t.tag.lower(), t.tag + " ", None, 5]))
        elif how == "emitter":
            who = draw(st.sampled_from(["coordinator", "client:x", "node:", "", "node:a.b", "node:*", "nobody:x"]))
            body["emitter"] = draw(st.sampled_from([who, "node:" + draw(targets)]))
        elif how == "clock":
            body["ts"] = draw(st.sampled_from([NOW + 3600, NOW - 2 * 86_400, 0, -1, 1e11, Raw(b"1e400"), "now", None]))
        elif how == "target":  # aim at real tasks and nodes (the caller's), whatever else is wrong
            for f in t.fields:
                if isinstance(body.get(f.encode_name), str) and valid_id(body[f.encode_name]) and f.name != "id":
                    body[f.encode_name] = draw(targets)
            if "emitter" in body and str(body["emitter"]).startswith("node:") and "node_id" in body:
                body["emitter"] = f"node:{body['node_id']}"
        else:
            body[draw(st.sampled_from(["zzz", "TYPE", "spec", "__proto__"]))] = draw(JSON)
    return body


def _garbage(data: bytes) -> st.SearchStrategy[bytes]:
    """Whole payloads that are not (quite) JSON events, some made from ``data``."""
    fixed = [b"", b"null", b"[]", b"{}", b"[1,2,3]", b'"x"', b"\xef\xbb\xbf" + data, data + b"}}", data + data]
    return st.one_of(
        st.sampled_from(fixed),
        st.binary(max_size=64),
        st.integers(1, len(data) - 1 if len(data) > 1 else 1).map(lambda n: data[:n]),
        st.sampled_from([b'"emitter":"', b'"task_id":"', b'"type":"']).map(
            lambda k: data.replace(k, k + b"\xff\xfe", 1)
        ),
        st.just(b'{"type":"TaskSubmitted",' + data[1:]),  # a second "type" key
        st.builds(deep, st.sampled_from([33, 5000]), st.booleans(), st.booleans()).map(bytes),
    )


def _subject(t: mi.StructType, body: dict[str, Any], pick: Callable[[], str]) -> str:
    """``subject_for`` the event ``body`` means, its ids kept where they are legal tokens.
    (Struct construction does not validate, so a skeleton event is enough.)"""
    fields = {}
    for f in t.fields:
        if f.name in ENVELOPE or (f.encode_name not in body and not f.required):
            continue
        value = body.get(f.encode_name, "")
        fields[f.name] = value if value is None or (isinstance(value, str) and valid_id(value)) else pick()
    if isinstance(body.get("emitter"), str):  # a person's request names its emitter: by.<user>
        fields["emitter"] = body["emitter"]
    return subject_for(t.cls(**fields))


@st.composite
def _message(draw: Callable[..., Any], t: mi.StructType, ids: Ids, targets: Ids) -> tuple[str, bytes]:
    body = draw(_body(t, ids))
    subject = _subject(t, body, lambda: draw(ids))
    mode = draw(st.sampled_from(["valid"] * 4 + ["hostile"] * 5 + ["garbage"]))
    if mode != "valid":
        body = draw(_mutated(t, body, ids, targets))
    data = msgspec.json.encode(body)
    if mode == "garbage":
        data = draw(_garbage(data))
    where = draw(st.sampled_from(["own"] * 8 + ["other target", "other type"]))
    if where == "other target":  # the same kind of event, about someone else
        subject = _subject(t, {}, lambda: draw(targets))
    elif where == "other type":
        subject = _subject(draw(st.sampled_from(MEMBERS)), body, lambda: draw(targets))
    return subject, data


def wire(ids: Ids | None = None, targets: Ids | None = None) -> st.SearchStrategy[tuple[str, bytes]]:
    """``(subject, payload)`` for any event type: valid, hostile, or garbage. ``ids`` are the
    ids valid events use (default: any legal id); ``targets`` the ids hostile ones aim at."""
    ids = st.from_regex(ID_PATTERN, fullmatch=True) if ids is None else ids
    return st.one_of(*[_message(t, ids, ids if targets is None else targets) for t in MEMBERS])
