"""Filters, sorting and paging of the tasks list; subject wildcards; log positions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hive.web.query import BadQuery, Position, TaskQuery, page, subject_matches, valid_pattern


def task(i: int, **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "task_id": f"t-{i:06d}",
        "name": None,
        "state": "completed",
        "executor": "function",
        "what": "noop",
        "priority": 0,
        "node_id": "n1",
        "submitted_at": float(i),
        "updated_at": float(i),
        "duration_s": 1.0,
        "attempt": 1,
        "submitted_by": "alice",
        "error": None,
        "reason": None,
    }
    return base | fields


def test_filters_combine() -> None:
    tasks = [
        task(1, state="running", node_id="n2"),
        task(2, executor="process", what="echo hi"),
        task(3, priority=5, submitted_by="bob", name="nightly report"),
        task(4, error="Boom happened"),
    ]
    ids = lambda **q: [t["task_id"] for t in page(tasks, TaskQuery.parse(q))["tasks"]]  # noqa: E731
    assert ids(state="running") == ["t-000001"]
    assert ids(node="n2") == ["t-000001"]
    assert ids(type="process") == ["t-000002"]
    assert ids(type="noop", submitter="bob") == ["t-000003"]
    assert ids(priority="5") == ["t-000003"]
    assert ids(q="REPORT") == ["t-000003"]
    assert ids(q="boom") == ["t-000004"]


def test_sorting_puts_missing_values_last_both_ways() -> None:
    tasks = [task(1, duration_s=None), task(2, duration_s=3.0), task(3, duration_s=1.0)]
    for order, expected in (("asc", ["t-000003", "t-000002", "t-000001"]), ("desc", ["t-000002", "t-000003", "t-000001"])):
        rows = page(tasks, TaskQuery.parse({"sort": "duration_s", "order": order}))["tasks"]
        assert [t["task_id"] for t in rows] == expected


@given(st.integers(0, 60), st.integers(1, 25))
def test_pages_cover_everything_once(total: int, size: int) -> None:
    tasks = [task(i, priority=i % 3) for i in range(total)]
    seen: list[object] = []
    for offset in range(0, total + size, size):
        result = page(tasks, TaskQuery.parse({"sort": "priority", "limit": str(size), "offset": str(offset)}))
        assert result["total"] == total
        seen += [t["task_id"] for t in result["tasks"]]
    assert sorted(seen) == sorted(t["task_id"] for t in tasks) and len(seen) == total  # type: ignore[type-var]


def test_a_page_deep_into_100k_tasks() -> None:
    # its speed is benchmarks/web_tasks.py's business; here, that the page is the right one
    tasks = [task(i, state=("running", "completed", "failed")[i % 3], priority=i % 7) for i in range(100_000)]
    result = page(tasks, TaskQuery.parse({"state": "failed", "sort": "priority", "limit": "50", "offset": "1000"}))
    assert result["total"] == 33_333 and len(result["tasks"]) == 50
    failed = sorted((t for t in tasks if t["state"] == "failed"), key=lambda t: -t["priority"])  # type: ignore[operator]
    assert {t["priority"] for t in result["tasks"]} <= {failed[1000]["priority"], failed[1049]["priority"]}


def test_retrying_is_a_state_to_filter_by() -> None:
    assert TaskQuery.parse({"state": "retrying"}).state == "retrying"


@pytest.mark.parametrize(
    "params",
    [{"state": "sleeping"}, {"sort": "colour"}, {"order": "up"}, {"limit": "0"}, {"limit": "501"}, {"offset": "-1"},
     {"priority": "high"}, {"colour": "red"}, {"q": "x" * 201}, {"node": "a b"}, {"submitter": "*"}, {"type": "x" * 129}],
)
def test_bad_parameters_say_which(params: dict[str, str]) -> None:
    with pytest.raises(BadQuery):
        TaskQuery.parse(params)


def test_subject_wildcards() -> None:
    assert subject_matches("hive.>", "hive.task.t1.submitted.by.alice")
    assert subject_matches("hive.task.*.completed.*", "hive.task.t1.completed.n1")
    assert not subject_matches("hive.task.*.completed", "hive.task.t1.completed.n1")
    assert not subject_matches("hive.task.>", "hive.task")
    assert subject_matches("hive.node.n1.heartbeat", "hive.node.n1.heartbeat")
    assert valid_pattern("hive.task.*.>") and not valid_pattern("hive.>.x") and not valid_pattern("a..b")
    assert not valid_pattern("hive.ta*") and not valid_pattern("") and not valid_pattern("a b")


def test_positions() -> None:
    assert Position.parse("12:34") == Position(12, 34) and str(Position(12, 34)) == "12:34"
    assert Position.parse("7") == Position(7, 0) and Position.parse(None) is None
    for bad in ("x", "1:2:3", "-1", "1:", "9" * 19):
        with pytest.raises(BadQuery):
            Position.parse(bad)
