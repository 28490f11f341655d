// Hash routes (#/tasks/ID and so on), the login view, and the live refresh of a page.
"use strict";
(function () {
  const { el } = H;
  const main = document.getElementById("main");

  function parse() {
    const [path, search] = (location.hash.replace(/^#/, "") || "/").split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    const params = new URLSearchParams(search || "");
    if (!parts.length) return ["overview", null, params];
    if (parts[0] === "nodes" && parts[1]) return ["node", parts[1], params];
    if (parts[0] === "tasks" && parts[1]) return ["task", parts[1], params];
    return [H.pages[parts[0]] ? parts[0] : "overview", null, params];
  }

  function loginView(message) {
    const box = el("input", { id: "token", placeholder: "paste a login token", size: 60 });
    main.replaceChildren(
      el("h2", {}, "Log in"),
      el("p", {}, message || "Open the URL that `hive up` or `hive web token NAME` printed, or paste its token:"),
      el("form", { onsubmit: (e) => { e.preventDefault(); location.href = "/login?token=" + encodeURIComponent(box.value.trim()); } }, box, el("button", { type: "submit" }, "Log in"))
    );
  }

  let generation = 0;
  H.route = async function () {
    const [name, id, params] = parse();
    const page = H.pages[name];
    const mine = ++generation;
    document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === (name === "node" ? "nodes" : name === "task" ? "tasks" : name)));
    if (page.manual) {
      const view = el("div", { class: "view" });
      main.replaceChildren(view);
      page.render(view, id, params);
      return;
    }
    // rendered aside and shown only if still current: a slow answer for a page left
    // meanwhile must not overwrite the page now shown
    const show = async () => {
      const view = el("div", { class: "view" });
      await page.render(view, id, params);
      if (mine === generation) main.replaceChildren(view);
    };
    H.refresh = H.debounce(async () => {
      if (mine === generation) await show();
    }, 250);
    try {
      await show();
    } catch (e) {
      if (mine !== generation) return;
      if (e.status === 401) return loginView(e.message);
      main.replaceChildren(el("h2", {}, "Not available"), el("p", { class: "error" }, e.message));
      if (e.status === 404) return;
    }
    if (mine !== generation) return;
    // every page follows the log: an event that concerns it renders it again, within a second
    H.follow(page.subject || "hive.>", (item) => page.onEvent && page.onEvent(item, H.refresh, id), {
      onReconnect: () => H.refresh(),
      onStatus: () => H.refresh(),
    });
  };

  async function start() {
    try {
      H.me = await H.api("/api/me");
    } catch (e) {
      document.getElementById("nav").hidden = true;
      return loginView(e.status === 401 ? e.message : "The web service does not answer: " + e.message);
    }
    const who = document.getElementById("who");
    who.replaceChildren(`${H.me.name} (${H.me.role}) `, el("form", { method: "post", action: "/logout", class: "inline" }, el("button", { type: "submit" }, "log out")));
    document.body.dataset.role = H.me.role;
    window.addEventListener("hashchange", H.route);
    H.route();
  }
  start();
})();
