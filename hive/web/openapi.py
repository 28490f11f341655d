"""The OpenAPI 3.1 document of the REST API (``GET /api/openapi.json``).

What the coordinator's structs encode to (a task's spec and detail, an open request) is
generated from the structs themselves by msgspec, so it cannot drift from the wire; the
rest (lists, pages, summaries) is written here, and a property-based checker
(tests/web/test_openapi_fuzz.py) calls every operation and matches each answer with it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from coordinator.api import OPERATOR_ACTIONS
from coordinator.state import OpenRequest, TaskView
from events.limits import ID_PATTERN
from events.task import TaskSpec
from hive.web.query import MAX_LIMIT, MAX_TEXT, SORT_KEYS, TASK_STATES

ID = {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": 64}
POSITION = {"type": "string", "pattern": r"\A[0-9]{1,18}(:[0-9]{1,18})?\Z"}
NUM = {"type": "number"}
INT = {"type": "integer"}
STR = {"type": "string"}
ANY_OBJ = {"type": "object"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props) if required is None else required}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_, GENERATED = msgspec.json.schema_components([TaskSpec, TaskView, OpenRequest], ref_template="#/components/schemas/{name}")

TASK_SUMMARY = _obj(
    {
        "task_id": STR,
        "name": _nullable(STR),
        "state": {"type": "string", "enum": list(TASK_STATES)},
        "executor": STR,
        "what": STR,
        "priority": INT,
        "attempt": INT,
        "max_attempts": INT,
        "node_id": _nullable(STR),
        "submitted_at": NUM,
        "updated_at": NUM,
        "duration_s": _nullable(NUM),
        "exit_code": _nullable(INT),
        "error": _nullable(STR),
        "reason": _nullable(STR),
        "waiting_on": {"type": "array", "items": STR},
        "submitted_by": _nullable(STR),
        "cancelled_by": _nullable(STR),
    }
)
RES = _obj({"cpu": NUM, "memory_gb": NUM, "gpu": INT, "gpu_memory_gb": NUM}, [])
NODE = _obj(
    {
        "node_id": STR,
        "state": STR,
        "hostname": STR,
        "executors": {"type": "array", "items": STR},
        "running": INT,
        "max_tasks": INT,
        "capacity": RES,
        "available": RES,
        "gpus": {"type": "array", "items": ANY_OBJ},
        "trust": NUM,
        "trust_group": STR,
        "completed": INT,
        "failed": INT,
        "live": _nullable(
            _obj(
                {
                    "at": NUM,
                    "running": INT,
                    "cpu_percent": NUM,
                    "memory_used_gb": NUM,
                    "gpus": {"type": "array", "items": ANY_OBJ},
                },
                ["at"],
            )
        ),
    },
    ["node_id", "state", "capacity", "available", "trust", "trust_group", "running", "max_tasks"],
)
EVENT = _obj(
    {
        "seq": INT,
        "stream": {"type": "string", "enum": ["audit", "telemetry"]},
        "subject": STR,
        "pos": POSITION,
        "type": STR,
        "ts": NUM,
        "event": _nullable(ANY_OBJ),
        "error": STR,
    },
    ["seq", "stream", "subject", "pos", "type", "ts", "event"],
)
TRUST = _obj(
    {
        "node_id": STR,
        "score": NUM,
        "group": STR,
        "initial": NUM,
        "changes": {
            "type": "array",
            "items": _obj({"seq": INT, "delta": NUM, "score": NUM, "task_id": _nullable(STR), "cause": STR}),
        },
    }
)
PERSON = _obj({"name": STR, "role": {"type": "string", "enum": ["operator", "client", "auditor"]}, "expires": INT})
SERIES = {
    "type": "array",
    "items": _obj({"t": NUM, "completed": INT, "failed": INT, "queued": _nullable(INT)}),
}
STATUS = _obj(
    {
        "user": PERSON,
        "nats": {"type": "boolean"},
        "coordinator": _nullable(ANY_OBJ),
        "coordinator_error": STR,
        "requests_open": _nullable(INT),
        "position": POSITION,
        "series": SERIES,
    }
)
ACCEPTED = _obj({"ok": {"type": "boolean"}, "seq": INT}, ["ok"])

SCHEMAS: dict[str, Any] = {
    **GENERATED,
    "Error": _obj({"error": STR}),
    "TaskSummary": TASK_SUMMARY,
    "TaskPage": _obj(
        {
            "total": INT,
            "offset": INT,
            "limit": INT,
            "truncated": {"type": "boolean"},
            "tasks": {"type": "array", "items": _ref("TaskSummary")},
        }
    ),
    "TaskDetail": _obj(
        {
            "task": _ref("TaskView"),
            "history": {"type": "array", "items": _ref("Event")},
            "requests": {"type": "array", "items": _ref("OpenRequest")},
        }
    ),
    "Node": NODE,
    "NodeDetail": _obj(
        {"node": _ref("Node"), "trust": _nullable(TRUST), "tasks": {"type": "array", "items": _ref("TaskSummary")}}
    ),
    "ClusterResources": _obj(
        {"capacity": RES, "allocated": RES, "available": RES, "nodes": INT, "active_nodes": INT}
    ),
    "Event": EVENT,
    "EventPage": _obj(
        {"events": {"type": "array", "items": _ref("Event")}, "next": POSITION, "skipped": {"type": "boolean"}}
    ),
    "Status": STATUS,
    "Person": PERSON,
    "Accepted": ACCEPTED,
    "Submit": {
        "type": "object",
        "properties": {"task_id": ID, "spec": _ref("TaskSpec")},
        "required": ["spec"],
        "additionalProperties": False,
    },
    "Cancel": {
        "type": "object",
        "properties": {"reason": {"type": "string", "maxLength": 500}},
        "additionalProperties": False,
    },
    "Guide": {
        "type": "object",
        "properties": {
            "task_id": ID,
            "request_id": ID,
            "action": {"type": "string", "enum": list(OPERATOR_ACTIONS)},
            "message": {"type": "string", "maxLength": 4096},
        },
        "required": ["task_id", "action"],
        "additionalProperties": False,
    },
    "Grant": {
        "type": "object",
        "properties": {
            "task_id": ID,
            "request_id": ID,
            "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 10_000_000},
            "message": {"type": "string", "maxLength": 4096},
        },
        "required": ["task_id"],
        "additionalProperties": False,
    },
    "Deny": {
        "type": "object",
        "properties": {"task_id": ID, "request_id": ID, "reason": {"type": "string", "maxLength": 4096}},
        "required": ["task_id"],
        "additionalProperties": False,
    },
}

JSON = "application/json"


def _answers(ok: str, *errors: int) -> dict[str, Any]:
    answers: dict[str, Any] = {"200": {"description": "OK", "content": {JSON: {"schema": _ref(ok)}}}}
    for code in (400, 401, *errors, 503):
        answers[str(code)] = {"description": "error", "content": {JSON: {"schema": _ref("Error")}}}
    return answers


def _op(summary: str, ok: str, *errors: int, params: list[dict[str, Any]] | None = None, body: str | None = None):
    op: dict[str, Any] = {"summary": summary, "responses": _answers(ok, *errors), "parameters": params or []}
    if body is not None:
        op["requestBody"] = {"required": body != "Cancel", "content": {JSON: {"schema": _ref(body)}}}
    return op


def _q(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _p(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": ID}


MIN_SEQ = _q("min_seq", {"type": "integer", "minimum": 0, "maximum": 2**53})


def _or_empty(schema: dict[str, Any]) -> dict[str, Any]:
    """A filter left empty (``?state=``, as an HTML form sends "any") means not given."""
    return {"anyOf": [schema, {"type": "string", "enum": [""]}]}


TASK_PARAMS = [
    _q("state", _or_empty({"type": "string", "enum": list(TASK_STATES)})),
    _q("node", _or_empty(ID)),
    _q("type", {"type": "string", "maxLength": 128}),
    _q("priority", _or_empty({"type": "integer", "minimum": -1_000_000, "maximum": 1_000_000})),
    _q("submitter", _or_empty(ID)),
    _q("q", {"type": "string", "maxLength": MAX_TEXT}),
    _q("sort", _or_empty({"type": "string", "enum": list(SORT_KEYS)})),
    _q("order", _or_empty({"type": "string", "enum": ["asc", "desc"]})),
    _q("offset", _or_empty({"type": "integer", "minimum": 0, "maximum": 10_000_000})),
    _q("limit", _or_empty({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT})),
    MIN_SEQ,
]
ARRAY = {"type": "array"}


def document() -> dict[str, Any]:
    nodes_list = _answers("Node")
    nodes_list["200"]["content"][JSON]["schema"] = {"type": "array", "items": _ref("Node")}
    requests_list = _answers("OpenRequest")
    requests_list["200"]["content"][JSON]["schema"] = {"type": "array", "items": _ref("OpenRequest")}
    act = (403, 404, 409, 413)
    return {
        "openapi": "3.1.0",
        "info": {"title": "HiveMind web API", "version": "1"},
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/me": {"get": _op("who is logged in", "Person")},
            "/api/status": {"get": _op("the overview: coordinator, leader, lag, chart", "Status")},
            "/api/tasks": {
                "get": _op("tasks: filtered, sorted, one page", "TaskPage", params=TASK_PARAMS),
                "post": _op("submit a task", "Accepted", *act, body="Submit"),
            },
            "/api/tasks/{task_id}": {
                "get": _op("one task, its history, its requests", "TaskDetail", 404, params=[_p("task_id"), MIN_SEQ])
            },
            "/api/stop_task/{task_id}": {
                "post": _op("cancel a task", "Accepted", *act, params=[_p("task_id")], body="Cancel")
            },
            "/api/nodes": {"get": {"summary": "nodes", "parameters": [], "responses": nodes_list}},
            "/api/nodes/{node_id}": {"get": _op("one node, its trust, its tasks", "NodeDetail", 404, params=[_p("node_id")])},
            "/api/nodes/{node_id}/drain": {"post": _op("drain a node", "Accepted", *act, params=[_p("node_id")])},
            "/api/resources": {"get": _op("capacity against allocation", "ClusterResources")},
            "/api/requests": {"get": {"summary": "open help and resource requests", "parameters": [], "responses": requests_list}},
            "/api/guide": {"post": _op("answer a help request", "Accepted", *act, body="Guide")},
            "/api/grant": {"post": _op("grant a resource request", "Accepted", *act, body="Grant")},
            "/api/deny": {"post": _op("deny a resource request", "Accepted", *act, body="Deny")},
            "/api/events": {
                "get": _op(
                    "logged events after a position",
                    "EventPage",
                    params=[
                        _q("after", POSITION),
                        _q("subject", {"type": "string", "maxLength": 256}),
                        _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    ],
                )
            },
        },
    }
