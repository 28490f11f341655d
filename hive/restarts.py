"""When ``hive up`` restarts a child that died, and when it gives up: a pure rule, so the
supervisor (``hive.up.Cluster``) only polls processes and keeps the schedule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 0.5  # then 1, 2, 4 ... seconds
    max_delay: float = 10.0
    stable_after: float = 30.0  # up this long: the next restart waits first_delay again
    crash_window: float = 10.0  # an exit this soon after the start is a crash at start
    crash_limit: int = 3  # that many in a row: give up


@dataclass(frozen=True)
class History:
    """What one child's past exits leave behind for the next decision."""

    restarts: int = 0  # restarts since the child last stayed up `stable_after`
    quick_exits: int = 0  # exits in a row, each within `crash_window` of its start


@dataclass(frozen=True)
class Decision:
    action: Literal["restart", "give_up", "leave"]
    history: History
    at: float = 0.0  # when to restart (monotonic clock)
    delay: float = 0.0


def decide(
    code: int | None,
    started: float,
    now: float,
    history: History,
    *,
    may_leave: bool = False,
    policy: RestartPolicy = RestartPolicy(),
) -> Decision:
    """A child started at ``started`` exited with ``code`` (None: it did not even start)
    at ``now``: restart it (when), give up on it, or let it go (``may_leave`` and code 0:
    a node that drained)."""
    if may_leave and code == 0:
        return Decision("leave", History())
    uptime = now - started
    quick = history.quick_exits + 1 if uptime < policy.crash_window else 0
    restarts = 0 if uptime >= policy.stable_after else history.restarts
    if quick >= policy.crash_limit:
        return Decision("give_up", History(restarts, quick))
    delay = min(policy.first_delay * 2**restarts, policy.max_delay)
    return Decision("restart", History(restarts + 1, quick), at=now + delay, delay=delay)
