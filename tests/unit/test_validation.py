"""The validation edge: every poison and hostile-but-valid payload the hardening issue found,
and the limits as data. Each row is a payload a real credential could publish."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from coordinator.core import CoordinatorCore
from coordinator.projection import apply
from events import BadEvent, Resources, TaskSpec, TaskSubmitted, decode, encode
from events.codec import check_outgoing
from events.limits import ID_RULE, MAX_DEPTH, MAX_EVENT_BYTES
from events.node import NodeDrained, NodeRegistered
from events.subjects import subject_for
from events.task import TaskCompleted, TaskFailed
from events.validation import rules_markdown, rules_table, too_deep
from tests.unit.factories import assign, fold, register, submit

NOW = time.time()


def submitted(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"executor": "process", "command": ["true"]} | spec
    return {"type": "TaskSubmitted", "id": "e1", "ts": NOW, "emitter": "client:cli", "task_id": "t1", "spec": body}


def registered(**fields: Any) -> dict[str, Any]:
    base = {
        "type": "NodeRegistered",
        "id": "e2",
        "ts": NOW,
        "emitter": "node:n1",
        "node_id": "n1",
        "capacity": {"cpu": 4, "memory_gb": 8},
        "max_tasks": 4,
        "executors": ["process"],
    }
    return base | fields


def completed(**fields: Any) -> dict[str, Any]:
    base = {"type": "TaskCompleted", "id": "e5", "ts": NOW, "emitter": "node:n1", "task_id": "t1", "node_id": "n1"}
    return base | {"attempt": 1} | fields


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def deep(depth: int, closed: bool = True) -> bytes:
    """A submission whose payload nests ``depth`` arrays (too deep for json.dumps to write)."""
    return raw(submitted(payload="DEEP")).replace(b'"DEEP"', b"[" * depth + (b"]" * depth if closed else b""))


BAD: list[tuple[str, bytes, str, str]] = [
    ("deep payload", deep(10_000), "hive.task.t1.submitted", "depth"),
    ("deep, unbalanced", deep(10_000, closed=False), "hive.task.t1.submitted", "depth"),
    ("near max payload", raw(submitted(payload="x" * (8 * 1024**2 - 2000))), "hive.task.t1.submitted", "size"),
    ("over the event limit", raw(submitted(payload="x" * MAX_EVENT_BYTES)), "hive.task.t1.submitted", "size"),
    ("priority 2**70", raw(submitted(priority=2**70)), "hive.task.t1.submitted", "schema"),
    ("negative cpu", raw(submitted(resources={"cpu": -1000})), "hive.task.t1.submitted", "schema"),
    ("infinite memory", raw(submitted(resources={"memory_gb": "INF"})).replace(b'"INF"', b"1e400"), "hive.task.t1.submitted", "schema"),
    ("max_attempts 0", raw(submitted(max_attempts=0)), "hive.task.t1.submitted", "schema"),
    ("max_attempts negative", raw(submitted(max_attempts=-3)), "hive.task.t1.submitted", "schema"),
    ("timeout negative", raw(submitted(timeout_s=-1)), "hive.task.t1.submitted", "schema"),
    ("timeout zero", raw(submitted(timeout_s=0)), "hive.task.t1.submitted", "schema"),
    ("self dependency", raw(submitted(after=["t1"])), "hive.task.t1.submitted", "invariant"),
    ("no command", raw(submitted(command=[])), "hive.task.t1.submitted", "invariant"),
    ("no ts", raw({k: v for k, v in submitted().items() if k != "ts"}), "hive.task.t1.submitted", "envelope"),
    ("no id", raw({k: v for k, v in submitted().items() if k != "id"}), "hive.task.t1.submitted", "envelope"),
    ("no emitter", raw({k: v for k, v in submitted().items() if k != "emitter"}), "hive.task.t1.submitted", "writer"),
    ("a node submits", raw(submitted() | {"emitter": "node:n1"}), "hive.task.t1.submitted", "writer"),
    ("heartbeat 1e9 s", raw(registered(heartbeat_s=1e9)), "hive.node.n1.registered", "schema"),
    ("zero capacity", raw(registered(capacity={"cpu": 0, "memory_gb": 0})), "hive.node.n1.registered", "invariant"),
    ("registered for another", raw(registered(emitter="node:n2")), "hive.node.n1.registered", "writer"),
    ("max_tasks 0", raw(registered(max_tasks=0)), "hive.node.n1.registered", "schema"),
    ("unknown executor", raw(registered(executors=["rootkit"])), "hive.node.n1.registered", "schema"),
    (
        "drained for another",
        raw({"type": "NodeDrained", "id": "e3", "ts": NOW, "emitter": "node:n2", "node_id": "n1"}),
        "hive.node.n1.drained",
        "writer",
    ),
    (
        "coordinator decision from a client",
        raw({"type": "TaskCancelled", "id": "e4", "ts": NOW, "emitter": "client:x", "task_id": "t1", "reason": "x"}),
        "hive.task.t1.cancelled",
        "writer",
    ),
    ("started after its report", raw(completed(started_at=NOW + 1)), "hive.task.t1.completed.n1", "invariant"),
    ("started_at zero", raw(completed(started_at=0)), "hive.task.t1.completed.n1", "schema"),
    ("ts far in the future", raw(submitted() | {"ts": 10**12}), "hive.task.t1.submitted", "schema"),
    ("ts zero", raw(submitted() | {"ts": 0}), "hive.task.t1.submitted", "schema"),
]
for task_id in ("a*b", "a>b", "tâche", "x" * 300, "a.b", "a b", "", "a\n"):
    BAD.append((f"task id {task_id[:12]!r}", raw(submitted() | {"task_id": task_id}), "hive.task.x.submitted", "schema"))
# a dotted id escapes the subject scheme: a node's completion subject carrying a submission
DOTTED = submitted() | {"task_id": "x.completed", "emitter": "client:cli"}
BAD.append(("dotted id", raw(DOTTED), "hive.task.x.completed.submitted", "schema"))


@pytest.mark.parametrize(("case", "data", "subject", "rule"), BAD, ids=[b[0] for b in BAD])
def test_hostile_payloads_are_refused_with_their_rule(case: str, data: bytes, subject: str, rule: str) -> None:
    with pytest.raises(BadEvent) as caught:
        decode(data, subject)
    assert caught.value.rule == rule, str(caught.value)
    assert len(str(caught.value).splitlines()) == 1


def test_honest_events_pass() -> None:
    assert isinstance(decode(raw(submitted()), "hive.task.t1.submitted"), TaskSubmitted)
    assert isinstance(decode(raw(registered()), "hive.node.n1.registered"), NodeRegistered)
    assert decode(raw(completed(started_at=NOW - 0.01)), "hive.task.t1.completed.n1").started_at == NOW - 0.01
    drained = NodeDrained(node_id="n1", emitter="node:n1")
    assert decode(encode(drained), subject_for(drained)) == drained


def test_clock_is_checked_against_the_servers_stamp() -> None:
    data = raw(submitted() | {"ts": NOW - 2 * 86_400})
    assert decode(data, "hive.task.t1.submitted").ts == NOW - 2 * 86_400  # no stamp known: no check
    with pytest.raises(BadEvent, match=r"^clock"):
        decode(data, "hive.task.t1.submitted", stamp=NOW)
    with pytest.raises(BadEvent, match=r"^clock"):
        decode(raw(submitted() | {"ts": NOW + 3600}), "hive.task.t1.submitted", stamp=NOW)
    assert decode(raw(submitted() | {"ts": NOW - 60}), "hive.task.t1.submitted", stamp=NOW)


@pytest.mark.parametrize(("depth", "deep"), [(MAX_DEPTH - 2, False), (MAX_DEPTH, False), (MAX_DEPTH + 1, True)])
def test_depth_limit_is_exact(depth: int, deep: bool) -> None:
    assert too_deep(json.dumps(nested(depth)).encode()) is deep
    # brackets inside strings do not count
    assert not too_deep(json.dumps({"s": "[" * 1000}).encode())


def test_outgoing_check_tells_the_writer() -> None:
    too_big = TaskCompleted(task_id="t1", node_id="n1", attempt=1, result="x" * MAX_EVENT_BYTES, emitter="node:n1")
    with pytest.raises(BadEvent, match=r"^size"):
        check_outgoing(too_big)
    ok = TaskSubmitted(task_id="t1", spec=TaskSpec(command=["true"], resources=Resources(cpu=1)), emitter="client:x")
    assert check_outgoing(ok) == encode(ok)


def test_rules_table_covers_every_constrained_field() -> None:
    rows = {(event, field): rule for event, field, rule in rules_table()}
    assert rows[("TaskSpec", "max_attempts")] == ">= 1, <= 100"
    assert rows[("Resources", "cpu")].startswith(">= 0")
    assert rows[("TaskSubmitted", "task_id")] == ID_RULE
    assert rows[("TaskSpec", "after")] == f"at most 1,000 items, each {ID_RULE}"
    assert ("NodeRegistered", "heartbeat_s") in rows


def test_decisions_built_around_outside_text_stay_valid() -> None:
    """A node's error at the limit must not make the coordinator's retry decision invalid
    (the decision would be refused on reading, and the task would wait forever)."""
    state = fold(register("n1"), submit("t1", max_attempts=2), assign("t1", "n1"))
    apply(state, TaskFailed(task_id="t1", node_id="n1", attempt=1, error="e" * 4096, emitter="node:n1", ts=NOW), 4)
    decisions = CoordinatorCore(state).decide(now=NOW)
    assert decisions, "a retry was expected"
    for decision in decisions:
        check_outgoing(decision)


def test_readme_lists_the_rules_as_generated() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- rules:begin", 1)[1].split("-->", 1)[1].split("<!-- rules:end -->", 1)[0]
    assert block.strip() == rules_markdown().strip(), "README rules are stale: paste events.validation.rules_markdown()"
