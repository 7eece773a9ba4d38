/**
 * Ceilings and relay throughput, interleaved in one run:
 *
 * - raw `js.publish` of the same payloads, 256 in flight and 1 in flight;
 * - the database's raw claim+delete rate: the adapter's own claim + settle(delete)
 *   with no publishing, and one `DELETE … RETURNING` statement per batch (the least a
 *   database can do to hand out rows once);
 * - relay → JetStream from a committed backlog (Postgres and libSQL; unkeyed, 16 keys,
 *   10,000 keys), each relay run paired with a raw 256-in-flight run just before it.
 *
 * @module
 */

import type { Client } from "@libsql/client";
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import type postgres from "postgres";
import { createOutbox, type OutboxStorage } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { jetstreamPublisher } from "../adapters/nats/mod.ts";
import { type PostgresSql, postgresStorage } from "../adapters/postgres/mod.ts";
import { cpuSnapshot, fillLibsqlBacklog, fillPostgresBacklog, libsql, log, median, pg, rawPublishRate } from "./lib.ts";

export interface Target {
  name: "pg" | "libsql";
  storage: OutboxStorage<unknown, unknown>;
  fill(messages: number, keys: number, topic: string): Promise<void>;
  /** One-statement claim+delete of a batch; returns rows taken. */
  deleteReturning(limit: number): Promise<number>;
  count(): Promise<number>;
  close(): Promise<void>;
}

export async function postgresTarget(
  sql = pg(),
  schema = `bench_${Date.now().toString(36)}`,
): Promise<Target & { sql: postgres.Sql; schema: string }> {
  const storage = postgresStorage(sql as unknown as PostgresSql, { schema, notify: false });
  await storage.setup();
  const writer = createOutbox({ storage, publisher: () => {} });
  return {
    name: "pg",
    sql,
    schema,
    storage: storage as OutboxStorage<unknown, unknown>,
    fill: (messages, keys, topic) => fillPostgresBacklog(sql, schema, writer, { messages, keys, topic }),
    async deleteReturning(limit) {
      const rows = await sql.unsafe(
        `DELETE FROM "${schema}".outbox WHERE seq = ANY (ARRAY(SELECT seq FROM "${schema}".outbox WHERE available_at <= $1 ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED))
         RETURNING seq, id, topic, key, payload::text AS payload, headers::text AS headers, attempts, created_at`,
        [Date.now(), limit],
      );
      return rows.length;
    },
    async count() {
      return Number((await sql.unsafe(`SELECT count(*)::int AS n FROM "${schema}".outbox`))[0]!.n);
    },
    async close() {
      await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
      await sql.end({ timeout: 1 });
    },
  };
}

export async function libsqlTarget(): Promise<Target & { client: Client }> {
  const db = await libsql();
  const client = db.client;
  const storage = libsqlStorage(client);
  await storage.setup();
  const writer = createOutbox({ storage, publisher: () => {} });
  return {
    name: "libsql",
    client,
    storage: storage as OutboxStorage<unknown, unknown>,
    fill: (messages, keys, topic) => fillLibsqlBacklog(client, writer, { messages, keys, topic }),
    async deleteReturning(limit) {
      const rs = await client.execute({
        sql: `DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE available_at <= ? ORDER BY seq LIMIT ?)
              RETURNING seq, id, topic, key, payload, headers, attempts, created_at`,
        args: [Date.now(), limit],
      });
      return rs.rows.length;
    },
    async count() {
      return Number((await client.execute("SELECT count(*) AS n FROM outbox")).rows[0]!.n);
    },
    async close() {
      db.close();
    },
  };
}

