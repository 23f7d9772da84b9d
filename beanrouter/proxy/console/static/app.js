// beanrouter console: polls the proxy's JSON endpoints and draws the page (no dependencies).
// Every value from the cluster is put in the page as text (textContent), never as HTML.
"use strict";

const TOKEN = document.querySelector('meta[name="beanrouter-token"]').content;
const ADMIN = document.querySelector('meta[name="beanrouter-admin"]').content === "on";
const POLL_MS = 2000;
const COLORS = ["#0b5cad", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#0a7c86", "#57606a"];
const STATES = ["ready", "reserved", "delayed", "buried"];

let timer = null;
let currentJob = null;

function $(sel) { return document.querySelector(sel); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fillBody(table, rows) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows);
}

function clock(epoch) {
  return new Date(epoch * 1000).toLocaleTimeString([], { hour12: false });
}

function ago(epoch) {
  const s = Math.max(0, Math.round(Date.now() / 1000 - epoch));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d";
}

function message(text, kind) {
  const m = $("#message");
  m.textContent = text;
  m.className = kind || "";
}

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  const doc = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(doc.error || response.statusText);
  return doc;
}

async function act(action) {
  const response = await fetch("/api/action", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Beanrouter-Token": TOKEN },
    body: JSON.stringify(action),
    cache: "no-store",
  });
  const doc = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) {
    message(action.action + ": " + (doc.error || response.status), "error");
    return null;
  }
  message(action.action + ": done " + JSON.stringify(doc), "ok");
  refresh();
  return doc;
}

// ---- the overview ---------------------------------------------------------------------------

function shardRow(s) {
  const state = s.up
    ? el("span", { class: "up" }, "up")
    : el("span", { class: "down" }, "down");
  const why = !s.answers ? "does not answer" : s.core_up === false ? "marked down by the proxy" : null;
  const binlog = s.binlog
    ? `files ${s.binlog["oldest-index"]}–${s.binlog["current-index"]}, ${s.binlog["records-written"]} records`
    : "—";
  const err = s.error ? el("span", { class: "err", title: clock(s.error.time) },
    s.error.message + " (" + ago(s.error.time) + " ago)") : "—";
  const cells = STATES.map((k) => el("td", { class: "n c-" + k }, s.answers ? s.jobs[k] : "—"));
  return el("tr", { "data-shard": s.name, class: s.up ? null : "down-row" },
    el("td", {}, s.name), el("td", { class: "n" }, s.id), el("td", {}, s.address),
    el("td", { class: "c-state" }, state, " since ", clock(s.since), " (", ago(s.since), ")",
      why ? el("div", { class: "muted small" }, why) : null),
    cells, el("td", { class: "n" }, s.tubes === null ? "—" : s.tubes),
    el("td", { class: "small" }, binlog), el("td", { class: "small" }, err));
}

function perShard(t) {
  return Object.entries(t.per_shard).map(([name, c]) =>
    el("div", { class: "small" }, `${name}: ` + STATES.map((k) => `${k[0]}${c[k]}`).join(" ")));
}

function tubeRow(t) {
  const link = el("a", { href: "#/tube/" + encodeURIComponent(t.name) }, t.name);
  return el("tr", { "data-tube": t.name },
    el("td", {}, link),
    STATES.map((k) => el("td", { class: "n c-" + k }, t.jobs[k])),
    el("td", {}, perShard(t)), el("td", {}, t.owner), el("td", {}, t.failover.join(", ") || "—"),
    el("td", { class: "c-paused" }, t.paused ? `paused (${t.pause_left} s left)` : "no"),
    el("td", { class: "n" }, t.watching), el("td", { class: "n" }, t.waiting),
    el("td", { class: "n c-away" }, t.away));
}

function renderOverview(doc) {
  const up = doc.shards_up;
  const total = doc.shards.length;
  $("#summary").textContent = `${up}/${total} shards up · ${doc.tubes.length} tubes · ` +
    STATES.map((k) => `${doc.jobs[k]} ${k}`).join(", ") +
    (doc.away ? ` · ${doc.away} away from their owner` : "") +
    (doc.proxy.draining ? " · draining" : "");
  $("#summary").className = up < total ? "down" : "";
  fillBody($("#shards"), doc.shards.map(shardRow));
  fillBody($("#tubes"), doc.tubes.map(tubeRow));
}

// ---- charts (inline SVG) --------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmt(v) {
  if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
  if (v >= 10 || v === 0) return v.toFixed(0);
  return v.toPrecision(2);
}

