"""Reading the event log: ``hive events`` prints it (or follows it), ``hive replay``
rebuilds the projections from sequence 0 and compares them with the live ones."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import msgspec
import typer

from edge.config import data_dir, resolve
from edge.errors import Invalid
from events.subjects import ALL_EVENTS, AUDIT_STREAM, TELEMETRY_STREAM, filter_problem
from hive import render
from hive.cli import Ca, Creds, Data, Json, Server, _client, app, quiet, run


@app.command()
def events(
    subject_filter: Annotated[str, typer.Argument(help="subject filter, e.g. 'hive.task.T.>'")] = ALL_EVENTS,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new events")] = False,
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
    as_json: Json = False,
) -> None:
    """Print logged events (audit and telemetry), optionally following the log."""
    from events.codec import BadEvent, decode, full_builtins

    problem = filter_problem(subject_filter)
    if problem is not None:
        render.err.print(f"error: {subject_filter!r} is not a subject filter: {problem}")
        raise typer.Exit(Invalid.exit_code)

    def line(stream: str, seq: int, subject: str, data: bytes) -> str:
        try:
            event = decode(data)
        except BadEvent:
            raw = data[:200].decode("utf-8", "replace")
            if as_json:
                return json.dumps({"seq": seq, "stream": stream, "subject": subject, "invalid": raw})
            return f"{seq:>7} {'':12} INVALID {subject} {raw[:80]!r}"
        if as_json:
            return json.dumps(full_builtins(event) | {"seq": seq, "stream": stream, "subject": subject})
        tag = "" if stream == AUDIT_STREAM else "t"
        summary = render.clean(render.event_summary(event))  # (what others wrote: no terminal controls)
        return f"{tag}{seq:>7} {render.clock(event.ts)} {type(event).__name__:<18} {subject}  {summary}"

    async def printed() -> None:
        # what the log holds now, read by the lean reader (as `hive replay` does): neither
        # nats-py nor structlog is loaded, which was half of this command's start
        from edge import fastread
        from edge.wire import open_conn

        items: list[tuple[float, str, int, str, bytes]] = []

        def sink(stream: str) -> Any:
            def put(records: list[fastread.Record]) -> None:
                items.extend((ts, stream, seq, subject, body) for seq, subject, body, ts in records)

            return put

        conn = await open_conn(resolve(server, "auditor", data, creds=creds, ca=ca))
        try:
            for stream in (AUDIT_STREAM, TELEMETRY_STREAM):
                await fastread.read_on(conn, stream, sink(stream), filters=[subject_filter])
        finally:
            await conn.close()
        items.sort()
        if items:
            print("\n".join(line(stream, seq, subject, body) for _, stream, seq, subject, body in items))

    async def followed() -> None:
        from edge.logread import read_stream

        queue: asyncio.Queue[tuple[float, str, int, Any]] = asyncio.Queue()

        def sink(stream: str) -> Any:
            def put(seq: int, msg: Any) -> None:
                ts = msg.metadata.timestamp.timestamp() if msg.metadata.timestamp else 0.0
                queue.put_nowait((ts, stream, seq, msg))

            return put

        async with await _client(server, data, "auditor", creds=creds, ca=ca) as hive:
            readers = [
                asyncio.create_task(read_stream(hive.js, stream, sink(stream), filters=[subject_filter], live=True))
                for stream in (AUDIT_STREAM, TELEMETRY_STREAM)
            ]
            try:
                running = list(readers)
                while running:
                    got = asyncio.ensure_future(queue.get())
                    await asyncio.wait([got, *running], return_when=asyncio.FIRST_COMPLETED)
                    for reader in [r for r in running if r.done()]:
                        reader.result()  # one that failed ends the command with its error
                        running.remove(reader)  # (one that ended: its stream is not there)
                    if not got.done():
                        got.cancel()
                        continue
                    _, stream, seq, msg = got.result()
                    print(line(stream, seq, msg.subject, msg.data), flush=True)
                while not queue.empty():
                    _, stream, seq, msg = queue.get_nowait()
                    print(line(stream, seq, msg.subject, msg.data), flush=True)
            finally:
                for reader in readers:
                    reader.cancel()

    if follow:
        quiet()
        run(followed())
    else:
        run(printed())


@app.command()
def replay(
    db: Annotated[Optional[Path], typer.Option(help="fresh projection file to build (default: DATA/replay.db)")] = None,
    live: Annotated[
        Optional[Path], typer.Option(help="live projection to compare with (default: DATA/coordinator.db)")
    ] = None,
    server: Server = None,
    creds: Creds = None,
    ca: Ca = None,
    data: Data = None,
    as_json: Json = False,
) -> None:
    """Rebuild the projections from sequence 0 and compare with the live ones."""
    quiet()
    from coordinator.replay import replay_and_compare

    directory = data_dir(data)

    async def go() -> int:
        # the lean reader connects by itself: nats-py's receive path would bound the replay
        target = resolve(server, "auditor", data, creds=creds, ca=ca)
        report = await replay_and_compare(target, db or directory / "replay.db", live or directory / "coordinator.db")
        if as_json:
            render.emit_json(msgspec.to_builtins(report))
        else:
            render.out.print(
                f"replayed {report.events} events up to seq {report.last_seq} in {report.seconds:.2f}s "
                f"({report.events_per_s:,.0f} events/s) into {report.db}"
            )
            for table, count in report.counts.items():
                render.out.print(f"  {table:<14} {count}")
            if report.matches is True:
                render.out.print(f"matches the live projection {report.compared_with}")
            elif report.matches is False:
                render.out.print(f"DIFFERS from the live projection {report.compared_with}:")
                for line in report.differences:
                    render.out.print(f"  {line}")
        return 0 if report.matches is not False else 1

    raise typer.Exit(run(go()))
