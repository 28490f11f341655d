"""Theory of operation: exactly one coordinator leads, through a JetStream KV lease.

The bucket ``hive-leader`` (events.subjects.LEADER_BUCKET) holds one key, ``coordinator``,
whose entries expire after the lease TTL. A candidate ``create``s the key (which fails if
it exists); the revision ``create`` returned is its TERM. The leader renews with
``update(last=revision)`` every TTL/3. An update the server refuses (someone else's
revision: the key expired and another won it) or no successful renewal for a whole TTL
(cut off, or paused) ends its leadership AT ONCE: it stops deciding and serving the API
and becomes a standby. Standbys try ``create`` every TTL/3, which succeeds once the key
has expired or a leader stepping down cleanly deleted it. No consensus of our own: the
server's compare-and-set on one key decides, and the term fences the log
(events.node.LeaderElected; the projection ignores decisions of a lower term).

``Lease`` is the pure part: given the time (monotonic) and the result of the last KV
operation, what to do next. ``LeaseKeeper`` is the thin asyncio part around a KV handle.
"""

from __future__ import annotations

import asyncio
import enum
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from nats.js.errors import APIError, KeyNotFoundError, KeyWrongLastSequenceError

from events.subjects import LEADER_KEY, standby_key

log = structlog.get_logger("hive.coordinator.lease")


class Role(enum.StrEnum):
    STANDBY = "standby"
    LEADER = "leader"


class Action(enum.StrEnum):
    WAIT = "wait"  # nothing due yet
    CREATE = "create"  # a standby tries to win the key
    RENEW = "renew"  # the leader updates its key with last=revision
    RECLAIM = "reclaim"  # the key holds our own id (a previous run of us): update it with last=its revision


class Outcome(enum.StrEnum):
    OK = "ok"  # the server accepted (revision given)
    TAKEN = "taken"  # the server refused: the key exists / has another revision
    UNREACHABLE = "unreachable"  # no answer (timeout, disconnected)


@dataclass
class Lease:
    """The pure state machine of one coordinator's lease. Times are monotonic seconds."""

    ttl_s: float = 3.0
    role: Role = Role.STANDBY
    term: int = 0  # while leading: the revision we won, which every decision carries
    revision: int = 0  # the key's revision we hold (renewals move it; the term stays)
    renewed_at: float = float("-inf")  # when the last accepted operation was sent
    next_at: float = float("-inf")
    reclaim: int = 0  # a revision of the key that holds our own id (set by the shell)

    @property
    def period(self) -> float:
        return self.ttl_s / 3

    def valid(self, now: float) -> bool:
        """Whether we may decide now: leading, and renewed within the TTL."""
        return self.role == Role.LEADER and now - self.renewed_at < self.ttl_s

    def next_action(self, now: float) -> Action:
        if self.role == Role.LEADER and now - self.renewed_at >= self.ttl_s:
            return Action.RENEW  # overdue (e.g. woken from a pause): the result decides
        if now < self.next_at:
            return Action.WAIT
        if self.role == Role.LEADER:
            return Action.RENEW
        return Action.RECLAIM if self.reclaim else Action.CREATE

    def expired(self, now: float) -> bool:
        """A leader whose lease ran out before any answer: it must step down now."""
        return self.role == Role.LEADER and now - self.renewed_at >= self.ttl_s

    def result(
        self, action: Action, sent_at: float, outcome: Outcome, revision: int = 0, now: float | None = None
    ) -> str | None:
        """Fold the result of ``action`` (sent at ``sent_at``); return "elected",
        "stepped_down" or None (no change of role)."""
        now = sent_at if now is None else now
        self.next_at = now + self.period
        if action in (Action.CREATE, Action.RECLAIM):
            if outcome != Outcome.UNREACHABLE:
                self.reclaim = 0  # (unreachable: try the same claim again next time)
            if outcome == Outcome.OK:
                self.role, self.term, self.revision, self.renewed_at = Role.LEADER, revision, revision, sent_at
                return "elected"
            return None
        if action != Action.RENEW or self.role != Role.LEADER:
            return None
        if outcome == Outcome.OK and sent_at - self.renewed_at < self.ttl_s:
            self.revision, self.renewed_at = revision, sent_at
            return None
        if outcome == Outcome.UNREACHABLE and now - self.renewed_at < self.ttl_s:
            self.next_at = now + min(self.period, 0.2)  # retry soon, still within the lease
            return None
        # refused, or no renewal for a whole TTL (an OK sent after that is too late too:
        # another may have won and decided meanwhile, so we do not carry on as if nothing happened)
        if outcome == Outcome.OK:
            self.revision = revision  # accepted, too late: the key is ours at this revision
        return self.step_down(keep_claim=outcome != Outcome.TAKEN)

    def step_down(self, keep_claim: bool = False) -> str:
        """Stop leading. ``keep_claim``: we lost touch rather than the key, so first try to
        update it with the revision we held: the compare-and-set succeeds only if nobody
        else won it meanwhile, and then we lead again (with a new term) without the TTL's wait."""
        self.reclaim = self.revision if keep_claim else 0
        self.role, self.term, self.revision, self.renewed_at = Role.STANDBY, 0, 0, float("-inf")
        self.next_at = float("-inf") if keep_claim else self.next_at
        return "stepped_down"


