/**
 * Enqueue overhead: a business transaction that inserts one order row and one outbox
 * message, through `outbox.enqueue` and through a hand-written INSERT of the same row
 * (what a user would write without the library: a random UUID, `JSON.stringify` of
 * the payload, the table's columns), on Postgres (postgres.js) and libSQL (embedded).
 * The target of issue 13 is enqueue ≤ 1.1× the hand-written insert in the same form;
 * the order-only transaction is kept for context. Variants run in alternating blocks,
 * one transaction at a time; a ratio is the median over blocks of the two variants'
 * times in the same block.
 *
 * Every statement is prepared, as a tagged template (tx`insert …`) is.
 *
 * Postgres forms:
 * - sequential: `sql.begin(async (tx) => { await tx\`insert order\`; await outbox.enqueue(tx, m) })`
 * - pipelined: `sql.begin((tx) => Promise.all([tx\`insert order\`, outbox.enqueue(tx, m)]))`
 *   (postgres.js sends both before the first answer comes back)
 * - sequential with `notify: false` (no pg_notify at commit)
 * libSQL forms:
 * - sequential in `client.transaction("write")`
 * - batch: `client.batch([insert order, ...outbox.statements(m)], "write")`
 *
 * `npx bun bench/enqueue.ts [blocks] [perBlock]` runs it alone.
 *
 * @module
 */

import type { InStatement, Transaction } from "@libsql/client";
import { createOutbox } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../adapters/postgres/mod.ts";
import { g, libsql, median, payload, pg } from "./lib.ts";

type Variant = { name: string; run: (i: number) => Promise<unknown> };

async function timeBlock(v: Variant, start: number, count: number): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < count; i++) await v.run(start + i);
  return ((performance.now() - t0) * 1000) / count; // µs per transaction
}

let seq = 0;
/**
 * Alternating blocks; returns µs/tx medians and, for each pair [a, b], the median over
 * blocks of a's time / b's time in the same block.
 */
async function interleave(variants: Variant[], pairs: [string, string][], blocks: number, perBlock: number) {
  const us: Record<string, number[]> = {};
  const ratios: Record<string, number[]> = {};
  for (const v of variants) await timeBlock(v, seq += perBlock, Math.min(50, perBlock)); // warm-up
  for (let b = 0; b < blocks; b++) {
    // Rotate the order so no variant always runs first.
    const order = variants.map((_, j) => variants[(j + b) % variants.length]!);
    const t: Record<string, number> = {};
    for (const v of order) {
      t[v.name] = await timeBlock(v, seq += perBlock, perBlock);
      (us[v.name] ??= []).push(t[v.name]!);
    }
    for (const [a, z] of pairs) (ratios[`${a}/${z}`] ??= []).push(t[a]! / t[z]!);
  }
  return {
    usPerTx: Object.fromEntries(Object.entries(us).map(([k, xs]) => [k, median(xs)])),
    ratio: Object.fromEntries(Object.entries(ratios).map(([k, xs]) => [k, median(xs)])),
  };
}

/** The ratio keys `runEnqueue` reports: enqueue / hand-written insert, and both / order only. */
export const ENQUEUE_PAIRS: [string, string][] = [
  ["pg_seq", "pg_hand_seq"],
  ["pg_pipe", "pg_hand_pipe"],
  ["pg_seq_nonotify", "pg_hand_seq"],
  ["pg_hand_seq", "pg_order"],
  ["pg_seq", "pg_order"],
  ["libsql_seq", "libsql_hand_seq"],
  ["libsql_hand_seq", "libsql_order"],
  ["libsql_seq", "libsql_order"],
  ["libsql_batch", "libsql_batch_hand"],
  ["libsql_batch_hand", "libsql_batch_order"],
  ["libsql_batch", "libsql_batch_order"],
];

