"""The REST API: what every page shows, as JSON, and the actions, as POSTs.

Reads go through the service's reader connection (the same hiveapi verbs as the CLI);
actions through the acting person's own connection (``Actors``). Every handler refuses
bad input with a one-line JSON error and a 4xx before anything is written (``app.py``
maps the exceptions), so a fuzzer finds no 500.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import msgspec
from aiohttp import web
from msgspec import Meta
from nats.js.errors import NotFoundError

from coordinator.api import OPERATOR_ACTIONS
from edge.errors import Denied, HiveError, NotFound
from events.codec import BadEvent, full_builtins
from events.limits import Amount, Id, Line
from events.subjects import ALL_EVENTS, RESULTS_BUCKET, subject_for, valid_id
from events.task import TaskSpec
from events.validation import too_deep
from hive.client import HiveClient
from hive.web import keys
from hive.web.auth import Person
from hive.web.query import BadQuery, Position, TaskQuery, valid_pattern
from node.results import object_name

T = TypeVar("T")
MAX_BODY = 2 * 1024 * 1024
Action = Literal[OPERATOR_ACTIONS]  # type: ignore[valid-type]


class SubmitBody(msgspec.Struct, forbid_unknown_fields=True):
    spec: TaskSpec
    task_id: Id | None = None


class CancelBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(max_length=500)] = "cancelled from the web"


class GuideBody(msgspec.Struct, forbid_unknown_fields=True):
    task_id: Id
    action: Action
    request_id: Id | None = None
    message: Line = ""


class GrantBody(msgspec.Struct, forbid_unknown_fields=True):
    task_id: Id
    request_id: Id | None = None
    amount: Amount | None = None
    message: Line = ""


class DenyBody(msgspec.Struct, forbid_unknown_fields=True):
    task_id: Id
    request_id: Id | None = None
    reason: Line = ""


class Conflict(HiveError):
    """The action does not apply to the thing as it is now (a task already finished)."""


def person(request: web.Request) -> Person:
    return request[keys.PERSON]


def reader(request: web.Request) -> HiveClient:
    return request.app[keys.HUB].reader


def _id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not valid_id(value):
        raise BadQuery(f"invalid {name} {value[:80]!r}: letters, digits, '-' and '_' (1 to 64)")
    return value


async def _body(request: web.Request, kind: type[T], optional: bool = False) -> T:
    data = await request.read()
    if not data.strip() and optional:
        data = b"{}"
    if len(data) > MAX_BODY or too_deep(data):
        raise BadQuery(f"request body over {MAX_BODY} bytes or nested too deep")
    try:
        body = msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise BadQuery(f"invalid body: {exc}") from None
    except msgspec.DecodeError:
        raise BadQuery("the body must be a JSON object") from None
    for name in ("task_id", "request_id"):
        value = getattr(body, name, None)
        if value is not None and not valid_id(value):
            raise BadQuery(f"invalid {name} {value[:80]!r}: letters, digits, '-' and '_' (1 to 64)")
    return body


async def _min_seq(request: web.Request) -> int:
    """A read after one's own write waits for it (no further than the log goes)."""
    raw = request.query.get("min_seq", "")
    if not raw:
        return 0
    if not raw.isdigit() or len(raw) > 16:
        raise BadQuery("min_seq must be a non-negative integer")
    return await request.app[keys.HUB].log_end(int(raw))


def _may_act(request: web.Request, operator: bool = False) -> Person:
    who = person(request)
    if not who.can_act or (operator and not who.is_operator):
        need = "an operator" if operator else "a client or an operator"
        raise Denied(f"{who.name} is {'an' if who.role == 'auditor' else 'a'} {who.role}: this needs {need}")
    return who


async def _actor(request: web.Request, who: Person) -> HiveClient:
    return await request.app[keys.ACTORS].get(who)


def _done(client: HiveClient, **extra: Any) -> web.Response:
    return web.json_response({"ok": True, "seq": client.last_seq, **extra})


