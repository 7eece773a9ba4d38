/**
 * The outbox into RabbitMQ, and a consumer that applies each message once.
 *
 * An order service writes each order and its `orders.created` event in one transaction
 * (an embedded libSQL file), and `start()` relays the events with `amqpPublisher` on a
 * confirm channel from a channel factory (so a channel lost with its connection is
 * reopened) to a topic exchange, bound to one queue. A shipping service consumes the
 * queue and records each message's `messageId` (the outbox id) with the inbox, in the
 * transaction that creates the shipment. o-2's ack is "lost" after its commit;
 * RabbitMQ delivers it again and the inbox recognises it. One event has a topic no queue
 * is bound for: RabbitMQ returns it (`mandatory`) and it goes `dead`, saying why.
 *
 * Needs RabbitMQ (AMQP_URL, default amqp://guest:guest@127.0.0.1:5672). Run from the
 * repository root: `npx bun examples/rabbitmq/main.ts`, `npx deno run -A
 * examples/rabbitmq/main.ts`, or on Node 22.18+ `node examples/rabbitmq/main.ts` (type
 * stripping). Environment: EXCHANGE (default `example.orders`), QUEUE (default
 * `example.shipping`), ORDERS (default 5). It exits when every order has a shipment,
 * deleting the queue and the exchange.
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@libsql/client";
import { connect, type ConsumeMessage } from "amqplib";
import { createOutbox } from "../../mod.ts";
import { createInbox } from "../../inbox/mod.ts";
import { libsqlInbox, libsqlStorage } from "../../adapters/libsql/mod.ts";
import { amqpPublisher } from "../../adapters/amqp/mod.ts";

const env = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env ?? {};
const AMQP_URL = env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
const EXCHANGE = env.EXCHANGE ?? "example.orders";
const QUEUE = env.QUEUE ?? "example.shipping";
const ORDERS = Number(env.ORDERS ?? 5);

const dir = await mkdtemp(join(tmpdir(), "x-outbox-rabbitmq-"));

// --- The order service: orders and the outbox in one database. ----------------------
// recovery: amqplib reconnects by itself; createConfirmChannel() then waits for it.
const relayConnection = await connect(AMQP_URL, {
  clientProperties: { connection_name: "example-orders-relay" },
  recovery: true,
});
relayConnection.on("error", (error: Error) => console.warn("AMQP (relay):", error.message));

const orders = createClient({ url: `file:${join(dir, "orders.db")}` });
await orders.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, total REAL NOT NULL)");
const publisher = amqpPublisher(() => relayConnection.createConfirmChannel(), { exchange: EXCHANGE });
const outbox = createOutbox({ storage: libsqlStorage(orders), publisher });
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
// No queue is bound for invoices.*: with `mandatory` (the default) RabbitMQ returns it.
await outbox.enqueue(orders, { topic: "invoices.created", key: "i-1", payload: { id: "i-1" } });
console.log(`order service: ${ORDERS} orders committed with their orders.created events, and one invoices.created`);

// --- The broker's topology: a topic exchange, one durable queue bound to orders.#. ------
const consumerConnection = await connect(AMQP_URL, {
  clientProperties: { connection_name: "example-shipping" },
});
consumerConnection.on("error", (error: Error) => console.warn("AMQP (consumer):", error.message));
const channel = await consumerConnection.createChannel();
await channel.assertExchange(EXCHANGE, "topic", { durable: true });
await channel.assertQueue(QUEUE, { durable: true });
await channel.bindQueue(QUEUE, EXCHANGE, "orders.#");
await channel.purgeQueue(QUEUE); // leftovers of an earlier run

const relay = outbox.start({ minIdleMs: 10, maxIdleMs: 100 });
console.log(`relay started: exchange "${EXCHANGE}" (topic) → queue "${QUEUE}" (orders.#)\n`);

// --- The shipping service: shipments and the inbox in its own database. ---------------
const shipping = createClient({ url: `file:${join(dir, "shipping.db")}` });
await shipping.execute("CREATE TABLE shipments (order_id TEXT PRIMARY KEY, total REAL NOT NULL)");
const inbox = createInbox({ storage: libsqlInbox(shipping), consumer: QUEUE });
await inbox.setup();

let applied = 0;
let copies = 0;
let lostAck = false;
let finish!: () => void;
const finished = new Promise<void>((resolve) => finish = resolve);

/** Applies one delivery in a transaction with its inbox record; acks it after the commit. */
async function handle(msg: ConsumeMessage): Promise<void> {
  const id = msg.properties.messageId as string; // the outbox id: the same on every copy
  const order = JSON.parse(msg.content.toString()) as { id: string; total: number };
  const label = `  ${order.id} (${msg.fields.redelivered ? "redelivered" : "delivery 1"})`;
  const tx = await shipping.transaction("write");
  let fresh: boolean;
  try {
    fresh = await inbox.receive(tx, id);
    if (fresh) await tx.execute({ sql: "INSERT INTO shipments VALUES (?, ?)", args: [order.id, order.total] });
    await tx.commit();
  } finally {
    tx.close();
  }
  if (!fresh) {
    copies++;
    console.log(`${label}: already applied (inbox has ${id.slice(0, 13)}…), ack without applying`);
    channel.ack(msg);
  } else if (order.id === "o-2" && !lostAck) {
    lostAck = true;
    applied++;
    // Stands in for a consumer that died after its commit: RabbitMQ requeues what a
    // closed channel left unacknowledged, and delivers it again.
    console.log(`${label}: shipment created and committed, then the ack was lost → RabbitMQ requeues it`);
    channel.nack(msg, false, true);
  } else {
    applied++;
    console.log(`${label}: shipment created, ack`);
    channel.ack(msg);
  }
  if (applied === ORDERS && copies === 1) finish();
}

await channel.prefetch(1); // one delivery at a time: one write transaction at a time
const giveUp = setTimeout(finish, 30_000);
const { consumerTag } = await channel.consume(QUEUE, (msg) => {
  if (msg) handle(msg).catch((error) => console.error("handler failed:", error));
});
console.log(`consumer on "${QUEUE}":`);
await finished;
clearTimeout(giveUp);
await channel.cancel(consumerTag);
await relay.stop();
await outbox.tick(); // settles whatever the loop had not reached (nothing, usually)

// --- What happened. ------------------------------------------------------------------
const [dead] = await outbox.inspect({ status: "dead" });
console.log(`\ninvoices.created went dead after ${dead?.attempts} attempt: ${dead?.lastError}`);
const shipments = await shipping.execute("SELECT count(*) AS n FROM shipments");
const left = await channel.checkQueue(QUEUE);
const stats = await outbox.stats();
const once = applied === ORDERS && Number(shipments.rows[0]!.n) === ORDERS && copies === 1 &&
  left.messageCount === 0 && stats.dead === 1 && stats.pending + stats.processing === 0;
console.log(
  `${applied} shipments from ${ORDERS} orders, ${copies} copy recognised by the inbox, ` +
    `${left.messageCount} messages left in the queue; outbox: ${stats.dead} dead, ${stats.pending} pending`,
);
console.log(once ? "every order shipped exactly once ✓" : "unexpected result ✗");

await channel.deleteQueue(QUEUE);
await channel.deleteExchange(EXCHANGE);
await consumerConnection.close();
await publisher.close?.();
await relayConnection.close();
orders.close();
shipping.close();
await rm(dir, { recursive: true, force: true });
if (!once) throw new Error("an order was shipped more or less than once");
