"""The long-running services: ``hive up``, ``hive coordinator`` and ``hive node``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from edge.config import Target, data_dir, resolve, user_of
from edge.errors import HiveError
from hive import render
from hive.cli import Ca, Creds, Data, Server, app, serve

if TYPE_CHECKING:
    pass

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
    from hive import logs
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
    from hive import logs

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
    ready = asyncio.Event()
    serve(service.run(ready), ready)


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
    import msgspec

    from hive import logs
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
    ready = asyncio.Event()
    serve(Node(target, settings, http_port=http_port).run(ready), ready)
