// Node 20+ HTTP order service, plain JavaScript on the npm build:
//   npm run build && node examples/node/server.mjs
// (in your project: npm install @x/outbox postgres @nats-io/transport-node @nats-io/jetstream)
//
// POST /orders {"total": 25, "id"?: "o-1"} writes the order and its orders.created event in
// one Postgres transaction; the relay (outbox.start(), woken by LISTEN/NOTIFY) publishes
// the event to NATS JetStream. A repeated id is refused (409) and, rolled back with its
// order, its event is never sent. GET /stats shows the outbox; /admin/ is the read-only
// dashboard and JSON API (@x/outbox/admin; put it behind your own authentication in
// production). Environment: PORT (default
// 3000; 0 picks a free one), DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test),
// DATABASE_SCHEMA (default public), NATS_URL (default 127.0.0.1:4222), STREAM (default
// ORDERS), SUBJECT_PREFIX (default none, e.g. "shop." → shop.orders.created).
import { createServer } from "node:http";
import { Readable } from "node:stream";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import postgres from "postgres";
import { createOutbox } from "@x/outbox";
import { createAdminHandler } from "@x/outbox/admin";
import { ensureStream, jetstreamPublisher } from "@x/outbox/nats";
import { postgresStorage } from "@x/outbox/postgres";

const env = process.env;
const prefix = env.SUBJECT_PREFIX ?? "";
const schema = env.DATABASE_SCHEMA ?? "public";
const sql = postgres(env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test", { onnotice: () => {} });
const nc = await connect({ servers: env.NATS_URL ?? "127.0.0.1:4222" });
const outbox = createOutbox({
  storage: postgresStorage(sql, { schema }),
  publisher: jetstreamPublisher(jetstream(nc), { subjectPrefix: prefix }),
  onError: (error, context) => console.error("outbox:", context, error),
});
await outbox.setup(); // creates the schema too
await sql`CREATE TABLE IF NOT EXISTS ${sql(schema)}.orders (id text PRIMARY KEY, total numeric NOT NULL)`;
await ensureStream(await jetstreamManager(nc), {
  name: env.STREAM ?? "ORDERS",
  subjects: [`${prefix}orders.>`],
  outbox,
});

// Read-only: it shows counts, topics and dead messages but cannot requeue or purge.
const admin = createAdminHandler(outbox, { basePath: "/admin" });

/** node:http → Web Request → the admin handler → node:http response. */
async function serveAdmin(request, response, url) {
  const headers = new Headers();
  for (const [name, value] of Object.entries(request.headers)) {
    if (value !== undefined) headers.set(name, Array.isArray(value) ? value.join(", ") : value);
  }
  const body = request.method === "GET" || request.method === "HEAD" ? undefined : Readable.toWeb(request);
  const answer = await admin(new Request(url, { method: request.method, headers, body, duplex: "half" }));
  response.writeHead(answer.status, Object.fromEntries(answer.headers));
  response.end(Buffer.from(await answer.arrayBuffer()));
}

// The relay: LISTENs for enqueues, polls as a backstop, until stopped.
const relay = outbox.start({ maxIdleMs: 1_000 });

function send(response, status, value) {
  response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(value));
}

async function readJson(request) {
  let text = "";
  for await (const chunk of request) text += chunk;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function createOrder(request, response) {
  const body = await readJson(request);
  const total = Number(body?.total);
  if (!body || !Number.isFinite(total)) return send(response, 400, { error: 'Send {"total": number}' });
  const id = typeof body.id === "string" ? body.id : `o-${crypto.randomUUID()}`;
  try {
    await sql.begin(async (tx) => {
      await tx`INSERT INTO ${tx(schema)}.orders (id, total) VALUES (${id}, ${total})`;
      await outbox.enqueue(tx, { topic: "orders.created", key: id, payload: { id, total } });
    });
  } catch (error) {
    // Rolled back: neither the order nor its event exists.
    if (error?.code === "23505") return send(response, 409, { error: `Order ${id} exists` });
    throw error;
  }
  send(response, 201, { id, total });
}

const server = createServer((request, response) => {
  const url = new URL(request.url ?? "/", `http://${request.headers.host ?? "localhost"}`);
  const { pathname } = url;
  const handle = pathname === "/admin" || pathname.startsWith("/admin/")
    ? serveAdmin(request, response, url)
    : request.method === "POST" && pathname === "/orders"
    ? createOrder(request, response)
    : request.method === "GET" && pathname === "/stats"
    ? outbox.stats().then((stats) => send(response, 200, stats))
    : Promise.resolve(send(response, 404, { error: "Not found" }));
  handle.catch((error) => {
    console.error(error);
    if (!response.headersSent) send(response, 500, { error: "Internal error" });
  });
});
server.listen(Number(env.PORT ?? 3000), "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});

async function shutdown() {
  server.close();
  await relay.stop(); // finishes or releases the batch in flight
  await nc.drain();
  await sql.end();
  process.exit(0);
}
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);
