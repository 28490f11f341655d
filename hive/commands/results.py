"""``hive results TASK``: download a task's result files from the object store.

A task's files are what it wrote under ``<workspace>/out`` (``/workspace/out`` in a
container); the node stores them as ``<task_id>/<name>`` in the results bucket and lists
name, size and sha256 in the completion event, which is what this command reads and checks.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from edge.errors import HiveError
from events.subjects import RESULTS_BUCKET
from hive import render
from hive.cli import Ca, Creds, Data, Json, Server, _client, app, quiet, run

if TYPE_CHECKING:
    from nats.js.object_store import ObjectStore


@app.command("results")
def results(
    task_id: Annotated[str, typer.Argument(help="task id")],
    directory: Annotated[
        Optional[Path], typer.Option("--dir", "-d", help="where to put the files (default: ./results/TASK)")
    ] = None,
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
    as_json: Json = False,
) -> None:
    """Download the files a task wrote under /workspace/out (its workspace's out/) and check their digests."""
    quiet()
    run(_results(task_id, directory or Path("results") / task_id, server, data, as_json, creds, ca))


async def _results(
    task_id: str, directory: Path, server: str | None, data: Path | None, as_json: bool, creds: Path | None, ca: Path | None
) -> None:
    from nats.js.errors import NotFoundError

    async with await _client(server, data, creds=creds, ca=ca) as hive:
        task = await hive.task(task_id)
        outputs: list[dict[str, Any]] = task.get("outputs") or []
        if not outputs:
            _nothing(task, as_json)
            return
        try:
            store = await hive.js.object_store(RESULTS_BUCKET)
        except NotFoundError:
            raise HiveError(f"no results bucket {RESULTS_BUCKET!r} on this server") from None
        files = [await _download(store, task_id, output, directory) for output in outputs]
    if as_json:
        render.emit_json({"task_id": task_id, "dir": str(directory), "files": files})
    else:
        render.out.print(_table(task_id, directory, files))


def _nothing(task: dict[str, Any], as_json: bool) -> None:
    task_id, state = task["task_id"], task["state"]
    if state != "completed":
        raise HiveError(f"task {task_id} is {state}: only a completed task has result files")
    if as_json:
        render.emit_json({"task_id": task_id, "dir": None, "files": []})
    else:
        render.err.print(f"task {task_id} completed without result files (nothing under /workspace/out)")


def _target(directory: Path, name: str) -> Path:
    """Where ``name`` goes under ``directory``; a name that would leave it is refused."""
    root = directory.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path == root:
        raise HiveError(f"refusing result file name {name!r}: it leaves {directory}")
    return path


class _HashingWriter:
    """What the object store writes into: the file, with a running sha256."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.file.write(data)


async def _download(store: ObjectStore, task_id: str, output: dict[str, Any], directory: Path) -> dict[str, Any]:
    from nats.js.errors import NotFoundError

    from node.results import object_name

    name = output["name"]
    path = _target(directory, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        with partial.open("wb") as file:
            writer = _HashingWriter(file)
            await store.get(object_name(task_id, name), writeinto=writer)  # type: ignore[arg-type]
    except NotFoundError:
        partial.unlink(missing_ok=True)
        raise HiveError(f"result file {name} of {task_id} is not in the object store") from None
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise HiveError(f"could not download {name}: {exc or type(exc).__name__}") from None
    digest = writer.sha.hexdigest()
    if digest != output["sha256"] or writer.size != output["size"]:
        partial.unlink(missing_ok=True)
        raise HiveError(f"{name}: stored file does not match the completion event (sha256 {digest[:12]}…)")
    os.replace(partial, path)  # only a checked file gets the real name
    return {"name": name, "size": writer.size, "sha256": digest, "path": str(path)}


def _table(task_id: str, directory: Path, files: list[dict[str, Any]]) -> render.Table:
    table = render.Table(title=f"{len(files)} files of {task_id} in {directory}", title_justify="left")
    for col in ("NAME", "SIZE", "SHA256"):
        table.add_column(col, overflow="fold")
    for f in files:
        table.add_row(f["name"], str(f["size"]), f["sha256"][:16])
    return table
