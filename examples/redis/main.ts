/**
 * The outbox into Redis Streams, and a consumer group that applies each entry once.
 *
 * An order service writes each order and its `orders.created` event in one transaction
 * (an embedded libSQL file), and `start()` relays the events into a Redis stream with
 * `redisStreamsPublisher`. A shipping service reads the stream as a consumer group and
 * records each entry's outbox id (field `id`) with the inbox, in the transaction that
 * creates the shipment. o-2's entry is committed but never acknowledged (a "crash" before
 * `XACK`); on "restart" the consumer reads its pending entries first, and the inbox
 * recognises it. Then one published event is sent again (`requeue`, as a relay that
 * crashed before settling would): the publisher's dedup key stops a second entry.
 *
 * Needs Redis 7 (REDIS_URL, default redis://127.0.0.1:6379). Run from the repository
 * root: `npx bun examples/redis/main.ts`, `npx deno run -A examples/redis/main.ts`, or
 * on Node 22.18+ `node examples/redis/main.ts` (type stripping). Environment: STREAM
 * (default `example:orders`), GROUP (default `shipping`), ORDERS (default 5). It exits
 * when every order has a shipment, deleting the stream and its dedup keys.
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient as createLibsql } from "@libsql/client";
import { createClient } from "redis";
import { createOutbox } from "../../mod.ts";
import { createInbox } from "../../inbox/mod.ts";
import { libsqlInbox, libsqlStorage } from "../../adapters/libsql/mod.ts";
import { redisStreamsPublisher } from "../../adapters/redis/mod.ts";

const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
const REDIS_URL = env.REDIS_URL ?? "redis://127.0.0.1:6379";
const STREAM = env.STREAM ?? "example:orders";
const GROUP = env.GROUP ?? "shipping";
const ORDERS = Number(env.ORDERS ?? 5);

const dir = await mkdtemp(join(tmpdir(), "x-outbox-redis-"));
const redis = createClient({ url: REDIS_URL });
redis.on("error", (error: Error) => console.warn("redis:", error.message));
await redis.connect();
// XREADGROUP BLOCK holds its connection: the consumer gets its own, the publisher's
// pipeline is never stuck behind it.
const reader = redis.duplicate();
reader.on("error", (error: Error) => console.warn("redis (consumer):", error.message));
await reader.connect();

// --- The order service: orders and the outbox in one database. ----------------------
const orders = createLibsql({ url: `file:${join(dir, "orders.db")}` });
await orders.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, total REAL NOT NULL)");
const publisher = redisStreamsPublisher(redis, { stream: () => STREAM, maxLen: 100_000 });
const outbox = createOutbox({
  storage: libsqlStorage(orders),
  publisher,
  retention: { publishedMs: 3_600_000 }, // keep published rows, so one can be requeued below
  onWarning: (warning) => console.log(`  (outbox warning: ${warning})`),
});
await outbox.setup();

for (let i = 1; i <= ORDERS; i++) {
  const id = `o-${i}`;
  const tx = await orders.transaction("write");
  try {
    await tx.execute({ sql: "INSERT INTO orders (id, total) VALUES (?, ?)", args: [id, i * 10] });
    await outbox.enqueue(tx, { topic: "orders.created", key: id, payload: { id, total: i * 10 } });
    await tx.commit();
  } finally {
    tx.close();
  }
}
console.log(`order service: ${ORDERS} orders committed, each with its orders.created event`);

// --- The shipping service: shipments and the inbox in its own database. ---------------
const shipping = createLibsql({ url: `file:${join(dir, "shipping.db")}` });
await shipping.execute("CREATE TABLE shipments (order_id TEXT PRIMARY KEY, total REAL NOT NULL)");
const inbox = createInbox({ storage: libsqlInbox(shipping), consumer: GROUP });
await inbox.setup();
await redis.del(STREAM); // leftovers of an earlier run
await reader.xGroupCreate(STREAM, GROUP, "0", { MKSTREAM: true });

const relay = outbox.start({ minIdleMs: 10, maxIdleMs: 100 });
console.log(`relay started: XADD into stream "${STREAM}", group "${GROUP}" reads it\n`);

let applied = 0;
let copies = 0;
let crashed = false;

/** Applies one entry in a transaction with its inbox record; acks it after the commit. */
async function handle(entryId: string, fields: Record<string, string>): Promise<void> {
  const order = JSON.parse(fields.body!) as { id: string; total: number };
  const crash = order.id === "o-2" && !crashed; // committed, never acked
  const label = `  ${entryId} ${order.id}`;
  const tx = await shipping.transaction("write");
  let fresh: boolean;
  try {
    fresh = await inbox.receive(tx, fields.id!); // the outbox id: the same on every copy
    if (fresh) {
      await tx.execute({ sql: "INSERT INTO shipments VALUES (?, ?)", args: [order.id, order.total] });
    }
    await tx.commit();
  } finally {
    tx.close();
  }
  if (!fresh) {
    copies++;
    console.log(`${label}: already applied (inbox has ${fields.id!.slice(0, 13)}…), XACK without applying`);
  } else if (crash) {
    crashed = true;
    applied++;
    console.log(`${label}: shipment created and committed, then "crashed" before XACK`);
    return;
  } else {
    applied++;
    console.log(`${label}: shipment created, XACK`);
  }
  await reader.xAck(STREAM, GROUP, entryId);
}

