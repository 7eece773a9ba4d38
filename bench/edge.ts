/**
 * Edge cost: what an idle tick and a tick that publishes one message cost in
 * statements, round trips and rows read, on Postgres and libSQL.
 *
 * Postgres: every statement postgres.js sends is seen through its `debug` hook;
 * round trips are counted from how the adapter awaits (postgres.js sends queries issued
 * without an await in between as one pipelined burst). Rows read: the claim and settle
 * statements are replayed under EXPLAIN (ANALYZE, BUFFERS) in a rolled-back
 * transaction on the same table state; rows read = rows every scan node returned plus
 * rows its filters removed (each counted once per loop).
 *
 * libSQL: the client is wrapped and every execute/batch/transaction call counted (each
 * is one HTTP request to Turso; a batch carries several statements). SQLite has no
 * rows-read counter the client exposes, so the claim's EXPLAIN QUERY PLAN is recorded:
 * with index SEARCHes bounded by `available_at <= now`, an idle claim reads no rows.
 *
 * @module
 */

import type { Client } from "@libsql/client";
import type postgres from "postgres";
import { createOutbox } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { libsqlNames, relayQueries as liteQueries } from "../adapters/libsql/sql.ts";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../adapters/postgres/mod.ts";
import { postgresNames, relayQueries } from "../adapters/postgres/sql.ts";
import { libsql, payload, pg } from "./lib.ts";

export interface EdgeCase {
  db: "pg" | "libsql";
  tick: "idle" | "publish1" | "first (with retention cleanup)";
  statements: number;
  roundTrips: number;
  rowsRead: number | null;
  detail: string;
}

interface PlanNode {
  "Node Type": string;
  "Actual Rows"?: number;
  "Actual Loops"?: number;
  "Rows Removed by Filter"?: number;
  "Rows Removed by Index Recheck"?: number;
  Plans?: PlanNode[];
}

function rowsRead(node: PlanNode): number {
  let n = 0;
  if (/Scan$/.test(node["Node Type"]) && !/CTE Scan|Function Scan|Subquery Scan|Result/.test(node["Node Type"])) {
    const loops = node["Actual Loops"] ?? 1;
    n += ((node["Actual Rows"] ?? 0) + (node["Rows Removed by Filter"] ?? 0) +
      (node["Rows Removed by Index Recheck"] ?? 0)) * loops;
  }
  for (const p of node.Plans ?? []) n += rowsRead(p);
  return n;
}

