"""Tables and one-line summaries for the command line (rich), and --json output.

rich is imported when ``out``, ``err`` or ``Table`` is first used, not before: a ``--json``
read needs none of it, and it was a sixth of such a command's start."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from events.base import Event

    out: Console
    err: Console


# What moves a terminal rather than writing text: the C0 controls but tab and newline, DEL
# and the C1 controls; and the bidirectional overrides, which make text read other than it
# is. What others wrote (a task's name and output, a node's hostname, a progress message) is
# shown with each of them replaced, so none of it can clear the operator's screen, retitle
# the window, plant a link or disguise itself; markup is off for the same reason.
_BIDI = [0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_CONTROLS = dict.fromkeys([*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0), *_BIDI], "\ufffd")


def clean(text: str) -> str:
    """``text`` with every terminal control character replaced by U+FFFD."""
    return text.translate(_CONTROLS)


def _cleaned(values: tuple[Any, ...]) -> Iterator[Any]:
    return (clean(v) if isinstance(v, str) else v for v in values)


def __getattr__(name: str) -> Any:
    """``out``, ``err`` and ``Table`` (rich's, cleaning what they show), made on first use."""
    if name == "Table":
        value: Any = _table_class()
    elif name in ("out", "err"):
        from rich.console import Console

        class CleanConsole(Console):
            def print(self, *objects: Any, **kwargs: Any) -> None:
                super().print(*_cleaned(objects), **kwargs)

        if name == "out":  # a pipe or a file gets wide tables rather than rich's 80-column default
            value = CleanConsole(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)
        else:
            value = CleanConsole(stderr=True, highlight=False, markup=False, soft_wrap=True)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def _table() -> Any:
    """``Table``; inside this module a global name skips ``__getattr__``."""
    return globals().get("Table") or _table_class()


def _table_class() -> Any:
    from rich.table import Table

    class CleanTable(Table):
        def add_row(self, *renderables: Any, **kwargs: Any) -> None:
            super().add_row(*_cleaned(renderables), **kwargs)

    globals()["Table"] = CleanTable
    return CleanTable


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def ago(ts: float | None) -> str:
    if not ts:
        return "-"
    delta = max(0.0, time.time() - ts)
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    return f"{delta / 3600:.1f}h ago"


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"


def tasks_table(tasks: list[dict[str, Any]]) -> Table:
    table = _table()(title=f"{len(tasks)} tasks", title_justify="left")
    for col in ("TASK", "STATE", "EXECUTOR", "WHAT", "PRI", "ATTEMPT", "NODE", "BY", "SUBMITTED", "INFO"):
        table.add_column(col, overflow="fold")
    for t in tasks:
        info = t.get("error") or t.get("reason") or ""
        if t.get("waiting_on"):
            info = "after " + ",".join(t["waiting_on"])
        table.add_row(
            t["task_id"],
            t["state"],
            t["executor"],
            (t.get("what") or "")[:40],
            str(t["priority"]),
            f"{t['attempt']}/{t['max_attempts']}",
            t.get("node_id") or "-",
            t.get("submitted_by") or "-",
            ago(t["submitted_at"]),
            str(info)[:60],
        )
    return table


def _res(r: dict[str, Any]) -> str:
    text = f"{r['cpu']:g} cpu, {r['memory_gb']:.1f} GB"
    if r.get("gpu"):
        text += f", {r['gpu']} gpu ({r['gpu_memory_gb']:.0f} GB)"
    return text


def nodes_table(nodes: list[dict[str, Any]]) -> Table:
    table = _table()(title=f"{len(nodes)} nodes", title_justify="left")
    for col in (
        "NODE",
        "STATE",
        "RUNNING",
        "CAPACITY",
        "AVAILABLE",
        "CPU%",
        "EXECUTORS",
        "TRUST",
        "DONE/FAILED",
        "SEEN",
    ):
        table.add_column(col, overflow="fold")
    for n in nodes:
        table.add_row(
            n["node_id"],
            n["state"],
            f"{n['running']}/{n['max_tasks']}",
            _res(n["capacity"]),
            _res(n["available"]),
            f"{live['cpu_percent']:.0f}" if (live := n.get("live")) else "-",
            ",".join(n["executors"]),
            f"{n['trust']:g} ({n['trust_group']})",
            f"{n['completed']}/{n['failed']}",
            ago(live["at"]) if live else "-",
        )
    return table


def event_summary(event: Event) -> str:
    skip = {"id", "ts", "emitter", "causation_id", "task_id", "spec", "stdout", "stderr"}
    parts = []
    for field in event.__struct_fields__:
        if field in skip:
            continue
        value = getattr(event, field)
        if value in (None, "", [], {}, 0.0) and field not in ("attempt", "exit_code"):
            continue
        parts.append(f"{field}={value}")
    spec = getattr(event, "spec", None)
    if spec is not None and type(event).__name__ == "TaskSubmitted":
        what = spec.type if spec.executor == "function" else " ".join(spec.command)
        parts.insert(0, f"{spec.executor}: {what}")
    return " ".join(parts)[:160]
