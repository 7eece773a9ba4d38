// Deno cron relay: npx deno run -A --unstable-cron examples/deno-cron/main.ts
// (in your project: deno add jsr:@x/outbox npm:@libsql/client; on Deno Deploy, Deno.cron
// needs no flag). OUTBOX_DB_URL picks the database (default file:example.db).
//
// Deno.cron runs `relayHandler` every minute; each run is one bounded tick(): claim,
// publish, settle, then return. Overlapping runs (a slow tick, several instances) are
// safe: claims are leases, so no message is published by two runs at once.
//
// Checking it: a cron relay that stops running fails silently, so alert on the age of the
// oldest pending message. The CLI exits 1 when it is older than --max-age (a health
// check for a container, or a step in your monitoring):
//   OUTBOX_URL=file:example.db deno run -A jsr:@x/outbox/cli status --max-age 5m
//   (Turso: OUTBOX_URL=libsql://… OUTBOX_AUTH_TOKEN=…; from this repository:
//   npx deno run -A cli/mod.ts status --url file:example.db --max-age 5m)
// With runs every minute, 5m leaves room for a slow run and a few failed publishes.
import { createClient } from "@libsql/client";
import { createOutbox, type Publisher, type PublishFunction, type TickReport } from "@x/outbox";
import { libsqlStorage } from "@x/outbox/libsql";

/** Every minute, the shortest interval Deno.cron takes. */
export const RELAY_SCHEDULE = "* * * * *";

/** What {@link createRelay} needs: the database and where events go. */
export interface RelayOptions {
  /** A libSQL URL: `file:…`, `libsql://…` (Turso) or `http://…` (sqld). */
  url: string;
  authToken?: string;
  /** Default: print each event. */
  publisher?: Publisher | PublishFunction;
  /** Wall-clock budget of one run (default 50 s: done before the next minute's run). */
  budgetMs?: number;
}

/** An outbox on libSQL, and the handler Deno.cron calls. */
export async function createRelay(options: RelayOptions) {
  const client = createClient({ url: options.url, authToken: options.authToken });
  const outbox = createOutbox({
    storage: libsqlStorage(client),
    publisher: options.publisher ??
      ((message) => console.log("published", message.topic, message.key, message.payload)),
  });
  await outbox.setup();
  await client.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, total REAL NOT NULL)");
  /** The cron handler: one relay pass within the budget. */
  const relayHandler = async (): Promise<TickReport> => {
    const report = await outbox.tick({ budgetMs: options.budgetMs ?? 50_000 });
    if (report.claimed > 0) {
      console.log(`relay: published ${report.published} of ${report.claimed} in ${report.durationMs} ms`);
    }
    return report;
  };
  return { client, outbox, relayHandler };
}

/** Writes an order and its event in one transaction, as a request handler would. */
export async function placeOrder(relay: Awaited<ReturnType<typeof createRelay>>, total: number): Promise<string> {
  const id = `o-${crypto.randomUUID().slice(0, 8)}`;
  const tx = await relay.client.transaction("write");
  try {
    await tx.execute({ sql: "INSERT INTO orders (id, total) VALUES (?, ?)", args: [id, total] });
    await relay.outbox.enqueue(tx, { topic: "orders.created", key: id, payload: { id, total } });
    await tx.commit();
  } finally {
    tx.close();
  }
  return id;
}

if (import.meta.main) {
  const relay = await createRelay({
    url: Deno.env.get("OUTBOX_DB_URL") ?? "file:example.db",
    authToken: Deno.env.get("OUTBOX_DB_AUTH_TOKEN"),
  });
  console.log("placed order", await placeOrder(relay, 25));
  Deno.cron("outbox relay", RELAY_SCHEDULE, async () => {
    await relay.relayHandler();
  });
  console.log(`relay scheduled (${RELAY_SCHEDULE}); the first run publishes the order within a minute. Ctrl-C stops.`);
}
