"""How often a node heartbeats: its own interval, or the longer one the coordinator
announces for the size of the cluster (events.node.HeartbeatIntervalSet), so ten thousand
nodes do not send ten thousand heartbeats a second. The announcement is an audit event:
the node reads the one in force when it starts and follows new ones on core NATS."""

from __future__ import annotations

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from events.codec import BadEvent, decode
from events.node import HeartbeatIntervalSet
from events.subjects import AUDIT_STREAM, subject_for

log = structlog.get_logger("hive.node")

SUBJECT = subject_for(HeartbeatIntervalSet(interval_s=0.0))


class Cadence:
    def __init__(self, own_s: float) -> None:
        self.own_s = own_s
        self.announced_s = 0.0

    @property
    def interval_s(self) -> float:
        return max(self.own_s, self.announced_s)

    def take(self, data: bytes, subject: str) -> None:
        try:
            event = decode(data, subject)
        except BadEvent:
            return
        if isinstance(event, HeartbeatIntervalSet) and event.interval_s != self.announced_s:
            self.announced_s = event.interval_s
            log.info("heartbeat interval", announced_s=event.interval_s, interval_s=self.interval_s)

    async def follow(self, nc: Client, js: JetStreamContext) -> None:
        async def on_msg(msg: Msg) -> None:
            self.take(msg.data, msg.subject)

        await nc.subscribe(SUBJECT, cb=on_msg)
        try:
            last = await js.get_last_msg(AUDIT_STREAM, SUBJECT)
        except NotFoundError:  # none announced yet: our own interval
            return
        except Exception as exc:  # no answer: our own interval, until one is announced
            if "not found" not in str(exc).lower():
                log.warning("could not read the announced heartbeat interval", error=str(exc)[:200])
            return
        self.take(last.data or b"", SUBJECT)
