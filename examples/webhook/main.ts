/**
 * The outbox as signed webhooks, and a receiver that verifies them and applies each once.
 *
 * One process plays both sides. The sender writes each order and its `orders.created`
 * event in one transaction (an embedded libSQL file), and `start()` relays the events
 * with `webhookPublisher`: one `POST` each, signed with a `whsec_` secret as Standard
 * Webhooks says (`webhook-id` = the outbox id). The receiver, on `node:http` (which Bun
 * and Deno run too), checks the raw body with `verifyWebhook` and creates each shipment
 * in one transaction with `inbox.receive(tx, webhook-id)`. For o-2 it stores the
 * shipment and then answers 503 (a 2xx lost on the way back looks the same to the
 * sender): the relay retries with the same `webhook-id`, and the inbox recognises the
 * copy. A request signed with another secret is refused with 401.
 *
 * No services needed. Run from the repository root: `npx bun examples/webhook/main.ts`,
 * `npx deno run -A examples/webhook/main.ts`, or on Node 22.18+ `node
 * examples/webhook/main.ts` (type stripping). Environment: PORT (default 0: any free
 * port), WEBHOOK_SECRET (default: a new one), ORDERS (default 5). It exits when every
 * order has a shipment.
 */

import { Buffer } from "node:buffer";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@libsql/client";
import { createOutbox } from "../../mod.ts";
import { createInbox } from "../../inbox/mod.ts";
import { libsqlInbox, libsqlStorage } from "../../adapters/libsql/mod.ts";
import { generateWebhookSecret, signWebhook, verifyWebhook, webhookPublisher } from "../../adapters/webhook/mod.ts";

const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
const PORT = Number(env.PORT ?? 0);
const ORDERS = Number(env.ORDERS ?? 5);
// Shared once, out of band, when the receiver subscribes.
const SECRET = env.WEBHOOK_SECRET ?? generateWebhookSecret();

const dir = await mkdtemp(join(tmpdir(), "x-outbox-webhook-"));

// --- The receiver: shipments and the inbox in its own database. ----------------------
const shipping = createClient({ url: `file:${join(dir, "shipping.db")}` });
await shipping.execute("CREATE TABLE shipments (order_id TEXT PRIMARY KEY, total REAL NOT NULL)");
const inbox = createInbox({ storage: libsqlInbox(shipping), consumer: "partner-orders" });
await inbox.setup();

let applied = 0;
let copies = 0;
let refused = 0;
let failedOnce = false;
let finish!: () => void;
const finished = new Promise<void>((resolve) => finish = resolve);
// SQLite has one writer: the receiver applies one webhook at a time.
let queue: Promise<unknown> = Promise.resolve();

async function receive(request: IncomingMessage): Promise<{ status: number; text: string }> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  const body = new Uint8Array(Buffer.concat(chunks)); // the raw body: verify before parsing
  if (!(await verifyWebhook({ secret: SECRET, headers: request.headers, body }))) {
    refused++;
    // 401 is permanent for the sender: fix the secret, then requeue the dead messages.
    return { status: 401, text: `${request.headers["webhook-id"]}: signature does not verify, 401` };
  }
  const id = String(request.headers["webhook-id"]);
  const order = JSON.parse(new TextDecoder().decode(body)) as { id: string; total: number };
  const tx = await shipping.transaction("write");
  let fresh: boolean;
  try {
    fresh = await inbox.receive(tx, id); // false: a retry of one already applied
    if (fresh) await tx.execute({ sql: "INSERT INTO shipments VALUES (?, ?)", args: [order.id, order.total] });
    await tx.commit();
  } finally {
    tx.close();
  }
  const label = `${order.id} webhook-id ${id.slice(0, 13)}…`;
  if (!fresh) {
    copies++;
    return { status: 204, text: `${label}: already applied, 204 again` }; // 2xx for a copy too
  }
  applied++;
  if (order.id === "o-2" && !failedOnce) {
    failedOnce = true;
    return { status: 503, text: `${label}: shipment created and committed, but answered 503 (as if the 2xx was lost)` };
  }
  return { status: 204, text: `${label}: verified, shipment created, 204` };
}

const server = createServer((request: IncomingMessage, response: ServerResponse) => {
  const handled = queue.then(() => receive(request));
  queue = handled.catch(() => {});
  handled.then(
    ({ status, text }) => {
      console.log(`  receiver: ${text}`);
      response.writeHead(status).end();
      if (applied === ORDERS && copies === 1) finish();
    },
    (error) => {
      console.error("  receiver failed:", error);
      response.writeHead(500).end(); // the sender retries
    },
  );
});
await new Promise<void>((resolve) => server.listen(PORT, "127.0.0.1", resolve));
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/orders`;
console.log(`receiver listening on ${url}`);

// Anyone can POST to the URL; only the secret's holder can sign.
{
  const body = JSON.stringify({ id: "o-999", total: 1_000_000 });
  const [id, timestamp] = ["msg_forged", Math.floor(Date.now() / 1_000)];
  const signature = await signWebhook({ id, timestamp, body, secret: generateWebhookSecret() });
  const answer = await fetch(url, {
    method: "POST",
    headers: { "webhook-id": id, "webhook-timestamp": String(timestamp), "webhook-signature": signature },
    body,
  });
  await answer.body?.cancel();
  console.log(`a request signed with another secret: ${answer.status} (nothing applied)`);
}

// --- The sender: orders and the outbox in one database. ------------------------------
const orders = createClient({ url: `file:${join(dir, "orders.db")}` });
await orders.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, total REAL NOT NULL)");
const outbox = createOutbox({
  storage: libsqlStorage(orders),
  publisher: webhookPublisher({ url, secret: SECRET, timeoutMs: 5_000 }),
  retry: { baseDelayMs: 100, jitter: 0 }, // quick retries for the example
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
console.log(`sender: ${ORDERS} orders committed with their events; relay started\n`);
const relay = outbox.start({ minIdleMs: 10, maxIdleMs: 100 });

const giveUp = setTimeout(finish, 30_000);
await finished;
clearTimeout(giveUp);
await relay.stop(); // awaits the request in flight, and settles it

// --- What happened. ------------------------------------------------------------------
const shipments = await shipping.execute("SELECT count(*) AS n FROM shipments");
const stats = await outbox.stats();
const once = applied === ORDERS && Number(shipments.rows[0]!.n) === ORDERS && copies === 1 && refused === 1 &&
  stats.pending + stats.processing === 0 && stats.dead === 0;
console.log(
  `\n${applied} shipments from ${ORDERS} orders, ${copies} copy recognised by the inbox, ${refused} forged request refused; ` +
    `outbox: ${stats.pending} pending, ${stats.dead} dead`,
);
console.log(once ? "every order shipped exactly once ✓" : "unexpected result ✗");

await new Promise((resolve) => server.close(resolve));
orders.close();
shipping.close();
await rm(dir, { recursive: true, force: true });
if (!once) throw new Error("an order was shipped more or less than once");
