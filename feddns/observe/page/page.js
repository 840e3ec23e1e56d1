// The feddns federation page: polls the JSON views next to /debug and renders them.
// No framework and no build step; every value is written with textContent (never
// parsed as HTML), and nothing is fetched from anywhere but this listener.
"use strict";

(() => {
  const OVERVIEW_MS = 1000;
  const MATRIX_MS = 2000;
  const SERIES_MS = 2000;
  const DECISION_MS = 2000;
  const WINDOW_S = 600;
  const RCODE_COLOURS = {
    NOERROR: "#1a7f37", NXDOMAIN: "#0550ae", SERVFAIL: "#cf222e", REFUSED: "#8250df",
    FORMERR: "#9a6700", NOTIMP: "#6e7781", BADVERS: "#bc4c00", other: "#57606a",
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    query: "", offset: 0, limit: 50, matrixSeq: 0, matrixShown: false, placesKey: "",
    decision: null, decisionSeq: 0, lastMatches: 0,
  };

  // --- helpers ----------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("data-") || key.startsWith("aria-") || key === "scope"
               || key === "title" || key === "type") node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  // --- the observe token -------------------------------------------------------------
  // Off loopback feddns answers /debug/... only with `Authorization: Bearer <token>`.
  // The page takes the token from its address (/ui#token=...: a fragment never reaches
  // the server nor its logs), keeps it in sessionStorage (this tab only, gone when it
  // closes; never localStorage) and removes it from the address bar. On a 401 it asks
  // for the token and holds every poll until one is given, then retries with it.

  const TOKEN_KEY = "feddns-observe-token";
  const auth = { token: null, waiting: null, release: null, asked: 0 };

  function remember(token) {
    auth.token = token;
    try {
      sessionStorage.setItem(TOKEN_KEY, token);
    } catch (err) { /* storage turned off: the token lives in memory only */ }
  }

  // Takes `token=...` from the fragment (not URLSearchParams: it would turn a "+" into
  // a space) and removes the fragment from the address bar and the history entry.
  function tokenFromAddress() {
    const match = /(?:^|&)token=([^&]*)/.exec(location.hash.slice(1));
    if (!match) return false;
    history.replaceState(history.state, "", location.pathname + location.search);
    let token = match[1];
    try { token = decodeURIComponent(token); } catch (err) { /* keep it as written */ }
    token = token.trim();
    if (!token) return false;
    remember(token);
    return true;
  }

  function loadToken() {
    if (tokenFromAddress()) return;
    try { auth.token = sessionStorage.getItem(TOKEN_KEY); } catch (err) { auth.token = null; }
  }

  // A 401 (or a token a header cannot carry) for a request sent with `sent`: show the
  // prompt and make the polls wait, unless a newer token was given meanwhile.
  function askForToken(sent) {
    if (auth.token !== sent || auth.waiting) return;
    auth.waiting = new Promise((resolve) => { auth.release = resolve; });
    $("auth").hidden = false;
    $("auth").dataset.asked = String(++auth.asked);  // how many times asked (tests read it)
    const connection = $("connection");
    connection.textContent = "Waiting for the observe token.";
    connection.className = "down";
    $("auth-token").focus();
  }

  function useToken(token) {
    remember(token);
    $("auth").hidden = true;
    const release = auth.release;
    auth.waiting = auth.release = null;
    $("connection").textContent = "Connecting…";
    $("connection").className = "";
    if (release) release();
  }

  function wireToken() {
    $("auth-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const field = $("auth-token");
      const token = field.value.trim();
      if (!token) {
        field.focus();
        return;
      }
      field.value = "";
      useToken(token);
    });
    // A token pasted into the address bar of the open page (/ui#token=...).
    window.addEventListener("hashchange", () => {
      if (tokenFromAddress()) useToken(auth.token);
    });
  }

  async function getJSON(url) {
    for (;;) {
      if (auth.waiting) await auth.waiting;
      const sent = auth.token;
      const headers = new Headers();
      try {
        if (sent) headers.set("Authorization", `Bearer ${sent}`);
      } catch (err) {  // not a token a header can carry: ask again
        askForToken(sent);
        continue;
      }
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), 5000);
      try {
        const response = await fetch(url, { cache: "no-store", headers,
                                             signal: controller.signal });
        if (response.status === 401) {
          askForToken(sent);
          continue;
        }
        const body = await response.json();
        if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
        return body;
      } finally {
        clearTimeout(timer);
      }
    }
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "never";
    if (seconds < 10) return `${seconds.toFixed(1)} s`;
    if (seconds < 120) return `${Math.round(seconds)} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    return `${(seconds / 3600).toFixed(1)} h`;
  }

  function clock(epoch) {
    return new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
  }

  function number(n) {
    return Number(n).toLocaleString("en-US");
  }

  // Runs `step` now and then `every` ms after each run ends (never two at once).
  function poll(step, every) {
    const run = async () => {
      try { await step(); } finally { setTimeout(run, every); }
    };
    run();
  }

  // --- the overview -----------------------------------------------------------------

  function stateBadge(state) {
    return el("span", { class: `state state-${state}`, text: state });
  }

  function changesList(transitions) {
    if (!transitions.length) return el("span", { text: "none since start" });
    const list = el("ul", { class: "changes" });
    for (const t of transitions.slice(0, 3)) {
      const why = t.error ? `: ${t.error}` : "";
      list.append(el("li", { text: `${t.from} → ${t.to} ${age(t.ago_seconds)} ago`
        + ` (${clock(t.at)})${why}` }));
    }
    return list;
  }

  function renderClusters(view) {
    const body = document.querySelector("#cluster-table tbody");
    const rows = view.clusters.map((c) => {
      const state = el("td", {}, stateBadge(c.state),
        ` for ${age(c.state_age_seconds)}`,
        c.error ? el("div", { class: "changes", text: c.error }) : null);
      return el("tr", { "data-cluster": c.name, "data-state": c.state },
        el("th", { scope: "row", text: c.name }),
        el("td", { text: c.region || "?" }),
        el("td", { text: (c.zones || []).join(", ") || "-" }),
        state,
        el("td", { class: "num", text: age(c.data_age_seconds) }),
        el("td", { class: "num", text: age(c.fresh_age_seconds) }),
        el("td", { class: "num", text: number(c.services) }),
        el("td", { class: "num", text: number(c.endpoints) }),
        el("td", { text: c.source }),
        el("td", {}, changesList(c.transitions || [])));
    });
    body.replaceChildren(...rows);
  }

  function renderHeader(view) {
    $("federation").textContent = view.federation;
    document.title = `feddns ${view.federation}`;
    const t = view.table;
    $("summary").textContent = `version ${view.version} · ${view.ready ? "ready" : "not ready"}`
      + ` · serial ${t.serial} · ${number(t.services)} services · ${number(t.names)} names`
      + ` · hold-down ${view.damping.hold_down_seconds} s · up ${age(view.uptime_seconds)}`;
    const gate = view.sync_gate;
    let text = gate.open ? "Sync gate open." : `Sync gate closed: waiting for `
      + `${gate.awaited.join(", ")} (at most ${gate.sync_timeout_seconds} s).`;
    if (gate.unsynced.length) text += ` Unsynced past the gate: ${gate.unsynced.join(", ")}.`;
    $("gate").textContent = text;
    const banner = $("isolation");
    if (view.isolation) {
      const iso = view.isolation;
      banner.textContent = `Self-isolation suspected for ${age(iso.since_seconds)}: clusters `
        + `${iso.clusters.join(", ")} were lost together, so answers are held as they were `
        + `(for at most ${iso.max_hold_seconds} s).`;
      banner.hidden = false;
    } else {
      banner.hidden = true;
      banner.textContent = "";
    }
  }

  function renderBus(bus) {
    const body = $("bus-body");
    if (!bus) {
      body.replaceChildren(el("p", { text: "Not configured." }));
      return;
    }
    const others = bus.brokers.filter((b) => b !== bus.broker);
    const parts = [
      el("p", { text: bus.connected ? `Connected to ${bus.broker}` : "Not connected",
                class: bus.connected ? null : "error" },
         others.length ? ` (also configured: ${others.join(", ")})` : "",
         bus.last_error ? ` · last error: ${bus.last_error}` : ""),
      el("p", { text: `published ${number(bus.published)} · received ${number(bus.received)}`
        + ` · applied ${number(bus.applied)} · duplicates ${number(bus.duplicates)}`
        + ` · dropped ${number(bus.dropped)} · gap requests ${number(bus.gap_requests)}` }),
    ];
    const reasons = Object.entries(bus.rejected);
    parts.push(el("p", { text: reasons.length ? "Rejected messages: " + reasons.map(
      ([reason, n]) => `${reason} ${number(n)}`).join(", ") : "No message rejected." }));
    const peers = Object.entries(bus.peers);
    if (peers.length) {
      const rows = peers.map(([name, p]) => {
        const refused = Object.entries(p.rejected_services);
        return el("tr", {},
          el("th", { scope: "row", text: name }),
          el("td", { text: p.online === null ? "?" : (p.online ? "online" : "offline") }),
          el("td", { class: "num", text: age(p.heartbeat_age_seconds) }),
          el("td", { class: "num", text: number(p.services) }),
          el("td", { text: p.complete ? "yes" : "no" }),
          el("td", { text: refused.length ? refused.map(([s, why]) => `${s} (${why})`)
            .join(", ") : "none" }));
      });
      parts.push(el("table", {},
        el("caption", { text: "Peers heard on the bus" }),
        el("thead", {}, el("tr", {}, ...["Cluster", "Status", "Heartbeat age", "Services",
          "Complete", "Rejected services"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, ...rows)));
    }
    body.replaceChildren(...parts);
  }

  function renderReload(view) {
    const r = view.reloads;
    let text = r.last_at === null ? "No reload since start."
      : (r.last_ok ? `Last reload accepted ${age(r.last_ago_seconds)} ago (${clock(r.last_at)}).`
        : `Last reload rejected ${age(r.last_ago_seconds)} ago (${clock(r.last_at)}): `
          + `${r.last_error}. The previous configuration still runs.`);
    text += ` Reloads: ${r.success} accepted, ${r.failure} rejected.`;
    if (view.config) text += ` File: ${view.config}.`;
    $("reload-body").textContent = text;
    $("reload-body").className = r.last_ok ? "" : "error";
  }

  function renderPlaces(view) {
    const choices = [];
    for (const c of view.clusters) {
      choices.push([`${c.name}|`, `cluster ${c.name} (${c.region || "?"})`]);
      for (const z of c.zones || []) choices.push([`${c.name}|${z}`, `cluster ${c.name}, zone ${z}`]);
    }
    const key = JSON.stringify(choices);
    if (key === ui.placesKey) return;
    ui.placesKey = key;
    const select = $("decision-place");
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "", text: "unknown place" }),
      ...choices.map(([value, text]) => el("option", { value, text })));
    select.value = choices.some(([v]) => v === chosen) ? chosen : "";
  }

  async function refreshOverview() {
    const connection = $("connection");
    try {
      const view = await getJSON("/debug/federation");
      renderHeader(view);
      renderClusters(view);
      renderBus(view.bus);
      renderReload(view);
      renderPlaces(view);
      connection.textContent = `Live: updated ${clock(view.now)}.`;
      connection.className = "";
    } catch (err) {
      connection.textContent = `Lost contact with feddns (${err.message}); retrying.`;
      connection.className = "down";
    }
  }

  // --- the matrix -------------------------------------------------------------------

  function matrixCell(cell) {
    if (cell.excluded) {
      return el("td", { class: "cell excluded", title: "outside the allowed regions" },
        cell.present ? String(cell.ready) : "–", el("span", { class: "w", text: "excluded" }));
    }
    if (!cell.present && cell.level === null) {
      return el("td", { class: "cell absent", title: "not in this cluster's data" }, "–");
    }
    const level = cell.level || "unhealthy";
    const weight = cell.weight === null ? "" : `w${cell.weight}`;
    const label = level === "ready" ? "" : ` ${level}`;
    return el("td", { class: `cell lvl-${level}`, "data-level": level,
                      title: `${cell.ready} of ${cell.endpoints} endpoints ready; level ${level};`
                        + ` weight ${cell.weight}` },
      `${cell.ready}${label}`, el("span", { class: "w", text: weight }));
  }

  function renderMatrix(m) {
    const head = el("tr", {}, el("th", { scope: "col", text: "Service" }),
      el("th", { scope: "col", text: "Residency" }),
      ...m.clusters.map((c) => el("th", { scope: "col", "data-cluster": c.name },
        c.name, el("br"), el("span", { class: `state state-${c.state}`, text: c.state }))));
    document.querySelector("#matrix-table thead").replaceChildren(head);
    const rows = m.rows.map((r) => {
      const button = el("button", { type: "button", class: "service", text: r.service,
                                    title: "Explain this service's answer below" });
      button.addEventListener("click", () => chooseService(r.service));
      return el("tr", { "data-service": r.service },
        el("th", { scope: "row" }, button, r.headless ? " (headless)" : ""),
        el("td", { text: r.regions ? r.regions.join(", ") : "any region" }),
        ...r.cells.map(matrixCell));
    });
    document.querySelector("#matrix-table tbody").replaceChildren(...rows);
    const first = m.matches ? m.offset + 1 : 0;
    const last = m.offset + m.rows.length;
    const filter = m.query ? ` matching “${m.query}”` : "";
    $("matrix-count").textContent = `Services ${number(first)}–${number(last)} of `
      + `${number(m.matches)}${filter} (${number(m.total)} in all).`;
    $("prev").disabled = m.offset <= 0;
    $("next").disabled = last >= m.matches;
    ui.offset = m.offset;
    ui.lastMatches = m.matches;
    if (!ui.matrixShown) {
      ui.matrixShown = true;
      performance.mark("matrix-shown");
      document.body.dataset.matrixShown = String(performance.now());
    }
  }

  async function refreshMatrix() {
    const seq = ++ui.matrixSeq;
    const params = new URLSearchParams({ q: ui.query, offset: ui.offset, limit: ui.limit });
    try {
      const m = await getJSON(`/debug/matrix?${params}`);
      if (seq === ui.matrixSeq) renderMatrix(m);
    } catch (err) {
      if (seq === ui.matrixSeq) $("matrix-count").textContent = `Matrix unavailable: ${err.message}`;
    }
  }

  function wireMatrix() {
    let timer = null;
    $("search").addEventListener("input", (event) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        ui.query = event.target.value.trim();
        ui.offset = 0;
        refreshMatrix();
      }, 150);
    });
    $("matrix-form").addEventListener("submit", (event) => event.preventDefault());
    $("prev").addEventListener("click", () => {
      ui.offset = Math.max(0, ui.offset - ui.limit);
      refreshMatrix();
    });
    $("next").addEventListener("click", () => {
      ui.offset += ui.limit;
      refreshMatrix();
    });
    $("page-size").addEventListener("change", (event) => {
      ui.limit = Number(event.target.value);
      refreshMatrix();
    });
  }

  // --- the decision -----------------------------------------------------------------

  function chooseService(name) {
    $("decision-service").value = name;
    $("decision-form").requestSubmit();
    $("decision").scrollIntoView();
    $("decision-service").focus();
  }

  function answerRow(type, a) {
    const records = a.records.length ? a.records.join(", ") : "(none)";
    return el("tr", { "data-qtype": type }, el("th", { scope: "row", text: type }),
      el("td", { text: a.rcode }), el("td", { text: records }),
      el("td", { class: "num", text: a.ttl === null ? "-" : String(a.ttl) }),
      el("td", { text: a.stale ? "stale (EDE 3)" : "no" }),
      el("td", { class: "num", text: String(a.rotations) }));
  }

  function renderDecision(d) {
    const where = d.place.given + (d.place.cluster ? ` → placed in cluster ${d.place.cluster}`
      + (d.place.zone ? `, zone ${d.place.zone}` : "") : " → the federation-wide answer");
    $("decision-body").replaceChildren(
      el("p", {}, el("strong", { text: d.name }), ` asked from ${where}.`),
      el("table", { id: "decision-answers" },
        el("caption", { text: "The answer feddns gives this client" }),
        el("thead", {}, el("tr", {}, ...["Type", "Rcode", "Records (first order)", "TTL",
          "Stale", "Orders"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, answerRow("A", d.answers.A), answerRow("AAAA", d.answers.AAAA))),
      el("p", { text: `Why: the TXT record ${d.explain_name} for this place says` }),
      el("pre", { id: "explain-lines", text: d.explain.join("\n") }));
  }

  async function refreshDecision() {
    if (!ui.decision) return;
    const seq = ++ui.decisionSeq;
    const params = new URLSearchParams({ service: ui.decision.service });
    if (ui.decision.cidr) params.set("cidr", ui.decision.cidr);
    else if (ui.decision.place) {
      const [cluster, zone] = ui.decision.place.split("|");
      params.set("cluster", cluster);
      if (zone) params.set("zone", zone);
    }
    try {
      const d = await getJSON(`/debug/decision?${params}`);
      if (seq === ui.decisionSeq) renderDecision(d);
    } catch (err) {
      if (seq === ui.decisionSeq) {
        $("decision-body").replaceChildren(el("p", { class: "error", text: err.message }));
      }
    }
  }

  function wireDecision() {
    $("decision-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const service = $("decision-service").value.trim();
      if (!service) return;
      ui.decision = { service, place: $("decision-place").value,
                      cidr: $("decision-cidr").value.trim() };
      refreshDecision();
    });
  }

  // --- the plots --------------------------------------------------------------------

  const SVG = "http://www.w3.org/2000/svg";

  function svgEl(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // lines: [{name, colour, values: [[epoch, value or null], ...]}]
  // The x axis spans the data kept (at most ten minutes, at least ten samples).
  function drawPlot(id, legendId, lines, now, span, unit) {
    const svg = $(id);
    const W = 320, H = 120, L = 34, R = 6, T = 8, B = 16;
    const all = lines.flatMap((l) => l.values.map(([, v]) => v)).filter((v) => v !== null);
    const top = niceMax(Math.max(0, ...all));
    const x = (t) => L + (W - L - R) * (1 - (now - t) / span);
    const y = (v) => T + (H - T - B) * (1 - v / top);
    const nodes = [
      svgEl("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
      svgEl("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
    ];
    const label = (text, attrs) => {
      const t = svgEl("text", attrs);
      t.textContent = text;
      return t;
    };
    nodes.push(label(String(top), { x: L - 3, y: T + 7, "text-anchor": "end" }));
    nodes.push(label("0", { x: L - 3, y: H - B, "text-anchor": "end" }));
    nodes.push(label(`−${age(span)}`, { x: L, y: H - 3 }));
    nodes.push(label("now", { x: W - R, y: H - 3, "text-anchor": "end" }));
    for (const line of lines) {
      let run = [];
      const flush = () => {
        if (run.length) {
          nodes.push(svgEl("polyline", { points: run.join(" "), stroke: line.colour }));
        }
        run = [];
      };
      for (const [t, v] of line.values) {
        if (v === null || now - t > span) { flush(); continue; }
        run.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
      }
      flush();
    }
    if (!all.length) nodes.push(label("no data yet", { x: W / 2, y: H / 2, "text-anchor": "middle" }));
    svg.replaceChildren(...nodes);
    $(legendId).replaceChildren(...lines.map((line) => {
      const last = [...line.values].reverse().find(([, v]) => v !== null);
      const value = last ? `${Number(last[1].toPrecision(3))}${unit}` : "-";
      const swatch = el("span", { class: "swatch", "aria-hidden": "true" });
      swatch.style.background = line.colour;
      return el("li", {}, swatch, `${line.name}: ${value}`);
    }));
  }

  async function refreshSeries() {
    let series;
    try {
      series = await getJSON("/debug/series");
    } catch (err) {
      return;
    }
    const points = series.points;
    const now = points.length ? points[points.length - 1].at : Date.now() / 1000;
    const first = points.length ? points[0].at : now;
    const span = Math.min(WINDOW_S, Math.max(now - first, 10 * series.interval_seconds));
    const names = [...new Set(points.flatMap((p) => Object.keys(p.rcodes)))].sort();
    drawPlot("plot-rcodes", "legend-rcodes", names.map((name) => ({
      name, colour: RCODE_COLOURS[name] || "#57606a",
      values: points.map((p) => [p.at, p.rcodes[name] || 0]),
    })), now, span, "/s");
    const ms = (v) => (v === null ? null : v * 1000);
    drawPlot("plot-programming", "legend-programming", [
      { name: "mean", colour: "#0550ae",
        values: points.map((p) => [p.at, ms(p.programming_mean_seconds)]) },
      { name: "p90 bucket", colour: "#9a6700",
        values: points.map((p) => [p.at, ms(p.programming_p90_seconds)]) },
    ], now, span, " ms");
    drawPlot("plot-stale", "legend-stale", [
      { name: "stale answers", colour: "#bc4c00", values: points.map((p) => [p.at, p.stale]) },
    ], now, span, "/s");
  }

  // --- start ------------------------------------------------------------------------

  function start() {
    loadToken();
    wireToken();
    wireMatrix();
    wireDecision();
    poll(refreshMatrix, MATRIX_MS);
    poll(refreshOverview, OVERVIEW_MS);
    poll(refreshSeries, SERIES_MS);
    poll(refreshDecision, DECISION_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
