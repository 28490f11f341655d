"""The permission spec (``edge.auth.matrix``) against the role templates and a real
nats-server in operator mode: every subject family, every role.

One server, one connection per role. A publish is sent as a request: the server answers
an accepted one (a JetStream ack for a subject in a stream, the JetStream API's reply, or a
"no responders" status where nobody listens) and drops a refused one, saying why on the
connection (a permissions violation, to ``error_cb``). A subscribe is refused the same
way. A barrier request after the probes (queued behind them, answered after the server
has handled them) makes sure every violation has arrived before the verdicts are read.
Subscriptions are probed first and dropped, so that no probe's subscriber (the
coordinator on ``hiveapi.*.*``, say) swallows another's publish.

Every probe sends ``x`` as its body: to the JetStream API that is not JSON, and not empty,
so an accepted request is answered with an error and changes nothing (delete wants an
empty body, create and update JSON) -- except a purge, which nats-server 2.15.1 carries
out whatever its body (``x`` purged the whole stream): a purge probe asks to purge a
subject the stream has no messages on. The test checks the stream and the bucket survive.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import nats.errors
import pytest
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from edge.auth import matrix, roles
from edge.auth.matrix import FAMILIES, ROLES, Family
from events.subjects import COORDINATOR_VERBS, NODE_VERBS, TASK_VERBS
from tests.e2e.test_operator_mode import Conn, OperatorServer, connect, operator_server

# one user per role; names must differ (the registry is keyed by name), so the families'
# own-name token is replaced by each user's name (Family.subject_as)
USERS = {"coordinator": "coord", "node": "n1", "client": "alice", "operator": "olga", "auditor": "eve"}
# How long an accepted probe may take to be answered. A refused one is never answered: its
# wait ends when its violation arrives. CI once took over a second to ack ~140 concurrent
# probes, so the bound is generous; it costs nothing when the server is quick.
ANSWER_WAIT = 20.0
REFUSAL_POLL = 0.05
BODY = b"x"
PURGE_BODY = json.dumps({"filter": "none.of.these"}).encode()  # a purge with "x" purges everything
STREAMS = {"hive.": matrix.AUDIT_STREAM, f"$O.{matrix.BUCKET}.": matrix.BUCKET_STREAM}


@dataclass
class Verdict:
    role: str
    family: str
    op: str
    subject: str
    expected: bool
    allowed: bool  # what the server did: no violation
    answered: bool | None  # pub only: an ack, a reply or "no responders"
    detail: str

    @property
    def consistent(self) -> bool:
        """A publish that was answered must not also be refused, and the other way round."""
        return self.answered is None or self.answered == self.allowed

    @property
    def ok(self) -> bool:
        return self.consistent and self.allowed == self.expected


# without a server


def test_every_event_verb_has_a_family() -> None:
    verbs = {*TASK_VERBS.values(), *NODE_VERBS.values(), *COORDINATOR_VERBS.values()}
    covered = matrix.covered_verbs()
    for verb in sorted(verbs):
        assert verb in covered, f"event verb {verb!r} has no family in edge.auth.matrix"
    assert matrix.unclassified_verbs() == set()


def test_families_are_well_formed() -> None:
    descriptions = [(f.group, f.description) for f in FAMILIES]
    assert len(descriptions) == len(set(descriptions))
    for family in FAMILIES:
        assert family.op in ("pub", "sub"), family
        assert family.allowed <= set(ROLES), family
        assert family.me is None or family.me in family.subject.split("."), family
    for name in USERS.values():  # no two families send the same subject as one user
        for op in ("pub", "sub"):
            subjects = [f.subject_as(name) for f in FAMILIES if f.op == op]
            assert len(subjects) == len(set(subjects)), (name, op)
    assert not {matrix.OTHER_USER, matrix.OTHER_NODE} & set(USERS.values())


def test_markdown_and_counts() -> None:
    table = matrix.matrix_markdown().splitlines()
    assert table[0].split("|")[-(len(ROLES) + 1) : -1] == [f" {r} " for r in ROLES]
    assert len(table) == len(FAMILIES) + 3  # head, rule, one row per family, totals
    counts = matrix.counts()
    for role in ROLES:
        assert counts[role]["allowed"] + counts[role]["denied"] == len(FAMILIES)
        column = [row.split("|")[4 + ROLES.index(role)].strip() for row in table[2:-1]]
        assert column.count("yes") == counts[role]["allowed"]
    print(json.dumps(counts))


def _matches(pattern: str, subject: str) -> bool:
    """nats-server's sublist match: ``*`` takes any one token, ``>`` the rest (one or more)."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def _template_allows(role: str, name: str, op: str, subject: str) -> bool:
    rules = roles.expand(role, name)[op]
    allowed = any(_matches(p, subject) for p in rules.get("allow", [">"]))
    return allowed and not any(_matches(p, subject) for p in rules.get("deny", []))


def test_templates_agree_with_the_spec() -> None:
    """The templates, matched here as the server matches them: a quick diagnosis for the
    test against the server below (a mismatch in both is the templates', in that one only
    the server's or this matcher's)."""
    wrong = [
        f"{role} {f.op} {f.subject_as(USERS[role])} ({f.description}): spec {f.allows(role)}"
        for f in FAMILIES
        for role in ROLES
        if _template_allows(role, USERS[role], f.op, f.subject_as(USERS[role])) != f.allows(role)
    ]
    assert not wrong, "\n".join(wrong)


# against the server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorServer]:
    yield from operator_server(tmp_path_factory.mktemp("permissions"), {name: role for role, name in USERS.items()})


