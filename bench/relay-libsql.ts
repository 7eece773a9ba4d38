/**
 * Relay throughput on an embedded libSQL file into the memory publisher.
 *
 * Each run opens a fresh `file:` database in a temp folder (WAL journal), enqueues a
 * backlog of N messages (~150-byte JSON payloads) in write transactions of `txSize`
 * messages, then drains it one of three ways:
 *
 * - `tick`: `await outbox.tick()` until a tick claims nothing;
 * - `start`: `outbox.start()` until every message is published and settled (counted
 *   from `onTick` reports; then `stats()` must show 0 pending and 0 processing), then `stop()`;
 * - `raw`: the ceiling. The same storage driven directly, `storage.claim()` then
 *   `storage.settle()` with every row "published", no relay logic (no decode, no lanes,
 *   no publisher). `relay / raw` is the share of the storage's own speed the relay keeps.
 *
 * Runs are interleaved (repeat 1 of every case, then repeat 2, …) and each figure is the
 * median over repeats. Bench code, not core: it uses node: modules freely.
 *
 * Standalone: `bun bench/relay-libsql.ts [--quick]`; `bench/run.ts` is the entry point
 * of `npm run bench` and writes BENCHMARKS.md.
 *
 * @module
 */

import { type Client, createClient } from "@libsql/client";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createOutbox, memoryPublisher, type OutboxStorage, type TickReport } from "../mod.ts";
import { type LibsqlStorage, libsqlStorage } from "../adapters/libsql/mod.ts";

/** How a backlog is drained. */
export type DrainMode = "tick" | "start" | "raw";

/** One benchmark case: a key distribution, a batch size and a drain mode. */
export interface RelayCase {
  /** 0 for unkeyed messages, else the number of distinct keys (round robin). */
  readonly keys: number;
  readonly batchSize: number;
  readonly mode: DrainMode;
}

