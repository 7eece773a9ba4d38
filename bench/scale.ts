/**
 * Scale (Postgres): does the relay slow down as the backlog grows? A backlog of
 * `small` rows and one of `large` rows (10k and 1M in a full run) are written with one
 * INSERT … SELECT generate_series (the adapter's row format), then drained by tick()
 * into a no-op publisher so only the storage shows. Reported: the median time of a
 * tick of one default batch (100 rows) over the first ticks, the drain rate over the
 * first `probe` messages at batchSize 1,000, then the whole large backlog drained with
 * default retention (published rows deleted at once) and the table's size before,
 * right after, and after a plain VACUUM (what autovacuum would do).
 *
 * @module
 */

import type postgres from "postgres";
import { createOutbox } from "../mod.ts";
import { type PostgresSql, postgresStorage } from "../adapters/postgres/mod.ts";
import { log, median, pg } from "./lib.ts";

async function fillSeries(sql: postgres.Sql, schema: string, rows: number, truncate = true, prefix = "scale") {
  if (truncate) await sql.unsafe(`TRUNCATE "${schema}".outbox`);
  const now = Date.now() - 1_000;
  for (let s = 0; s < rows; s += 250_000) {
    const n = Math.min(250_000, rows - s);
    await sql.unsafe(
      `INSERT INTO "${schema}".outbox (id, topic, key, payload, status, attempts, available_at, created_at)
       SELECT $4 || '-' || g, 'orders.created', NULL,
         json_build_object('orderId', 'order-' || lpad(g::text, 8, '0'), 'customer', 'customer-4711', 'total', 12345, 'currency', 'EUR',
           'items', json_build_array(json_build_object('sku', 'sku-1', 'qty', 2), json_build_object('sku', 'sku-2', 'qty', 1))),
         'pending', 0, $1::bigint, $1::bigint
       FROM generate_series($2::int, $3::int) AS g`,
      [now, s, s + n - 1, prefix],
    );
  }
  if (truncate) await sql.unsafe(`VACUUM ANALYZE "${schema}".outbox`);
}

const size = async (sql: postgres.Sql, schema: string) =>
  Number((await sql.unsafe(`SELECT pg_total_relation_size('"${schema}".outbox')::bigint AS b`))[0]!.b);

export interface ScaleCase {
  backlog: number;
  tickMsMedian: number;
  drainRate: number;
}

async function measure(
  sql: postgres.Sql,
  schema: string,
  backlog: number,
  ticks: number,
  probe: number,
): Promise<ScaleCase> {
  await fillSeries(sql, schema, backlog);
  const storage = postgresStorage(sql as unknown as PostgresSql, { schema, notify: false });
  const small = createOutbox({ storage, publisher: () => {}, batchSize: 100 });
  const times: number[] = [];
  for (let i = 0; i < ticks; i++) {
    const t = performance.now();
    await small.tick({ maxBatches: 1 });
    times.push(performance.now() - t);
  }
  const big = createOutbox({ storage, publisher: () => {}, batchSize: 1_000 });
  let done = 0;
  const target = Math.min(probe, backlog - ticks * 100);
  const t0 = performance.now();
  while (done < target) {
    const r = await big.tick({ maxBatches: 1 });
    if (r.claimed === 0) break;
    done += r.published;
  }
  return { backlog, tickMsMedian: median(times), drainRate: done / ((performance.now() - t0) / 1000) };
}

export async function runScale(options: { small: number; large: number; ticks: number; probe: number }) {
  const sql = pg({ max: 2 });
  const schema = `benchscale_${Date.now().toString(36)}`;
  await postgresStorage(sql as unknown as PostgresSql, { schema }).setup();
  try {
    const smallCase = await measure(sql, schema, options.small, options.ticks, options.probe);
    log(`  scale ${JSON.stringify(smallCase)}`);
    const largeCase = await measure(sql, schema, options.large, options.ticks, options.probe);
    log(`  scale ${JSON.stringify(largeCase)}`);
    // The large backlog is refilled and drained in full, default retention.
    await fillSeries(sql, schema, options.large);
    const sizeFull = await size(sql, schema);
    const outbox = createOutbox({
      storage: postgresStorage(sql as unknown as PostgresSql, { schema, notify: false }),
      publisher: () => {},
      batchSize: 1_000,
    });
    const t0 = performance.now();
    let published = 0;
    for (;;) {
      const r = await outbox.tick({ budgetMs: 600_000 });
      published += r.published;
      if (r.claimed === 0) break;
    }
    const fullDrainRate = published / ((performance.now() - t0) / 1000);
    const rowsLeft = Number((await sql.unsafe(`SELECT count(*)::int AS n FROM "${schema}".outbox`))[0]!.n);
    const sizeAfter = await size(sql, schema);
    await sql.unsafe(`VACUUM "${schema}".outbox`);
    const sizeVacuumed = await size(sql, schema);
    // A second round of `small` messages after the vacuum: the freed space is reused.
    await fillSeries(sql, schema, options.small, false, "reuse");
    const outbox2 = createOutbox({
      storage: postgresStorage(sql as unknown as PostgresSql, { schema, notify: false }),
      publisher: () => {},
      batchSize: 1_000,
    });
    while ((await outbox2.tick({ budgetMs: 60_000 })).claimed > 0) { /* drain */ }
    const sizeReused = await size(sql, schema);
    return {
      small: smallCase,
      large: largeCase,
      full: { messages: published, drainRate: fullDrainRate, rowsLeft, sizeFull, sizeAfter, sizeVacuumed, sizeReused },
    };
  } finally {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await sql.end({ timeout: 1 });
  }
}
