// The web console in a real browser (Debian's Chromium, driven by playwright-core) against a real
// pipeline with its own redis-server: first `fulfillment up` (three inventory consumers, an admin
// token), then the binaries as separate processes, so one group's consumer can be stopped and
// started again. Screenshots of every view go to tests/console/artifacts/.
//
//   FULFILLMENT_BIN  the fulfillment binary (default ../../target/debug/fulfillment); the other
//                    binaries (order-service, inventory-service, ...) are taken from beside it
//   CHROMIUM         the browser (default /usr/bin/chromium)

import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const binary = process.env.FULFILLMENT_BIN || resolve(here, "../../target/debug/fulfillment");
const artifacts = join(here, "artifacts");
const ADMIN_TOKEN = "console-secret";
const WIDE = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
let browser;

const freePort = () => new Promise((ok) => {
  const server = createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address();
    server.close(() => ok(port));
  });
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitReady(url, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    try { if ((await fetch(url)).ok) return; } catch { /* not up yet */ }
    await sleep(200);
  }
  throw new Error(`${url} not ready after ${seconds}s`);
}

// SIGTERM, and the exit code once it has exited.
async function stop(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode;
  const exited = new Promise((ok) => child.once("exit", (code) => ok(code)));
  child.kill("SIGTERM");
  return exited;
}

async function call(base, path, { method = "GET", body, token } = {}) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${base}${path}`, { method, headers, body: body && JSON.stringify(body) });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const orderBody = (card = "tok_visa", product = "product-A") => ({
  customer_id: "console-test", customer_email: "console@example.com",
  items: [{ product_id: product, quantity: 1 }], payment_token: card,
});

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
});

// The console as an operator with the admin token (`token`) or as anyone without: with
// ADMIN_TOKEN set, only the operator gets the all-orders feed; without, the page follows the
// orders it places itself. `expectTokenForm`: whether the API is expected to ask for a token.
async function openConsole(base, { viewport = WIDE, token = null, view = "", expectTokenForm = !token } = {}) {
  const page = await browser.newPage({ viewport });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  if (token) await page.addInitScript((t) => sessionStorage.setItem("token", t), token);
  await page.goto(`${base}/${view}`);
  await page.waitForSelector("#product option", { state: "attached" });
  if (expectTokenForm) {
    await page.waitForSelector("#token-form:not([hidden])");
  } else {
    await page.waitForSelector("#live[data-state='live']");
  }
  return { page, errors };
}

// What a group's picture says right now.
const stageOf = (page, group) => page.$eval(`#stages li[data-group='${group}']`, (li) => ({
  state: li.dataset.state, lag: li.dataset.lag === "" ? null : Number(li.dataset.lag), pending: Number(li.dataset.pending),
  label: li.querySelector(".state").textContent,
  consumers: [...li.querySelectorAll("[data-consumer]")].map((c) => ({
    name: c.dataset.consumer, share: Number(c.dataset.share), handled: Number(c.dataset.handled), state: c.dataset.state,
  })),
}));

async function noSidewaysScroll(page, what) {
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `${what}: the page scrolls sideways by ${overflow}px`);
  const wide = await page.evaluate(() => [...document.querySelectorAll("main *")]
    .filter((e) => e.getClientRects().length && e.getBoundingClientRect().right > window.innerWidth + 1)
    .filter((e) => !e.closest("pre, .scroller"))
    .map((e) => `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ""}.${e.className}`).slice(0, 5));
  assert.deepEqual(wide, [], `${what}: elements reach past the right edge`);
}

