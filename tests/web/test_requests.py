"""Grant and deny through the web, on requests that really wait for an operator: the
coordinator runs with ``--resource-policy ask_operator``, so a task's request for more
memory stays open until someone answers it on the Requests page (here: its REST calls)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.web.conftest import Web, running_web
from tests.web.test_api import call

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def asking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    yield from running_web(tmp_path_factory.mktemp("web-ask"), "--resource-policy", "ask_operator")


def open_request(web: Web, task_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, requests = call(web, "/api/requests")
        assert code == 200, requests
        for request in requests:
            if request["task_id"] == task_id and request["state"] != "answered":
                return request
        time.sleep(0.2)
    raise AssertionError(f"no open request of {task_id}")


def finished(web: Web, task_id: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        code, body = call(web, f"/api/tasks/{task_id}")
        if code == 200 and body["task"]["state"] in ("completed", "failed"):
            return body["task"]
        time.sleep(0.2)
    raise AssertionError(f"{task_id} did not finish")


def test_grant_and_deny_answer_waiting_requests(asking: Web) -> None:
    web = asking
    spec = {"executor": "function", "type": "test_needs_memory", "payload": {"gb": 1}}
    submitted = [call(web, "/api/tasks", method="POST", body={"spec": spec}) for _ in range(2)]
    assert all(code in (200, 201) for code, _ in submitted), submitted
    granted, denied = (body["task_id"] for _, body in submitted)
    first, second = open_request(web, granted), open_request(web, denied)
    body = {"task_id": granted, "request_id": first["request_id"]}
    code, _ = call(web, "/api/grant", role="auditor", method="POST", body=body)
    assert code == 403  # a read-only login may not answer
    code, answer = call(web, "/api/grant", method="POST", body=body)
    assert code == 200, answer
    body = {"task_id": denied, "request_id": second["request_id"], "reason": "not today"}
    code, answer = call(web, "/api/deny", method="POST", body=body)
    assert code == 200, answer
    done = finished(web, granted)
    assert done["state"] == "completed" and done["result"]["granted"] == 1.0, done
    refused = finished(web, denied)
    assert refused["state"] == "failed" and "not today" in refused["error"], refused
