"""``hive status``: the cluster at a glance, from the leading coordinator: who leads and who
stands by, the NATS servers holding the log, how far it has read the log, tasks and nodes
by state, and what it refused (rejected events by rule, events ignored as stale, failed
decision rounds)."""

from __future__ import annotations

from typing import Any

from hive import render
from hive.cli import Ca, Creds, Data, Json, Server, _reader, app, run


def _member(member: dict[str, Any]) -> str:
    notes = [member["role"]]
    if not member["current"]:
        notes.append("behind")
    if member["lag"]:
        notes.append(f"lag {member['lag']}")
    return f"{member['name']} ({', '.join(notes)})"


def status_table(stats: dict[str, Any]) -> render.Table:
    table = render.Table(title="coordinator", title_justify="left", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    leader = stats.get("leader")
    if leader:
        lag = f", lag {stats['lag']}" if "lag" in stats else ""
        table.add_row(
            "leader",
            f"{leader['id']} on {leader.get('host') or '?'} pid {leader.get('pid') or '?'}, term {leader['term']}{lag}",
        )
    for who in stats.get("standbys") or []:
        table.add_row("standby", f"{who['id']} on {who.get('host') or '?'} pid {who.get('pid') or '?'}")
    servers = stats.get("servers") or {}
    members = servers.get("members") or []
    if members:
        listed = ", ".join(_member(m) for m in members)
        table.add_row("servers", f"{listed}; {servers.get('replicas')} replicas")
    if servers.get("connected"):
        table.add_row("connected to", f"{servers['connected']} (nats-server {servers.get('version') or '?'})")
    table.add_row("log read to", f"{stats['seq']} (log end at start {stats.get('log_end', '?')})")
    for key, label in (("tasks_by_state", "tasks"), ("nodes_by_state", "nodes")):
        counts = stats.get(key) or {}
        table.add_row(label, ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none")
    by_rule = stats.get("rejected_by_rule") or {}
    rules = ", ".join(f"{rule} {n}" for rule, n in sorted(by_rule.items()))
    table.add_row("rejected events", f"{stats['rejected']}" + (f" ({rules})" if rules else ""))
    table.add_row("ignored (stale) events", str(stats["ignored"]))
    table.add_row("failed decision rounds", str(stats.get("decide_errors", 0)))
    table.add_row("decisions in flight", str(stats["inflight"]))
    return table


@app.command()
def status(server: Server = None, creds: Creds = None, ca: Ca = None, data: Data = None, as_json: Json = False) -> None:
    """The cluster at a glance: log position, tasks and nodes by state, rejected events."""

    async def go() -> None:
        async with await _reader(server, data, creds=creds, ca=ca) as hive:
            stats = await hive.request("stats")
        render.emit_json(stats) if as_json else render.out.print(status_table(stats))

    run(go())
