"""Node trust: show a node's score and group, explain how it got there, reset it.

The coordinator keeps the score in its projection (``TrustPolicy`` in coordinator/state.py:
+2 per completion, -5 per failure the node is to blame for, clamped to 0..100) and logs every
change; a reset is a ``NodeTrustReset`` decision the coordinator publishes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from edge.errors import HiveError
from hive import render
from hive.cli import Ca, Creds, Data, Json, Server, _client, _reader, app, quiet, run

if TYPE_CHECKING:
    from hive.client import HiveClient

# how long a reset waits for the coordinator's projection to show it
RESET_WAIT_S = 5.0
RESET_CAUSE = "reset by operator"  # what coordinator.projection logs for a NodeTrustReset


@app.command("trust")
def trust(
    node_id: Annotated[str, typer.Argument(help="node id")],
    explain: Annotated[bool, typer.Option("--explain", help="list every trust change")] = False,
    reset: Annotated[bool, typer.Option("--reset", help="set the score back (default: the initial score)")] = False,
    score: Annotated[Optional[float], typer.Option("--score", help="with --reset: the score to set (0..100)")] = None,
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
    as_json: Json = False,
) -> None:
    """A node's trust score and group (high >= 80, medium >= 50, else low); --reset sets it."""
    problem = _check_options(reset, score)
    if problem:
        render.err.print(f"error: {problem}")
        raise typer.Exit(1)
    run(_trust(node_id, explain, reset, score, server, data, as_json, creds, ca))


def _check_options(reset: bool, score: float | None) -> str | None:
    if score is not None and not reset:
        return "--score needs --reset"
    if score is not None and not 0.0 <= score <= 100.0:
        return "--score must be between 0 and 100"
    return None


async def _trust(
    node_id: str,
    explain: bool,
    reset: bool,
    score: float | None,
    server: str | None,
    data: Path | None,
    as_json: bool,
    creds: Path | None = None,
    ca: Path | None = None,
) -> None:
    # reading is an auditor's right; a reset is an operator's (the client role, over nats-py)
    if reset:
        quiet()
    connecting = _client(server, data, "client", creds=creds, ca=ca) if reset else _reader(server, data, creds=creds, ca=ca)
    async with await connecting as hive:
        report = await hive.request("trust", {"node_id": node_id})
        if reset:
            report = await _reset(hive, node_id, score, max((c["seq"] for c in report["changes"]), default=0))
    if reset and not as_json:
        render.out.print(f"trust of {node_id} reset to {report['reset']['score']:g}")
    _show(report, explain, as_json)


async def _reset(hive: HiveClient, node_id: str, score: float | None, after_seq: int) -> dict[str, Any]:
    """Ask for the reset, then wait until the projection has logged it (a reset change past
    ``after_seq``); the report then carries that change as ``reset``. Its score is the current
    one, which work finished since the reset may already have moved."""
    await hive.request("trust_reset", {"node_id": node_id, "score": score})
    deadline = time.monotonic() + RESET_WAIT_S
    while True:
        report = await hive.request("trust", {"node_id": node_id})
        done = [c for c in report["changes"] if c["seq"] > after_seq and c["cause"] == RESET_CAUSE]
        if done:
            return report | {"reset": done[0]}
        if time.monotonic() > deadline:
            raise HiveError(f"trust reset of {node_id} sent, but the coordinator has not applied it yet")
        await asyncio.sleep(0.05)


def _show(report: dict[str, Any], explain: bool, as_json: bool) -> None:
    if as_json:
        render.emit_json(report if explain else {k: v for k, v in report.items() if k != "changes"})
        return
    render.out.print(f"{report['node_id']}: {report['score']:g} ({report['group']})")
    if explain:
        render.out.print(_changes_table(report))


def _changes_table(report: dict[str, Any]) -> render.Table:
    changes = report["changes"]
    table = render.Table(title=f"{len(changes)} changes from {report['initial']:g}", title_justify="left")
    for col in ("SEQ", "DELTA", "SCORE", "TASK", "CAUSE"):
        table.add_column(col, overflow="fold")
    for c in changes:
        table.add_row(str(c["seq"]), f"{c['delta']:+g}", f"{c['score']:g}", c["task_id"] or "-", c["cause"])
    return table
