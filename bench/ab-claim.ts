/**
 * A/B of the two Postgres claim paths, interleaved in one run: the claim function
 * (one statement) against the claim transaction (the fallback on a table without the
 * function). Unkeyed and 16-key backlogs relayed into JetStream with tick(), next to
 * the raw js.publish rate (256 in flight) measured before each pair.
 *
 *   npx bun bench/ab-claim.ts [--messages 20000] [--repeats 5]
 *
 * @module
 */

import { postgresTarget, relayRate } from "./throughput.ts";
import { g, median, nats, rawPublishRate } from "./lib.ts";

const args: string[] = g.Deno ? [...g.Deno.args] : (g.process?.argv ?? []).slice(2);
const opt = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const messages = opt("messages", 20_000);
const repeats = opt("repeats", 5);

const n = await nats();
const fn = await postgresTarget(undefined, `bench_fn_${Date.now().toString(36)}`);
const tx = await postgresTarget(undefined, `bench_tx_${Date.now().toString(36)}`);
await tx.sql.unsafe(`DROP FUNCTION "${tx.schema}"."outbox_claim"`);
const rows: Record<string, number[]> = {};
const add = (k: string, v: number) => (rows[k] ??= []).push(v);
try {
  await rawPublishRate(n.js, n.subject, 2_000, 256);
  for (const t of [fn, tx]) await relayRate(t, n.js, n.jsm, n.stream, 2_000, 0, n.subject, 1_000);
  for (let r = 0; r < repeats; r++) {
    for (const keys of [0, 16]) {
      // Alternate which path goes first, so drift in the machine's load hits both.
      const order = r % 2 === 0
        ? [["function", fn], ["transaction", tx]] as const
        : [["transaction", tx], ["function", fn]] as const;
      for (const [name, t] of order) {
        const raw = await rawPublishRate(n.js, n.subject, messages, 256);
        const rate = await relayRate(t, n.js, n.jsm, n.stream, messages, keys, n.subject, 1_000);
        add(`${name} ${keys === 0 ? "unkeyed" : "16 keys"}`, rate / raw);
        add(`${name} ${keys === 0 ? "unkeyed" : "16 keys"} msg/s`, rate);
      }
    }
  }
  for (const [k, v] of Object.entries(rows)) {
    const fmt = k.endsWith("msg/s")
      ? (x: number) => Math.round(x).toLocaleString("en-US")
      : (x: number) => x.toFixed(2);
    console.log(`${k.padEnd(30)} median ${fmt(median(v))}  (${v.map(fmt).join(", ")})`);
  }
} finally {
  await fn.close();
  await tx.close();
  await n.close();
}
g.process?.exit?.(0);
