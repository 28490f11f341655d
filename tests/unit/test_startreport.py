"""The start an attempt owes (node.startreport): sent once the attempt has run a while, or
before any other report of it; never sent by an attempt that ends first."""

from __future__ import annotations

import asyncio
import time

from events.base import Event
from events.task import TaskStarted
from node.startreport import StartReport

START = TaskStarted(task_id="t1", node_id="n1", attempt=1, emitter="node:n1", ts=1.0)


def started(ts: float) -> TaskStarted:
    return START


class Log:
    def __init__(self) -> None:
        self.sent: list[Event] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, event: Event) -> None:
        await self.gate.wait()  # (the ack of a JetStream publish)
        self.sent.append(event)


async def test_an_attempt_that_ends_first_sends_no_start_and_says_when_it_began() -> None:
    log = Log()
    before = time.time()
    report = StartReport(started, log.send, delay=0.01)
    started_at = await report.settle()
    await asyncio.sleep(0.05)  # past the delay: the timer was cancelled
    assert log.sent == [] and not report.sent
    assert started_at is not None and before <= started_at <= time.time()
    await report.flush()  # a late report of the ended attempt sends no start either
    assert log.sent == []


async def test_an_attempt_still_running_after_the_delay_sends_its_start_once() -> None:
    log = Log()
    report = StartReport(started, log.send, delay=0)
    await asyncio.sleep(0.01)
    assert log.sent == [START]
    await report.flush()
    assert await report.settle() is None  # the final report carries no started_at
    assert log.sent == [START]


async def test_another_report_sends_the_owed_start_first() -> None:
    log = Log()
    report = StartReport(started, log.send, delay=3600)
    await report.flush()
    assert log.sent == [START]
    await report.flush()
    assert log.sent == [START] and await report.settle() is None


async def test_the_final_report_waits_for_a_start_in_flight() -> None:
    log = Log()
    log.gate.clear()
    report = StartReport(started, log.send, delay=0)
    await asyncio.sleep(0.01)  # sending, not acked
    settling = asyncio.ensure_future(report.settle())
    await asyncio.sleep(0.01)
    assert not settling.done()  # the end must not overtake the start in the log
    log.gate.set()
    assert await settling is None and log.sent == [START]


async def test_a_stopped_attempt_owes_no_start() -> None:
    log = Log()
    report = StartReport(started, log.send, delay=0)
    report.cancel()
    await asyncio.sleep(0.01)
    await report.flush()
    assert log.sent == []


async def test_a_sent_start_is_stamped_when_the_attempt_began() -> None:
    log = Log()
    report = StartReport(
        lambda ts: TaskStarted(task_id="t1", node_id="n1", attempt=1, emitter="node:n1", ts=ts), log.send, delay=0.02
    )
    await asyncio.sleep(0.05)  # sent late, by the timer
    assert len(log.sent) == 1 and log.sent[0].ts == report.started_at < time.time() - 0.02
