// The web console in a real browser (Debian's Chromium, driven by playwright-core) against a real
// `fulfillment up` with its own redis-server. Screenshots go to tests/console/artifacts/.
//
//   FULFILLMENT_BIN  the fulfillment binary (default ../../target/debug/fulfillment)
//   CHROMIUM         the browser (default /usr/bin/chromium)

import { test, before, after } from "node:test";
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
let up, browser, base, redisPort, stateDir;

const freePort = () => new Promise((ok) => {
  const server = createServer().listen(0, "127.0.0.1", () => {
    const { port } = server.address();
    server.close(() => ok(port));
  });
});

async function waitReady(url, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    try { if ((await fetch(url)).ok) return; } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} not ready after ${seconds}s`);
}

before(async () => {
  mkdirSync(artifacts, { recursive: true });
  redisPort = await freePort();
  const httpPort = await freePort();
  stateDir = mkdtempSync(join(tmpdir(), "fulfillment-console-"));
  base = `http://127.0.0.1:${httpPort}`;
  up = spawn(binary, ["up", "--http", `127.0.0.1:${httpPort}`, "--state-dir", stateDir], {
    env: { ...process.env, REDIS_URL: `redis://127.0.0.1:${redisPort}`, LOG_FORMAT: "json",
      RUST_LOG: "warn", ADMIN_TOKEN, RETRY_INTERVAL_MS: "500" },
    stdio: ["ignore", "ignore", "inherit"],
  });
  await waitReady(`${base}/readyz`);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  if (up && up.exitCode === null) {
    const exited = new Promise((ok) => up.once("exit", ok));
    up.kill("SIGTERM");
    const code = await exited;
    assert.equal(code, 0, "fulfillment up exits 0 on SIGTERM");
  }
  rmSync(stateDir, { recursive: true, force: true });
});

// The console as an operator with the admin token (`token`) or as anyone without: with
// ADMIN_TOKEN set, only the operator gets the all-orders feed; without, the page follows the
// orders it places itself.
async function openConsole(viewport = { width: 1280, height: 900 }, token = null) {
  const page = await browser.newPage({ viewport });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  if (token) await page.addInitScript((t) => sessionStorage.setItem("token", t), token);
  await page.goto(base);
  await page.waitForSelector("#product option", { state: "attached" });
  if (token) {
    await page.waitForSelector("#live[data-state='live']");
  } else {
    await page.waitForSelector("#token-form:not([hidden])");
  }
  return { page, errors };
}

async function placeOrder(page, { product = "product-A", card = "tok_visa", quantity = "1" } = {}) {
  await page.selectOption("#product", product);
  await page.fill("#quantity", quantity);
  await page.selectOption("#card", card);
  await page.click("#place");
  await page.waitForFunction(() => /placed/.test(document.querySelector("#place-message").textContent));
  const message = await page.textContent("#place-message");
  const shortId = message.match(/Order ([0-9a-f]{8})/)[1];
  const row = page.locator(`[data-order-id^="${shortId}"]`);
  return { row, shortId };
}

test("an order placed from the page reaches COMPLETED live, with its timeline", async () => {
  const { page, errors } = await openConsole(undefined, ADMIN_TOKEN);
  const stockBefore = Number(await page.getAttribute("[data-product-id='product-A'] [data-stock]", "data-stock"));
  const { row } = await placeOrder(page, { quantity: "2" });
  await row.locator(".badge[data-status='COMPLETED']").waitFor({ timeout: 15000 });
  await page.waitForFunction(() => document.querySelectorAll("#timeline li").length >= 5, null, { timeout: 15000 });
  const types = await page.$$eval("#timeline li", (items) => items.map((li) => li.dataset.eventType));
  assert.deepEqual(types, ["OrderPlaced", "StockReserved", "PaymentProcessed", "ShipmentPrepared", "NotificationSent"]);
  const meta = await page.textContent("#timeline li:nth-child(2) .meta");
  assert.match(meta, /by inventory\/inventory-1, recorded by order-1/);
  await page.waitForFunction((before) => Number(document.querySelector(
    "[data-product-id='product-A'] [data-stock]").dataset.stock) === before - 2, stockBefore, { timeout: 10000 });
  await page.waitForSelector("#numbers tr[data-group='inventory_group']");
  assert.equal(await page.locator("#numbers tbody tr").count(), 5);
  await page.screenshot({ path: join(artifacts, "console-completed.png"), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test("a declined card ends CANCELLED, placed with the keyboard only", async () => {
  const { page, errors } = await openConsole();
  await page.focus("#card");
  await page.keyboard.press("End"); // the last card: declined
  assert.equal(await page.inputValue("#card"), "tok_chargeDeclined");
  await page.focus("#customer-id");
  await page.keyboard.press("Enter"); // submits the form
  await page.waitForFunction(() => /placed/.test(document.querySelector("#place-message").textContent));
  const shortId = (await page.textContent("#place-message")).match(/Order ([0-9a-f]{8})/)[1];
  const row = page.locator(`[data-order-id^="${shortId}"]`);
  await row.locator(".badge[data-status='CANCELLED']").waitFor({ timeout: 15000 });
  assert.match(await row.textContent(), /card_declined/);
  assert.deepEqual(errors, []);
  await page.close();
});

test("a dead letter is replayed from the page, after the admin token is given", async () => {
  execFileSync("redis-cli", ["-p", String(redisPort), "XADD", "order_events", "*", "junk", "console-test"]);
  const { page, errors } = await openConsole();
  await page.waitForSelector("#token-form:not([hidden])");
  await page.waitForFunction(() => /admin token/.test(document.querySelector("#dlq-message").textContent));
  await page.fill("#admin-token", ADMIN_TOKEN);
  await page.click("#token-form button");
  const letter = page.locator("#dlq li[data-dlq-id]").first();
  await letter.waitFor({ timeout: 15000 });
  const id = await letter.getAttribute("data-dlq-id");
  assert.match(await letter.textContent(), /unreadable entry/);
  await page.screenshot({ path: join(artifacts, "console-dead-letter.png"), fullPage: true });
  await letter.getByRole("button", { name: `Replay dead letter ${id}` }).click();
  await page.waitForFunction((dlqId) => document.querySelector("#dlq-message").textContent.includes(`Replayed ${dlqId}`), id);
  await page.waitForFunction((dlqId) => !document.querySelector(`#dlq li[data-dlq-id='${dlqId}']`), id);
  assert.deepEqual(errors, []);
  await page.close();
});

test("the console is usable at phone width", async () => {
  const { page, errors } = await openConsole({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow}px`);
  const labels = await page.$$eval("input, select", (fields) => fields.filter((f) => !f.labels || !f.labels.length).map((f) => f.id));
  assert.deepEqual(labels, [], "every field has a label");
  await page.screenshot({ path: join(artifacts, "console-phone.png"), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});
