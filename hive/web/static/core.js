// Shared by every page: the API, the live stream, small DOM helpers. No build step,
// nothing fetched from elsewhere: this file is what the browser runs.
"use strict";
const H = (window.H = {
  me: null,
  pages: {},
  seq: 0, // the newest audit sequence seen: reads pass it as min_seq (they see it applied)
  live: null,
  offline: false,
});

H.el = function (tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
};

H.fmt = {
  time(ts) {
    if (!ts) return "";
    const d = new Date(ts * 1000);
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  },
  ago(ts) {
    if (!ts) return "";
    const s = Math.max(0, Date.now() / 1000 - ts);
    return s < 60 ? `${s.toFixed(0)}s ago` : s < 3600 ? `${(s / 60).toFixed(0)}m ago` : `${(s / 3600).toFixed(1)}h ago`;
  },
  num(x, digits = 1) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(digits).replace(/\.0+$/, "");
  },
  dur(s) {
    return s === null || s === undefined ? "" : s < 60 ? `${s.toFixed(1)}s` : `${(s / 60).toFixed(1)}m`;
  },
};

H.toast = function (text, bad = true) {
  const box = document.getElementById("toast");
  box.textContent = text;
  box.className = "toast " + (bad ? "bad" : "good");
  box.hidden = false;
  clearTimeout(H.toast.timer);
  H.toast.timer = setTimeout(() => (box.hidden = true), 5000);
};

H.api = async function (path, options = {}) {
  const init = { credentials: "same-origin", headers: { Accept: "application/json" }, ...options };
  if (init.method && init.method !== "GET") {
    init.headers["X-Hive-Request"] = "1"; // the CSRF defence: a cross-site form cannot send it
    init.headers["Content-Type"] = "application/json";
    if (init.body && typeof init.body !== "string") init.body = JSON.stringify(init.body);
  }
  const response = await fetch(path, init);
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = { error: `HTTP ${response.status}` };
  }
  if (!response.ok) {
    const error = new Error(body && body.error ? body.error : `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  if (body && body.seq) H.seq = Math.max(H.seq, body.seq);
  return body;
};

// GET with read-your-writes: the coordinator answers once it has applied what we saw
H.get = (path) => H.api(path + (H.seq ? (path.includes("?") ? "&" : "?") + "min_seq=" + H.seq : ""));

H.act = async function (path, body, done) {
  try {
    const reply = await H.api(path, { method: "POST", body: body || {} });
    H.toast(done || "done", false);
    return reply;
  } catch (e) {
    H.toast(e.message);
    return null;
  }
};

// Calls fn at most once per `wait` ms, the last call winning: many events, one refresh.
H.debounce = function (fn, wait) {
  let timer = null;
  let last = 0;
  return function () {
    if (timer) return;
    const due = Math.max(0, last + wait - Date.now());
    timer = setTimeout(async () => {
      timer = null;
      last = Date.now();
      try {
        await fn();
      } catch (e) {
        if (e.status !== 404) console.warn(e);
      }
    }, Math.min(due, wait));
  };
};

H.banner = function () {
  const box = document.getElementById("banner");
  const s = H.liveStatus || {};
  let text = "";
  if (H.offline) text = "Cut off from the web service: reconnecting…";
  else if (s.nats === false) text = "The web service lost NATS: reconnecting… (what you see may be stale)";
  else if (s.coordinator === false) text = "No coordinator answers: " + (s.error || "reconnecting…");
  box.textContent = text;
  box.hidden = !text;
};

// The log, live: one EventSource per page. `after` resumes (an id stored earlier);
// otherwise `tail` recent events come first. The browser reconnects by itself and sends
// the last id it saw as Last-Event-ID, so nothing is lost across a restart.
H.follow = function (subject, onEvent, opts = {}) {
  H.unfollow();
  const params = new URLSearchParams({ subject });
  if (opts.after) params.set("after", opts.after);
  else params.set("tail", String(opts.tail || 0));
  const source = new EventSource("/api/stream?" + params);
  H.live = source;
  source.addEventListener("log", (message) => {
    const item = JSON.parse(message.data);
    if (item.stream === "audit") H.seq = Math.max(H.seq, item.seq);
    onEvent(item, message.lastEventId);
  });
  source.addEventListener("status", (message) => {
    const before = H.liveStatus || {};
    H.liveStatus = JSON.parse(message.data);
    H.banner();
    // back from a cut: what the page shows may be stale, render it again
    const back = (before.coordinator === false || before.nats === false) && H.liveStatus.coordinator && H.liveStatus.nats;
    if (back && opts.onStatus) opts.onStatus(H.liveStatus);
  });
  source.addEventListener("gap", () => H.toast("some older events were skipped (too far back)"));
  source.onopen = () => {
    if (H.offline && opts.onReconnect) opts.onReconnect();
    H.offline = false;
    H.banner();
  };
  source.onerror = () => {
    H.offline = true;
    H.banner();
  };
  return source;
};

H.unfollow = function () {
  if (H.live) H.live.close();
  H.live = null;
};

H.bar = function (used, total, label) {
  const share = total > 0 ? Math.min(1, used / total) : 0;
  return H.el(
    "div",
    { class: "meter", title: `${H.fmt.num(used)} of ${H.fmt.num(total)}` },
    H.el("div", { class: "fill", style: { width: `${(share * 100).toFixed(1)}%` } }),
    H.el("span", {}, label || `${H.fmt.num(used)} / ${H.fmt.num(total)}`)
  );
};

H.badge = (state) => H.el("span", { class: `badge s-${state}` }, state);
H.link = (href, text) => H.el("a", { href }, text);
H.taskLink = (id) => H.link(`#/tasks/${encodeURIComponent(id)}`, id);
H.nodeLink = (id) => (id ? H.link(`#/nodes/${encodeURIComponent(id)}`, id) : "");
H.json = (value) => H.el("pre", { class: "json" }, JSON.stringify(value, null, 2));
H.table = (heads, rows, attrs) =>
  H.el("table", attrs || {}, H.el("thead", {}, H.el("tr", {}, heads.map((h) => H.el("th", {}, h)))), H.el("tbody", {}, rows));
H.card = (title, ...body) => H.el("section", { class: "card" }, H.el("h3", {}, title), ...body);
H.counts = (obj) =>
  H.el("div", { class: "counts" }, Object.entries(obj || {}).map(([k, v]) => H.el("span", { class: `count s-${k}` }, H.el("b", {}, v), " ", k)));
H.kv = (label, ...value) => H.el("div", { class: "kv" }, H.el("span", { class: "k" }, label), H.el("span", {}, ...value));
