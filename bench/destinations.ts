/**
 * The relay into Redis Streams and RabbitMQ against each broker's raw client, CPU per
 * message per process.
 *
 *   npx bun bench/destinations.ts [--messages 20000] [--repeats 3] [--only redis|amqp] [--store pg|libsql]
 *                                 [--keys 0,16]
 *   node bench/both.mjs destinations.ts [same flags]   Node (esbuild bundle) then Bun, one combined table
 *
 * For each broker, storage (Postgres, embedded libSQL) and key mode (unkeyed, 16 keys),
 * interleaved runs in one process over the same committed backlog:
 *
 * - relay: `createOutbox({ storage, publisher })` with default options, `outbox.start()`
 *   draining the backlog; the publisher with its default options:
 *   `redisStreamsPublisher(redis)` or `amqpPublisher(() => connection.createConfirmChannel())`;
 * - Redis raw XADD: node-redis `xAdd(stream, "*", fields)` with the fields the publisher
 *   writes (`id`, `topic`, `key` when keyed, `body` = the stored JSON text), 256 in
 *   flight in a sliding window, nothing else in the loop;
 * - Redis raw EVALSHA: node-redis `evalSha` of the publisher's own dedup script (its text
 *   captured from the publisher's `scriptLoad` call) with the same keys and arguments
 *   the publisher sends, 256 in flight: the publisher's server-side work without the relay;
 * - RabbitMQ raw: amqplib `ConfirmChannel.publish("", queue, body, properties, callback)`
 *   with the properties the publisher sets (`mandatory`, `persistent`, `messageId`,
 *   `type`, `timestamp`, `contentType`, `headers`), 256 unconfirmed in a sliding window
 *   of per-message confirm callbacks, into a durable queue.
 *
 * Bodies, ids and fields are made (read back from the database) before timing. Every run
 * gets a fresh stream or durable queue; its count (XLEN, the queue's message count) is
 * checked, then it is deleted (with the dedup keys of the script, by SCAN). Per run:
 * wall rate; this process's CPU (`process.cpuUsage()`, all threads); the broker's CPU
 * (/proc/<pid>/stat of the process listening on its port: redis-server, beam.smp); every
 * postgres process's CPU. Ratios relay/raw are per pair; the table shows their medians.
 *
 * stdout: a markdown table, then one JSON line (`targets_met` is `{}`: issue 16 asks for
 * the figures, no ratio target).
 *
 * @module
 */

import * as fs from "node:fs";
import { Buffer } from "node:buffer";
import { connect as amqpConnect } from "amqplib";
import { createClient } from "redis";
import { createOutbox, type OutboxRecord, type Publisher, uuidv7 } from "../mod.ts";
import { amqpPublisher } from "../adapters/amqp/mod.ts";
import { redisStreamsPublisher } from "../adapters/redis/mod.ts";
import {
  drainWithStart,
  env,
  flag,
  g,
  listenerPid,
  loadavg,
  log,
  median,
  PG_URL,
  round,
  selfCpuMs,
  serverCpuSync,
  sleep,
} from "./lib.ts";
import { type BenchStore, libsqlStore, postgresStore, type StoredRow } from "./stores.ts";

/** A stored row whose payload is JSON text (the backlogs here are). */
type TextRow = StoredRow & { body: string };
const textRow = (r: StoredRow): TextRow => {
  if (typeof r.body !== "string") throw new Error(`row ${r.id}: expected a JSON text payload`);
  return r as TextRow;
};

// ---- arguments ----

const MESSAGES = Number(flag("messages") ?? 20_000);
const REPEATS = Number(flag("repeats") ?? 3);
const ONLY = flag("only");
const STORE = flag("store");
const KEYS = (flag("keys") ?? "0,16").split(",").map(Number);
const IN_FLIGHT = 256;
const WARMUP = Math.min(2_000, MESSAGES);
const USAGE =
  "usage: destinations.ts [--messages N] [--repeats N] [--only redis|amqp] [--store pg|libsql] [--keys 0,16]";
if (!(MESSAGES > 0) || !(REPEATS > 0) || KEYS.some((k) => !(k >= 0))) throw new Error(USAGE);
if (ONLY !== undefined && ONLY !== "redis" && ONLY !== "amqp") throw new Error(USAGE);
if (STORE !== undefined && STORE !== "pg" && STORE !== "libsql") throw new Error(USAGE);

