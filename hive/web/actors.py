"""NATS connections of the web service: one to read, one per person who acts.

Reads (lists, details, the log) go through one connection with the service's own
auditor credential. An action goes over a connection with the acting person's own
credential from the key store, so the server applies that person's permissions and the
log names them (submitted_by, cancelled_by), exactly as if they had used the CLI.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog

from edge.bus import connect
from edge.config import Target, local_creds, resolve, user_of
from edge.errors import HiveError
from hive.client import HiveClient, Refusals
from hive.web.auth import Person

log = structlog.get_logger("hive.web")

READER_NAME = "web"  # the service's own person in the key store: an auditor


async def client_for(target: Target, name: str, persistent: bool) -> HiveClient:
    """A HiveClient over ``target``. ``persistent``: reconnect forever, and stop the service
    if the server closes it for good (the reader); a person's connection just closes."""
    refusals = Refusals()
    nc = await connect(target, f"hive-web:{name}", deadline=5.0, persistent=persistent, on_denied=refusals.add)
    client = HiveClient(nc, user_of(target) if target.creds else name)
    client.refusals = refusals
    return client


def reader_target(server: str | None, data: Path, creds: Path | None, ca: Path | None) -> Target:
    """The reading connection: ``--creds``, else the service's auditor in the key store."""
    chosen = creds or local_creds(data, "auditor", READER_NAME)
    return resolve(server, "auditor", data, name=READER_NAME, creds=chosen, ca=ca)


class Actors:
    """One cached connection per acting person; dropped when their role changed."""

    def __init__(self, server: str | None, data: Path, ca: Path | None) -> None:
        self.server, self.data, self.ca = server, data, ca
        self.clients: dict[str, tuple[str, HiveClient]] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def get(self, person: Person) -> HiveClient:
        async with self.locks.setdefault(person.name, asyncio.Lock()):
            cached = self.clients.get(person.name)
            if cached is not None:
                role, client = cached
                if role == person.role and not client.nc.is_closed:
                    return client
                await self.drop(person.name)
            creds = local_creds(self.data, person.role, person.name)
            if creds is None:
                raise HiveError(f"no key store in {self.data}: cannot act as {person.name}")
            target = resolve(self.server, person.role, self.data, name=person.name, creds=creds, ca=self.ca)
            client = await client_for(target, person.name, persistent=False)
            self.clients[person.name] = (person.role, client)
            log.info("connected as a person", person=person.name, role=person.role)
            return client

    async def drop(self, name: str) -> None:
        cached = self.clients.pop(name, None)
        if cached is not None:
            try:
                await cached[1].close()
            except Exception as exc:  # closing a dead connection must not fail the request
                log.debug("close failed", person=name, error=str(exc))

    async def close(self) -> None:
        for name in list(self.clients):
            await self.drop(name)
