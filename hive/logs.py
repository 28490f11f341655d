"""structlog setup: key-value lines on a terminal, JSON otherwise.

In JSON mode a traceback (``log.exception(...)``) is one field of the same JSON line, so
a log file stays one event per line; it carries no local variables (they may hold secrets).
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TextIO

import msgspec
import structlog
from structlog.tracebacks import ExceptionDictTransformer

# the traceback as a list of dicts in the "exception" field; no locals (credentials live there)
_dict_tracebacks = structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False))

# a JSON line in a third of the stdlib encoder's time (a busy node writes one per task
# that fails, and whatever else at info); a value JSON cannot hold is written as its repr
_line_encoder = msgspec.json.Encoder(enc_hook=repr)


def _json_line(event_dict: object, **_: object) -> str:
    try:
        return _line_encoder.encode(event_dict).decode()
    except (TypeError, OverflowError, ValueError):  # what only the stdlib writes (an int past 64 bits)
        return json.dumps(event_dict, default=repr)


def configure(level: str = "info", json_logs: bool | None = None, file: TextIO | None = None) -> None:
    """Log to ``file`` (default: sys.stderr): JSON unless ``file`` is a terminal."""
    stream = file if file is not None else sys.stderr
    # asyncio warns on every TLS connection the server closes ("returning true from
    # eof_received() has no effect when using ssl"): harmless, and it is not our log
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    if json_logs is None:
        json_logs = not stream.isatty()
    tail: list[structlog.typing.Processor] = (
        [_dict_tracebacks, structlog.processors.JSONRenderer(serializer=_json_line)]
        if json_logs
        else [structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tail,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
