"""Negotiation policies: pure answers to help and resource requests (filled in with the
failure-handling work)."""

from __future__ import annotations

from coordinator.state import ClusterState
from events.base import Event


def answer_requests(state: ClusterState, now: float, emitter: str) -> list[Event]:
    return []