/** One XREADGROUP: id ">" for new entries, "0" for this consumer's unacknowledged ones. */
async function read(id: string, consumer: string) {
  const reply = await reader.xReadGroup(GROUP, consumer, { key: STREAM, id }, { COUNT: 10, BLOCK: 1_000 });
  return (reply as { messages: { id: string; message: Record<string, string> }[] }[] | null)?.[0]?.messages ?? [];
}

console.log(`consumer "${GROUP}/worker-1":`);
const deadline = Date.now() + 30_000;
while (applied < ORDERS && Date.now() < deadline) {
  for (const entry of await read(">", "worker-1")) await handle(entry.id, entry.message);
}
console.log(`worker-1 "restarts": it reads its pending entries (id 0) before new ones`);
for (const entry of await read("0", "worker-1")) await handle(entry.id, entry.message);
await relay.stop();

// A relay that published but crashed before marking the row published sends it again.
const [first] = await outbox.inspect({ status: "published", limit: 1 });
const requeued = await outbox.requeue({ status: "published", ids: [first!.id] });
const report = await outbox.tick();
const length = await redis.xLen(STREAM);
console.log(
  `\nrequeued ${requeued} published event and ran tick(): published ${report.published}, ` +
    `the stream still holds ${length} entries (its dedup key {${STREAM}}:outbox-id:${
      first!.id.slice(0, 13)
    }… stopped the copy)`,
);

// --- What happened. ------------------------------------------------------------------
const shipments = await shipping.execute("SELECT count(*) AS n FROM shipments");
const pending = await reader.xPending(STREAM, GROUP);
const stats = await outbox.stats();
const once = applied === ORDERS && Number(shipments.rows[0]!.n) === ORDERS && copies === 1 && length === ORDERS &&
  pending.pending === 0;
console.log(
  `${applied} shipments from ${ORDERS} orders, ${copies} copy recognised by the inbox, ` +
    `${pending.pending} entries pending in the group; outbox: ${stats.published} published, ${stats.pending} pending`,
);
console.log(once ? "every order shipped exactly once ✓" : "unexpected result ✗");

// Clean up: the stream, the group with it, and the publisher's dedup keys.
await redis.del(STREAM);
for await (const keys of redis.scanIterator({ MATCH: `{${STREAM}}:outbox-id:*`, COUNT: 1_000 })) {
  if (keys.length > 0) await redis.del(keys);
}
reader.destroy();
redis.destroy();
orders.close();
shipping.close();
await rm(dir, { recursive: true, force: true });
if (!once) throw new Error("an order was shipped more or less than once");
