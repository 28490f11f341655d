"""The limits every event obeys, written as data: constrained types the event structs use.

``msgspec`` enforces these ``Meta`` constraints inside the one typed decoder, at C speed,
and never on construction (inside the system the types are trusted). The README's table
of rules is generated from these types (``events.validation.rules_table``), so the two
cannot drift apart. The bounds are far beyond anything an honest emitter sends and well
inside what SQLite, the scheduler and the server's max payload (8 MB) can hold, so that
anything derived from an accepted event (an assignment carries its task's spec) still fits.

Identifiers become NATS subject tokens and file names: letters, digits, ``-`` and ``_``,
1 to 64 of them (``\\A``/``\\Z`` because ``$`` would let a trailing newline through).
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

ID_PATTERN = r"\A[A-Za-z0-9_-]{1,64}\Z"
ID_RULE = "letters, digits, '-' and '_' only, 1 to 64 characters"

# a whole event on the wire; an assignment may be a little larger than the submission it carries
MAX_EVENT_BYTES = 1024 * 1024
MAX_ASSIGNMENT_BYTES = MAX_EVENT_BYTES + 64 * 1024
# nesting of JSON objects and arrays, the envelope included (a spec's payload sits at depth 3)
MAX_DEPTH = 32
# an event's own time against the server's stamp of it: a clock this far ahead is a lie;
# behind is allowed for a day (a publish retried across a long outage keeps its first ts)
MAX_FUTURE_SKEW_S = 300.0
MAX_PAST_SKEW_S = 86_400.0

# The decoder bounds an id's length; its alphabet (ID_PATTERN) is checked once per event over
# all of its ids together (events.validation), which costs a fifth of a pattern per field.
Id = Annotated[str, Meta(min_length=1, max_length=64, description=ID_RULE)]
EMITTER_RULE = "coordinator, node:<id> or client:<name>"
Emitter = Annotated[str, Meta(max_length=72, description=EMITTER_RULE)]
# seconds since the epoch, after 1970 and before the year 5138
Timestamp = Annotated[float, Meta(gt=0, lt=1e11)]
TimeOrZero = Annotated[float, Meta(ge=0, lt=1e11)]
Seconds = Annotated[float, Meta(ge=0, le=1e9)]
Timeout = Annotated[float, Meta(gt=0, le=31_536_000, description="more than 0, at most a year")]
HeartbeatInterval = Annotated[float, Meta(ge=0.05, le=60.0)]
HeartbeatFloor = Annotated[float, Meta(ge=0.0, le=60.0)]  # 0: none

Cores = Annotated[float, Meta(ge=0, le=100_000)]
Gigabytes = Annotated[float, Meta(ge=0, le=10_000_000)]
GpuCount = Annotated[int, Meta(ge=0, le=1024)]
GpuIndex = Annotated[int, Meta(ge=0, le=1023)]
Amount = Annotated[float, Meta(gt=0, le=10_000_000)]
AmountOrZero = Annotated[float, Meta(ge=0, le=10_000_000)]
Percent = Annotated[float, Meta(ge=0, le=100_000)]

Priority = Annotated[int, Meta(ge=-1_000_000, le=1_000_000)]
Attempt = Annotated[int, Meta(ge=1, le=10_000)]
AttemptOrZero = Annotated[int, Meta(ge=0, le=10_000)]
MaxAttempts = Annotated[int, Meta(ge=1, le=100)]
MaxTasks = Annotated[int, Meta(ge=1, le=10_000)]
TaskCount = Annotated[int, Meta(ge=0, le=10_000)]
NodeCount = Annotated[int, Meta(ge=0, le=10_000_000)]
ExitCode = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
FileSize = Annotated[int, Meta(ge=0, le=2**53)]
Fraction = Annotated[float, Meta(ge=0, le=1)]
Score = Annotated[float, Meta(ge=0, le=100)]
# a leader's term: the revision of the lease it won (0: before leases, or not a decision)
Term = Annotated[int, Meta(ge=0, le=2**53)]
Pid = Annotated[int, Meta(ge=0, le=2**31 - 1)]
ScoreDelta = Annotated[float, Meta(ge=-100, le=100)]

# free text: one line for people, a longer block for details and captured output
LINE_MAX, BLOCK_MAX = 4096, 65_536
Line = Annotated[str, Meta(max_length=LINE_MAX)]
Block = Annotated[str, Meta(max_length=BLOCK_MAX)]


def clip(text: str, limit: int = LINE_MAX) -> str:
    """``text`` cut to fit a ``Line`` (or ``limit``): for messages built around outside text."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
Output = Annotated[str, Meta(max_length=1_048_576)]
Token = Annotated[str, Meta(pattern=r"\A[A-Za-z0-9_.:-]{1,128}\Z", description="a name: letters, digits, _.:-")]
Name = Annotated[str, Meta(max_length=256)]
FilePath = Annotated[str, Meta(max_length=4096)]
Sha256 = Annotated[str, Meta(pattern=r"\A[0-9a-f]{64}\Z")]
# a result file's name, relative to the task's out/ directory: no leading '/', no '..' part
RelativePath = Annotated[
    str, Meta(pattern=r"\A(?!/)(?!(?:.*/)?\.\.(?:/|\Z))[^\x00]{1,1024}\Z", description="relative, no '..'")
]
EnvName = Annotated[str, Meta(pattern=r"\A[A-Za-z_][A-Za-z0-9_]{0,255}\Z")]

Ids = Annotated[list[Id], Meta(max_length=1000)]
ManyIds = Annotated[list[Id], Meta(max_length=10_000)]
Argv = Annotated[list[Annotated[str, Meta(max_length=131_072)]], Meta(max_length=4096)]
GpuIndexes = Annotated[list[GpuIndex], Meta(max_length=1024)]
