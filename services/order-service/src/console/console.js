// The fulfillment console: an operator's live view. Three views on one page (hash routes):
//   #/pipeline       the stream and its five groups as the saga flows, each consumer's share of the
//                    work, orders per second and completion times over the last minutes, demo controls
//   #/orders[/<id>]  orders paged and filtered by status, searched by id, one's timeline beside them
//   #/dlq[/<id>]     dead letters: error, group, deliveries and event; replay or delete
// Everything live comes from polling GET /stats every 2 s (rates are differences of two polls of the
// server's counters) and from the /ws status feed. No framework, no build step, nothing fetched
// from elsewhere; nothing ever loads every order (pages with the cursor, search is GET /orders/{id}).
"use strict";

const $ = (selector) => document.querySelector(selector);
const POLL_MS = 2000;
const HISTORY_MS = 5 * 60 * 1000; // what the charts and sparklines show
const RATE_MS = 10 * 1000;        // "handled per second" of a group
const SHARE_MS = 60 * 1000;       // each consumer's share of its group's work
const CHART_STEP_MS = 6 * 1000;   // each point of the rate chart is the rate over this long
const SEEN_MS = 5000;             // a live consumer beats every second: unseen longer is not reading
const PAGE_SIZE = 25;

const state = {
  view: null,
  // The bearer token the API asked for (the admin token, or the callers' token), for this tab only.
  token: sessionStorage.getItem("token") || sessionStorage.getItem("adminToken") || "",
  feed: null,          // the all-orders WebSocket, once the API lets this page have it
  followed: new Map(), // order id -> its own WebSocket, while the all-orders feed is refused
  orders: new Map(),   // id -> order: the shown page, this tab's own orders, the chosen one
  own: [],             // ids of the orders this tab placed, newest first
  list: { allowed: null, status: "", cursors: [null], index: 0, ids: [], next: null },
  selected: null,
  dlq: { cursors: [null], index: 0, entries: [], next: null, selected: null, allowed: null },
  samples: [],         // [{ t, stats }] for the last HISTORY_MS
  groupStates: new Map(),
  products: [],
  lastDlqLength: null,
};

const cents = (n) => (Number(n) / 100).toLocaleString(undefined, { style: "currency", currency: "USD" });
const shortId = (id) => String(id).slice(0, 8);
const num = (n) => Number(n).toLocaleString();
const perSecond = (n) => (n >= 10 ? n.toFixed(0) : n >= 1 ? n.toFixed(1) : n > 0 ? n.toFixed(2) : "0");

function duration(ms) {
  if (ms == null) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

function clock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? "");
  return d.toLocaleTimeString(undefined, { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3 });
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false || child === "") continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svgEl(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

async function api(path, { method = "GET", body, headers = {} } = {}) {
  if (body !== undefined) headers["content-type"] = "application/json";
  if (state.token) headers.authorization = `Bearer ${state.token}`;
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    if (response.status === 401) askForToken();
    throw new ApiError(response.status, data);
  }
  return data;
}

// The API answered 401: show the token form (in the header, so it is there whatever asked).
function askForToken() {
  $("#token-form").hidden = false;
  say($("#token-message"), state.token ? "That token was refused." : "The API wants a token for this.", true);
}

// A fresh Idempotency-Key per order (and per stock adjustment): a retried POST then returns the
// first answer, never applies it twice.
function idempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function say(target, text, isError = false) {
  target.textContent = text;
  target.classList.toggle("error", isError);
}

function announce(text) {
  $("#announce").textContent = text;
}

// Live figures change every poll: a screen reader hears about one thing (`key`) at most every
// `ms`, so the news does not drown the page.
const announcedAt = new Map();
function announceNews(key, text, ms = 20000) {
  const now = Date.now();
  if (now - (announcedAt.get(key) ?? -Infinity) < ms) return;
  announcedAt.set(key, now);
  announce(text);
}

// Re-renders `container` and gives the focus back to the same row (by `attr`), so a keyboard
// user's place survives the live updates.
function keepFocus(container, attr, render) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.closest(`[${attr}]`)?.getAttribute(attr) : null;
  render();
  if (key === null || key === undefined) return;
  const same = container.querySelector(`[${attr}="${CSS.escape(key)}"]`);
  const target = same?.matches("button, a, input, select, summary") ? same : same?.querySelector("button, a");
  target?.focus({ preventScroll: true });
}

// On one column (phone width) the chosen item's detail is below the list: take the focus there.
const oneColumn = () => window.matchMedia("(max-width: 899px)").matches;

// Runs `task` at most once per `ms`, the last call winning.
function throttle(ms, task) {
  let timer = null;
  let again = false;
  return () => {
    if (timer) { again = true; return; }
    task();
    timer = setTimeout(function tick() {
      timer = null;
      if (again) { again = false; task(); timer = setTimeout(tick, ms); }
    }, ms);
  };
}

// ---------------------------------------------------------------------------------------------
// Views (hash routes), so the browser's back button and links to an order or dead letter work.

