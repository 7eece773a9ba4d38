/**
 * Shared pieces of the benchmark suite: payloads, statistics, database and broker
 * set-up, counting wrappers.
 *
 * @module
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, createClient } from "@libsql/client";
import { jetstream, type JetStreamClient, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import postgres from "postgres";

// deno-lint-ignore no-explicit-any
export const g = globalThis as any;
/** The bench's command-line arguments, under Bun, Deno and Node alike. */
export const argv: string[] = g.Deno ? [...g.Deno.args] : (g.process?.argv ?? []).slice(2);

/** The value of `--name value` or `--name=value`, if given. */
export function flag(name: string): string | undefined {
  const i = argv.indexOf(`--${name}`);
  if (i >= 0) return argv[i + 1];
  return argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

export const env = (name: string): string | undefined =>
  g.process?.env?.[name] ?? (g.Deno ? g.Deno.env.get(name) : undefined);
export const PG_URL = env("OUTBOX_BENCH_PG_URL") ?? "postgres://postgres@127.0.0.1:5432/test";
export const NATS_URL = env("OUTBOX_BENCH_NATS_URL") ?? "127.0.0.1:4222";

/** ~150-byte JSON order payload (the same for every bench and peer). */
export const payload = (i: number) => ({
  orderId: `order-${i.toString().padStart(8, "0")}`,
  customer: "customer-4711",
  total: 12_345,
  currency: "EUR",
  items: [{ sku: "sku-1", qty: 2 }, { sku: "sku-2", qty: 1 }],
});

/** Messages `start` … `start + count − 1` of a backlog: unkeyed, or spread over `keys` keys. */
export const backlogMessages = (start: number, count: number, keys: number, topic: string) =>
  Array.from({ length: count }, (_, j) => ({
    topic,
    key: keys === 0 ? null : `key-${(start + j) % keys}`,
    payload: payload(start + j),
  }));

/** Who writes a backlog: an outbox's `enqueue` on the storage's transaction type. */
type BacklogWriter<Tx> = { enqueue(tx: Tx, messages: ReturnType<typeof backlogMessages>): Promise<unknown> };

/** Replaces a Postgres outbox table's rows with a committed backlog, 1,000 messages per transaction. */
export async function fillPostgresBacklog<Tx>(
  sql: postgres.Sql,
  schema: string,
  writer: BacklogWriter<Tx>,
  backlog: { messages: number; keys: number; topic: string },
): Promise<void> {
  const { messages, keys, topic } = backlog;
  await sql.unsafe(`TRUNCATE "${schema}".outbox`);
  for (let s = 0; s < messages; s += 1_000) {
    const batch = backlogMessages(s, Math.min(1_000, messages - s), keys, topic);
    await sql.begin((tx) => writer.enqueue(tx as unknown as Tx, batch));
  }
  await sql.unsafe(`VACUUM ANALYZE "${schema}".outbox`);
}

/** Replaces a libSQL outbox table's rows with a committed backlog, 1,000 messages per enqueue. */
export async function fillLibsqlBacklog(
  client: Client,
  writer: BacklogWriter<Client>,
  backlog: { messages: number; keys: number; topic: string },
): Promise<void> {
  const { messages, keys, topic } = backlog;
  await client.execute("DELETE FROM outbox");
  for (let s = 0; s < messages; s += 1_000) {
    await writer.enqueue(client, backlogMessages(s, Math.min(1_000, messages - s), keys, topic));
  }
}

export const median = (xs: readonly number[]) =>
  xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
export const quantile = (xs: readonly number[], q: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
};
export const round = (x: number, digits = 2) => Number.isFinite(x) ? Number(x.toFixed(digits)) : null;
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const log = (...xs: unknown[]) => console.error(...xs);

/** Postgres client for benches; `debug` sees every statement (used to count round trips). */
export function pg(options: { max?: number; debug?: (q: string, params: unknown[]) => void } = {}) {
  return postgres(PG_URL, {
    max: options.max ?? 4,
    onnotice: () => {},
    debug: options.debug ? (_c: number, q: string, p: unknown[]) => options.debug!(q, p) : undefined,
  });
}

/** A fresh embedded libSQL database (WAL) in a temp folder. */
export async function libsql(): Promise<{ client: Client; url: string; close(): void }> {
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-bench-"));
  const url = `file:${join(dir, "bench.db")}`;
  const client = createClient({ url });
  await client.execute("PRAGMA journal_mode = WAL");
  return {
    client,
    url,
    close() {
      client.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A connection, JetStream client and a fresh file-backed stream for this run. */
export async function nats(): Promise<
  {
    nc: NatsConnection;
    js: JetStreamClient;
    jsm: JetStreamManager;
    stream: string;
    subject: string;
    close(): Promise<void>;
  }
> {
  const nc = await connect({ servers: NATS_URL });
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const stream = `BENCH${Date.now().toString(36).toUpperCase()}`;
  const subject = `${stream.toLowerCase()}.orders`;
  await jsm.streams.add({
    name: stream,
    subjects: [`${stream.toLowerCase()}.>`],
    duplicate_window: 120_000_000_000,
    storage: "file" as never,
  });
  return {
    nc,
    js,
    jsm,
    stream,
    subject,
    async close() {
      await jsm.streams.delete(stream).catch(() => {});
      await nc.close();
    },
  };
}

/** Publishes `messages` payloads straight to JetStream with `inFlight` outstanding; msg/s. */
export async function rawPublishRate(
  js: JetStreamClient,
  subject: string,
  messages: number,
  inFlight: number,
): Promise<number> {
  const tag = `raw-${inFlight}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  const started = performance.now();
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < messages; i++) {
    if (pending.length >= inFlight) await pending.shift();
    pending.push(js.publish(subject, JSON.stringify(payload(i)), { msgID: `${tag}-${i}` }));
  }
  await Promise.all(pending);
  return messages / ((performance.now() - started) / 1000);
}

/** Load average and time, for the record. */
export async function loadavg(): Promise<number[]> {
  const os = await import("node:os");
  return os.loadavg().map((x) => Number(x.toFixed(2)));
}

/**
 * CPU time (ms) used so far by this process and by the local postgres and nats-server
 * processes (Linux /proc; 0 where not readable). The machine has few cores: the relay
 * shares them with the broker and the database, so CPU per message is what caps it.
 */
export async function cpuSnapshot(): Promise<{ self: number; pg: number; nats: number }> {
  const fs = await import("node:fs");
  const self = g.process?.cpuUsage ? (g.process.cpuUsage().user + g.process.cpuUsage().system) / 1000 : 0;
  let pgMs = 0;
  let natsMs = 0;
  try {
    for (const pid of fs.readdirSync("/proc")) {
      if (!/^\d+$/.test(pid)) continue;
      let stat: string;
      try {
        stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
      } catch {
        continue;
      }
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      if (name !== "postgres" && name !== "nats-server") continue;
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ms = (Number(f[11]) + Number(f[12])) * 10; // clock ticks of 10 ms
      if (name === "postgres") pgMs += ms;
      else natsMs += ms;
    }
  } catch {
    // not Linux
  }
  return { self, pg: pgMs, nats: natsMs };
}

// ---- CPU of other processes, from /proc (Linux) ----

/** Clock ticks per second of the times in /proc/<pid>/stat (USER_HZ; 100 on Linux). */
const USER_HZ = 100;

/** One process's /proc/<pid>/stat: name, parent, own CPU ms and CPU ms of its reaped children. */
export interface ProcStat {
  pid: number;
  comm: string;
  ppid: number;
  /** utime + stime, ms. */
  cpuMs: number;
  /** cutime + cstime (children it has waited for), ms. */
  childrenMs: number;
}

type ReadFile = (path: string, encoding: "utf8") => string;
export function procStatSync(readFileSync: ReadFile, pid: number): ProcStat | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  const close = stat.lastIndexOf(")");
  const comm = stat.slice(stat.indexOf("(") + 1, close);
  const f = stat.slice(close + 2).split(" "); // f[0] = state (field 3)
  const tick = 1000 / USER_HZ;
  return {
    pid,
    comm,
    ppid: Number(f[1]),
    cpuMs: (Number(f[11]) + Number(f[12])) * tick, // fields 14, 15: utime, stime
    childrenMs: (Number(f[13]) + Number(f[14])) * tick, // fields 16, 17: cutime, cstime
  };
}

/**
 * Pid of the process listening on a local TCP port: the LISTEN socket's inode from
 * /proc/net/tcp{,6}, then the process holding it in /proc/<pid>/fd (needs root or the
 * same user). Falls back to a process named `comm` whose command line names the port,
 * then to the only process named `comm`. Null when not found.
 */
export async function listenerPid(port: number, comm: string): Promise<number | null> {
  const fs = await import("node:fs");
  const inodes = new Set<string>();
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = fs.readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length > 9 && c[1]!.endsWith(`:${hex}`) && c[3] === "0A") inodes.add(`socket:[${c[9]}]`);
    }
  }
  const pids = procPids(fs.readdirSync);
  if (inodes.size > 0) {
    for (const pid of pids) {
      let fds: string[];
      try {
        fds = fs.readdirSync(`/proc/${pid}/fd`);
      } catch {
        continue;
      }
      for (const fd of fds) {
        try {
          if (inodes.has(fs.readlinkSync(`/proc/${pid}/fd/${fd}`))) return pid;
        } catch {
          // closed meanwhile
        }
      }
    }
  }
  const named = pids.filter((pid) => procStatSync(fs.readFileSync, pid)?.comm === comm);
  for (const pid of named) {
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (cmd.some((a) => a === String(port) || a.endsWith(`:${port}`) || a === `--port=${port}`)) return pid;
    } catch {
      continue;
    }
  }
  return named.length === 1 ? named[0]! : null;
}

function procPids(readdirSync: (path: string) => string[]): number[] {
  try {
    return readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number);
  } catch {
    return [];
  }
}

/** CPU ms so far of one server process, and of a postmaster with all its children. */
export interface ServerCpu {
  /** nats-server: utime + stime, ms. */
  nats: number;
  /**
   * Every postgres process: the postmaster's own and reaped children's time, plus the
   * live children's (backends, walwriter, checkpointer, autovacuum …), ms.
   */
  pgAll: number;
  /** Live children of the postmaster: pid → CPU ms. */
  pgByPid: Map<number, number>;
}

/**
 * Synchronous snapshot of server CPU (so it can be taken inside a callback at the
 * exact end of a timed window). Scans /proc once for the postmaster's children.
 */
export function serverCpuSync(
  fs: { readFileSync: ReadFile; readdirSync: (path: string) => string[] },
  natsPid: number | null,
  postmasterPid: number | null,
): ServerCpu {
  const nats = natsPid === null ? NaN : procStatSync(fs.readFileSync, natsPid)?.cpuMs ?? NaN;
  const pgByPid = new Map<number, number>();
  let pgAll = NaN;
  if (postmasterPid !== null) {
    const master = procStatSync(fs.readFileSync, postmasterPid);
    if (master) {
      pgAll = master.cpuMs + master.childrenMs;
      for (const pid of procPids(fs.readdirSync)) {
        const s = procStatSync(fs.readFileSync, pid);
        if (s?.ppid !== postmasterPid) continue;
        pgByPid.set(pid, s.cpuMs);
        pgAll += s.cpuMs;
      }
    }
  }
  return { nats, pgAll, pgByPid };
}

/** This process's CPU time so far (user + system, all threads), ms. */
export const selfCpuMs = (): number => {
  const u = g.process?.cpuUsage?.();
  return u ? (u.user + u.system) / 1000 : NaN;
};

/**
 * The raw ceiling: publishes `bodies[i]` with message id `ids[i]` to `subject`, in
 * order, with `inFlight` publishes outstanding (a sliding window: `inFlight` loops, each
 * sends its next message as soon as its previous one is acked). Nothing else per
 * message. Resolves when every ack is in.
 */
export async function rawPublishWindow(
  js: JetStreamClient,
  subject: string,
  bodies: readonly (string | Uint8Array)[],
  ids: readonly string[],
  inFlight: number,
): Promise<void> {
  let next = 0;
  const n = bodies.length;
  const lane = async () => {
    for (let i = next++; i < n; i = next++) await js.publish(subject, bodies[i]!, { msgID: ids[i]! });
  };
  await Promise.all(Array.from({ length: Math.min(inFlight, n) }, lane));
}

/**
 * Runs `outbox.start()` with default options until `n` messages are published, as users
 * run the relay. `atEnd` runs once, inside the tick that publishes the n-th message (take
 * the closing CPU and clock readings there, before the loop's stop). Fails after
 * 120 s + 1 ms per message.
 */
export async function drainWithStart(
  outbox: { start(options: { onTick(report: { published: number }): void }): { stop(): Promise<void> } },
  n: number,
  label: string,
  atEnd: () => void,
): Promise<void> {
  let published = 0;
  let drained!: () => void;
  const done = new Promise<void>((resolve) => (drained = resolve));
  const handle = outbox.start({
    onTick(report) {
      const before = published;
      published += report.published;
      if (before < n && published >= n) {
        atEnd();
        drained();
      }
    },
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limitMs = 120_000 + n;
  try {
    await Promise.race([
      done,
      new Promise((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`${label}: ${published}/${n} published after ${limitMs} ms`)),
          limitMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    await handle.stop();
  }
}
