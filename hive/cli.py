"""The ``hive`` command line: the app, the options its commands share, and how a command
runs. The commands are in ``hive/commands/`` (each a thin wrapper over ``HiveClient``, a
``Reader`` or a service); problems the user can fix are one line on stderr and a non-zero
exit code.

What only some commands need is imported inside them: a read command (``hive.reads``)
loads neither nats-py nor structlog nor rich's progress bars, which would be a third of
its start; and ``main`` builds only the command asked for."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from edge.errors import HiveError, Unreachable
from hive import render
from hive.reads import Reader

if TYPE_CHECKING:
    from hive.client import HiveClient

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


def serve(main: Coroutine[Any, Any, Any], ready: asyncio.Event | None = None) -> None:
    """Run a long-lived service until SIGINT or SIGTERM, then let it clean up. Once
    ``ready`` is set (by the service), the collector is set for its long life (``edge.heap``)."""

    from edge import bus, heap

    async def settle() -> None:
        assert ready is not None
        await ready.wait()
        heap.settle()

    async def guarded() -> None:
        task = asyncio.ensure_future(main)
        settling = asyncio.ensure_future(settle()) if ready is not None else None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        bus.stop_service = task.cancel  # the server closed us for good (revoked): stop, say why
        try:
            await task
        except asyncio.CancelledError:
            pass
        finally:
            if settling is not None:
                settling.cancel()
        if bus.refused_for_good:
            raise Unreachable(bus.refused_for_good[-1])

    try:
        run(guarded())
    except typer.Exit:
        raise
    except Exception:
        import structlog

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
    from hive import logs  # structlog: only for commands that use nats-py, whose logs it quiets

    logs.configure("warning")


async def _client(
    server: str | None, data: Path | None, role: str = "client", *, creds: Path | None = None, ca: Path | None = None
) -> HiveClient:
    from hive.client import HiveClient

    return await HiveClient.connect(server, data, role=role, creds=creds, ca=ca)


async def _reader(server: str | None, data: Path | None, *, creds: Path | None = None, ca: Path | None = None) -> Reader:
    """A read command's connection: asks the coordinator, nothing else (``hive.reads``)."""
    return await Reader.connect(server, data, "auditor", creds=creds, ca=ca)


def main() -> None:
    """Build only the command asked for: typer turns every command's signature into click
    parameters before it parses anything, ~40 ms for the whole tree, a sixth of a read's
    budget. No command, ``--help`` or a typo gets the whole tree, to list what there is."""
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    commands = [c for c in app.registered_commands if _name_of(c) == name]
    groups = [g for g in app.registered_groups if g.name == name]
    if not commands and not groups:
        app()
        return
    pruned = typer.Typer(add_completion=False, pretty_exceptions_enable=False, help=app.info.help)
    pruned.callback()(_group)  # a group, even of one command: the command keeps its name
    pruned.registered_commands = commands
    pruned.registered_groups = groups
    pruned(prog_name="hive")


def _group() -> None:
    pass


def _name_of(command: typer.models.CommandInfo) -> str:
    return command.name or (command.callback.__name__.lower().replace("_", "-") if command.callback else "")


__all__ = ["app", "main"]


# command groups in their own modules register on `app` when imported
for _module in ("services", "work", "creds", "leaf", "log", "negotiate", "results", "status", "trust", "web"):
    importlib.import_module(f"hive.commands.{_module}")
