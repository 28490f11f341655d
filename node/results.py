"""Result files: what a task leaves under ``<workspace>/out`` goes to the object store."""

from __future__ import annotations

from pathlib import Path

from nats.js import JetStreamContext

from events.task import OutputFile


async def upload_outputs(js: JetStreamContext, task_id: str, out_dir: Path) -> list[OutputFile]:
    """Store every file under ``out_dir`` and describe them (name, size, sha256)."""
    return []
