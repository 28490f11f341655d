"""The task lists the API serves when some finished tasks are evicted: the same answers as
from a state that keeps everything in memory (real SQLite rows), and the bound on the
"changed since" map."""

from __future__ import annotations

import asyncio
from pathlib import Path

from coordinator import views
from coordinator.projection import apply
from coordinator.state import TERMINAL, ClusterState
from coordinator.store import ProjectionStore
from tests.unit.factories import assign, complete, register, start, submit


def _events(done: int, running: int) -> list[object]:
    events: list[object] = [register("n1", cpu=64, max_tasks=64)]
    for i in range(done + running):
        events += [submit(f"t{i:02d}"), assign(f"t{i:02d}", "n1"), start(f"t{i:02d}", "n1")]
        if i < done:
            events.append(complete(f"t{i:02d}", "n1"))
    return events


async def _lists(
    tmp_path: Path, events: list[object], keep: int
) -> tuple[ClusterState, list[list[dict]], list[list[dict]]]:
    """Fold, flush, evict all but ``keep`` finished tasks, then list as the API would. The
    last event is folded after the flush: a task not flushed yet."""
    state = ClusterState()
    for seq, event in enumerate(events[:-1], 1):
        apply(state, event, seq)
    store = await ProjectionStore.open(tmp_path / "p.db")
    finished = [t for t in state.dirty_tasks if state.tasks[t].state in TERMINAL]
    await store.flush(state)
    state.finished_order.extend(sorted(finished))
    state.evict(keep)
    apply(state, events[-1], len(events))
    lists, pages = [], []
    for wanted, limit in ((None, 0), ("completed", 0), ("running", 0), (None, 4), ("completed", 5), (None, 7)):
        stored = None
        if state.finished:  # what coordinator.api.Api.tasks reads
            newest = limit + len(state.tasks) if limit > 0 else -1
            stored = await store.task_rows(wanted, limit=newest, newest=limit > 0)
        lists.append(views.list_tasks(state, wanted, limit, stored))
    count, last_order = await store.task_count()
    for offset in range(0, 30, 6):
        if state.finished:
            page = await store.task_rows(offset=offset, limit=6) if offset < count else []
            reply = views.stored_page(state, page, count, last_order, offset, 6)
        else:
            reply = views.task_page(state, {}, 0, offset, 6)
        pages.append(reply["tasks"])
    await store.close()
    return state, lists, pages


def test_lists_and_pages_are_the_same_with_tasks_evicted(tmp_path: Path) -> None:
    events = [*_events(done=20, running=5), submit("t99")]
    kept, lists, pages = asyncio.run(_lists(tmp_path / "all", events, keep=1_000))
    evicted, lists_evicted, pages_evicted = asyncio.run(_lists(tmp_path / "few", events, keep=3))
    assert not kept.finished and len(evicted.finished) == 17  # 20 finished, the newest 3 kept
    assert lists_evicted == lists  # whole rows: what a list shows of a stored task is what memory shows
    ids = [[t["task_id"] for t in listed] for listed in lists]
    assert ids[3] == ["t22", "t23", "t24", "t99"]  # the newest
    assert ids[4] == ["t15", "t16", "t17", "t18", "t19"]  # the newest completed: 2 evicted, 3 in memory
    assert pages_evicted == pages
    assert [t["task_id"] for page in pages for t in page] == [f"t{i:02d}" for i in range(25)] + ["t99"]


def test_changed_forgets_its_oldest_and_sends_older_readers_back_to_page_one() -> None:
    changed = {f"t{i}": 10 + i for i in range(10)}
    assert views.forget_oldest(changed, most=20, floor=0) == 0 and len(changed) == 10
    floor = views.forget_oldest(changed, most=8, floor=0)  # past 8: down to 4
    assert list(changed) == ["t6", "t7", "t8", "t9"] and floor == 15
    state = ClusterState()
    for seq, event in enumerate([register("n1"), submit("t9")], 1):
        apply(state, event, seq)
    state.dirty_tasks.clear()
    behind = views.task_page(state, changed, after=12, offset=0, limit=10, epoch="run-1", floor=floor)
    assert behind["epoch"] == "" and behind["tasks"] == []  # start again from the first page
    recent = views.task_page(state, changed, after=18, offset=0, limit=10, epoch="run-1", floor=floor)
    assert recent["epoch"] == "run-1" and [t["task_id"] for t in recent["tasks"]] == ["t9"]
