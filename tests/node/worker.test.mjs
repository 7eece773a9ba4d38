// The Cloudflare Worker example (examples/cloudflare-turso/) in workerd, through miniflare
// from devDependencies: POST /orders writes an order and its event in one transaction,
// scheduled() relays them to a webhook with ctx.waitUntil(outbox.tick({ budgetMs })).
//
// No server here speaks libSQL's HTTP protocol (sqld is not on npm), so the Worker runs on
// its Postgres path: postgres.js over cloudflare:sockets to 127.0.0.1:5432, database test.
// The worker bundle imports @x/outbox from dist/ (run `npm run build` first).

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Miniflare } from "miniflare";
import postgres from "postgres";
import { createOutbox } from "@x/outbox";
import { postgresStorage } from "@x/outbox/postgres";
import { bundleWorker } from "../../examples/cloudflare-turso/build.mjs";

const DATABASE_URL = process.env.OUTBOX_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const schema = `cf_worker_${process.pid}_${Date.now().toString(36)}`;

/** @type {{ id: string, topic: string, key: string, payload: any, idempotencyKey: string }[]} */
const received = [];
let failNext = 0;
let webhook;
let mf;
let options;
let sql;
let dir;
const timings = {};

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "x-outbox-worker-"));
  const { outfile } = await bundleWorker(join(dir, "worker.js"));

  // The migration a deployment runs once: the outbox table (setup()) and the orders table.
  sql = postgres(DATABASE_URL, { max: 2, onnotice: () => {} });
  await createOutbox({ storage: postgresStorage(sql, { schema }), publisher: () => {} }).setup();
  await sql`CREATE TABLE ${sql(schema)}.orders (id text PRIMARY KEY, total numeric NOT NULL)`;

  webhook = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      if (failNext > 0) {
        failNext--;
        response.writeHead(503).end();
        return;
      }
      received.push({ ...JSON.parse(body), idempotencyKey: request.headers["idempotency-key"] });
      response.writeHead(204).end();
    });
  });
  await new Promise((resolve) => webhook.listen(0, "127.0.0.1", resolve));

  options = {
    modules: true,
    scriptPath: outfile,
    modulesRoot: dir,
    compatibilityDate: "2025-09-01",
    compatibilityFlags: ["nodejs_compat"],
    bindings: {
      DATABASE_URL,
      DATABASE_SCHEMA: schema,
      PUBLISH_URL: `http://127.0.0.1:${webhook.address().port}/events`,
      TICK_BUDGET_MS: "5000",
    },
  };
  mf = new Miniflare(options);
  await mf.ready;
}, { timeout: 60_000 });

after(async () => {
  await mf?.dispose();
  webhook?.close();
  if (sql) {
    await sql`DROP SCHEMA IF EXISTS ${sql(schema)} CASCADE`;
    await sql.end();
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
}, { timeout: 30_000 });

async function postOrder(order) {
  const response = await mf.dispatchFetch("http://worker.local/orders", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(order),
  });
  return { status: response.status, body: await response.text() };
}

async function scheduled() {
  const worker = await mf.getWorker();
  const started = performance.now();
  const result = await worker.scheduled({ cron: "* * * * *" });
  return { ...result, ms: performance.now() - started };
}

test("workerd: POST /orders commits the order and its event together; nothing is published before a tick", { timeout: 30_000 }, async () => {
  for (let i = 1; i <= 3; i++) {
    const { status } = await postOrder({ id: `o-${i}`, total: i * 10 });
    assert.equal(status, 201);
  }
  const orders = await sql`SELECT id FROM ${sql(schema)}.orders ORDER BY id`;
  assert.deepEqual(orders.map((row) => row.id), ["o-1", "o-2", "o-3"]);
  const [{ count }] = await sql`SELECT count(*)::int AS count FROM ${sql(schema)}.outbox WHERE status = 'pending'`;
  assert.equal(count, 3);
  assert.equal(received.length, 0);
});

test("workerd: a rolled-back order (duplicate id) leaves no event behind", { timeout: 30_000 }, async () => {
  const { status } = await postOrder({ id: "o-1", total: 99 });
  assert.equal(status, 500, "the INSERT fails inside the transaction");
  const [{ count }] = await sql`SELECT count(*)::int AS count FROM ${sql(schema)}.outbox`;
  assert.equal(count, 3, "the event of the failed order was rolled back with it");
});

test("workerd: scheduled() runs ctx.waitUntil(outbox.tick()) and the webhook gets every event once, in order", { timeout: 30_000 }, async () => {
  const cold = await scheduled();
  timings.firstScheduledMs = cold.ms;
  assert.equal(cold.outcome, "ok");
  assert.deepEqual(received.map((event) => event.key), ["o-1", "o-2", "o-3"]);
  for (const event of received) {
    assert.equal(event.topic, "orders.created");
    assert.equal(event.idempotencyKey, event.id, "the message id travels as the dedup key");
  }
  assert.deepEqual(received[1].payload, { id: "o-2", total: 20 });
  const [{ count }] = await sql`SELECT count(*)::int AS count FROM ${sql(schema)}.outbox`;
  assert.equal(count, 0, "published rows are deleted (retention publishedMs: 0)");

  const idle = await scheduled();
  timings.idleScheduledMs = idle.ms;
  assert.equal(idle.outcome, "ok");
  assert.equal(received.length, 3, "an idle tick publishes nothing again");
});

test("workerd: a webhook failure leaves the event pending for a later tick", { timeout: 30_000 }, async () => {
  failNext = 1;
  assert.equal((await postOrder({ id: "o-4", total: 40 })).status, 201);
  const warm = await scheduled();
  timings.warmScheduledMs = warm.ms;
  assert.equal(warm.outcome, "ok");
  assert.equal(received.length, 3);
  const [row] = await sql`SELECT status, attempts FROM ${sql(schema)}.outbox`;
  assert.equal(row.status, "pending");
  assert.equal(row.attempts, 1);
  await sql`UPDATE ${sql(schema)}.outbox SET available_at = (extract(epoch from clock_timestamp()) * 1000)::bigint`;
  assert.equal((await scheduled()).outcome, "ok");
  assert.deepEqual(received.map((event) => event.key), ["o-1", "o-2", "o-3", "o-4"]);
});

test("workerd: cold start — a fresh isolate's first scheduled() publishes a waiting event", { timeout: 30_000 }, async (t) => {
  // The event comes from outside this isolate, as after a deploy or an evicted isolate.
  const outbox = createOutbox({ storage: postgresStorage(sql, { schema }), publisher: () => {} });
  await sql.begin((tx) => outbox.enqueue(tx, { topic: "orders.created", key: "o-5", payload: { id: "o-5", total: 50 } }));
  const started = performance.now();
  const fresh = new Miniflare(options);
  try {
    await fresh.ready;
    const readyMs = performance.now() - started;
    const worker = await fresh.getWorker();
    const tickStarted = performance.now();
    const result = await worker.scheduled({ cron: "* * * * *" });
    const tickMs = performance.now() - tickStarted;
    assert.equal(result.outcome, "ok");
    assert.equal(received.at(-1).key, "o-5");
    t.diagnostic(
      `workerd cold start: runtime + isolate + module ${readyMs.toFixed(0)} ms; first scheduled() ` +
        `(new TCP connection, Postgres startup and type fetch, claim/publish/settle of 1) ${tickMs.toFixed(0)} ms. ` +
        `Same-isolate scheduled(): 3 events ${timings.firstScheduledMs.toFixed(0)} ms, idle ${timings.idleScheduledMs.toFixed(0)} ms.`,
    );
  } finally {
    await fresh.dispose();
  }
});
