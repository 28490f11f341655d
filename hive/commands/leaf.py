"""``hive leaf``: run a leaf server for a remote site (its nodes connect to it, it connects
to the hub), and ``hive leaf trust``, on the hub, to write what such a server must trust."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from edge.config import auth_dir, data_dir
from edge.errors import HiveError
from hive import render
from hive.cli import Ca, Data, app

leaf_app = typer.Typer(help="A leaf server for a remote site; `hive leaf trust` writes its trust file on the hub.")
app.add_typer(leaf_app, name="leaf")

TRUST = "hub-trust.json"


@leaf_app.callback(invoke_without_command=True)
def leaf(
    ctx: typer.Context,
    hub: Annotated[
        Optional[str],
        typer.Option("--hub", help="the hub's leafnode URL(s), comma-separated: nats-leaf://hub-host:7422"),
    ] = None,
    creds: Annotated[
        Optional[Path],
        typer.Option("--creds", help="the credential this site connects to the hub as (a node's: hive node enroll)"),
    ] = None,
    trust: Annotated[
        Optional[Path], typer.Option("--trust", help=f"the hub's trust file (hive leaf trust; default DATA/{TRUST})")
    ] = None,
    port: Annotated[int, typer.Option("--port", "-p", help="port the site's nodes connect to")] = 4222,
    listen: Annotated[
        str, typer.Option("--listen", help="address to listen on (0.0.0.0: other hosts too)")
    ] = "127.0.0.1",
    ca: Ca = None,
    data: Data = None,
) -> None:
    """Run a leaf server: the site's nodes connect to it (`hive node --server nats://127.0.0.1:PORT`)."""
    if ctx.invoked_subcommand is not None:
        return
    import structlog

    from hive import logs
    from hive.leaf import LeafServer

    logs.configure("info")
    log = structlog.get_logger("hive.leaf")
    if hub is None or creds is None:
        render.err.print("error: hive leaf needs --hub URL and --creds FILE (see `hive leaf --help`)")
        raise typer.Exit(2)
    directory = data_dir(data)
    trust_file = trust or directory / TRUST
    for path in (creds, trust_file):
        if not path.is_file():
            render.err.print(f"error: {path}: no such file")
            raise typer.Exit(2)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        server = LeafServer(
            directory, port, hub, creds, trust_file, directory / "logs" / "leaf-server.log", ca=ca, host=listen
        )
        assert server.log_file is not None
        server.log_file.parent.mkdir(parents=True, exist_ok=True)
        server.start()
    except HiveError as exc:
        render.err.print(f"error: {exc}")
        raise typer.Exit(exc.exit_code) from None
    log.info("leaf server ready", url=server.url, hub=hub, user=server.user, log=str(server.log_file))
    render.err.print(
        f"leaf server on {server.url}, a leaf node of {hub} as {server.user}; "
        f"nodes here: hive node --id {server.user} --creds {creds} --server {server.url}"
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    quick, up_since = 0, time.monotonic()  # exits in a row within 15 s of a start
    try:
        while True:
            time.sleep(0.5)
            code = server.poll()
            if code is None:
                continue
            quick = quick + 1 if time.monotonic() - up_since < 15 else 0
            if quick >= 5:
                render.err.print(f"error: the leaf nats-server keeps exiting; see {server.log_file}")
                raise typer.Exit(1)
            log.warning("leaf nats-server exited; restarting", code=code, log=str(server.log_file))
            time.sleep(min(10.0, 0.5 * 2**quick))
            up_since = time.monotonic()
            try:
                server.start()
            except HiveError as exc:
                log.error("leaf nats-server did not restart", error=str(exc))
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@leaf_app.command("trust")
def trust_cmd(
    out: Annotated[Path, typer.Option("--out", help="where to write it (copy it to the site)")] = Path(TRUST),
    data: Data = None,
) -> None:
    """On the hub: write the operator and account JWTs a leaf server trusts (no secrets)."""
    from hive.leaf import write_trust

    store = auth_dir(data)
    if not (store / "operator.jwt").exists():
        render.err.print(f"error: no key store at {store}: run `hive up` there first (or pass --data)")
        raise typer.Exit(1)
    write_trust(store, out)
    print(os.fspath(out))
