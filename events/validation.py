"""The one validation step at the edge: what a payload must satisfy to become an event.

``events.codec.decode`` runs it on every message a service reads, and the command line
runs it on what it is about to publish, so both sides apply the same rules:

1. the raw payload: at most ``MAX_EVENT_BYTES`` (an assignment a little more), JSON
   nesting at most ``MAX_DEPTH`` deep (checked before decoding: a deep payload would
   otherwise exhaust the decoder's recursion);
2. the typed decode: every field within the limits of ``events.limits`` (ids, finite
   non-negative resources, integer ranges, string lengths), enforced by msgspec itself;
3. the envelope: ``id`` and ``ts`` present on the wire (a default would give each reader
   its own value, and a replay would disagree with the live projection), and ``ts`` within
   ``MAX_FUTURE_SKEW_S`` ahead / ``MAX_PAST_SKEW_S`` behind the server's stamp when known;
4. the subject: the event belongs exactly where it was published;
5. the writer: ``emitter`` is the kind of party that may state this fact (``WRITERS``);
   a node speaks only as ``node:<the node_id in the event>``;
6. invariants across fields (``INVARIANTS``), e.g. no task depends on itself.

A violation raises ``BadEvent`` with the rule's name, which services record as a rejected
event, exactly as a replay does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec

from events.base import Event
from events.limits import (
    ID_RULE,
    MAX_ASSIGNMENT_BYTES,
    MAX_DEPTH,
    MAX_EVENT_BYTES,
    MAX_FUTURE_SKEW_S,
    MAX_PAST_SKEW_S,
)
from events.negotiation import GuidanceGiven, HelpRequested, ResourceDenied, ResourceGranted, ResourceRequested
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
from events.task import (
    TaskAssigned,
    TaskCancelled,
    TaskCancelRequested,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskReassigned,
    TaskRejected,
    TaskSpec,
    TaskStarted,
    TaskSubmitted,
)


class BadEvent(ValueError):
    """A message that is not a valid event for its subject. ``rule`` names what it broke."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule


MAX_BYTES: dict[type[Event], int] = {TaskAssigned: MAX_ASSIGNMENT_BYTES}
LARGEST = max(MAX_EVENT_BYTES, *MAX_BYTES.values())

# Who may state each fact. "node" means node:<the event's node_id>: a node speaks for itself only.
WRITERS: dict[type[Event], frozenset[str]] = {
    TaskSubmitted: frozenset({"client"}),
    TaskCancelRequested: frozenset({"client"}),
    NodeDrainRequested: frozenset({"client"}),
    TaskStarted: frozenset({"node"}),
    TaskProgress: frozenset({"node"}),
    TaskCompleted: frozenset({"node"}),
    TaskFailed: frozenset({"node", "coordinator"}),  # the coordinator fails a lost node's attempt
    HelpRequested: frozenset({"node"}),
    ResourceRequested: frozenset({"node"}),
    NodeRegistered: frozenset({"node"}),
    NodeHeartbeat: frozenset({"node"}),
    NodeDrained: frozenset({"node"}),
    GuidanceGiven: frozenset({"coordinator", "client"}),
    TaskAssigned: frozenset({"coordinator"}),
    TaskCancelled: frozenset({"coordinator"}),
    TaskReassigned: frozenset({"coordinator"}),
    TaskRejected: frozenset({"coordinator"}),
    ResourceGranted: frozenset({"coordinator"}),
    ResourceDenied: frozenset({"coordinator"}),
    NodeLost: frozenset({"coordinator"}),
    NodeTrustReset: frozenset({"coordinator"}),
    TrustPolicySet: frozenset({"coordinator"}),
    LeaderElected: frozenset({"coordinator"}),
    HeartbeatIntervalSet: frozenset({"coordinator"}),
}


def spec_problem(spec: TaskSpec) -> str | None:
    """What makes a spec impossible to run, or None. The command line says the same."""
    if spec.executor == "process" and not spec.command:
        return "a process task needs a command"
    if spec.executor == "function" and not spec.type:
        return "a function task needs a type"
    if spec.executor == "docker" and not spec.image:
        return "a docker task needs an image"
    return None


