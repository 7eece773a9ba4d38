/**
 * One outbox, two destinations: each order event goes to a partner's webhook and to an
 * analytics sink, as a row per destination, each relayed on its own.
 *
 * The partner's endpoint (a local `node:http` server) is down for its first requests
 * (503). The analytics copies go out at once anyway: a failing destination neither delays
 * nor repeats the other. The partner gets every order once it is back, in order per
 * customer; `stats().destinations` shows the two destinations apart while it is down.
 * `route` sends refunds to analytics only.
 *
 * No services needed (an embedded libSQL file). Run from the repository root:
 * `npx bun examples/fan-out/main.ts`, `npx deno run -A examples/fan-out/main.ts`, or on
 * Node 22.18+ `node examples/fan-out/main.ts`. Environment: ORDERS (default 6), DOWN
 * (failed requests before the partner is back, default 4). It exits when done.
 */

import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@libsql/client";
import { createOutbox, type OutboxRecord } from "../../mod.ts";
import { libsqlStorage } from "../../adapters/libsql/mod.ts";
import { generateWebhookSecret, verifyWebhook, webhookPublisher } from "../../adapters/webhook/mod.ts";

const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
const ORDERS = Number(env.ORDERS ?? 6);
let down = Number(env.DOWN ?? 4);
const secret = generateWebhookSecret();

// --- The partner: answers 503 while down, then verifies and records each webhook-id once.
const received = new Map<string, string>();
let finish!: () => void;
const finished = new Promise<void>((resolve) => finish = resolve);
const server = createServer(async (request, response) => {
  const chunks: Uint8Array[] = [];
  for await (const chunk of request) chunks.push(chunk as Uint8Array);
  const body = new Uint8Array(await new Blob(chunks).arrayBuffer());
  if (down > 0) {
    down--;
    console.log(`  partner: down, 503`);
    return response.writeHead(503).end();
  }
  if (!(await verifyWebhook({ secret, headers: request.headers, body }))) return response.writeHead(401).end();
  const id = String(request.headers["webhook-id"]);
  const event = JSON.parse(new TextDecoder().decode(body)) as { order: string; customer: string };
  if (!received.has(id)) console.log(`  partner: ${event.order} of ${event.customer}`);
  received.set(id, event.order);
  response.writeHead(204).end();
  if (received.size === ORDERS) finish();
});
await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;

// --- The order service: orders and the outbox in one database. ---------------------------
const dir = await mkdtemp(join(tmpdir(), "x-outbox-fan-out-"));
const db = createClient({ url: `file:${join(dir, "orders.db")}` });
await db.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL)");
const analytics: OutboxRecord[] = [];
let analyticsDone!: () => void;
const allAnalytics = new Promise<void>((resolve) => analyticsDone = resolve);
const outbox = createOutbox({
  storage: libsqlStorage(db),
  publishers: {
    partner: webhookPublisher({ url, secret }),
    analytics: (message) => {
      analytics.push(message);
      console.log(`  analytics: ${message.topic} ${JSON.stringify(message.payload)}`);
      if (analytics.length === ORDERS + 1) analyticsDone();
    },
  },
  route: (message) => (message.topic === "orders.refunded" ? ["analytics"] : ["partner", "analytics"]),
  retry: { baseDelayMs: 50, maxDelayMs: 200, jitter: 0 }, // quick retries for the example
});
await outbox.setup(); // a fan-out outbox's setup readies the table for a row per destination

for (let i = 1; i <= ORDERS; i++) {
  const order = `o-${i}`;
  const customer = `c-${i % 2}`;
  const tx = await db.transaction("write");
  try {
    await tx.execute({ sql: "INSERT INTO orders (id, customer) VALUES (?, ?)", args: [order, customer] });
    const events = [{ topic: "orders.created", key: customer, payload: { order, customer } }];
    if (i === 3) events.push({ topic: "orders.refunded", key: customer, payload: { order, customer } });
    await outbox.enqueue(tx, events);
    await tx.commit();
  } finally {
    tx.close();
  }
}
const rows = await outbox.inspect();
console.log(
  `${ORDERS} orders committed: ${rows.length} outbox rows (a row per destination, refunds to analytics only)`,
);

const relay = outbox.start({ minIdleMs: 10, maxIdleMs: 50 });
let seenDown = false;
await allAnalytics;
const { destinations } = await outbox.stats();
const waiting = (destinations.partner?.pending ?? 0) + (destinations.partner?.processing ?? 0);
if (waiting > 0) {
  seenDown = true;
  console.log(`analytics has all ${analytics.length} events while ${waiting} wait for the partner`);
}
const giveUp = setTimeout(finish, 30_000);
await finished;
clearTimeout(giveUp);
await relay.stop();

// --- What happened. ----------------------------------------------------------------------
const byCustomer = (customer: string) =>
  [...received.values()].filter((order) => Number(order.slice(2)) % 2 === Number(customer.slice(2)));
const inOrder = ["c-0", "c-1"].every((c) => byCustomer(c).join() === [...byCustomer(c)].sort().join());
const stats = await outbox.stats();
const ok = received.size === ORDERS && analytics.length === ORDERS + 1 && inOrder && seenDown &&
  stats.pending + stats.processing + stats.dead === 0;
console.log(
  `\npartner: ${received.size} orders, each once, in order per customer: ${inOrder}; analytics: ${analytics.length} events`,
);
console.log(ok ? "each destination got its events once, the partner's outage delayed only the partner ✓" : "✗");

await new Promise((resolve) => server.close(resolve));
db.close();
await rm(dir, { recursive: true, force: true });
if (!ok) throw new Error("unexpected result");
