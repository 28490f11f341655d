"""The ``hive`` command line. Each command is a thin wrapper over ``HiveClient`` or a
service; problems the user can fix are one line on stderr and a non-zero exit code."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import msgspec
import structlog
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from edge import bus
from edge.config import Target, data_dir, resolve, user_of
from edge.errors import HiveError, Unreachable
from events.base import Resources
from events.subjects import AUDIT_STREAM
from events.task import TaskSpec
from hive import logs, render
from hive.client import TERMINAL, HiveClient

# no rich box-drawn tracebacks: a crash is one structlog line (see serve)
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="HiveMind: an event-sourced compute coordinator over NATS.",
)

Server = Annotated[
    Optional[str], typer.Option("--server", "-s", help="NATS URL (default: $HIVE_SERVER, then the local `hive up`)")
]
Data = Annotated[Optional[Path], typer.Option("--data", help="data directory (default: $HIVE_DATA or ./.hive)")]
Json = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
Creds = Annotated[
    Optional[Path],
    typer.Option("--creds", envvar="HIVE_CREDS", help="NATS credentials file (default: yours in DATA/auth)"),
]
Ca = Annotated[
    Optional[Path], typer.Option("--ca", envvar="HIVE_CA", help="CA of a tls:// server (default: DATA/auth/tls/ca.pem)")
]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a command's coroutine; turn user-fixable problems into one line + exit code."""
    try:
        return asyncio.run(coro)
    except HiveError as exc:
        render.err.print(f"error: {exc}")
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BrokenPipeError:
        raise typer.Exit(0) from None


def serve(main: Coroutine[Any, Any, Any]) -> None:
    """Run a long-lived service until SIGINT or SIGTERM, then let it clean up."""

    async def guarded() -> None:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        bus.stop_service = task.cancel  # the server closed us for good (revoked): stop, say why
        try:
            await task
        except asyncio.CancelledError:
            pass
        if bus.refused_for_good:
            raise Unreachable(bus.refused_for_good[-1])

    try:
        run(guarded())
    except typer.Exit:
        raise
    except Exception:
        # one log line (JSON with the traceback as a field when not on a terminal), exit 1
        structlog.get_logger("hive").exception("service crashed")
        _exit_soon(1)
        raise typer.Exit(1) from None


def _exit_soon(code: int, grace: float = 2.0) -> None:
    """A crashed service must exit even when a leaked non-daemon thread (an unclosed
    aiosqlite connection, say) would keep the interpreter waiting at shutdown."""

    def hard_exit() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    timer = threading.Timer(grace, hard_exit)
    timer.daemon = True
    timer.start()


def quiet() -> None:
    logs.configure("warning")


async def _client(
    server: str | None, data: Path | None, role: str = "client", *, creds: Path | None = None, ca: Path | None = None
) -> HiveClient:
    return await HiveClient.connect(server, data, role=role, creds=creds, ca=ca)


# -- services -----------------------------------------------------------------------------