// lines: [{name, color, dash, points: [[t, v|null]]}]
function drawChart(node, lines, t0, t1) {
  const W = 420, H = 160, L = 42, R = 8, T = 8, B = 34;
  node.setAttribute("viewBox", `0 0 ${W} ${H}`);
  let max = 0;
  for (const line of lines) for (const [, v] of line.points) if (v !== null && v > max) max = v;
  max = niceMax(max);
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const parts = [svg("line", { class: "axis", x1: L, y1: y(0), x2: W - R, y2: y(0) }),
    svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: y(0) })];
  for (const f of [0, 0.5, 1]) {
    parts.push(svg("text", { x: L - 4, y: y(max * f) + 3, "text-anchor": "end" }, fmt(max * f)));
  }
  parts.push(svg("text", { x: L, y: H - B + 12 }, clock(t0)));
  parts.push(svg("text", { x: W - R, y: H - B + 12, "text-anchor": "end" }, clock(t1)));
  let lx = L;
  for (const line of lines) {
    let d = "";
    let pen = false;
    for (const [t, v] of line.points) {
      if (v === null) { pen = false; continue; }
      d += (pen ? "L" : "M") + x(t).toFixed(1) + "," + y(v).toFixed(1);
      pen = true;
    }
    const attrs = { class: "line", d: d || "M0,0", stroke: line.color };
    if (line.dash) attrs["stroke-dasharray"] = "4 3";
    const path = svg("path", attrs);
    path.setAttribute("data-series", line.name);
    parts.push(path);
    if (line.dots) {  // sparse series (wake-ups come and go): a dot per point shows lone ones
      for (const [t, v] of line.points) {
        if (v !== null) parts.push(svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: line.dash ? 1.5 : 2.2, fill: line.color }));
      }
    }
    const label = svg("text", { x: lx, y: H - 6, fill: line.color, class: "legend" }, line.name);
    label.style.fill = line.color;
    parts.push(label);
    lx += 8 + 6.2 * line.name.length;
  }
  node.replaceChildren(...parts);
}

function renderSeries(doc) {
  const pts = doc.points;
  const now = Date.now() / 1000;
  const t1 = pts.length ? pts[pts.length - 1].t : now;
  // The last 5 minutes, or since the proxy started (at least one minute shown).
  const t0 = Math.min(t1 - 60, Math.max(t1 - 300, pts.length ? pts[0].t : t1));
  const pick = (key) => pts.map((p) => [p.t, p[key]]);
  drawChart($("#chart-commands"), [{ name: "commands", color: COLORS[0], points: pick("commands") }], t0, t1);
  drawChart($("#chart-jobs"), [
    { name: "put", color: COLORS[0], points: pick("puts") },
    { name: "delivered", color: COLORS[2], points: pick("deliveries") },
  ], t0, t1);
  const lines = [];
  doc.shards.forEach((name, i) => {
    const color = COLORS[i % COLORS.length];
    const q = (k) => pts.map((p) => {
      const w = p.wakeup[name];
      return [p.t, w && w[k] !== null ? w[k] * 1000 : null];
    });
    lines.push({ name: name + " p50", color, dots: true, points: q(0) });
    lines.push({ name: "p99", color, dash: true, dots: true, points: q(1) });
  });
  drawChart($("#chart-wakeup"), lines, t0, t1);
}

// ---- a tube's page ----------------------------------------------------------------------------

function jobLink(job) {
  if (!job) return "—";
  const body = job.body.text.length > 40 ? job.body.text.slice(0, 40) + "…" : job.body.text;
  return el("span", {},
    el("a", { href: "#", "data-job": job.id, onclick: (e) => { e.preventDefault(); showJob(job.id); } },
      "#" + job.id),
    " ", el("span", { class: "muted small" }, body));
}

function renderTube(doc) {
  const t = doc.tube;
  $("#tube-name").textContent = t.name;
  $("#summary").textContent = `tube ${t.name}: ` + STATES.map((k) => `${t.jobs[k]} ${k}`).join(", ");
  $("#summary").className = "";
  const facts = [
    ["Owner", t.owner], ["Failover", t.failover.join(", ") || "—"],
    ["Puts go to", t.puts_go_to || "—"], ["Consumers watch", t.consumers.join(", ")],
    ["Paused", t.paused ? `yes, ${t.pause_left} s left` : "no"],
    ["Clients watching / waiting / using", `${t.watching} / ${t.waiting} / ${t.using}`],
    ["Jobs away from the owner", t.away],
    ["Jobs", STATES.map((k) => `${t.jobs[k]} ${k}`).join(", ")],
  ];
  $("#tube-info").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  fillBody($("#tube-shards"), Object.entries(t.per_shard).map(([name, c]) => {
    const peek = doc.peek[name] || {};
    const cells = peek.error
      ? [el("td", { colspan: 3, class: "err" }, peek.error)]
      : ["ready", "delayed", "buried"].map((k) => el("td", { class: "peek-" + k }, jobLink(peek[k])));
    return el("tr", { "data-shard": name }, el("td", {}, name),
      STATES.map((k) => el("td", { class: "n c-" + k }, c[k])), cells);
  }));
}

