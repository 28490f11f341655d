"""Theory of operation: negotiation policies, pure functions of the projection and a request.

``answer_requests(state, now, emitter, config)`` looks at every open help or resource
request and returns the events that answer it, or nothing when the answer must wait
(a dependency still running, an operator asked). What each kind of problem gets is
configured in one place, ``PolicyConfig``:

* help ``missing_input`` -> ``retry`` on another node while attempts remain and another
  node could take it, else ``skip``;
* help ``dependency_not_ready`` (its ``details`` is the task id) -> no answer while that task
  runs, ``continue`` once it completed, ``fail`` if it failed or was cancelled;
* any other help -> ``ask_operator`` (answered later by ``hive guide``);
* a resource request -> grant from the node's free capacity; else free it by preempting
  strictly lower-priority tasks on the same node (they are requeued, not lost); else deny.
"""

from __future__ import annotations

import msgspec

from coordinator.scheduler import eligible
from coordinator.state import ON_NODE, ClusterState, NodeView, OpenRequest, TaskState, TaskView
from events.base import Event, Resources
from events.limits import clip
from events.negotiation import GuidanceAction, GuidanceGiven, ResourceDenied, ResourceGranted
from events.task import TaskReassigned

RESOURCE_NAMES = ("cpu", "memory_gb", "gpu", "gpu_memory_gb")


class PolicyConfig(msgspec.Struct, frozen=True, kw_only=True):
    help: dict[str, str] = msgspec.field(
        default_factory=lambda: {"missing_input": "retry_or_skip", "dependency_not_ready": "wait_for_dependency"}
    )
    default_help: str = "ask_operator"
    resources: str = "grant_or_preempt"  # or "ask_operator", "deny"


DEFAULT = PolicyConfig()
RESOURCE_POLICIES = ("grant_or_preempt", "ask_operator", "deny")


def answer_requests(state: ClusterState, now: float, emitter: str, config: PolicyConfig = DEFAULT) -> list[Event]:
    out: list[Event] = []
    for request in state.requests.values():
        if request.state != "open":
            continue
        task = state.tasks.get(request.task_id)
        if task is None or task.state not in ON_NODE or task.attempt != request.attempt:
            continue  # the attempt that asked is over; nobody waits for an answer
        if request.kind == "help":
            out += help_answer(state, task, request, config, emitter)
        else:
            out += resource_answer(state, task, request, config, emitter)
    return out


def _guidance(request: OpenRequest, action: GuidanceAction, message: str, emitter: str) -> GuidanceGiven:
    return GuidanceGiven(
        task_id=request.task_id,
        node_id=request.node_id,
        request_id=request.request_id,
        action=action,
        message=clip(message),
        emitter=emitter,
        by="policy",
    )


def help_answer(
    state: ClusterState, task: TaskView, request: OpenRequest, config: PolicyConfig, emitter: str
) -> list[Event]:
    rule = config.help.get(request.help_kind, config.default_help)
    if rule == "retry_or_skip":
        others = [n for n in state.nodes.values() if n.node_id != request.node_id and eligible(state, n, task)]
        if task.attempt < task.spec.max_attempts and others:
            return [_guidance(request, "retry", f"retry on another node: {request.problem}", emitter)]
        return [_guidance(request, "skip", f"skipped: {request.problem}", emitter)]
    if rule == "wait_for_dependency":
        dep_id = request.details.strip()
        dep_state = state.state_of(dep_id)
        if dep_state is None:
            return [_guidance(request, "fail", f"unknown dependency in: {request.problem}", emitter)]
        if dep_state == TaskState.COMPLETED:
            return [_guidance(request, "continue", f"dependency {dep_id} completed", emitter)]
        if dep_state in (TaskState.FAILED, TaskState.CANCELLED):
            return [_guidance(request, "fail", f"dependency {dep_id} {dep_state}", emitter)]
        return []  # keep waiting: asked again on every decision round
    if rule in ("retry", "skip", "fail", "continue"):
        return [_guidance(request, rule, request.problem, emitter)]  # type: ignore[arg-type]
    return [_guidance(request, "ask_operator", f"waiting for an operator: {request.problem}", emitter)]


def _free(node: NodeView) -> Resources:
    return node.available


def resource_answer(
    state: ClusterState, task: TaskView, request: OpenRequest, config: PolicyConfig, emitter: str
) -> list[Event]:
    node = state.nodes.get(request.node_id)
    want = Resources.of(request.resource, request.amount)

    def deny(reason: str) -> list[Event]:
        return [
            ResourceDenied(
                task_id=task.task_id,
                node_id=request.node_id,
                request_id=request.request_id,
                resource=request.resource,
                amount=request.amount,
                reason=clip(reason),
                emitter=emitter,
            )
        ]

    if node is None or request.resource not in RESOURCE_NAMES or request.amount <= 0:
        return deny(f"cannot grant {request.amount:g} {request.resource!r}")
    if config.resources == "ask_operator":
        return [
            _guidance(
                request, "ask_operator", f"waiting for an operator: {request.amount:g} {request.resource}", emitter
            )
        ]
    if config.resources == "deny":
        return deny("resource requests are denied by policy")
    if not want.fits_in(node.capacity - task.spec.resources - task.extra):
        return deny(
            f"node {node.node_id} has only {getattr(node.capacity, request.resource):g} {request.resource} in all"
        )
    grant = ResourceGranted(
        task_id=task.task_id,
        node_id=node.node_id,
        request_id=request.request_id,
        resource=request.resource,
        amount=request.amount,
        emitter=emitter,
    )
    if want.fits_in(_free(node)):
        return [msgspec.structs.replace(grant, message="granted from free capacity")]
    victims = preemption_victims(state, node, task, want)
    if victims is None:
        return deny(
            f"node {node.node_id} has {getattr(_free(node), request.resource):g} {request.resource} free "
            "and no lower-priority task to preempt"
        )
    reassigns: list[Event] = [
        TaskReassigned(
            task_id=v.task_id,
            attempt=v.attempt,
            from_node=node.node_id,
            reason=f"preempted for higher-priority task {task.task_id}",
            emitter=emitter,
        )
        for v in victims
    ]
    freed = ", ".join(v.task_id for v in victims)
    return [
        *reassigns,
        msgspec.structs.replace(grant, preempted=[v.task_id for v in victims], message=f"preempted {freed}"),
    ]


def preemption_victims(state: ClusterState, node: NodeView, task: TaskView, want: Resources) -> list[TaskView] | None:
    """The fewest strictly lower-priority tasks on ``node`` (lowest priority, newest first)
    whose release makes ``want`` fit; None when even all of them would not."""
    candidates = sorted(
        (
            t
            for a in state.allocations.values()
            if a.node_id == node.node_id
            if (t := state.tasks[a.task_id]).spec.priority < task.spec.priority
        ),
        key=lambda t: (t.spec.priority, -t.order),
    )
    free = _free(node)
    chosen = []
    for victim in candidates:
        if want.fits_in(free):
            break
        free = free + state.allocations[victim.task_id].resources
        chosen.append(victim)
    return chosen if want.fits_in(free) else None
