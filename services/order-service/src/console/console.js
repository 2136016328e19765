// The fulfillment console: place orders, watch them flow over /ws, read their timelines,
// operate the DLQ, and follow the stream's live numbers. No framework, no build step.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = {
  selected: null,
  orders: new Map(),
  // The bearer token the API asked for (the admin token, or the callers' token), for this tab only.
  token: sessionStorage.getItem("token") || sessionStorage.getItem("adminToken") || "",
  feed: null,      // the all-orders WebSocket, once the API lets this page have it
  followed: new Map(), // order id -> its own WebSocket, while the all-orders feed is refused
};
const cents = (n) => (Number(n) / 100).toLocaleString(undefined, { style: "currency", currency: "USD" });
const shortId = (id) => id.slice(0, 8);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
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
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) {
    if (response.status === 401) askForToken();
    throw new ApiError(response.status, data);
  }
  return data;
}

// The API answered 401: show the token form (in the header, so it is there whatever asked).
function askForToken() {
  const form = $("#token-form");
  form.hidden = false;
  say($("#token-message"), state.token ? "That token was refused." : "The API wants a token for this.", true);
}

// A fresh Idempotency-Key per order: a retried POST then returns the first order, never a second.
function idempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function say(target, text, isError = false) {
  target.textContent = text;
  target.classList.toggle("error", isError);
}

// Products, with live stock.
async function loadProducts() {
  const { products } = await api("/products");
  const body = $("#products tbody");
  body.replaceChildren(...products.map((p) =>
    el("tr", { "data-product-id": p.id },
      el("td", {}, p.name, " ", el("code", {}, p.id)),
      el("td", { class: "num" }, cents(p.price)),
      el("td", { class: "num", "data-stock": p.stock }, p.stock))));
  const select = $("#product");
  const chosen = select.value;
  select.replaceChildren(...products.map((p) =>
    el("option", { value: p.id }, `${p.name} (${cents(p.price)}, ${p.stock} in stock)`)));
  if (products.some((p) => p.id === chosen)) select.value = chosen;
}

let productsTimer = null;
function refreshProductsSoon() {
  clearTimeout(productsTimer);
  productsTimer = setTimeout(() => loadProducts().catch(() => {}), 250);
}

// Orders, newest first, updated live. Updates can arrive out of order (a WebSocket message, a
// fetch started earlier, the POST's own answer): a final status is never replaced, and otherwise
// the snapshot with the later updated_at wins.
const FINAL = new Set(["COMPLETED", "CANCELLED"]);

function isNewer(next, current) {
  if (!current) return true;
  if (FINAL.has(current.status)) return false;
  if (FINAL.has(next.status)) return true;
  return Date.parse(next.updated_at) >= Date.parse(current.updated_at);
}

function mergeOrder(order) {
  const current = state.orders.get(order.id);
  if (isNewer(order, current)) state.orders.set(order.id, { ...current, ...order });
}

function orderRow(order) {
  const button = el("button", {
    class: "order", type: "button", "data-order-id": order.id,
    "aria-pressed": String(order.id === state.selected),
    onclick: () => selectOrder(order.id),
  },
    el("span", {}, el("code", {}, shortId(order.id)), ` ${order.items.map((i) => `${i.quantity}× ${i.product_id}`).join(", ")}`),
    el("span", {}, cents(order.total), " ",
      el("span", { class: "badge", "data-status": order.status }, order.status),
      order.status_reason ? el("span", { class: "hint" }, ` ${order.status_reason}`) : "",
      order.dead_letters > 0
        ? el("span", { class: "badge", "data-dead-letters": order.dead_letters },
          `${order.dead_letters} dead letter${order.dead_letters > 1 ? "s" : ""}`)
        : ""));
  return el("li", {}, button);
}

function renderOrders() {
  const sorted = [...state.orders.values()]
    .sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at))
    .slice(0, 30);
  $("#orders").replaceChildren(...sorted.map(orderRow));
}

// Listing every order is the admin's (when the API has tokens): without it, the page still shows
// and follows the orders it placed itself.
async function loadOrders() {
  const page = await api("/orders?limit=30");
  for (const order of page.orders) mergeOrder(order);
  renderOrders();
  if (!state.feed) connect();
}

function applyChange(change) {
  if (!change.order_id) return;
  const known = state.orders.get(change.order_id);
  const fetched = known
    ? Promise.resolve(mergeOrder({ id: change.order_id, status: change.status,
      status_reason: change.status_reason || null, updated_at: change.updated_at }))
    : api(`/orders/${encodeURIComponent(change.order_id)}`).then(mergeOrder);
  fetched.then(() => {
    renderOrders();
    refreshProductsSoon();
    if (change.order_id === state.selected) loadTimeline().catch(() => {});
  }).catch(() => {});
}