def _submitted(event: TaskSubmitted) -> str | None:
    if event.task_id in event.spec.after:
        return "a task cannot depend on itself"
    return spec_problem(event.spec)


def _assigned(event: TaskAssigned) -> str | None:
    return None if event.spec is None else spec_problem(event.spec)


def _registered(event: NodeRegistered) -> str | None:
    cap = event.capacity
    if cap.cpu <= 0 or cap.memory_gb <= 0:
        return "a node offers some CPU and memory"
    if len(event.gpus) != cap.gpu or len({g.index for g in event.gpus}) != len(event.gpus):
        return "the GPU list must match the GPU capacity, with distinct indexes"
    if not event.executors:
        return "a node offers at least one executor"
    return None


def _reported(event: TaskCompleted | TaskFailed) -> str | None:
    if event.started_at is not None and event.started_at > event.ts:
        return "an attempt cannot start after its report"
    return None


def _granted(event: ResourceGranted) -> str | None:
    return "a grant cannot preempt the task it is for" if event.task_id in event.preempted else None


# Invariants across fields: a check per type, returning what is wrong (or None).
INVARIANTS: dict[type[Event], Callable[[Any], str | None]] = {
    TaskSubmitted: _submitted,
    TaskAssigned: _assigned,
    NodeRegistered: _registered,
    ResourceGranted: _granted,
    TaskCompleted: _reported,
    TaskFailed: _reported,
}

_ID_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def _id_paths(info: msgspec.inspect.Type, prefix: str) -> list[tuple[str, bool]]:
    """(attribute path, is a list) of every ``Id`` field under ``info``, found by its rule."""
    paths: list[tuple[str, bool]] = []
    for field in getattr(info, "fields", ()):
        kind, many = field.type, False
        if isinstance(kind, msgspec.inspect.UnionType):  # optional: X | None
            kind = next((t for t in kind.types if not isinstance(t, msgspec.inspect.NoneType)), kind)
        if isinstance(kind, msgspec.inspect.Metadata) and isinstance(kind.type, msgspec.inspect.ListType):
            kind = kind.type
        if isinstance(kind, msgspec.inspect.ListType):
            kind, many = kind.item_type, True  # a bounded list of ids
        if isinstance(kind, msgspec.inspect.Metadata) and (kind.extra_json_schema or {}).get("description") == ID_RULE:
            paths.append((prefix + field.name, many))
        elif isinstance(kind, msgspec.inspect.StructType) and field.name == "spec":
            paths += _id_paths(kind, f"{prefix}{field.name}.")
    return paths


def _accessor(cls: type[Event]) -> Callable[[Event], str]:
    """A function returning all of an event's ids concatenated, generated once per type:
    a getattr walk per event would cost what the regex patterns it replaces cost."""
    parts = []
    for path, many in _id_paths(msgspec.inspect.type_info(cls), ""):
        head, _, rest = path.partition(".")
        value = f"e.{path}"
        guard = f"e.{head} is not None and " if rest else ""
        if many:
            parts.append(f'("".join({value}) if {guard}{value} else "")')
        else:
            parts.append(f'({value} or "")' if not rest else f'({value} if {guard}{value} else "")')
    source = "lambda e: " + (" + ".join(parts) or '""')
    return eval(source)


_ACCESSORS: dict[type[Event], Callable[[Event], str]] = {}


def _ids_of(cls: type[Event]) -> Callable[[Event], str]:
    accessor = _ACCESSORS.get(cls)
    if accessor is None:
        accessor = _ACCESSORS[cls] = _accessor(cls)
    return accessor


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_PAIRS = re.compile(rb"\[\]|\{\}")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON ``data`` nests objects/arrays deeper than ``limit``. Almost every event
    has fewer brackets than the limit and costs two counts; otherwise strings are removed,
    then innermost pairs, ``limit`` times: whatever is left was nested deeper."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    for _ in range(limit):
        if not brackets:
            return False
        fewer = _PAIRS.sub(b"", brackets)
        if fewer == brackets:
            return False  # not balanced: the decoder rejects it as malformed
        brackets = fewer
    return bool(brackets)