function route() {
  // Other fragments (the skip link's #main) are in-page jumps, not views.
  if (location.hash && !location.hash.startsWith("#/") && state.view) return;
  const [, view = "pipeline", id] = location.hash.match(/^#\/([a-z]+)(?:\/(.+))?$/) || [];
  const known = ["pipeline", "orders", "dlq"].includes(view) ? view : "pipeline";
  const changed = state.view !== known;
  state.view = known;
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${known}`;
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    if (link.dataset.view === known) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (known === "pipeline") renderPipeline();
  if (known === "orders") {
    const wanted = id ? decodeURIComponent(id) : null;
    if (wanted && wanted !== state.selected) selectOrder(wanted, { focus: !changed });
    renderOrders();
    showNewestIfNoneChosen();
  }
  if (known === "dlq") {
    state.dlq.selected = id ? decodeURIComponent(id) : null;
    loadDeadLetters().catch(() => {});
    renderDeadLetterDetail();
  }
  if (changed && route.started) $(`#view-${known} h2`).focus({ preventScroll: true });
  route.started = true;
}

// ---------------------------------------------------------------------------------------------
// Live figures: GET /stats every 2 s, kept for five minutes.

function mergeGroups(groups) {
  // One entry per group name: should a group be listed once per stream partition, its pending,
  // lag and consumers add up; its retries and dead letters are counted per group, so taken once.
  const byName = new Map();
  for (const g of groups) {
    const seen = byName.get(g.group);
    if (!seen) { byName.set(g.group, { ...g, consumers: g.consumers.map((c) => ({ ...c })) }); continue; }
    seen.pending += g.pending;
    seen.lag = seen.lag == null || g.lag == null ? null : seen.lag + g.lag;
    seen.oldest_pending_ms = Math.max(seen.oldest_pending_ms ?? 0, g.oldest_pending_ms ?? 0) || null;
    seen.retries = Math.max(seen.retries, g.retries);
    seen.dead_letters = Math.max(seen.dead_letters, g.dead_letters);
    for (const c of g.consumers) {
      const same = seen.consumers.find((x) => x.name === c.name);
      if (!same) { seen.consumers.push({ ...c }); continue; }
      same.pending += c.pending;
      same.unseen_ms = Math.min(same.unseen_ms, c.unseen_ms);
      same.active ||= c.active;
      same.handled = Math.max(same.handled, c.handled);
    }
  }
  return byName;
}

async function loadStats() {
  let stats;
  try {
    stats = await api("/stats");
  } catch (error) {
    $("#stream-figures").textContent = `· figures unavailable: ${error.message}`;
    throw error;
  }
  const now = Date.now();
  stats.byGroup = mergeGroups(stats.groups || []);
  state.samples.push({ t: now, stats });
  while (state.samples.length > 2 && now - state.samples[1].t > HISTORY_MS + RATE_MS) state.samples.shift();
  showDeadLetterCount(stats.dlq_length);
  updateGroupStates();
  if (state.view === "pipeline") renderPipeline();
}

function showDeadLetterCount(count) {
  const badge = $("#dlq-count");
  badge.dataset.count = String(count);
  badge.textContent = num(count);
  if (state.lastDlqLength !== null && count > state.lastDlqLength) {
    announceNews("dlq", `New dead letters: ${count} waiting.`);
  }
  state.lastDlqLength = count;
}

// The newest sample at least `ms` older than `sample` (or the oldest there is).
function sampleBefore(index, ms) {
  const t = state.samples[index].t;
  for (let i = index - 1; i >= 0; i--) if (t - state.samples[i].t >= ms) return state.samples[i];
  return index > 0 ? state.samples[0] : null;
}

// How many entries each consumer of `group` acknowledged between two samples; a consumer that
// joined in between counts all it has; a counter that went down (a reset) counts nothing.
function handledBetween(then, now, group) {
  const before = new Map((then.stats.byGroup.get(group)?.consumers || []).map((c) => [c.name, c.handled]));
  const out = new Map();
  for (const c of now.stats.byGroup.get(group)?.consumers || []) {
    out.set(c.name, Math.max(0, c.handled - (before.has(c.name) ? before.get(c.name) : 0)));
  }
  return out;
}

const backlogOf = (g) => (g ? g.pending + (g.lag ?? 0) : 0);

// What the operator should see first about a group: dead-lettering (its dead letters went up in
// the last five minutes); nobody reading (work waits and no consumer was seen in 5 s); falling
// behind (work waited on every poll of the last 6 s and there is more than 6 s ago, or entries
// stayed undelivered all that time and did not get fewer); catching up (undelivered all that time,
// but fewer); waiting for retry (an entry delivered over 5 s ago is not acknowledged: its
// consumer failed or stopped, and the retry worker takes it after RETRY_MIN_IDLE_MS); idle
// (nothing handled in the last minute, nothing waiting); or keeping up.
function groupState(name) {
  const samples = state.samples;
  const last = samples.at(-1);
  const g = last.stats.byGroup.get(name);
  if (!g) return { key: "idle", text: "no such group yet" };
  const fiveMinAgo = samples.find((s) => last.t - s.t <= HISTORY_MS) || samples[0];
  const dlBefore = fiveMinAgo.stats.byGroup.get(name)?.dead_letters ?? g.dead_letters;
  if (g.dead_letters > dlBefore) return { key: "dead-lettering", text: "dead-lettering" };
  const backlog = backlogOf(g);
  const recent = samples.filter((s) => last.t - s.t <= 6000);
  const before = sampleBefore(samples.length - 1, 6000);
  const reading = g.consumers.some((c) => c.unseen_ms < SEEN_MS);
  if (backlog > 0 && !reading) return { key: "behind", text: "nobody reading" };
  const all = (test) => recent.length >= 2 && recent.every((s) => test(s.stats.byGroup.get(name)));
  const was = before ? backlogOf(before.stats.byGroup.get(name)) : 0;
  if (all((x) => backlogOf(x) > 0) && backlog > was) return { key: "behind", text: "falling behind" };
  if (all((x) => (x?.lag ?? 0) > 0)) {
    return backlog >= was ? { key: "behind", text: "falling behind" } : { key: "behind", text: "catching up" };
  }
  if ((g.oldest_pending_ms ?? 0) > 5000) return { key: "stuck", text: "waiting for retry" };
  const minute = sampleBefore(samples.length - 1, SHARE_MS);
  const handled = minute ? [...handledBetween(minute, last, name).values()].reduce((a, b) => a + b, 0) : 0;
  if (handled === 0 && backlog === 0) return { key: "idle", text: "idle" };
  return { key: "ok", text: "keeping up" };
}

function updateGroupStates() {
  if (!state.samples.length) return;
  for (const name of groupOrder()) {
    const next = groupState(name);
    const before = state.groupStates.get(name);
    if (before && before.text !== next.text && (next.key !== "ok" && next.key !== "idle" || before.key !== "ok" && before.key !== "idle")) {
      announceNews(name, `${name}: ${next.text}.`);
    }
    state.groupStates.set(name, next);
  }
}

// The groups in the order the saga reaches them; any other group after them.
const STAGES = [
  { group: "inventory_group", name: "inventory", io: ["OrderPlaced → StockReserved or StockFailed", "OrderCancelled → StockReleased"] },
  { group: "payment_group", name: "payment", io: ["StockReserved → PaymentProcessed or PaymentFailed", "OrderCancelled → PaymentRefunded"] },
  { group: "shipping_group", name: "shipping", io: ["PaymentProcessed → ShipmentPrepared"] },
  { group: "notification_group", name: "notification", io: ["ShipmentPrepared, OrderCancelled → NotificationSent (or NotificationFailed)"] },
  { group: "order_group", name: "order projection", io: ["every event → the order's status", "StockFailed, PaymentFailed → OrderCancelled"] },
];

function groupOrder() {
  const last = state.samples.at(-1);
  const names = STAGES.map((s) => s.group);
  if (last) for (const name of last.stats.byGroup.keys()) if (!names.includes(name)) names.push(name);
  return names;
}

function renderPipeline() {
  const last = state.samples.at(-1);
  if (!last) return;
  const { stats } = last;
  $("#stream-name").textContent = stats.stream;
  $("#stream-figures").textContent =
    `· ${num(stats.stream_length)} entr${stats.stream_length === 1 ? "y" : "ies"} · ${stats.dlq_stream}: ${num(stats.dlq_length)} dead letter${stats.dlq_length === 1 ? "" : "s"}`;
  const index = state.samples.length - 1;
  const rateFrom = sampleBefore(index, RATE_MS);
  const shareFrom = sampleBefore(index, SHARE_MS);
  const shareSeconds = shareFrom ? Math.round((last.t - shareFrom.t) / 1000) : 0;
  $("#flow-window").textContent = rateFrom
    ? `Handled per second over the last ${Math.round((last.t - rateFrom.t) / 1000)} s; each consumer's share of its group's work over the last ${shareSeconds < 58 ? `${shareSeconds} s` : "minute"}; waiting = pending + lag.`
    : "Measuring: rates need two polls, 2 s apart.";

  $("#stages").replaceChildren(...groupOrder().map((name) => {
    const stage = STAGES.find((s) => s.group === name) || { group: name, name, io: [] };
    const g = stats.byGroup.get(name);
    const st = state.groupStates.get(name) || { key: "idle", text: "…" };
    const titleId = `stage-${name}`;
    if (!g) {
      return el("li", { class: "stage", "data-group": name, "data-state": "idle", "aria-labelledby": titleId },
        el("h4", { id: titleId }, stage.name, el("span", { class: "state" }, "not created yet")));
    }
    const rateHandled = rateFrom ? [...handledBetween(rateFrom, last, name).values()].reduce((a, b) => a + b, 0) : 0;
    const rate = rateFrom ? rateHandled / ((last.t - rateFrom.t) / 1000) : 0;
    const shares = shareFrom ? handledBetween(shareFrom, last, name) : new Map();
    const shareTotal = [...shares.values()].reduce((a, b) => a + b, 0);
    const dlBefore = (state.samples.find((s) => last.t - s.t <= HISTORY_MS) || state.samples[0]).stats.byGroup.get(name);
    const consumers = [...g.consumers].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
    return el("li", {
      class: "stage", "data-group": name, "data-state": st.key, "data-lag": g.lag ?? "", "data-pending": g.pending,
      "data-rate": rate.toFixed(2), "aria-labelledby": titleId,
    },
      el("h4", { id: titleId }, stage.name, el("span", { class: "state" }, st.text)),
      el("p", { class: "group" }, el("code", {}, name)),
      el("p", { class: "rate" }, el("strong", {}, perSecond(rate)), " handled/s"),
      el("dl", { class: "figs" },
        fig("pending", num(g.pending), g.pending > 0 && st.key !== "ok"),
        fig("lag", g.lag == null ? "?" : num(g.lag), (g.lag ?? 0) > 0 && st.key === "behind"),
        fig("retries", num(g.retries), dlBefore && g.retries > dlBefore.retries),
        fig("dead", num(g.dead_letters), st.key === "dead-lettering"),
        g.oldest_pending_ms != null ? fig("oldest", duration(g.oldest_pending_ms), g.oldest_pending_ms > 30000) : ""),
      sparkline(name),
      consumers.length
        ? el("ul", { class: "consumers", "aria-label": `${stage.name} consumers` },
          consumers.map((c) => consumerRow(c, shares.get(c.name) ?? 0, shareTotal)))
        : el("p", { class: "hint" }, "No consumer has read from this group yet."),
      el("p", { class: "io" }, stage.io.map((line, i) => [i ? el("br") : "", line])));
  }));

  const o = stats.orders || { placed: 0, completed: 0, cancelled: 0 };
  const inFlight = Math.max(0, o.placed - o.completed - o.cancelled);
  const memory = stats.redis_memory
    ? ` · Redis ${(stats.redis_memory.used_bytes / 1048576).toFixed(1)} MiB${stats.redis_memory.max_bytes ? ` of ${(stats.redis_memory.max_bytes / 1048576).toFixed(0)} MiB` : ""}`
    : "";
  const pass = stats.retry_worker_last_pass_ms
    ? ` · last retry pass ${duration(Math.max(0, Date.now() - stats.retry_worker_last_pass_ms))} ago`
    : " · no retry pass yet";
  $("#totals").textContent =
    `Orders ever: ${num(o.placed)} placed, ${num(o.completed)} completed, ${num(o.cancelled)} cancelled, ${num(inFlight)} not final` +
    ` · ${num(stats.orders_with_dead_letters)} with dead letters${memory}${pass}`;

  renderRateChart();
  renderLatencyChart();
}

function fig(label, value, hot) {
  return el("div", { class: hot ? "hot" : "", "data-fig": label }, el("dt", {}, label), el("dd", {}, value));
}

function consumerRow(c, handled, total) {
  const share = total > 0 ? Math.round((handled / total) * 100) : 0;
  const key = !c.active ? "gone" : c.unseen_ms >= SEEN_MS ? "unseen" : "reading";
  const status = key === "reading" ? "reading" : `not seen for ${duration(c.unseen_ms)}`;
  return el("li", {
    class: "consumer", "data-consumer": c.name, "data-share": share, "data-handled": handled, "data-state": key,
    "data-pending": c.pending, title: `${c.name}: ${num(handled)} handled, ${status}, ${num(c.pending)} in hand`,
  },
    el("span", { class: "name" }, c.name),
    el("span", { class: "pct" }, el("span", { class: "visually-hidden" }, `handled ${num(handled)}, `),
      total > 0 ? `${share}%` : "–",
      el("span", { class: "visually-hidden" }, key === "reading" ? `, reading, ${num(c.pending)} in hand` : "")),
    el("span", { class: "bar", "aria-hidden": "true" }, el("span", { style: `width:${share}%` })),
    // Entries held by a consumer that stopped reading wait for the retry worker: say so.
    key !== "reading" ? el("span", { class: "note" }, status, c.pending > 0 ? `, ${num(c.pending)} in hand` : "") : "");
}

// A group's backlog (pending + lag) over the last five minutes.
function sparkline(name) {
  const w = 160, h = 34;
  const points = state.samples.map((s) => [s.t, backlogOf(s.stats.byGroup.get(name))]);
  const last = state.samples.at(-1).t;
  const max = Math.max(1, ...points.map((p) => p[1]));
  const x = (t) => w - ((last - t) / HISTORY_MS) * w;
  const y = (v) => h - 1 - (v / max) * (h - 3);
  const line = points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  const svg = svgEl("svg", { class: "spark", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", "aria-hidden": "true" });
  if (points.length > 1) {
    svg.append(svgEl("polygon", { class: "area", points: `${x(points[0][0]).toFixed(1)},${h} ${line} ${w},${h}` }));
    svg.append(svgEl("polyline", { points: line, "vector-effect": "non-scaling-stroke" }));
  }
  const peak = Math.max(...points.map((p) => p[1]));
  return el("div", { class: "spark-wrap" }, svg,
    el("p", { class: "spark-label" }, `waiting ${num(points.at(-1)[1])} · 5-min peak ${num(peak)}`));
}

// ---------------------------------------------------------------------------------------------
// Charts: hand-drawn SVG lines over the last five minutes.

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

// A line per series over the last five minutes. `log`: a logarithmic y axis from 1 up (latencies
// span milliseconds to the retry worker's seconds).
function lineChart(svg, series, format, { log = false } = {}) {
  const w = Math.max(200, svg.clientWidth || 500);
  const h = Math.max(100, svg.clientHeight || 150);
  const pad = { l: 44, r: 8, t: 8, b: 18 };
  const now = state.samples.at(-1)?.t ?? Date.now();
  const values = series.flatMap((s) => s.points.map((p) => p[1]));
  const top = Math.max(0, ...values);
  const max = log ? 10 ** Math.max(1, Math.ceil(Math.log10(Math.max(1, top)))) : niceMax(top);
  const scale = log ? (v) => Math.log10(Math.max(1, v)) / Math.log10(max) : (v) => v / max;
  const x = (t) => pad.l + (1 - (now - t) / HISTORY_MS) * (w - pad.l - pad.r);
  const y = (v) => pad.t + (1 - scale(v)) * (h - pad.t - pad.b);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const parts = [];
  const ticks = log
    ? Array.from({ length: Math.log10(max) + 1 }, (_, i) => 10 ** i).filter((v, i, all) => all.length <= 4 || (all.length - 1 - i) % 2 === 0)
    : [0, max / 2, max];
  for (const v of ticks) {
    parts.push(svgEl("line", { class: "grid", x1: pad.l, x2: w - pad.r, y1: y(v), y2: y(v) }));
    parts.push(svgEl("text", { x: pad.l - 4, y: y(v) + 3, "text-anchor": "end" }, format(v)));
  }
  for (const [minutes, anchor] of [[5, "start"], [2.5, "middle"], [0, "end"]]) {
    parts.push(svgEl("text", { x: x(now - minutes * 60000), y: h - 4, "text-anchor": anchor }, minutes ? `−${minutes} min` : "now"));
  }
  for (const s of series) {
    const points = s.points.filter((p) => now - p[0] <= HISTORY_MS)
      .map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    parts.push(svgEl("polyline", { "data-series": s.key, points }));
  }
  svg.replaceChildren(...parts);
}

function legend(target, items) {
  target.replaceChildren(...items.map((item) =>
    el("li", { "data-series": item.key, "data-now": item.value ?? "" }, `${item.label} `, el("strong", {}, item.text))));
}

function rateSeries() {
  const series = { placed: [], completed: [], cancelled: [] };
  for (let i = 1; i < state.samples.length; i++) {
    const now = state.samples[i];
    const then = sampleBefore(i, CHART_STEP_MS);
    const seconds = (now.t - then.t) / 1000;
    for (const key of Object.keys(series)) {
      const delta = (now.stats.orders?.[key] ?? 0) - (then.stats.orders?.[key] ?? 0);
      series[key].push([now.t, Math.max(0, delta) / seconds]);
    }
  }
  return series;
}

function renderRateChart() {
  const series = rateSeries();
  const latest = (key) => series[key].at(-1)?.[1] ?? null;
  legend($("#rates-legend"), ["placed", "completed", "cancelled"].map((key) => ({
    key, label: key, value: latest(key)?.toFixed(2), text: latest(key) == null ? "–" : `${perSecond(latest(key))}/s`,
  })));
  const svg = $("#rates-chart");
  lineChart(svg, Object.entries(series).map(([key, points]) => ({ key, points })), (v) => (v >= 10 ? v.toFixed(0) : v.toFixed(1)));
  const peak = Math.max(0, ...series.placed.map((p) => p[1]));
  svg.setAttribute("aria-label", latest("placed") == null
    ? "Orders per second: collecting"
    : `Orders per second over the last 5 minutes: now ${perSecond(latest("placed"))} placed, ${perSecond(latest("completed"))} completed, ${perSecond(latest("cancelled"))} cancelled; placed peaked at ${perSecond(peak)}.`);
}

function renderLatencyChart() {
  const points = { p50: [], p99: [] };
  for (const s of state.samples) {
    const c = s.stats.completion_ms;
    if (!c) continue;
    points.p50.push([s.t, c.p50]);
    points.p99.push([s.t, c.p99]);
  }
  const c = state.samples.at(-1)?.stats.completion_ms;
  legend($("#latency-legend"), [
    { key: "p50", label: "p50", value: c?.p50, text: c ? duration(c.p50) : "–" },
    { key: "p99", label: "p99", value: c?.p99, text: c ? duration(c.p99) : "–" },
    { key: "max", label: "slowest", value: c?.max, text: c ? duration(c.max) : "–" },
  ]);
  $("#latency-hint").textContent = c
    ? `over the last ${num(c.samples)} finished order${c.samples === 1 ? "" : "s"}`
    : "no finished order yet";
  const svg = $("#latency-chart");
  lineChart(svg, Object.entries(points).map(([key, p]) => ({ key, points: p })), (v) => duration(v), { log: true });
  svg.setAttribute("aria-label", c
    ? `Time from placed to completed or cancelled: median ${duration(c.p50)}, 99th percentile ${duration(c.p99)}, slowest ${duration(c.max)}, over the last ${c.samples} finished orders.`
    : "Completion time: no finished order yet");
}

// ---------------------------------------------------------------------------------------------
// Products, with live stock (the demo panel and the order form's choices).

async function loadProducts() {
  const { products } = await api("/products");
  state.products = products;
  $("#products tbody").replaceChildren(...products.map((p) =>
    el("tr", { "data-product-id": p.id },
      el("th", { scope: "row" }, p.name, " ", el("code", {}, p.id)),
      el("td", { class: "num" }, cents(p.price)),
      el("td", { class: "num", "data-stock": p.stock }, num(p.stock)))));
  const select = $("#product");
  const chosen = select.value;
  select.replaceChildren(...products.map((p) =>
    el("option", { value: p.id }, `${p.name}, ${cents(p.price)} (${p.stock} in stock)`)));
  if (products.some((p) => p.id === chosen)) select.value = chosen;
}

const refreshProductsSoon = throttle(1000, () => loadProducts().catch(() => {}));

async function restock() {
  const message = $("#restock-message");
  try {
    for (const p of state.products) {
      await api(`/products/${encodeURIComponent(p.id)}/stock`, {
        method: "POST", headers: { "idempotency-key": idempotencyKey() }, body: { delta: 100 },
      });
    }
    say(message, `Added 100 to ${state.products.length} products.`);
  } catch (error) {
    if (error.code === "outcome_unknown") say(message, `Not sure it was restocked: ${error.message}`, true);
    else say(message, error.status === 401 ? "Stock edits need the admin token." : `Not restocked: ${error.message}`, true);
  }
  await loadProducts().catch(() => {});
}

// ---------------------------------------------------------------------------------------------
// Orders: a page at a time (newest first, optionally one status), updated live.

// Updates can arrive out of order (a WebSocket message, a fetch started earlier, the POST's own
// answer): a final status is never replaced, and otherwise the later updated_at wins.
const FINAL = new Set(["COMPLETED", "CANCELLED"]);

function isNewer(next, current) {
  if (!current) return true;
  if (FINAL.has(current.status) && current.status !== next.status) return false;
  if (FINAL.has(next.status)) return true;
  return Date.parse(next.updated_at) >= Date.parse(current.updated_at);
}

function mergeOrder(order) {
  const current = state.orders.get(order.id);
  if (isNewer(order, current)) state.orders.set(order.id, { ...current, ...order });
  else if (order.dead_letters !== undefined) current.dead_letters = order.dead_letters;
}

function orderRow(order) {
  const items = (order.items || []).map((i) => `${i.quantity}× ${i.product_id}`).join(", ");
  return el("li", {},
    el("button", {
      class: "pick", type: "button", "data-order-id": order.id,
      "aria-pressed": String(order.id === state.selected),
      onclick: () => { location.hash = `#/orders/${encodeURIComponent(order.id)}`; },
    },
      el("span", { class: "what" }, el("code", {}, shortId(order.id)), " ", items || "…"),
      el("span", { class: "side" },
        order.total !== undefined ? cents(order.total) : "",
        el("span", { class: "badge", "data-status": order.status }, order.status),
        order.dead_letters > 0
          ? el("span", { class: "badge", "data-dead-letters": order.dead_letters },
            `${order.dead_letters} dead letter${order.dead_letters > 1 ? "s" : ""}`)
          : ""),
      el("span", { class: "sub" }, order.created_at ? clock(order.created_at) : "", " · ", order.customer_id || "",
        order.status_reason ? el("span", { class: "reason" }, ` · ${order.status_reason}`) : "")));
}

function renderOrders() {
  const { list } = state;
  const ids = list.allowed === false ? state.own : list.ids;
  const rows = ids.map((id) => state.orders.get(id)).filter(Boolean);
  keepFocus($("#orders"), "data-order-id", () => $("#orders").replaceChildren(...(rows.length
    ? rows.map(orderRow)
    : [el("li", { class: "hint" }, list.allowed === false ? "No orders placed from this page yet." : list.allowed ? "No orders here." : "Loading…")])));
  $("#orders-hint").textContent = list.allowed === false
    ? "Listing every order needs the admin token: these are the orders this page placed."
    : list.status ? `Only ${list.status}; statuses change live.` : "Statuses change live.";
  $("#orders-newer").disabled = list.allowed === false || list.index === 0;
  $("#orders-older").disabled = list.allowed === false || !list.next;
  $("#orders-page").textContent = list.allowed === false ? "" : `Page ${list.index + 1}`;
}

// A busy feed brings thousands of changes a second: the list is drawn at most once a frame.
let ordersFrame = 0;
function renderOrdersSoon() {
  if (ordersFrame) return;
  ordersFrame = requestAnimationFrame(() => { ordersFrame = 0; renderOrders(); });
}

// Listing every order is the admin's (when the API has tokens): without it, the page still shows
// and follows the orders it placed itself.
async function loadOrders() {
  const { list } = state;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (list.status) params.set("status", list.status);
  const cursor = list.cursors[list.index];
  if (cursor) params.set("cursor", cursor);
  let page;
  try {
    page = await api(`/orders?${params}`);
  } catch (error) {
    if (error.status === 401) { list.allowed = false; renderOrders(); }
    throw error;
  }
  list.allowed = true;
  for (const order of page.orders) mergeOrder(order);
  list.ids = page.orders.map((o) => o.id);
  list.next = page.next_cursor || null;
  forgetUnshown();
  renderOrders();
  showNewestIfNoneChosen();
  if (!state.feed) connect();
}

// An empty timeline beside a list is a wasted column: with nothing chosen, show the newest.
function showNewestIfNoneChosen() {
  if (state.view !== "orders" || state.selected) return;
  const first = (state.list.allowed === false ? state.own : state.list.ids)[0];
  if (!first) return;
  history.replaceState(null, "", `#/orders/${encodeURIComponent(first)}`);
  selectOrder(first, { focus: false });
}

// Keeps the order map to what is shown, so a long session with a busy feed stays small.
function forgetUnshown() {
  const keep = new Set([...state.list.ids, ...state.own, state.selected]);
  for (const id of state.orders.keys()) if (!keep.has(id)) state.orders.delete(id);
}

const refreshOrderPage = throttle(1500, () => loadOrders().catch(() => {}));

function turnOrderPage(step) {
  const { list } = state;
  if (step > 0) {
    if (!list.next) return;
    list.cursors[list.index + 1] = list.next;
    list.index += 1;
  } else {
    if (list.index === 0) return;
    list.index -= 1;
  }
  loadOrders().catch(() => {});
}

function filterOrders() {
  const { list } = state;
  list.status = $("#status-filter").value;
  list.cursors = [null];
  list.index = 0;
  loadOrders().catch(() => {});
}

async function searchOrder(event) {
  event.preventDefault();
  const id = $("#order-search").value.trim();
  const message = $("#search-message");
  if (!id) { say(message, ""); return; }
  try {
    const order = await api(`/orders/${encodeURIComponent(id)}`);
    mergeOrder(order);
    say(message, "");
    if (state.selected === order.id) await loadTimeline();
    location.hash = `#/orders/${encodeURIComponent(order.id)}`;
  } catch (error) {
    say(message, error.status === 404 || error.status === 400 ? `No order with the id ${id}.` : `Cannot open it: ${error.message}`, true);
  }
}

function applyChange(change) {
  if (!change.order_id) return;
  const known = state.orders.get(change.order_id);
  if (known) {
    mergeOrder({ id: change.order_id, status: change.status, status_reason: change.status_reason || null, updated_at: change.updated_at });
    if (state.view === "orders") renderOrdersSoon();
  } else if (state.list.allowed && state.list.index === 0) {
    // A newer order (or one moving into the filtered status): the first page changes.
    refreshOrderPage();
  }
  refreshProductsSoon();
  if (change.order_id === state.selected) refreshTimelineSoon();
}

function socketUrl(query) {
  const params = new URLSearchParams(query);
  if (state.token) params.set("access_token", state.token);
  const search = params.toString();
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws${search ? `?${search}` : ""}`;
}

// Follows one order of this page's own while the all-orders feed is not open.
function follow(orderId) {
  if (state.feed || state.followed.has(orderId) || state.followed.size >= 50) return;
  const socket = new WebSocket(socketUrl({ order_id: orderId }));
  state.followed.set(orderId, socket);
  socket.onmessage = (message) => {
    const change = JSON.parse(message.data);
    applyChange(change);
    if (FINAL.has(change.status)) socket.close();
  };
  socket.onclose = () => state.followed.delete(orderId);
}

// Live status of every order over WebSocket, reconnecting with backoff while the API allows it.
function connect(delay = 500) {
  const socket = new WebSocket(socketUrl({}));
  state.feed = socket;
  const live = $("#live");
  socket.onopen = () => {
    live.dataset.state = "live"; live.textContent = "live"; delay = 500;
    for (const followed of state.followed.values()) followed.close();
  };
  socket.onmessage = (message) => applyChange(JSON.parse(message.data));
  socket.onclose = () => {
    live.dataset.state = "down";
    live.textContent = "reconnecting…";
    state.feed = null;
    // Reconnecting goes through loadOrders, which stops at a 401 (and asks for the token).
    setTimeout(() => loadOrders().catch(() => {
      live.textContent = "live feed needs a token";
    }), delay);
    delay = Math.min(delay * 2, 8000);
  };
}

// Placing one order.
async function placeOrder(event) {
  event.preventDefault();
  const form = event.target;
  const message = $("#place-message");
  const button = $("#place");
  button.disabled = true;
  try {
    const order = await api("/orders", {
      method: "POST",
      headers: { "idempotency-key": idempotencyKey() },
      body: {
        customer_id: form.customer_id.value.trim(),
        customer_email: form.customer_email.value.trim(),
        items: [{ product_id: form.product_id.value, quantity: Number(form.quantity.value) }],
        payment_token: form.payment_token.value,
      },
    });
    adoptOwnOrder(order);
    say(message, `Order ${shortId(order.id)} placed.`);
    location.hash = `#/orders/${encodeURIComponent(order.id)}`;
  } catch (error) {
    if (error.code === "outcome_unknown") say(message, `Not sure it was placed: ${error.message}`, true);
    else say(message, `Not placed: ${error.message}`, true);
  } finally {
    button.disabled = false;
  }
}

function adoptOwnOrder(order) {
  mergeOrder(order);
  state.own = [order.id, ...state.own.filter((id) => id !== order.id)].slice(0, PAGE_SIZE);
  const { list } = state;
  if (list.allowed && list.index === 0 && (!list.status || list.status === order.status) && !list.ids.includes(order.id)) {
    list.ids = [order.id, ...list.ids].slice(0, PAGE_SIZE);
  }
  follow(order.id);
  if (state.view === "orders") renderOrdersSoon();
}

// One order: its facts, its timeline, its dead letters, and cancelling it.
async function selectOrder(id, { focus = true } = {}) {
  state.selected = id;
  state.timelineSignature = null;
  $("#timeline").replaceChildren();
  $("#order-facts").replaceChildren();
  $("#order-dead-letters").replaceChildren();
  $("#timeline-title").textContent = "Timeline";
  $("#timeline-hint").hidden = false;
  $("#timeline-hint").textContent = `Loading order ${id}…`;
  renderOrders();
  if (focus && oneColumn()) $("#timeline-title").focus();
  try {
    await loadTimeline();
    const order = state.orders.get(id);
    if (focus && order && state.selected === id) {
      announce(`Order ${shortId(id)}: ${order.status}, ${document.querySelectorAll("#timeline li").length} events.`);
    }
  } catch (error) {
    if (state.selected === id) {
      $("#timeline-hint").hidden = false;
      $("#timeline-hint").textContent = error.status === 404 ? `No order with the id ${id}.` : `Cannot load order ${id}: ${error.message}`;
    }
  }
}

const refreshTimelineSoon = throttle(500, () => loadTimeline().catch(() => {}));

const KIND = {
  StockFailed: "failure", PaymentFailed: "failure", OrderCancelled: "failure", EventDeadLettered: "failure",
  NotificationFailed: "failure",
  StockReleased: "compensation", PaymentRefunded: "compensation",
  ShipmentPrepared: "done", NotificationSent: "done",
};

async function loadTimeline() {
  const id = state.selected;
  if (!id) return;
  const [order, history, said] = await Promise.all([
    api(`/orders/${encodeURIComponent(id)}`),
    api(`/orders/${encodeURIComponent(id)}/events`),
    api(`/orders/${encodeURIComponent(id)}/messages`).catch(() => ({ messages: [] })),
  ]);
  if (state.selected !== id) return;
  mergeOrder(order);
  renderOrders();
  const shown = state.orders.get(id) || order;
  const signature = JSON.stringify([id, shown.status, shown.updated_at, shown.dead_letters,
    history.events.length, history.events.at(-1)?.event_id]);
  if (signature === state.timelineSignature) return;
  state.timelineSignature = signature;
  $("#timeline-title").textContent = `Order ${id}`;
  $("#timeline-hint").hidden = true;
  const finished = FINAL.has(shown.status);
  const took = finished ? Date.parse(shown.updated_at) - Date.parse(shown.created_at) : null;
  const facts = el("dl", { class: "facts" },
    el("dt", {}, "status"), el("dd", {}, el("span", { class: "badge", "data-status": shown.status }, shown.status),
      shown.status_reason ? ` ${shown.status_reason}` : ""),
    el("dt", {}, "customer"), el("dd", {}, `${shown.customer_id} · ${shown.customer_email}`),
    el("dt", {}, "items"), el("dd", {}, shown.items.map((i) => `${i.quantity}× ${i.product_id} at ${cents(i.unit_price)}`).join(", ")),
    el("dt", {}, "total"), el("dd", {}, cents(shown.total), shown.payment_token ? ` · ${shown.payment_token}` : ""),
    el("dt", {}, "placed"), el("dd", {}, new Date(shown.created_at).toLocaleString()),
    el("dt", {}, finished ? "finished" : "updated"), el("dd", {}, clock(shown.updated_at), took != null ? ` (after ${duration(took)})` : ""),
    shown.dead_letters > 0 ? [el("dt", {}, "dead letters"), el("dd", { class: "error-text" }, `${shown.dead_letters} unresolved`)] : "");
  const actions = el("div", { class: "actions" },
    !finished ? el("button", { type: "button", class: "danger", id: "cancel-order", onclick: () => cancelOrder(id) }, "Cancel this order") : "",
    el("p", { class: "message", id: "cancel-message", role: "status", "aria-live": "polite" }, ""));
  const keepMessage = $("#cancel-message")?.textContent || "";
  $("#order-facts").replaceChildren(facts, actions);
  if (keepMessage) $("#cancel-message").textContent = keepMessage;

  const start = Date.parse(history.events[0]?.occurred_at);
  const open = new Set([...document.querySelectorAll("#timeline details[open]")].map((d) => d.dataset.eventId));
  $("#timeline").setAttribute("aria-label", `Events of order ${shortId(id)}`);
  const messages = new Map(said.messages.map((m) => [m.kind, m]));
  $("#timeline").replaceChildren(...history.events.map((e) => timelineEntry(e, start, open, messages)));
  renderOrderDeadLetters(shown);
}

// Shown elsewhere already: in the order's facts, or as the entry's problem.
const HIDDEN_IN_DIGEST = new Set(["reason", "error", "customer_id", "customer_email", "payment_token"]);

// The payload in one line: its plain fields, items as "2× product-A", money in dollars.
function digest(payload) {
  const parts = [];
  for (const [key, value] of Object.entries(payload || {})) {
    if (key === "items" && Array.isArray(value)) parts.push(value.map((i) => `${i.quantity}× ${i.product_id}`).join(", "));
    else if (["amount", "total", "unit_price"].includes(key) && typeof value === "number") parts.push(`${key} ${cents(value)}`);
    else if (value !== null && typeof value !== "object" && !HIDDEN_IN_DIGEST.has(key)) parts.push(`${key} ${value}`);
  }
  return parts.join(" · ");
}

// The message a NotificationSent (or NotificationFailed) stands for: its subject, and its text
// to open.
function messageOf(e, messages, open) {
  if (e.type !== "NotificationSent" && e.type !== "NotificationFailed") return "";
  const message = messages.get(e.payload?.kind);
  if (!message) return "";
  const key = `${e.event_id}:message`;
  return el("div", { class: "mail" },
    message.subject ? el("span", { class: "mail-subject" }, `“${message.subject}”`) : "",
    message.text
      ? el("details", { "data-event-id": key, open: open.has(key) },
        el("summary", {}, "the message"),
        el("pre", { class: "mail-text" }, message.message_id ? `Message-ID: ${message.message_id}\n\n${message.text}` : message.text))
      : "");
}

function timelineEntry(e, start, open, messages) {
  const [service, consumer] = String(e.producer || "?").split("/");
  const since = Date.parse(e.occurred_at) - start;
  const retry = e.attempt > 1 ? el("span", { class: "retry" }, `retry ${e.attempt - 1}`) : "";
  const problem = e.type === "EventDeadLettered"
    ? el("div", { class: "problem" },
      `${e.payload.group} gave up on ${e.payload.event_type || "an entry"} after ${e.payload.deliveries} deliveries: ${e.payload.error}`)
    : e.payload?.reason ? el("div", { class: "problem" }, `reason: ${e.payload.reason}`) : "";
  const details = el("details", { "data-event-id": e.event_id, open: open.has(e.event_id) },
    el("summary", {}, "payload"), el("pre", {}, JSON.stringify(e.payload, null, 2)));
  return el("li", { "data-event-type": e.type, "data-kind": KIND[e.type] || "step", "data-attempt": e.attempt },
    el("time", { datetime: e.occurred_at }, clock(e.occurred_at),
      el("span", { class: "since" }, Number.isFinite(since) && since > 0 ? `+${duration(since)}` : "")),
    el("div", {},
      el("span", { class: "type" }, e.type), retry,
      el("div", { class: "meta" },
        `by ${service}${consumer ? ` (consumer ${consumer})` : ""}, recorded by ${e.recorded_by}`),
      problem,
      e.type === "EventDeadLettered" ? "" : el("div", { class: "digest" }, digest(e.payload)),
      messageOf(e, messages, open),
      details));
}

// The order's own dead letters, from the first page of the DLQ (the admin's).
async function renderOrderDeadLetters(order) {
  const target = $("#order-dead-letters");
  if (!(order.dead_letters > 0)) { target.replaceChildren(); return; }
  let entries = [];
  try {
    entries = (await api("/dlq?limit=200")).entries.filter((d) => d.order_id === order.id);
  } catch (error) {
    target.replaceChildren(el("p", { class: "hint" }, error.status === 401
      ? "Its dead letters need the admin token." : `Its dead letters: ${error.message}`));
    return;
  }
  if (state.selected !== order.id) return;
  target.replaceChildren(el("h4", {}, "Its dead letters"),
    entries.length
      ? el("ul", { class: "order-dead-letters" }, entries.map((d) => el("li", { "data-dlq-id": d.id },
        el("a", { href: `#/dlq/${encodeURIComponent(d.id)}` }, `${d.event_type || "entry"} in ${d.group}`),
        ` after ${d.deliveries} deliveries: `, el("span", { class: "error-text" }, d.error), " ",
        el("button", { type: "button", class: "secondary", "aria-label": `Replay dead letter ${d.id}`, onclick: () => replayForOrder(d) }, "Replay"))))
      : el("p", { class: "hint" }, "Not among the first 200 dead letters."),
    el("p", { class: "message", id: "order-dlq-message", role: "status", "aria-live": "polite" }));
}

async function replayForOrder(letter) {
  try {
    const outcome = await api(`/dlq/${encodeURIComponent(letter.id)}/replay`, { method: "POST" });
    say($("#order-dlq-message"), `Replayed to ${outcome.group}; the order resumes.`);
    announce(`Dead letter replayed to ${outcome.group}; the order resumes.`);
  } catch (error) {
    say($("#order-dlq-message"), `${error.code === "outcome_unknown" ? "Not sure it was replayed" : "Replay failed"}: ${error.message}`, true);
  }
  state.timelineSignature = null;
  setTimeout(refreshTimelineSoon, 500);
}

async function cancelOrder(id) {
  const message = $("#cancel-message");
  try {
    await api(`/orders/${encodeURIComponent(id)}/cancel`, { method: "POST" });
    say(message, "Cancel requested; compensation follows.");
  } catch (error) {
    if (error.code === "outcome_unknown") say(message, `Not sure it was cancelled: ${error.message}`, true);
    else say(message, error.status === 401 ? "Cancelling needs the admin token." : `Not cancelled: ${error.message}`, true);
  }
  refreshTimelineSoon();
}

// ---------------------------------------------------------------------------------------------
// Dead letters, a page at a time, with replay and delete.

async function loadDeadLetters() {
  if (state.view !== "dlq") return;
  const message = $("#dlq-message");
  const { dlq } = state;
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const cursor = dlq.cursors[dlq.index];
  if (cursor) params.set("cursor", cursor);
  let page;
  try {
    page = await api(`/dlq?${params}`);
  } catch (error) {
    if (error.status === 401) {
      dlq.allowed = false;
      say(message, state.token ? "That admin token was refused." : "Dead letters need the admin token.", true);
      $("#dlq").replaceChildren();
      return;
    }
    throw error;
  }
  dlq.allowed = true;
  if (/token/.test(message.textContent)) say(message, "");
  dlq.entries = page.entries;
  dlq.next = page.next_cursor || null;
  renderDeadLetters();
  if (!dlq.selected && dlq.entries.length && state.view === "dlq") {
    // An empty detail beside the list is a wasted column: show the first.
    history.replaceState(null, "", `#/dlq/${encodeURIComponent(dlq.entries[0].id)}`);
    dlq.selected = dlq.entries[0].id;
    renderDeadLetters();
    renderDeadLetterDetail();
  } else if (dlq.selected && !$("#dlq-entry [data-dlq-id]")) renderDeadLetterDetail();
}

function renderDeadLetters() {
  const { dlq } = state;
  $("#dlq-hint").textContent = `${num(state.lastDlqLength ?? dlq.entries.length)} waiting`;
  keepFocus($("#dlq"), "data-dlq-id", () => $("#dlq").replaceChildren(...(dlq.entries.length
    ? dlq.entries.map((d) => el("li", { "data-dlq-id": d.id },
      el("button", {
        class: "pick", type: "button", "aria-pressed": String(d.id === dlq.selected),
        onclick: () => { location.hash = `#/dlq/${encodeURIComponent(d.id)}`; },
      },
        el("span", { class: "what" }, el("strong", {}, d.event_type || "unreadable entry"), ` in ${d.group}`),
        el("span", { class: "side" }, `${d.deliveries} deliver${d.deliveries === 1 ? "y" : "ies"}`),
        el("span", { class: "sub" }, clock(d.dead_lettered_at), d.order_id ? ` · order ${shortId(d.order_id)}` : "",
          " · ", el("span", { class: "error" }, d.error)))))
    : [el("li", { class: "hint" }, "No dead letters.")])));
  $("#dlq-newer").disabled = dlq.index === 0;
  $("#dlq-older").disabled = !dlq.next;
  $("#dlq-page").textContent = `Page ${dlq.index + 1}`;
}

function turnDeadLetterPage(step) {
  const { dlq } = state;
  if (step > 0) {
    if (!dlq.next) return;
    dlq.cursors[dlq.index + 1] = dlq.next;
    dlq.index += 1;
  } else {
    if (dlq.index === 0) return;
    dlq.index -= 1;
  }
  loadDeadLetters().catch(() => {});
}

async function renderDeadLetterDetail() {
  const id = state.dlq.selected;
  const target = $("#dlq-entry");
  const hint = $("#dlq-detail-hint");
  for (const button of document.querySelectorAll("#dlq .pick")) {
    button.setAttribute("aria-pressed", String(button.parentElement.dataset.dlqId === id));
  }
  if (!id) {
    hint.hidden = false;
    hint.textContent = "Choose a dead letter to read its event and error.";
    target.replaceChildren();
    return;
  }
  let d = state.dlq.entries.find((x) => x.id === id);
  try {
    d = await api(`/dlq/${encodeURIComponent(id)}`);
  } catch (error) {
    if (state.dlq.selected !== id) return;
    hint.hidden = false;
    target.replaceChildren();
    hint.textContent = error.status === 404 ? `Dead letter ${id} is gone (replayed or deleted).`
      : error.status === 401 ? "Dead letters need the admin token." : `Cannot load ${id}: ${error.message}`;
    return;
  }
  if (state.dlq.selected !== id) return;
  hint.hidden = true;
  let payload = d.fields?.payload;
  try { payload = payload ? JSON.stringify(JSON.parse(payload), null, 2) : null; } catch { /* shown as it is */ }
  const fields = Object.entries(d.fields || {}).filter(([k]) => k !== "payload");
  target.replaceChildren(el("div", { "data-dlq-id": d.id },
    el("p", {}, el("strong", {}, d.event_type || "unreadable entry"), ` in ${d.group}, dead-lettered ${new Date(d.dead_lettered_at).toLocaleString()}`),
    el("p", { class: "error-text" }, d.error),
    el("dl", { class: "facts" },
      el("dt", {}, "dead letter"), el("dd", {}, el("code", {}, d.id)),
      el("dt", {}, "group"), el("dd", {}, d.group),
      el("dt", {}, "deliveries"), el("dd", {}, String(d.deliveries)),
      el("dt", {}, "stream entry"), el("dd", {}, el("code", {}, d.source_id)),
      d.event_id ? [el("dt", {}, "event id"), el("dd", {}, el("code", {}, d.event_id))] : "",
      d.order_id ? [el("dt", {}, "order"), el("dd", {}, el("a", { href: `#/orders/${encodeURIComponent(d.order_id)}` }, d.order_id))] : ""),
    el("div", { class: "actions" },
      el("button", { type: "button", "aria-label": `Replay dead letter ${d.id}`, onclick: () => actOnDeadLetter(d, "replay") }, "Replay to its group"),
      el("button", { type: "button", class: "danger", "aria-label": `Delete dead letter ${d.id}`, onclick: (e) => confirmDelete(e.currentTarget, d) }, "Delete")),
    el("h4", {}, "The event"),
    el("dl", { class: "facts" }, fields.map(([k, v]) => [el("dt", {}, k), el("dd", {}, el("code", {}, v))])),
    payload ? el("pre", { "aria-label": "payload" }, payload) : ""));
}

// Deleting loses the event for good: the button asks once more before it does.
function confirmDelete(button, letter) {
  if (button.dataset.confirm !== undefined) { actOnDeadLetter(letter, "delete"); return; }
  button.dataset.confirm = "";
  button.textContent = "Delete for good?";
  say($("#dlq-message"), "Press Delete again to drop this event for good; replay keeps it.");
  setTimeout(() => {
    if (!button.isConnected) return;
    delete button.dataset.confirm;
    button.textContent = "Delete";
  }, 5000);
}

async function actOnDeadLetter(letter, action) {
  const message = $("#dlq-message");
  try {
    if (action === "replay") {
      const outcome = await api(`/dlq/${encodeURIComponent(letter.id)}/replay`, { method: "POST" });
      say(message, `Replayed ${letter.id} to ${outcome.group}.`);
    } else {
      await api(`/dlq/${encodeURIComponent(letter.id)}`, { method: "DELETE" });
      say(message, `Deleted ${letter.id}.`);
    }
    if (state.dlq.selected === letter.id) {
      // On to the next one (the list is oldest first), so a run of them is replayed one by one.
      const entries = state.dlq.entries;
      const at = entries.findIndex((d) => d.id === letter.id);
      const next = entries[at + 1] || entries[at - 1];
      state.dlq.selected = next ? next.id : null;
      history.replaceState(null, "", next ? `#/dlq/${encodeURIComponent(next.id)}` : "#/dlq");
      state.dlq.entries = entries.filter((d) => d.id !== letter.id);
      renderDeadLetters();
      await renderDeadLetterDetail();
      $("#dlq-detail-hint").textContent = "Choose a dead letter to read its event and error.";
      $("#dlq-detail-title").focus();
    }
  } catch (error) {
    say(message, `${action} failed: ${error.message}`, true);
  }
  await loadDeadLetters().catch(() => {});
  loadStats().catch(() => {});
}

// ---------------------------------------------------------------------------------------------
// Demo: place N orders at once with a mix of outcomes, through the public API only.

function shuffled(list) {
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [list[i], list[j]] = [list[j], list[i]];
  }
  return list;
}

async function runDemo(event) {
  event.preventDefault();
  const message = $("#demo-message");
  const count = Math.min(500, Math.max(1, Math.floor(Number($("#demo-count").value) || 0)));
  const pct = (id) => Math.min(100, Math.max(0, Number($(id).value) || 0));
  const declined = Math.round((count * pct("#demo-declined")) / 100);
  const short = Math.round((count * pct("#demo-short")) / 100);
  const cancel = Math.round((count * pct("#demo-cancel")) / 100);
  if (declined + short + cancel > count) { say(message, "The mix adds up to more than 100%.", true); return; }
  await loadProducts().catch(() => {});
  const products = state.products;
  if (!products.length) { say(message, "The catalog is empty.", true); return; }
  // Out of stock: a product with none, else more than the product with the least has.
  const empty = products.find((p) => p.stock === 0);
  const least = [...products].sort((a, b) => a.stock - b.stock)[0];
  const shortItem = empty ? { product_id: empty.id, quantity: 1 }
    : least.stock < 1000 ? { product_id: least.id, quantity: least.stock + 1 } : null;
  const stocked = products.filter((p) => p.stock > 0);
  const kinds = shuffled([
    ...Array(declined).fill("declined"), ...Array(shortItem ? short : 0).fill("short"),
    ...Array(cancel).fill("cancel"), ...Array(count - declined - cancel - (shortItem ? short : 0)).fill("ok"),
  ]);
  const button = $("#demo-run");
  const progress = $("#demo-progress");
  button.disabled = true;
  progress.hidden = false;
  progress.max = kinds.length;
  progress.value = 0;
  const tally = { placed: 0, refused: 0, cancelRequested: 0, cancelLate: 0, cancelRefused: 0 };
  let next = 0;
  let lastError = "";
  say(message, `Placing ${kinds.length} orders…`);
  const worker = async () => {
    while (next < kinds.length) {
      const i = next++;
      const kind = kinds[i];
      const product = stocked.length ? stocked[i % stocked.length] : products[0];
      const item = kind === "short" ? shortItem : { product_id: product.id, quantity: 1 };
      try {
        const order = await api("/orders", {
          method: "POST",
          headers: { "idempotency-key": idempotencyKey() },
          body: {
            customer_id: `demo-${(i % 7) + 1}`, customer_email: `demo-${(i % 7) + 1}@example.com`, items: [item],
            payment_token: kind === "declined" ? "tok_chargeDeclined" : i % 2 ? "tok_mastercard" : "tok_visa",
          },
        });
        tally.placed += 1;
        adoptOwnOrder(order);
        if (kind === "cancel") {
          try {
            await api(`/orders/${encodeURIComponent(order.id)}/cancel`, { method: "POST" });
            tally.cancelRequested += 1;
          } catch (error) {
            if (error.status === 409) tally.cancelLate += 1;
            else { tally.cancelRefused += 1; lastError = error.status === 401 ? "cancelling needs the admin token" : error.message; }
          }
        }
      } catch (error) {
        tally.refused += 1;
        lastError = error.message;
      }
      progress.value += 1;
    }
  };
  await Promise.all(Array.from({ length: Math.min(6, kinds.length) }, worker));
  button.disabled = false;
  progress.hidden = true;
  const parts = [`Placed ${tally.placed} of ${kinds.length}`];
  if (declined) parts.push(`${declined} with a declined card`);
  if (shortItem && short) parts.push(`${short} out of stock`);
  else if (short) parts.push("none out of stock (every product has 1,000 or more)");
  if (cancel) parts.push(`${tally.cancelRequested} cancelled in time, ${tally.cancelLate} too late (already final or shipped)${tally.cancelRefused ? `, ${tally.cancelRefused} refused` : ""}`);
  if (tally.refused) parts.push(`${tally.refused} refused`);
  say(message, `${parts.join("; ")}.${lastError ? ` Last error: ${lastError}.` : ""}`, tally.refused > 0 || tally.cancelRefused > 0);
  refreshProductsSoon();
}

// ---------------------------------------------------------------------------------------------

function useToken(event) {
  event.preventDefault();
  state.token = $("#admin-token").value;
  sessionStorage.setItem("token", state.token);
  say($("#token-message"), "");
  $("#token-form").hidden = true;
  state.feed?.close();
  loadOrders().catch(() => {});
  loadProducts().catch(() => {});
  loadDeadLetters().catch(() => {});
  if (state.selected) loadTimeline().catch(() => {});
}

function every(ms, task) {
  const run = () => task().catch(() => {}).finally(() => setTimeout(run, ms));
  run();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#order-form").addEventListener("submit", placeOrder);
  $("#token-form").addEventListener("submit", useToken);
  $("#search-form").addEventListener("submit", searchOrder);
  $("#status-filter").addEventListener("change", filterOrders);
  $("#orders-newer").addEventListener("click", () => turnOrderPage(-1));
  $("#orders-older").addEventListener("click", () => turnOrderPage(1));
  $("#dlq-newer").addEventListener("click", () => turnDeadLetterPage(-1));
  $("#dlq-older").addEventListener("click", () => turnDeadLetterPage(1));
  $("#demo-form").addEventListener("submit", runDemo);
  $("#restock").addEventListener("click", restock);
  window.addEventListener("hashchange", route);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (state.view === "pipeline") renderPipeline(); }, 150);
  });
  route();
  loadProducts().catch(() => {});
  loadOrders().catch(() => {
    $("#live").textContent = "live feed needs a token";
  });
  every(POLL_MS, loadStats);
  every(3000, loadDeadLetters);
  every(5000, loadProducts);
  // Events that change no status (a notification, a refund) still belong in the timeline.
  every(2000, async () => { if (state.view === "orders" && state.selected) await loadTimeline(); });
});
