/**
 * The edge-CPU bench's Worker (bench/edge-cpu.mjs): one relay pass of the Turso path,
 * `outbox.tick()` over `libsqlStorage(createClient from "@libsql/client/web")`, with the
 * example's options (batchSize 100, budgetMs 5,000) and a no-op publisher, so the CPU
 * measured is the outbox's and the libSQL client's, not a broker client's.
 *
 * What an invocation does is picked by its name: the fetch path (`/tick`), or the cron
 * string of a scheduled event (`tick`), which carries no other parameter.
 * - `noop`: nothing; the cost of an invocation itself (the floor).
 * - `tick`: a tick with the client and outbox made once per isolate (module scope), so
 *   retention cleanup runs once a minute and the client is reused.
 * - `fresh`: a tick with a client and outbox made for this invocation and closed after
 *   it, as examples/cloudflare-turso does; a new outbox runs cleanup on its first tick,
 *   so every fresh tick sends one request more.
 *
 * The same file runs in Node and Bun (bench/edge-worker/host.ts) for the proxy figures.
 *
 * @module
 */

import { createClient } from "@libsql/client/web";
import { createOutbox, type TickReport } from "../../mod.ts";
import { libsqlStorage } from "../../adapters/libsql/mod.ts";

/** The Worker's bindings. */
export interface Env {
  /** `http://127.0.0.1:<port>` of the private sqld. */
  DB_URL: string;
  /** A JWT the sqld accepts, as Turso requires one. */
  DB_TOKEN: string;
}

interface Ctx {
  waitUntil(promise: Promise<unknown>): void;
}

export type Mode = "noop" | "http" | "select" | "tick" | "fresh";
const MODES: readonly string[] = ["noop", "http", "select", "tick", "fresh"];

// The example's relay options: small batches for a 10 ms CPU budget.
const BATCH_SIZE = 100;
const BUDGET_MS = 5_000;

function makeOutbox(env: Env) {
  const client = createClient({ url: env.DB_URL, authToken: env.DB_TOKEN });
  const outbox = createOutbox({ storage: libsqlStorage(client), publisher: () => {}, batchSize: BATCH_SIZE });
  return { client, outbox };
}

let shared: ReturnType<typeof makeOutbox> | undefined;

/** Runs one invocation's work; resolves with the tick's report, or null for `noop`. */
export async function run(mode: Mode, env: Env): Promise<TickReport | null> {
  if (mode === "noop") return null;
  if (mode === "http") {
    // One Hrana pipeline request by hand: the floor of any request to the database.
    const response = await fetch(`${env.DB_URL}/v2/pipeline`, {
      method: "POST",
      headers: { authorization: `Bearer ${env.DB_TOKEN}`, "content-type": "application/json" },
      body: '{"baton":null,"requests":[{"type":"execute","stmt":{"sql":"SELECT 1"}},{"type":"close"}]}',
    });
    await response.json();
    return null;
  }
  if (mode === "select") {
    shared ??= makeOutbox(env);
    await shared.client.execute("SELECT 1");
    return null;
  }
  if (mode === "tick") {
    shared ??= makeOutbox(env);
    return await shared.outbox.tick({ budgetMs: BUDGET_MS });
  }
  const { client, outbox } = makeOutbox(env);
  try {
    return await outbox.tick({ budgetMs: BUDGET_MS });
  } finally {
    client.close();
  }
}

function modeOf(name: string): Mode {
  if (!MODES.includes(name)) throw new Error(`Unknown mode ${JSON.stringify(name)} (noop, tick, fresh)`);
  return name as Mode;
}

export default {
  async fetch(request: Request, env: Env): Promise<Response> {
    const report = await run(modeOf(new URL(request.url).pathname.slice(1)), env);
    return new Response(JSON.stringify(report), { headers: { "content-type": "application/json" } });
  },

  scheduled(controller: { cron: string }, env: Env, ctx: Ctx): void {
    ctx.waitUntil(run(modeOf(controller.cron), env));
  },
};