describe("against fulfillment up: three inventory consumers, an admin token", () => {
  let up, base, redisPort, stateDir;

  before(async () => {
    redisPort = await freePort();
    const httpPort = await freePort();
    stateDir = mkdtempSync(join(tmpdir(), "fulfillment-console-"));
    base = `http://127.0.0.1:${httpPort}`;
    up = spawn(binary, ["up", "--http", `127.0.0.1:${httpPort}`, "--state-dir", stateDir, "--replicas", "inventory=3"], {
      env: { ...process.env, REDIS_URL: `redis://127.0.0.1:${redisPort}`, LOG_FORMAT: "json",
        RUST_LOG: "warn", ADMIN_TOKEN, RETRY_INTERVAL_MS: "500" },
      stdio: ["ignore", "ignore", "inherit"],
    });
    await waitReady(`${base}/readyz`);
  });

  after(async () => {
    const code = await stop(up);
    rmSync(stateDir, { recursive: true, force: true });
    assert.equal(code, 0, "fulfillment up exits 0 on SIGTERM");
  });

  // What a test needs whatever ran before it: some orders, a dead letter.
  async function ensureOrders(count) {
    const { orders } = await call(base, "/stats");
    for (let i = orders.placed; i < count; i++) await call(base, "/orders", { method: "POST", body: orderBody(i % 3 ? "tok_visa" : "tok_chargeDeclined") });
  }

  async function ensureDeadLetter() {
    if ((await call(base, "/stats")).dlq_length > 0) return;
    execFileSync("redis-cli", ["-p", String(redisPort), "XADD", "order_events", "*", "junk", "console-test"]);
    const deadline = Date.now() + 10000;
    while ((await call(base, "/stats")).dlq_length === 0 && Date.now() < deadline) await sleep(200);
  }

  async function placeFromPage(page, { product = "product-A", card = "tok_visa", quantity = "1" } = {}) {
    await page.selectOption("#product", product);
    await page.fill("#quantity", quantity);
    await page.selectOption("#card", card);
    await page.click("#place");
    await page.waitForFunction(() => /placed/.test(document.querySelector("#place-message").textContent));
    const shortId = (await page.textContent("#place-message")).match(/Order ([0-9a-f]{8})/)[1];
    return { row: page.locator(`#orders [data-order-id^="${shortId}"]`), shortId };
  }

  test("an order placed from the page reaches COMPLETED live, with its timeline beside the list", async () => {
    const { page, errors } = await openConsole(base, { token: ADMIN_TOKEN, view: "#/orders" });
    const stock = () => page.getAttribute("[data-product-id='product-A'] [data-stock]", "data-stock").then(Number);
    const stockBefore = await stock();
    const { row, shortId } = await placeFromPage(page, { quantity: "2" });
    await row.locator(".badge[data-status='COMPLETED']").waitFor({ timeout: 15000 });
    assert.equal(await row.getAttribute("aria-pressed"), "true", "the placed order is the chosen one");
    assert.match(await page.textContent("#timeline-title"), new RegExp(`Order ${shortId}`));
    await page.waitForFunction(() => document.querySelectorAll("#timeline li").length >= 5, null, { timeout: 15000 });
    const types = await page.$$eval("#timeline li", (items) => items.map((li) => li.dataset.eventType));
    assert.deepEqual(types, ["OrderPlaced", "StockReserved", "PaymentProcessed", "ShipmentPrepared", "NotificationSent"]);
    const meta = await page.textContent("#timeline li:nth-child(2) .meta");
    // Inventory records its StockReserved in the order's history itself, as it publishes it.
    assert.match(meta, /by inventory \(consumer (inventory-[123])\), recorded by \1$/);
    // The confirmation as the customer got it (fulfillment up writes it as an .eml file): its
    // subject beside the event, its text one click away.
    const sent = page.locator("#timeline li[data-event-type='NotificationSent']");
    assert.match(await sent.locator(".mail-subject").textContent(), new RegExp(`Your order ${shortId} is on its way`));
    await sent.locator(".mail summary").click();
    const text = await sent.locator(".mail-text").textContent();
    assert.match(text, /Message-ID: <[0-9a-f-]+\.order_confirmed@/);
    assert.match(text, /Tracking number/i);
    // The list and the timeline sit side by side at 1280 px.
    const list = await page.locator("#orders").boundingBox();
    const detail = await page.locator("#order-detail").boundingBox();
    assert.ok(detail.x >= list.x + list.width, "the timeline is beside the list");
    await page.waitForFunction((before) => Number(document.querySelector(
      "[data-product-id='product-A'] [data-stock]").dataset.stock) === before - 2, stockBefore, { timeout: 10000 });
    await page.screenshot({ path: join(artifacts, "console-orders.png") });
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("a declined card ends CANCELLED with its stock released, placed with the keyboard only", async () => {
    const { page, errors } = await openConsole(base);
    await page.focus("nav a[data-view='orders']");
    await page.keyboard.press("Enter"); // follows the link to the orders view
    await page.waitForSelector("#view-orders:not([hidden])");
    assert.equal(await page.getAttribute("nav a[data-view='orders']", "aria-current"), "page");
    await page.focus("#card");
    await page.keyboard.press("End"); // the last card: declined
    assert.equal(await page.inputValue("#card"), "tok_chargeDeclined");
    await page.focus("#customer-id");
    await page.keyboard.press("Enter"); // submits the form
    await page.waitForFunction(() => /placed/.test(document.querySelector("#place-message").textContent));
    const shortId = (await page.textContent("#place-message")).match(/Order ([0-9a-f]{8})/)[1];
    const row = page.locator(`#orders [data-order-id^="${shortId}"]`);
    await row.locator(".badge[data-status='CANCELLED']").waitFor({ timeout: 15000 });
    assert.match(await row.textContent(), /card_declined/);
    assert.match(await page.textContent("#orders-hint"), /admin token/, "without the token: this page's own orders");
    await page.waitForSelector("#timeline li[data-event-type='StockReleased']", { timeout: 15000 });
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("demo orders: the rate chart moves and three inventory consumers each show a share", async () => {
    const { page, errors } = await openConsole(base, { token: ADMIN_TOKEN });
    await page.waitForSelector("#stages li[data-group='inventory_group'] [data-consumer='inventory-3']");
    assert.deepEqual(await page.$$eval("#stages li[data-group]", (items) => items.map((li) => li.dataset.group)),
      ["inventory_group", "payment_group", "shipping_group", "notification_group", "order_group"],
      "the groups in the order the saga reaches them");
    await page.waitForFunction(() => document.querySelector("#rates-legend [data-series='placed']")?.dataset.now !== "");
    const placedLine = () => page.getAttribute("#rates-chart polyline[data-series='placed']", "points");
    const before = await placedLine();

    await page.click("#restock");
    await page.waitForFunction(() => /Added 100/.test(document.querySelector("#restock-message").textContent));
    await page.fill("#demo-count", "60");
    await page.click("#demo-run");
    await page.waitForFunction(() => /Placed 60 of 60/.test(document.querySelector("#demo-message").textContent), null, { timeout: 30000 });
    const outcome = await page.textContent("#demo-message");
    assert.match(outcome, /12 with a declined card; 6 out of stock; \d+ cancelled in time, \d+ too late/);

    await page.waitForFunction(() => Number(document.querySelector("#rates-legend [data-series='placed']").dataset.now) > 1,
      null, { timeout: 15000 });
    assert.notEqual(await placedLine(), before, "the placed line moved");
    const peak = await page.$eval("#rates-chart polyline[data-series='placed']",
      (line) => Math.min(...line.getAttribute("points").split(" ").map((p) => Number(p.split(",")[1]))));
    const zero = await page.$eval("#rates-chart polyline[data-series='placed']",
      (line) => Math.max(...line.getAttribute("points").split(" ").map((p) => Number(p.split(",")[1]))));
    assert.ok(peak < zero, "the placed line rises above zero");
    assert.match(await page.getAttribute("#rates-chart", "aria-label"), /Orders per second over the last 5 minutes: now [\d.]+ placed/);

    // Every inventory consumer took a share of the last minute's work.
    await page.waitForFunction(() => {
      const shares = [...document.querySelectorAll("#stages li[data-group='inventory_group'] [data-consumer]")]
        .map((c) => Number(c.dataset.share));
      return shares.length === 3 && shares.every((s) => s > 0);
    }, null, { timeout: 15000 });
    const inventory = await stageOf(page, "inventory_group");
    assert.deepEqual(inventory.consumers.map((c) => c.name), ["inventory-1", "inventory-2", "inventory-3"]);
    const total = inventory.consumers.reduce((sum, c) => sum + c.share, 0);
    assert.ok(total >= 98 && total <= 102, `shares add up to 100% (${total})`);
    for (const c of inventory.consumers) assert.ok(c.handled > 0 && c.state === "reading", JSON.stringify(c));
    const text = await page.textContent("#stages li[data-group='inventory_group']");
    assert.match(text, /inventory-1\s*handled \d+, \d+%/);
    await page.waitForFunction(() => /over the last \d+ finished orders/.test(document.querySelector("#latency-hint").textContent));
    const fit = await page.$eval("main", (main) => ({ scroll: main.scrollHeight, client: main.clientHeight }));
    assert.ok(fit.scroll <= fit.client, `the pipeline view fits 1280×800 (${fit.scroll} > ${fit.client})`);
    await page.screenshot({ path: join(artifacts, "console-pipeline.png") });
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("search by id opens the timeline; the list pages and filters by status", async () => {
    await ensureOrders(30);
    const order = await call(base, "/orders", { method: "POST", body: orderBody() });
    await call(base, "/orders", { method: "POST", body: orderBody() }); // so it is not the newest
    const { page, errors } = await openConsole(base, { token: ADMIN_TOKEN, view: "#/orders" });
    await page.fill("#order-search", order.id);
    await page.press("#order-search", "Enter");
    await page.waitForFunction((id) => document.querySelector("#timeline-title").textContent.includes(id), order.id);
    assert.equal(await page.evaluate(() => location.hash), `#/orders/${order.id}`);
    await page.waitForSelector("#timeline li[data-event-type='OrderPlaced']");
    assert.match(await page.textContent("#order-facts"), /console-test · console@example.com/);

    await page.fill("#order-search", "no-such-order");
    await page.press("#order-search", "Enter");
    await page.waitForFunction(() => /No order with the id no-such-order/.test(document.querySelector("#search-message").textContent));

    // Pages: 25 at a time, with the cursor (the demo placed more than that).
    const ids = () => page.$$eval("#orders [data-order-id]", (rows) => rows.map((r) => r.dataset.orderId));
    await page.waitForFunction(() => document.querySelectorAll("#orders [data-order-id]").length === 25);
    const first = await ids();
    await page.click("#orders-older");
    await page.waitForFunction(() => document.querySelector("#orders-page").textContent === "Page 2");
    await page.waitForFunction((before) => !before.includes(document.querySelector("#orders [data-order-id]")?.dataset.orderId), first);
    const second = await ids();
    assert.ok(second.length > 0 && second.every((id) => !first.includes(id)), "page 2 holds other orders");
    await page.click("#orders-newer");
    await page.waitForFunction(() => document.querySelector("#orders-page").textContent === "Page 1");

    // Filtered by status.
    await page.selectOption("#status-filter", "CANCELLED");
    await page.waitForFunction(() => {
      const badges = [...document.querySelectorAll("#orders .badge[data-status]")].map((b) => b.dataset.status);
      return badges.length > 0 && badges.every((s) => s === "CANCELLED");
    });
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("a dead letter is replayed from its page, after the admin token is given", async () => {
    execFileSync("redis-cli", ["-p", String(redisPort), "XADD", "order_events", "*", "junk", "console-test"]);
    const { page, errors } = await openConsole(base);
    // The count shows from every view, before any token.
    await page.waitForFunction(() => Number(document.querySelector("#dlq-count").dataset.count) > 0, null, { timeout: 15000 });
    await page.click("nav a[data-view='dlq']");
    await page.waitForFunction(() => /admin token/.test(document.querySelector("#dlq-message").textContent));
    await page.fill("#admin-token", ADMIN_TOKEN);
    await page.click("#token-form button");
    const letter = page.locator("#dlq li[data-dlq-id]").filter({ hasText: "unreadable entry" }).last();
    await letter.waitFor({ timeout: 15000 });
    const id = await letter.getAttribute("data-dlq-id");
    await letter.locator("button").click();
    await page.waitForFunction((dlqId) => location.hash === `#/dlq/${dlqId}`, id);
    const entry = page.locator(`#dlq-entry [data-dlq-id='${id}']`);
    await entry.waitFor();
    assert.match(await entry.textContent(), /unreadable entry in \w+_group/);
    assert.match(await entry.textContent(), /deliveries/);
    assert.match(await entry.textContent(), /junk\s*console-test/, "the entry's fields");
    await page.screenshot({ path: join(artifacts, "console-dead-letters.png") });
    await entry.getByRole("button", { name: `Replay dead letter ${id}` }).click();
    await page.waitForFunction((dlqId) => document.querySelector("#dlq-message").textContent.includes(`Replayed ${dlqId}`), id);
    await page.waitForFunction((dlqId) => !document.querySelector(`#dlq li[data-dlq-id='${dlqId}']`), id);
    assert.notEqual(await page.evaluate(() => location.hash), `#/dlq/${id}`, "on to the next dead letter, if any");
    assert.equal(await page.locator(`#dlq-entry [data-dlq-id='${id}']`).count(), 0);
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("at phone width nothing scrolls sideways in any view, and every field is labelled", async () => {
    await ensureOrders(1);
    await ensureDeadLetter();
    const { page, errors } = await openConsole(base, { viewport: PHONE, token: ADMIN_TOKEN });
    await page.waitForSelector("#stages li[data-group='order_group'] [data-consumer]");
    await noSidewaysScroll(page, "pipeline");
    await page.screenshot({ path: join(artifacts, "console-phone-pipeline.png"), fullPage: true });

    await page.click("nav a[data-view='orders']");
    await page.waitForSelector("#timeline li[data-event-type]");
    await page.click("#timeline li summary");
    await noSidewaysScroll(page, "orders");
    await page.screenshot({ path: join(artifacts, "console-phone-orders.png"), fullPage: true });

    await page.click("nav a[data-view='dlq']");
    await page.locator("#dlq li[data-dlq-id] button").first().click();
    await page.waitForSelector("#dlq-entry [data-dlq-id]");
    await noSidewaysScroll(page, "dead letters");
    await page.screenshot({ path: join(artifacts, "console-phone-dead-letters.png"), fullPage: true });

    const unlabelled = await page.$$eval("input, select", (fields) => fields.filter((f) => !f.labels || !f.labels.length).map((f) => f.id));
    assert.deepEqual(unlabelled, [], "every field has a label");
    const unnamed = await page.$$eval("button, a[href]", (items) => items.filter((b) => !(b.getAttribute("aria-label") || b.textContent).trim()).length);
    assert.equal(unnamed, 0, "every button and link has a name");
    assert.deepEqual(errors, []);
    await page.close();
  });
});

describe("against the pipeline as separate processes: one group's consumer stopped and back", () => {
  const bin = (name) => join(dirname(binary), name);
  const processes = new Map();
  let redis, redisPort, base;

  async function startService(name, consumer, args = []) {
    const port = await freePort();
    const child = spawn(bin(name), args, {
      env: { ...process.env, REDIS_URL: `redis://127.0.0.1:${redisPort}`, LOG_FORMAT: "json", RUST_LOG: "warn",
        HTTP_ADDR: `127.0.0.1:${port}`, CONSUMER_NAME: consumer, RETRY_INTERVAL_MS: "1000" },
      stdio: ["ignore", "ignore", "inherit"],
    });
    processes.set(consumer, child);
    await waitReady(`http://127.0.0.1:${port}/readyz`);
    return port;
  }

  before(async () => {
    redisPort = await freePort();
    redis = spawn("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      { stdio: "ignore" });
    const deadline = Date.now() + 10000;
    while (Date.now() < deadline) {
      try { execFileSync("redis-cli", ["-p", String(redisPort), "PING"], { stdio: "ignore" }); break; } catch { await sleep(100); }
    }
    const apiPort = await startService("order-service", "order-1");
    base = `http://127.0.0.1:${apiPort}`;
    await startService("inventory-service", "inventory-1");
    await startService("payment-service", "payment-1");
    await startService("shipping-service", "shipping-1");
    await startService("notification-service", "notification-1");
    await startService("retry-worker", "retry-worker", ["--loop"]);
  });

  after(async () => {
    const codes = {};
    for (const [name, child] of processes) codes[name] = await stop(child);
    redis?.kill("SIGTERM");
    for (const [name, code] of Object.entries(codes)) assert.equal(code, 0, `${name} exits 0 on SIGTERM`);
  });

  test("a group's lag rises while its consumers are stopped and falls when they return", async () => {
    await call(base, "/products/product-A/stock", { method: "POST", body: { delta: 1000 } });
    const { page, errors } = await openConsole(base, { expectTokenForm: false });
    // A consumer shows once it has read something.
    for (let i = 0; i < 3; i++) await call(base, "/orders", { method: "POST", body: orderBody() });
    await page.waitForSelector("#stages li[data-group='payment_group'] [data-consumer='payment-1']");
    await page.waitForFunction(() => {
      const li = document.querySelector("#stages li[data-group='payment_group']");
      return li.dataset.lag === "0" && li.dataset.pending === "0";
    }, null, { timeout: 15000 });

    // Stop payment's only consumer, keep placing orders, and watch its picture.
    assert.equal(await stop(processes.get("payment-1")), 0);
    const seen = [];
    const watch = setInterval(() => stageOf(page, "payment_group").then((s) => seen.push(s)).catch(() => {}), 400);
    for (let i = 0; i < 12; i++) {
      await Promise.all([0, 1, 2].map(() => call(base, "/orders", { method: "POST", body: orderBody() })));
      await sleep(700);
    }
    await page.waitForFunction(() => {
      const li = document.querySelector("#stages li[data-group='payment_group']");
      return li.dataset.state === "behind" && Number(li.dataset.lag) >= 36
        && li.querySelector("[data-consumer='payment-1']").dataset.state !== "reading";
    }, null, { timeout: 15000 });
    const stopped = await stageOf(page, "payment_group");
    assert.match(stopped.label, /nobody reading|falling behind/);
    const lags = [...new Set(seen.map((s) => s.lag).filter((lag) => lag !== null))];
    assert.ok(lags.length >= 3, `the lag was seen rising step by step: ${lags}`);
    assert.ok(lags.every((lag, i) => i === 0 || lag > lags[i - 1]), `the lag only rose while nobody read: ${lags}`);
    const inventory = await stageOf(page, "inventory_group");
    assert.equal(inventory.lag, 0, "the other groups keep up");
    assert.notEqual(inventory.state, "behind");
    assert.match(await page.textContent("#stages li[data-group='payment_group'] .spark-label"), /waiting \d+ · 5-min peak \d+/);
    await page.screenshot({ path: join(artifacts, "console-lag-stopped.png") });

    // Payment's consumer comes back: the lag falls to nothing.
    seen.length = 0;
    await startService("payment-service", "payment-1");
    await page.waitForFunction(() => {
      const li = document.querySelector("#stages li[data-group='payment_group']");
      return li.dataset.lag === "0" && li.dataset.pending === "0" && li.dataset.state !== "behind"
        && li.querySelector("[data-consumer='payment-1']").dataset.state === "reading";
    }, null, { timeout: 20000 });
    clearInterval(watch);
    const peak = Number((await page.textContent("#stages li[data-group='payment_group'] .spark-label")).match(/peak (\d+)/)[1]);
    assert.ok(peak >= 36, `the sparkline keeps the peak (${peak})`);
    await page.screenshot({ path: join(artifacts, "console-lag-recovered.png") });
    const stats = await call(base, "/stats");
    await page.waitForFunction((placed) => /Orders ever: (\d+) placed, (\d+) completed/.exec(document.querySelector("#totals").textContent)?.[2] === String(placed),
      stats.orders.placed, { timeout: 15000 });
    assert.deepEqual(errors, []);
    await page.close();
  });
});
