"""Result files: what a task leaves under ``<workspace>/out`` goes to the object store.

Each regular file is stored in the ``RESULTS_BUCKET`` object store as
``<task_id>/<relative path>`` and described (name, size, sha256) in the completion event.
Symbolic links and other non-regular files are skipped: a task could point one at any file
of the node. Sizes are bounded per file, per task and in number of files; what is over a
bound is logged and left out, and the completion event lists only what was stored.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import stat
from pathlib import Path

import structlog
from nats.js import JetStreamContext
from nats.js.api import ObjectInfo
from nats.js.errors import NotFoundError
from nats.js.object_store import ObjectStore

from events.subjects import RESULTS_BUCKET
from events.task import OutputFile

log = structlog.get_logger("hive.node.results")

MAX_FILE_BYTES = 512 * 1024**2
MAX_TASK_BYTES = 2 * 1024**3
MAX_FILES = 1000


def object_name(task_id: str, name: str) -> str:
    return f"{task_id}/{name}"


def _regular_files(out_dir: Path) -> list[tuple[str, Path, int]]:
    """(relative name, path, size) of every regular file under ``out_dir``, sorted; links not followed."""
    if not out_dir.is_dir() or out_dir.is_symlink():
        return []
    found = []
    for root, _dirs, files in os.walk(out_dir, followlinks=False):
        for file in files:
            path = Path(root) / file
            try:
                info = path.lstat()
            except OSError:
                continue  # gone meanwhile
            if stat.S_ISREG(info.st_mode):
                found.append((path.relative_to(out_dir).as_posix(), path, info.st_size))
            else:
                log.warning("result: not a regular file; not stored", file=str(path.relative_to(out_dir)))
    return sorted(found)


class _Hashing(io.RawIOBase):
    """A file reader that hashes what the object store reads, to check what it stored."""

    def __init__(self, raw: io.BufferedReader) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        n = self.raw.readinto(buffer)
        if n:
            self.sha.update(memoryview(buffer)[:n])
        return n or 0


def _hex_digest(digest: str | None) -> str:
    """The object store's ``SHA-256=<urlsafe base64>`` as hex."""
    encoded = (digest or "").split("=", 1)[-1]
    return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()


def _sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            sha.update(chunk)
    return sha.hexdigest()


async def _put(store: ObjectStore, task_id: str, relative: str, path: Path) -> OutputFile:
    name = object_name(task_id, relative)
    earlier = await _stored(store, name)
    if earlier is not None and _hex_digest(earlier.digest) == await asyncio.to_thread(_sha256, path):
        # an earlier attempt stored the same file: replacing it would only churn the bucket
        return OutputFile(name=relative, size=earlier.size or 0, sha256=_hex_digest(earlier.digest))
    with path.open("rb") as raw:
        reader = _Hashing(raw)
        try:
            info = await store.put(name, reader)  # type: ignore[arg-type]
        except Exception as exc:
            # replacing an earlier upload (a retried task) ends with a purge of the old chunks,
            # which may fail after the new object is stored: accept it when it is ours
            stored = await _stored(store, name)
            if stored is None or _hex_digest(stored.digest) != reader.sha.hexdigest():
                raise
            log.warning("result: stored, but the old version could not be removed", file=name, error=str(exc))
            info = stored
    return OutputFile(name=relative, size=info.size or 0, sha256=_hex_digest(info.digest))


async def _stored(store: ObjectStore, name: str) -> ObjectInfo | None:
    try:
        return await store.get_info(name)
    except Exception:  # not there, or the server did not answer: either way not known to be stored
        return None


async def upload_outputs(js: JetStreamContext, task_id: str, out_dir: Path) -> list[OutputFile]:
    """Store every file under ``out_dir`` and describe them (name, size, sha256)."""
    files = await asyncio.to_thread(_regular_files, out_dir)
    if not files:
        return []
    try:
        store = await js.object_store(RESULTS_BUCKET)
    except NotFoundError:
        log.warning("result files not stored: no object store bucket", bucket=RESULTS_BUCKET, files=len(files))
        return []
    outputs: list[OutputFile] = []
    total = 0
    for name, path, size in files:
        if len(outputs) >= MAX_FILES:
            log.warning("result: too many files; the rest are not stored", stored=len(outputs), found=len(files))
            break
        if size > MAX_FILE_BYTES:
            log.warning("result: file too large; not stored", file=name, size=size, limit=MAX_FILE_BYTES)
            continue
        if total + size > MAX_TASK_BYTES:
            log.warning("result: the task's files are too large; not stored", file=name, limit=MAX_TASK_BYTES)
            continue
        try:
            output = await _put(store, task_id, name, path)
        except Exception as exc:
            log.warning("result: could not store file", file=name, error=str(exc) or type(exc).__name__)
            continue
        outputs.append(output)
        total += output.size
    log.info("result files stored", files=len(outputs), bytes=total)
    return outputs
