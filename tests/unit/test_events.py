from __future__ import annotations

import msgspec
import pytest

from events import BadEvent, TaskAssigned, TaskSpec, TaskSubmitted, decode, encode
from events.subjects import AUDIT_SUBJECTS, TELEMETRY_SUBJECTS, node_filter, subject_for, valid_id
from events.task import TaskProgress


def test_round_trip_and_type_tag() -> None:
    event = TaskSubmitted(task_id="t1", spec=TaskSpec(command=["echo", "hi"]), emitter="client:x")
    data = encode(event)
    assert msgspec.json.decode(data)["type"] == "TaskSubmitted"
    assert decode(data, subject_for(event)) == event


def test_subjects_put_task_and_node_under_one_prefix() -> None:
    assert subject_for(TaskSubmitted(task_id="t1", spec=TaskSpec(), emitter="client:ann")) == "hive.task.t1.submitted.by.ann"
    assert subject_for(TaskAssigned(task_id="t1", node_id="n1", attempt=1)) == "hive.task.t1.assigned.n1"
    assert subject_for(TaskProgress(task_id="t1", node_id="n1", attempt=1, fraction=0.5)) == "hive.task.t1.progress.n1"
    assert node_filter("n1") == ["hive.task.*.*.n1", "hive.node.n1.>", "hive.coordinator.leader_elected"]


def test_audit_and_telemetry_subjects_do_not_overlap() -> None:
    assert not set(AUDIT_SUBJECTS) & set(TELEMETRY_SUBJECTS)
    assert "hive.task.*.progress.*" in TELEMETRY_SUBJECTS and "hive.node.*.heartbeat" in TELEMETRY_SUBJECTS


@pytest.mark.parametrize(
    "data",
    [b"\x00garbage", b"[]", b'{"type": "Nope"}', b'{"type": "TaskSubmitted", "task_id": 1, "spec": {}}', b"{}"],
)
def test_bad_payloads_raise_bad_event(data: bytes) -> None:
    with pytest.raises(BadEvent):
        decode(data)


def test_event_on_another_tasks_subject_is_rejected() -> None:
    event = TaskSubmitted(task_id="t1", spec=TaskSpec(command=["true"]), emitter="client:x")
    with pytest.raises(BadEvent, match="does not belong"):
        decode(encode(event), "hive.task.t2.submitted")


def test_old_payloads_without_new_fields_still_decode() -> None:
    old = b'{"type":"TaskAssigned","id":"x","ts":1.0,"emitter":"coordinator","task_id":"t","node_id":"n","attempt":1}'
    event = decode(old)
    assert isinstance(event, TaskAssigned) and event.spec is None and event.gpus == []


@pytest.mark.parametrize(
    ("value", "ok"),
    [("node-1", True), ("a_b", True), ("a.b", False), ("*", False), ("", False), ("a\n", False), ("x" * 65, False)],
)
def test_ids_must_be_subject_tokens(value: str, ok: bool) -> None:
    assert valid_id(value) is ok


def test_defaults_stay_off_the_wire_and_readers_see_every_field() -> None:
    from events import TaskCompleted
    from events.codec import full_builtins

    spec = TaskSpec(executor="function", type="noop")
    sub = TaskSubmitted(task_id="t1", spec=spec, emitter="client:alice")
    done = TaskCompleted(task_id="t1", node_id="n1", attempt=1, emitter="node:n1", duration_s=0.5)
    for event in (sub, done):
        data = encode(event)
        assert decode(data, subject_for(event)) == event
        assert b"causation_id" not in data and b"stdout" not in data and b"null" not in data
    assert encode(sub).count(b'"spec":{"executor":"function","type":"noop"}') == 1
    # what people read has every field, in the struct's order, the nested spec's too
    shown = full_builtins(sub)
    assert list(shown) == ["type", "id", "ts", "emitter", "causation_id", "task_id", "spec"]
    assert shown["spec"] == msgspec.structs.asdict(spec) | {"resources": {"cpu": 0.0, "memory_gb": 0.0, "gpu": 0, "gpu_memory_gb": 0.0}}
    assert full_builtins(done)["stdout"] == "" and full_builtins(done)["outputs"] == []
    # a payload written before defaults were left out (every field present) decodes the same
    full = msgspec.json.encode(shown)
    assert decode(full, subject_for(sub)) == sub


def test_every_field_shown_has_its_own_lists_and_fills_a_nested_spec() -> None:
    from events.codec import full_builtins

    assigned = TaskAssigned(task_id="t1", node_id="n1", attempt=1, emitter="coordinator", spec=TaskSpec(command=["x"]))
    shown = full_builtins(assigned)
    assert shown["gpus"] == [] and shown["term"] == 0 and shown["spec"]["max_attempts"] == 1
    assert shown["spec"]["command"] == ["x"] and shown["spec"]["env"] == {}
    assert full_builtins(TaskAssigned(task_id="t1", node_id="n1", attempt=1, emitter="coordinator"))["spec"] is None
    shown["gpus"].append(3)
    shown["spec"]["env"]["A"] = "1"
    again = full_builtins(assigned)
    assert again["gpus"] == [] and again["spec"]["env"] == {}  # a default is never shared


def test_a_subject_filter_is_checked_as_nats_reads_it() -> None:
    from events.subjects import ALL_EVENTS, filter_problem, task_filter

    for good in (ALL_EVENTS, ">", "*", "hive.task.*.completed.*", "hive.node.n1.>", task_filter("t1")):
        assert filter_problem(good) is None, good
    for bad in ("", "hive..x", ".hive", "hive.", "hive.>.x", "hive.a*", "hive.>x", "hive. x", "hive.\tx"):
        assert filter_problem(bad), bad