/** Drains the backlog with tick() into JetStream; msg/s. Checks the stream got every message. */
export async function relayRate(
  target: Target,
  js: JetStreamClient,
  jsm: JetStreamManager,
  stream: string,
  messages: number,
  keys: number,
  subject: string,
  batchSize = 1_000,
  fill = true,
) {
  if (fill) await target.fill(messages, keys, subject);
  const before = (await jsm.streams.info(stream)).state.messages;
  const outbox = createOutbox({
    storage: target.storage,
    publisher: jetstreamPublisher(js),
    batchSize,
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

/** The adapter's claim + settle(delete) with nothing published: the storage ceiling. */
export async function claimDeleteRate(target: Target, messages: number, batchSize: number): Promise<number> {
  let done = 0;
  let claims = 0;
  const started = performance.now();
  while (done < messages) {
    const now = Date.now();
    const token = `raw:${claims++}:${now}`;
    const rows = await target.storage.claim({ token, now, lockedUntil: now + 30_000, limit: batchSize });
    if (rows.length === 0) break;
    await target.storage.settle({
      token,
      now,
      deletePublished: true,
      settlements: rows.map((r) => ({ seq: r.seq, outcome: "published" as const })),
    });
    done += rows.length;
  }
  return done / ((performance.now() - started) / 1000);
}

export async function deleteReturningRate(target: Target, messages: number, batchSize: number): Promise<number> {
  let done = 0;
  const started = performance.now();
  while (done < messages) {
    const n = await target.deleteReturning(batchSize);
    if (n === 0) break;
    done += n;
  }
  return done / ((performance.now() - started) / 1000);
}

export interface ThroughputResult {
  messages: number;
  repeats: number;
  batchSize: number;
  /** metric → samples (msg/s) */
  samples: Record<string, number[]>;
  /** relay case → per-pair ratios relay / raw256 */
  ratios: Record<string, number[]>;
  /** case → CPU µs per message of this process (the relay), postgres and nats-server */
  cpu: Record<string, { self: number[]; pg: number[]; nats: number[] }>;
}

export async function runThroughput(
  nats: { js: JetStreamClient; jsm: JetStreamManager; stream: string; subject: string },
  options: { messages: number; repeats: number; batchSize: number; keysList: number[] },
): Promise<ThroughputResult> {
  const { js, jsm, stream, subject } = nats;
  const { messages, repeats, batchSize, keysList } = options;
  const targets = [await postgresTarget(), await libsqlTarget()];
  const samples: Record<string, number[]> = {};
  const ratios: Record<string, number[]> = {};
  const cpu: ThroughputResult["cpu"] = {};
  const timed = async (k: string, count: number, f: () => Promise<number>) => {
    const a = await cpuSnapshot();
    const v = await f();
    const b = await cpuSnapshot();
    const c = (cpu[k] ??= { self: [], pg: [], nats: [] });
    c.self.push(((b.self - a.self) * 1000) / count);
    c.pg.push(((b.pg - a.pg) * 1000) / count);
    c.nats.push(((b.nats - a.nats) * 1000) / count);
    return v;
  };
  const add = (o: Record<string, number[]>, k: string, v: number) => (o[k] ??= []).push(v);
  try {
    // Warm-up: JIT, connections, stream files.
    await rawPublishRate(js, subject, 2_000, 256);
    for (const t of targets) await relayRate(t, js, jsm, stream, 2_000, 0, subject, batchSize);
    for (let r = 0; r < repeats; r++) {
      add(samples, "raw_1", await rawPublishRate(js, subject, Math.min(messages, 3_000), 1));
      for (const t of targets) {
        await t.fill(messages, 0, subject);
        add(samples, `${t.name}_claim_delete`, await claimDeleteRate(t, messages, batchSize));
        await t.fill(messages, 0, subject);
        add(samples, `${t.name}_delete_returning`, await deleteReturningRate(t, messages, batchSize));
      }
      for (const keys of keysList) {
        for (const t of targets) {
          const raw = await timed("raw_256", messages, () => rawPublishRate(js, subject, messages, 256));
          add(samples, "raw_256", raw);
          const k = `${t.name}_js_${keys === 0 ? "unkeyed" : `${keys}keys`}`;
          await t.fill(messages, keys, subject);
          const relay = await timed(
            k,
            messages,
            () => relayRate(t, js, jsm, stream, messages, keys, subject, batchSize, false),
          );
          add(samples, k, relay);
          add(ratios, k, relay / raw);
          log(
            `  throughput r${r} ${k}: relay ${Math.round(relay)} msg/s, raw256 ${Math.round(raw)} msg/s, ratio ${
              (relay / raw).toFixed(2)
            }`,
          );
        }
      }
    }
  } finally {
    for (const t of targets) await t.close();
  }
  return { messages, repeats, batchSize, samples, ratios, cpu };
}

export const med = (o: Record<string, number[]>, k: string) => median(o[k] ?? []);
