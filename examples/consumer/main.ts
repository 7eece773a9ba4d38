/**
 * A JetStream consumer that applies each message exactly once, with the inbox on an
 * embedded libSQL file database.
 *
 * It ensures a stream, publishes five payments (and one of them a second time, which
 * JetStream drops as a duplicate), then consumes them with a durable pull consumer.
 * Two deliveries go wrong on purpose: p-2 is applied and committed but the process
 * "crashes" before its ack, so JetStream redelivers it after ack_wait and the inbox
 * recognises it; p-4's handler fails before commit, so nothing is recorded and its
 * redelivery is applied. The balances at the end show every payment applied once.
 *
 * Needs nats-server with JetStream (NATS_URL, default 127.0.0.1:4222). Run from the
 * repository root with `npx bun examples/consumer/main.ts` or
 * `npx deno run -A examples/consumer/main.ts`.
 */

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Transaction } from "@libsql/client";
import { AckPolicy, jetstream, jetstreamManager, type JsMsg, StorageType } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { uuidv7 } from "../../mod.ts";
import { createInbox } from "../../inbox/mod.ts";
import { libsqlInbox } from "../../adapters/libsql/mod.ts";
import { ensureStream } from "../../adapters/nats/mod.ts";

const NATS_URL = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.NATS_URL ??
  "127.0.0.1:4222";
const STREAM = "INBOX_DEMO";
const SUBJECT = "demo.inbox.payments";
const CONSUMER = "billing";
const ACK_WAIT_MS = 1_000;

interface Payment {
  payment: string;
  account: string;
  amount: number;
}

const payments: Payment[] = [
  { payment: "p-1", account: "alice", amount: 10 },
  { payment: "p-2", account: "bob", amount: 20 },
  { payment: "p-3", account: "alice", amount: 30 },
  { payment: "p-4", account: "bob", amount: 40 },
  { payment: "p-5", account: "carol", amount: 50 },
];

// --- The consumer's database: its own tables and the inbox, in one libSQL file. -----
const dir = await mkdtemp(join(tmpdir(), "x-outbox-consumer-"));
const client = createClient({ url: `file:${join(dir, "billing.db")}` });
await client.execute("CREATE TABLE accounts (id TEXT PRIMARY KEY, balance INTEGER NOT NULL)");
// The inbox scopes ids per consumer: name it after the durable consumer.
const inbox = createInbox({ storage: libsqlInbox(client), consumer: CONSUMER });
await inbox.setup();

// --- The stream, and a few messages as an outbox relay would publish them. ----------
const nc = await connect({ servers: NATS_URL });
const jsm = await jetstreamManager(nc);
const js = jetstream(nc);
await ensureStream(jsm, {
  name: STREAM,
  subjects: ["demo.inbox.>"],
  storage: StorageType.Memory,
  duplicateWindowMs: 120_000,
});
await jsm.streams.purge(STREAM); // leftovers of an earlier run
await jsm.consumers.delete(STREAM, CONSUMER).catch(() => {});
await jsm.consumers.add(STREAM, {
  durable_name: CONSUMER,
  ack_policy: AckPolicy.Explicit,
  ack_wait: ACK_WAIT_MS * 1_000_000,
  max_deliver: 5,
});
console.log(`stream ${STREAM} ready; durable consumer "${CONSUMER}" with ack_wait ${ACK_WAIT_MS} ms`);

// Message ids as the outbox makes them (UUIDv7); each run has new ones, so the
// stream's duplicate window does not drop this run's messages as repeats of the last.
const ids = new Map(payments.map((p) => [p.payment, uuidv7()]));
for (const p of payments) {
  await js.publish(SUBJECT, JSON.stringify(p), { msgID: ids.get(p.payment)! });
}
const again = await js.publish(SUBJECT, JSON.stringify(payments[2]), { msgID: ids.get("p-3")! });
console.log(
  `published p-1 … p-5; p-3 published again with the same id → duplicate: ${again.duplicate} (JetStream dropped it)`,
);

// --- The consumer. -------------------------------------------------------------------
const faults = new Map([
  ["p-2", "crash after commit, before ack"],
  ["p-4", "fail before commit"],
]);

/** Applies a payment in one transaction with its inbox record; returns whether it was new. */
async function apply(id: string, p: Payment, failBeforeCommit: boolean): Promise<boolean> {
  const tx: Transaction = await client.transaction("write");
  try {
    if (!(await inbox.receive(tx, id))) return false; // handled before: nothing to do
    await tx.execute({
      sql:
        "INSERT INTO accounts (id, balance) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET balance = balance + excluded.balance",
      args: [p.account, p.amount],
    });
    if (failBeforeCommit) throw new Error("handler failed (simulated)");
    await tx.commit();
    return true;
  } finally {
    tx.close(); // rolls back unless committed
  }
}

async function handle(msg: JsMsg): Promise<void> {
  const id = msg.headers?.get("Nats-Msg-Id") ?? "";
  const p = msg.json<Payment>();
  const n = msg.info.deliveryCount;
  const fault = n === 1 ? faults.get(p.payment) : undefined;
  const label = `  ${p.payment} (delivery ${n})`;
  let fresh: boolean;
  try {
    fresh = await apply(id, p, fault === "fail before commit");
  } catch (error) {
    console.log(`${label}: ${(error as Error).message}; rolled back, nak → JetStream redelivers it`);
    msg.nak();
    return;
  }
  if (!fresh) {
    console.log(`${label}: already applied (the inbox has ${id.slice(0, 13)}…), ack without applying`);
    msg.ack();
    return;
  }
  if (fault === "crash after commit, before ack") {
    console.log(`${label}: applied +${p.amount} to ${p.account} and committed, then "crashed" before the ack`);
    return; // no ack: redelivered after ack_wait
  }
  console.log(`${label}: applied +${p.amount} to ${p.account}, ack`);
  msg.ack();
}

const expectedDeliveries = payments.length + faults.size;
let deliveries = 0;
const consumer = await js.consumers.get(STREAM, CONSUMER);
const messages = await consumer.consume({ max_messages: 10, expires: 2_000 });
const giveUp = setTimeout(() => messages.stop(), 15_000);
console.log(`consumer "${CONSUMER}":`);
for await (const msg of messages) {
  await handle(msg);
  if (++deliveries === expectedDeliveries) break;
}
clearTimeout(giveUp);
messages.stop();

// --- What happened. ------------------------------------------------------------------
const rows = await client.execute("SELECT id, balance FROM accounts ORDER BY id");
const balances = Object.fromEntries(rows.rows.map((r) => [String(r.id), Number(r.balance)]));
const expected: Record<string, number> = {};
for (const p of payments) expected[p.account] = (expected[p.account] ?? 0) + p.amount;
const once = JSON.stringify(balances) === JSON.stringify(expected);
console.log(`${deliveries} deliveries of ${payments.length} payments; balances ${JSON.stringify(balances)}`);
console.log(once ? "each payment applied exactly once ✓" : `expected ${JSON.stringify(expected)} ✗`);
const inboxRows = await client.execute("SELECT count(*) AS n FROM outbox_inbox");
console.log(
  `inbox: ${inboxRows.rows[0]!.n} ids kept for ${inbox.keepMs / 86_400_000} days; cleanup() now deletes ${await inbox
    .cleanup()}`,
);

await jsm.consumers.delete(STREAM, CONSUMER).catch(() => {});
await jsm.streams.delete(STREAM).catch(() => {});
await nc.close();
client.close();
await rm(dir, { recursive: true, force: true });
if (!once) throw new Error("a payment was applied more or less than once");