@pytest.fixture(scope="module")
async def conns(server: OperatorServer) -> AsyncIterator[dict[str, Conn]]:
    opened = dict(
        zip(
            USERS,
            await asyncio.gather(*(connect(server.url, server.creds[name], name) for name in USERS.values())),
            strict=True,
        )
    )
    js = opened["coordinator"].nc.jetstream(timeout=5)
    await js.add_stream(StreamConfig(name=matrix.AUDIT_STREAM, subjects=["hive.>"], allow_direct=True))
    store = await js.create_object_store(matrix.BUCKET)
    await store.put("t1/out.txt", b"result")
    yield opened
    await asyncio.gather(*(c.nc.close() for c in opened.values() if not c.nc.is_closed))


async def _drop(msg: Msg) -> None:
    pass


async def _barrier(conn: Conn) -> None:
    """A request queued behind the probes: its reply comes after their violations."""
    try:
        await conn.nc.request("$JS.API.INFO", b"", timeout=2)
    except nats.errors.Error:  # refused itself (a mismatch the verdicts will show)
        await asyncio.sleep(0.3)
    await asyncio.sleep(0.05)


def _refused(conn: Conn, op: str, subject: str) -> bool:
    what = "publish" if op == "pub" else "subscription"
    return any(f'for {what} to "{subject.lower()}"' in e for e in conn.violations())


async def _answer(conn: Conn, subject: str) -> tuple[bool, str]:
    """The server's answer to one probe, or False once it has refused it."""
    body = PURGE_BODY if subject.startswith("$JS.API.STREAM.PURGE.") else BODY
    asked = asyncio.ensure_future(conn.nc.request(subject, body, timeout=ANSWER_WAIT))
    while not asked.done():
        if _refused(conn, "pub", subject):
            asked.cancel()
            return False, "refused"
        await asyncio.wait([asked], timeout=REFUSAL_POLL)
    try:
        msg = asked.result()
    except nats.errors.NoRespondersError:
        return True, "no responders"
    except nats.errors.TimeoutError:
        return False, "no answer"
    stream = next((s for prefix, s in STREAMS.items() if subject.startswith(prefix)), None)
    if stream is not None:
        reply = json.loads(msg.data)
        if reply.get("stream") != stream:  # a subject in a stream is answered by its ack
            return False, f"not an ack from {stream}: {msg.data[:200]!r}"
        return True, f"ack {stream} seq {reply['seq']}"
    return True, msg.data[:120].decode(errors="replace")


async def _probe_subs(role: str, conn: Conn) -> list[Verdict]:
    name, families = USERS[role], [f for f in FAMILIES if f.op == "sub"]
    subs = [await conn.nc.subscribe(f.subject_as(name), cb=_drop) for f in families]
    await _barrier(conn)
    verdicts = [_verdict(role, conn, f, None, "") for f in families]
    for sub in subs:
        await sub.unsubscribe()
    return verdicts


async def _probe_pubs(role: str, conn: Conn) -> list[Verdict]:
    name, families = USERS[role], [f for f in FAMILIES if f.op == "pub"]
    answers = await asyncio.gather(*(_answer(conn, f.subject_as(name)) for f in families))
    await _barrier(conn)
    return [_verdict(role, conn, f, answered, detail) for f, (answered, detail) in zip(families, answers, strict=True)]


def _verdict(role: str, conn: Conn, family: Family, answered: bool | None, detail: str) -> Verdict:
    subject = family.subject_as(USERS[role])
    refused = _refused(conn, family.op, subject)
    return Verdict(
        role,
        f"{family.group}: {family.description}",
        family.op,
        subject,
        family.allows(role),
        not refused,
        answered,
        detail,
    )


async def test_server_enforces_the_spec(conns: dict[str, Conn], tmp_path: Path) -> None:
    verdicts = [v for vs in await asyncio.gather(*(_probe_subs(r, c) for r, c in conns.items())) for v in vs]
    verdicts += [v for vs in await asyncio.gather(*(_probe_pubs(r, c) for r, c in conns.items())) for v in vs]
    assert len(verdicts) == len(FAMILIES) * len(ROLES)

    observed = {
        role: {
            "allowed": sum(v.allowed for v in verdicts if v.role == role),
            "denied": sum(not v.allowed for v in verdicts if v.role == role),
        }
        for role in ROLES
    }
    wrong = [v for v in verdicts if not v.ok]
    report = {
        "families": len(FAMILIES),
        "observed": observed,
        "spec": matrix.counts(),
        "mismatches": [asdict(v) for v in wrong],
        "all": [asdict(v) for v in verdicts],
    }
    out = Path(os.environ.get("HIVE_PERMISSIONS_JSON") or tmp_path / "permissions.json")
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{len(FAMILIES)} families; allowed/denied per role: {json.dumps(observed)} -> {out}")

    assert not wrong, "server disagrees with the spec:\n" + "\n".join(
        f"{v.role} {v.op} {v.subject} ({v.family}): spec {'allows' if v.expected else 'denies'}, "
        f"server {'allowed' if v.allowed else 'refused'}, answered {v.answered} [{v.detail}]"
        for v in wrong
    )
    assert observed == matrix.counts()

    # the probes changed nothing: the stream and the bucket are still there
    coord = conns["coordinator"].nc.jetstream(timeout=3)
    assert (await coord.stream_info(matrix.AUDIT_STREAM)).state.messages > 0
    assert (await (await coord.object_store(matrix.BUCKET)).get("t1/out.txt")).data == b"result"
    for conn in conns.values():
        assert conn.nc.is_connected  # a permissions violation does not cost the connection