const REDIS_URL = env("OUTBOX_BENCH_REDIS_URL") ?? "redis://127.0.0.1:6379";
const AMQP_URL = env("OUTBOX_BENCH_AMQP_URL") ?? "amqp://guest:guest@127.0.0.1:5672";
const runtime = g.Bun ? `Bun ${g.Bun.version}` : g.Deno ? `Deno ${g.Deno.version.deno}` : `Node ${g.process?.version}`;
const runtimeId = g.Bun ? "bun" : g.Deno ? "deno" : "node";

// ---- warnings (Node's process warnings, e.g. MaxListenersExceededWarning) ----

let phase: string | null = null;
const warnings = new Map<string, { phase: string; name: string; count: number; message: string }>();
g.process?.on?.("warning", (w: Error) => {
  const where = phase ?? "outside runs";
  const k = `${where}\u0000${w.name}`;
  const seen = warnings.get(k);
  if (seen) seen.count++;
  else warnings.set(k, { phase: where, name: w.name, count: 1, message: w.message.slice(0, 300) });
});

// ---- CPU snapshots ----

const portOf = (url: string, fallback: number) => {
  const m = /:(\d+)(?:[/?]|$)/.exec(url.replace(/^[a-z]+:\/\//, "").replace(/^[^@]*@/, ""));
  return m ? Number(m[1]) : fallback;
};
const redisPid = await listenerPid(portOf(REDIS_URL, 6379), "redis-server");
const beamPid = await listenerPid(portOf(AMQP_URL, 5672), "beam.smp");
const postmasterPid = await listenerPid(portOf(PG_URL, 5432), "postgres");

interface Snap {
  t: number;
  self: number;
  broker: number;
  pgAll: number;
}
// serverCpuSync reads one process's CPU in its `nats` slot: here the broker's.
const servers = (brokerPid: number | null) => {
  const s = serverCpuSync(fs, brokerPid, postmasterPid);
  return { broker: s.nats, pgAll: s.pgAll };
};
/** Start of a window: servers first, then this process, then the clock. */
const snapStart = (brokerPid: number | null): Snap => {
  const s = servers(brokerPid);
  const self = selfCpuMs();
  return { ...s, self, t: performance.now() };
};
/** End of a window: the clock, this process, then the servers. */
const snapEnd = (brokerPid: number | null): Snap => {
  const t = performance.now();
  const self = selfCpuMs();
  return { ...servers(brokerPid), self, t };
};

interface Run {
  rate: number;
  /** µs per message */
  self: number;
  broker: number;
  pgAll: number;
  /** this process's cores busy: CPU time / wall time */
  selfCores: number;
}
const perMsg = (a: Snap, b: Snap, n: number): Run => ({
  rate: n / ((b.t - a.t) / 1000),
  self: ((b.self - a.self) * 1000) / n,
  broker: ((b.broker - a.broker) * 1000) / n,
  pgAll: ((b.pgAll - a.pgAll) * 1000) / n,
  selfCores: (b.self - a.self) / (b.t - a.t),
});

// ---- stores ----

// ---- brokers ----

/** A raw reference: what it is called, and one timed send of `rows` into `target`. */
interface RawRef {
  name: string;
  /** Makes what is sent (outside timing); returns the timed send. */
  prepare(target: string, rows: readonly TextRow[]): () => Promise<void>;
}
interface Broker {
  name: "redis" | "amqp";
  pid: number | null;
  /** A fresh target (stream or queue) name; the topic of the backlog is this name. */
  fresh(): Promise<string>;
  count(target: string): Promise<number>;
  drop(target: string): Promise<void>;
  publisher(): Publisher;
  raws: RawRef[];
  close(): Promise<void>;
}

let seq = 0;
const tag = () => `${Date.now().toString(36)}${(seq++).toString(36).padStart(3, "0")}`;

/** Sends items 0 … n−1 with `inFlight` outstanding: `inFlight` lanes, each sends its next as its last is done. */
async function window(n: number, inFlight: number, send: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const lane = async () => {
    for (let i = next++; i < n; i = next++) await send(i);
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, n) }, lane));
}

