/**
 * The relay as users run it, against the raw client, CPU per message per process.
 *
 *   npx bun bench/relay-cpu.ts [--messages 20000] [--repeats 3] [--only pg|libsql|mysql[,…]] [--keys 0,16,10000]
 *                              [--no-async-traces]
 *   node bench/both.mjs relay-cpu.ts [same flags]   Node (esbuild bundle) then Bun, one combined table
 *
 * Each pair of runs, interleaved, in one process:
 *
 * - raw: `js.publish(subject, body, { msgID })` of the very bodies the relay will send
 *   (the JSON text as stored in the outbox, read back from the database before timing),
 *   each with its own message id (uuidv7, made before timing), 256 in flight in a
 *   sliding window; nothing else in the loop;
 * - relay: `createOutbox({ storage, publisher: jetstreamPublisher(js) })` with default
 *   options, `outbox.start()` draining a committed backlog; Postgres (`postgresStorage`
 *   on postgres.js, default options), embedded libSQL (`libsqlStorage` on a temp file)
 *   or MariaDB (`mysqlStorage` on a mysql2/promise pool, default options; the "db server"
 *   column is then mariadbd's CPU, all its threads, from /proc/<pid>/stat).
 *
 * Every run gets a fresh file-backed stream (made with `ensureStream`, deleted after),
 * whose message count is checked. Per run: wall rate; this process's CPU
 * (`process.cpuUsage()`, all threads); nats-server's CPU (/proc/<pid>/stat of the process
 * listening on the NATS port); postgres CPU twice: the relay's own backends (pids from
 * `pg_stat_activity` by application_name) and every postgres process (postmaster, its
 * reaped and live children: backends of anyone, walwriter, checkpointer …). Nothing
 * is subtracted. Ratios relay/raw are per pair; the table shows their medians.
 *
 * The NATS connection is made as users make it by default. `--no-async-traces` connects
 * with `noAsyncTraces: true`: nats.js then no longer builds two Error objects (stack
 * captures) per publish, which is a large share of the client's CPU in raw and relay alike.
 *
 * Node process warnings seen during relay runs are counted and printed.
 * stdout: a markdown table, then one JSON line (`targets_met` from issue 13).
 *
 * @module
 */

