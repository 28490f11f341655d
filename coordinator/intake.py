"""One logged message into the projection, by the same rule live and in a replay.

A message becomes an event through ``events.codec.decode`` (the validation edge), then is
folded. Whatever goes wrong with one message rejects that message and nothing else: a
payload the edge refuses, a fact the projection finds implausible for the emitter
(``Implausible``, raised before anything changed), or an exception while applying it (a
bug; the event is recorded as rejected with the exception). The rejection is a row of the
``rejected`` table keyed by sequence, which a replay reproduces, so the two still match.

``RejectLog`` keeps the coordinator's log readable under a flood of garbage: the first
reject of each rule is logged in full, then one summary line per interval with counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

import structlog

from coordinator.projection import Forbidden, Implausible
from coordinator.state import ClusterState
from events.base import Event
from events.codec import BadEvent, decode

log = structlog.get_logger("hive.coordinator")

SUMMARY_S = 10.0


class Rejection(NamedTuple):
    seq: int
    subject: str
    rule: str
    error: str
    failed: BaseException | None = None  # an exception while applying: a bug, logged with its traceback


def take(
    state: ClusterState,
    fold: Callable[[Event, int], None],
    data: bytes,
    subject: str,
    seq: int,
    stamp: float | None,
) -> Rejection | None:
    """Decode and fold one message at ``seq``; return its rejection, or None if applied."""
    try:
        event = decode(data, subject, stamp)
    except BadEvent as exc:
        state.seq = seq
        return Rejection(seq, subject, exc.rule, str(exc))
    try:
        fold(event, seq)
    except Implausible as exc:
        state.seq = seq
        return Rejection(seq, subject, "implausible", f"implausible: {exc}")
    except Forbidden as exc:
        state.seq = seq
        return Rejection(seq, subject, "forbidden", f"forbidden: {exc}")
    except Exception as exc:  # no single event may stop the coordinator
        state.seq = seq
        return Rejection(seq, subject, "apply_error", f"apply_error: {type(exc).__name__}: {exc}", exc)
    return None


def rule_of(error: str) -> str:
    return error.split(":", 1)[0]


class RejectLog:
    """Counts rejects by rule; logs the first of each rule, then periodic summaries."""

    def __init__(self, counts: Counter[str] | None = None) -> None:
        self.total: Counter[str] = Counter(counts or {})
        self.since: Counter[str] = Counter()
        self.logged: set[str] = set()
        self.summarised_at: float | None = None

    def add(self, rejection: Rejection) -> None:
        self.total[rejection.rule] += 1
        if rejection.rule in self.logged:
            self.since[rejection.rule] += 1
            return
        self.logged.add(rejection.rule)
        fields = {"subject": rejection.subject[:200], "seq": rejection.seq, "rule": rejection.rule}
        if rejection.failed is not None:
            log.error("event rejected: applying it failed", error=rejection.error[:500], exc_info=rejection.failed, **fields)
        else:
            log.warning("event rejected", error=rejection.error[:300], **fields)

    def tick(self, now: float) -> None:
        if self.summarised_at is None:
            self.summarised_at = now
        if now - self.summarised_at < SUMMARY_S:
            return
        self.summarised_at = now
        if self.since:
            log.warning(
                "events rejected", last_s=SUMMARY_S, by_rule=dict(self.since), total=sum(self.total.values())
            )
            self.since.clear()