async function redisBroker(): Promise<Broker> {
  const redis = createClient({ url: REDIS_URL });
  redis.on("error", (e: unknown) => log("redis error", e));
  await redis.connect();
  // The publisher's script text and SHA: a publisher whose client records what it loads
  // and answers the EVALSHA itself (nothing reaches the server but the SCRIPT LOAD).
  let script: string | null = null;
  const probe = redisStreamsPublisher({
    scriptLoad: (s: string) => {
      script = s;
      return redis.scriptLoad(s);
    },
    evalSha: () => Promise.resolve([1, "0-1"]),
  });
  const probeRecord = (topic: string, id: string): OutboxRecord => ({
    id,
    seq: 0,
    topic,
    key: null,
    payload: {},
    body: "{}",
    headers: {},
    attempts: 1,
    createdAt: new Date(),
  });
  await probe.publish(probeRecord("bench:probe", uuidv7()), { signal: new AbortController().signal });
  if (script === null) throw new Error("could not capture the publisher's script");
  const sha = String(await redis.scriptLoad(script));
  const DEDUP_TTL = String(24 * 60 * 60 * 1_000); // the publisher's default dedupTtlMs
  const fieldsOf = (stream: string, r: TextRow): Record<string, string> => {
    const f: Record<string, string> = { id: r.id, topic: stream };
    if (r.key !== null) f.key = r.key;
    f.body = r.body;
    return f;
  };
  return {
    name: "redis",
    pid: redisPid,
    fresh: () => Promise.resolve(`bench:dest:${tag()}`),
    count: async (stream) => Number(await redis.xLen(stream)),
    async drop(stream) {
      await redis.del(stream);
      // The dedup keys of the publisher's script (24 h TTL): {stream}:outbox-id:<id>.
      const match = `${probe.dedupKeyOf(probeRecord(stream, "")).replace(/[*?[\]\\]/g, "\\$&")}*`;
      for await (const batch of redis.scanIterator({ MATCH: match, COUNT: 5_000 })) {
        const keys = (Array.isArray(batch) ? batch : [batch]) as string[];
        if (keys.length > 0) await redis.unlink(keys);
      }
    },
    publisher: () => redisStreamsPublisher(redis),
    raws: [
      {
        name: "XADD",
        prepare(stream, rows) {
          const fields = rows.map((r) => fieldsOf(stream, r));
          return () => window(fields.length, IN_FLIGHT, (i) => redis.xAdd(stream, "*", fields[i]!));
        },
      },
      {
        name: "EVALSHA (publisher's script)",
        prepare(stream, rows) {
          const calls = rows.map((r) => ({
            keys: [stream, probe.dedupKeyOf(probeRecord(stream, r.id))],
            arguments: [DEDUP_TTL, "0", ...Object.entries(fieldsOf(stream, r)).flat()],
          }));
          return () => window(calls.length, IN_FLIGHT, (i) => redis.evalSha(sha, calls[i]!));
        },
      },
    ],
    async close() {
      await redis.close();
    },
  };
}

async function amqpBroker(): Promise<Broker> {
  const connection = await amqpConnect(AMQP_URL);
  connection.on("error", (e: unknown) => log("amqp connection error", e));
  const admin = await connection.createChannel();
  const raw = await connection.createConfirmChannel();
  raw.on("return", (m: { properties: { messageId?: string } }) => log("raw: returned", m.properties.messageId));
  const publishers: Publisher[] = [];
  return {
    name: "amqp",
    pid: beamPid,
    async fresh() {
      const queue = `bench.dest.${tag()}`;
      // Durable: persistent messages go to disk before the confirm, as in production.
      await admin.assertQueue(queue, { durable: true, autoDelete: false });
      return queue;
    },
    count: async (queue) => (await admin.checkQueue(queue)).messageCount,
    async drop(queue) {
      await admin.deleteQueue(queue);
    },
    publisher() {
      const p = amqpPublisher(() => connection.createConfirmChannel());
      publishers.push(p);
      return p;
    },
    raws: [{
      name: "publish + confirm",
      prepare(queue, rows) {
        const now = Math.floor(Date.now() / 1000);
        const sends = rows.map((r) => ({
          content: Buffer.from(r.body, "utf8"),
          options: {
            mandatory: true,
            persistent: true,
            messageId: r.id,
            type: queue,
            timestamp: now,
            contentType: "application/json",
            headers: r.key === null ? {} : { "x-outbox-key": r.key },
          },
        }));
        return () =>
          window(sends.length, IN_FLIGHT, (i) =>
            new Promise<void>((resolve, reject) => {
              const s = sends[i]!;
              raw.publish("", queue, s.content, s.options, (error: unknown) => error ? reject(error) : resolve());
            }));
      },
    }],
    async close() {
      for (const p of publishers) await p.close?.();
      await raw.close().catch(() => {});
      await admin.close().catch(() => {});
      await connection.close().catch(() => {});
    },
  };
}

// ---- runs ----

async function rawRun(broker: Broker, ref: RawRef, rows: readonly TextRow[]): Promise<Run> {
  const target = await broker.fresh();
  try {
    const send = ref.prepare(target, rows);
    const a = snapStart(broker.pid);
    await send();
    const b = snapEnd(broker.pid);
    const got = await broker.count(target);
    if (got !== rows.length) throw new Error(`raw ${ref.name}: ${target} holds ${got}, expected ${rows.length}`);
    return perMsg(a, b, rows.length);
  } finally {
    await broker.drop(target);
  }
}

