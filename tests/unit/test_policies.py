from __future__ import annotations

from coordinator.policies import PolicyConfig, answer_requests
from coordinator.projection import apply
from events import HelpRequested, ResourceRequested, Resources
from events.negotiation import GuidanceGiven, ResourceDenied, ResourceGranted
from events.task import TaskReassigned
from tests.unit.factories import assign, complete, fold, register, submit


def help_event(task: str, node: str, kind: str, details: str = "", attempt: int = 1) -> HelpRequested:
    return HelpRequested(
        task_id=task, node_id=node, attempt=attempt, request_id=f"r-{task}", problem="p", kind=kind, details=details
    )


def resource_event(task: str, node: str, name: str, amount: float) -> ResourceRequested:
    return ResourceRequested(
        task_id=task, node_id=node, attempt=1, request_id=f"r-{task}", resource=name, amount=amount
    )


def answers(state, config: PolicyConfig | None = None) -> list:
    return answer_requests(state, 0.0, "coordinator", config or PolicyConfig())


def test_missing_input_retries_elsewhere_while_attempts_remain() -> None:
    state = fold(register("n1"), register("n2"), submit("t", max_attempts=2), assign("t", "n1"))
    apply(state, help_event("t", "n1", "missing_input"))
    [g] = answers(state)
    assert isinstance(g, GuidanceGiven) and g.action == "retry"
    apply(state, g)
    assert state.reassign_wanted == {"t": 1}


def test_missing_input_skips_without_another_node_or_attempts() -> None:
    state = fold(register("n1"), submit("t", max_attempts=2), assign("t", "n1"), help_event("t", "n1", "missing_input"))
    assert [g.action for g in answers(state)] == ["skip"]


def test_dependency_not_ready_waits_then_continues() -> None:
    state = fold(
        register("n1"),
        submit("dep"),
        submit("t"),
        assign("dep", "n1"),
        assign("t", "n1"),
        help_event("t", "n1", "dependency_not_ready", details="dep"),
    )
    assert answers(state) == []
    apply(state, complete("dep", "n1"))
    [g] = answers(state)
    assert g.action == "continue"


def test_unknown_kind_asks_an_operator_and_stays_blocked() -> None:
    state = fold(register("n1"), submit("t"), assign("t", "n1"), help_event("t", "n1", "weird"))
    [g] = answers(state)
    assert g.action == "ask_operator"
    apply(state, g)
    assert state.requests["r-t"].state == "waiting_operator" and state.tasks["t"].blocked_on == "r-t"
    assert answers(state) == []


def test_resource_granted_from_free_capacity() -> None:
    state = fold(
        register("n1", memory_gb=8),
        submit("t", resources=Resources(memory_gb=2)),
        assign("t", "n1"),
        resource_event("t", "n1", "memory_gb", 4),
    )
    [g] = answers(state)
    assert isinstance(g, ResourceGranted) and g.amount == 4
    apply(state, g)
    assert state.nodes["n1"].allocated.memory_gb == 6
    state.validate()


def test_resource_preempts_strictly_lower_priority_only() -> None:
    state = fold(
        register("n1", memory_gb=8),
        submit("low", priority=1, resources=Resources(memory_gb=5)),
        submit("same", priority=5, resources=Resources(memory_gb=1)),
        submit("t", priority=5, resources=Resources(memory_gb=1)),
        assign("low", "n1"),
        assign("same", "n1"),
        assign("t", "n1"),
        resource_event("t", "n1", "memory_gb", 5),
    )
    out = answers(state)
    assert [type(e).__name__ for e in out] == ["TaskReassigned", "ResourceGranted"]
    assert isinstance(out[0], TaskReassigned) and out[0].task_id == "low"
    for e in out:
        apply(state, e)
    state.validate()
    assert state.nodes["n1"].allocated.memory_gb == 7


def test_resource_denied_when_nothing_can_free_it() -> None:
    state = fold(
        register("n1", memory_gb=8),
        submit("t", resources=Resources(memory_gb=1)),
        assign("t", "n1"),
        resource_event("t", "n1", "memory_gb", 64),
    )
    [d] = answers(state)
    assert isinstance(d, ResourceDenied) and "in all" in d.reason


def test_core_holds_a_preempting_grant_while_a_victim_is_busy() -> None:
    from coordinator.core import CoordinatorCore

    state = fold(
        register("n1", memory_gb=8),
        submit("low", priority=1, resources=Resources(memory_gb=6)),
        submit("t", priority=5, resources=Resources(memory_gb=1)),
        assign("low", "n1"),
        assign("t", "n1"),
        resource_event("t", "n1", "memory_gb", 4),
    )
    core = CoordinatorCore(state)
    core.keys["low"] = "some-decision-in-flight"  # e.g. a cancel of the victim not yet back
    decided = core.decide(now=1e9)
    assert not [e for e in decided if isinstance(e, (ResourceGranted, TaskReassigned))]
    del core.keys["low"]
    decided = core.decide(now=1e9 + 1)
    assert [type(e).__name__ for e in decided if isinstance(e, (ResourceGranted, TaskReassigned))] == [
        "TaskReassigned",
        "ResourceGranted",
    ]
