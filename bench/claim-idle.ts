/**
 * Cost of an idle Postgres claim on the two claim paths, interleaved: the claim
 * function (one statement) and the claim transaction (BEGIN; lock + claim; COMMIT), on
 * an empty table, one connection, sequential calls.
 *
 *   npx bun bench/claim-idle.ts [--calls 3000]
 *
 * @module
 */

import postgres from "postgres";
import { type PostgresSql, postgresStorage } from "../adapters/postgres/mod.ts";
import { postgresNames } from "../adapters/postgres/sql.ts";
import { g, median, PG_URL } from "./lib.ts";

const args: string[] = g.Deno ? [...g.Deno.args] : (g.process?.argv ?? []).slice(2);
const at = args.indexOf("--calls");
const calls = at >= 0 ? Number(args[at + 1]) : 3_000;

const sql = postgres(PG_URL, { max: 1, onnotice: () => {} });
const tag = Date.now().toString(36);
const fn = postgresStorage(sql as unknown as PostgresSql, { schema: `claim_fn_${tag}` });
const tx = postgresStorage(sql as unknown as PostgresSql, { schema: `claim_tx_${tag}` });
await fn.setup();
await tx.setup();
await sql.unsafe(`DROP FUNCTION ${postgresNames(tx.schema, tx.table).claimFunction}`);
const request = () => ({ now: Date.now(), limit: 100, token: crypto.randomUUID(), lockedUntil: Date.now() + 30_000 });
const samples: Record<string, number[]> = { function: [], transaction: [] };
try {
  for (const s of [fn, tx]) for (let i = 0; i < 200; i++) await s.claim(request()); // warm-up, plans
  for (let round = 0; round < 5; round++) {
    for (const [name, s] of [["function", fn], ["transaction", tx]] as const) {
      const t = performance.now();
      for (let i = 0; i < calls; i++) await s.claim(request());
      samples[name]!.push(((performance.now() - t) / calls) * 1000);
    }
  }
  for (const [name, v] of Object.entries(samples)) {
    console.log(
      `${name.padEnd(12)} median ${median(v).toFixed(0)} µs per idle claim (${v.map((x) => x.toFixed(0)).join(", ")})`,
    );
  }
} finally {
  await sql.unsafe(`DROP SCHEMA IF EXISTS "${fn.schema}" CASCADE`);
  await sql.unsafe(`DROP SCHEMA IF EXISTS "${tx.schema}" CASCADE`);
  await sql.end({ timeout: 1 });
}
