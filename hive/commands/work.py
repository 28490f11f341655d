"""Work: ``hive submit``, ``cancel`` and ``drain``; the lists of tasks and nodes, and one task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional

import typer

from hive import render
from hive.cli import Ca, Creds, Data, Json, Server, _client, _reader, app, quiet, run

if TYPE_CHECKING:
    from events.task import TaskSpec


# -- writes -------------------------------------------------------------------------------


@app.command(context_settings={"allow_interspersed_args": False})
def submit(
    command: Annotated[Optional[list[str]], typer.Argument(help="command and arguments, after --")] = None,
    cpu: Annotated[float, typer.Option(help="CPU cores")] = 0.0,
    memory_gb: Annotated[float, typer.Option(help="memory in GB")] = 0.0,
    gpu: Annotated[int, typer.Option(help="GPUs")] = 0,
    gpu_memory_gb: Annotated[float, typer.Option(help="GPU memory in GB")] = 0.0,
    priority: Annotated[int, typer.Option(help="higher runs first")] = 0,
    after: Annotated[
        Optional[list[str]], typer.Option("--after", help="run after this task completed (repeatable)")
    ] = None,
    task_type: Annotated[Optional[str], typer.Option("--type", help="function handler type")] = None,
    payload: Annotated[Optional[str], typer.Option(help="JSON payload for a function task")] = None,
    image: Annotated[Optional[str], typer.Option(help="run the command in this Docker image")] = None,
    network: Annotated[bool, typer.Option("--network", help="give the container a network")] = False,
    env: Annotated[Optional[list[str]], typer.Option("--env", "-e", help="KEY=VALUE (repeatable)")] = None,
    cwd: Annotated[Optional[str], typer.Option(help="working directory of the process")] = None,
    attempts: Annotated[int, typer.Option(help="attempts before the task fails for good")] = 1,
    timeout: Annotated[Optional[float], typer.Option(help="seconds an attempt may run")] = None,
    min_trust: Annotated[Optional[str], typer.Option(help="low, medium or high")] = None,
    name: Annotated[Optional[str], typer.Option(help="a label for people")] = None,
    task_id: Annotated[Optional[str], typer.Option("--id", help="choose the task id")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="show progress until it ends; exit 1 if it failed")] = False,
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
    as_json: Json = False,
) -> None:
    """Submit a task: `hive submit -- CMD ARGS` or `hive submit --type T --payload JSON`."""
    quiet()
    try:
        parsed_payload = json.loads(payload) if payload is not None else None
    except json.JSONDecodeError as exc:
        render.err.print(f"error: --payload is not valid JSON: {exc}")
        raise typer.Exit(1) from None
    bad_env = [e for e in env or [] if "=" not in e]
    if bad_env:
        render.err.print(f"error: --env wants KEY=VALUE, got {bad_env[0]!r}")
        raise typer.Exit(1)
    if min_trust not in (None, "low", "medium", "high"):
        render.err.print("error: --min-trust must be low, medium or high")
        raise typer.Exit(1)
    executor: Literal["process", "function", "docker"] = "docker" if image else ("function" if task_type else "process")
    from events.base import Resources
    from events.task import TaskSpec

    spec = TaskSpec(
        executor=executor,
        command=list(command or []),
        env=dict(e.split("=", 1) for e in env or []),
        cwd=cwd,
        type=task_type,
        payload=parsed_payload,
        image=image,
        network=network,
        resources=Resources(cpu=cpu, memory_gb=memory_gb, gpu=gpu, gpu_memory_gb=gpu_memory_gb),
        priority=priority,
        after=list(after or []),
        max_attempts=attempts,
        timeout_s=timeout,
        min_trust=min_trust,
        name=name,  # type: ignore[arg-type]
    )
    code = run(_submit(spec, task_id, wait, server, data, as_json, creds, ca))
    raise typer.Exit(code)


async def _submit(
    spec: TaskSpec,
    task_id: str | None,
    wait: bool,
    server: str | None,
    data: Path | None,
    as_json: bool,
    creds: Path | None,
    ca: Path | None,
) -> int:
    async with await _client(server, data, creds=creds, ca=ca) as hive:
        task_id = await hive.submit(spec, task_id)
        if not wait:
            render.emit_json({"task_id": task_id}) if as_json else print(task_id)
            return 0
        if not as_json:
            render.err.print(f"submitted {task_id}")
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=render.err,
            transient=False,
            disable=as_json,
        ) as bar:
            row = bar.add_task(task_id, total=1.0)

            def on_progress(fraction: float, message: str) -> None:
                bar.update(row, completed=fraction, description=render.clean(f"{task_id} {message}"[:70]))

            final = await hive.wait(task_id, on_progress)
            if final["state"] == "completed":
                bar.update(row, completed=1.0)
        if as_json:
            render.emit_json(final)
        else:
            _print_outcome(final)
        return 0 if final["state"] == "completed" else 1


def _print_outcome(task: dict[str, Any]) -> None:
    state = task["state"]
    if state == "completed":
        render.out.print(f"{task['task_id']} completed in {task.get('duration_s') or 0:.2f}s")
        if task.get("result") is not None:
            render.out.print(json.dumps(task["result"]))
        if task.get("stdout"):
            render.out.print(task["stdout"].rstrip("\n"), markup=False)
    else:
        render.out.print(f"{task['task_id']} {state}: {task.get('error') or task.get('reason') or ''}")


@app.command()
def cancel(task_id: str, server: Server = None, creds: Creds = None, ca: Ca = None, data: Data = None, as_json: Json = False) -> None:
    """Cancel a task: dropped from the queue, or stopped where it runs."""
    quiet()

    async def go() -> None:
        async with await _client(server, data, creds=creds, ca=ca) as hive:
            task = await hive.cancel(task_id)
            render.emit_json({"task_id": task_id, "was": task["state"]}) if as_json else print(
                f"cancel requested for {task_id} (was {task['state']})"
            )

    run(go())


@app.command()
def drain(node_id: str, server: Server = None, creds: Creds = None, ca: Ca = None, data: Data = None) -> None:
    """Stop giving a node work; it finishes what it has and leaves."""
    quiet()

    async def go() -> None:
        async with await _client(server, data, creds=creds, ca=ca) as hive:
            await hive.drain(node_id)
            print(f"drain requested for {node_id}")

    run(go())


# -- reads --------------------------------------------------------------------------------


@app.command()
def tasks(
    state: Annotated[Optional[str], typer.Option(help="only tasks in this state")] = None,
    limit: Annotated[int, typer.Option(help="the most recent N (0: all)")] = 50,
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
    as_json: Json = False,
) -> None:
    """List tasks."""

    async def go() -> None:
        async with await _reader(server, data, creds=creds, ca=ca) as hive:
            rows = await hive.tasks(state, limit)
        render.emit_json(rows) if as_json else render.out.print(render.tasks_table(rows))

    run(go())


@app.command()
def task(task_id: str, server: Server = None, creds: Creds = None, ca: Ca = None, data: Data = None, as_json: Json = False) -> None:
    """One task: its state and its whole event history."""
    from events.codec import full_builtins
    from events.subjects import AUDIT_STREAM


    async def go() -> None:
        async with await _reader(server, data, creds=creds, ca=ca) as hive:
            view = await hive.task(task_id)
            history = await hive.history(task_id)
        if as_json:
            render.emit_json(
                {"task": view, "events": [full_builtins(e) | {"seq": s, "stream": st} for s, st, e in history]}
            )
            return
        who = f"  submitted by {view.get('submitted_by') or '?'}"
        if view.get("cancelled_by"):
            who += f", cancel asked by {view['cancelled_by']}"
        render.out.print(
            f"[bold]{task_id}[/bold] {view['state']}  attempt {view['attempt']}/{view['spec']['max_attempts']}{who}",
            markup=True,
        )
        table = render.Table(title=f"{len(history)} events", title_justify="left")
        for col in ("SEQ", "TIME", "EVENT", "BY", "DETAILS"):
            table.add_column(col, overflow="fold")
        for seq, stream, event in history:
            label = f"{seq}" if stream == AUDIT_STREAM else f"t{seq}"
            table.add_row(
                label, render.clock(event.ts), type(event).__name__, event.emitter, render.event_summary(event)
            )
        render.out.print(table)
        if view.get("result") is not None:
            render.out.print(f"result: {json.dumps(view['result'])}")

    run(go())


@app.command()
def nodes(
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
    as_json: Json = False,
    limit: Annotated[int, typer.Option("--limit", help="at most this many nodes (0: all)", min=0)] = 0,
    after: Annotated[str, typer.Option("--after", help="only nodes whose id sorts after this one (paging)")] = "",
) -> None:
    """List nodes with capacity, availability and trust (by id; page with --limit/--after)."""

    async def go() -> None:
        async with await _reader(server, data, creds=creds, ca=ca) as hive:
            if 0 < limit <= 1000:  # one reply of the coordinator's `nodes` verb
                rows = await hive.request("nodes", {"limit": limit, "after": after})
            else:  # pages of 1,000: no reply nears the max payload
                rows = [n for n in await hive.nodes() if n["node_id"] > after][: limit or None]
        render.emit_json(rows) if as_json else render.out.print(render.nodes_table(rows))

    run(go())
