"""The envelope every event shares.

Events are immutable facts in the past tense. Each carries a unique ``id`` (also the
JetStream ``Nats-Msg-Id``, so a duplicate publish is dropped by the server), the wall-clock
time it was emitted (``ts``, seconds since the epoch: projections read time from here,
never from the clock) and who emitted it (``emitter``: ``coordinator``, ``node:<id>`` or
``client:<name>``). ``causation_id`` names the event that caused this one, when there is
one, so an audit can follow a decision back to its trigger.

Schema evolution: add fields only, optional and with defaults; a changed meaning is a new
event type. Old logs must keep decoding.

On the wire a field at its default is left out (``omit_defaults``): a no-op task's three
events are half the bytes, and each decodes a quarter faster. So a default is part of the
schema and never changes. What people read (``hive events --json``, the web) shows every
field: ``events.codec.full_builtins``.
"""

from __future__ import annotations

import math
import random
import threading
import time

import msgspec

from events.limits import Cores, Emitter, Gigabytes, GpuCount, Id, Timestamp

# seeded once from the OS; a syscall per id (os.urandom) showed up in node profiles
_random = random.Random()

# While events.codec decodes (``decoding.on``), a missing id or ts becomes a marker the
# codec refuses, not a fresh default: on the wire both are required. One decode then does
# what a second decode of the envelope did (a sixth of a replay's checking).
decoding = threading.local()
MISSING_ID = ""
MISSING_TS = math.nan


def _default_id() -> str:
    return MISSING_ID if getattr(decoding, "on", False) else new_id()


def _default_ts() -> float:
    return MISSING_TS if getattr(decoding, "on", False) else time.time()


def new_id() -> str:
    """A 20-hex-char id, roughly time ordered (µs clock prefix) and unique (36 random bits)."""
    return f"{time.time_ns() // 1000 & 0xFFFFFFFFFFF:011x}{_random.getrandbits(36):09x}"


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True, omit_defaults=True):
    # id and ts have defaults for construction; on the wire both are required (events.validation)
    id: Id = msgspec.field(default_factory=_default_id)
    ts: Timestamp = msgspec.field(default_factory=_default_ts)
    emitter: Emitter = ""
    causation_id: Id | None = None


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    """An amount of the four accounted resources. Used for requests, capacity and free space."""

    cpu: Cores = 0.0
    memory_gb: Gigabytes = 0.0
    gpu: GpuCount = 0
    gpu_memory_gb: Gigabytes = 0.0

    def fits_in(self, other: Resources) -> bool:
        # A tiny epsilon keeps float sums like 0.1+0.2 from refusing an exact fit.
        eps = 1e-9
        return (
            self.cpu <= other.cpu + eps
            and self.memory_gb <= other.memory_gb + eps
            and self.gpu <= other.gpu
            and self.gpu_memory_gb <= other.gpu_memory_gb + eps
        )

    @classmethod
    def of(cls, name: str, amount: float) -> Resources:
        """``amount`` of the one resource called ``name`` (an unknown name: nothing)."""
        if name == "gpu":
            return cls(gpu=int(amount))
        if name in ("cpu", "memory_gb", "gpu_memory_gb"):
            return cls(**{name: float(amount)})
        return cls()

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            cpu=round(self.cpu + other.cpu, 6),
            memory_gb=round(self.memory_gb + other.memory_gb, 6),
            gpu=self.gpu + other.gpu,
            gpu_memory_gb=round(self.gpu_memory_gb + other.gpu_memory_gb, 6),
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            cpu=round(self.cpu - other.cpu, 6),
            memory_gb=round(self.memory_gb - other.memory_gb, 6),
            gpu=self.gpu - other.gpu,
            gpu_memory_gb=round(self.gpu_memory_gb - other.gpu_memory_gb, 6),
        )