function tubeActions(name) {
  const box = $("#tube-actions");
  if (!ADMIN) {
    box.replaceChildren(el("p", { class: "muted", id: "readonly-note" },
      "Read-only console: start the proxy with --http-admin to kick, delete or pause."));
    return;
  }
  const kickN = el("input", { type: "number", min: 1, value: 1, name: "bound", "aria-label": "jobs to kick" });
  const pauseS = el("input", { type: "number", min: 0, value: 60, name: "delay", "aria-label": "seconds" });
  box.replaceChildren(
    el("form", { id: "kick-form", onsubmit: (e) => { e.preventDefault(); act({ action: "kick", tube: name, bound: Number(kickN.value) }); } },
      "Kick", kickN, "jobs", el("button", { type: "submit" }, "Kick")),
    el("form", { id: "pause-form", onsubmit: (e) => { e.preventDefault(); act({ action: "pause", tube: name, delay: Number(pauseS.value) }); } },
      "Pause for", pauseS, "s", el("button", { type: "submit" }, "Pause"),
      el("button", { type: "button", onclick: () => act({ action: "pause", tube: name, delay: 0 }) }, "Resume")));
}

async function showJob(id) {
  currentJob = id;
  try {
    renderJob(await getJSON("/api/job?id=" + encodeURIComponent(id)));
  } catch (err) {
    $("#job").hidden = true;
    message("job " + id + ": " + err.message, "error");
  }
}

function renderJob(doc) {
  $("#job").hidden = false;
  $("#job-id").textContent = `${doc.id} on ${doc.shard}`;
  fillBody($("#job-stats"), Object.entries(doc.stats).map(([k, v]) =>
    el("tr", {}, el("th", {}, k), el("td", { "data-stat": k }, v))));
  const body = doc.body;
  $("#job-body").textContent = body ? body.text : "";
  $("#job-body-size").textContent = body
    ? `${body.size} bytes` + (body.truncated ? ", first 4096 shown" : "") : "";
  const box = $("#job-actions");
  if (!ADMIN) { box.replaceChildren(); return; }
  const state = doc.stats.state;
  box.replaceChildren(
    el("button", { id: "kick-job", disabled: !(state === "buried" || state === "delayed"),
      onclick: () => act({ action: "kick-job", id: String(doc.id) }) }, "Kick this job"),
    el("button", { id: "delete-job", disabled: !(state === "ready" || state === "buried" || state === "delayed"),
      onclick: async () => {
        if (await act({ action: "delete", id: String(doc.id) })) { $("#job").hidden = true; currentJob = null; }
      } }, "Delete this job"));
}

// ---- routing and polling ----------------------------------------------------------------------

function route() {
  const m = location.hash.match(/^#\/tube\/(.+)$/);
  return m ? { tube: decodeURIComponent(m[1]) } : {};
}

async function refresh() {
  const r = route();
  try {
    if (r.tube !== undefined) {
      renderTube(await getJSON("/api/tube?name=" + encodeURIComponent(r.tube)));
      if (currentJob !== null) {
        getJSON("/api/job?id=" + currentJob).then(renderJob).catch(() => { $("#job").hidden = true; });
      }
    } else {
      const [overview, series] = await Promise.all([getJSON("/api/overview"), getJSON("/api/series")]);
      renderOverview(overview);
      renderSeries(series);
    }
    $("#status").textContent = "updated " + clock(Date.now() / 1000);
    $("#status").className = "muted";
  } catch (err) {
    $("#status").textContent = "cannot refresh: " + err.message;
    $("#status").className = "err";
  }
}

function show() {
  const r = route();
  $("#overview-page").hidden = r.tube !== undefined;
  $("#tube-page").hidden = r.tube === undefined;
  $("#job").hidden = true;
  currentJob = null;
  message("");
  if (r.tube !== undefined) tubeActions(r.tube);
  clearInterval(timer);
  refresh();
  timer = setInterval(refresh, POLL_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const mode = $("#mode");
  mode.textContent = ADMIN ? "admin actions on" : "read-only";
  mode.classList.toggle("admin", ADMIN);
  window.addEventListener("hashchange", show);
  show();
});
