"""Pure parts of the API: task filters, sorting and paging; subject wildcards; positions.

The coordinator's ``tasks`` verb filters by state only, so the web service filters, sorts
and pages the list it holds (``hive.web.live.Hub.task_list``); these functions do that
work on plain dicts and are what the unit tests check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from coordinator.state import TaskState
from events.limits import ID_PATTERN

TASK_STATES = tuple(s.value for s in TaskState)  # "retrying" too: a filter for it must not be refused
SORT_KEYS = ("submitted_at", "updated_at", "priority", "state", "task_id", "node_id", "duration_s", "attempt")
MAX_LIMIT = 500
MAX_TEXT = 200
_ID = re.compile(ID_PATTERN)


class BadQuery(ValueError):
    """A query parameter out of range, in one line."""


@dataclass(frozen=True)
class TaskQuery:
    state: str | None = None
    node: str | None = None
    type: str | None = None  # the executor, or a function's type
    priority: int | None = None
    submitter: str | None = None
    text: str | None = None
    sort: str = "submitted_at"
    descending: bool = True
    offset: int = 0
    limit: int = 50
    fields: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, params: dict[str, str]) -> TaskQuery:
        known = {"state", "node", "type", "priority", "submitter", "q", "sort", "order", "offset", "limit", "min_seq"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise BadQuery(f"unknown query parameter {unknown[0]!r}: use {', '.join(sorted(known))}")
        state = params.get("state") or None
        if state is not None and state not in TASK_STATES:
            raise BadQuery(f"state must be one of {', '.join(TASK_STATES)}")
        sort = params.get("sort") or "submitted_at"
        if sort not in SORT_KEYS:
            raise BadQuery(f"sort must be one of {', '.join(SORT_KEYS)}")
        order = params.get("order") or "desc"
        if order not in ("asc", "desc"):
            raise BadQuery("order must be asc or desc")
        text = params.get("q") or None
        if text is not None and len(text) > MAX_TEXT:
            raise BadQuery(f"q is at most {MAX_TEXT} characters")
        for name in ("node", "submitter"):
            if params.get(name) and not _ID.search(params[name]):
                raise BadQuery(f"{name} must be an id: letters, digits, '-' and '_' (1 to 64)")
        if len(params.get("type") or "") > 128:
            raise BadQuery("type is at most 128 characters")
        return cls(
            state=state,
            node=params.get("node") or None,
            type=params.get("type") or None,
            priority=_int(params, "priority", None, -1_000_000, 1_000_000),
            submitter=params.get("submitter") or None,
            text=text.lower() if text else None,
            sort=sort,
            descending=order == "desc",
            offset=_int(params, "offset", 0, 0, 10_000_000) or 0,
            limit=_int(params, "limit", 50, 1, MAX_LIMIT) or 50,
        )

    def matches(self, task: dict[str, Any]) -> bool:
        if self.state and task.get("state") != self.state:
            return False
        if self.node and task.get("node_id") != self.node:
            return False
        if self.type and self.type not in (task.get("executor"), _function_type(task)):
            return False
        if self.priority is not None and task.get("priority") != self.priority:
            return False
        if self.submitter and task.get("submitted_by") != self.submitter:
            return False
        if self.text:
            haystack = " ".join(str(task.get(k) or "") for k in ("task_id", "name", "what", "error", "reason"))
            if self.text not in haystack.lower():
                return False
        return True


def _function_type(task: dict[str, Any]) -> str | None:
    return task.get("what") if task.get("executor") == "function" else None


def _int(params: dict[str, str], name: str, default: int | None, low: int, high: int) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise BadQuery(f"{name} must be between {low} and {high}")
    return value


def page(tasks: Iterable[dict[str, Any]], query: TaskQuery) -> dict[str, Any]:
    """One page of the tasks that match, sorted; with the total that matched."""
    chosen = [t for t in tasks if query.matches(t)]
    # missing values (no node yet, no duration) sort last either way; the task id breaks
    # ties, so paging stays stable while the list changes
    present = [t for t in chosen if t.get(query.sort) is not None]
    absent = [t for t in chosen if t.get(query.sort) is None]
    present.sort(key=lambda t: (t[query.sort], t["task_id"]), reverse=query.descending)
    absent.sort(key=lambda t: t["task_id"], reverse=query.descending)
    ordered = present + absent
    rows = ordered[query.offset : query.offset + query.limit]
    return {"total": len(chosen), "offset": query.offset, "limit": query.limit, "tasks": rows}


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS wildcard matching: ``*`` one token, ``>`` one or more at the end."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(have) == len(want)


def valid_pattern(pattern: str) -> bool:
    if not pattern or len(pattern) > 256 or any(c.isspace() for c in pattern):
        return False
    tokens = pattern.split(".")
    return all(tokens) and ">" not in tokens[:-1] and all(t in ("*", ">") or not set(t) & {"*", ">"} for t in tokens)


@dataclass(frozen=True)
class Position:
    """Where a reader of the log stands: the last sequence seen in each stream."""

    audit: int = 0
    telemetry: int = 0

    @classmethod
    def parse(cls, text: str | None) -> Position | None:
        """``A`` or ``A:T`` (what an SSE ``id`` carries); None for nothing given."""
        if not text:
            return None
        parts = text.split(":")
        if len(parts) > 2 or not all(p.isdigit() and len(p) <= 18 for p in parts):
            raise BadQuery("a position is AUDIT_SEQ or AUDIT_SEQ:TELEMETRY_SEQ (digits)")
        audit = int(parts[0])
        return cls(audit, int(parts[1]) if len(parts) == 2 else 0)

    def __str__(self) -> str:
        return f"{self.audit}:{self.telemetry}"