/** Settings of a bench run. */
export interface RelayBenchOptions {
  /** Backlog size per run (default 20,000). */
  messages?: number;
  /** Messages per enqueue transaction (default 500). */
  txSize?: number;
  /** Repeats of each case, interleaved (default 3). */
  repeats?: number;
  /** Cases to run (default {@link defaultCases}). */
  cases?: readonly RelayCase[];
  /** SQLite journal mode set with PRAGMA before setup (default "wal"). */
  journalMode?: string;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** Time spent inside storage calls during `tick` drains (summed over repeats). */
export interface Breakdown {
  drainMs: number;
  claimMs: number;
  settleMs: number;
  claims: number;
}

/** Result of one case, over all its repeats. */
export interface RelayCaseResult extends RelayCase {
  /** Drain rate of each repeat, messages/s. */
  readonly drainRates: number[];
  /** Enqueue rate of each repeat (the backlog fill before the drain), messages/s. */
  readonly enqueueRates: number[];
  /** Median drain rate, messages/s. */
  readonly drain: number;
  /** Median enqueue rate, messages/s. */
  readonly enqueue: number;
  /** Storage time split of `tick` drains; absent for other modes. */
  readonly breakdown?: Breakdown;
}

/** Everything a bench run measured. */
export interface RelayBenchResult {
  readonly messages: number;
  readonly txSize: number;
  readonly repeats: number;
  readonly journalMode: string;
  readonly payloadBytes: number;
  readonly sqliteVersion: string;
  readonly cases: RelayCaseResult[];
  readonly wallMs: number;
}

/**
 * The default matrix: every key distribution with the three drain modes at the default
 * batch size, and batch sizes 500 and 1000 for unkeyed and 16 keys (tick and raw).
 */
export function defaultCases(): RelayCase[] {
  const cases: RelayCase[] = [];
  for (const keys of [0, 16, 10_000]) {
    for (const mode of ["tick", "start", "raw"] as const) cases.push({ keys, batchSize: 100, mode });
  }
  for (const batchSize of [500, 1000]) {
    for (const keys of [0, 16]) {
      for (const mode of ["tick", "raw"] as const) cases.push({ keys, batchSize, mode });
    }
  }
  return cases;
}

/** A readable name of a key distribution. */
export function keysLabel(keys: number): string {
  return keys === 0 ? "unkeyed" : `${keys.toLocaleString("en-US")} keys`;
}

/** The median of some numbers. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const SKUS = ["sku-0042", "sku-0107", "sku-2231", "sku-0815"];

/** An order-ish JSON payload of about 150 bytes. */
export function payloadFor(i: number): Record<string, unknown> {
  return {
    orderId: `o-${String(i).padStart(8, "0")}`,
    customerId: `c-${String(i % 9973).padStart(5, "0")}`,
    total: { amount: 1000 + (i % 50_000), currency: "EUR" },
    items: [{ sku: SKUS[i % 4], qty: 1 + (i % 3) }, { sku: SKUS[(i + 1) % 4], qty: 1 }],
    placedBy: "web",
  };
}

function messagesFor(count: number, keys: number) {
  const list = new Array(count);
  for (let i = 0; i < count; i++) {
    list[i] = { topic: "orders.created", key: keys === 0 ? undefined : `customer-${i % keys}`, payload: payloadFor(i) };
  }
  return list;
}

interface Database {
  client: Client;
  dir: string;
  close(): void;
}

async function openDatabase(journalMode: string): Promise<Database> {
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-bench-"));
  const client = createClient({ url: `file:${join(dir, "bench.db")}` });
  const rs = await client.execute(`PRAGMA journal_mode = ${journalMode}`);
  const mode = String(rs.rows[0]?.[0] ?? "").toLowerCase();
  if (mode !== journalMode.toLowerCase()) throw new Error(`PRAGMA journal_mode = ${journalMode} gave ${mode}`);
  return {
    client,
    dir,
    close() {
      client.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Wraps a storage to add up the time spent in claim and settle. */
function timedStorage<Tx, Stmt>(storage: OutboxStorage<Tx, Stmt>, into: Breakdown): OutboxStorage<Tx, Stmt> {
  return {
    ...storage,
    async claim(request) {
      const t = performance.now();
      try {
        return await storage.claim(request);
      } finally {
        into.claimMs += performance.now() - t;
        into.claims++;
      }
    },
    async settle(request) {
      const t = performance.now();
      try {
        return await storage.settle(request);
      } finally {
        into.settleMs += performance.now() - t;
      }
    },
  };
}

async function enqueueBacklog(
  client: Client,
  outbox: { enqueue(tx: never, m: never): Promise<string[]> },
  messages: unknown[],
  txSize: number,
): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < messages.length; i += txSize) {
    const tx = await client.transaction("write");
    try {
      await outbox.enqueue(tx as never, messages.slice(i, i + txSize) as never);
      await tx.commit();
    } finally {
      tx.close();
    }
  }
  return performance.now() - t0;
}

/** Drains with the storage alone: claim, then settle every row as published. */
async function drainRaw(storage: LibsqlStorage, batchSize: number): Promise<number> {
  let claims = 0;
  let total = 0;
  for (;;) {
    const now = Date.now();
    const token = `raw:${++claims}`;
    const rows = await storage.claim({ token, now, lockedUntil: now + 30_000, limit: batchSize });
    if (rows.length === 0) return total;
    await storage.settle({
      token,
      now: Date.now(),
      settlements: rows.map((r) => ({ seq: r.seq, outcome: "published" as const })),
      deletePublished: true,
    });
    total += rows.length;
  }
}

async function drainTicks(tick: () => Promise<TickReport>): Promise<number> {
  let published = 0;
  for (;;) {
    const report = await tick();
    published += report.published;
    if (report.claimed === 0) return published;
  }
}

/** Runs one case once; returns [enqueue ms, drain ms]. */
async function runOnce(c: RelayCase, n: number, txSize: number, journalMode: string, breakdown: Breakdown | undefined) {
  const db = await openDatabase(journalMode);
  try {
    const base = libsqlStorage(db.client);
    const storage = breakdown ? timedStorage(base, breakdown) : base;
    const publisher = memoryPublisher();
    const outbox = createOutbox({ storage, publisher, batchSize: c.batchSize, onError: (e) => console.error(e) });
    await outbox.setup();
    const enqueueMs = await enqueueBacklog(db.client, outbox as never, messagesFor(n, c.keys), txSize);

    let drainMs: number;
    let published: number;
    if (c.mode === "raw") {
      const t0 = performance.now();
      published = await drainRaw(base, c.batchSize);
      drainMs = performance.now() - t0;
    } else if (c.mode === "tick") {
      const t0 = performance.now();
      published = await drainTicks(() => outbox.tick());
      drainMs = performance.now() - t0;
      if (breakdown) breakdown.drainMs += drainMs;
    } else {
      let count = 0;
      let caughtUp!: () => void;
      const done = new Promise<void>((resolve) => (caughtUp = resolve));
      const t0 = performance.now();
      const relay = outbox.start({
        onTick(report) {
          count += report.published;
          if (count >= n) caughtUp();
        },
      });
      await done;
      drainMs = performance.now() - t0;
      const stats = await outbox.stats();
      await relay.stop();
      if (stats.pending !== 0 || stats.processing !== 0) {
        throw new Error(`start() drain left ${stats.pending} pending and ${stats.processing} processing`);
      }
      published = count;
    }
    if (published !== n) throw new Error(`${c.mode} drain published ${published} of ${n} messages`);
    if (c.mode !== "raw") checkOrder(publisher.messages, n);
    return [enqueueMs, drainMs] as const;
  } finally {
    db.close();
  }
}

/** Every message went out once, and each key's messages in enqueue order. */
function checkOrder(messages: readonly { seq: number; key: string | null }[], n: number): void {
  if (messages.length !== n) throw new Error(`publisher saw ${messages.length} of ${n} messages`);
  const last = new Map<string, number>();
  for (const m of messages) {
    if (m.key === null) continue;
    const prev = last.get(m.key);
    if (prev !== undefined && prev >= m.seq) throw new Error(`key ${m.key} went out of order (${m.seq} after ${prev})`);
    last.set(m.key, m.seq);
  }
}

async function sqliteVersion(journalMode: string): Promise<string> {
  const db = await openDatabase(journalMode);
  try {
    const rs = await db.client.execute("SELECT sqlite_version() AS v");
    return String(rs.rows[0]!.v);
  } finally {
    db.close();
  }
}

/** Runs the libSQL relay bench. */
export async function runRelayBench(options: RelayBenchOptions = {}): Promise<RelayBenchResult> {
  const n = options.messages ?? 20_000;
  const txSize = options.txSize ?? 500;
  const repeats = options.repeats ?? 3;
  const cases = options.cases ?? defaultCases();
  const journalMode = options.journalMode ?? "wal";
  const log = options.log ?? (() => {});
  const started = performance.now();

  const drains = cases.map(() => [] as number[]);
  const enqueues = cases.map(() => [] as number[]);
  const breakdowns = cases.map((
    c,
  ) => (c.mode === "tick" ? { drainMs: 0, claimMs: 0, settleMs: 0, claims: 0 } : undefined));

  // One warm-up run (JIT, file system), not recorded.
  await runOnce({ keys: 16, batchSize: 100, mode: "tick" }, Math.min(n, 2_000), txSize, journalMode, undefined);

  for (let r = 0; r < repeats; r++) {
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i]!;
      const [enqueueMs, drainMs] = await runOnce(c, n, txSize, journalMode, breakdowns[i]);
      drains[i]!.push((n / drainMs) * 1000);
      enqueues[i]!.push((n / enqueueMs) * 1000);
      log(
        `  [${r + 1}/${repeats}] ${keysLabel(c.keys).padEnd(11)} batch ${String(c.batchSize).padStart(4)} ${
          c.mode.padEnd(5)
        } ` +
          `enqueue ${Math.round((n / enqueueMs) * 1000).toLocaleString("en-US").padStart(7)}/s  ` +
          `drain ${Math.round((n / drainMs) * 1000).toLocaleString("en-US").padStart(7)}/s`,
      );
    }
  }

