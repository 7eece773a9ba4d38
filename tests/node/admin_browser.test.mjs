// The admin dashboard in a real browser: Debian's chromium (/usr/bin/chromium; .ci/run
// installs it when missing), driven by playwright-core, against a node:http server that
// mounts @x/outbox/admin (the npm build, dist/) over an outbox on a libSQL file: rows of
// one publisher (the default destination) and of a fan-out outbox on the same table (two
// destinations, one refusing). Dead messages carry script, onerror and onload payloads in
// every field the page shows; none may run. The test fails, rather than skips, without
// chromium.
//
//   npm run build && node --test tests/node/admin_browser.test.mjs
//   OUTBOX_SCREENSHOT=1 … also writes docs/images/dashboard.png (committed; not rewritten on every run)

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Readable } from "node:stream";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { createClient } from "@libsql/client";
import { chromium } from "playwright-core";
import { createOutbox, PublishError } from "@x/outbox";
import { createAdminHandler } from "@x/outbox/admin";
import { libsqlStorage } from "@x/outbox/libsql";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const CHROMIUM = process.env.OUTBOX_CHROMIUM ?? "/usr/bin/chromium";
const XSS = [
  "<script>window.__xss=1</script>",
  '<img src=x onerror="window.__xss=1">',
  '"><svg onload=window.__xss=1>',
];
// Topics hold no spaces: the same attacks, written without them.
const XSS_TOPICS = ['"><svg/onload=window.__xss=1>', "<img/src/onerror=window.__xss=1>"];

/** node:http → Request → the handler → Response → node:http: the lines docs/operations.md shows. */
function mount(handler) {
  return async (req, res) => {
    const url = new URL(req.url ?? "/", `http://${req.headers.host}`);
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(", ") : value);
    }
    const body = req.method === "GET" || req.method === "HEAD" ? undefined : Readable.toWeb(req);
    const response = await handler(new Request(url, { method: req.method, headers, body, duplex: "half" }));
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  };
}

/**
 * An outbox with published, pending and dead messages, hostile fields among the dead;
 * then fan-out rows on the same table: nats publishes shipments, hooks refuses them and a
 * hostile topic. Returns the fan-out outbox (it sees every row).
 */
async function fillOutbox(client) {
  const outbox = createOutbox({
    storage: libsqlStorage(client),
    publisher: (message) => {
      if (message.topic.startsWith("billing.") || message.topic.includes("<")) {
        throw new PublishError(`broker refused ${message.topic}: ${XSS[1]}`, { permanent: true });
      }
    },
    retention: { publishedMs: 86_400_000 },
  });
  await outbox.setup();
  const messages = [];
  for (let i = 1; i <= 6; i++) {
    messages.push({
      id: `order-${i}`,
      topic: "orders.created",
      key: `o-${i}`,
      payload: { id: `o-${i}`, total: i * 10 },
    });
  }
  for (let i = 1; i <= 3; i++) {
    messages.push({
      id: `invoice-${i}`,
      topic: "billing.invoice",
      key: `c-${i}`,
      payload: { invoice: i, amount: 99.5 },
    });
  }
  messages.push(
    {
      id: "hostile-1",
      topic: XSS[0],
      key: XSS[2],
      payload: { note: XSS.join(" ") },
      headers: { "x-comment": XSS[1], "x-other": XSS[2] },
    },
    { id: "hostile-2", topic: `billing.${XSS_TOPICS[0]}`, key: XSS[0], payload: XSS[2], headers: { "x-a": XSS[0] } },
    { id: "hostile-3", topic: `billing.${XSS_TOPICS[1]}`, payload: { [XSS[0]]: XSS[1] } },
  );
  await outbox.enqueue(client, messages);
  while ((await outbox.tick()).claimed > 0);
  await outbox.enqueue(client, [
    { id: "order-7", topic: "orders.created", key: "o-7", payload: { id: "o-7" } },
    { id: "order-8", topic: "orders.created", key: "o-8", payload: { id: "o-8" } },
  ]);
  const fanOut = createOutbox({
    storage: libsqlStorage(client),
    publishers: {
      nats: () => {},
      hooks: (message) => {
        throw new PublishError(`HTTP 410 from hooks for ${message.topic}`, { permanent: true });
      },
    },
    route: (message) => (message.topic.startsWith("shipments.") ? ["nats", "hooks"] : ["hooks"]),
    retention: { publishedMs: 86_400_000 },
  });
  await fanOut.setup();
  await fanOut.enqueue(client, [
    { id: "ship-1", topic: "shipments.created", key: "o-1", payload: { order: "o-1", carrier: "dhl" } },
    { id: "ship-2", topic: "shipments.created", key: "o-2", payload: { order: "o-2", carrier: "ups" } },
    { id: "hostile-4", topic: `hooks.${XSS_TOPICS[1]}`, key: XSS[1], payload: { [XSS[1]]: XSS[0] } },
  ]);
  while ((await fanOut.tick()).claimed > 0);
  return fanOut;
}