import * as fs from "node:fs";
import { jetstream, type JetStreamClient, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import postgres from "postgres";
import { createOutbox, uuidv7 } from "../mod.ts";
import { ensureStream, jetstreamPublisher } from "../adapters/nats/mod.ts";
import { type BenchStore, libsqlStore, MYSQL_URL, mysqlStore, postgresStore } from "./stores.ts";
import {
  argv,
  drainWithStart,
  flag,
  g,
  listenerPid,
  loadavg,
  log,
  median,
  NATS_URL,
  PG_URL,
  procStatSync,
  rawPublishWindow,
  round,
  selfCpuMs,
  type ServerCpu,
  serverCpuSync,
  sleep,
} from "./lib.ts";

// ---- arguments ----

const MESSAGES = Number(flag("messages") ?? 20_000);
const REPEATS = Number(flag("repeats") ?? 3);
const STORES = ["pg", "libsql", "mysql"] as const;
const ONLY = flag("only")?.split(",");
const KEYS = (flag("keys") ?? "0,16,10000").split(",").map(Number);
const NO_ASYNC_TRACES = argv.includes("--no-async-traces");
const IN_FLIGHT = 256;
const WARMUP = Math.min(2_000, MESSAGES);
if (!(MESSAGES > 0) || !(REPEATS > 0) || KEYS.some((k) => !(k >= 0))) {
  throw new Error("usage: relay-cpu.ts [--messages N] [--repeats N] [--only pg|libsql|mysql[,…]] [--keys 0,16,10000]");
}
if (ONLY?.some((s) => !(STORES as readonly string[]).includes(s))) throw new Error("--only takes pg, libsql or mysql");
const wanted = (s: (typeof STORES)[number]) => ONLY === undefined || ONLY.includes(s);

const RELAY_APP = "x-outbox-relay-cpu"; // application_name of the relay's Postgres connections
const runtime = g.Bun ? `Bun ${g.Bun.version}` : g.Deno ? `Deno ${g.Deno.version.deno}` : `Node ${g.process?.version}`;
const runtimeId = g.Bun ? "bun" : g.Deno ? "deno" : "node";

// ---- warnings (Node's process warnings, e.g. MaxListenersExceededWarning) ----

let phase: string | null = null;
const warnings = new Map<string, { count: number; name: string; message: string }>();
g.process?.on?.("warning", (w: Error) => {
  const where = phase ?? "outside runs";
  const k = `${where}\u0000${w.name}`;
  const seen = warnings.get(k);
  if (seen) seen.count++;
  else warnings.set(k, { count: 1, name: w.name, message: w.message });
});
const warningsIn = (prefix: string) =>
  [...warnings.entries()].filter(([k]) => k.startsWith(prefix)).reduce((s, [, v]) => s + v.count, 0);

// ---- snapshots ----

const portOf = (url: string, fallback: number) => {
  const m = /:(\d+)(?:[/?]|$)/.exec(url.replace(/^[a-z]+:\/\//, "").replace(/^[^@]*@/, ""));
  return m ? Number(m[1]) : fallback;
};
const natsPid = await listenerPid(portOf(NATS_URL, 4222), "nats-server");
const postmasterPid = await listenerPid(portOf(PG_URL, 5432), "postgres");
const mariadbPid = wanted("mysql") ? await listenerPid(portOf(MYSQL_URL, 3306), "mariadbd") : null;
const mariadbCpu = () => (mariadbPid === null ? NaN : procStatSync(fs.readFileSync, mariadbPid)?.cpuMs ?? NaN);

interface Snap extends ServerCpu {
  t: number;
  self: number;
  mariadb: number;
}
/** Start of a window: servers first, then this process, then the clock. */
const snapStart = (): Snap => {
  const s = serverCpuSync(fs, natsPid, postmasterPid);
  const mariadb = mariadbCpu();
  const self = selfCpuMs();
  return { ...s, mariadb, self, t: performance.now() };
};
/** End of a window: the clock, this process, then the servers. */
const snapEnd = (): Snap => {
  const t = performance.now();
  const self = selfCpuMs();
  return { ...serverCpuSync(fs, natsPid, postmasterPid), mariadb: mariadbCpu(), self, t };
};

interface Run {
  rate: number;
  /** µs per message */
  self: number;
  nats: number;
  pgAll: number;
  pgOwn: number;
  /** mariadbd, all threads, µs per message */
  mariadb: number;
  /** this process's cores busy: CPU time / wall time */
  selfCores: number;
}
const perMsg = (a: Snap, b: Snap, n: number, ownPids: readonly number[]): Run => {
  let own = 0;
  for (const pid of ownPids) own += (b.pgByPid.get(pid) ?? 0) - (a.pgByPid.get(pid) ?? 0);
  return {
    rate: n / ((b.t - a.t) / 1000),
    self: ((b.self - a.self) * 1000) / n,
    nats: ((b.nats - a.nats) * 1000) / n,
    pgAll: ((b.pgAll - a.pgAll) * 1000) / n,
    pgOwn: ownPids.length === 0 ? NaN : (own * 1000) / n,
    mariadb: ((b.mariadb - a.mariadb) * 1000) / n,
    selfCores: (b.self - a.self) / (b.t - a.t),
  };
};

// ---- services ----

const nc = await connect({ servers: NATS_URL, noAsyncTraces: NO_ASYNC_TRACES });
const js: JetStreamClient = jetstream(nc);
const jsm: JetStreamManager = await jetstreamManager(nc);
const monitor = postgres(PG_URL, {
  max: 1,
  onnotice: () => {},
  connection: { application_name: `${RELAY_APP}-monitor` },
});

// ---- runs ----

let streamSeq = 0;
/** The default outbox's retry horizon, which ensureStream sizes the duplicate window by (set once stores exist). */
let retryHorizonMs = 0;
/** A fresh file-backed stream; name and subject of equal length for every run. */
async function freshStream(): Promise<{ name: string; subject: string; drop(): Promise<void> }> {
  const tag = `${Date.now().toString(36)}${(streamSeq++).toString(36).padStart(3, "0")}`;
  const name = `CPU${tag.toUpperCase()}`;
  await ensureStream(jsm, {
    name,
    subjects: [`cpu${tag}.>`],
    outbox: { retryHorizonMs },
    storage: "file" as never,
  });
  return {
    name,
    subject: `cpu${tag}.orders`,
    async drop() {
      await jsm.streams.delete(name).catch(() => {});
    },
  };
}
const streamCount = async (name: string) => (await jsm.streams.info(name)).state.messages;

async function rawRun(bodies: readonly (string | Uint8Array)[], ids: readonly string[]): Promise<Run> {
  const stream = await freshStream();
  try {
    const a = snapStart();
    await rawPublishWindow(js, stream.subject, bodies, ids, IN_FLIGHT);
    const b = snapEnd();
    const got = await streamCount(stream.name);
    if (got !== bodies.length) throw new Error(`raw: stream holds ${got} messages, expected ${bodies.length}`);
    return perMsg(a, b, bodies.length, []);
  } finally {
    await stream.drop();
  }
}

/** Drains the backlog already in `store` (topic = stream.subject) with start(), default options. */
async function relayRun(
  store: BenchStore,
  stream: { name: string; subject: string },
  n: number,
  label: string,
): Promise<Run> {
  const outbox = createOutbox({ storage: store.relayStorage, publisher: jetstreamPublisher(js) });
  let end: Snap | null = null;
  phase = label;
  const a = snapStart();
  try {
    await drainWithStart(outbox, n, label, () => (end = snapEnd()));
  } finally {
    phase = null;
  }
  const own = await store.ownPids();
  const got = await streamCount(stream.name);
  const left = await store.count();
  if (got !== n || left !== 0) {
    throw new Error(`${label}: stream holds ${got} messages (expected ${n}), ${left} rows left`);
  }
  return perMsg(a, end!, n, own);
}

interface Pair {
  raw: Run;
  relay: Run;
}
/** One raw run and one relay run over the same stored bodies; `rawFirst` picks the order. */
async function pair(store: BenchStore, n: number, keys: number, rawFirst: boolean, label: string): Promise<Pair> {
  const stream = await freshStream();
  try {
    await store.fill(n, keys, stream.subject);
    const bodies = (await store.rows()).map((r) => r.body);
    if (bodies.length !== n) throw new Error(`${label}: ${bodies.length} rows stored, expected ${n}`);
    const ids = Array.from({ length: n }, () => uuidv7());
    let raw: Run | null = null;
    if (rawFirst) raw = await rawRun(bodies, ids);
    const relay = await relayRun(store, stream, n, label);
    if (!rawFirst) raw = await rawRun(bodies, ids);
    return { raw: raw!, relay };
  } finally {
    await stream.drop();
  }
}

// ---- main ----

const started = performance.now();
const loadBefore = await loadavg();
log(
  `relay-cpu: ${runtime}, ${MESSAGES} messages × ${REPEATS} repeats, keys ${KEYS.join("/")}${
    NO_ASYNC_TRACES ? ", noAsyncTraces" : ""
  }, ` +
    `nats-server pid ${natsPid}, postmaster pid ${postmasterPid}, load ${loadBefore.join(" ")}`,
);

/** Server CPU while nothing of ours runs (other sessions, background work), ms per s. */
async function idle(ms = 1_000) {
  const a = snapStart();
  await sleep(ms);
  const b = snapEnd();
  const s = (b.t - a.t) / 1000;
  return { nats_ms_per_s: round((b.nats - a.nats) / s, 1), pg_all_ms_per_s: round((b.pgAll - a.pgAll) / s, 1) };
}
const idleBefore = await idle();

const stores: BenchStore[] = [];
if (wanted("pg")) stores.push(await postgresStore("bench_cpu", RELAY_APP));
if (wanted("libsql")) stores.push(await libsqlStore());
if (wanted("mysql")) stores.push(await mysqlStore("bench_cpu"));
retryHorizonMs = createOutbox({ storage: stores[0]!.relayStorage, publisher: () => {} }).retryHorizonMs;
const modeName = (keys: number) => (keys === 0 ? "unkeyed" : `${keys}keys`);
const pairs = new Map<string, Pair[]>();

try {
  // Warm-up (JIT, connections, stream files); not recorded.
  for (const store of stores) await pair(store, WARMUP, 0, true, `warmup ${store.name}`);

  for (let r = 0; r < REPEATS; r++) {
    for (const store of stores) {
      for (const keys of KEYS) {
        const k = `${store.name}_${modeName(keys)}`;
        const p = await pair(store, MESSAGES, keys, r % 2 === 0, `relay ${k}`);
        (pairs.get(k) ?? pairs.set(k, []).get(k)!).push(p);
        log(
          `  r${r} ${k}: raw ${Math.round(p.raw.rate)} msg/s ${p.raw.self.toFixed(1)} µs/msg (nats ${
            p.raw.nats.toFixed(1)
          }) | relay ${Math.round(p.relay.rate)} msg/s ${p.relay.self.toFixed(1)} µs/msg (nats ${
            p.relay.nats.toFixed(1)
          }, ${
            store.name === "mysql"
              ? `mariadbd ${p.relay.mariadb.toFixed(1)}`
              : `pg own ${p.relay.pgOwn.toFixed(1)}, pg all ${p.relay.pgAll.toFixed(1)}`
          }) | rate ${(p.relay.rate / p.raw.rate).toFixed(2)}× cpu ${(p.relay.self / p.raw.self).toFixed(2)}×`,
        );
      }
    }
  }
} finally {
  for (const store of stores) await store.close();
  await monitor.end({ timeout: 1 });
  await nc.close();
}
const idleAfter = await idle();
const loadAfter = await loadavg();

// ---- summary ----

const cases = [...pairs.entries()].map(([k, ps]) => {
  const m = (f: (p: Pair) => number) => round(median(ps.map(f)), 2);
  return {
    case: k,
    storage: k.split("_")[0] as "pg" | "libsql" | "mysql",
    mode: k.split("_")[1]!,
    raw_msgs_per_s: Math.round(median(ps.map((p) => p.raw.rate))),
    relay_msgs_per_s: Math.round(median(ps.map((p) => p.relay.rate))),
    rate_vs_raw: m((p) => p.relay.rate / p.raw.rate),
    raw_cpu_us: m((p) => p.raw.self),
    relay_cpu_us: m((p) => p.relay.self),
    relay_cpu_vs_raw: m((p) => p.relay.self / p.raw.self),
    raw_cores: m((p) => p.raw.selfCores),
    relay_cores: m((p) => p.relay.selfCores),
    nats_raw_us: m((p) => p.raw.nats),
    nats_relay_us: m((p) => p.relay.nats),
    nats_vs_raw: m((p) => p.relay.nats / p.raw.nats),
    pg_own_us: m((p) => p.relay.pgOwn),
    pg_all_relay_us: m((p) => p.relay.pgAll),
    pg_all_raw_us: m((p) => p.raw.pgAll),
    mariadb_relay_us: m((p) => p.relay.mariadb),
    mariadb_raw_us: m((p) => p.raw.mariadb),
    pair_rate_ratios: ps.map((p) => round(p.relay.rate / p.raw.rate)),
    pair_cpu_ratios: ps.map((p) => round(p.relay.self / p.raw.self)),
    pair_nats_ratios: ps.map((p) => round(p.relay.nats / p.raw.nats)),
    warnings: warningsIn(`relay ${k}\u0000`),
  };
});

/** null: no case ran; a ratio that could not be measured (no CPU ticks seen) counts as not met. */
const all = <T>(xs: T[], f: (x: T) => number | null, ok: (v: number) => boolean) =>
  xs.length === 0 ? null : xs.every((x) => {
    const v = f(x);
    return v !== null && Number.isFinite(v) && ok(v);
  });
const of = (s: string) => cases.filter((c) => c.storage === s);
const targets_met = {
  relay_cpu_pg_le_1_25x_raw: all(of("pg"), (c) => c.relay_cpu_vs_raw, (v) => v <= 1.25),
  relay_cpu_libsql_le_1_5x_raw: all(of("libsql"), (c) => c.relay_cpu_vs_raw, (v) => v <= 1.5),
  nats_cpu_le_1_15x_raw: all(cases, (c) => c.nats_vs_raw, (v) => v <= 1.15),
  drain_rate_ge_0_65x_raw: all(cases, (c) => c.rate_vs_raw, (v) => v >= 0.65),
};

const fmt = (x: number | null, d = 1) => (x === null || !Number.isFinite(x) ? "–" : x.toFixed(d));
const label = (c: (typeof cases)[number]) =>
  `${c.storage === "pg" ? "Postgres" : c.storage === "mysql" ? "MariaDB" : "libSQL"} | ${
    c.mode === "unkeyed" ? "unkeyed" : c.mode.replace("keys", " keys")
  }`;
const TABLE_HEAD = [
  "| runtime | storage | keys | raw msg/s | relay msg/s | rate relay/raw | raw CPU µs/msg | relay CPU µs/msg | CPU relay/raw | nats µs raw | nats µs relay | nats relay/raw | pg own µs | db server µs relay / raw run | relay cores busy | warnings |",
  "| --- | --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
];
const rows = cases.map((c) =>
  `| ${runtime} | ${label(c)} | ${c.raw_msgs_per_s.toLocaleString("en-US")} | ${
    c.relay_msgs_per_s.toLocaleString("en-US")
  } | **${fmt(c.rate_vs_raw, 2)}** | ${fmt(c.raw_cpu_us)} | ${fmt(c.relay_cpu_us)} | **${
    fmt(c.relay_cpu_vs_raw, 2)
  }** | ${fmt(c.nats_raw_us)} | ${fmt(c.nats_relay_us)} | **${fmt(c.nats_vs_raw, 2)}** | ${fmt(c.pg_own_us)} | ${
    c.storage === "mysql"
      ? `${fmt(c.mariadb_relay_us)} / ${fmt(c.mariadb_raw_us)}`
      : `${fmt(c.pg_all_relay_us)} / ${fmt(c.pg_all_raw_us)}`
  } | ${fmt(c.relay_cores, 2)} | ${c.warnings} |`
);

const warningList = [...warnings.entries()].map(([k, v]) => ({
  phase: k.split("\u0000")[0],
  name: v.name,
  count: v.count,
  message: v.message.slice(0, 300),
}));

console.log([...TABLE_HEAD, ...rows].join("\n"));
if (warningList.length > 0) {
  console.log("\nProcess warnings:");
  for (const w of warningList) console.log(`- ${w.phase}: ${w.count} × ${w.name}: ${w.message}`);
}
console.log(
  JSON.stringify({
    bench: "relay-cpu",
    runtime,
    runtime_id: runtimeId,
    messages: MESSAGES,
    repeats: REPEATS,
    in_flight: IN_FLIGHT,
    no_async_traces: NO_ASYNC_TRACES,
    wall_s: round((performance.now() - started) / 1000, 1),
    load_before: loadBefore[0],
    load_after: loadAfter[0],
    idle_before: idleBefore,
    idle_after: idleAfter,
    nats_pid: natsPid,
    postmaster_pid: postmasterPid,
    mariadb_pid: mariadbPid,
    cases,
    warnings: warningList,
    targets_met,
  }),
);
// Don't wait for stray handles (timers of closed clients).
g.process?.exit?.(0);
