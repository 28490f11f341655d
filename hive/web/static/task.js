// The tasks list (filters, sorting, paging: done by the web service) and one task's page.
"use strict";
(function () {
  const { el, fmt } = H;
  const TERMINAL = ["completed", "failed", "cancelled"];
  const progress = {}; // task id -> [fraction, message], from the live stream

  function progressBar(id, state, fraction, message) {
    const done = state === "completed" ? 1 : fraction || 0;
    return el(
      "div",
      { class: "meter progress", "data-task": id, "data-fraction": String(done) },
      el("div", { class: "fill", style: { width: `${(done * 100).toFixed(1)}%` } }),
      el("span", { class: "progress-text" }, `${(done * 100).toFixed(0)}%${message ? " " + message : ""}`)
    );
  }

  function updateProgress(item) {
    const ev = item.event || {};
    if (item.type !== "TaskProgress" || !ev.task_id) return;
    progress[ev.task_id] = [ev.fraction, ev.message];
    document.querySelectorAll(`.progress[data-task="${CSS.escape(ev.task_id)}"]`).forEach((bar) => {
      bar.replaceWith(progressBar(ev.task_id, "running", ev.fraction, ev.message));
    });
  }

  function canCancel(task) {
    if (!H.me || H.me.role === "auditor" || TERMINAL.includes(task.state)) return false;
    return H.me.role === "operator" || task.submitted_by === H.me.name;
  }

  function cancelButton(task, after) {
    if (!canCancel(task)) return null;
    return el("button", {
      class: "cancel", "data-task": task.task_id,
      onclick: async () => {
        if (await H.act(`/api/stop_task/${encodeURIComponent(task.task_id)}`, { reason: "cancelled from the web" }, `cancel of ${task.task_id} requested`) && after) after();
      },
    }, "Cancel");
  }

  const query = { state: "", node: "", type: "", priority: "", submitter: "", q: "", sort: "submitted_at", order: "desc", offset: 0, limit: 50 };

  H.pages.tasks = {
    subject: "hive.task.>",
    async render(root, _id, params) {
      for (const [k, v] of params) if (k in query) query[k] = k === "offset" || k === "limit" ? Number(v) : v;
      const wanted = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== "" && v !== null) wanted.set(k, v);
      const page = await H.get("/api/tasks?" + wanted);
      const go = (changes) => {
        Object.assign(query, changes);
        const hash = new URLSearchParams();
        for (const [k, v] of Object.entries(query)) if (v !== "" && !(k === "offset" && !v)) hash.set(k, v);
        location.hash = "#/tasks?" + hash;
      };
      const head = (label, key) =>
        el("th", { class: "sortable" + (query.sort === key ? " sorted" : ""), onclick: () => go({ sort: key, order: query.sort === key && query.order === "desc" ? "asc" : "desc", offset: 0 }) },
          label, query.sort === key ? (query.order === "desc" ? " ▾" : " ▴") : "");
      const input = (key, attrs) => el("input", { name: key, value: query[key], ...attrs });
      const form = el("form", { class: "filters", onsubmit: (e) => {
        e.preventDefault();
        const data = new FormData(e.target);
        go({ ...Object.fromEntries(data.entries()), offset: 0 });
      } },
        el("select", { name: "state" }, ["", "pending", "queued", "assigned", "running", "retrying", "completed", "failed", "cancelled"].map((s) => el("option", { value: s, selected: s === query.state }, s || "any state"))),
        input("node", { placeholder: "node" }), input("type", { placeholder: "executor or type" }), input("priority", { placeholder: "priority", type: "number" }),
        input("submitter", { placeholder: "submitter" }), input("q", { placeholder: "search", type: "search" }), el("button", { type: "submit" }, "Filter"));
      const rows = page.tasks.map((t) => {
        const [fraction, message] = progress[t.task_id] || [0, ""];
        return el("tr", { "data-task": t.task_id },
          el("td", {}, H.taskLink(t.task_id)), el("td", {}, t.name || ""), el("td", {}, H.badge(t.state)),
          el("td", {}, t.state === "running" || t.state === "completed" ? progressBar(t.task_id, t.state, fraction, message) : ""),
          el("td", { class: "what" }, t.what), el("td", {}, t.priority), el("td", {}, H.nodeLink(t.node_id)), el("td", {}, t.submitted_by || ""),
          el("td", {}, `${t.attempt}/${t.max_attempts}`), el("td", {}, fmt.time(t.submitted_at)), el("td", {}, fmt.dur(t.duration_s)),
          el("td", {}, cancelButton(t, () => H.refresh())));
      });
      const last = Math.min(page.total, page.offset + page.tasks.length);
      root.replaceChildren(
        el("h2", {}, "Tasks"), form,
        H.table([head("task", "task_id"), "name", head("state", "state"), "progress", "what", head("priority", "priority"), head("node", "node_id"), "by",
          head("attempt", "attempt"), head("submitted", "submitted_at"), head("took", "duration_s"), ""], rows, { id: "tasks" }),
        el("div", { class: "pager" },
          el("button", { disabled: page.offset === 0, onclick: () => go({ offset: Math.max(0, page.offset - page.limit) }) }, "‹ newer"),
          el("span", { id: "page-info" }, page.total ? ` ${page.offset + 1}–${last} of ${page.total} ` : " no tasks match ",
            page.truncated ? "(of the newest tasks only: the cluster holds more than one answer of the API carries)" : ""),
          el("button", { disabled: last >= page.total, onclick: () => go({ offset: page.offset + page.limit }) }, "older ›"))
      );
    },
    onEvent(item, refresh) {
      if (item.type === "TaskProgress") updateProgress(item);
      else refresh();
    },
  };

  function attempts(history) {
    const rows = {};
    for (const h of history) {
      const e = h.event || {};
      const n = e.attempt;
      if (!n) continue;
      const row = (rows[n] = rows[n] || { attempt: n, node: e.node_id, steps: [] });
      row.node = row.node || e.node_id;
      row.steps.push([h.type.replace(/^Task/, ""), h.ts]);
    }
    return Object.values(rows);
  }

  function timeline(history) {
    const list = attempts(history);
    if (!list.length) return el("p", { class: "muted" }, "not assigned yet");
    return el("ol", { class: "timeline" }, list.map((a) => el("li", {}, el("b", {}, `attempt ${a.attempt}`), " on ", H.nodeLink(a.node), ": ",
      a.steps.filter((s) => s[0] !== "Progress").map(([what, ts]) => el("span", { class: "step" }, `${what} ${fmt.time(ts)}`)))));
  }

  function historyRow(h) {
    return el("tr", { "data-seq": h.seq },
      el("td", {}, (h.stream === "telemetry" ? "t" : "") + h.seq), el("td", {}, fmt.time(h.ts)), el("td", {}, h.type), el("td", { class: "subject" }, h.subject),
      el("td", {}, el("details", {}, el("summary", {}, "raw"), H.json(h.event))));
  }

  H.pages.task = {
    async render(root, id) {
      const detail = await H.get(`/api/tasks/${encodeURIComponent(id)}`);
      const t = detail.task;
      this.subject = `hive.task.${id}.>`;
      const latest = detail.history.filter((h) => h.type === "TaskProgress").pop();
      const [fraction, message] = progress[id] || (latest ? [latest.event.fraction, latest.event.message] : [0, ""]);
      const files = (t.outputs || []).map((o) => el("li", {}, el("a", { href: `/api/tasks/${encodeURIComponent(id)}/files/${o.name.split("/").map(encodeURIComponent).join("/")}`, download: o.name }, o.name), ` ${o.size} bytes`));
      root.replaceChildren(...[
        el("h2", {}, `Task ${t.task_id} `, H.badge(t.state), " ", cancelButton(t, () => H.refresh())),
        el("div", { class: "grid" },
          H.card("Progress", progressBar(id, t.state, fraction, message),
            H.kv("attempt", `${t.attempt} of ${t.spec.max_attempts}`),
            H.kv("node", H.nodeLink(t.node_id || t.last_node)),
            H.kv("submitted by", t.submitted_by || "–"),
            t.cancelled_by ? H.kv("cancelled by", t.cancelled_by) : null,
            H.kv("depends on", (t.spec.after || []).length ? t.spec.after.map((d) => [H.taskLink(d), " "]) : "nothing"),
            t.waiting_on && t.waiting_on.length ? H.kv("waiting on", t.waiting_on.map((d) => [H.taskLink(d), " "])) : null,
            t.error ? H.kv("error", t.error) : null),
          H.card("Attempts", timeline(detail.history)),
          H.card("Spec", H.json(t.spec))),
        TERMINAL.includes(t.state) ? H.card("Result", H.json(t.result), files.length ? el("ul", { class: "files" }, files) : null,
          t.stdout ? el("details", {}, el("summary", {}, "stdout"), el("pre", {}, t.stdout)) : null,
          t.stderr ? el("details", {}, el("summary", {}, "stderr"), el("pre", {}, t.stderr)) : null) : null,
        detail.requests.length ? H.card("Requests", H.json(detail.requests)) : null,
        H.card("History", H.table(["seq", "time", "event", "subject", ""], detail.history.map(historyRow), { id: "history" })),
      ].filter(Boolean));
    },
    onEvent(item, refresh) {
      if (item.type === "TaskProgress") updateProgress(item);
      else refresh();
    },
  };
})();
