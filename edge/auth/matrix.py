"""The permission SPEC: what each role may publish and subscribe to, as a list of subject
families, written down apart from the templates (``edge.auth.roles``) so that the two can
be checked against each other and against a real server (tests/e2e/test_permissions.py).

Each family is one kind of message (a node reporting on its own task, a client submitting
under another user's name, a durable consumer create ...), one representative concrete
subject, the operation (``pub`` or ``sub``) and the roles that may do it. Subjects are
written as the user ``alice`` (a person) or the node ``n1`` would send them; ``bob`` and
``n2`` stand for somebody else. Where a family is about the acting user's own name
(``me``), a user of another name sends it with its own name in that token
(``Family.subject_as``): a client ``alice`` reporting "on its own task" publishes
``hive.task.t1.completed.alice``, an auditor reading "its own inbox" subscribes to
``_INBOX.eve.x``.

The event families are built from the verbs of ``events.subjects`` (``TASK_VERBS``,
``NODE_VERBS``, ``COORDINATOR_VERBS``) by the classification below; a verb added there and
not classified here is reported by ``unclassified_verbs``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from events.subjects import COORDINATOR_VERBS, NODE_VERBS, TASK_VERBS

ROLES = ("coordinator", "node", "client", "operator", "auditor")
USER, OTHER_USER = "alice", "bob"
NODE, OTHER_NODE = "n1", "n2"
TASK = "t1"
AUDIT_STREAM = "HIVE_EVENTS"
BUCKET = "hive-results"
BUCKET_STREAM = f"OBJ_{BUCKET}"
JS_DOMAIN = "hive"  # edge.options.JS_DOMAIN: the hub's JetStream domain, as leaf servers' clients see it

# who, by role
COORDINATOR = frozenset({"coordinator"})
WRITERS = frozenset({"coordinator", "node"})  # the coordinator and the nodes: own consumers, results
PEOPLE = frozenset({"coordinator", "client", "operator"})  # who may ask for work
OPERATORS = frozenset({"coordinator", "operator"})
READERS = frozenset({"coordinator", "client", "operator", "auditor"})  # hiveapi reads
EVERYONE = frozenset(ROLES)
NOBODY: frozenset[str] = frozenset()

# how each event verb is sent
NODE_REPORTED = ("started", "progress", "completed", "failed", "help_requested", "resource_requested")
DECISIONS_TO_NODE = ("assigned", "resource_granted", "resource_denied")  # always `.<node>`
DECISIONS_EITHER = ("cancelled", "reassigned", "guidance")  # `.<node>` when a node is concerned
DECISIONS_PLAIN = ("rejected",)
USER_REQUESTS = ("submitted", "cancel_requested")  # `hive.task.<task>.<verb>.by.<user>`
OPERATOR_REQUESTS = ("cancel_requested",)  # `hive.task.<task>.<verb>.op.<user>`
NODE_OWN = ("registered", "heartbeat", "drained")
NODE_BY_COORDINATOR = ("lost", "trust_reset")
NODE_REQUESTS = ("drain_requested",)  # `hive.node.<node>.<verb>.by.<user>`
COORDINATOR_ONLY = ("trust_policy", "leader_elected", "heartbeat_interval")

# hiveapi verbs (hiveapi.<verb>.<user>)
API_READ = ("tasks", "task", "nodes", "requests", "trust", "stats")
API_CLIENT = ("validate",)
API_OPERATOR = ("guide", "grant", "deny", "trust_reset", "node_revoked")


@dataclass(frozen=True)
class Family:
    group: str
    description: str
    op: str  # "pub" or "sub"
    subject: str  # as alice (a person) or n1 (a node)
    allowed: frozenset[str]
    me: str | None = None  # the token of `subject` that is the acting user's own name

    def allows(self, role: str) -> bool:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return role in self.allowed

    def subject_as(self, name: str) -> str:
        """The subject as the user ``name`` sends it: its own name in the ``me`` token."""
        if self.me is None:
            return self.subject
        return ".".join(name if token == self.me else token for token in self.subject.split("."))

    @property
    def event_verb(self) -> str | None:
        """The event verb of a ``hive.`` subject (None for anything else)."""
        tokens = self.subject.split(".")
        if tokens[0] != "hive":
            return None
        if tokens[1] in ("task", "node") and len(tokens) >= 4:
            return tokens[3]
        if tokens[1] == "coordinator" and len(tokens) == 3:
            return tokens[2]
        return None


def _task(verb: str, *rest: str) -> str:
    return ".".join(("hive", "task", TASK, verb, *rest))


def _node(node: str, verb: str, *rest: str) -> str:
    return ".".join(("hive", "node", node, verb, *rest))


def _event_families() -> Iterable[Family]:
    g = "task events: nodes report"
    for verb in NODE_REPORTED:
        yield Family(g, f"a node reports {verb} on its own task", "pub", _task(verb, NODE), WRITERS, me=NODE)
        yield Family(g, f"a node reports {verb} as another node", "pub", _task(verb, OTHER_NODE), COORDINATOR)
    g = "task events: coordinator decides"
    for verb in DECISIONS_TO_NODE + DECISIONS_EITHER:
        yield Family(g, f"{verb} for a node (the node itself sending it)", "pub", _task(verb, NODE), COORDINATOR, NODE)
    for verb in DECISIONS_EITHER + DECISIONS_PLAIN:
        yield Family(g, f"{verb} with no node", "pub", _task(verb), COORDINATOR)
    g = "task events: people ask"
    for verb in USER_REQUESTS:
        yield Family(g, f"{verb} as yourself", "pub", _task(verb, "by", USER), PEOPLE, me=USER)
        yield Family(g, f"{verb} as another user", "pub", _task(verb, "by", OTHER_USER), COORDINATOR)
        yield Family(g, f"{verb} with no name", "pub", _task(verb), COORDINATOR)
    for verb in OPERATOR_REQUESTS:
        yield Family(g, f"{verb} as operator, as yourself", "pub", _task(verb, "op", USER), OPERATORS, me=USER)
        yield Family(g, f"{verb} as operator, as another user", "pub", _task(verb, "op", OTHER_USER), COORDINATOR)
    g = "node events"
    for verb in NODE_OWN:
        yield Family(g, f"a node says {verb} of itself", "pub", _node(NODE, verb), WRITERS, me=NODE)
        yield Family(g, f"a node says {verb} of another node", "pub", _node(OTHER_NODE, verb), COORDINATOR)
    for verb in NODE_BY_COORDINATOR:
        yield Family(g, f"{verb} (the node itself sending it)", "pub", _node(NODE, verb), COORDINATOR, me=NODE)
    for verb in NODE_REQUESTS:
        yield Family(g, f"{verb} as yourself", "pub", _node(NODE, verb, "by", USER), PEOPLE, me=USER)
        yield Family(g, f"{verb} as another user", "pub", _node(NODE, verb, "by", OTHER_USER), COORDINATOR)
        yield Family(g, f"{verb} with no name", "pub", _node(NODE, verb), COORDINATOR)
    g = "coordinator events"
    for verb in COORDINATOR_ONLY:
        yield Family(g, verb, "pub", f"hive.coordinator.{verb}", COORDINATOR)
    yield Family(g, "anything else under hive.", "pub", "hive.anything", COORDINATOR)
    yield Family("subscriptions", "watch every event (hive.>)", "sub", "hive.>", EVERYONE)


def _api_families() -> Iterable[Family]:
    g = "hiveapi requests"
    for verbs, who in ((API_READ, READERS), (API_CLIENT, PEOPLE), (API_OPERATOR, OPERATORS)):
        for verb in verbs:
            yield Family(g, f"{verb} as yourself", "pub", f"hiveapi.{verb}.{USER}", who, me=USER)
            yield Family(g, f"{verb} as another user", "pub", f"hiveapi.{verb}.{OTHER_USER}", COORDINATOR)
    yield Family(g, "a request with no name", "pub", "hiveapi.tasks", COORDINATOR)
    yield Family(g, "serve the API (subscribe)", "sub", "hiveapi.*.*", COORDINATOR)
    g = "inboxes"
    yield Family(g, "read your own inbox", "sub", f"_INBOX.{USER}.x", EVERYONE, me=USER)
    yield Family(g, "read another user's inbox", "sub", f"_INBOX.{OTHER_USER}.x", COORDINATOR)
    yield Family(g, "read every inbox", "sub", "_INBOX.>", COORDINATOR)
    yield Family(g, "reply to another user's inbox", "pub", f"_INBOX.{OTHER_USER}.x", COORDINATOR)


def _jetstream_families() -> Iterable[Family]:
    g = "JetStream API"
    api, s = "$JS.API", AUDIT_STREAM
    yield Family(g, "account info", "pub", f"{api}.INFO", EVERYONE)
    yield Family(g, "stream names", "pub", f"{api}.STREAM.NAMES", EVERYONE)
    yield Family(g, "stream list (configs)", "pub", f"{api}.STREAM.LIST", COORDINATOR)
    yield Family(g, "stream info", "pub", f"{api}.STREAM.INFO.{s}", EVERYONE)
    yield Family(g, "stream create", "pub", f"{api}.STREAM.CREATE.{s}", COORDINATOR)
    yield Family(g, "stream update", "pub", f"{api}.STREAM.UPDATE.{s}", COORDINATOR)
    yield Family(g, "stream delete", "pub", f"{api}.STREAM.DELETE.{s}", COORDINATOR)
    yield Family(g, "stream purge", "pub", f"{api}.STREAM.PURGE.{s}", COORDINATOR)
    yield Family(g, "get a message", "pub", f"{api}.STREAM.MSG.GET.{s}", EVERYONE)
    yield Family(g, "delete a message", "pub", f"{api}.STREAM.MSG.DELETE.{s}", COORDINATOR)
    yield Family(g, "direct get", "pub", f"{api}.DIRECT.GET.{s}", EVERYONE)
    yield Family(g, "consumer create (ephemeral)", "pub", f"{api}.CONSUMER.CREATE.{s}", EVERYONE)
    yield Family(g, "named consumer create, own name", "pub", f"{api}.CONSUMER.CREATE.{s}.{USER}", WRITERS, USER)
    yield Family(
        g,
        "named consumer create with a filter, own name",
        "pub",
        f"{api}.CONSUMER.CREATE.{s}.{USER}.hive.task.t1.assigned",
        WRITERS,
        me=USER,
    )
    yield Family(
        g, "named consumer create, another's name", "pub", f"{api}.CONSUMER.CREATE.{s}.{OTHER_USER}", COORDINATOR
    )
    yield Family(
        g, "durable consumer create, own name", "pub", f"{api}.CONSUMER.DURABLE.CREATE.{s}.{USER}", WRITERS, USER
    )
    yield Family(
        g,
        "durable consumer create, another's name",
        "pub",
        f"{api}.CONSUMER.DURABLE.CREATE.{s}.{OTHER_USER}",
        COORDINATOR,
    )
    yield Family(g, "consumer delete, own name", "pub", f"{api}.CONSUMER.DELETE.{s}.{USER}", WRITERS, me=USER)
    yield Family(g, "consumer delete, another's name", "pub", f"{api}.CONSUMER.DELETE.{s}.{OTHER_USER}", COORDINATOR)
    yield Family(g, "consumer info", "pub", f"{api}.CONSUMER.INFO.{s}.x", EVERYONE)
    yield Family(g, "consumer list", "pub", f"{api}.CONSUMER.LIST.{s}", COORDINATOR)
    yield Family(g, "consumer names", "pub", f"{api}.CONSUMER.NAMES.{s}", COORDINATOR)
    yield Family(g, "pull from own consumer", "pub", f"{api}.CONSUMER.MSG.NEXT.{s}.{USER}", WRITERS, me=USER)
    yield Family(g, "pull from another's consumer", "pub", f"{api}.CONSUMER.MSG.NEXT.{s}.{OTHER_USER}", COORDINATOR)
    yield Family(g, "ack on own consumer", "pub", f"$JS.ACK.{s}.{USER}.1.1.1.0.0", WRITERS, me=USER)
    yield Family(g, "ack on another's consumer", "pub", f"$JS.ACK.{s}.{OTHER_USER}.1.1.1.0.0", COORDINATOR)
    yield Family(g, "flow-control reply", "pub", f"$JS.FC.{s}.x.1", EVERYONE)
    yield Family(g, "listen to the JetStream API", "sub", f"{api}.>", NOBODY)
    g = "object store"
    yield Family(g, "write a chunk", "pub", f"$O.{BUCKET}.C.x", WRITERS)
    yield Family(g, "write metadata", "pub", f"$O.{BUCKET}.M.x", WRITERS)
    yield Family(g, "replace a file (purge its old chunks)", "pub", f"{api}.STREAM.PURGE.{BUCKET_STREAM}", WRITERS)
    yield Family(g, "read a file (ephemeral consumer)", "pub", f"{api}.CONSUMER.CREATE.{BUCKET_STREAM}", EVERYONE)
    yield Family(g, "subscribe to chunks", "sub", f"$O.{BUCKET}.C.x", WRITERS)
    yield Family(g, "write to another bucket", "pub", "$O.other.C.x", COORDINATOR)
    # a leaf server's clients (hive leaf) reach the hub's JetStream in its domain: the same
    # rules in that form (a sample of them)
    g, dom = "JetStream through a leaf (domain form)", f"$JS.{JS_DOMAIN}.API"
    yield Family(g, "account info", "pub", f"{dom}.INFO", EVERYONE)
    yield Family(g, "stream info", "pub", f"{dom}.STREAM.INFO.{s}", EVERYONE)
    yield Family(g, "stream create", "pub", f"{dom}.STREAM.CREATE.{s}", COORDINATOR)
    yield Family(g, "stream delete", "pub", f"{dom}.STREAM.DELETE.{s}", COORDINATOR)
    yield Family(g, "consumer create (ephemeral)", "pub", f"{dom}.CONSUMER.CREATE.{s}", EVERYONE)
    yield Family(g, "named consumer create, own name", "pub", f"{dom}.CONSUMER.CREATE.{s}.{USER}", WRITERS, USER)
    yield Family(
        g, "named consumer create, another's name", "pub", f"{dom}.CONSUMER.CREATE.{s}.{OTHER_USER}", COORDINATOR
    )
    yield Family(g, "pull from own consumer", "pub", f"{dom}.CONSUMER.MSG.NEXT.{s}.{USER}", WRITERS, me=USER)
    yield Family(g, "replace a file (purge its old chunks)", "pub", f"{dom}.STREAM.PURGE.{BUCKET_STREAM}", WRITERS)


FAMILIES: tuple[Family, ...] = (*_event_families(), *_api_families(), *_jetstream_families())


def covered_verbs() -> set[str]:
    return {f.event_verb for f in FAMILIES if f.event_verb is not None}


def unclassified_verbs() -> set[str]:
    """Event verbs of ``events.subjects`` that no family sends."""
    verbs = {*TASK_VERBS.values(), *NODE_VERBS.values(), *COORDINATOR_VERBS.values()}
    return verbs - covered_verbs()


def counts() -> dict[str, dict[str, int]]:
    """Allowed and denied families per role."""
    return {
        role: {
            "allowed": sum(f.allows(role) for f in FAMILIES),
            "denied": sum(not f.allows(role) for f in FAMILIES),
        }
        for role in ROLES
    }


def matrix_markdown() -> str:
    """The README table: one row per family, one column per role."""
    head = ["Family", "Op", f"Subject (as `{USER}` / `{NODE}`)", *ROLES]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + [":-:"] * len(ROLES)) + "|"]
    for f in FAMILIES:
        cells = [f"{f.group}: {f.description}", f.op, f"`{f.subject}`", *("yes" if f.allows(r) else "—" for r in ROLES)]
        lines.append("| " + " | ".join(cells) + " |")
    totals = counts()
    lines.append(
        "| **allowed / denied** | | | " + " | ".join(f"{c['allowed']} / {c['denied']}" for c in totals.values()) + " |"
    )
    return "\n".join(lines) + "\n"
