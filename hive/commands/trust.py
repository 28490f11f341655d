"""(commands registered on hive.cli.app)"""

from __future__ import annotations

from hive.cli import app  # noqa: F401
