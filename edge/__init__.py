"""The NATS edge: connections, publishing, the log reader, credentials.

Importing it first (``hive/__init__.py`` does) spares every ``hive`` command two libraries'
optional extras that HiveMind never uses, about 150 ms of a 0.4 s start: nats-py's
websocket transport (aiohttp) and structlog's rich tracebacks (``hive.logs`` renders with
``plain_traceback`` and no locals). Each is hidden only while its importer loads; a later
``import aiohttp`` (``hive web``, ``/health``) or ``rich.traceback`` loads as usual.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def _hidden(*names: str) -> Iterator[None]:
    hide = [n for n in names if n not in sys.modules]
    for name in hide:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ImportError
    try:
        yield
    finally:
        for name in hide:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


if "nats" not in sys.modules:
    with _hidden("aiohttp"):
        import nats.aio.transport  # noqa: F401
if "structlog" not in sys.modules:
    with _hidden("rich.traceback", "rich.pretty"):
        import structlog  # noqa: F401