def check_raw(data: bytes) -> None:
    if len(data) > LARGEST:
        raise BadEvent("size", f"{len(data)} bytes is over the limit of {LARGEST}")
    if data.count(b"[") + data.count(b"{") > MAX_DEPTH and too_deep(data):  # (too_deep's fast path, inlined)
        raise BadEvent("depth", f"JSON nested deeper than {MAX_DEPTH}")


def check_envelope(event: Event, stamp: float | None) -> None:
    """The event's time is near the server's (its id and ts being there is the codec's check)."""
    if stamp is not None and not (stamp - MAX_PAST_SKEW_S <= event.ts <= stamp + MAX_FUTURE_SKEW_S):
        raise BadEvent("clock", f"ts {event.ts:.3f} is {event.ts - stamp:+.0f}s from the server's time")


def check_ids(event: Event) -> None:
    """Every id of the event, and the emitter's name, in the id alphabet (the decoder has
    checked their lengths; a concatenation of such strings is in the alphabet iff each is)."""
    cls = type(event)
    if not _ID_ALPHABET.fullmatch(_ids_of(cls)(event) + event.emitter.partition(":")[2]):
        raise BadEvent("schema", f"{cls.__name__}: an id or the emitter's name is not {ID_RULE}")


def check_event(event: Event, size: int) -> None:
    """The rules that need the decoded event: size by type, ids, writer, invariants."""
    cls = type(event)
    limit, writers, invariant = _RULES.get(cls) or _rules_of(cls)
    if size > limit:
        raise BadEvent("size", f"{cls.__name__} of {size} bytes is over the limit of {limit}")
    kind, colon, name = event.emitter.partition(":")
    honest = (colon == "" and not name) if kind == "coordinator" else (colon == ":" and 0 < len(name) <= 64)
    if not honest or kind not in writers or (kind == "node" and name != getattr(event, "node_id", None)):
        allowed = ", ".join(sorted(writers))
        raise BadEvent("writer", f"{cls.__name__} from {event.emitter or 'nobody'!r} (written by: {allowed})")
    problem = invariant(event) if invariant is not None else None
    if problem is not None:
        raise BadEvent("invariant", f"{cls.__name__}: {problem}")


# (size limit, writers, invariant) of each type, looked up once per event instead of thrice
_RULES: dict[type[Event], tuple[int, frozenset[str], Callable[[Any], str | None] | None]] = {}


def _rules_of(cls: type[Event]) -> tuple[int, frozenset[str], Callable[[Any], str | None] | None]:
    rules = _RULES[cls] = (MAX_BYTES.get(cls, MAX_EVENT_BYTES), WRITERS.get(cls, frozenset()), INVARIANTS.get(cls))
    return rules


def rules_table() -> list[tuple[str, str, str]]:
    """(event, field, rule) for every constrained field: the README's table comes from this."""
    from events.codec import AnyEvent

    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()

    def walk(owner: str, info: msgspec.inspect.Type, prefix: str) -> None:
        for name, rule in _field_rules(info):
            rows.append((owner, prefix + name, rule))
        for field in getattr(info, "fields", ()):
            inner = _unwrap(field.type)
            if isinstance(inner, msgspec.inspect.StructType) and inner.cls.__name__ not in seen:
                seen.add(inner.cls.__name__)
                walk(inner.cls.__name__, inner, "")

    for member in msgspec.inspect.multi_type_info(AnyEvent.__args__):  # type: ignore[attr-defined]
        walk(member.cls.__name__, member, "")  # type: ignore[attr-defined]
    return rows