async function statusOf(client, id, destination = "") {
  const rs = await client.execute({
    sql: "SELECT status FROM outbox WHERE id = ? AND destination = ?",
    args: [id, destination],
  });
  return rs.rows[0]?.status ?? null;
}

test("dashboard in chromium: counts, destinations, requeue and purge with the buttons, hostile fields stay inert", {
  timeout: 120_000,
}, async () => {
  assert.ok(
    existsSync(CHROMIUM),
    `${CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium; .ci/run does) or set OUTBOX_CHROMIUM`,
  );
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-admin-browser-"));
  const client = createClient({ url: `file:${join(dir, "app.db")}` });
  const token = randomBytes(18).toString("base64url");
  const outbox = await fillOutbox(client);
  // Operators hold a cookie; the page's same-origin fetches carry it.
  const admin = createAdminHandler(outbox, {
    basePath: "/admin",
    readOnly: false,
    authorize: (request) => (request.headers.get("cookie") ?? "").split(/;\s*/).includes(`outbox_admin=${token}`),
  });
  const readOnly = createAdminHandler(outbox, { basePath: "/ro" });
  const server = createServer((req, res) => {
    const handler = req.url?.startsWith("/ro") ? readOnly : admin;
    mount(handler)(req, res).catch((error) => {
      console.error(error);
      res.destroy();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    // Playwright gives each launch a fresh temporary profile (--user-data-dir).
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
    await context.addCookies([{ name: "outbox_admin", value: token, url: base, sameSite: "Strict", httpOnly: true }]);
    await context.addInitScript(() => {
      globalThis.__violations = [];
      document.addEventListener("securitypolicyviolation", (e) => globalThis.__violations.push(e.violatedDirective));
    });
    const page = await context.newPage();
    const dialogs = [];
    page.on("dialog", (dialog) => {
      dialogs.push(dialog.message());
      dialog.dismiss().catch(() => {});
    });
    const pageErrors = [];
    page.on("pageerror", (error) => pageErrors.push(error.message));

    await page.goto(`${base}/admin/`);
    const count = (name) => page.locator(`[data-stat="${name}"] .n`);
    // Rows: the one publisher's 2 pending, 6 published, 6 dead; nats 2 published; hooks 3 dead.
    await count("dead").filter({ hasText: /^9$/ }).waitFor();
    assert.equal(await count("pending").textContent(), "2");
    assert.equal(await count("published").textContent(), "8");
    assert.equal(await count("processing").textContent(), "0");
    assert.equal(await page.locator("#mode").textContent(), "requeue and purge allowed");

    // Topics, each as text (the hostile ones included).
    await page.locator(`#topics-body tr[data-topic="billing.invoice"]`).waitFor();
    const topics = await page.locator("#topics-body td.mono").allTextContents();
    assert.ok(topics.includes(XSS[0]) && topics.includes(`billing.${XSS_TOPICS[0]}`), topics.join(" | "));

    // Destinations: a table of counts, the default one's as (default).
    const destination = (d) => page.locator(`#destinations-body tr[data-destination="${d}"] td`).allTextContents();
    await page.locator(`#destinations-body tr[data-destination="hooks"]`).waitFor();
    assert.equal(await page.locator("#destinations-section").isVisible(), true);
    assert.deepEqual(await destination(""), ["(default)", "2", "0", "6", "6"]);
    assert.deepEqual(await destination("hooks"), ["hooks", "0", "0", "0", "3"]);
    assert.deepEqual(await destination("nats"), ["nats", "0", "0", "2", "0"]);

    // The dead messages, hostile fields shown as the text they are, each with its destination.
    const rows = page.locator("#messages-body tr[data-status=dead]");
    await rows.nth(8).waitFor();
    assert.equal(await rows.count(), 9);
    const shipped = page.locator(`#messages-body tr[data-id="ship-1"][data-destination="hooks"]`);
    assert.equal(await shipped.locator("td.dest").textContent(), "hooks");
    assert.equal(await shipped.locator("td.dest").isVisible(), true);
    assert.equal(
      await page.locator(`#messages-body tr[data-id="invoice-1"] td.dest`).textContent(),
      "(default)",
    );
    assert.equal(
      await page.locator(`#messages-body tr[data-id="hostile-4"] td.topic`).textContent(),
      `hooks.${XSS_TOPICS[1]}`,
    );
    const hostile = page.locator(`#messages-body tr[data-id="hostile-1"]`);
    assert.equal(await hostile.locator("td.topic").textContent(), XSS[0]);
    assert.equal(await hostile.locator(".key").textContent(), `key ${XSS[2]}`);
    assert.match(await hostile.locator("td.err").textContent(), /broker refused <script>/);
    assert.equal(JSON.parse(await hostile.locator("pre.payload").textContent()).note, XSS.join(" "));
    assert.equal(JSON.parse(await hostile.locator("pre.headers").textContent())["x-comment"], XSS[1]);

    // Requeue one dead message with its button.
    await page.locator(`tr[data-id="invoice-2"] button[data-action=requeue]`).click();
    await page.locator("#notice").filter({ hasText: "Requeued 1 message" }).waitFor();
    await count("dead").filter({ hasText: /^8$/ }).waitFor();
    assert.equal(await count("pending").textContent(), "3");
    assert.equal(await statusOf(client, "invoice-2"), "pending", "the database has it pending again");
    await page.locator(`tr[data-id="invoice-2"]`).waitFor({ state: "detached" });

    // A payload opened: still text.
    await hostile.locator("summary").first().click();
    assert.equal(await hostile.locator("pre.payload").isVisible(), true);
    if (process.env.OUTBOX_SCREENSHOT === "1") {
      mkdirSync(join(root, "docs", "images"), { recursive: true });
      await page.screenshot({ path: join(root, "docs", "images", "dashboard.png"), fullPage: true });
    }

    // Purge asks for a second click (no dialog), then deletes the row.
    const purge = page.locator(`tr[data-id="invoice-3"] button[data-action=purge]`);
    await purge.click();
    assert.equal(await purge.textContent(), "Confirm purge");
    assert.equal(await statusOf(client, "invoice-3"), "dead", "one click purges nothing");
    await purge.click();
    await count("dead").filter({ hasText: /^7$/ }).waitFor();
    assert.equal(await statusOf(client, "invoice-3"), null, "the row is gone");
    assert.deepEqual(await destination(""), ["(default)", "3", "0", "6", "4"]);

    // The destination filter: hooks only, then requeue ship-1 there (its nats row stays published).
    await page.selectOption("#f-destination", "hooks");
    await page.click("#filters button[type=submit]");
    await page.locator(`#messages-body tr[data-destination=""]`).first().waitFor({ state: "detached" });
    assert.equal(await rows.count(), 3);
    assert.equal(await page.locator("#requeue-all").textContent(), "Requeue all dead for this destination");
    await shipped.locator("button[data-action=requeue]").click();
    await count("dead").filter({ hasText: /^6$/ }).waitFor();
    assert.equal(await statusOf(client, "ship-1", "hooks"), "pending");
    assert.equal(await statusOf(client, "ship-1", "nats"), "published", "one destination's row only");
    assert.deepEqual(await destination("hooks"), ["hooks", "1", "0", "0", "2"]);
    // The default destination: the one publisher's rows (destination= in the API).
    await page.selectOption("#f-destination", { label: "(default)" });
    await page.click("#filters button[type=submit]");
    await page.locator(`#messages-body tr[data-destination="hooks"]`).first().waitFor({ state: "detached" });
    assert.equal(await rows.count(), 4);
    await page.selectOption("#f-destination", "*");

    // Paging with the cursor: 4 dead messages, 20 per page → one page; the published ones in pages.
    await page.selectOption("#f-status", "published");
    await page.selectOption("#f-limit", "20");
    await page.click("#filters button[type=submit]");
    await page.locator("#messages-body tr[data-status=published]").nth(5).waitFor();
    assert.equal(await page.locator("#next").isDisabled(), true);

    // Nothing hostile ran, was parsed into elements, or even tried (no CSP report).
    assert.equal(await page.evaluate(() => globalThis.__xss), undefined);
    assert.equal(await page.locator("main img, main svg, main script").count(), 0);
    assert.deepEqual(dialogs, []);
    assert.deepEqual(await page.evaluate(() => globalThis.__violations), []);
    assert.deepEqual(pageErrors, []);

    // Read-only: the same page shows no buttons.
    const ro = await context.newPage();
    await ro.goto(`${base}/ro/`);
    await ro.locator(`[data-stat="dead"] .n`).filter({ hasText: /^6$/ }).waitFor();
    await ro.locator("#messages-body tr[data-status=dead]").first().waitFor();
    assert.equal(await ro.locator("#mode").textContent(), "read-only");
    assert.equal(await ro.locator("#messages-body button").count(), 0);
    assert.equal(await ro.locator("#bulk").isVisible(), false);
    assert.equal(await ro.evaluate(() => globalThis.__xss), undefined);

    // Without the cookie the API refuses.
    const stranger = await browser.newContext();
    const response = await stranger.request.get(`${base}/admin/api/outbox`);
    assert.equal(response.status(), 401);
    await stranger.close();
  } finally {
    await browser.close();
    await new Promise((resolve) => server.close(resolve));
    client.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