/** Drains the backlog already in `store` (topic = target) with start(), default options. */
async function relayRun(store: BenchStore, broker: Broker, target: string, n: number, label: string): Promise<Run> {
  const outbox = createOutbox({ storage: store.relayStorage, publisher: broker.publisher() });
  let end: Snap | null = null;
  phase = label;
  const a = snapStart(broker.pid);
  try {
    await drainWithStart(outbox, n, label, () => (end = snapEnd(broker.pid)));
  } finally {
    phase = null;
  }
  const got = await broker.count(target);
  const left = await store.count();
  if (got !== n || left !== 0) throw new Error(`${label}: ${target} holds ${got} (expected ${n}), ${left} rows left`);
  return perMsg(a, end!, n);
}

interface Result {
  relay: Run;
  raws: Run[];
}
/** The relay and every raw reference over the same stored rows; `rawFirst` picks the order. */
async function group(
  store: BenchStore,
  broker: Broker,
  n: number,
  keys: number,
  rawFirst: boolean,
  label: string,
): Promise<Result> {
  const target = await broker.fresh();
  try {
    await store.fill(n, keys, target);
    const rows = (await store.rows()).map(textRow);
    if (rows.length !== n) throw new Error(`${label}: ${rows.length} rows stored, expected ${n}`);
    const raws: Run[] = new Array(broker.raws.length);
    const order = broker.raws.map((_, i) => i);
    if (rawFirst) { for (const i of order) raws[i] = await rawRun(broker, broker.raws[i]!, rows); }
    const relay = await relayRun(store, broker, target, n, label);
    if (!rawFirst) { for (const i of order.reverse()) raws[i] = await rawRun(broker, broker.raws[i]!, rows); }
    return { relay, raws };
  } finally {
    await broker.drop(target);
  }
}

// ---- main ----

const started = performance.now();
const loadBefore = await loadavg();
log(
  `destinations: ${runtime}, ${MESSAGES} messages × ${REPEATS} repeats, keys ${KEYS.join("/")}, ` +
    `redis-server pid ${redisPid}, beam.smp pid ${beamPid}, postmaster pid ${postmasterPid}, load ${
      loadBefore.join(" ")
    }`,
);

/** Broker CPU while nothing of ours runs (other sessions, background work), ms per s. */
async function idle(ms = 1_000) {
  const out: Record<string, number | null> = {};
  for (const [name, pid] of [["redis", redisPid], ["amqp", beamPid]] as const) {
    const a = snapStart(pid);
    await sleep(ms);
    const b = snapEnd(pid);
    const s = (b.t - a.t) / 1000;
    out[`${name}_ms_per_s`] = round((b.broker - a.broker) / s, 1);
    out[`${name}_pg_all_ms_per_s`] = round((b.pgAll - a.pgAll) / s, 1);
  }
  return out;
}
const idleBefore = await idle();

const stores: BenchStore[] = [];
if (STORE !== "libsql") stores.push(await postgresStore("bench_dest", "x-outbox-bench-destinations"));
if (STORE !== "pg") stores.push(await libsqlStore());
const brokers: Broker[] = [];
if (ONLY !== "amqp") brokers.push(await redisBroker());
if (ONLY !== "redis") brokers.push(await amqpBroker());
const modeName = (keys: number) => (keys === 0 ? "unkeyed" : `${keys}keys`);
const results = new Map<string, Result[]>();

try {
  // Warm-up (JIT, connections, script cache, queue files); not recorded.
  for (const broker of brokers) {
    for (const store of stores) await group(store, broker, WARMUP, 0, true, `warmup ${broker.name} ${store.name}`);
  }
  for (let r = 0; r < REPEATS; r++) {
    for (const broker of brokers) {
      for (const store of stores) {
        for (const keys of KEYS) {
          const k = `${broker.name}_${store.name}_${modeName(keys)}`;
          const res = await group(store, broker, MESSAGES, keys, r % 2 === 0, `relay ${k}`);
          (results.get(k) ?? results.set(k, []).get(k)!).push(res);
          log(
            `  r${r} ${k}: relay ${Math.round(res.relay.rate)} msg/s ${res.relay.self.toFixed(1)} µs/msg (broker ${
              res.relay.broker.toFixed(1)
            }) | ${
              res.raws.map((x, i) =>
                `${broker.raws[i]!.name} ${Math.round(x.rate)} msg/s ${x.self.toFixed(1)} µs/msg (broker ${
                  x.broker.toFixed(1)
                }) ratio ${(res.relay.rate / x.rate).toFixed(2)}×`
              ).join(" | ")
            }`,
          );
        }
      }
    }
  }
} finally {
  for (const store of stores) await store.close();
  for (const broker of brokers) await broker.close();
}
const idleAfter = await idle();
const loadAfter = await loadavg();

