/**
 * Enqueue overhead: a business transaction that inserts one order row, without and
 * with one outbox message, on Postgres (postgres.js) and libSQL (embedded). Variants
 * run in alternating blocks, one transaction at a time; the ratio of each block to the
 * baseline block next to it is the figure (median over blocks).
 *
 * The order insert is a prepared statement, as a tagged template (tx`insert …`) is.
 *
 * Postgres forms:
 * - baseline: `sql.begin(async (tx) => { await tx\`insert order\` })`
 * - sequential: `… await tx\`insert order\`; await outbox.enqueue(tx, m)`
 * - pipelined: `sql.begin((tx) => Promise.all([tx\`insert order\`, outbox.enqueue(tx, m)]))`
 *   (postgres.js sends both before the first answer comes back)
 * - sequential with `notify: false` (no pg_notify at commit)
 * libSQL forms:
 * - baseline / sequential in `client.transaction("write")`
 * - batch: `client.batch([insert order, ...outbox.statements(m)], "write")` vs `client.batch([insert order], "write")`
 *
 * @module
 */

import type { Transaction } from "@libsql/client";
import { createOutbox } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../adapters/postgres/mod.ts";
import { libsql, median, payload, pg } from "./lib.ts";

type Variant = { name: string; run: (i: number) => Promise<unknown> };

async function timeBlock(v: Variant, start: number, count: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < count; i++) await v.run(start + i);
  return ((performance.now() - t0) * 1000) / count; // µs per transaction
}

/** Alternating blocks; returns µs/tx medians and per-block ratios to the baseline (variant 0). */
let i = 0;
async function interleave(variants: Variant[], blocks: number, perBlock: number) {
  const us: Record<string, number[]> = {};
  const ratios: Record<string, number[]> = {};
  for (const v of variants) await timeBlock(v, i += perBlock, Math.min(50, perBlock)); // warm-up
  for (let b = 0; b < blocks; b++) {
    // Rotate the order so no variant always runs first.
    const order = variants.map((_, j) => variants[(j + b) % variants.length]!);
    const t: Record<string, number> = {};
    for (const v of order) {
      t[v.name] = await timeBlock(v, i += perBlock, perBlock);
      (us[v.name] ??= []).push(t[v.name]!);
    }
    for (const v of variants.slice(1)) (ratios[v.name] ??= []).push(t[v.name]! / t[variants[0]!.name]!);
  }
  return {
    usPerTx: Object.fromEntries(Object.entries(us).map(([k, xs]) => [k, median(xs)])),
    ratio: Object.fromEntries(Object.entries(ratios).map(([k, xs]) => [k, median(xs)])),
  };
}

export async function runEnqueue(options: { blocks: number; perBlock: number }) {
  const tag = Date.now().toString(36);
  // Postgres
  const sql = pg({ max: 1 });
  const schema = `benchenq_${tag}`;
  const notifying = createOutbox({
    storage: postgresStorage(sql as unknown as PostgresSql, { schema }),
    publisher: () => {},
  });
  const quiet = createOutbox({
    storage: postgresStorage(sql as unknown as PostgresSql, { schema, notify: false }),
    publisher: () => {},
  });
  await notifying.setup();
  await sql.unsafe(
    `CREATE TABLE "${schema}".orders (id text PRIMARY KEY, customer text NOT NULL, total integer NOT NULL, created_at bigint NOT NULL)`,
  );
  const order = (i: number) => ({
    id: `o-${tag}-${i}`,
    customer: "customer-4711",
    total: 12_345,
    created_at: Date.now(),
  });
  const m = (i: number) => ({ topic: "orders.created", key: `o-${tag}-${i}`, payload: payload(i) });
  const ins = (tx: PostgresTx, i: number) => {
    const o = order(i);
    return tx.unsafe(`INSERT INTO "${schema}".orders (id, customer, total, created_at) VALUES ($1, $2, $3, $4)`, [
      o.id,
      o.customer,
      o.total,
      o.created_at,
    ], { prepare: true });
  };
  const begin = (f: (tx: PostgresTx) => unknown) => sql.begin(f as never);
  let pgRes;
  try {
    pgRes = await interleave(
      [
        {
          name: "pg_baseline",
          run: (i) =>
            begin(async (tx) => {
              await ins(tx, i);
            }),
        },
        {
          name: "pg_sequential",
          run: (i) =>
            begin(async (tx) => {
              await ins(tx, i);
              await notifying.enqueue(tx, m(i));
            }),
        },
        { name: "pg_pipelined", run: (i) => begin((tx) => Promise.all([ins(tx, i), notifying.enqueue(tx, m(i))])) },
        {
          name: "pg_sequential_nonotify",
          run: (i) =>
            begin(async (tx) => {
              await ins(tx, i);
              await quiet.enqueue(tx, m(i));
            }),
        },
      ],
      options.blocks,
      options.perBlock,
    );
  } finally {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await sql.end({ timeout: 1 });
  }
  // libSQL
  const db = await libsql();
  const client = db.client;
  const outbox = createOutbox({ storage: libsqlStorage(client), publisher: () => {} });
  await outbox.setup();
  await client.execute(
    "CREATE TABLE orders (id TEXT PRIMARY KEY, customer TEXT NOT NULL, total INTEGER NOT NULL, created_at INTEGER NOT NULL)",
  );
  const lins = (i: number) => {
    const o = order(i);
    return {
      sql: "INSERT INTO orders (id, customer, total, created_at) VALUES (?, ?, ?, ?)",
      args: [o.id, o.customer, o.total, o.created_at],
    };
  };
  const inTx = async (f: (tx: Transaction) => Promise<unknown>) => {
    const tx = await client.transaction("write");
    try {
      await f(tx);
      await tx.commit();
    } finally {
      tx.close();
    }
  };
  let liteRes;
  try {
    liteRes = await interleave(
      [
        { name: "libsql_baseline", run: (i) => inTx((tx) => tx.execute(lins(i))) },
        {
          name: "libsql_sequential",
          run: (i) =>
            inTx(async (tx) => {
              await tx.execute(lins(i));
              await outbox.enqueue(tx, m(i));
            }),
        },
      ],
      options.blocks,
      options.perBlock,
    );
    const batch = await interleave(
      [
        { name: "libsql_batch_baseline", run: (i) => client.batch([lins(i)], "write") },
        { name: "libsql_batch", run: (i) => client.batch([lins(i), ...outbox.statements(m(i))], "write") },
      ],
      options.blocks,
      options.perBlock,
    );
    liteRes = { usPerTx: { ...liteRes.usPerTx, ...batch.usPerTx }, ratio: { ...liteRes.ratio, ...batch.ratio } };
  } finally {
    db.close();
  }
  return {
    blocks: options.blocks,
    perBlock: options.perBlock,
    usPerTx: { ...pgRes.usPerTx, ...liteRes.usPerTx },
    ratio: { ...pgRes.ratio, ...liteRes.ratio },
  };
}
