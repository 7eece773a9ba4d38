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
