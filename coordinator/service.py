"""The coordinator's asyncio shell: log in, projection out, decisions back to the log.

One loop: take the messages the log's follower (``edge.follow``) delivered since last time, decode and
fold them into the core, write the dirty rows plus the checkpoint in one SQLite
transaction, then (once caught up with the log) ask the core for decisions and publish
them pipelined. Heartbeats arrive on core NATS, on the follower's connection, and only
feed liveness. Queries are
answered from memory over request-reply (``hiveapi.*``), and from the rows for the
finished tasks evicted from memory (``keep_finished`` of them stay).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import structlog

from coordinator import views
from coordinator.api import Api
from coordinator.core import CoordinatorCore, CoreConfig
from coordinator.intake import Rejection, RejectLog, take
from coordinator.lease import LeaseKeeper, Role, me
from coordinator.looplag import LoopLag
from coordinator.policies import DEFAULT, PolicyConfig
from coordinator.state import TERMINAL, ClusterState, TrustPolicy
from coordinator.store import ProjectionStore, RowReader
from edge.bus import Publisher, connect
from edge.config import Target
from edge.follow import Follower
from edge.waits import woken
from edge.wire import Record
from events.base import Event
from events.codec import BadEvent, decode
from events.node import LeaderElected, NodeHeartbeat, TrustPolicySet
from events.streams import LEASE_TTL_S, ensure_streams
from events.subjects import AUDIT_STREAM, LEADER_BUCKET, heartbeat_filter

log = structlog.get_logger("hive.coordinator")

# a task's row is written once per flush it changed in: at a flush every 50 ms a busy task
# was written about three times (queued, assigned, finished), and every flush rewrote the
# rows of the nodes that changed. The log, not the file, is what a crash keeps, so a longer
# wait loses nothing (250 ms: 7% more tasks/s end to end, the mean of 18 alternating runs)
FLUSH_S = 0.25
FLUSH_EVENTS = 5000
# finished tasks whose views stay in memory, newest first; older ones live in their rows
KEEP_FINISHED = 10_000
CHANGED_MAX = 200_000  # task changes `tasks` since a position remembers (the web's updates)


class Coordinator:
    def __init__(
        self,
        target: Target,
        db_path: str | Path,
        config: CoreConfig | None = None,
        trust: TrustPolicy | None = None,
        tick_s: float = 0.1,
        coordinator_id: str = "coordinator",
        lease_s: float | None = None,
        http_port: int | None = None,
        policy: PolicyConfig = DEFAULT,
        keep_finished: int = KEEP_FINISHED,
    ) -> None:
        self.keep_finished = keep_finished
        self.policy = policy  # how requests are answered (coordinator.policies)
        self.http_port = http_port  # /health and /metrics (coordinator/observe.py); None: off
        # lease_s None: the lone coordinator of old (no election, no terms); a number: run the
        # lease (coordinator/lease.py) with that TTL, so several coordinators may run
        self.coordinator_id = coordinator_id
        self.lease_s = lease_s
        self.term = 0  # while leading: the term every decision carries; 0 as a standby
        self.keeper: LeaseKeeper | None = None
        self.epoch = f"{coordinator_id}-{os.getpid()}-{time.time_ns()}"  # this run, for readers of `changed`
        self.changed_floor = 0  # `changed` forgot the positions up to here (CHANGED_MAX)
        # task -> log position of its last flushed change (coordinator.views.task_page)
        self.changed: dict[str, int] = {}
        self.announced_at = float("-inf")  # a standby's last "I am here" (LeaseKeeper.announce)
        self.api: Api | None = None
        self.target = target
        self.db_path = Path(db_path)
        self.config = config or CoreConfig()
        self.trust = trust or TrustPolicy()
        self.tick_s = tick_s
        self.inbox: list[Record] = []
        self.wake = asyncio.Event()
        self.caught_up_to = 0
        self.rejects = RejectLog()
        self.decide_errors = 0
        self.seq_waiters: dict[asyncio.Future[None], int] = {}  # API requests waiting: the seq each waits for
        self.live: dict[str, NodeHeartbeat] = {}  # last heartbeat per node, for `hive nodes`
        self.policy_logged = False
        self.unflushed = 0
        self.flushed_at = time.monotonic()
        self.lag = LoopLag()  # in `hive stats` as loop_lag

    async def run(self, ready: asyncio.Event | None = None) -> None:
        nc = await connect(self.target, "hive-coordinator", on_reconnect=self._reconnected)
        js = nc.jetstream(timeout=10)
        await ensure_streams(js, lease_ttl_s=self.lease_s or LEASE_TTL_S)
        store = await ProjectionStore.open(self.db_path)
        state = await store.load(ClusterState())
        self.caught_up_to = (await js.stream_info(AUDIT_STREAM)).state.last_seq
        if state.seq > self.caught_up_to:
            # the log is shorter than what we read of it: a new log, so a new projection
            log.warning("the checkpoint is past the log's end (a new log?); rebuilding", checkpoint=state.seq)
            await store.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
            store = await ProjectionStore.open(self.db_path)
            state = await store.load(ClusterState())
        self.rejects = RejectLog(await store.rejected_by_rule())
        reader = RowReader(self.db_path)
        state.load_task = reader
        self.core = CoordinatorCore(state, self.config, self.policy)
        self.fold = self.core.handle  # observe.serve wraps it to time placements
        self.store = store
        publisher = Publisher(js)
        log.info("coordinator starting", checkpoint=state.seq, log_end=self.caught_up_to, tasks=len(state.tasks))
        self.api = Api(self, nc)
        follower = Follower(
            self.target,
            AUDIT_STREAM,
            self._on_records,
            start_seq=state.seq + 1,
            subs={heartbeat_filter(): self._on_heartbeats},
            name="hive-coordinator-log",
            on_reconnect=self._reconnected,
        )
        await follower.start()
        publisher.lean = follower.publishing  # decisions and their acks on the log's connection
        self.publisher = publisher
        lease_task: asyncio.Future[None] | None = None
        lag_task = asyncio.ensure_future(self.lag.run())
        if self.lease_s is not None:
            self.keeper = LeaseKeeper(await js.key_value(LEADER_BUCKET), me(self.coordinator_id), self.lease_s)
            await self.keeper.check_reclaim()
            await self._lease_tick()  # a lone coordinator wins here, before it says it is ready
            lease_task = asyncio.ensure_future(self._lease_loop())
            role = self.keeper.lease.role.value
        else:
            await self.api.start()
            role = "leader"
        http = None
        if self.http_port is not None:
            from coordinator import observe  # aiohttp and prometheus_client only when asked for

            http = await observe.serve(self, nc, self.http_port)
        log.info("coordinator ready", api=role == "leader", role=role, id=self.coordinator_id, term=self.term)
        if ready is not None:
            ready.set()
        try:
            while True:
                await woken(self.wake, self.tick_s)
                self.wake.clear()
                await self._step(publisher)
        finally:
            lag_task.cancel()
            if http is not None:
                await http.stop()
            if lease_task is not None:
                lease_task.cancel()
            if self.keeper is not None and self.keeper.lease.role == Role.LEADER:
                await self.keeper.release()  # a standby takes over now, not after the TTL
                log.info("stepped down (stopping)", term=self.term)
            if self.api is not None:
                await self.api.stop()  # (and the requests waiting for the log: nothing answers them now)
            if self.unflushed:
                await store.flush(self.core.state)
            await follower.close()
            reader.close()
            await store.close()
            await nc.close()

    # -- leadership ------------------------------------------------------------------

    def leading(self) -> bool:
        """Whether this coordinator may decide now: it holds a lease renewed within the TTL."""
        if self.keeper is None:
            return True  # no lease: the only coordinator
        return self.term > 0 and self.keeper.lease.valid(time.monotonic())

    async def _lease_loop(self) -> None:
        assert self.keeper is not None
        while True:
            lease = self.keeper.lease
            await asyncio.sleep(max(0.01, min(0.1, lease.next_at - time.monotonic())))
            try:
                await self._lease_tick()
            except Exception:  # the lease loop must not die; the lease's own rules step us down
                log.exception("lease round failed")

    async def _lease_tick(self) -> None:
        assert self.keeper is not None
        now = time.monotonic()
        if self.term and not self.keeper.lease.valid(now):
            self.keeper.lease.step_down(keep_claim=True)
            await self._stepped_down("the lease ran out before it was renewed (paused or cut off)")
            return
        change = await self.keeper.tick(now)
        if not self.term and change != "elected" and now >= self.announced_at + self.keeper.lease.period:
            self.announced_at = now
            await self.keeper.announce()
        if change == "elected":
            await self._elected(self.keeper.lease.term)
        elif change == "stepped_down" and self.term:
            await self._stepped_down("the lease was lost (another coordinator holds it, or no renewal within the TTL)")

    async def _elected(self, term: int) -> None:
        holder = self.keeper.holder if self.keeper else me(self.coordinator_id)
        event = LeaderElected(
            coordinator_id=self.coordinator_id, term=term, host=holder.host[:256], pid=holder.pid, emitter="coordinator"
        )
        try:
            seq = await self.publisher.publish_reliably(event, attempts=3)
        except Exception as exc:
            log.error("elected, but could not log the election; stepping down", error=str(exc)[:200])
            if self.keeper is not None:
                await self.keeper.release()
            return
        # decide only once the fold has seen our election (and everything before it)
        self.caught_up_to = max(self.caught_up_to, int(seq))
        self.core.reset_inflight()
        self.core.grace(time.time())  # nobody is lost for the time we were not deciding
        self.policy_logged = False
        self.term = term
        if self.api is not None:
            await self.api.start()
        log.info("elected leader", id=self.coordinator_id, term=term, seq=seq)

    async def _stepped_down(self, why: str) -> None:
        term, self.term = self.term, 0
        if self.api is not None:
            await self.api.stop()
        self.core.reset_inflight()
        log.warning("stepped down; now a standby", id=self.coordinator_id, term=term, reason=why)

    def _reconnected(self) -> None:
        # heartbeats could not arrive while we were cut off: give nodes a grace period
        self.core.grace(time.time())

    def _on_records(self, records: list[Record]) -> None:
        self.inbox.extend(records)
        self.wake.set()

    def _on_heartbeats(self, messages: list[tuple[str, bytes]]) -> None:
        nodes, now = self.core.state.nodes, time.time()
        for subject, data in messages:
            try:
                beat = decode(data, subject)
            except BadEvent:
                continue  # telemetry: nothing to record, nothing to keep alive
            if isinstance(beat, NodeHeartbeat) and beat.node_id in nodes:
                self.core.heartbeat(beat.node_id, now)
                self.live[beat.node_id] = beat

    async def _step(self, publisher: Publisher) -> None:
        batch, self.inbox = self.inbox, []
        state = self.core.state
        for seq, subject, data, stamp in batch:
            if seq <= state.seq:
                continue  # redelivered after a reconnect; already applied
            rejection = take(state, self.fold, data, subject, seq, stamp)
            if rejection is not None:
                self._reject(rejection)
        self.rejects.tick(time.monotonic())
        if batch:
            self._release_waiters()
            self.unflushed += len(batch)
        try:
            await self._decide(publisher)
        finally:
            # after deciding: what this batch calls for goes out without waiting for SQLite
            if self.unflushed and (self.unflushed >= FLUSH_EVENTS or time.monotonic() - self.flushed_at >= FLUSH_S):
                await self._flush()

    async def _flush(self) -> None:
        # batching rows across loop rounds: each task's row is written once per flush,
        # not once per event; a crash loses only what replay from the checkpoint restores
        state = self.core.state
        finished = []
        for task_id in state.dirty_tasks:  # oldest change first: `tasks` since a position is a suffix
            self.changed.pop(task_id, None)
            self.changed[task_id] = state.seq
            if state.tasks[task_id].state in TERMINAL:
                finished.append(task_id)
        # bounded: a reader from before the floor is told to start again (views.task_page)
        self.changed_floor = views.forget_oldest(self.changed, CHANGED_MAX, self.changed_floor)
        await self.store.flush(state)
        self.unflushed, self.flushed_at = 0, time.monotonic()
        state.finished_order.extend(finished)  # flushed now, so they may leave memory
        state.evict(self.keep_finished)

    async def _decide(self, publisher: Publisher) -> None:
        state = self.core.state
        if state.seq < self.caught_up_to:
            return  # decide only on a state that has seen the whole log
        if self.keeper is None:
            self.term = state.term  # no lease: the only coordinator speaks in the newest term of the log
        elif not self.leading() or state.term != self.term:
            return  # a standby folds the log hot and decides nothing
        if not self.policy_logged:
            self.policy_logged = True
            if state.trust != self.trust:  # the rules changed: log them so replay scores alike
                policy = TrustPolicySet(**msgspec.structs.asdict(self.trust), emitter="coordinator", term=self.term)
                await publisher.publish(policy)
        publisher.reap()
        try:
            decisions = self.core.decide(time.time())
        except Exception:  # a bug must not stop the coordinator; the next round decides anew
            self.decide_errors += 1
            if self.decide_errors <= 3 or self.decide_errors % 1000 == 0:
                log.exception("deciding failed", errors=self.decide_errors)
            return
        for decision in decisions:
            await self._publish(publisher, decision)
        if self.core.more:  # a large placement round goes on after the loop had its turn
            self.wake.set()
            await asyncio.sleep(0)

    async def _publish(self, publisher: Publisher, decision: Event) -> None:
        try:
            await publisher.publish(msgspec.structs.replace(decision, term=self.term))  # type: ignore[call-arg]
        except Exception as exc:  # e.g. over the max payload: dropped; decided again once its in-flight entry expires
            log.error("could not publish a decision", event=type(decision).__name__, error=str(exc)[:200])

    def _reject(self, rejection: Rejection) -> None:
        self.store.reject(rejection.seq, rejection.subject, rejection.error)
        self.rejects.add(rejection)

    def _release_waiters(self) -> None:
        seq = self.core.state.seq
        for future, wanted in list(self.seq_waiters.items()):
            if wanted <= seq:
                del self.seq_waiters[future]
                if not future.done():
                    future.set_result(None)

    async def wait_for_seq(self, seq: int, timeout: float = 5.0) -> bool:
        """Read-your-writes for the API: wait until the projection includes ``seq``."""
        if seq <= self.core.state.seq:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.seq_waiters[future] = seq
        try:
            async with asyncio.timeout(timeout):
                await future
            return True
        except TimeoutError:
            return False
        finally:  # (given up: not kept for a position the log may never reach)
            self.seq_waiters.pop(future, None)

    def stats(self) -> dict[str, Any]:
        state = self.core.state
        leader = state.leader
        return {
            "id": self.coordinator_id,
            "role": "leader" if self.leading() else "standby",
            "term": self.term,
            "leader": None
            if leader is None
            else {
                "id": leader.coordinator_id,
                "term": leader.term,
                "since": leader.since,
                "host": leader.host,
                "pid": leader.pid,
            },
            "seq": state.seq,
            "log_end": self.caught_up_to,
            "tasks_by_state": dict(state.counts()),
            "tasks_in_memory": len(state.tasks),
            "nodes_by_state": dict(Counter(n.state.value for n in state.nodes.values())),
            "rejected": sum(self.rejects.total.values()),
            "rejected_by_rule": dict(self.rejects.total),
            "decide_errors": self.decide_errors,
            "ignored": self.core.state.ignored,
            "inflight": len(self.core.inflight),
            "waiting_for_log": len(self.seq_waiters),  # API requests waiting for their min_seq
            "loop_lag": self.lag.stats(),
        }
