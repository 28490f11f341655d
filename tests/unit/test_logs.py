"""Log lines: in JSON mode a traceback is a field of the one line, never extra lines."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import PurePosixPath

import pytest
import structlog

from hive.logs import configure


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure("info", json_logs=True, file=stream)
    yield stream
    configure("warning")  # as tests/conftest.py left it


def test_exception_is_one_json_line_with_the_traceback(json_stream: io.StringIO) -> None:
    log = structlog.get_logger("test-logs")
    try:
        raise ValueError("bad \u00e9 thing\nwith a second line")
    except ValueError:
        log.exception("service crashed", node="n1")
    lines = json_stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    record = json.loads(lines[0])
    assert record["event"] == "service crashed"
    assert record["level"] == "error"
    assert record["node"] == "n1"
    [exc] = record["exception"]
    assert exc["exc_type"] == "ValueError"
    assert exc["exc_value"] == "bad \u00e9 thing\nwith a second line"
    assert any(frame["name"] == "test_exception_is_one_json_line_with_the_traceback" for frame in exc["frames"])
    assert "locals" not in json.dumps(exc)  # locals may hold credentials


def test_chained_exception_stays_on_one_line(json_stream: io.StringIO) -> None:
    log = structlog.get_logger("test-logs")
    try:
        try:
            {}["missing"]
        except KeyError as inner:
            raise RuntimeError("outer") from inner
    except RuntimeError:
        log.exception("failed")
    log.info("next", n=2)
    lines = json_stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    first, second = (json.loads(line) for line in lines)
    assert [e["exc_type"] for e in first["exception"]] == ["RuntimeError", "KeyError"]
    assert second == {"event": "next", "n": 2, "level": "info", "timestamp": second["timestamp"]}


def test_terminal_mode_is_key_value() -> None:
    stream = io.StringIO()
    try:
        configure("info", json_logs=False, file=stream)
        structlog.get_logger("test-logs").info("hello", a=1)
    finally:
        configure("warning")
    text = stream.getvalue()
    assert "hello" in text and "a=1" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_default_mode_follows_the_stream() -> None:
    stream = io.StringIO()  # not a terminal: JSON
    try:
        configure("info", file=stream)
        structlog.get_logger("test-logs").info("hello")
    finally:
        configure("warning")
    assert json.loads(stream.getvalue())["event"] == "hello"


def test_a_json_line_holds_what_msgspec_cannot_write() -> None:
    out = io.StringIO()
    configure("info", json_logs=True, file=out)
    structlog.get_logger("t").info("odd", big=2**70, where=PurePosixPath("/x"))  # past 64 bits: the stdlib writes it
    structlog.get_logger("t").info("plain", n=1)
    odd, plain = (json.loads(line) for line in out.getvalue().splitlines())
    assert odd["big"] == 2**70 and odd["where"] == repr(PurePosixPath("/x")) and odd["event"] == "odd"
    assert plain["n"] == 1 and plain["level"] == "info"
