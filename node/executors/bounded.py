"""A byte buffer that keeps the head and the tail of a long output, bounded in size."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class BoundedOutput:
    def __init__(self, limit: int = 64 * 1024) -> None:
        self.half = limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = self.half - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            extra = len(self.tail) - self.half
            if extra > 0:
                del self.tail[:extra]
                self.dropped += extra

    def text(self) -> str:
        middle = f"\n... [{self.dropped} bytes dropped] ...\n".encode() if self.dropped else b""
        return bytes(self.head + middle + self.tail).decode("utf-8", "replace")


async def pump(
    stream: asyncio.StreamReader, out: BoundedOutput, on_line: Callable[[bytes], Awaitable[None]] | None = None
) -> None:
    """Copy a pipe into ``out`` line by line (bounded line length), calling ``on_line``."""
    while True:
        try:
            line = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            line = exc.partial
        except asyncio.LimitOverrunError as exc:
            line = await stream.read(exc.consumed)
        if not line:
            return
        out.add(line)
        if on_line is not None:
            await on_line(line)
