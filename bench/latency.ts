/**
 * Latency commit → JetStream ack at a steady offered rate (default 1,000 msg/s).
 *
 * A producer (its own outbox instance and database client, as another process would
 * be: no in-process wake-up hint) commits one message per transaction on a fixed
 * schedule, up to 8 transactions in flight, and records when each commit returned. The
 * relay (another instance, another client) runs either `start()` or a cron-style
 * `tick()` once per second; `js.publish` is wrapped to record when each ack arrives.
 * Latency = ack time − commit-returned time, per message.
 *
 * @module
 */

import { createClient } from "@libsql/client";
import type { JetStreamClient } from "@nats-io/jetstream";
import { createOutbox } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { jetstreamPublisher } from "../adapters/nats/mod.ts";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../adapters/postgres/mod.ts";
import { g, libsql, log, nats, payload, pg, quantile, sleep } from "./lib.ts";

export interface LatencyResult {
  mode: string;
  offered: number;
  sent: number;
  acked: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  achievedRate: number;
}

function ackingJs(js: JetStreamClient, ackAt: Map<string, number>): JetStreamClient {
  return new Proxy(js, {
    get(target, prop, receiver) {
      if (prop === "publish") {
        return (subject: string, data: unknown, opts?: { msgID?: string }) =>
          (target.publish as (...a: unknown[]) => Promise<unknown>)(subject, data, opts).then((ack) => {
            if (opts?.msgID && !ackAt.has(opts.msgID)) ackAt.set(opts.msgID, performance.now());
            return ack;
          });
      }
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

async function produce(
  seconds: number,
  rate: number,
  commit: (id: string, i: number) => Promise<unknown>,
  commitAt: Map<string, number>,
  tag: string,
): Promise<{ sent: number; achievedRate: number }> {
  const total = Math.round(seconds * rate);
  const t0 = performance.now();
  let sent = 0;
  let inFlight = 0;
  const pending = new Set<Promise<unknown>>();
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) * rate) / 1000) + 1);
    while (sent < due && inFlight < 8) {
      const i = sent++;
      const id = `${tag}-${i.toString().padStart(7, "0")}`;
      inFlight++;
      const p = commit(id, i).then(() => commitAt.set(id, performance.now())).finally(() => {
        inFlight--;
        pending.delete(p);
      });
      pending.add(p);
    }
    await sleep(1);
  }
  await Promise.all(pending);
  return { sent, achievedRate: sent / ((performance.now() - t0) / 1000) };
}

function summarize(
  mode: string,
  offered: number,
  sent: number,
  achievedRate: number,
  commitAt: Map<string, number>,
  ackAt: Map<string, number>,
): LatencyResult {
  const lat: number[] = [];
  for (const [id, c] of commitAt) {
    const a = ackAt.get(id);
    if (a !== undefined) lat.push(Math.max(0, a - c));
  }
  return {
    mode,
    offered,
    sent,
    acked: lat.length,
    p50: quantile(lat, 0.5),
    p90: quantile(lat, 0.9),
    p99: quantile(lat, 0.99),
    max: quantile(lat, 1),
    achievedRate,
  };
}

async function waitAll(commitAt: Map<string, number>, ackAt: Map<string, number>, ms: number) {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    let missing = 0;
    for (const id of commitAt.keys()) if (!ackAt.has(id)) missing++;
    if (missing === 0) return;
    await sleep(20);
  }
}

type Relay = "start" | "tick1s";

async function driveRelay(
  outbox: { start(o?: object): { stop(): Promise<void> }; tick(): Promise<unknown> },
  relay: Relay,
): Promise<() => Promise<void>> {
  if (relay === "start") {
    const handle = outbox.start({});
    return () => handle.stop();
  }
  let stopped = false;
  const loop = (async () => {
    while (!stopped) {
      const t = performance.now();
      await outbox.tick();
      await sleep(Math.max(0, 1_000 - (performance.now() - t)));
    }
  })();
  return async () => {
    stopped = true;
    await loop;
  };
}

