/**
 * End-to-end relay throughput into NATS JetStream, next to the raw JetStream publish
 * rate measured in the same run (interleaved): committed backlog rows → stream acks.
 *
 * For Postgres and libSQL, and for unkeyed traffic, 16 keys and 10,000 keys: a backlog
 * of N messages (~150-byte JSON) is committed, then drained by one relay with tick()
 * into a file-backed stream. The raw rate publishes the same payloads with
 * `js.publish` directly, 256 in flight and 1 in flight.
 *
 *   bun bench/relay-jetstream.ts [--messages=20000] [--repeats=3]
 *
 * @module
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient } from "@libsql/client";
import { jetstream, type JetStreamClient, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import postgres from "postgres";
import { createOutbox, type OutboxStorage } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../adapters/postgres/mod.ts";
import { jetstreamPublisher } from "../adapters/nats/mod.ts";

// deno-lint-ignore no-explicit-any
const g = globalThis as any;
const args: string[] = g.Deno ? [...g.Deno.args] : (g.process?.argv ?? []).slice(2);
const opt = (name: string, fallback: number) =>
  Number(args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback);

const payload = (i: number) => ({
  orderId: `order-${i.toString().padStart(8, "0")}`,
  customer: "customer-4711",
  total: 12_345,
  currency: "EUR",
  items: [{ sku: "sku-1", qty: 2 }, { sku: "sku-2", qty: 1 }],
});

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

async function rawRate(js: JetStreamClient, subject: string, messages: number, inFlight: number): Promise<number> {
  const started = performance.now();
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < messages; i++) {
    if (pending.length >= inFlight) await pending.shift();
    pending.push(js.publish(subject, JSON.stringify(payload(i)), { msgID: `raw-${inFlight}-${Date.now()}-${i}` }));
  }
  await Promise.all(pending);
  return messages / ((performance.now() - started) / 1000);
}

interface Target {
  name: "postgres" | "libsql";
  storage: OutboxStorage<unknown, unknown>;
  fill(messages: number, keys: number, subject: string): Promise<void>;
  close(): Promise<void>;
}

async function postgresTarget(): Promise<Target> {
  const sql = postgres(g.process?.env?.OUTBOX_BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test", {
    max: 4,
    onnotice: () => {},
  });
  const schema = `benchjs_${Date.now().toString(36)}`;
  const storage = postgresStorage(sql as unknown as PostgresSql, { schema, notify: false });
  await storage.setup();
  const writer = createOutbox({ storage, publisher: () => {} });
  return {
    name: "postgres",
    storage: storage as OutboxStorage<unknown, unknown>,
    async fill(messages, keys, subject) {
      await sql.unsafe(`TRUNCATE "${schema}".outbox`);
      for (let s = 0; s < messages; s += 1_000) {
        const batch = Array.from({ length: Math.min(1_000, messages - s) }, (_, j) => ({
          topic: subject,
          key: keys === 0 ? null : `key-${(s + j) % keys}`,
          payload: payload(s + j),
        }));
        await sql.begin((tx) => writer.enqueue(tx as unknown as PostgresTx, batch));
      }
      await sql.unsafe(`VACUUM ANALYZE "${schema}".outbox`);
    },
    async close() {
      await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
      await sql.end({ timeout: 1 });
    },
  };
}

async function libsqlTarget(): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-benchjs-"));
  const client = createClient({ url: `file:${join(dir, "bench.db")}` });
  await client.execute("PRAGMA journal_mode = WAL");
  const storage = libsqlStorage(client);
  await storage.setup();
  const writer = createOutbox({ storage, publisher: () => {} });
  return {
    name: "libsql",
    storage: storage as OutboxStorage<unknown, unknown>,
    async fill(messages, keys, subject) {
      await client.execute("DELETE FROM outbox");
      for (let s = 0; s < messages; s += 1_000) {
        const batch = Array.from({ length: Math.min(1_000, messages - s) }, (_, j) => ({
          topic: subject,
          key: keys === 0 ? null : `key-${(s + j) % keys}`,
          payload: payload(s + j),
        }));
        await writer.enqueue(client, batch);
      }
    },
    async close() {
      client.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function relayRate(
  target: Target,
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
  messages: number,
  keys: number,
  subject: string,
) {
  await target.fill(messages, keys, subject);
  const before = (await jsm.streams.info(stream)).state.messages;
  const outbox = createOutbox({
    storage: target.storage,
    publisher: jetstreamPublisher(js),
    batchSize: 1_000,
    concurrency: 64,
  });
  const started = performance.now();
  let published = 0;
  while (published < messages) {
    const report = await outbox.tick({ budgetMs: 120_000 });
    published += report.published;
    if (report.claimed === 0 && report.published === 0) break;
  }
  const rate = messages / ((performance.now() - started) / 1000);
  const after = (await jsm.streams.info(stream)).state.messages;
  if (after - before !== messages) throw new Error(`stream gained ${after - before} messages, expected ${messages}`);
  return rate;
}

/** Runs the JetStream end-to-end benchmark. */
export async function runJetStreamBench(options: { messages?: number; repeats?: number } = {}) {
  const messages = options.messages ?? opt("messages", 20_000);
  const repeats = options.repeats ?? opt("repeats", 3);
  const nc = await connect({ servers: g.process?.env?.OUTBOX_BENCH_NATS_URL ?? "127.0.0.1:4222" });
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const stream = `BENCH${Date.now().toString(36).toUpperCase()}`;
  const subject = `${stream.toLowerCase()}.orders`;
  await jsm.streams.add({ name: stream, subjects: [`${stream.toLowerCase()}.>`], duplicate_window: 120_000_000_000 });
  const targets = [await postgresTarget(), await libsqlTarget()];
  const samples: Record<string, number[]> = {};
  const add = (k: string, v: number) => (samples[k] ??= []).push(v);
  try {
    for (let r = 0; r < repeats; r++) {
      add("raw_256", await rawRate(js, subject, messages, 256));
      add("raw_1", await rawRate(js, subject, Math.min(messages, 5_000), 1));
      for (const keys of [0, 16, 10_000]) {
        for (const t of targets) add(`${t.name}_${keys}`, await relayRate(t, js, jsm, stream, messages, keys, subject));
      }
    }
  } finally {
    for (const t of targets) await t.close();
    await jsm.streams.delete(stream).catch(() => {});
    await nc.close();
  }
  const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]));
  return { messages, repeats, medians: m, samples };
}

