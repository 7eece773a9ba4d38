/**
 * Issue 13's enqueue and latency targets, in one process, for one runtime:
 *
 * - enqueue ≤ 1.1× a hand-written INSERT of the same row in the same transaction
 *   (Postgres sequential and pipelined, libSQL transaction and batch; bench/enqueue.ts);
 * - commit → JetStream ack at 1,000 msg/s with `start()`: p99 ≤ 10 ms on Postgres
 *   (writer in another instance: NOTIFY wakes the relay) and on embedded libSQL with the
 *   writer in the same process (the relay's own outbox and client: its enqueue hint
 *   wakes the loop); libSQL with a writer elsewhere (polling only) is shown for context.
 *
 *   npx bun bench/latency-enqueue.ts [--seconds 10] [--blocks 7] [--per-block 300]
 *   node bench/both.mjs latency-enqueue.ts [same flags]   Node (esbuild bundle), then Bun
 *
 * stdout: a markdown table, then one JSON line with `targets_met`.
 *
 * @module
 */

import { runEnqueue } from "./enqueue.ts";
import { latencyLibsql, latencyPostgres, type LatencyResult } from "./latency.ts";
import { flag, g, loadavg, log, nats, round } from "./lib.ts";

const SECONDS = Number(flag("seconds") ?? 10);
const BLOCKS = Number(flag("blocks") ?? 7);
const PER_BLOCK = Number(flag("per-block") ?? 300);
const runtime = g.Bun ? `Bun ${g.Bun.version}` : g.Deno ? `Deno ${g.Deno.version.deno}` : `Node ${g.process?.version}`;
const runtimeId = g.Bun ? "bun" : g.Deno ? "deno" : "node";

const started = performance.now();
const loadBefore = await loadavg();
log(`${runtime}: enqueue, ${BLOCKS} blocks of ${PER_BLOCK} …`);
const enq = await runEnqueue({ blocks: BLOCKS, perBlock: PER_BLOCK });
log(`  ${JSON.stringify(enq.ratio)}`);

const n = await nats();
const lat: LatencyResult[] = [];
try {
  log(`${runtime}: latency at 1,000 msg/s for ${SECONDS} s …`);
  lat.push(await latencyPostgres(n.js, n.subject, "start", SECONDS, 1_000));
  lat.push(await latencyLibsql(n.js, n.subject, "start", SECONDS, 1_000, true));
  lat.push(await latencyLibsql(n.js, n.subject, "start", SECONDS, 1_000, false));
  for (const l of lat) log(`  ${JSON.stringify(l)}`);
} finally {
  await n.close();
}
const loadAfter = await loadavg();

const ENQ: [string, string, string][] = [
  ["Postgres", "sequential", "pg_seq/pg_hand_seq"],
  ["Postgres", "pipelined", "pg_pipe/pg_hand_pipe"],
  ["Postgres", "sequential, notify: false", "pg_seq_nonotify/pg_hand_seq"],
  ["libSQL", "transaction", "libsql_seq/libsql_hand_seq"],
  ["libSQL", "batch", "libsql_batch/libsql_batch_hand"],
];
const us = (k: string) => enq.usPerTx[k]!.toFixed(0);
const LAT_LABEL: Record<string, string> = {
  pg_start: "Postgres, writer in another instance (NOTIFY)",
  libsql_start_same: "libSQL, writer in the same process (enqueue hint)",
  libsql_start: "libSQL, writer in another instance (polling)",
};
const targets_met = {
  enqueue_le_1_1_handwritten: ENQ.filter(([, form]) => !form.includes("notify")).every(([, , k]) =>
    enq.ratio[k]! <= 1.1
  ),
  latency_pg_p99_le_10ms: lat.find((l) => l.mode === "pg_start")!.p99 <= 10,
  latency_libsql_same_process_p99_le_10ms: lat.find((l) => l.mode === "libsql_start_same")!.p99 <= 10,
};

const rows: string[] = [
  "| runtime | measure | case | figure | target |",
  "| --- | --- | --- | --: | --- |",
];
for (const [db, form, k] of ENQ) {
  const [ours, hand] = k.split("/") as [string, string];
  rows.push(
    `| ${runtime} | enqueue / hand-written INSERT | ${db} ${form} (${us(ours)} vs ${us(hand)} µs/tx) | **${
      enq.ratio[k]!.toFixed(2)
    }×** | ${form.includes("notify") ? "–" : "≤ 1.1×"} |`,
  );
}
for (const l of lat) {
  rows.push(
    `| ${runtime} | commit → ack at 1,000 msg/s, start() | ${LAT_LABEL[l.mode] ?? l.mode}: p50 ${
      l.p50.toFixed(1)
    } ms, max ${l.max.toFixed(1)} ms, ${l.acked}/${l.sent} acked | p99 **${l.p99.toFixed(1)} ms** | ${
      l.mode === "libsql_start" ? "–" : "≤ 10 ms"
    } |`,
  );
}
console.log(rows.join("\n"));
console.log(JSON.stringify({
  bench: "latency-enqueue",
  runtime,
  runtime_id: runtimeId,
  seconds: SECONDS,
  blocks: BLOCKS,
  per_block: PER_BLOCK,
  load_before: loadBefore[0],
  load_after: loadAfter[0],
  wall_s: round((performance.now() - started) / 1000, 1),
  enqueue_us_per_tx: Object.fromEntries(Object.entries(enq.usPerTx).map(([k, v]) => [k, round(v, 1)])),
  enqueue_ratio: Object.fromEntries(Object.entries(enq.ratio).map(([k, v]) => [k, round(v, 3)])),
  latency: lat.map((l) => ({
    ...l,
    p50: round(l.p50, 2),
    p90: round(l.p90, 2),
    p99: round(l.p99, 2),
    max: round(l.max, 1),
  })),
  targets_met,
}));