function socketUrl(query) {
  const params = new URLSearchParams(query);
  if (state.token) params.set("access_token", state.token);
  const search = params.toString();
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws${search ? `?${search}` : ""}`;
}

// Follows one order of this page's own while the all-orders feed is not open.
function follow(orderId) {
  if (state.feed || state.followed.has(orderId)) return;
  const socket = new WebSocket(socketUrl({ order_id: orderId }));
  state.followed.set(orderId, socket);
  socket.onmessage = (message) => {
    const change = JSON.parse(message.data);
    applyChange(change);
    if (FINAL.has(change.status)) socket.close();
  };
  socket.onclose = () => state.followed.delete(orderId);
}

async function selectOrder(id) {
  state.selected = id;
  renderOrders();
  await loadTimeline();
}

async function loadTimeline() {
  const id = state.selected;
  if (!id) return;
  mergeOrder(await api(`/orders/${encodeURIComponent(id)}`));
  renderOrders();
  const { events } = await api(`/orders/${encodeURIComponent(id)}/events`);
  const order = state.orders.get(id);
  $("#timeline-hint").textContent = `Order ${id}${order ? ` — ${order.status}` : ""}`;
  $("#timeline").replaceChildren(...events.map((e) => {
    const retry = e.attempt > 1 ? el("span", { class: "retry" }, ` retry ${e.attempt - 1}`) : "";
    return el("li", { "data-event-type": e.type },
      el("time", { datetime: e.occurred_at }, new Date(e.occurred_at).toLocaleTimeString()),
      el("span", { class: "type" }, e.type, retry),
      el("span", { class: "meta" }, `by ${e.producer || "?"}, recorded by ${e.recorded_by}`));
  }));
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

// Placing an order.
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
    mergeOrder(order);
    renderOrders();
    follow(order.id);
    say(message, `Order ${shortId(order.id)} placed.`);
    await selectOrder(order.id);
  } catch (error) {
    if (error.code === "outcome_unknown") {
      say(message, `Not sure it was placed: ${error.message}`, true);
    } else {
      say(message, `Not placed: ${error.message}`, true);
    }
  } finally {
    button.disabled = false;
  }
}

// Live numbers.
async function loadStats() {
  const stats = await api("/stats");
  $("#totals").textContent =
    `${stats.stream}: ${stats.stream_length} entries · ${stats.dlq_stream}: ${stats.dlq_length} dead letters` +
    ` · ${stats.orders_with_dead_letters} orders with unresolved dead letters`;
  $("#numbers tbody").replaceChildren(...stats.groups.map((g) =>
    el("tr", { "data-group": g.group },
      el("th", { scope: "row" }, g.group),
      el("td", { class: "num" }, `${g.consumers.filter((c) => c.active).length} / ${g.consumers.length}`),
      el("td", { class: "num", "data-pending": g.pending }, g.pending),
      el("td", { class: "num" }, g.lag ?? "?"),
      el("td", { class: "num", "data-retries": g.retries }, g.retries),
      el("td", { class: "num" }, g.dead_letters))));
}

// Dead letters, with replay and delete (the admin token is asked for when the API wants one).
async function loadDeadLetters() {
  const message = $("#dlq-message");
  let page;
  try {
    page = await api("/dlq?limit=50");
  } catch (error) {
    if (error.status === 401) {
      say(message, state.token ? "That admin token was refused." : "Dead letters need the admin token.", true);
      $("#dlq").replaceChildren();
      return;
    }
    throw error;
  }
  if (/token/.test(message.textContent)) say(message, "");
  if (!page.entries.length) {
    $("#dlq").replaceChildren(el("li", { class: "hint" }, "No dead letters."));
    return;
  }
  $("#dlq").replaceChildren(...page.entries.map((d) =>
    el("li", { "data-dlq-id": d.id },
      el("div", { class: "what" },
        el("strong", {}, d.event_type || "unreadable entry"), ` in ${d.group}`,
        d.order_id ? el("span", {}, " · order ", el("code", {}, shortId(d.order_id))) : "",
        ` · ${d.deliveries} deliveries`,
        el("div", { class: "error" }, d.error)),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "secondary", "aria-label": `Replay dead letter ${d.id}`, onclick: () => actOnDeadLetter(d, "replay") }, "Replay"),
        el("button", { type: "button", class: "danger", "aria-label": `Delete dead letter ${d.id}`, onclick: () => actOnDeadLetter(d, "delete") }, "Delete")))));
}

async function actOnDeadLetter(letter, action) {
  const message = $("#dlq-message");
  try {
    if (action === "replay") {
      const outcome = await api(`/dlq/${letter.id}/replay`, { method: "POST" });
      say(message, `Replayed ${letter.id} to ${outcome.group}.`);
    } else {
      await api(`/dlq/${letter.id}`, { method: "DELETE" });
      say(message, `Deleted ${letter.id}.`);
    }
  } catch (error) {
    say(message, `${action} failed: ${error.message}`, true);
  }
  await loadDeadLetters().catch(() => {});
}

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
}

function every(ms, task) {
  const run = () => task().catch(() => {}).finally(() => setTimeout(run, ms));
  run();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#order-form").addEventListener("submit", placeOrder);
  $("#token-form").addEventListener("submit", useToken);
  loadProducts().catch(() => {});
  loadOrders().catch(() => {
    $("#live").textContent = "live feed needs a token";
  });
  every(2000, loadStats);
  every(3000, loadDeadLetters);
  every(5000, loadProducts);
  // Events that change no status (a notification, a refund) still belong in the timeline.
  every(2000, loadTimeline);
});
