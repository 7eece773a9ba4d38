/**
 * Scale-out (issue 13): 1, 2 and 4 relay processes drain one Postgres table into a
 * publisher that takes 5 ms per message (a timer: a remote broker's round trip, not CPU).
 *
 *   npx bun bench/scale-out.ts [--messages 40000] [--repeats 3] [--keys 0,10000,16] [--processes 1,2,4]
 *                              [--publish-ms 5] [--sample-ms 5]
 *   node bench/both.mjs scale-out.ts [same flags]   under Node (esbuild bundle), then Bun
 *
 * The parent writes a committed backlog to its own schema, then tells N children of a
 * pool of max(processes) (spawned once, in the parent's runtime, so every run meets warm
 * JITs and open connections) to run `createOutbox({ storage: postgresStorage(sql, { schema }),
 * publisher })` with default options and `start()`, as users run it. Runs are
 * interleaved: 1,2,4 then 4,2,1, so a drift of the machine's load falls on every N alike.
 *
 * Per run:
 * - drain rate: messages / (first publish start → last publish end, over all children),
 *   and the steady rate between the 10th and 90th percentile of publish ends (no ramp,
 *   no tail of a last batch);
 * - lane use: Σ publish durations / (N × concurrency × drain time), the share of the
 *   relays' publish slots in use. Rate = N × concurrency × use / publish time, so the
 *   N=4/N=1 ratio is 4 × (use₄/use₁) × (publish₁/publish₄);
 * - the claim lock: every claim runs `<table>_claim_v3`, which takes one advisory lock
 *   per table, exclusively in earlier builds and shared now (settles take it shared; the
 *   output says which the adapter takes). The parent samples pg_stat_activity every
 *   `--sample-ms` and adds, per sample, the backends waiting on that lock × the time since
 *   the last sample (claims and settles apart), and the time during which a claim runs
 *   (active, not waiting on a lock): with an exclusive claim lock, the time it is held,
 *   so rows claimed / that time is the most a table can claim per second. The children
 *   time every storage claim and settle call (wall time, round trip included) by
 *   wrapping the storage's methods;
 * - CPU per message: the children (process.cpuUsage), their postgres backends, every
 *   postgres process, and the machine's busy cores (/proc/stat; other work included).
 * - checks: every message published exactly once, and per key, message n+1's publish
 *   starts after message n's ended (per-key order across processes).
 *
 * stdout: a markdown table, then one JSON line with `targets_met: { scale_out_4x }`
 * (N=4 / N=1 ≥ 3.2, unkeyed and 10,000 keys; 16 keys is reported, see `keyCeiling`).
 *
 * @module
 */