// ---- summary ----

const cases = [...results.entries()].flatMap(([k, rs]) => {
  const [broker, storage, mode] = k.split("_") as ["redis" | "amqp", "pg" | "libsql", string];
  const refs = brokers.find((b) => b.name === broker)!.raws;
  return refs.map((ref, i) => {
    const m = (f: (r: Result) => number) => round(median(rs.map(f)), 2);
    return {
      case: `${k}_${i}`,
      broker,
      storage,
      mode,
      raw: ref.name,
      raw_msgs_per_s: Math.round(median(rs.map((r) => r.raws[i]!.rate))),
      relay_msgs_per_s: Math.round(median(rs.map((r) => r.relay.rate))),
      rate_vs_raw: m((r) => r.relay.rate / r.raws[i]!.rate),
      raw_cpu_us: m((r) => r.raws[i]!.self),
      relay_cpu_us: m((r) => r.relay.self),
      relay_cpu_vs_raw: m((r) => r.relay.self / r.raws[i]!.self),
      broker_raw_us: m((r) => r.raws[i]!.broker),
      broker_relay_us: m((r) => r.relay.broker),
      broker_vs_raw: m((r) => r.relay.broker / r.raws[i]!.broker),
      pg_all_relay_us: m((r) => r.relay.pgAll),
      raw_cores: m((r) => r.raws[i]!.selfCores),
      relay_cores: m((r) => r.relay.selfCores),
      pair_rate_ratios: rs.map((r) => round(r.relay.rate / r.raws[i]!.rate)),
      pair_cpu_ratios: rs.map((r) => round(r.relay.self / r.raws[i]!.self)),
    };
  });
});

const fmt = (x: number | null, d = 1) => (x === null || !Number.isFinite(x) ? "–" : x.toFixed(d));
const TABLE_HEAD = [
  "| runtime | broker | storage | keys | raw client | raw msg/s | relay msg/s | rate relay/raw | raw CPU µs/msg | relay CPU µs/msg | CPU relay/raw | broker µs raw | broker µs relay | broker relay/raw | pg all µs relay | relay cores busy |",
  "| --- | --- | --- | --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
];
const rows = cases.map((c) =>
  `| ${runtime} | ${c.broker === "redis" ? "Redis" : "RabbitMQ"} | ${c.storage === "pg" ? "Postgres" : "libSQL"} | ${
    c.mode === "unkeyed" ? "unkeyed" : c.mode.replace("keys", " keys")
  } | ${c.raw} | ${c.raw_msgs_per_s.toLocaleString("en-US")} | ${c.relay_msgs_per_s.toLocaleString("en-US")} | **${
    fmt(c.rate_vs_raw, 2)
  }** | ${fmt(c.raw_cpu_us)} | ${fmt(c.relay_cpu_us)} | **${fmt(c.relay_cpu_vs_raw, 2)}** | ${fmt(c.broker_raw_us)} | ${
    fmt(c.broker_relay_us)
  } | ${fmt(c.broker_vs_raw, 2)} | ${c.storage === "pg" ? fmt(c.pg_all_relay_us) : "–"} | ${fmt(c.relay_cores, 2)} |`
);

const warningList = [...warnings.values()];
console.log([...TABLE_HEAD, ...rows].join("\n"));
if (warningList.length > 0) {
  console.log("\nProcess warnings:");
  for (const w of warningList) console.log(`- ${w.phase}: ${w.count} × ${w.name}: ${w.message}`);
}
console.log(
  JSON.stringify({
    bench: "destinations",
    runtime,
    runtime_id: runtimeId,
    messages: MESSAGES,
    repeats: REPEATS,
    in_flight: IN_FLIGHT,
    wall_s: round((performance.now() - started) / 1000, 1),
    load_before: loadBefore[0],
    load_after: loadAfter[0],
    idle_before: idleBefore,
    idle_after: idleAfter,
    redis_pid: redisPid,
    beam_pid: beamPid,
    postmaster_pid: postmasterPid,
    cases,
    warnings: warningList,
    targets_met: {},
  }),
);
// Don't wait for stray handles (timers of closed clients).
g.process?.exit?.(0);
