/**
 * A Cloudflare Worker with a transactional outbox.
 *
 * - `POST /orders` writes an order and its `orders.created` event in one atomic unit:
 *   on Turso/libSQL one `client.batch()` (the order's INSERT plus `outbox.statements()`),
 *   on Postgres one `sql.begin()` transaction over `cloudflare:sockets`.
 * - `scheduled()` (a cron trigger) runs one bounded relay pass,
 *   `ctx.waitUntil(outbox.tick({ budgetMs }))`, which POSTs each event to `PUBLISH_URL`
 *   with `webhookPublisher` from `@x/outbox/webhook` (fetch and Web Crypto, so it runs
 *   in workerd): Standard Webhooks headers, the message id as `webhook-id` (the
 *   receiver's dedup key), signed with `WEBHOOK_SECRET` when that secret is bound.
 *
 * Storage is chosen by the bindings: `TURSO_DATABASE_URL` (+ `TURSO_AUTH_TOKEN`) uses
 * `@libsql/client/web`; otherwise `DATABASE_URL` uses postgres.js, which connects through
 * `cloudflare:sockets` in workerd (needs the `nodejs_compat` flag).
 */

import { createClient } from "@libsql/client/web";
import postgres from "postgres";
import { createOutbox, type TickOptions, type TickReport } from "@x/outbox";
import { libsqlStorage } from "@x/outbox/libsql";
import { postgresStorage } from "@x/outbox/postgres";
import { webhookPublisher } from "@x/outbox/webhook";

/** The Worker's bindings (wrangler.toml `[vars]` and secrets). */
export interface Env {
  /** `libsql://…` or `https://…` of a Turso database, or `http://…` of a local sqld. */
  TURSO_DATABASE_URL?: string;
  TURSO_AUTH_TOKEN?: string;
  /** `postgres://…`, used when no Turso URL is bound. */
  DATABASE_URL?: string;
  /** Postgres schema of the outbox and orders tables (default `public`). */
  DATABASE_SCHEMA?: string;
  /** Where the relay POSTs each event (a webhook, a queue's HTTP ingest, …). */
  PUBLISH_URL: string;
  /** `whsec_…` secret shared with the receiver (`npx wrangler secret put WEBHOOK_SECRET`); unsigned without it. */
  WEBHOOK_SECRET?: string;
  /** Wall-clock budget of one scheduled tick, in ms (default 5,000). */
  TICK_BUDGET_MS?: string;
}

/** The part of the Workers `ExecutionContext` this Worker uses. */
interface Ctx {
  waitUntil(promise: Promise<unknown>): void;
}

interface Order {
  id: string;
  total: number;
}

/**
 * The relay's destination: one signed POST per event. 2xx is delivered; 408, 429, 5xx
 * and network errors are retried with back-off; other 4xx answers are dead at once.
 * The body is a small envelope (the receiver routes by topic), not the bare payload.
 */
function publisherFor(env: Env) {
  return webhookPublisher({
    url: env.PUBLISH_URL,
    secret: env.WEBHOOK_SECRET || undefined,
    // A scheduled tick has a wall-clock budget: a stuck receiver must not use it all.
    timeoutMs: 10_000,
    body: (message) =>
      JSON.stringify({ id: message.id, topic: message.topic, key: message.key, payload: message.payload }),
  });
}

/** A storage per request: Workers cannot share a connection between requests. */
interface Store {
  outbox: { tick(options?: TickOptions): Promise<TickReport> };
  /** Writes the order and its event atomically. */
  createOrder(order: Order): Promise<void>;
  close(): Promise<void>;
}

function openStore(env: Env): Store {
  const publisher = publisherFor(env);
  if (env.TURSO_DATABASE_URL) {
    const client = createClient({ url: env.TURSO_DATABASE_URL, authToken: env.TURSO_AUTH_TOKEN });
    // Small batches: a Workers invocation has a CPU budget (10 ms on the Free plan).
    const outbox = createOutbox({ storage: libsqlStorage(client), publisher, batchSize: 100 });
    return {
      outbox,
      async createOrder(order) {
        // One batch is one transaction on the server: the order and its event, or neither.
        await client.batch([
          { sql: "INSERT INTO orders (id, total) VALUES (?, ?)", args: [order.id, order.total] },
          ...outbox.statements({ topic: "orders.created", key: order.id, payload: order }),
        ], "write");
      },
      close: async () => client.close(),
    };
  }
  if (!env.DATABASE_URL) throw new Error("Bind TURSO_DATABASE_URL or DATABASE_URL");
  const schema = env.DATABASE_SCHEMA ?? "public";
  // One connection: a request's whole life is a few queries. Keep postgres.js's type
  // fetch on: the adapter's batch settle binds arrays, which need the array type oids.
  const sql = postgres(env.DATABASE_URL, { max: 1, onnotice: () => {} });
  const outbox = createOutbox({ storage: postgresStorage(sql, { schema }), publisher, batchSize: 100 });
  return {
    outbox,
    async createOrder(order) {
      await sql.begin(async (tx) => {
        await tx`INSERT INTO ${tx(schema)}.orders (id, total) VALUES (${order.id}, ${order.total})`;
        await outbox.enqueue(tx, { topic: "orders.created", key: order.id, payload: order });
      });
    },
    close: () => sql.end({ timeout: 5 }),
  };
}

/** Runs one relay pass within the budget and closes the connection; the scheduled handler's work. */
export async function relayOnce(env: Env): Promise<TickReport> {
  const store = openStore(env);
  try {
    return await store.outbox.tick({ budgetMs: Number(env.TICK_BUDGET_MS ?? 5_000) });
  } finally {
    await store.close();
  }
}

function json(value: unknown, status = 200): Response {
  return new Response(JSON.stringify(value), { status, headers: { "content-type": "application/json" } });
}

export default {
  async fetch(request: Request, env: Env, ctx: Ctx): Promise<Response> {
    const url = new URL(request.url);
    if (request.method === "POST" && url.pathname === "/orders") {
      const body = await request.json().catch(() => null) as Partial<Order> | null;
      const total = Number(body?.total);
      if (!body || !Number.isFinite(total)) return json({ error: 'Send {"total": number}' }, 400);
      const order: Order = { id: typeof body.id === "string" ? body.id : crypto.randomUUID(), total };
      const store = openStore(env);
      try {
        await store.createOrder(order);
      } finally {
        ctx.waitUntil(store.close());
      }
      return json(order, 201);
    }
    // A manual relay pass, handy with `wrangler dev` (cron triggers also have /__scheduled there).
    if (request.method === "POST" && url.pathname === "/tick") return json(await relayOnce(env));
    return json({ error: "Not found" }, 404);
  },

  scheduled(_controller: unknown, env: Env, ctx: Ctx): void {
    // The tick is bounded by its budget; waitUntil keeps the invocation alive until it settles.
    ctx.waitUntil(
      relayOnce(env).catch((error) => {
        console.error("outbox tick failed:", error);
        throw error;
      }),
    );
  },
};