class Holder(msgspec.Struct, kw_only=True):
    """The lease key's value: who holds it."""

    id: str
    host: str = ""
    pid: int = 0


def me(coordinator_id: str) -> Holder:
    return Holder(id=coordinator_id, host=socket.gethostname(), pid=os.getpid())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ours(holder: Holder, mine: Holder) -> bool:
    """Whether a key holding ``holder`` is a previous run of us (same id, gone): reclaimable at
    once rather than after the TTL, so a restarted single coordinator is back without a wait."""
    if holder.id != mine.id or (holder.host == mine.host and holder.pid == mine.pid):
        return False
    return holder.host != mine.host or not _pid_alive(holder.pid)


class LeaseKeeper:
    """The asyncio side: runs one due KV operation per ``tick`` and reports role changes."""

    def __init__(self, kv: Any, holder: Holder, ttl_s: float, op_timeout: float | None = None) -> None:
        self.kv = kv
        self.holder = holder
        self.value = msgspec.json.encode(holder)
        self.lease = Lease(ttl_s=ttl_s)
        self.op_timeout = op_timeout or max(0.2, ttl_s / 3)

    async def check_reclaim(self) -> None:
        """At start: if the key names us (a run of ours that died), reclaim it at once."""
        try:
            entry = await self.kv.get(LEADER_KEY)
        except (KeyNotFoundError, Exception):
            return
        if entry.value and entry.revision:
            try:
                holder = msgspec.json.decode(entry.value, type=Holder)
            except msgspec.DecodeError:
                return
            if ours(holder, self.holder):
                self.lease.reclaim = entry.revision

    async def tick(self, now: float) -> str | None:
        lease = self.lease
        action = lease.next_action(now)
        if action == Action.WAIT:
            return None
        revision = 0
        try:
            if action == Action.CREATE:
                coro = self.kv.create(LEADER_KEY, self.value)
            else:
                last = lease.reclaim if action == Action.RECLAIM else lease.revision
                coro = self.kv.update(LEADER_KEY, self.value, last=last)
            revision = int(await asyncio.wait_for(coro, self.op_timeout))
            outcome = Outcome.OK
        except KeyWrongLastSequenceError:
            outcome = Outcome.TAKEN
        except Exception as exc:
            outcome = (
                Outcome.TAKEN
                if isinstance(exc, APIError) and getattr(exc, "err_code", 0) == 10071
                else Outcome.UNREACHABLE
            )
        return lease.result(action, now, outcome, revision, now=time.monotonic())

    async def announce(self) -> None:
        """A standby says it is there: its key expires with the bucket's TTL unless renewed."""
        try:
            await asyncio.wait_for(self.kv.put(standby_key(self.holder.id), self.value), self.op_timeout)
        except Exception as exc:  # only `hive status` misses it
            log.debug("could not announce this standby", error=str(exc)[:200])

    async def standbys(self) -> list[Holder]:
        """The standbys that announced themselves within the TTL."""
        try:
            keys = await asyncio.wait_for(self.kv.keys(), 2.0)  # a handful; nats-py's filters drop them all
        except Exception:  # nats-py raises NoKeysError for none
            return []
        prefix = standby_key("")
        keys = [k for k in keys if k.startswith(prefix)]
        found: list[Holder] = []
        for key in keys:
            try:
                entry = await asyncio.wait_for(self.kv.get(key), 2.0)
                found.append(msgspec.json.decode(entry.value or b"", type=Holder))
            except Exception:
                continue  # expired meanwhile, or not ours to read
        return found

    async def release(self) -> None:
        """Step down cleanly (SIGTERM): delete our key so a standby need not wait the TTL."""
        if self.lease.role != Role.LEADER:
            return
        revision = self.lease.revision
        self.lease.step_down()
        try:
            await asyncio.wait_for(self.kv.delete(LEADER_KEY, last=revision), 2.0)
        except Exception as exc:
            log.warning("could not release the lease", error=str(exc)[:200])
