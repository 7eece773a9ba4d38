/**
 * `npm run demo`: a small order service on an embedded libSQL file database.
 *
 * Each order row and its event are written in one transaction; one transaction rolls
 * back, one order goes in as a single `client.batch()`, one event fails its schema
 * before commit. Then the relay publishes to an in-memory "broker" that fails once
 * for order o-2, which shows the retry and that o-2's later event waits for it.
 *
 * Runs with `npx bun examples/demo/main.ts` or `npx deno run -A examples/demo/main.ts`.
 * No services needed: the database is a file in a fresh temporary directory.
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@libsql/client";
import * as v from "valibot";
import { createOutbox, memoryPublisher, OutboxMessageError, type OutboxStats } from "../../mod.ts";
import { libsqlStorage } from "../../adapters/libsql/mod.ts";

// A file, not ":memory:": @libsql/client gives a ":memory:" client a new, empty
// database after client.transaction().
const dir = await mkdtemp(join(tmpdir(), "x-outbox-demo-"));
const client = createClient({ url: `file:${join(dir, "orders.db")}` });

// The "broker": records what it accepts; refuses o-2's first event once, like a blip.
let failedOnce = false;
const broker = memoryPublisher({
  onPublish(message) {
    if (message.key === "o-2" && !failedOnce) {
      failedOnce = true;
      console.log(`  broker refused ${message.topic} ${message.key} (attempt ${message.attempts}): connection reset`);
      throw new Error("connection reset");
    }
  },
});

const outbox = createOutbox({
  storage: libsqlStorage(client),
  publisher: broker,
  messages: {
    "orders.created": v.object({ id: v.string(), customer: v.string(), total: v.pipe(v.number(), v.minValue(0)) }),
    "orders.paid": v.object({ id: v.string(), amount: v.number() }),
  },
  retry: { baseDelayMs: 50, maxDelayMs: 1_000, jitter: 0 }, // quick retries for the demo
  retention: { publishedMs: 3_600_000 }, // keep published rows for an hour so stats() counts them
});

await client.execute(
  "CREATE TABLE orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, total REAL NOT NULL, status TEXT NOT NULL)",
);
await outbox.setup();
console.log(`@x/outbox demo: an order service on embedded libSQL (${join(dir, "orders.db")})\n`);
console.log("Writing (each order row and its event in one transaction):");

/** Inserts an order and its orders.created event in one write transaction. */
async function createOrder(id: string, customer: string, total: number, options: { rollback?: boolean } = {}) {
  const tx = await client.transaction("write");
  try {
    await tx.execute({ sql: "INSERT INTO orders VALUES (?, ?, ?, 'new')", args: [id, customer, total] });
    await outbox.enqueue(tx, { topic: "orders.created", key: id, payload: { id, customer, total } });
    if (options.rollback) {
      await tx.rollback();
      console.log(`  ${id}  rolled back (card declined): no order row, no event`);
      return;
    }
    await tx.commit();
    console.log(`  ${id}  committed: order + orders.created`);
  } finally {
    tx.close();
  }
}

/** Marks an order paid and enqueues orders.paid in one write transaction. */
async function payOrder(id: string, amount: number) {
  const tx = await client.transaction("write");
  try {
    await tx.execute({ sql: "UPDATE orders SET status = 'paid' WHERE id = ?", args: [id] });
    await outbox.enqueue(tx, { topic: "orders.paid", key: id, payload: { id, amount } });
    await tx.commit();
    console.log(`  ${id}  committed: status paid + orders.paid`);
  } finally {
    tx.close();
  }
}

await createOrder("o-1", "alice", 25);
await createOrder("o-2", "bob", 40);
await payOrder("o-1", 25);
await payOrder("o-2", 40);
await createOrder("o-3", "carol", 99, { rollback: true });

// Over HTTP (Turso) a batch is the atomic unit: the order and its event in one request.
await client.batch([
  { sql: "INSERT INTO orders VALUES (?, ?, ?, 'new')", args: ["o-4", "dave", 12] },
  ...outbox.statements({ topic: "orders.created", key: "o-4", payload: { id: "o-4", customer: "dave", total: 12 } }),
], "write");
console.log("  o-4  committed as one client.batch([insert order, ...outbox.statements(event)])");

// An invalid event is rejected before anything is written; the transaction stays usable.
{
  const tx = await client.transaction("write");
  try {
    await tx.execute({ sql: "INSERT INTO orders VALUES ('o-5', 'erin', 18, 'new')" });
    try {
      await outbox.enqueue(tx, {
        topic: "orders.created",
        key: "o-5",
        payload: { id: "o-5", customer: "erin", total: -18 },
      });
    } catch (error) {
      if (!(error instanceof OutboxMessageError)) throw error;
      console.log(`  o-5  rejected before commit: ${error.name}: ${error.message}`);
    }
    await outbox.enqueue(tx, {
      topic: "orders.created",
      key: "o-5",
      payload: { id: "o-5", customer: "erin", total: 18 },
    });
    await tx.commit();
    console.log("  o-5  same transaction, corrected event: committed");
  } finally {
    tx.close();
  }
}

const orders = await client.execute("SELECT id FROM orders ORDER BY id");
console.log(`  orders table: ${orders.rows.map((r) => r.id).join(", ")}`);
const format = (s: OutboxStats) =>
  `pending ${s.pending}, processing ${s.processing}, published ${s.published}, dead ${s.dead}`;
console.log(`\nstats() before the relay: ${format(await outbox.stats())}\n`);

console.log("Relay:");
const report = await outbox.tick();
console.log(
  `  tick(): claimed ${report.claimed}, published ${report.published}, retried ${report.retried}, ` +
    `released ${report.released} (o-2's orders.paid waits behind its failed event)`,
);

// The loop picks up the retry once its back-off (50 ms) has passed.
const relay = outbox.start({ minIdleMs: 10, maxIdleMs: 50 });
const deadline = Date.now() + 5_000;
let stats = await outbox.stats();
while (stats.pending + stats.processing > 0 && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 20));
  stats = await outbox.stats();
}
await relay.stop();
console.log(`  start() … stop(): the retry went out; the loop stopped cleanly\n`);

console.log("Published, in the order the broker received them:");
for (const m of broker.messages) {
  console.log(
    `  ${m.topic.padEnd(15)} ${String(m.key).padEnd(4)} ${JSON.stringify(m.payload)}  (attempt ${m.attempts})`,
  );
}
const order = (key: string) => broker.messages.filter((m) => m.key === key).map((m) => m.topic).join(" → ");
console.log(`Per key: o-1 ${order("o-1")}; o-2 ${order("o-2")}`);
console.log(`\nstats() after: ${format(stats)}`);

client.close();
await rm(dir, { recursive: true, force: true });

// Fail loudly if the story did not go as told (the demo doubles as a smoke test).
const expected = ["o-1", "o-2", "o-4", "o-5"].length + 2;
if (
  broker.messages.length !== expected || stats.published !== expected || stats.pending + stats.processing !== 0 ||
  order("o-2") !== "orders.created → orders.paid" || order("o-1") !== "orders.created → orders.paid"
) {
  console.error(`\nUnexpected result: ${broker.messages.length} published, stats ${format(stats)}`);
  // deno-lint-ignore no-process-global
  process.exitCode = 1;
}
