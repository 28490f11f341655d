// Overview, nodes, node detail, tasks list and requests. Each page renders from the REST
// API and, on an event from the live stream that concerns it, renders again (debounced).
"use strict";
(function () {
  const { el, fmt } = H;
  const isAudit = (item) => item.stream === "audit";

  // A small inline SVG chart: completions per bucket (bars) and queue depth (line).
  function chart(series) {
    const w = 560, h = 120, pad = 18;
    const maxDone = Math.max(1, ...series.map((p) => p.completed + p.failed));
    const maxQueue = Math.max(1, ...series.map((p) => p.queued || 0));
    const step = (w - 2 * pad) / Math.max(1, series.length);
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("class", "chart");
    const add = (tag, attrs) => {
      const node = document.createElementNS(svg.namespaceURI, tag);
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
      svg.append(node);
      return node;
    };
    series.forEach((p, i) => {
      const bh = ((p.completed + p.failed) / maxDone) * (h - 2 * pad);
      add("rect", { x: pad + i * step, y: h - pad - bh, width: Math.max(1, step - 1), height: bh, class: "done" });
    });
    const points = series
      .map((p, i) => (p.queued === null ? null : `${pad + i * step + step / 2},${h - pad - (p.queued / maxQueue) * (h - 2 * pad)}`))
      .filter(Boolean);
    if (points.length) add("polyline", { points: points.join(" "), class: "queue" });
    add("text", { x: pad, y: 12, class: "legend" }).textContent = `finished per 5 s (max ${maxDone}) · queue depth line (max ${maxQueue}) · last 5 min`;
    return svg;
  }

  H.pages.overview = {
    subject: "hive.>",
    async render(root) {
      const [status, res, nodes] = await Promise.all([H.get("/api/status"), H.api("/api/resources"), H.api("/api/nodes")]);
      const stats = status.coordinator || {};
      const nodeStates = {};
      nodes.forEach((n) => (nodeStates[n.state] = (nodeStates[n.state] || 0) + 1));
      const leader = stats.leader ? `${stats.leader.id} (term ${stats.leader.term}, pid ${stats.leader.pid || "–"})` : "none";
      const lag = stats.lag === undefined ? "–" : `${stats.lag} events behind the log (at ${stats.seq}, log ${stats.log_last})`;
      const cap = res.capacity, used = res.allocated;
      root.replaceChildren(
        el("h2", {}, "Overview"),
        el(
          "div",
          { class: "grid" },
          H.card("Nodes", el("div", { id: "node-states" }, H.counts(nodeStates)), el("p", { class: "muted" }, `${res.active_nodes} active of ${res.nodes}`)),
          H.card("Tasks", el("div", { id: "task-states" }, H.counts(stats.tasks_by_state))),
          H.card(
            "Capacity vs allocation",
            H.kv("CPU", H.bar(used.cpu, cap.cpu, `${fmt.num(used.cpu)} / ${fmt.num(cap.cpu)} cores`)),
            H.kv("Memory", H.bar(used.memory_gb, cap.memory_gb, `${fmt.num(used.memory_gb)} / ${fmt.num(cap.memory_gb)} GB`)),
            H.kv("GPUs", H.bar(used.gpu, cap.gpu, `${used.gpu} / ${cap.gpu}`))
          ),
          H.card(
            "Coordinator",
            H.kv("leader", el("b", { id: "leader" }, leader)),
            H.kv("answered by", `${stats.id || "–"} (${stats.role || status.coordinator_error || "–"})`),
            H.kv("lag", el("span", { id: "lag" }, lag)),
            H.kv("requests", H.link("#/requests", `${status.requests_open ?? "–"} open help / resource requests`))
          )
        ),
        H.card("Throughput and queue depth", chart(status.series))
      );
    },
    onEvent(item, refresh) {
      if (isAudit(item) || item.subject.endsWith(".heartbeat")) refresh();
    },
  };

  function liveCell(n) {
    const live = n.live || {};
    const gpus = (live.gpus || []).map((g) => `#${g.index} ${fmt.num(g.utilization, 0)}% ${fmt.num(g.memory_used_gb)} GB`).join(" ");
    return [
      H.bar(live.cpu_percent || 0, 100, `${fmt.num(live.cpu_percent || 0, 0)}%`),
      H.bar(live.memory_used_gb || 0, n.capacity.memory_gb, `${fmt.num(live.memory_used_gb || 0)} / ${fmt.num(n.capacity.memory_gb)} GB`),
      gpus || (n.capacity.gpu ? "idle" : "–"),
    ];
  }

  H.pages.nodes = {
    subject: "hive.node.>",
    async render(root) {
      const nodes = await H.api("/api/nodes");
      const rows = nodes.map((n) => {
        const [cpu, mem, gpu] = liveCell(n);
        return el(
          "tr",
          { "data-node": n.node_id },
          el("td", {}, H.nodeLink(n.node_id)),
          el("td", {}, H.badge(n.state)),
          el("td", {}, n.hostname),
          el("td", {}, `${n.running} / ${n.max_tasks}`),
          el("td", {}, cpu),
          el("td", {}, mem),
          el("td", {}, gpu),
          el("td", {}, `${fmt.num(n.trust)} (${n.trust_group})`),
          el("td", {}, `${n.completed} / ${n.failed}`)
        );
      });
      root.replaceChildren(
        el("h2", {}, "Nodes"),
        H.table(["node", "state", "host", "running", "CPU", "memory", "GPUs", "trust", "done / failed"], rows, { id: "nodes" })
      );
    },
    onEvent(item, refresh) {
      refresh();
    },
  };

  H.pages.node = {
    subject: "hive.>",
    async render(root, id) {
      const detail = await H.api(`/api/nodes/${encodeURIComponent(id)}`);
      const n = detail.node;
      const [cpu, mem, gpu] = liveCell(n);
      const drain =
        H.me.role === "operator" && n.state === "active"
          ? el("button", { class: "drain", onclick: () => H.act(`/api/nodes/${encodeURIComponent(id)}/drain`, {}, `drain of ${id} requested`) }, "Drain")
          : null;
      const trust = detail.trust;
      const changes = trust ? trust.changes.slice(-50).reverse() : [];
      root.replaceChildren(
        el("h2", {}, `Node ${n.node_id} `, H.badge(n.state), " ", drain),
        el(
          "div",
          { class: "grid" },
          H.card("Live", H.kv("CPU", cpu), H.kv("memory", mem), H.kv("GPUs", gpu),
            el("p", { class: "muted" }, n.live ? `heartbeat ${fmt.ago(n.live.at)}` : "no heartbeat yet")),
          H.card("Capacity", H.kv("CPU", `${fmt.num(n.capacity.cpu)} cores (${fmt.num(n.available.cpu)} free)`),
            H.kv("memory", `${fmt.num(n.capacity.memory_gb)} GB (${fmt.num(n.available.memory_gb)} free)`),
            H.kv("GPUs", `${n.capacity.gpu}`), H.kv("executors", (n.executors || []).join(", "))),
          H.card("Trust", H.kv("score", el("b", { id: "trust-score" }, fmt.num(n.trust))), H.kv("group", n.trust_group),
            H.kv("tasks", `${n.completed} completed, ${n.failed} failed`))
        ),
        H.card("Running tasks", H.table(["task", "state", "what", "started"], detail.tasks.map((t) =>
          el("tr", {}, el("td", {}, H.taskLink(t.task_id)), el("td", {}, H.badge(t.state)), el("td", {}, t.what), el("td", {}, fmt.ago(t.updated_at)))))),
        H.card("Trust changes (newest first)", H.table(["seq", "change", "score", "task", "cause"], changes.map((c) =>
          el("tr", {}, el("td", {}, c.seq), el("td", {}, (c.delta > 0 ? "+" : "") + fmt.num(c.delta)), el("td", {}, fmt.num(c.score)),
            el("td", {}, c.task_id ? H.taskLink(c.task_id) : ""), el("td", {}, c.cause)))))
      );
    },
    onEvent(item, refresh, id) {
      if (item.subject.includes(`.${id}`)) refresh();
    },
  };

  H.pages.requests = {
    subject: "hive.task.>",
    async render(root) {
      const list = await H.get("/api/requests");
      const operator = H.me.role === "operator";
      const rows = list.map((r) => {
        const what = r.kind === "help" ? `${r.help_kind}: ${r.problem}` : `${r.resource} +${fmt.num(r.amount)}: ${r.problem}`;
        let actions = "";
        if (operator && r.kind === "help") {
          const choice = el("select", { class: "action" }, ["retry", "skip", "wait", "fail", "continue"].map((a) => el("option", { value: a }, a)));
          const note = el("input", { class: "message", placeholder: "message" });
          actions = el("span", {}, choice, note, el("button", { class: "guide",
            onclick: () => H.act("/api/guide", { task_id: r.task_id, request_id: r.request_id, action: choice.value, message: note.value }, "guidance sent") }, "Guide"));
        } else if (operator) {
          const amount = el("input", { class: "amount", type: "number", step: "any", value: r.amount });
          actions = el("span", {}, amount,
            el("button", { class: "grant", onclick: () => H.act("/api/grant", { task_id: r.task_id, request_id: r.request_id, amount: Number(amount.value) }, "granted") }, "Grant"),
            el("button", { class: "deny", onclick: () => H.act("/api/deny", { task_id: r.task_id, request_id: r.request_id }, "denied") }, "Deny"));
        }
        return el("tr", { "data-request": r.request_id }, el("td", {}, r.kind), el("td", {}, H.taskLink(r.task_id)), el("td", {}, H.nodeLink(r.node_id)),
          el("td", {}, what), el("td", {}, r.state), el("td", {}, fmt.ago(r.asked_at)), el("td", {}, actions));
      });
      root.replaceChildren(
        el("h2", {}, "Open requests"),
        rows.length ? H.table(["kind", "task", "node", "what", "state", "asked", ""], rows, { id: "requests" }) : el("p", { class: "muted" }, "No open help or resource requests.")
      );
    },
    onEvent(item, refresh) {
      if (/\.(help_requested|resource_requested|guidance|resource_granted|resource_denied|completed|failed|cancelled)(\.|$)/.test(item.subject)) refresh();
    },
  };
})();