import { type ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import postgres from "postgres";
import { createOutbox, type OutboxRecord, type Publisher } from "../mod.ts";
import { type PostgresSql, postgresStorage } from "../adapters/postgres/mod.ts";
import {
  argv,
  fillPostgresBacklog,
  flag,
  g,
  listenerPid,
  loadavg,
  log,
  median,
  pg,
  PG_URL,
  quantile,
  round,
  serverCpuSync,
  sleep,
} from "./lib.ts";

// ---- arguments ----

const list = (s: string) => s.split(",").map(Number);
const MESSAGES = Number(flag("messages") ?? 40_000);
const REPEATS = Number(flag("repeats") ?? 3);
const KEYS = list(flag("keys") ?? "0,10000,16");
const PROCESSES = list(flag("processes") ?? "1,2,4");
const PUBLISH_MS = Number(flag("publish-ms") ?? 5);
const SAMPLE_MS = Number(flag("sample-ms") ?? 5);
if (
  !(MESSAGES > 0) || !(REPEATS > 0) || KEYS.some((k) => !(k >= 0)) || PROCESSES.some((n) => !(n >= 1)) ||
  !PROCESSES.includes(1) || !(PUBLISH_MS >= 0) || !(SAMPLE_MS >= 1)
) {
  throw new Error(
    "usage: scale-out.ts [--messages N] [--repeats N] [--keys 0,10000,16] [--processes 1,2,4 (with 1)] " +
      "[--publish-ms 5] [--sample-ms 5]",
  );
}
const runtime = g.Bun ? `Bun ${g.Bun.version}` : `Node ${g.process?.version}`;
const runtimeId = g.Bun ? "bun" : "node";
const APP = "x-outbox-scale-out"; // application_name of the children's connections
const TOPIC = "orders.created";
// The defaults this bench relies on (src/options.ts): a change there must show here.
const DEFAULT_CONCURRENCY = 32;
const DEFAULT_BATCH = 500;

// ---- child: one relay process ----

/** What a child reports after a run. */
interface ChildResult {
  /** Per publish: seq, key, start and end (Date.now(): one clock for every process). */
  seqs: number[];
  keys: (string | null)[];
  starts: number[];
  ends: number[];
  /** Σ publish durations (performance.now()), ms. */
  publishMs: number;
  claimMs: number[];
  claimRows: number[];
  settleMs: number[];
  cpuMs: number;
  pids: number[];
}

type ToChild = { cmd: "run" } | { cmd: "stop" } | { cmd: "exit" };
type FromChild =
  | { type: "ready" }
  | { type: "started" }
  | { type: "tick"; published: number }
  | ({ type: "result" } & ChildResult);

const cpuNow = (): number => {
  const u = g.process.cpuUsage();
  return (u.user + u.system) / 1000;
};

async function child(schema: string): Promise<void> {
  const send = (m: FromChild) => g.process.stdout.write(`${JSON.stringify(m)}\n`);
  // The relay's client as an app makes it: postgres.js defaults, named for pg_stat_activity.
  const sql = postgres(PG_URL, { connection: { application_name: APP } });
  const base = postgresStorage(sql as unknown as PostgresSql, { schema });
  let r: ChildResult = emptyResult();
  // Wrapped, not changed: the wall time of each claim and settle call, lock wait included.
  const storage: typeof base = {
    ...base,
    async claim(request) {
      const t = performance.now();
      const rows = await base.claim(request);
      r.claimMs.push(performance.now() - t);
      r.claimRows.push(rows.length);
      return rows;
    },
    async settle(request) {
      const t = performance.now();
      const n = await base.settle(request);
      r.settleMs.push(performance.now() - t);
      return n;
    },
  };
  // A remote broker: a round trip of PUBLISH_MS on a timer, no CPU.
  const publisher: Publisher = {
    async publish(message: OutboxRecord) {
      const start = Date.now();
      const t = performance.now();
      await new Promise<void>((resolve) => setTimeout(resolve, PUBLISH_MS));
      r.publishMs += performance.now() - t;
      r.seqs.push(message.seq);
      r.keys.push(message.key);
      r.starts.push(start);
      r.ends.push(Date.now());
    },
  };
  // Connect before the first run, so no run pays for it.
  await sql.unsafe("SELECT 1");
  let handle: { stop(): Promise<void> } | null = null;
  let cpu0 = 0;
  const lines = createInterface({ input: g.process.stdin });
  // The parent gone (stdin closed): leave, never linger.
  lines.on("close", () => g.process.exit(0));
  lines.on("line", async (line: string) => {
    const m = JSON.parse(line) as ToChild;
    if (m.cmd === "run") {
      r = emptyResult();
      cpu0 = cpuNow();
      const outbox = createOutbox({ storage, publisher });
      handle = outbox.start({ onTick: (report) => send({ type: "tick", published: report.published }) });
      send({ type: "started" });
    } else if (m.cmd === "stop") {
      await handle?.stop();
      handle = null;
      r.cpuMs = cpuNow() - cpu0;
      const rows = await sql.unsafe(
        `SELECT pid FROM pg_stat_activity WHERE application_name = $1`,
        [APP],
      );
      // Backends of every child share the name; the parent keeps the union.
      r.pids = rows.map((x) => Number(x.pid));
      send({ type: "result", ...r });
    } else {
      await sql.end({ timeout: 1 });
      g.process.exit(0);
    }
  });
  send({ type: "ready" });
}

function emptyResult(): ChildResult {
  return {
    seqs: [],
    keys: [],
    starts: [],
    ends: [],
    publishMs: 0,
    claimMs: [],
    claimRows: [],
    settleMs: [],
    cpuMs: 0,
    pids: [],
  };
}

// ---- parent ----

/** A child process and its message stream. */
interface Relay {
  proc: ChildProcess;
  send(m: ToChild): void;
  /** Resolves with the next message of `type`. */
  next<T extends FromChild["type"]>(type: T): Promise<Extract<FromChild, { type: T }>>;
  onTick: (published: number) => void;
}

/** A relay child in this runtime: Bun runs this .ts file, Node the bundle it runs from. */
async function spawnRelay(schema: string): Promise<Relay> {
  const self = fileURLToPath(import.meta.url);
  const proc = spawn(g.process.execPath, [self, "--child", "--schema", schema, "--publish-ms", String(PUBLISH_MS)], {
    cwd: g.process.cwd(),
    stdio: ["pipe", "pipe", "inherit"],
  });
  const waiting = new Map<string, { resolve: (m: FromChild) => void; reject: (e: Error) => void }>();
  const queued = new Map<string, FromChild[]>();
  let exited: Error | null = null;
  proc.once("exit", (code, signal) => {
    exited = new Error(`relay child exited (${code ?? signal})`);
    for (const w of waiting.values()) w.reject(exited);
    waiting.clear();
  });
  const relay: Relay = {
    proc,
    send: (m) => proc.stdin!.write(`${JSON.stringify(m)}\n`),
    next: (type) =>
      new Promise((resolve, reject) => {
        const q = queued.get(type);
        if (q && q.length > 0) return resolve(q.shift()! as never);
        if (exited) return reject(exited);
        waiting.set(type, { resolve: resolve as (m: FromChild) => void, reject });
      }),
    onTick: () => {},
  };
  createInterface({ input: proc.stdout! }).on("line", (line: string) => {
    const m = JSON.parse(line) as FromChild;
    if (m.type === "tick") return relay.onTick(m.published);
    const w = waiting.get(m.type);
    if (w) {
      waiting.delete(m.type);
      w.resolve(m);
    } else {
      (queued.get(m.type) ?? queued.set(m.type, []).get(m.type)!).push(m);
    }
  });
  await relay.next("ready");
  return relay;
}

/** Busy and total jiffies of the whole machine (/proc/stat; NaN elsewhere). */
function machineCpu(): { busy: number; total: number } {
  try {
    const f = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - f[3]! - f[4]!, total };
  } catch {
    return { busy: NaN, total: NaN };
  }
}

