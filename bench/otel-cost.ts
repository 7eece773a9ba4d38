/**
 * What `otelInstrumentation()` costs the relay: CPU per message with and without it, in
 * one process, interleaved pairs.
 *
 *   npx bun bench/otel-cost.ts [--messages 20000] [--repeats 3] [--store libsql|pg]
 *   npx deno run -A bench/otel-cost.ts [same flags]
 *
 * Each run drains a committed backlog of `--messages` messages to a fresh JetStream stream
 * with `outbox.start()` (default options, `jetstreamPublisher(js)`). The backlog was
 * enqueued inside a request span through `otelInstrumentation()`, so every row carries a
 * `traceparent`, as in production; both runs publish the same rows.
 *
 * - plain: `createOutbox({ storage, publisher })`;
 * - otel: the same plus `instrumentation: otelInstrumentation()`, with the real SDK
 *   registered as an application would: `BasicTracerProvider` with a `BatchSpanProcessor`
 *   (exporter: a no-op, so the figure is the instrumentation's and the SDK's, not an
 *   exporter's network cost), a `MeterProvider` with a reader, the async-hooks context
 *   manager and the W3C propagators.
 *
 * CPU is this process's `process.cpuUsage()` (user + system, all threads) from the start
 * to the tick that publishes the last message. stdout: a markdown table, then one JSON line.
 *
 * @module
 */

import { context, metrics, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from "@opentelemetry/core";
import { BasicTracerProvider, BatchSpanProcessor, type SpanExporter } from "@opentelemetry/sdk-trace-base";
import { MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
import { createOutbox, type OutboxStorage } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { type PostgresSql, postgresStorage } from "../adapters/postgres/mod.ts";
import { jetstreamPublisher } from "../adapters/nats/mod.ts";
import { otelInstrumentation } from "../otel/mod.ts";
import { backlogMessages, drainWithStart, flag, g, libsql, log, median, nats, pg, round, selfCpuMs } from "./lib.ts";

const N = Number(flag("messages") ?? 20_000);
const REPEATS = Number(flag("repeats") ?? 3);
const STORE = flag("store") ?? "libsql";

// The SDK, registered as an application registers it.
let exportedSpans = 0;
const noopExporter: SpanExporter = {
  export(spans, done) {
    exportedSpans += spans.length;
    done({ code: 0 });
  },
  shutdown: async () => {},
};
class Reader extends MetricReader {
  protected override async onShutdown() {}
  protected override async onForceFlush() {}
}
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(noopExporter)] });
const meterProvider = new MeterProvider({ readers: [new Reader()] });
trace.setGlobalTracerProvider(tracerProvider);
metrics.setGlobalMeterProvider(meterProvider);
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
propagation.setGlobalPropagator(
  new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }),
);

interface Store {
  storage: OutboxStorage<unknown, unknown>;
  /** Writes the backlog, inside a request span, with the otel instrumentation. */
  fill(topic: string): Promise<void>;
  close(): Promise<void>;
}

async function libsqlStore(): Promise<Store> {
  const db = await libsql();
  const storage = libsqlStorage(db.client);
  await storage.setup();
  const writer = createOutbox({ storage, publisher: () => {}, instrumentation: otelInstrumentation() });
  return {
    storage: storage as never,
    async fill(topic) {
      await db.client.execute("DELETE FROM outbox");
      await trace.getTracer("bench").startActiveSpan("request", async (span) => {
        for (let s = 0; s < N; s += 1_000) {
          await writer.enqueue(db.client, backlogMessages(s, Math.min(1_000, N - s), 0, topic));
        }
        span.end();
      });
    },
    close: async () => db.close(),
  };
}