async function explainRows(tx: postgres.TransactionSql, query: string, params: unknown[]): Promise<number> {
  const [row] = await tx.unsafe(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${query}`, params as never[]);
  const plan = (row as Record<string, unknown>)["QUERY PLAN"] as { Plan: PlanNode }[];
  return rowsRead(plan[0]!.Plan);
}

/** Round trips of a statement list as postgres.js sends it: begin, a pipelined burst, commit. */
function pgRoundTrips(statements: string[]): number {
  // The adapter's claim is sql.begin((tx) => [lock, claim]): BEGIN (awaited), then lock +
  // claim pipelined, then COMMIT. Everything else is one statement, one round trip.
  let trips = 0;
  for (let i = 0; i < statements.length; i++) {
    const s = statements[i]!.trim().toLowerCase();
    if (s.startsWith("select pg_advisory_xact_lock") && statements[i + 1]) {
      trips++; // lock + the statement after it in one burst
      i++;
      continue;
    }
    trips++;
  }
  return trips;
}

export async function edgePostgres(): Promise<EdgeCase[]> {
  const seen: string[] = [];
  let recording = false;
  const sql = pg({ max: 2, debug: (q) => recording && seen.push(q) });
  const schema = `benchedge_${Date.now().toString(36)}`;
  const storage = postgresStorage(sql as unknown as PostgresSql, { schema });
  await storage.setup();
  const n = postgresNames(schema, "outbox");
  const outbox = createOutbox({ storage, publisher: () => {} });
  const out: EdgeCase[] = [];
  const record = async (tick: EdgeCase["tick"], run: () => Promise<unknown>, rows: number | null) => {
    seen.length = 0;
    recording = true;
    await run();
    recording = false;
    out.push({
      db: "pg",
      tick,
      statements: seen.length,
      roundTrips: pgRoundTrips(seen),
      rowsRead: rows,
      detail: seen.map((s) => s.trim().split(/\s+/).slice(0, 2).join(" ").toLowerCase()).join(" → "),
    });
  };
  try {
    await record("first (with retention cleanup)", () => outbox.tick(), null);
    // Rows read by an idle claim, replayed.
    const idleRows = await sql.begin(async (tx) => {
      const now = Date.now();
      const claim = relayQueries(n).claim({ now, limit: 100, token: "edge:idle", lockedUntil: now + 30_000 });
      const r = await explainRows(tx, claim.text, claim.values);
      await tx.unsafe("ROLLBACK AND CHAIN");
      return r;
    }).catch(() => null);
    await record("idle", () => outbox.tick(), idleRows);
    // One message.
    await sql.begin((tx) =>
      outbox.enqueue(tx as unknown as PostgresTx, { topic: "orders.created", key: "o-1", payload: payload(1) })
    );
    const oneRows = await sql.begin(async (tx) => {
      const now = Date.now();
      const q = relayQueries(n);
      const claim = q.claim({ now, limit: 100, token: "edge:one", lockedUntil: now + 30_000 });
      const c = await explainRows(tx, claim.text, claim.values);
      const [row] = await tx.unsafe(`SELECT seq FROM ${n.qualified} WHERE locked_by = 'edge:one'`);
      const settle = q.settle({
        token: "edge:one",
        now,
        deletePublished: true,
        settlements: [{ seq: Number(row!.seq), outcome: "published" }],
      });
      const s = await explainRows(tx, settle.text, settle.values);
      await tx.unsafe("ROLLBACK AND CHAIN");
      return c + s;
    }).catch(() => null);
    await record("publish1", () => outbox.tick(), oneRows);
  } finally {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await sql.end({ timeout: 1 });
  }
  return out;
}

function countingClient(client: Client, counts: { requests: number; statements: number; log: string[] }): Client {
  return new Proxy(client, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (prop === "execute") {
        return (stmt: unknown, ...rest: unknown[]) => {
          counts.requests++;
          counts.statements++;
          counts.log.push("execute");
          return (v as (...a: unknown[]) => unknown).call(target, stmt, ...rest);
        };
      }
      if (prop === "batch") {
        return (stmts: unknown[], ...rest: unknown[]) => {
          counts.requests++;
          counts.statements += stmts.length;
          counts.log.push(`batch(${stmts.length})`);
          return (v as (...a: unknown[]) => unknown).call(target, stmts, ...rest);
        };
      }
      if (prop === "transaction") {
        counts.log.push("transaction");
      }
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

export async function edgeLibsql(): Promise<{ cases: EdgeCase[]; claimPlan: string[] }> {
  const db = await libsql();
  const counts = { requests: 0, statements: 0, log: [] as string[] };
  const client = countingClient(db.client, counts);
  const storage = libsqlStorage(client);
  await storage.setup();
  const outbox = createOutbox({ storage, publisher: () => {} });
  const out: EdgeCase[] = [];
  const record = async (tick: EdgeCase["tick"], run: () => Promise<unknown>, rows: number | null) => {
    counts.requests = 0;
    counts.statements = 0;
    counts.log = [];
    await run();
    out.push({
      db: "libsql",
      tick,
      statements: counts.statements,
      roundTrips: counts.requests,
      rowsRead: rows,
      detail: counts.log.join(" → "),
    });
  };
  try {
    await record("first (with retention cleanup)", () => outbox.tick(), null);
    await record("idle", () => outbox.tick(), 0);
    await outbox.enqueue(db.client, { topic: "orders.created", key: "o-1", payload: payload(1) });
    // One row: the claim visits it in claim_dest_idx (+1 key_dest_idx probe), updates it, reads it
    // back by token (locked_idx), and the settle deletes it by token + seq.
    await record("publish1", () => outbox.tick(), 4);
    const [claim] = liteQueries(libsqlNames("outbox")).claim({
      now: Date.now(),
      limit: 100,
      token: "t",
      lockedUntil: Date.now() + 1,
    });
    const plan = await db.client.execute({ sql: `EXPLAIN QUERY PLAN ${claim.sql}`, args: claim.args });
    return { cases: out, claimPlan: plan.rows.map((r) => String(r.detail)) };
  } finally {
    db.close();
  }
}