def _unwrap(info: msgspec.inspect.Type) -> msgspec.inspect.Type:
    while True:
        if isinstance(info, msgspec.inspect.Metadata):
            info = info.type
        elif isinstance(info, msgspec.inspect.UnionType):
            info = next((t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)), info)
            if isinstance(info, msgspec.inspect.UnionType):
                return info
        elif isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.DictType)):
            info = info.item_type if isinstance(info, msgspec.inspect.ListType) else info.value_type
        else:
            return info


def _describe(info: msgspec.inspect.Type) -> str:
    if isinstance(info, msgspec.inspect.Metadata):
        described = (info.extra_json_schema or {}).get("description")
        return described or _describe(info.type)
    if isinstance(info, msgspec.inspect.UnionType):
        return " or ".join(_describe(t) for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
    parts: list[str] = []
    for attr, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        value = getattr(info, attr, None)
        if value is not None:
            parts.append(f"{word} {value:g}" if isinstance(value, float) else f"{word} {value:,}")
    if getattr(info, "pattern", None):
        parts.append(f"matches `{info.pattern}`")  # type: ignore[attr-defined]
    if getattr(info, "max_length", None) is not None:
        unit = "items" if isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.DictType)) else "chars"
        parts.append(f"at most {info.max_length:,} {unit}")  # type: ignore[attr-defined]
    if isinstance(info, msgspec.inspect.LiteralType):
        parts.append("one of " + ", ".join(str(v) for v in info.values))
    if isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.DictType)):
        item = _describe(info.item_type if isinstance(info, msgspec.inspect.ListType) else info.value_type)
        if isinstance(info, msgspec.inspect.DictType):
            key = _describe(info.key_type)
            item = f"keys {key}; values {item}" if key else item
        if item:
            parts.append(f"each {item}")
    return ", ".join(parts)


def _field_rules(info: msgspec.inspect.Type) -> list[tuple[str, str]]:
    out = []
    for field in getattr(info, "fields", ()):
        rule = _describe(field.type)
        if rule:
            out.append((field.name, rule))
    return out


ENVELOPE = ("id", "ts", "emitter", "causation_id")


def rules_markdown() -> str:
    """The README's section of rules, generated from the types; a test keeps the README's copy current."""
    lines = [
        f"* A payload is at most {MAX_EVENT_BYTES:,} bytes ({MAX_ASSIGNMENT_BYTES:,} for an assignment, which",
        f"  carries its task's spec), JSON nested at most {MAX_DEPTH} deep, with `id` and `ts` present; `ts` at",
        f"  most {MAX_FUTURE_SKEW_S:g} s ahead of and {MAX_PAST_SKEW_S:g} s behind the server's time of the message.",
        "* Invariants across fields:",
        *(f"  * {cls.__name__}: {doc}." for cls, doc in INVARIANT_DOCS.items()),
        "",
        "| event | written by |",
        "|---|---|",
    ]
    for cls, writers in WRITERS.items():
        who = ", ".join("node (itself only)" if w == "node" else w for w in sorted(writers))
        lines.append(f"| {cls.__name__} | {who} |")
    lines += ["", "| event or part | field | rule |", "|---|---|---|"]
    envelope: dict[str, str] = {}
    rows = []
    for owner, field, rule in rules_table():
        if field in ENVELOPE:
            envelope.setdefault(field, rule)  # the same on every event: listed once
        else:
            rows.append((owner, field, rule))
    for owner, field, rule in [("every event", f, r) for f, r in envelope.items()] + rows:
        escaped = rule.replace("|", "\\|")
        lines.append(f"| {owner} | `{field}` | {escaped} |")
    return "\n".join(lines)


INVARIANT_DOCS: dict[type[Event], str] = {
    TaskSubmitted: "a task does not depend on itself; its executor has what it needs (command, type or image)",
    TaskAssigned: "the spec it carries is runnable",
    NodeRegistered: "some CPU and memory; as many GPUs listed as counted, with distinct indexes; an executor",
    ResourceGranted: "a grant does not preempt its own task",
    TaskCompleted: "`started_at`, when given, is not after the report",
    TaskFailed: "`started_at`, when given, is not after the report",
}
