"""The REST API with real data (a real cluster, ``hive web`` as a subprocess): answers
checked against the OpenAPI document, bad input as one-line 4xx, logins that stop at once."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
import schemathesis

from edge.auth import issue_user, revoke_user
from edge.config import auth_dir
from hive.web.auth import load_secret, sign
from tests.web.conftest import Web

pytestmark = pytest.mark.slow


def call(web: Web, path: str, role: str | None = "operator", method: str = "GET", body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    sent = dict(headers or {})
    if role is not None:
        sent.update(web.headers(role))
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    request = urllib.request.Request(web.url + path, method=method, headers=sent, data=data)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            raw = response.read()
            return response.status, json.loads(raw) if response.headers.get_content_type() == "application/json" else raw
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def document(web: Web) -> Any:
    return schemathesis.openapi.from_url(f"{web.url}/api/openapi.json")


def conforms(document: Any, web: Web, method: str, path: str, role: str = "operator", **parts: Any) -> Any:
    """Call one operation and check the answer against the document (schema, status, type)."""
    case = document[path][method].Case(**parts)
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    response = case.call_and_validate(base_url=web.url, headers=web.headers(role), checks=checks)
    return response.json()


def wait_for(web: Web, task_id: str, state: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = call(web, f"/api/tasks/{task_id}")
        if code == 200 and body["task"]["state"] == state:
            return body
        assert time.monotonic() < deadline, (code, body)
        time.sleep(0.1)


def test_submit_read_and_download_a_result_file(web: Web, document: Any) -> None:
    spec = {"executor": "process", "command": ["sh", "-c", "mkdir -p out && printf hello > out/greeting.txt"]}
    code, reply = call(web, "/api/tasks", "client", "POST", {"spec": spec, "task_id": "web-file-1"})
    assert code == 200 and reply["task_id"] == "web-file-1" and reply["seq"] > 0, reply
    wait_for(web, "web-file-1", "completed")
    detail = conforms(document, web, "GET", "/api/tasks/{task_id}", path_parameters={"task_id": "web-file-1"})
    assert detail["task"]["submitted_by"] == "alice"  # acted as the person, not as the service
    assert [h["type"] for h in detail["history"]][:2] == ["TaskSubmitted", "TaskAssigned"]
    assert [o["name"] for o in detail["task"]["outputs"]] == ["greeting.txt"]
    code, data = call(web, "/api/tasks/web-file-1/files/greeting.txt", "auditor")
    assert code == 200 and data == b"hello"
    code, body = call(web, "/api/tasks/web-file-1/files/..%2Fsecret", "auditor")
    assert code == 404 and "no result file" in body["error"]
    page = conforms(document, web, "GET", "/api/tasks", query={"submitter": "alice", "state": "completed", "q": "greeting"})
    assert page["total"] >= 1 and any(t["task_id"] == "web-file-1" for t in page["tasks"])


def test_reads_match_the_document(web: Web, document: Any) -> None:
    status = conforms(document, web, "GET", "/api/status", "auditor")
    assert status["coordinator"]["leader"]["id"] == "coordinator" and status["nats"] is True
    nodes = conforms(document, web, "GET", "/api/nodes")
    assert [n["node_id"] for n in nodes] == ["w1"]
    node = conforms(document, web, "GET", "/api/nodes/{node_id}", path_parameters={"node_id": "w1"})
    assert node["trust"]["node_id"] == "w1"
    resources = conforms(document, web, "GET", "/api/resources")
    assert resources["active_nodes"] == 1 and resources["capacity"]["cpu"] > 0
    conforms(document, web, "GET", "/api/requests")
    events = conforms(document, web, "GET", "/api/events", query={"after": "0", "limit": 5})
    assert len(events["events"]) == 5
    for stream in ("audit", "telemetry"):  # each stream from its start, in its own order
        seqs = [e["seq"] for e in events["events"] if e["stream"] == stream]
        assert seqs == list(range(1, len(seqs) + 1)), events
    following = conforms(document, web, "GET", "/api/events", query={"after": events["next"], "subject": "hive.node.>"})
    assert all(e["subject"].startswith("hive.node.") for e in following["events"])


def test_paging_and_sorting(web: Web) -> None:
    for i in range(7):
        spec = {"executor": "function", "type": "noop", "priority": i, "name": f"page-{i}"}
        code, reply = call(web, "/api/tasks", "client", "POST", {"spec": spec, "task_id": f"page-{i}"})
        assert code == 200
    # read-your-writes: the list includes what this caller's last write made
    code, first = call(web, f"/api/tasks?q=page-&sort=priority&order=desc&limit=3&min_seq={reply['seq']}")
    assert code == 200 and first["total"] == 7
    assert [t["task_id"] for t in first["tasks"]] == ["page-6", "page-5", "page-4"]
    _, second = call(web, "/api/tasks?q=page-&sort=priority&order=desc&limit=3&offset=3")
    assert [t["task_id"] for t in second["tasks"]] == ["page-3", "page-2", "page-1"]
    wait_for(web, "page-6", "completed")
    _, by_priority = call(web, "/api/tasks?priority=2&type=noop")
    assert [t["task_id"] for t in by_priority["tasks"]] == ["page-2"]


@pytest.fixture(scope="module")
def finished(web: Web) -> str:
    """A task that has completed (for the actions that no longer apply)."""
    spec = {"executor": "function", "type": "noop"}
    assert call(web, "/api/tasks", "client", "POST", {"spec": spec, "task_id": "web-done-1"})[0] == 200
    wait_for(web, "web-done-1", "completed")
    return "web-done-1"


@pytest.mark.parametrize(
    ("method", "path", "body", "words"),
    [
        ("GET", "/api/tasks?state=sleeping", None, "state must be one of"),
        ("GET", "/api/tasks?limit=100000", None, "limit must be between"),
        ("GET", "/api/tasks?colour=red", None, "unknown query parameter"),
        ("GET", "/api/tasks/bad%20id", None, "invalid task_id"),
        ("GET", "/api/tasks/nope", None, "unknown task"),
        ("GET", "/api/events?after=x", None, "position"),
        ("GET", "/api/events?subject=hive.>.x", None, "subject must be"),
        ("POST", "/api/tasks", b"{not json", "JSON object"),
        ("POST", "/api/tasks", {"spec": {"executor": "process"}}, "command"),
        ("POST", "/api/tasks", {"spec": {}, "extra": 1}, "invalid body"),
        ("POST", "/api/tasks", {"spec": {"executor": "function", "type": "noop", "after": ["missing-dep"]}}, "missing-dep"),
        ("POST", "/api/guide", {"task_id": "nope", "action": "explode"}, "invalid body"),
        ("POST", "/api/grant", {"task_id": "{done}"}, "no open resource request"),
        ("POST", "/api/deny", {"task_id": "{done}", "reason": "x" * 5000}, "invalid body"),
        ("POST", "/api/nodes/ghost/drain", None, "unknown node"),
        ("POST", "/api/stop_task/{done}", None, "already completed"),
    ],
)
def test_bad_input_is_one_line_4xx_and_changes_nothing(
    web: Web, finished: str, method: str, path: str, body: Any, words: str
) -> None:
    path = path.replace("{done}", finished)
    if isinstance(body, dict):
        body = {k: v.replace("{done}", finished) if isinstance(v, str) else v for k, v in body.items()}
    before = call(web, "/api/status")[1]["position"]
    code, reply = call(web, path, "operator", method, body)
    assert 400 <= code < 500, (code, reply)
    assert words in reply["error"] and "\n" not in reply["error"], reply
    time.sleep(0.2)
    after = call(web, "/api/status")[1]["position"]
    assert after.split(":")[0] == before.split(":")[0]  # nothing new in the audit log


def test_logins_tampered_expired_revoked(web: Web) -> None:
    store = auth_dir(web.server.directory)
    secret = load_secret(store)
    good = web.tokens["client"]
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    cases = {
        "no token": {},
        "tampered": {"Authorization": f"Bearer {tampered}"},
        "expired": {"Authorization": f"Bearer {sign(secret, 'alice', -1)}"},
        "nobody": {"Authorization": f"Bearer {sign(secret, 'mallory', 60)}"},
        "a node": {"Authorization": f"Bearer {sign(secret, 'w1', 60)}"},
    }
    for name, headers in cases.items():
        code, reply = call(web, "/api/me", None, headers=headers)
        assert code == 401 and reply["error"], (name, code, reply)
    issue_user(store, "operator", "temp-op")
    token = sign(secret, "temp-op", 600)
    bearer = {"Authorization": f"Bearer {token}"}
    assert call(web, "/api/me", None, headers=bearer) == (200, {"name": "temp-op", "role": "operator", "expires": json.loads(
        __import__("base64").urlsafe_b64decode(token.split(".")[0] + "==")
    )["exp"]})
    revoke_user(store, "temp-op")
    code, reply = call(web, "/api/me", None, headers=bearer)
    assert code == 401 and "revoked" in reply["error"]  # at once: the role is read on each request


def test_health_and_metrics(web: Web) -> None:
    with urllib.request.urlopen(f"{web.url}/health", timeout=10) as response:
        health = json.loads(response.read())
    assert health["ok"] is True and set(health["checks"]) == {"nats", "coordinator", "lag"}
    with urllib.request.urlopen(f"{web.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    assert "hive_web_requests_total" in text and "hive_web_sse_clients" in text and "hive_web_nats_connected 1.0" in text
