"""Operator answers to the seed's negotiation: help requests, guidance, resource grants."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hive import render
from hive.cli import Ca, Creds, Data, Json, Server, _client, _reader, app, quiet, run


def _answer(
    verb: str, body: dict[str, Any], server: str | None, data: Path | None, done: str, creds: Path | None, ca: Path | None
) -> None:
    quiet()

    async def go() -> None:
        async with await _client(server, data, creds=creds, ca=ca) as hive:
            await hive.request(verb, body)
        print(done)

    run(go())


@app.command("help-requests")
def help_requests(
    show_all: Annotated[bool, typer.Option("--all", help="answered ones too")] = False,
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
    as_json: Json = False,
) -> None:
    """List help and resource requests waiting for an answer."""

    async def go() -> None:
        async with await _reader(server, data, creds=creds, ca=ca) as hive:
            rows = await hive.request("requests", {"all": show_all})
        if as_json:
            render.emit_json(rows)
            return
        table = render.Table(title=f"{len(rows)} requests", title_justify="left")
        for col in ("REQUEST", "TASK", "NODE", "KIND", "WHAT", "STATE", "ASKED", "ANSWER"):
            table.add_column(col, overflow="fold")
        for r in rows:
            what = r["problem"] if r["kind"] == "help" else f"{r['amount']:g} {r['resource']}: {r['problem']}"
            kind = f"help/{r['help_kind']}" if r["kind"] == "help" else "resource"
            table.add_row(
                r["request_id"],
                r["task_id"],
                r["node_id"],
                kind,
                what[:60],
                r["state"],
                render.ago(r["asked_at"]),
                r["answer"][:40],
            )
        render.out.print(table)

    run(go())


@app.command()
def guide(
    task_id: str,
    action: Annotated[str, typer.Option(help="retry, skip, wait, fail or continue")],
    message: Annotated[str, typer.Option(help="a note for the task")] = "",
    request_id: Annotated[Optional[str], typer.Option("--request", help="which request (default: the newest)")] = None,
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
) -> None:
    """Answer a task's help request."""
    body = {"task_id": task_id, "action": action, "message": message, "request_id": request_id}
    _answer("guide", body, server, data, f"guidance {action} sent to {task_id}", creds, ca)


@app.command()
def grant(
    task_id: str,
    amount: Annotated[Optional[float], typer.Option(help="how much (default: what was asked)")] = None,
    message: Annotated[str, typer.Option(help="a note for the task")] = "",
    request_id: Annotated[Optional[str], typer.Option("--request", help="which request (default: the newest)")] = None,
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
) -> None:
    """Grant a task's resource request."""
    body = {"task_id": task_id, "amount": amount, "message": message, "request_id": request_id}
    _answer("grant", body, server, data, f"granted to {task_id}", creds, ca)


@app.command()
def deny(
    task_id: str,
    reason: Annotated[str, typer.Option(help="why")] = "denied by operator",
    request_id: Annotated[Optional[str], typer.Option("--request", help="which request (default: the newest)")] = None,
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
) -> None:
    """Deny a task's resource request."""
    _answer("deny", {"task_id": task_id, "reason": reason, "request_id": request_id}, server, data, f"denied {task_id}", creds, ca)
