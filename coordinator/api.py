"""Request-reply queries and operator commands answered by the coordinator.

Each request is JSON on ``hiveapi.<verb>``; each reply is ``{"ok": true, "data": ...}`` or
``{"ok": false, "error": "..."}``. A request may carry ``min_seq`` (the stream sequence of
the caller's last publish) and is answered only once the projection has reached it, so a
client reads its own writes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiosqlite
import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg

from coordinator import views
from coordinator.dag import check_dependencies
from coordinator.state import NodeState, OpenRequest
from edge.bus import Publisher
from events.base import Event
from events.codec import BadEvent, check_outgoing
from events.negotiation import GuidanceGiven, ResourceDenied, ResourceGranted
from events.node import NodeLost, NodeTrustReset
from events.subjects import AUDIT_STREAM, api_caller, api_subject
from events.validation import too_deep

if TYPE_CHECKING:
    from coordinator.service import Coordinator

log = structlog.get_logger("hive.coordinator.api")

OPERATOR_ACTIONS = ("retry", "skip", "wait", "fail", "continue")
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # a batch check of thousands of tasks fits
MAX_WAITING = 1000  # requests of one caller waiting for the log at once (each holds a task)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ApiError(Exception):
    pass


def _body(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_REQUEST_BYTES or too_deep(data):
        raise ApiError(f"request over {MAX_REQUEST_BYTES} bytes or nested too deep")
    body = msgspec.json.decode(data) if data else {}
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object")
    return body


async def _respond(msg: Msg, verb: str, reply: dict[str, Any]) -> None:
    if msg.reply:
        try:
            await msg.respond(msgspec.json.encode(reply))
        except Exception as exc:  # e.g. a reply over the max payload
            log.warning("could not reply", verb=verb, error=str(exc)[:200])


def servers_of(info: Any, version: Any, url: Any) -> dict[str, Any]:
    """The NATS servers holding the audit stream: its leader and replicas (a cluster), or the
    one server; and the one this coordinator is connected to."""
    cluster = info.cluster
    members: list[dict[str, Any]] = []
    if cluster is not None and cluster.leader:
        members.append({"name": cluster.leader, "role": "leader", "current": True, "lag": 0})
        for peer in cluster.replicas or []:
            members.append(
                {"name": peer.name, "role": "replica", "current": bool(peer.current), "lag": int(peer.lag or 0)}
            )
    connected = f"{url.scheme}://{url.netloc}" if url is not None else None
    return {
        "cluster": cluster.name if cluster is not None else None,
        "replicas": info.config.num_replicas,
        "members": members,
        "connected": connected,
        "version": f"{version.major}.{version.minor}.{version.patch}" if version is not None else None,
    }


class Api:
    def __init__(self, coordinator: Coordinator, nc: Client) -> None:
        self.coordinator = coordinator
        self.nc = nc
        self.publisher = Publisher(nc.jetstream())
        self.subs: list[Any] = []
        self.later: set[asyncio.Task[None]] = set()  # requests waiting for the log (min_seq)
        self.waiting: Counter[str] = Counter()  # of them, by caller
        self.handlers: dict[str, Handler] = {
            "tasks": self.tasks,
            "task": self.task,
            "nodes": self.nodes,
            "validate": self.validate,
            "requests": self.requests,
            "trust": self.trust,
            "trust_reset": self.trust_reset,
            "stats": self.stats,
            "guide": self.guide,
            "grant": self.grant,
            "deny": self.deny,
            "node_revoked": self.node_revoked,
        }

    async def start(self) -> None:
        """Serve the verbs (the leader only: a request has exactly one answer)."""
        if self.subs:
            return
        for verb in self.handlers:
            self.subs.append(await self.nc.subscribe(api_subject(verb, "*"), cb=self._serve))

    async def stop(self) -> None:
        subs, self.subs = self.subs, []
        for sub in subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.warning("could not unsubscribe", error=str(exc)[:200])
        later, self.later = self.later, set()  # (a standby answers nothing)
        for task in later:
            task.cancel()
        await asyncio.gather(*later, return_exceptions=True)

    async def _serve(self, msg: Msg) -> None:
        # the caller's name is the subject's last token, which the server pins to who they are
        verb, user = api_caller(msg.subject)
        try:
            body = _body(msg.data)
            seq = int(body.get("min_seq") or 0)
        except (ApiError, msgspec.DecodeError, ValueError, TypeError) as exc:
            await _respond(msg, verb, {"ok": False, "error": str(exc)[:500]})
            return
        if seq <= self.state.seq:
            await self._answer(msg, verb, user, body)
            return
        # nats-py hands a subscription's messages to this callback one at a time: a request
        # that waits for the log waits in a task of its own, or a caller naming a position
        # the log never reaches would hold up everyone's requests behind it
        if self.waiting[user] >= MAX_WAITING:
            error = f"{MAX_WAITING} requests of {user} already wait for the log to reach their min_seq"
            await _respond(msg, verb, {"ok": False, "error": error})
            return
        self.waiting[user] += 1
        task = asyncio.create_task(self._answer_at(seq, msg, verb, user, body))
        self.later.add(task)
        task.add_done_callback(self.later.discard)

    async def _answer_at(self, seq: int, msg: Msg, verb: str, user: str, body: dict[str, Any]) -> None:
        try:
            await self.coordinator.wait_for_seq(seq)  # (at most its timeout; then answered as things are)
        finally:
            self.waiting[user] -= 1
            if not self.waiting[user]:
                del self.waiting[user]
        await self._answer(msg, verb, user, body)

    async def _answer(self, msg: Msg, verb: str, user: str, body: dict[str, Any]) -> None:
        body["_user"] = user
        try:
            reply = {"ok": True, "data": await self.handlers[verb](body)}
        except (ApiError, msgspec.DecodeError, ValueError, KeyError, TypeError, OverflowError) as exc:
            # (OverflowError: a number beyond SQLite's integers, e.g. a limit of 10**30)
            reply = {"ok": False, "error": str(exc)[:500]}
        except Exception as exc:  # a request must never take the coordinator down
            log.exception("request failed", verb=verb)
            reply = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
        await _respond(msg, verb, reply)

    @property
    def state(self):
        return self.coordinator.core.state

    async def tasks(self, body: dict[str, Any]) -> Any:
        if body.get("page"):  # {"page": true, "after": SEQ, "offset": K, "limit": N}: see views.task_page
            after, offset, limit = (int(body.get(k) or 0) for k in ("after", "offset", "limit"))
            if min(after, offset, limit) < 0:
                raise ApiError("after, offset and limit must not be negative")
            return await self._task_page(after, offset, limit)
        wanted, limit = body.get("state"), int(body.get("limit", 0))
        stored = None
        if self.state.finished:  # evicted tasks are read from their rows
            store = self.coordinator.store
            newest = limit + len(self.state.tasks) if limit > 0 else -1  # enough rows for the last `limit`
            stored = await store.task_rows(str(wanted) if wanted else None, limit=newest, newest=limit > 0)
        return views.list_tasks(self.state, wanted, limit, stored)

    async def _task_page(self, after: int, offset: int, limit: int) -> dict[str, Any]:
        state, changed, epoch = self.state, self.coordinator.changed, self.coordinator.epoch
        floor = self.coordinator.changed_floor
        if not state.finished or 0 < after < floor:
            return views.task_page(state, changed, after, offset, limit, epoch, floor=floor)
        store = self.coordinator.store
        if after > 0:
            evicted = [t for t in views.changed_since(changed, after) if t in state.finished]
            stored = await store.tasks_by_id(evicted)
            return views.task_page(state, changed, after, offset, limit, epoch, stored)
        count, last_order = await store.task_count()
        page_size = max(1, min(limit or views.PAGE_MAX, views.PAGE_MAX))
        page = await store.task_rows(offset=offset, limit=page_size) if offset < count else []
        return views.stored_page(state, page, count, last_order, offset, page_size, epoch)

    async def task(self, body: dict[str, Any]) -> Any:
        task_id = str(body.get("task_id"))
        task = self.state.tasks.get(task_id)
        if task is None and task_id in self.state.finished:
            task = (await self.coordinator.store.tasks_by_id([task_id])).get(task_id)
        if task is None:
            raise ApiError(f"unknown task {body.get('task_id')}")
        return views.task_detail(task)

    async def nodes(self, body: dict[str, Any]) -> Any:
        # a page: ``limit`` nodes (0: all) with ids after ``after``, so no reply nears the max payload
        after, limit = str(body.get("after") or ""), int(body.get("limit", 0))
        ids = sorted(i for i in self.state.nodes if i > after)
        nodes = [self.state.nodes[i] for i in (ids[:limit] if limit > 0 else ids)]
        return [views.node_summary(self.state, n, self.coordinator.live.get(n.node_id)) for n in nodes]

    async def validate(self, body: dict[str, Any]) -> Any:
        batch = [(str(t["task_id"]), [str(d) for d in t.get("after", [])]) for t in body.get("tasks", [])]
        error = check_dependencies(self.state, batch)
        if error:
            raise ApiError(error)
        return {"valid": True}

    async def requests(self, body: dict[str, Any]) -> Any:
        wanted = body.get("all")
        return [
            views.request_summary(r)
            for r in sorted(self.state.requests.values(), key=lambda r: r.asked_at)
            if wanted or r.state != "answered"
        ]

    async def trust(self, body: dict[str, Any]) -> Any:
        node_id = str(body.get("node_id"))
        node = self.state.nodes.get(node_id)
        if node is None:
            raise ApiError(f"unknown node {node_id}")
        async with (
            aiosqlite.connect(str(self.coordinator.db_path)) as db,
            db.execute(
                "SELECT seq, delta, score, task_id, cause FROM trust_changes WHERE node_id = ? ORDER BY seq",
                (node_id,),
            ) as cur,
        ):
            rows = await cur.fetchall()
        changes = [dict(zip(("seq", "delta", "score", "task_id", "cause"), row, strict=True)) for row in rows]
        stored = {c["seq"] for c in changes}
        # changes applied but not flushed yet (flushes are batched) come from memory
        changes += [
            {"seq": c.seq, "delta": c.delta, "score": c.score, "task_id": c.task_id, "cause": c.cause}
            for c in self.state.new_trust
            if c.node_id == node_id and c.seq not in stored
        ]
        return {
            "node_id": node_id,
            "score": node.trust,
            "group": self.state.trust.group(node.trust),
            "initial": self.state.trust.initial,
            "changes": changes,
        }

    async def trust_reset(self, body: dict[str, Any]) -> Any:
        node_id = str(body.get("node_id"))
        if node_id not in self.state.nodes:
            raise ApiError(f"unknown node {node_id}")
        score = body.get("score")
        event = NodeTrustReset(
            node_id=node_id,
            score=None if score is None else float(score),
            by=f"operator:{body['_user']}",
            emitter="coordinator",
        )
        return await self._decide(event) | {"node_id": node_id}

    async def node_revoked(self, body: dict[str, Any]) -> Any:
        """An operator revoked a node's credential: it is lost now, not after its heartbeats
        time out, so its work moves at once (the server has already cut it off)."""
        node_id = str(body.get("node_id"))
        node = self.state.nodes.get(node_id)
        if node is None:
            raise ApiError(f"unknown node {node_id}")
        if node.state == NodeState.LOST:
            return {"node_id": node_id, "state": node.state.value}
        event = NodeLost(node_id=node_id, reason=f"credential revoked by {body['_user']}", emitter="coordinator")
        return await self._decide(event) | {"node_id": node_id}

    async def stats(self, body: dict[str, Any]) -> Any:
        stats = self.coordinator.stats()
        try:
            info = await self.nc.jetstream(timeout=2).stream_info(AUDIT_STREAM)
            last = info.state.last_seq
            stats["log_last"], stats["lag"] = last, max(0, last - stats["seq"])
            stats["servers"] = servers_of(info, self.nc.connected_server_version, self.nc.connected_url)
        except Exception:
            pass
        keeper = self.coordinator.keeper
        if keeper is not None:
            stats["standbys"] = [
                msgspec.to_builtins(h) for h in await keeper.standbys() if h.id != self.coordinator.coordinator_id
            ]
        return stats

    def _open_request(self, body: dict[str, Any], kind: str) -> OpenRequest:
        """The request an operator answers: by id, or the task's newest unanswered one."""
        wanted = body.get("request_id")
        task_id = str(body.get("task_id"))
        if not self.state.known(task_id):
            raise ApiError(f"unknown task {task_id}")
        waiting = [
            r
            for r in self.state.requests.values()
            if r.task_id == task_id
            and r.kind == kind
            and r.state != "answered"
            and (wanted is None or r.request_id == wanted)
        ]
        if not waiting:
            raise ApiError(f"task {task_id} has no open {kind} request")
        return max(waiting, key=lambda r: r.asked_at)

    async def _decide(self, event: Event) -> dict[str, Any]:
        if not self.coordinator.leading():
            raise ApiError("this coordinator is not the leader now; ask again")
        event = msgspec.structs.replace(event, term=self.coordinator.term)  # type: ignore[call-arg]
        try:
            data = check_outgoing(event)
        except BadEvent as exc:
            raise ApiError(str(exc)) from None
        await self.publisher.publish_reliably(event, attempts=3, data=data)
        return {"task_id": getattr(event, "task_id", None), "event_id": event.id}

    async def guide(self, body: dict[str, Any]) -> Any:
        action = str(body.get("action"))
        if action not in OPERATOR_ACTIONS:
            raise ApiError(f"action must be one of {', '.join(OPERATOR_ACTIONS)}")
        request = self._open_request(body, "help")
        return await self._decide(
            GuidanceGiven(
                task_id=request.task_id,
                node_id=request.node_id,
                request_id=request.request_id,
                action=action,
                message=str(body.get("message") or ""),
                by=f"operator:{body['_user']}",
                emitter="coordinator",
            )
        )

    async def grant(self, body: dict[str, Any]) -> Any:
        request = self._open_request(body, "resource")
        amount = float(body.get("amount") or request.amount)
        return await self._decide(
            ResourceGranted(
                task_id=request.task_id,
                node_id=request.node_id,
                request_id=request.request_id,
                resource=request.resource,
                amount=amount,
                message=str(body.get("message") or "granted by operator"),
                by=f"operator:{body['_user']}",
                emitter="coordinator",
            )
        )

    async def deny(self, body: dict[str, Any]) -> Any:
        request = self._open_request(body, "resource")
        return await self._decide(
            ResourceDenied(
                task_id=request.task_id,
                node_id=request.node_id,
                request_id=request.request_id,
                resource=request.resource,
                amount=request.amount,
                reason=str(body.get("reason") or "denied by operator"),
                by=f"operator:{body['_user']}",
                emitter="coordinator",
            )
        )