async function postgresStore(): Promise<Store> {
  const sql = pg();
  const schema = `otel_cost_${Date.now().toString(36)}`;
  await sql.unsafe(`CREATE SCHEMA "${schema}"`);
  const storage = postgresStorage(sql as unknown as PostgresSql, { schema });
  await storage.setup();
  const writer = createOutbox({ storage, publisher: () => {}, instrumentation: otelInstrumentation() });
  return {
    storage: storage as never,
    async fill(topic) {
      await sql.unsafe(`TRUNCATE "${schema}".outbox`);
      await trace.getTracer("bench").startActiveSpan("request", async (span) => {
        for (let s = 0; s < N; s += 1_000) {
          const batch = backlogMessages(s, Math.min(1_000, N - s), 0, topic);
          await sql.begin((tx) => writer.enqueue(tx as never, batch));
        }
        span.end();
      });
      await sql.unsafe(`VACUUM ANALYZE "${schema}".outbox`);
    },
    async close() {
      await sql.unsafe(`DROP SCHEMA "${schema}" CASCADE`);
      await sql.end({ timeout: 1 });
    },
  };
}

/** Drains the backlog with start(); CPU µs per message. */
async function run(store: Store, otel: boolean): Promise<{ cpuUs: number; rate: number }> {
  const stream = await nats();
  try {
    await store.fill(stream.subject);
    const outbox = createOutbox({
      storage: store.storage,
      publisher: jetstreamPublisher(stream.js),
      ...(otel ? { instrumentation: otelInstrumentation() } : {}),
    });
    let end = { cpu: 0, t: 0 };
    const cpu0 = selfCpuMs();
    const t0 = performance.now();
    await drainWithStart(outbox, N, otel ? "otel" : "plain", () => (end = { cpu: selfCpuMs(), t: performance.now() }));
    const info = await stream.jsm.streams.info(stream.stream);
    if (info.state.messages !== N) throw new Error(`stream holds ${info.state.messages}, expected ${N}`);
    return { cpuUs: (end.cpu - cpu0) * 1000 / N, rate: N / ((end.t - t0) / 1000) };
  } finally {
    await stream.close();
  }
}

const store = STORE === "pg" ? await postgresStore() : await libsqlStore();
const runtime = g.Bun ? `bun ${g.Bun.version}` : g.Deno ? `deno ${g.Deno.version.deno}` : `node ${g.process.version}`;
log(`otel-cost: ${STORE}, ${N} messages, ${REPEATS} pairs, ${runtime}`);
await run(store, true); // warm-up: JIT, connections, the SDK's first spans
const plain: number[] = [];
const otel: number[] = [];
const rates: { plain: number[]; otel: number[] } = { plain: [], otel: [] };
for (let r = 0; r < REPEATS; r++) {
  // Interleaved, order alternating, so drift (heat, a neighbour's load) hits both alike.
  for (const withOtel of r % 2 === 0 ? [false, true] : [true, false]) {
    const x = await run(store, withOtel);
    (withOtel ? otel : plain).push(x.cpuUs);
    (withOtel ? rates.otel : rates.plain).push(x.rate);
    log(`  ${withOtel ? "otel " : "plain"} ${round(x.cpuUs)} µs CPU/msg, ${Math.round(x.rate)} msg/s`);
  }
}
await store.close();
await tracerProvider.forceFlush();
const p = median(plain);
const o = median(otel);
console.log(`| ${STORE} (${runtime}) | plain µs CPU/msg | otel µs CPU/msg | added | plain msg/s | otel msg/s |`);
console.log(`|---|---|---|---|---|---|`);
console.log(
  `| median of ${REPEATS} | ${round(p)} | ${round(o)} | +${round(o - p)} µs (+${round((o / p - 1) * 100, 1)} %) | ` +
    `${Math.round(median(rates.plain))} | ${Math.round(median(rates.otel))} |`,
);
console.log(JSON.stringify({
  store: STORE,
  runtime,
  messages: N,
  pairs: REPEATS,
  plain_cpu_us_per_msg: plain.map((x) => round(x)),
  otel_cpu_us_per_msg: otel.map((x) => round(x)),
  added_cpu_us_per_msg: round(o - p),
  spans_exported: exportedSpans,
}));
await meterProvider.shutdown();
await tracerProvider.shutdown();
g.process?.exit?.(0);
