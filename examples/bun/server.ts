// Bun HTTP order service: npx bun examples/bun/server.ts
// (in your project: bun add @x/outbox @libsql/client @nats-io/transport-node @nats-io/jetstream)
//
// POST /orders {"total": 25, "id"?: "o-1"} writes the order and its orders.created event in
// one libSQL transaction; the relay (outbox.start()) publishes the event to NATS JetStream.
// A repeated id is refused (409) and, rolled back with its order, its event is never sent.
// GET /stats shows the outbox; /admin/ is the read-only dashboard and JSON API
// (@x/outbox/admin; put it behind your own authentication in production). Environment: PORT (default 3000; 0 picks a free one),
// DATABASE_URL (default file:orders.db), NATS_URL (default 127.0.0.1:4222), STREAM
// (default ORDERS), SUBJECT_PREFIX (default none, e.g. "shop." → shop.orders.created).
import { createClient } from "@libsql/client";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { createOutbox } from "@x/outbox";
import { createAdminHandler } from "@x/outbox/admin";
import { libsqlStorage } from "@x/outbox/libsql";
import { ensureStream, jetstreamPublisher } from "@x/outbox/nats";

const env = Bun.env;
const prefix = env.SUBJECT_PREFIX ?? "";
const client = createClient({ url: env.DATABASE_URL ?? "file:orders.db" });
const nc = await connect({ servers: env.NATS_URL ?? "127.0.0.1:4222" });
const outbox = createOutbox({
  storage: libsqlStorage(client),
  publisher: jetstreamPublisher(jetstream(nc), { subjectPrefix: prefix }),
  onError: (error, context) => console.error("outbox:", context, error),
});
await outbox.setup();
await client.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, total REAL NOT NULL)");
await ensureStream(await jetstreamManager(nc), {
  name: env.STREAM ?? "ORDERS",
  subjects: [`${prefix}orders.>`],
  outbox,
});

// Read-only: it shows counts, topics and dead messages but cannot requeue or purge.
const admin = createAdminHandler(outbox, { basePath: "/admin" });

// The relay: ticks until stopped, backing off to maxIdleMs when there is nothing to do.
const relay = outbox.start({ maxIdleMs: 250 });

async function createOrder(request: Request): Promise<Response> {
  const body = await request.json().catch(() => null) as { id?: unknown; total?: unknown } | null;
  const total = Number(body?.total);
  if (!body || !Number.isFinite(total)) return Response.json({ error: 'Send {"total": number}' }, { status: 400 });
  const id = typeof body.id === "string" ? body.id : `o-${crypto.randomUUID()}`;
  const tx = await client.transaction("write");
  try {
    await tx.execute({ sql: "INSERT INTO orders (id, total) VALUES (?, ?)", args: [id, total] });
    await outbox.enqueue(tx, { topic: "orders.created", key: id, payload: { id, total } });
    await tx.commit();
  } catch (error) {
    // Not committed: neither the order nor its event exists.
    if (/UNIQUE|PRIMARY KEY/i.test(String(error))) {
      return Response.json({ error: `Order ${id} exists` }, { status: 409 });
    }
    throw error;
  } finally {
    tx.close();
  }
  return Response.json({ id, total }, { status: 201 });
}

const server = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(env.PORT ?? 3000),
  async fetch(request) {
    const { pathname } = new URL(request.url);
    if (request.method === "POST" && pathname === "/orders") return createOrder(request);
    if (request.method === "GET" && pathname === "/stats") return Response.json(await outbox.stats());
    if (pathname === "/admin" || pathname.startsWith("/admin/")) return admin(request);
    return Response.json({ error: "Not found" }, { status: 404 });
  },
});
console.log(`listening on http://127.0.0.1:${server.port}`);

async function shutdown() {
  server.stop();
  await relay.stop(); // finishes or releases the batch in flight
  await nc.drain();
  client.close();
  process.exit(0);
}
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);
