"""A service's collector settings (edge.heap), set by ``hive.cli.serve`` once the service is ready."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from edge import bus, heap
from hive.cli import serve


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_what_lives_and_raises_the_young_threshold(restored: None) -> None:
    gc.unfreeze()
    kept = [object() for _ in range(10)]  # noqa: F841  (alive at settle: frozen)
    heap.settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == heap.YOUNG


def test_a_cycle_made_after_settle_is_still_collected(restored: None) -> None:
    heap.settle()

    class Node:
        other: object

    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = id(a)
    del a, b
    assert gc.collect() >= 2
    assert not any(id(o) == alive for o in gc.get_objects())


def test_serve_settles_only_once_the_service_is_ready(restored: None) -> None:
    gc.set_threshold(700, 10, 10)
    seen = []

    async def service(ready: asyncio.Event) -> None:
        await asyncio.sleep(0.05)
        seen.append(gc.get_threshold()[0])  # still starting: defaults
        ready.set()
        await asyncio.sleep(0.05)
        seen.append(gc.get_threshold()[0])

    ready = asyncio.Event()
    try:
        serve(service(ready), ready)
    finally:
        bus.stop_service = None  # (serve points it at the service's task)
    assert seen == [700, heap.YOUNG]
