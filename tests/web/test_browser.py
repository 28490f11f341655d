"""The dashboard in a real browser (Debian chromium through Playwright) against a real
cluster: what each page shows, that it changes live, and that the buttons act."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import hive
from tests.web.conftest import Web

pytestmark = pytest.mark.slow
DOCS = Path(__file__).resolve().parents[2] / "docs"


def submit(web: Web, role: str, *args: str) -> str:
    creds = web.server.creds(role, web.names[role])
    done = hive(web.server, "submit", "--json", *args, input_env={"HIVE_CREDS": str(creds)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["task_id"]


def api(web: Web, path: str, role: str = "operator", method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        web.url + path, method=method, headers=headers if headers is not None else web.headers(role), data=b"{}" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_state(web: Web, task_id: str, state: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = api(web, f"/api/tasks/{task_id}")
        if code == 200 and body["task"]["state"] == state:
            return body["task"]
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


@pytest.fixture
def page(browser: Any, web: Web) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


def login(page: Any, web: Web, role: str, route: str = "#/") -> None:
    page.goto(web.login(role))
    page.wait_for_selector("#who:has-text('(')")
    if route != "#/":
        page.goto(f"{web.url}/{route}")


def test_overview_shows_the_cluster(page: Any, web: Web) -> None:
    login(page, web, "operator")
    page.wait_for_selector("#node-states .s-active")
    assert "1" in page.inner_text("#node-states .s-active")
    assert "coordinator" in page.inner_text("#leader")
    assert "events behind the log" in page.inner_text("#lag")
    assert page.locator("svg.chart").count() == 1
    # the token is in a cookie now, not the address bar (nor a Referer)
    assert "token=" not in page.url
    cookie = next(c for c in page.context.cookies() if c["name"] == "hive_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_a_cli_task_appears_and_its_progress_moves_live(page: Any, web: Web) -> None:
    login(page, web, "client", "#/tasks")
    page.wait_for_selector("#tasks")
    task_id = submit(web, "client", "--type", "test_progress", "--payload", '{"steps": 8, "delay": 0.5}')
    page.wait_for_selector(f"tr[data-task='{task_id}']")  # no reload: the list follows the log
    page.goto(f"{web.url}/#/tasks/{task_id}")
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(seen) < 3:
        bar = page.query_selector(f".progress[data-task='{task_id}']")
        if bar is not None:
            fraction = bar.get_attribute("data-fraction") or "0"
            if 0 < float(fraction) < 1:
                seen.add(fraction)
        time.sleep(0.05)
    assert len(seen) >= 3, seen  # the bar moved through several values while running
    page.wait_for_selector("h2 .s-completed", timeout=20_000)


def test_the_cancel_button_cancels_a_running_task(page: Any, web: Web) -> None:
    task_id = submit(web, "client", "--type", "test_hold", "--payload", '{"seconds": 60}')
    wait_state(web, task_id, "running")
    login(page, web, "operator", f"#/tasks/{task_id}")
    page.click(f"button.cancel[data-task='{task_id}']")
    page.wait_for_selector("h2 .s-cancelled", timeout=20_000)
    task = wait_state(web, task_id, "cancelled")
    assert task["cancelled_by"] == "olga" and task["submitted_by"] == "alice"  # acted as the person


def test_the_events_page_streams_and_resumes_after_a_reload(page: Any, web: Web) -> None:
    login(page, web, "operator", "#/events")
    page.wait_for_selector("#events")
    first = submit(web, "client", "--type", "noop")
    page.wait_for_selector(f"#events td.subject:has-text('hive.task.{first}.submitted')")
    page.goto("about:blank")  # away: the page remembers where it was (sessionStorage)
    second = submit(web, "client", "--type", "noop")
    wait_state(web, second, "completed")
    page.goto(f"{web.url}/#/events")
    page.wait_for_selector(f"#events td.subject:has-text('hive.task.{second}.submitted')")
    page.wait_for_selector(f"#events td.subject:has-text('hive.task.{second}.completed')")
    # resumed after what it had shown: the first task's events are not sent again
    assert page.locator(f"#events td.subject:has-text('hive.task.{first}.submitted')").count() == 0
    # a subject filter narrows the stream
    page.fill("#subject", f"hive.task.{second}.>")
    page.press("#subject", "Enter")
    page.wait_for_selector(f"#events td.subject:has-text('hive.task.{second}.')")
    page.click("#pause")
    assert page.inner_text("#pause") == "Resume"


def test_an_operator_answers_a_help_request_from_the_requests_page(page: Any, web: Web) -> None:
    task_id = submit(web, "client", "--type", "test_ask_operator")
    login(page, web, "operator", "#/requests")
    row = f"#requests tr:has-text('{task_id}')"
    page.wait_for_selector(row)  # appears live: the page was open before the request came
    page.select_option(f"{row} select.action", "continue")
    page.fill(f"{row} input.message", "carry on")
    page.click(f"{row} button.guide")
    task = wait_state(web, task_id, "completed")
    assert task["result"] == {"guidance": "continue", "message": "carry on"}
    page.wait_for_selector(row, state="detached")


def test_a_read_only_login_cannot_act(page: Any, web: Web) -> None:
    task_id = submit(web, "client", "--type", "test_hold", "--payload", '{"seconds": 30}')
    wait_state(web, task_id, "running")
    login(page, web, "auditor", f"#/tasks/{task_id}")
    page.wait_for_selector("h2 .s-running")
    assert page.locator("button.cancel").count() == 0
    page.goto(f"{web.url}/#/nodes/w1")
    page.wait_for_selector("#trust-score")
    assert page.locator("button.drain").count() == 0
    # the browser's own session (cookie + the CSRF header) is refused too
    status = page.evaluate(
        """async (id) => (await fetch('/api/stop_task/' + id, {method: 'POST', headers: {'X-Hive-Request': '1'}})).status""",
        task_id,
    )
    assert status == 403
    for path in (f"/api/stop_task/{task_id}", "/api/nodes/w1/drain", "/api/guide", "/api/tasks"):
        code, body = api(web, path, "auditor", "POST")
        assert code == 403 and "auditor" in body["error"], (path, code, body)
    # a client may not cancel someone else's task, nor drain a node
    code, body = api(web, f"/api/stop_task/{task_id}", "other-client", "POST")
    assert code == 403 and "only their own" in body["error"]
    assert api(web, "/api/nodes/w1/drain", "client", "POST")[0] == 403
    # a cookie without the CSRF header changes nothing
    token = web.tokens["operator"]
    code, _ = api(web, f"/api/stop_task/{task_id}", method="POST", headers={"Cookie": f"hive_session={token}"})
    assert code == 403
    assert wait_state(web, task_id, "running")["cancel_requested"] is False


@pytest.mark.skipif(not os.environ.get("HIVE_WEB_SCREENSHOTS"), reason="set HIVE_WEB_SCREENSHOTS=1 to write docs/web-*.png")
def test_screenshots_of_every_page(page: Any, web: Web) -> None:
    DOCS.mkdir(exist_ok=True)
    running = submit(web, "client", "--type", "test_progress", "--payload", '{"steps": 40, "delay": 0.5}')
    for _ in range(3):
        submit(web, "client", "--type", "noop")
    asking = submit(web, "client", "--type", "test_ask_operator")
    wait_state(web, running, "running")
    time.sleep(3)
    login(page, web, "operator")
    shots = [
        ("overview", "#/", "svg.chart"),
        ("nodes", "#/nodes", "#nodes"),
        ("node", "#/nodes/w1", "#trust-score"),
        ("tasks", "#/tasks", "#tasks"),
        ("task", f"#/tasks/{running}", "#history"),
        ("events", "#/events", "#events tbody tr"),
        ("requests", "#/requests", f"tr:has-text('{asking}')"),
    ]
    for name, route, ready in shots:
        page.goto(f"{web.url}/{route}")
        page.wait_for_selector(ready)
        time.sleep(0.6)
        page.screenshot(path=str(DOCS / f"web-{name}.png"), full_page=False)
