// The log, live: a subject filter, pause and resume, raw JSON of each event. The last
// position shown is kept in sessionStorage, so a reload resumes where the page was.
"use strict";
(function () {
  const { el, fmt } = H;
  const KEEP = 500;
  const key = (subject) => "hive.events.pos:" + subject;

  function summary(item) {
    const e = item.event || {};
    const bits = [];
    for (const name of ["task_id", "node_id", "attempt", "fraction", "message", "reason", "error", "action"]) {
      if (e[name] !== undefined && e[name] !== null && e[name] !== "") bits.push(`${name}=${typeof e[name] === "number" ? fmt.num(e[name], 2) : e[name]}`);
    }
    return bits.join(" ").slice(0, 200);
  }

  function row(item) {
    return el("tr", { "data-pos": item.pos, "data-seq": item.seq, class: item.stream },
      el("td", {}, (item.stream === "telemetry" ? "t" : "") + item.seq), el("td", {}, fmt.time(item.ts)), el("td", {}, item.type),
      el("td", { class: "subject" }, item.subject), el("td", {}, summary(item)),
      el("td", {}, el("details", {}, el("summary", {}, "raw"), H.json(item.event))));
  }

  H.pages.events = {
    manual: true, // follows the log itself: its own filter and resume position
    render(root, _id, params) {
      const subject = params.get("subject") || sessionStorage.getItem("hive.events.subject") || "hive.>";
      sessionStorage.setItem("hive.events.subject", subject);
      let paused = false;
      let shown = 0;
      const body = el("tbody", {});
      const counter = el("span", { id: "event-count", class: "muted" }, "");
      const pause = el("button", { id: "pause" }, "Pause");
      const filter = el("input", { id: "subject", value: subject, size: 40 });
      const start = () => {
        const after = sessionStorage.getItem(key(subject));
        H.follow(subject, (item, id) => {
          body.prepend(row(item)); // newest first
          shown += 1;
          while (body.children.length > KEEP) body.lastChild.remove();
          counter.textContent = `${shown} shown since this page opened · at ${id}`;
          sessionStorage.setItem(key(subject), id);
        }, after ? { after } : { tail: 100 });
      };
      pause.addEventListener("click", () => {
        paused = !paused;
        pause.textContent = paused ? "Resume" : "Pause";
        if (paused) H.unfollow(); // resuming asks for what came meanwhile, from the stored position
        else start();
      });
      const form = el("form", { class: "filters", onsubmit: (e) => {
        e.preventDefault();
        location.hash = "#/events?subject=" + encodeURIComponent(filter.value.trim() || "hive.>");
      } }, "subject ", filter, el("button", { type: "submit" }, "Filter"), " ", pause, " ",
        el("button", { type: "button", onclick: () => { sessionStorage.removeItem(key(subject)); H.route(); } }, "Latest"));
      root.replaceChildren(el("h2", {}, "Events"), form, counter,
        H.table(["seq", "time", "event", "subject", "summary", ""], [body], { id: "events" }));
      start();
    },
  };
})();
