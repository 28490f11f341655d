"""``hive web``: run the dashboard; ``hive web token NAME``: a login URL for a person."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from edge import auth  # its store loads on first use
from edge.config import PERSON_ROLES, auth_dir, data_dir
from hive import render
from hive.cli import Ca, Creds, Data, Server, app, serve

DEFAULT_PORT = 8222

web_app = typer.Typer(help="The web dashboard: `hive web` runs it, `hive web token NAME` prints a login URL.")
app.add_typer(web_app, name="web")


@web_app.callback(invoke_without_command=True)
def web(
    ctx: typer.Context,
    port: Annotated[int, typer.Option("--port", "-p", help="HTTP port (0: any free one)")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option("--host", help="address to listen on (keep it local unless behind TLS)")] = "127.0.0.1",
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
    lag_limit: Annotated[int, typer.Option(help="/health fails when the coordinator is this far behind")] = 1000,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run the web dashboard and its REST API (a service of its own)."""
    if ctx.invoked_subcommand is not None:
        return
    from hive import logs
    from hive.web.app import serve as serve_web

    logs.configure(log_level)
    directory = data_dir(data)
    serve(serve_web(server, directory, creds, ca, host, port, lag_limit))


@web_app.command("token")
def token(
    name: Annotated[str, typer.Argument(help="a person in the key store (`hive creds list`)")],
    ttl: Annotated[float, typer.Option("--ttl", help="hours the login stays valid")] = 168.0,
    url: Annotated[
        Optional[str], typer.Option("--url", help="the dashboard's address (default: http://127.0.0.1:8222)")
    ] = None,
    data: Data = None,
) -> None:
    """Print a login URL (and token) for an existing person; their role comes from the key store."""
    print(login_url(data_dir(data), name, ttl * 3600, url or f"http://127.0.0.1:{DEFAULT_PORT}"))


def login_url(directory: Path, name: str, ttl_s: float, base: str) -> str:
    from hive.web.auth import load_secret, sign

    store = auth_dir(directory)
    known = auth.users(store).get(name) if (store / "users.json").exists() else None
    if known is None:
        render.err.print(f"error: no person {name!r} in {store} (add one: `hive user add {name}`)")
        raise typer.Exit(2)
    if known["role"] not in PERSON_ROLES:
        render.err.print(f"error: {name} is a {known['role']}, not a person (operator, client or auditor)")
        raise typer.Exit(2)
    if known.get("revoked"):
        render.err.print(f"error: {name}'s credential was revoked")
        raise typer.Exit(2)
    if ttl_s <= 0:
        render.err.print("error: --ttl must be positive")
        raise typer.Exit(2)
    return f"{base.rstrip('/')}/?token={sign(load_secret(store), name, ttl_s)}"