export async function latencyPostgres(
  js: JetStreamClient,
  subject: string,
  relay: Relay,
  seconds: number,
  rate: number,
): Promise<LatencyResult> {
  const schema = `benchlat_${Date.now().toString(36)}`;
  const producerSql = pg({ max: 8 });
  const relaySql = pg({ max: 4 });
  const commitAt = new Map<string, number>();
  const ackAt = new Map<string, number>();
  const writer = createOutbox({
    storage: postgresStorage(producerSql as unknown as PostgresSql, { schema }),
    publisher: () => {},
  });
  await writer.setup();
  const outbox = createOutbox({
    storage: postgresStorage(relaySql as unknown as PostgresSql, { schema }),
    publisher: jetstreamPublisher(ackingJs(js, ackAt)),
  });
  const stop = await driveRelay(outbox, relay);
  await sleep(200); // LISTEN is up
  try {
    const tag = `pglat-${relay}-${Date.now().toString(36)}`;
    const { sent, achievedRate } = await produce(
      seconds,
      rate,
      (id, i) =>
        producerSql.begin((tx) =>
          writer.enqueue(tx as unknown as PostgresTx, { id, topic: subject, key: null, payload: payload(i) })
        ),
      commitAt,
      tag,
    );
    await waitAll(commitAt, ackAt, 3_000);
    return summarize(`pg_${relay}`, rate, sent, achievedRate, commitAt, ackAt);
  } finally {
    await stop();
    await producerSql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await producerSql.end({ timeout: 1 });
    await relaySql.end({ timeout: 1 });
  }
}

export async function latencyLibsql(
  js: JetStreamClient,
  subject: string,
  relay: Relay,
  seconds: number,
  rate: number,
  sameProcess = false,
): Promise<LatencyResult> {
  const db = await libsql();
  const commitAt = new Map<string, number>();
  const ackAt = new Map<string, number>();
  const outbox = createOutbox({
    storage: libsqlStorage(db.client),
    publisher: jetstreamPublisher(ackingJs(js, ackAt)),
  });
  // Same process: the application writes through the relay's own outbox and client, as one
  // service that enqueues and relays does; its writes nudge start(). Otherwise another
  // instance and client stand in for another process, which only polling finds.
  const producer = sameProcess ? db.client : createClient({ url: db.url });
  const writer = sameProcess ? outbox : createOutbox({ storage: libsqlStorage(producer), publisher: () => {} });
  await writer.setup();
  const stop = await driveRelay(outbox, relay);
  try {
    const tag = `litelat-${relay}-${Date.now().toString(36)}`;
    const { sent, achievedRate } = await produce(
      seconds,
      rate,
      (id, i) =>
        producer.batch(writer.statements({ id, topic: subject, key: null, payload: payload(i) }) as never, "write"),
      commitAt,
      tag,
    );
    await waitAll(commitAt, ackAt, 3_000);
    return summarize(`libsql_${relay}${sameProcess ? "_same" : ""}`, rate, sent, achievedRate, commitAt, ackAt);
  } finally {
    await stop();
    if (!sameProcess) producer.close();
    db.close();
  }
}

export async function runLatency(
  js: JetStreamClient,
  subject: string,
  seconds: number,
  rate = 1_000,
): Promise<LatencyResult[]> {
  const out: LatencyResult[] = [];
  for (const relay of ["start", "tick1s"] as const) {
    out.push(await latencyPostgres(js, subject, relay, seconds, rate));
    log(`  latency ${JSON.stringify(out.at(-1))}`);
    out.push(await latencyLibsql(js, subject, relay, seconds, rate));
    log(`  latency ${JSON.stringify(out.at(-1))}`);
    if (relay === "start") {
      out.push(await latencyLibsql(js, subject, relay, seconds, rate, true));
      log(`  latency ${JSON.stringify(out.at(-1))}`);
    }
  }
  return out;
}

// `npx bun bench/latency.ts [seconds] [modes]`: runs alone; modes is a comma list of
// pg_start, libsql_start, libsql_start_same (default: all three).
if ((import.meta as { main?: boolean }).main) {
  const args: string[] = g.Deno ? [...g.Deno.args] : (g.process?.argv ?? []).slice(2);
  const seconds = Number(args[0] ?? 10);
  const modes = (args[1] ?? "pg_start,libsql_start,libsql_start_same").split(",");
  const n = await nats();
  try {
    for (const mode of modes) {
      const r = mode === "pg_start"
        ? await latencyPostgres(n.js, n.subject, "start", seconds, 1_000)
        : await latencyLibsql(n.js, n.subject, "start", seconds, 1_000, mode === "libsql_start_same");
      console.log(JSON.stringify(r));
    }
  } finally {
    await n.close();
  }
}
