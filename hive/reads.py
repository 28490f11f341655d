"""Asking the coordinator: the ``hiveapi`` request-reply verbs the read commands use.

``HiveClient.request`` asks over nats-py. The read commands (``hive status``, ``nodes``,
``tasks``, ``task``, ``help-requests``, ``trust``) ask through ``Reader``, on the lean connection of
``edge.wire``: a read needs one request and its reply, and loading nats-py would cost
about 65 ms of the 250 ms a read command may take. Both read replies with ``answer`` and
page nodes with ``all_nodes``, so they cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.config import resolve, user_of
from edge.errors import Denied, HiveError, NotFound, Unreachable
from edge.fastread import read_on
from edge.wire import Conn, NoReply, Record, open_conn
from events.subjects import AUDIT_STREAM, TELEMETRY_STREAM, api_subject, task_filter

if TYPE_CHECKING:
    from events.base import Event

HISTORY_STREAMS = (AUDIT_STREAM, TELEMETRY_STREAM)  # a task's events: audit, and telemetry still kept

NODES_PAGE = 1000  # nodes per request: a reply for 10,000 nodes would be ~4.5 MB


def answer(reply: dict[str, Any]) -> Any:
    """The data of a coordinator's reply, or its error as the exception it stands for."""
    if not reply.get("ok"):
        error = str(reply.get("error"))
        raise NotFound(error) if error.startswith("unknown") else HiveError(error)
    return reply["data"]


def no_answer(verb: str, user: str) -> Unreachable:
    return Unreachable(f"no coordinator answered {verb} (is `hive coordinator` running? may {user} ask for it?)")


def refused(what: str, user: str, subject: str) -> Denied:
    return Denied(f"the server refused {what} from {user}: its role may not publish on {subject}")


async def all_nodes(ask: Callable[[dict[str, Any]], Awaitable[Any]], page: int = NODES_PAGE) -> list[dict[str, Any]]:
    """Every node, ``page`` at a time (``ask`` sends one ``nodes`` request)."""
    found: list[dict[str, Any]] = []
    while True:
        batch = await ask({"limit": page, "after": found[-1]["node_id"] if found else ""})
        if len(batch) > page or (found and batch and batch[0]["node_id"] <= found[-1]["node_id"]):
            return batch if len(batch) > page else found  # a coordinator from before pages: all of them
        found += batch
        if len(batch) < page:
            return found


class History:
    """One task's logged events, by time (``HiveClient.history`` and ``Reader.history``);
    one that does not decode is left out."""

    def __init__(self) -> None:
        from events.codec import BadEvent, decode

        self.decode, self.bad = decode, BadEvent
        self.found: list[tuple[float, int, str, Event]] = []

    def add(self, stream: str, seq: int, data: bytes) -> None:
        try:
            event = self.decode(data)
        except self.bad:
            return
        self.found.append((event.ts, seq, stream, event))

    def events(self) -> list[tuple[int, str, Event]]:
        self.found.sort(key=lambda item: (item[0], item[1]))
        return [(seq, stream, event) for _, seq, stream, event in self.found]


class Reader:
    """One lean connection, for asking; ``async with await Reader.connect(...)``."""

    def __init__(self, conn: Conn, user: str) -> None:
        self.conn = conn
        self.user = user

    @classmethod
    async def connect(
        cls,
        server: str | None = None,
        data: str | Path | None = None,
        role: str = "auditor",
        *,
        creds: str | Path | None = None,
        ca: str | Path | None = None,
    ) -> Reader:
        target = resolve(server, role, data, creds=creds, ca=ca)
        return cls(await open_conn(target, "hive-cli"), user_of(target))

    async def __aenter__(self) -> Reader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    async def request(self, verb: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> Any:
        subject = api_subject(verb, self.user)
        try:
            data = await self.conn.ask(subject, json.dumps(body or {}).encode(), timeout)
        except Denied:
            raise refused(f"the request {verb!r}", self.user, subject) from None
        except NoReply:
            raise no_answer(verb, self.user) from None
        if data is None:  # no responders: no coordinator leads right now
            raise no_answer(verb, self.user)
        return answer(json.loads(data))

    async def nodes(self, page: int = NODES_PAGE) -> list[dict[str, Any]]:
        return await all_nodes(lambda body: self.request("nodes", body), page)

    async def tasks(self, state: str | None = None, limit: int = 0) -> list[dict[str, Any]]:
        return await self.request("tasks", {"state": state, "limit": limit})

    async def task(self, task_id: str) -> dict[str, Any]:
        return await self.request("task", {"task_id": task_id})

    async def history(self, task_id: str) -> list[tuple[int, str, Event]]:
        history = History()
        for stream in HISTORY_STREAMS:

            def add(batch: list[Record], stream: str = stream) -> None:
                for seq, _, data, _ in batch:
                    history.add(stream, seq, data)

            await read_on(self.conn, stream, add, filters=[task_filter(task_id)])
        return history.events()