if (import.meta.main ?? (g.process?.argv?.[1] && import.meta.url.endsWith(g.process.argv[1]))) {
  const { messages, repeats, medians } = await runJetStreamBench();
  const raw = medians.raw_256!;
  console.log(`Relay → JetStream (file storage), ${messages} messages, median of ${repeats}, interleaved`);
  console.log(
    `raw js.publish, 256 in flight: ${Math.round(raw)} msg/s; 1 in flight: ${Math.round(medians.raw_1!)} msg/s`,
  );
  console.log("storage   keys     relay msg/s   relay / raw(256)");
  const json: Record<string, number> = {
    jetstream_raw_256_msgs_per_s: Math.round(raw),
    jetstream_raw_1_msgs_per_s: Math.round(medians.raw_1!),
  };
  for (const t of ["postgres", "libsql"]) {
    for (const keys of [0, 16, 10_000]) {
      const v = medians[`${t}_${keys}`]!;
      console.log(
        `${t.padEnd(9)} ${String(keys === 0 ? "none" : keys).padEnd(8)} ${Math.round(v).toString().padStart(11)}   ${
          (v / raw).toFixed(2)
        }`,
      );
      const k = keys === 0 ? "unkeyed" : `${keys}keys`;
      json[`${t === "postgres" ? "pg" : "libsql"}_js_${k}_msgs_per_s`] = Math.round(v);
      json[`${t === "postgres" ? "pg" : "libsql"}_js_${k}_vs_raw`] = Number((v / raw).toFixed(2));
    }
  }
  console.log(JSON.stringify(json));
}