# -- reads --------------------------------------------------------------------------------


async def me(request: web.Request) -> web.Response:
    who = person(request)
    return web.json_response({"name": who.name, "role": who.role, "expires": who.expires})


async def status(request: web.Request) -> web.Response:
    hub = request.app[keys.HUB]
    await hub.refresh_stats()
    try:
        open_requests: int | None = len(await hub.reader.request("requests", timeout=2.0))
    except HiveError:
        open_requests = None
    who = person(request)
    return web.json_response(
        {
            "user": {"name": who.name, "role": who.role, "expires": who.expires},
            "nats": hub.connected,
            "coordinator": hub.stats,
            "coordinator_error": hub.stats_error,
            "requests_open": open_requests,
            "position": str(hub.pos),
            "series": hub.series(),
        }
    )


async def tasks(request: web.Request) -> web.Response:
    query = TaskQuery.parse(dict(request.query))
    return web.json_response(await request.app[keys.HUB].task_page(query, await _min_seq(request)))


def history_item(seq: int, stream: str, event: Any) -> dict[str, Any]:
    audit = stream != "HIVE_TELEMETRY"
    return {
        "seq": seq,
        "stream": "audit" if audit else "telemetry",
        "subject": subject_for(event),
        "pos": str(Position(seq, 0) if audit else Position(0, seq)),
        "type": type(event).__name__,
        "ts": event.ts,
        "event": full_builtins(event),
    }


async def task_detail(request: web.Request) -> web.Response:
    task_id = _id(request, "task_id")
    hive = reader(request)
    body: dict[str, Any] = {"task_id": task_id}
    min_seq = await _min_seq(request)
    if min_seq:
        body["min_seq"] = min_seq
    task = await hive.request("task", body)
    history = [history_item(seq, stream, event) for seq, stream, event in await hive.history(task_id)]
    requests = [r for r in await hive.request("requests", {"all": True}) if r.get("task_id") == task_id]
    return web.json_response({"task": task, "history": history, "requests": requests})


