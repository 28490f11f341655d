"""Credentials: enrol a node or add a person (a ``.creds`` file each), revoke them on the
running server, list who exists. These work on the key store that ``hive up`` keeps under
``DATA/auth`` (the operator's and the HIVE account's keys live there: run them on that
machine). A revocation is pushed to the running server as the system account's user: the
server closes the revoked connections at once and refuses them from then on; a revoked
node is also declared lost, so its work moves without waiting for its heartbeats."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from edge import auth  # its store loads on first use
from edge.config import Target, auth_dir, resolve
from edge.errors import HiveError, Invalid, NotFound
from hive import render
from hive.cli import Ca, Data, Json, Server, _client, app, quiet, run
from hive.commands.services import node_app

user_app = typer.Typer(help="Add and revoke people (client, operator, auditor).", no_args_is_help=True)
creds_app = typer.Typer(help="Who has credentials.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(creds_app, name="creds")

PERSON_ROLES = ("client", "operator", "auditor")
Out = Annotated[Optional[Path], typer.Option("--out", help="also write the credentials file here (mode 600)")]


def _store(data: Path | None) -> Path:
    store = auth_dir(data)
    if not (store / "operator.jwt").exists():
        raise HiveError(f"no key store at {store}: run `hive up` there first (or pass --data)")
    return store


def _issue(data: Path | None, role: str, name: str, out: Path | None) -> Path:
    store = _store(data)
    try:
        path = auth.issue_user(store, role, name)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out)
        out.chmod(0o600)
        path = out
    return path


async def _revoke(server: str | None, data: Path | None, name: str, ca: Path | None, node: bool) -> dict[str, Any]:
    store = _store(data)
    known = auth.users(store).get(name)
    if known is None:
        raise NotFound(f"no credentials for {name!r} in {store}")
    if (known["role"] == "node") != node:
        raise HiveError(f"{name} is a {known['role']}: use `hive {'node' if known['role'] == 'node' else 'user'} revoke`")
    account_jwt = auth.revoke_user(store, name)
    target = resolve(server, "operator", data, ca=ca)
    system = Target(target.url, str(auth.ensure(store).system_creds), target.ca)
    from edge.bus import connect

    nc = await connect(system, "hive-revoke", persistent=False)
    try:
        started = time.monotonic()
        await auth.push_account(nc, account_jwt)
        pushed_s = time.monotonic() - started
    finally:
        await nc.close()
    result: dict[str, Any] = {"name": name, "role": known["role"], "revoked": True, "pushed_s": round(pushed_s, 4)}
    if node:
        async with await _client(server, data, creds=None, ca=ca) as hive:
            try:
                result["node"] = await hive.request("node_revoked", {"node_id": name})
            except NotFound:
                result["node"] = None  # never registered: nothing to reassign
    return result


def _say_revoked(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        render.emit_json(result)
        return
    lost = " and declared it lost (its work moves now)" if result.get("node") else ""
    print(f"revoked {result['role']} {result['name']}: the server disconnected it and refuses it from now on{lost}")


@node_app.command("enroll")
def node_enroll(
    name: Annotated[str, typer.Argument(help="the node's id")],
    out: Out = None,
    data: Data = None,
    as_json: Json = False,
) -> None:
    """A credentials file for a node on another machine: `hive node --creds FILE --server URL`."""
    quiet()
    path = run(_issue_async(data, "node", name, out))
    if as_json:
        render.emit_json({"name": name, "role": "node", "creds": str(path)})
    else:
        print(f"{path}\nrun it there with: hive node --id {name} --creds {path.name} --server <this server's URL>")


@node_app.command("revoke")
def node_revoke(
    name: str, server: Server = None, ca: Ca = None, data: Data = None, as_json: Json = False
) -> None:
    """Revoke a node's credential now: disconnected, refused, its work reassigned."""
    quiet()
    _say_revoked(run(_revoke(server, data, name, ca, node=True)), as_json)


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="the person's user name (letters, digits, - and _)")],
    role: Annotated[str, typer.Option("--role", help="client, operator or auditor")] = "client",
    out: Out = None,
    data: Data = None,
    as_json: Json = False,
) -> None:
    """A credentials file for a person: `hive --creds FILE ...` or HIVE_CREDS=FILE."""
    quiet()
    if role not in PERSON_ROLES:
        render.err.print(f"error: --role must be one of {', '.join(PERSON_ROLES)}")
        raise typer.Exit(2)
    path = run(_issue_async(data, role, name, out))
    render.emit_json({"name": name, "role": role, "creds": str(path)}) if as_json else print(path)


async def _issue_async(data: Path | None, role: str, name: str, out: Path | None) -> Path:
    return _issue(data, role, name, out)


@user_app.command("revoke")
def user_revoke(
    name: str, server: Server = None, ca: Ca = None, data: Data = None, as_json: Json = False
) -> None:
    """Revoke a person's credential now: their connections are closed and refused."""
    quiet()
    _say_revoked(run(_revoke(server, data, name, ca, node=False)), as_json)


@creds_app.command("list")
def creds_list(data: Data = None, as_json: Json = False) -> None:
    """Everyone with credentials in the local key store: role, issued, revoked."""
    quiet()
    rows = run(_list(data))
    if as_json:
        render.emit_json(rows)
        return
    table = render.Table(title=f"{len(rows)} credentials", title_justify="left")
    for col in ("NAME", "ROLE", "ISSUED", "REVOKED"):
        table.add_column(col)
    for row in rows:
        revoked = render.clock(row["revoked"]) if row["revoked"] else ""
        table.add_row(row["name"], row["role"], render.clock(row["created"]), revoked)
    render.out.print(table)


async def _list(data: Path | None) -> list[dict[str, Any]]:
    store = _store(data)
    return [
        {"name": name, "role": u["role"], "created": u["created"], "revoked": u.get("revoked"), "creds": u["creds"]}
        for name, u in sorted(auth.users(store).items())
    ]