  return {
    messages: n,
    txSize,
    repeats,
    journalMode,
    payloadBytes: Math.round(
      Array.from({ length: 100 }, (_, i) => JSON.stringify(payloadFor(i * 137)).length).reduce((a, b) => a + b) / 100,
    ),
    sqliteVersion: await sqliteVersion(journalMode),
    cases: cases.map((c, i) => ({
      ...c,
      drainRates: drains[i]!,
      enqueueRates: enqueues[i]!,
      drain: median(drains[i]!),
      enqueue: median(enqueues[i]!),
      ...(breakdowns[i] ? { breakdown: breakdowns[i] } : {}),
    })),
    wallMs: performance.now() - started,
  };
}

/** Finds the result of one case. */
export function findCase(
  result: RelayBenchResult,
  keys: number,
  batchSize: number,
  mode: DrainMode,
): RelayCaseResult | undefined {
  return result.cases.find((c) => c.keys === keys && c.batchSize === batchSize && c.mode === mode);
}

if ((import.meta as { main?: boolean }).main) {
  const quick = (globalThis as { process?: { argv: string[] } }).process?.argv.includes("--quick") ?? false;
  const result = await runRelayBench({ messages: quick ? 5_000 : 20_000, repeats: quick ? 1 : 3, log: console.log });
  for (const c of result.cases) {
    console.log(
      `${keysLabel(c.keys).padEnd(11)} batch ${String(c.batchSize).padStart(4)} ${c.mode.padEnd(5)} drain ${
        Math.round(c.drain)
      }/s enqueue ${Math.round(c.enqueue)}/s`,
    );
  }
}