export async function runEnqueue(options: { blocks: number; perBlock: number }) {
  const tag = Date.now().toString(36);
  const order = (i: number) => ({
    id: `o-${tag}-${i}`,
    customer: "customer-4711",
    total: 12_345,
    created_at: Date.now(),
  });
  const m = (i: number) => ({ topic: "orders.created", key: `o-${tag}-${i}`, payload: payload(i) });
  const pairs = (prefix: string) => ENQUEUE_PAIRS.filter(([a]) => a.startsWith(prefix));

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
  const ins = (tx: PostgresTx, i: number) => {
    const o = order(i);
    return tx.unsafe(`INSERT INTO "${schema}".orders (id, customer, total, created_at) VALUES ($1, $2, $3, $4)`, [
      o.id,
      o.customer,
      o.total,
      o.created_at,
    ], { prepare: true });
  };
  const hand = (tx: PostgresTx, i: number) => {
    const msg = m(i);
    const now = Date.now();
    return tx.unsafe(
      `INSERT INTO "${schema}".outbox (id, topic, key, payload, available_at, created_at) VALUES ($1, $2, $3, $4::json, $5, $5)`,
      [crypto.randomUUID(), msg.topic, msg.key, JSON.stringify(msg.payload), now],
      { prepare: true },
    );
  };
  const begin = (f: (tx: PostgresTx) => unknown) => sql.begin(f as never);
  let pgRes;
  try {
    pgRes = await interleave(
      [
        { name: "pg_order", run: (i) => begin((tx) => ins(tx, i)) },
        {
          name: "pg_hand_seq",
          run: (i) =>
            begin(async (tx) => {
              await ins(tx, i);
              await hand(tx, i);
            }),
        },
        {
          name: "pg_seq",
          run: (i) =>
            begin(async (tx) => {
              await ins(tx, i);
              await notifying.enqueue(tx, m(i));
            }),
        },
        { name: "pg_hand_pipe", run: (i) => begin((tx) => Promise.all([ins(tx, i), hand(tx, i)])) },
        { name: "pg_pipe", run: (i) => begin((tx) => Promise.all([ins(tx, i), notifying.enqueue(tx, m(i))])) },
        {
          name: "pg_seq_nonotify",
          run: (i) =>
            begin(async (tx) => {
              await ins(tx, i);
              await quiet.enqueue(tx, m(i));
            }),
        },
      ],
      pairs("pg_"),
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
  const lins = (i: number): InStatement => {
    const o = order(i);
    return {
      sql: "INSERT INTO orders (id, customer, total, created_at) VALUES (?, ?, ?, ?)",
      args: [o.id, o.customer, o.total, o.created_at],
    };
  };
  const lhand = (i: number): InStatement => {
    const msg = m(i);
    const now = Date.now();
    return {
      sql: "INSERT INTO outbox (id, topic, key, payload, status, attempts, available_at, created_at) " +
        "VALUES (?, ?, ?, ?, 'pending', 0, ?, ?)",
      args: [crypto.randomUUID(), msg.topic, msg.key, JSON.stringify(msg.payload), now, now],
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
        { name: "libsql_order", run: (i) => inTx((tx) => tx.execute(lins(i))) },
        {
          name: "libsql_hand_seq",
          run: (i) =>
            inTx(async (tx) => {
              await tx.execute(lins(i));
              await tx.execute(lhand(i));
            }),
        },
        {
          name: "libsql_seq",
          run: (i) =>
            inTx(async (tx) => {
              await tx.execute(lins(i));
              await outbox.enqueue(tx, m(i));
            }),
        },
        { name: "libsql_batch_order", run: (i) => client.batch([lins(i)], "write") },
        { name: "libsql_batch_hand", run: (i) => client.batch([lins(i), lhand(i)], "write") },
        { name: "libsql_batch", run: (i) => client.batch([lins(i), ...outbox.statements(m(i))], "write") },
      ],
      pairs("libsql_"),
      options.blocks,
      options.perBlock,
    );
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

if ((import.meta as { main?: boolean }).main) {
  const args: string[] = g.Deno ? [...g.Deno.args] : (g.process?.argv ?? []).slice(2);
  const res = await runEnqueue({ blocks: Number(args[0] ?? 7), perBlock: Number(args[1] ?? 300) });
  for (const [k, v] of Object.entries(res.usPerTx)) console.log(`${k.padEnd(22)} ${v.toFixed(1)} µs/tx`);
  for (const [k, v] of Object.entries(res.ratio)) console.log(`${k.padEnd(36)} ${v.toFixed(3)}`);
}