@app.command()
def up(
    nodes: Annotated[int, typer.Option("--nodes", "-n", help="worker nodes to start")] = 2,
    port: Annotated[int, typer.Option("--port", "-p", help="NATS client port")] = 4222,
    data: Data = None,
    demo: Annotated[bool, typer.Option("--demo", help="submit a small sample workload and show it finish")] = False,
    server: Server = None,
    max_tasks: Annotated[int, typer.Option("--max-tasks", help="concurrent tasks per node")] = 4,
    tls: Annotated[bool, typer.Option("--tls", help="TLS, with a certificate from a local CA (DATA/auth/tls)")] = False,
    tls_cert: Annotated[Optional[Path], typer.Option("--tls-cert", help="TLS with your own certificate (PEM)")] = None,
    tls_key: Annotated[Optional[Path], typer.Option("--tls-key", help="its private key (PEM)")] = None,
    ca: Ca = None,
    servers: Annotated[
        int, typer.Option("--servers", help="embedded nats-servers: 3 is a local JetStream cluster (ports PORT..)")
    ] = 1,
    replicas: Annotated[
        Optional[int], typer.Option("--replicas", help="stream replicas (default: 3 with 3+ servers, else 1)")
    ] = None,
    coordinators: Annotated[
        int, typer.Option("--coordinators", help="coordinators to run: one leads (a lease), the others stand by")
    ] = 1,
    listen: Annotated[
        str, typer.Option("--listen", help="address nats-server listens on: 0.0.0.0 lets other hosts in")
    ] = "127.0.0.1",
    leaf_port: Annotated[
        Optional[int],
        typer.Option("--leaf-port", help="also listen here for leaf servers (`hive leaf`): remote sites"),
    ] = None,
    web_port: Annotated[int, typer.Option("--web-port", help="port of the web dashboard (`hive web`)")] = 8222,
    no_web: Annotated[bool, typer.Option("--no-web", help="do not start the web dashboard")] = False,
) -> None:
    """Start nats-server, the coordinator and N nodes; Ctrl-C stops everything."""
    from edge.auth.tls import TlsFiles
    from hive.up import Cluster

    logs.configure("info")
    if (tls_cert is None) != (tls_key is None) or (tls_cert is not None and ca is None):
        render.err.print("error: --tls-cert needs --tls-key, and --ca (the CA that signed it, for the services)")
        raise typer.Exit(2)
    own = None
    if tls_cert is not None and tls_key is not None and ca is not None:
        for path in (tls_cert, tls_key, ca):
            if not path.is_file():
                render.err.print(f"error: {path}: no such file")
                raise typer.Exit(2)
        own = TlsFiles(ca=ca.resolve(), cert=tls_cert.resolve(), key=tls_key.resolve())
        os.environ["HIVE_CA"] = str(own.ca)  # the services and the banner's commands verify against it
    if coordinators < 1:
        render.err.print("error: --coordinators must be at least 1")
        raise typer.Exit(2)
    if servers < 1 or (replicas is not None and not 1 <= replicas <= servers and server is None):
        render.err.print("error: --servers must be at least 1, and --replicas between 1 and --servers")
        raise typer.Exit(2)
    directory = data_dir(data)
    cluster = Cluster(
        directory,
        port=port,
        nodes=nodes,
        server=server,
        max_tasks=max_tasks,
        tls=tls,
        own_tls=own,
        servers=servers,
        replicas=replicas,
        coordinators=coordinators,
        listen=listen,
        leaf_port=leaf_port,
        web_port=None if no_web else web_port,
    )
    try:
        cluster.run(demo=demo)
    except HiveError as exc:
        cluster.stop()
        render.err.print(f"error: {exc}")
        raise typer.Exit(exc.exit_code) from None


@app.command()
def coordinator(
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
    db: Annotated[Optional[Path], typer.Option(help="projection file (default: DATA/coordinator.db)")] = None,
    missed_heartbeats: Annotated[int, typer.Option(help="heartbeats a node may miss before it is lost")] = 3,
    startup_grace: Annotated[float, typer.Option(help="seconds nodes get to show up after a (re)start")] = 5.0,
    trust_initial: Annotated[float, typer.Option(help="trust score of a new node (0..100)")] = 50.0,
    trust_floor: Annotated[float, typer.Option(help="nodes below this score get no new work until reset")] = 10.0,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    coordinator_id: Annotated[
        str, typer.Option("--id", help="this coordinator's name, unique among those running (several: one leads)")
    ] = "coordinator",
    resource_policy: Annotated[
        str,
        typer.Option(
            "--resource-policy",
            help="a task's request for more: grant_or_preempt (from free capacity), ask_operator (hive grant/deny), deny",
        ),
    ] = "grant_or_preempt",
    lease_s: Annotated[
        float,
        typer.Option(
            "--lease-s",
            help="leadership lease TTL (s): one of the coordinators running leads; 0: no lease (only ever run one)",
        ),
    ] = 2.0,
    http_port: Annotated[
        Optional[int],
        typer.Option("--http-port", help="serve /health and /metrics on 127.0.0.1:PORT (default: off)", min=0, max=65535),
    ] = None,
    keep_finished: Annotated[
        int,
        typer.Option(
            "--keep-finished", help="finished tasks kept in memory (the rest are read from SQLite when asked for)", min=0
        ),
    ] = 10_000,
) -> None:
    """Run the coordinator: projections, scheduler, policies."""
    from coordinator.core import CoreConfig
    from coordinator.policies import RESOURCE_POLICIES, PolicyConfig
    from coordinator.service import Coordinator
    from coordinator.state import TrustPolicy

    logs.configure(log_level)
    if resource_policy not in RESOURCE_POLICIES:
        render.err.print(f"error: --resource-policy must be one of {', '.join(RESOURCE_POLICIES)}")
        raise typer.Exit(2)
    directory = data_dir(data)
    service = Coordinator(
        resolve(server, "coordinator", directory, creds=creds, ca=ca),
        db or directory / f"{coordinator_id}.db",
        CoreConfig(missed_heartbeats=missed_heartbeats, startup_grace_s=startup_grace),
        TrustPolicy(initial=trust_initial, floor=trust_floor),
        coordinator_id=coordinator_id,
        http_port=http_port,
        lease_s=lease_s if lease_s > 0 else None,
        policy=PolicyConfig(resources=resource_policy),
        keep_finished=keep_finished,
    )
    serve(service.run())


