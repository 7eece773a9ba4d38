/**
 * Relay throughput from Postgres into the memory publisher: a backlog of N messages
 * (~150-byte JSON), drained by one relay with tick(), for unkeyed traffic, 16 keys and
 * 10,000 keys; next to the raw claim+delete rate of the same table (the storage's
 * ceiling), measured interleaved in the same run.
 *
 *   bun bench/relay-postgres.ts [--messages=20000] [--repeats=3] [--batch=500]
 *
 * @module
 */

import postgres from "postgres";
import { createOutbox, memoryPublisher } from "../mod.ts";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../adapters/postgres/mod.ts";

// deno-lint-ignore no-explicit-any
const g = globalThis as any;
const args: string[] = g.Deno ? [...g.Deno.args] : (g.process?.argv ?? []).slice(2);
const opt = (name: string, fallback: number) =>
  Number(args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback);

/** One measured drain. */
export interface PgCase {
  keys: number;
  mode: "relay" | "raw";
  msgsPerSec: number;
}

const payload = (i: number) => ({
  orderId: `order-${i.toString().padStart(8, "0")}`,
  customer: "customer-4711",
  total: 12_345,
  currency: "EUR",
  items: [{ sku: "sku-1", qty: 2 }, { sku: "sku-2", qty: 1 }],
});

async function fill(sql: postgres.Sql, schema: string, messages: number, keys: number) {
  const outbox = createOutbox({
    storage: postgresStorage(sql as unknown as PostgresSql, { schema, notify: false }),
    publisher: () => {},
  });
  await sql.unsafe(`TRUNCATE "${schema}".outbox`);
  for (let start = 0; start < messages; start += 1_000) {
    const batch = Array.from({ length: Math.min(1_000, messages - start) }, (_, j) => {
      const i = start + j;
      return { topic: "orders.created", key: keys === 0 ? null : `key-${i % keys}`, payload: payload(i) };
    });
    await sql.begin((tx) => outbox.enqueue(tx as unknown as PostgresTx, batch));
  }
  await sql.unsafe(`VACUUM ANALYZE "${schema}".outbox`);
}

async function drainRelay(sql: postgres.Sql, schema: string, messages: number, batchSize: number): Promise<number> {
  const publisher = memoryPublisher();
  const outbox = createOutbox({
    storage: postgresStorage(sql as unknown as PostgresSql, { schema }),
    publisher,
    batchSize,
    concurrency: 64,
  });
  const started = performance.now();
  while (publisher.messages.length < messages) {
    await outbox.tick({ budgetMs: 60_000 });
  }
  return messages / ((performance.now() - started) / 1000);
}

async function drainRaw(sql: postgres.Sql, schema: string, messages: number, batchSize: number): Promise<number> {
  // The storage alone: claim a batch, settle it all as published (deleted). No publishing.
  const storage = postgresStorage(sql as unknown as PostgresSql, { schema });
  let done = 0;
  let claims = 0;
  const started = performance.now();
  while (done < messages) {
    const now = Date.now();
    const token = `raw:${claims++}`;
    const rows = await storage.claim({ token, now, lockedUntil: now + 30_000, limit: batchSize });
    await storage.settle({
      token,
      now,
      deletePublished: true,
      settlements: rows.map((r) => ({ seq: r.seq, outcome: "published" as const })),
    });
    done += rows.length;
  }
  return messages / ((performance.now() - started) / 1000);
}

/** Runs the Postgres relay benchmark; returns every measured case. */
export async function runPostgresBench(
  options: { messages?: number; repeats?: number; batchSize?: number; url?: string } = {},
) {
  const messages = options.messages ?? opt("messages", 20_000);
  const repeats = options.repeats ?? opt("repeats", 3);
  const batchSize = options.batchSize ?? opt("batch", 500);
  const url = options.url ?? g.process?.env?.OUTBOX_BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";
  const sql = postgres(url, { max: 4, onnotice: () => {} });
  const schema = `bench_${Date.now().toString(36)}`;
  const cases: PgCase[] = [];
  try {
    await postgresStorage(sql as unknown as PostgresSql, { schema }).setup();
    for (let r = 0; r < repeats; r++) {
      for (const keys of [0, 16, 10_000]) {
        // Interleaved: the relay and the raw storage loop take turns on the same data shape.
        await fill(sql, schema, messages, keys);
        cases.push({ keys, mode: "relay", msgsPerSec: await drainRelay(sql, schema, messages, batchSize) });
        await fill(sql, schema, messages, keys);
        cases.push({ keys, mode: "raw", msgsPerSec: await drainRaw(sql, schema, messages, batchSize) });
      }
    }
  } finally {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await sql.end({ timeout: 1 });
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const summary = [0, 16, 10_000].map((keys) => {
    const relay = median(cases.filter((c) => c.keys === keys && c.mode === "relay").map((c) => c.msgsPerSec));
    const raw = median(cases.filter((c) => c.keys === keys && c.mode === "raw").map((c) => c.msgsPerSec));
    return { keys, relay, raw, ratio: relay / raw };
  });
  return { messages, repeats, batchSize, cases, summary };
}

if (import.meta.main ?? (g.process?.argv?.[1] && import.meta.url.endsWith(g.process.argv[1]))) {
  const result = await runPostgresBench();
  console.log(
    `Postgres → memory publisher, ${result.messages} messages, batchSize ${result.batchSize}, median of ${result.repeats}`,
  );
  console.log("keys      relay msg/s   raw claim+delete msg/s   relay/raw");
  for (const s of result.summary) {
    console.log(
      `${String(s.keys === 0 ? "none" : s.keys).padEnd(9)} ${Math.round(s.relay).toString().padStart(11)}   ${
        Math.round(s.raw).toString().padStart(22)
      }   ${s.ratio.toFixed(2)}`,
    );
  }
  console.log(JSON.stringify(Object.fromEntries(result.summary.flatMap((s) => {
    const k = s.keys === 0 ? "unkeyed" : `${s.keys}keys`;
    return [[`pg_${k}_msgs_per_s`, Math.round(s.relay)], [`pg_${k}_vs_raw_claim`, Number(s.ratio.toFixed(2))]];
  }))));
}