/** Claim lock figures sampled from pg_stat_activity, ms of backend time. */
interface LockSample {
  claimWaitMs: number;
  settleWaitMs: number;
  /** Wall time during which a claim ran (active, not waiting on a lock): an exclusive lock's hold time. */
  claimHeldMs: number;
  sampledMs: number;
  samples: number;
}

function lockSampler(monitor: postgres.Sql): { stop(): Promise<LockSample> } {
  const s: LockSample = { claimWaitMs: 0, settleWaitMs: 0, claimHeldMs: 0, sampledMs: 0, samples: 0 };
  let running = true;
  const loop = (async () => {
    let last = performance.now();
    while (running) {
      const [row] = await monitor.unsafe(
        `SELECT
  count(*) FILTER (WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND query LIKE '%claim_v3%')::int AS cw,
  count(*) FILTER (WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND query NOT LIKE '%claim_v3%')::int AS sw,
  count(*) FILTER (WHERE state = 'active' AND query LIKE '%claim_v3%'
    AND wait_event_type IS DISTINCT FROM 'Lock')::int AS ch
FROM pg_stat_activity WHERE application_name = $1`,
        [APP],
      );
      const now = performance.now();
      const dt = now - last;
      last = now;
      s.claimWaitMs += row!.cw * dt;
      s.settleWaitMs += row!.sw * dt;
      s.claimHeldMs += row!.ch > 0 ? dt : 0;
      s.sampledMs += dt;
      s.samples++;
      await sleep(SAMPLE_MS);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return s;
    },
  };
}

interface Run {
  keys: number;
  n: number;
  repeat: number;
  /** msg/s, first publish start → last publish end */
  rate: number;
  /** msg/s between the 10th and 90th percentile of publish ends */
  steady: number;
  drainMs: number;
  /** ms from the parent's go to the first publish */
  firstPublishMs: number;
  /** share of the N × concurrency publish slots in use over the drain */
  laneUse: number;
  publishMeanMs: number;
  perProcess: number[];
  claims: number;
  emptyClaims: number;
  claimedRows: number;
  claimMeanMs: number;
  claimP99Ms: number;
  settleMedianMs: number;
  lock: LockSample;
  /** CPU µs per message */
  relayCpuUs: number;
  pgOwnUs: number;
  pgAllUs: number;
  machineCores: number;
  orderViolations: number;
  duplicates: number;
}

/** What every run shares. */
interface Bench {
  relays: Relay[];
  writerSql: postgres.Sql;
  monitor: postgres.Sql;
  schema: string;
  writer: Parameters<typeof fillPostgresBacklog>[2];
  postmasterPid: number | null;
  cores: number;
}

const minOf = (xs: readonly number[]) => xs.reduce((a, b) => Math.min(a, b), Infinity);
const maxOf = (xs: readonly number[]) => xs.reduce((a, b) => Math.max(a, b), -Infinity);
const sumOf = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

/** Fills the backlog, lets the first `n` relays drain it, and measures. */
async function oneRun(b: Bench, keys: number, n: number, repeat: number, messages: number): Promise<Run> {
  await fillPostgresBacklog(b.writerSql, b.schema, b.writer, { messages, keys, topic: TOPIC });
  const active = b.relays.slice(0, n);
  let published = 0;
  let drained!: () => void;
  const done = new Promise<void>((resolve) => (drained = resolve));
  for (const r of active) {
    r.onTick = (p) => {
      published += p;
      if (published >= messages) drained();
    };
  }
  const pg0 = serverCpuSync(fs, null, b.postmasterPid);
  const m0 = machineCpu();
  const go = Date.now();
  const sampler = lockSampler(b.monitor);
  for (const r of active) r.send({ cmd: "run" });
  await Promise.all(active.map((r) => r.next("started")));
  const limitMs = 60_000 + messages * 10;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      done,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${published}/${messages} published after ${limitMs} ms`)), limitMs);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
  const m1 = machineCpu();
  const pg1 = serverCpuSync(fs, null, b.postmasterPid);
  const lock = await sampler.stop();
  for (const r of active) r.send({ cmd: "stop" });
  const results = await Promise.all(active.map((r) => r.next("result")));
  for (const r of active) r.onTick = () => {};
  const left = Number((await b.writerSql.unsafe(`SELECT count(*)::int AS c FROM "${b.schema}".outbox`))[0]!.c);
  if (left !== 0) throw new Error(`${left} rows left after the drain`);

  // Every message once; per key, n+1 starts after n ended (Date.now(): one clock).
  const all: { seq: number; key: string | null; start: number; end: number }[] = [];
  for (const c of results) {
    for (let i = 0; i < c.seqs.length; i++) {
      all.push({ seq: c.seqs[i]!, key: c.keys[i]!, start: c.starts[i]!, end: c.ends[i]! });
    }
  }
  all.sort((x, y) => x.seq - y.seq);
  let duplicates = 0;
  let orderViolations = 0;
  const lastOfKey = new Map<string, { seq: number; end: number }>();
  for (let i = 0; i < all.length; i++) {
    const x = all[i]!;
    if (i > 0 && all[i - 1]!.seq === x.seq) duplicates++;
    if (x.key === null) continue;
    const prev = lastOfKey.get(x.key);
    if (prev && prev.seq !== x.seq && x.start < prev.end) orderViolations++;
    lastOfKey.set(x.key, { seq: x.seq, end: x.end });
  }
  if (all.length - duplicates !== messages) {
    throw new Error(`${all.length - duplicates} distinct messages published, expected ${messages}`);
  }

  const first = minOf(results.map((c) => minOf(c.starts)));
  const last = maxOf(results.map((c) => maxOf(c.ends)));
  const ends = all.map((x) => x.end).sort((x, y) => x - y);
  const p10 = quantile(ends, 0.1);
  const p90 = quantile(ends, 0.9);
  const drainMs = Math.max(1, last - first);
  const claimMs = results.flatMap((c) => c.claimMs);
  const claimRows = results.flatMap((c) => c.claimRows);
  const publishMs = sumOf(results.map((c) => c.publishMs));
  const ownPids = new Set(results.flatMap((c) => c.pids));
  let pgOwn = 0;
  for (const pid of ownPids) pgOwn += (pg1.pgByPid.get(pid) ?? 0) - (pg0.pgByPid.get(pid) ?? 0);
  const us = (ms: number) => (ms * 1000) / messages;
  return {
    keys,
    n,
    repeat,
    rate: messages / (drainMs / 1000),
    steady: p90 > p10 ? (0.8 * messages) / ((p90 - p10) / 1000) : NaN,
    drainMs,
    firstPublishMs: first - go,
    laneUse: publishMs / (n * DEFAULT_CONCURRENCY * drainMs),
    publishMeanMs: publishMs / all.length,
    perProcess: results.map((c) => c.seqs.length),
    claims: claimMs.length,
    emptyClaims: claimRows.filter((x) => x === 0).length,
    claimedRows: sumOf(claimRows),
    claimMeanMs: sumOf(claimMs) / Math.max(1, claimMs.length),
    claimP99Ms: quantile(claimMs, 0.99),
    settleMedianMs: median(results.flatMap((c) => c.settleMs)),
    lock,
    relayCpuUs: us(sumOf(results.map((c) => c.cpuMs))),
    pgOwnUs: us(pgOwn),
    pgAllUs: us(pg1.pgAll - pg0.pgAll),
    machineCores: ((m1.busy - m0.busy) / (m1.total - m0.total)) * b.cores,
    orderViolations,
    duplicates,
  };
}

async function parent(): Promise<void> {
  const started = performance.now();
  const loadBefore = await loadavg();
  const os = await import("node:os");
  const cores = os.availableParallelism?.() ?? os.cpus().length;
  const postmasterPid = await listenerPid(Number(/:(\d+)\//.exec(PG_URL)?.[1] ?? 5432), "postgres");
  const schema = `bench_scale_out_${Date.now().toString(36)}`;
  const writerSql = pg({ max: 2 });
  const monitor = postgres(PG_URL, { max: 1, onnotice: () => {}, connection: { application_name: `${APP}-monitor` } });
  const runs: Run[] = [];
  let relays: Relay[] = [];
  let lockMode = "?";
  try {
    const writerStorage = postgresStorage(writerSql as unknown as PostgresSql, { schema });
    await writerStorage.setup();
    // Which claim lock this adapter takes, for the record (before/after figures).
    const [fn] = await writerSql.unsafe(
      `SELECT prosrc FROM pg_proc WHERE proname = 'outbox_claim_v3' AND pronamespace = $1::regnamespace`,
      [schema],
    );
    lockMode = String(fn?.prosrc ?? "").includes("pg_advisory_xact_lock_shared") ? "shared" : "exclusive";
    log(
      `scale-out: ${runtime}, ${MESSAGES} messages × ${REPEATS} repeats, keys ${KEYS.join("/")}, relays ${
        PROCESSES.join("/")
      }, publish ${PUBLISH_MS} ms, claim lock ${lockMode}, ${cores} cores, load ${loadBefore.join(" ")}`,
    );
    const maxN = Math.max(...PROCESSES);
    relays = await Promise.all(Array.from({ length: maxN }, () => spawnRelay(schema)));
    const b: Bench = {
      relays,
      writerSql,
      monitor,
      schema,
      writer: createOutbox({ storage: writerStorage, publisher: () => {} }),
      postmasterPid,
      cores,
    };
    // Warm-up: every child's JIT and pool; not recorded.
    await oneRun(b, 0, maxN, -1, 2_000 * maxN);
    await oneRun(b, 0, 1, -1, 2_000);
    for (let rep = 0; rep < REPEATS; rep++) {
      for (const keys of KEYS) {
        for (const n of rep % 2 === 0 ? PROCESSES : [...PROCESSES].reverse()) {
          const run = await oneRun(b, keys, n, rep, MESSAGES);
          runs.push(run);
          log(
            `  r${rep} keys=${keys} N=${n}: ${Math.round(run.rate)} msg/s (steady ${Math.round(run.steady)}), lanes ${
              (run.laneUse * 100).toFixed(0)
            }%, publish ${run.publishMeanMs.toFixed(2)} ms, claims ${run.claims} (${run.emptyClaims} empty) mean ${
              run.claimMeanMs.toFixed(1)
            } ms, lock wait claims ${Math.round(run.lock.claimWaitMs)} ms settles ${
              Math.round(run.lock.settleWaitMs)
            } ms, claims running ${(run.lock.claimHeldMs / run.lock.sampledMs * 100).toFixed(0)}%, cpu relay ${
              run.relayCpuUs.toFixed(1)
            } pg ${run.pgOwnUs.toFixed(1)} µs/msg, machine ${run.machineCores.toFixed(2)} cores, per relay ${
              run.perProcess.join("/")
            }, order violations ${run.orderViolations}`,
          );
        }
      }
    }
  } finally {
    await stopRelays(relays);
    await writerSql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await writerSql.end({ timeout: 1 });
    await monitor.end({ timeout: 1 });
  }
  report(runs, { started, loadBefore, cores, lockMode });
}

async function stopRelays(relays: Relay[]): Promise<void> {
  await Promise.all(relays.map((r) =>
    new Promise<void>((resolve) => {
      if (r.proc.exitCode !== null || r.proc.signalCode !== null) return resolve();
      // Ours to end if it does not leave on its own.
      const timer = setTimeout(() => r.proc.kill("SIGKILL"), 5_000);
      r.proc.once("exit", () => {
        clearTimeout(timer);
        resolve();
      });
      r.send({ cmd: "exit" });
      r.proc.stdin!.end();
    })
  ));
}

// ---- summary ----

function report(
  runs: Run[],
  meta: { started: number; loadBefore: number[]; cores: number; lockMode: string },
): void {
  const pubMs = median(runs.map((r) => r.publishMeanMs));
  // One relay: `concurrency` lanes, each a publish of PUBLISH_MS; a batch of 500 takes
  // ceil(500 / 32) = 16 rounds, so 500 per 16 × publish time (claim-ahead hides the claim).
  const rounds = Math.ceil(DEFAULT_BATCH / DEFAULT_CONCURRENCY);
  const ceiling = {
    lanes_per_s: Math.round((DEFAULT_CONCURRENCY * 1000) / PUBLISH_MS),
    batch_rounds_per_s: Math.round((DEFAULT_BATCH * 1000) / (rounds * PUBLISH_MS)),
    measured_publish_ms: round(pubMs, 3),
    with_measured_publish_per_s: Math.round((DEFAULT_BATCH * 1000) / (rounds * pubMs)),
  };
  const byCase = new Map<string, Run[]>();
  for (const r of runs) {
    const k = `${r.keys}|${r.n}`;
    (byCase.get(k) ?? byCase.set(k, []).get(k)!).push(r);
  }
  /** Per repeat (runs side by side), then the median. */
  const ratios = (keys: number, n: number) => {
    const xs: number[] = [];
    for (const r of byCase.get(`${keys}|${n}`) ?? []) {
      const one = byCase.get(`${keys}|1`)?.find((o) => o.repeat === r.repeat);
      if (one) xs.push(r.rate / one.rate);
    }
    return xs;
  };
  const cases = [...byCase.values()].map((rs) => {
    const { keys, n } = rs[0]!;
    const m = (f: (r: Run) => number) => median(rs.map(f));
    const rs1 = ratios(keys, n);
    return {
      keys,
      relays: n,
      runs: rs.length,
      drain_msgs_per_s: Math.round(m((r) => r.rate)),
      rates: rs.map((r) => Math.round(r.rate)),
      ratio_vs_1: round(median(rs1), 2),
      ratios_vs_1: rs1.map((x) => round(x, 2)),
      steady_msgs_per_s: Math.round(m((r) => r.steady)),
      per_relay_msgs_per_s: Math.round(m((r) => r.rate / r.n)),
      lane_use: round(m((r) => r.laneUse), 3),
      publish_mean_ms: round(m((r) => r.publishMeanMs), 3),
      first_publish_ms: round(m((r) => r.firstPublishMs), 1),
      drain_ms: Math.round(m((r) => r.drainMs)),
      claims: Math.round(m((r) => r.claims)),
      empty_claims: Math.round(m((r) => r.emptyClaims)),
      claim_mean_ms: round(m((r) => r.claimMeanMs), 2),
      claim_p99_ms: round(m((r) => r.claimP99Ms), 2),
      claim_lock_wait_ms: Math.round(m((r) => r.lock.claimWaitMs)),
      claim_lock_wait_per_claim_ms: round(m((r) => r.lock.claimWaitMs / Math.max(1, r.claims)), 2),
      // Waiting backend time over the relays' wall time (N × sampled window).
      claim_lock_wait_share: round(m((r) => r.lock.claimWaitMs / (r.n * r.lock.sampledMs)), 4),
      claims_running_share: round(m((r) => r.lock.claimHeldMs / r.lock.sampledMs), 3),
      claim_running_per_claim_ms: round(m((r) => r.lock.claimHeldMs / Math.max(1, r.claims)), 2),
      // Rows per second of claim-running time: with an exclusive claim lock, claims take
      // turns, and this is the most one table can claim per second (null when they overlap).
      serial_claim_ceiling_msgs_per_s: meta.lockMode === "exclusive"
        ? Math.round(m((r) => r.claimedRows / (r.lock.claimHeldMs / 1000)))
        : null,
      settle_lock_wait_ms: Math.round(m((r) => r.lock.settleWaitMs)),
      lock_samples: Math.round(m((r) => r.lock.samples)),
      settle_median_ms: round(m((r) => r.settleMedianMs), 2),
      relay_cpu_us: round(m((r) => r.relayCpuUs), 1),
      pg_own_us: round(m((r) => r.pgOwnUs), 1),
      pg_all_us: round(m((r) => r.pgAllUs), 1),
      machine_cores_busy: round(m((r) => r.machineCores), 2),
      order_violations: sumOf(rs.map((r) => r.orderViolations)),
      duplicates: sumOf(rs.map((r) => r.duplicates)),
    };
  });
  const f = (x: number | null, d = 1) => (x === null || !Number.isFinite(x) ? "–" : x.toFixed(d));
  const int = (x: number) => (Number.isFinite(x) ? x.toLocaleString("en-US") : "–");
  const lines = [
    "| runtime | keys | relays | drain msg/s | × 1 relay | steady msg/s | per relay msg/s | lane use | publish ms | claims (empty) | claim ms mean / p99 | claim lock wait: ms, ms per claim, % of relay time | claims running: % of time, ms per claim | serial claim ceiling msg/s | settle lock wait ms | relay CPU µs/msg | pg own / all µs/msg | machine cores busy | order violations |",
    "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
    ...cases.map((c) =>
      `| ${runtime} | ${c.keys === 0 ? "unkeyed" : int(c.keys)} | ${c.relays} | ${int(c.drain_msgs_per_s)} | **${
        f(c.ratio_vs_1, 2)
      }** | ${int(c.steady_msgs_per_s)} | ${int(c.per_relay_msgs_per_s)} | ${f((c.lane_use ?? NaN) * 100, 0)}% | ${
        f(c.publish_mean_ms, 2)
      } | ${c.claims} (${c.empty_claims}) | ${f(c.claim_mean_ms)} / ${f(c.claim_p99_ms)} | ${
        int(c.claim_lock_wait_ms)
      }, ${f(c.claim_lock_wait_per_claim_ms)}, ${f((c.claim_lock_wait_share ?? NaN) * 100)}% | ${
        f((c.claims_running_share ?? NaN) * 100, 0)
      }%, ${f(c.claim_running_per_claim_ms)} | ${
        c.serial_claim_ceiling_msgs_per_s === null ? "–" : int(c.serial_claim_ceiling_msgs_per_s)
      } | ${int(c.settle_lock_wait_ms)} | ${f(c.relay_cpu_us)} | ${f(c.pg_own_us)} / ${f(c.pg_all_us)} | ${
        f(c.machine_cores_busy, 2)
      } | ${c.order_violations} |`
    ),
  ];
  // Fewer keys than lanes cannot scale: a batch of 500 takes every key's next messages,
  // and the claim's per-key barrier holds the rest of each key behind them, so at most
  // `keys` publishes run at once in the whole fleet, whatever the number of relays.
  const keyCeiling = Object.fromEntries(
    KEYS.filter((k) => k > 0 && k < DEFAULT_CONCURRENCY).map((k) => [k, Math.round((k * 1000) / PUBLISH_MS)]),
  );
  // The target: modes whose keys let every relay fill its lanes (unkeyed, and at least
  // one batch of distinct keys per relay).
  const maxN = Math.max(...PROCESSES);
  const scaling = cases.filter((c) => c.relays === maxN && (c.keys === 0 || c.keys >= DEFAULT_BATCH * maxN));
  const targets_met = {
    scale_out_4x: maxN !== 4 || scaling.length === 0
      ? null
      : scaling.every((c) => c.ratio_vs_1 !== null && c.ratio_vs_1 >= 3.2),
  };
  console.log(lines.join("\n"));
  console.log(
    `\nClaim lock: ${meta.lockMode}. Per-relay ceiling with default options (concurrency ${DEFAULT_CONCURRENCY}, ` +
      `batchSize ${DEFAULT_BATCH}), publish ${PUBLISH_MS} ms: ${DEFAULT_CONCURRENCY} lanes / ${PUBLISH_MS} ms = ` +
      `${int(ceiling.lanes_per_s)} msg/s; a batch takes ${rounds} rounds of ${PUBLISH_MS} ms → ` +
      `${int(ceiling.batch_rounds_per_s)} msg/s; with the measured ${pubMs.toFixed(2)} ms per publish → ` +
      `${int(ceiling.with_measured_publish_per_s)} msg/s per relay.` +
      (Object.keys(keyCeiling).length > 0
        ? ` With fewer keys than lanes the whole fleet's ceiling is keys / publish time (${
          Object.entries(keyCeiling).map(([k, v]) => `${k} keys: ${int(v)} msg/s`).join(", ")
        }), whatever the number of relays.`
        : ""),
  );
  console.log(
    JSON.stringify({
      bench: "scale-out",
      runtime,
      runtime_id: runtimeId,
      command: `${runtimeId === "bun" ? "bun" : "node"} bench/scale-out.ts ${argv.join(" ")}`.trim(),
      date: new Date().toISOString(),
      messages: MESSAGES,
      repeats: REPEATS,
      publish_ms: PUBLISH_MS,
      sample_ms: SAMPLE_MS,
      claim_lock: meta.lockMode,
      cores: meta.cores,
      load_before: meta.loadBefore[0],
      wall_s: round((performance.now() - meta.started) / 1000, 1),
      per_relay_ceiling: ceiling,
      key_ceiling_msgs_per_s: keyCeiling,
      cases,
      targets_met,
    }),
  );
}

// ---- main ----

if (argv.includes("--child")) {
  const schema = flag("schema");
  if (!schema) throw new Error("--child needs --schema");
  await child(schema);
} else {
  await parent();
  // Don't wait for stray handles (timers of closed clients).
  g.process?.exit?.(0);
}