node_app = typer.Typer(help="Run a worker node; `hive node enroll|revoke NAME` manage node credentials.")
app.add_typer(node_app, name="node")


@node_app.callback(invoke_without_command=True)
def node(
    ctx: typer.Context,
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
    node_id: Annotated[Optional[str], typer.Option("--id", help="node id (default: $NODE_ID or the hostname)")] = None,
    max_cpu: Annotated[Optional[float], typer.Option(help="cap the CPU cores offered ($MAX_CPU_CORES)")] = None,
    max_memory_gb: Annotated[Optional[float], typer.Option(help="cap the memory offered ($MAX_MEMORY_GB)")] = None,
    max_tasks: Annotated[Optional[int], typer.Option(help="concurrent tasks ($MAX_CONCURRENT_TASKS)")] = None,
    gpus: Annotated[Optional[str], typer.Option(help="GPU indices to offer, e.g. 0,1 (default: all)")] = None,
    docker: Annotated[
        Optional[bool], typer.Option("--docker/--no-docker", help="offer the docker executor ($DOCKER_ENABLED)")
    ] = None,
    heartbeat: Annotated[Optional[float], typer.Option(help="heartbeat interval in seconds")] = None,
    handlers: Annotated[
        Optional[list[str]], typer.Option("--handlers", help="Python module with @handler functions (repeatable)")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    http_port: Annotated[
        Optional[int],
        typer.Option("--http-port", help="serve /health and /metrics on 127.0.0.1:PORT (default: off)", min=0, max=65535),
    ] = None,
) -> None:
    """Run a worker node."""
    if ctx.invoked_subcommand is not None:
        return  # enroll / revoke
    from node.service import Node
    from node.settings import NodeSettings

    logs.configure(log_level)
    directory = data_dir(data)
    gpu_list = [int(g) for g in gpus.split(",") if g.strip()] if gpus is not None else None
    if node_id is None and not os.environ.get("NODE_ID") and (creds or os.environ.get("HIVE_CREDS")):
        # a node enrolled elsewhere is who its credential says (the server allows nothing else)
        node_id = user_of(Target("", str(creds or os.environ["HIVE_CREDS"])))
    try:
        settings = NodeSettings.from_env(
            node_id=node_id,
            data_dir=str(directory),
            max_cpu=max_cpu,
            max_memory_gb=max_memory_gb,
            max_tasks=max_tasks,
            gpus=gpu_list,
            docker=docker,
            heartbeat_s=heartbeat,
            handler_modules=handlers or [],
        )
    except (msgspec.ValidationError, ValueError) as exc:
        render.err.print(f"error: bad node setting: {exc}")
        raise typer.Exit(1) from None
    target = resolve(server, "node", directory, name=settings.node_id, creds=creds, ca=ca)
    serve(Node(target, settings, http_port=http_port).run())


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
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=render.err,
            transient=False,
            disable=as_json,
        ) as bar:
            row = bar.add_task(task_id, total=1.0)

            def on_progress(fraction: float, message: str) -> None:
                bar.update(row, completed=fraction, description=f"{task_id} {message}"[:70])

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
    quiet()

    async def go() -> None:
        async with await _client(server, data, "auditor", creds=creds, ca=ca) as hive:
            rows = await hive.tasks(state, limit)
        render.emit_json(rows) if as_json else render.out.print(render.tasks_table(rows))

    run(go())


@app.command()
def task(task_id: str, server: Server = None, creds: Creds = None, ca: Ca = None, data: Data = None, as_json: Json = False) -> None:
    """One task: its state and its whole event history."""
    quiet()

    async def go() -> None:
        async with await _client(server, data, "auditor", creds=creds, ca=ca) as hive:
            view = await hive.task(task_id)
            history = await hive.history(task_id)
        if as_json:
            render.emit_json(
                {"task": view, "events": [msgspec.to_builtins(e) | {"seq": s, "stream": st} for s, st, e in history]}
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
    quiet()

    async def go() -> None:
        async with await _client(server, data, "auditor", creds=creds, ca=ca) as hive:
            if 0 < limit <= 1000:  # one reply of the coordinator's `nodes` verb
                rows = await hive.request("nodes", {"limit": limit, "after": after})
            else:  # pages of 1,000: no reply nears the max payload
                rows = [n for n in await hive.nodes() if n["node_id"] > after][: limit or None]
        render.emit_json(rows) if as_json else render.out.print(render.nodes_table(rows))

    run(go())


def main() -> None:
    app()


__all__ = ["TERMINAL", "app", "main"]


# command groups in their own modules register on `app` when imported
for _module in ("creds", "leaf", "log", "negotiate", "results", "status", "trust", "web"):
    importlib.import_module(f"hive.commands.{_module}")