async def result_file(request: web.Request) -> web.StreamResponse:
    task_id = _id(request, "task_id")
    name = request.match_info["name"]
    task = await reader(request).task(task_id)
    if name not in {o["name"] for o in task.get("outputs") or []}:
        raise NotFound(f"task {task_id} has no result file {name[:200]!r}")
    try:
        store = await reader(request).js.object_store(RESULTS_BUCKET)
        found = await store.get(object_name(task_id, name))
    except NotFoundError:
        raise NotFound(f"result file {name[:200]!r} is not in the store (expired?)") from None
    filename = name.rsplit("/", 1)[-1].replace('"', "")
    return web.Response(
        body=found.data or b"",
        content_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def nodes(request: web.Request) -> web.Response:
    return web.json_response(await reader(request).nodes())


async def node_detail(request: web.Request) -> web.Response:
    node_id = _id(request, "node_id")
    hive = reader(request)
    found = [n for n in await hive.nodes() if n["node_id"] == node_id]
    if not found:
        raise NotFound(f"unknown node {node_id}")
    try:
        trust = await hive.request("trust", {"node_id": node_id})
    except HiveError:
        trust = None
    listed = await request.app[keys.HUB].task_list()
    mine = [t for t in listed if t.get("node_id") == node_id and t["state"] in ("assigned", "running")]
    return web.json_response({"node": found[0], "trust": trust, "tasks": mine})


async def resources(request: web.Request) -> web.Response:
    names = ("cpu", "memory_gb", "gpu", "gpu_memory_gb")
    listed = await reader(request).nodes()
    active = [n for n in listed if n["state"] == "active"]
    capacity = {k: sum(n["capacity"].get(k, 0) for n in active) for k in names}
    available = {k: sum(n["available"].get(k, 0) for n in active) for k in names}
    allocated = {k: capacity[k] - available[k] for k in names}
    for totals in (capacity, available, allocated):
        totals["gpu"] = int(totals["gpu"])
    body = {"capacity": capacity, "allocated": allocated, "available": available}
    return web.json_response(body | {"nodes": len(listed), "active_nodes": len(active)})


async def requests_(request: web.Request) -> web.Response:
    return web.json_response(await reader(request).request("requests"))


async def events(request: web.Request) -> web.Response:
    hub = request.app[keys.HUB]
    pattern = request.query.get("subject") or ALL_EVENTS
    if not valid_pattern(pattern):
        raise BadQuery("subject must be a NATS subject or wildcard, e.g. hive.task.*.completed or hive.>")
    raw_limit = request.query.get("limit") or "200"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
        raise BadQuery("limit must be between 1 and 1000")
    limit = int(raw_limit)
    after = Position.parse(request.query.get("after"))
    if after is None:
        return web.json_response({"events": hub.tail(pattern, limit), "next": str(hub.pos), "skipped": False})
    found, skipped = await hub.since(pattern, after)
    now = str(hub.pos)
    page_ = found[:limit]
    following = page_[-1]["pos"] if len(found) > limit else now
    return web.json_response({"events": page_, "next": following, "skipped": skipped})


# -- actions ------------------------------------------------------------------------------


async def submit(request: web.Request) -> web.Response:
    who = _may_act(request)
    body = await _body(request, SubmitBody)
    client = await _actor(request, who)
    try:
        task_id = await client.submit(body.spec, body.task_id)
    except BadEvent as exc:
        raise BadQuery(str(exc)) from None
    return _done(client, task_id=task_id)


async def stop_task(request: web.Request) -> web.Response:
    who = _may_act(request)
    task_id = _id(request, "task_id")
    body = await _body(request, CancelBody, optional=True)
    task = await reader(request).task(task_id)
    if not who.is_operator and task.get("submitted_by") != who.name:
        raise Denied(f"{who.name} may cancel only their own tasks ({task_id} is {task.get('submitted_by')}'s)")
    if task["state"] in ("completed", "failed", "cancelled"):
        raise Conflict(f"task {task_id} is already {task['state']}")
    client = await _actor(request, who)
    await client.cancel(task_id, body.reason)
    return _done(client, task_id=task_id)


async def drain(request: web.Request) -> web.Response:
    who = _may_act(request, operator=True)
    node_id = _id(request, "node_id")
    client = await _actor(request, who)
    await client.drain(node_id)
    return _done(client, node_id=node_id)


async def _answer(request: web.Request, verb: str, kind: type[Any]) -> web.Response:
    who = _may_act(request, operator=True)
    body = msgspec.to_builtins(await _body(request, kind))
    client = await _actor(request, who)
    reply = await client.request(verb, {k: v for k, v in body.items() if v is not None})
    return _done(client, task_id=reply.get("task_id"), event_id=reply.get("event_id"))


async def guide(request: web.Request) -> web.Response:
    return await _answer(request, "guide", GuideBody)


async def grant(request: web.Request) -> web.Response:
    return await _answer(request, "grant", GrantBody)


async def deny(request: web.Request) -> web.Response:
    return await _answer(request, "deny", DenyBody)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/me", me)
    r.add_get("/api/status", status)
    r.add_get("/api/tasks", tasks)
    r.add_post("/api/tasks", submit)
    r.add_get("/api/tasks/{task_id}", task_detail)
    r.add_get("/api/tasks/{task_id}/files/{name:.+}", result_file)
    r.add_post("/api/stop_task/{task_id}", stop_task)
    r.add_get("/api/nodes", nodes)
    r.add_get("/api/nodes/{node_id}", node_detail)
    r.add_post("/api/nodes/{node_id}/drain", drain)
    r.add_get("/api/resources", resources)
    r.add_get("/api/requests", requests_)
    r.add_post("/api/guide", guide)
    r.add_post("/api/grant", grant)
    r.add_post("/api/deny", deny)
    r.add_get("/api/events", events)
