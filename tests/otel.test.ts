/**
 * @x/outbox/otel with the real OpenTelemetry SDK, end to end: a request span → enqueue on
 * Postgres and on libSQL → tick() with the JetStream publisher → the message read back from
 * the stream → an inbox transaction inside withConsumerSpan. One trace: request → PRODUCER
 * → CONSUMER. Then failed publishes, the pipelined run, the metrics and the gauges.
 */

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { type Context, context, propagation, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from "@opentelemetry/core";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { DataPointType, MeterProvider, MetricReader, type ResourceMetrics } from "@opentelemetry/sdk-metrics";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { createOutbox, type Outbox, PublishError } from "../mod.ts";
import { createInbox } from "../inbox/mod.ts";
import { libsqlInbox, libsqlStorage, type LibsqlTx } from "../adapters/libsql/mod.ts";
import { postgresInbox, type PostgresSql, postgresStorage, type PostgresTx } from "../adapters/postgres/mod.ts";
import { ensureStream, jetstreamPublisher } from "../adapters/nats/mod.ts";
import { observeOutbox, otelInstrumentation, withConsumerSpan } from "../otel/mod.ts";
import { test } from "./harness.ts";
import { openClient, tempDatabase } from "./libsql_helpers.ts";
import { NATS_URL, uniqueName } from "./nats_helpers.ts";
import { openSql, uniqueSchema } from "./postgres_helpers.ts";

// What an application registers once at start-up: a context manager that follows awaits,
// and the W3C propagators. (Tracer and meter providers are given per test instead.)
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
propagation.setGlobalPropagator(
  new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }),
);

/** A tracer provider whose finished spans land in memory. */
function tracing() {
  const exporter = new InMemorySpanExporter();
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  return { exporter, provider, tracer: provider.getTracer("app") };
}

/** A metric reader the test collects from directly. */
class TestReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

/** The collected data points of one metric, by name. */
async function points(reader: TestReader, name: string) {
  const { resourceMetrics, errors } = await reader.collect();
  assert.deepEqual(errors, []);
  return metricOf(resourceMetrics, name);
}

function metricOf(rm: ResourceMetrics, name: string) {
  for (const scope of rm.scopeMetrics) {
    for (const m of scope.metrics) if (m.descriptor.name === name) return m;
  }
  return undefined;
}

/** A fresh JetStream stream on `<prefix>.>`, deleted by `close()`. */
async function stream() {
  const nc = await connect({ servers: NATS_URL });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const name = uniqueName("OTEL");
  const prefix = name.toLowerCase();
  await ensureStream(jsm, { name, subjects: [`${prefix}.>`], storage: "memory" as never });
  return {
    js,
    jsm,
    name,
    prefix,
    /** The next message of the stream, through an ordered consumer, as a consumer gets it. */
    async next(seq = 1) {
      const consumer = await js.consumers.get(name, {
        opt_start_seq: seq,
        deliver_policy: "by_start_sequence" as never,
      });
      const msg = await consumer.next({ expires: 5_000 });
      assert.ok(msg, "the stream delivers the message");
      await consumer.delete().catch(() => {});
      return msg;
    },
    async close() {
      await jsm.streams.delete(name).catch(() => {});
      await nc.close();
    },
  };
}

/** The databases under test: enqueue in a transaction, and an inbox transaction that receives. */
interface Db {
  outbox: Outbox<unknown, unknown>;
  enqueue(message: { topic: string; payload: unknown; headers?: Record<string, string> }): Promise<void>;
  receive(id: string): Promise<boolean>;
  close(): Promise<void>;
}

type Make = (options: Record<string, unknown>) => Promise<Db>;

async function postgresDb(options: Record<string, unknown>): Promise<Db> {
  const sql = openSql();
  const schema = uniqueSchema("otel");
  await sql.unsafe(`CREATE SCHEMA "${schema}"`);
  const outbox = createOutbox(
    { ...options, storage: postgresStorage(sql as unknown as PostgresSql, { schema }) } as never,
  ) as Outbox<PostgresTx, never>;
  await outbox.setup();
  const inbox = createInbox({ storage: postgresInbox(sql as never, { schema }), consumer: "billing" });
  await inbox.setup();
  return {
    outbox: outbox as never,
    async enqueue(message) {
      await sql.begin((tx) => outbox.enqueue(tx as unknown as PostgresTx, message));
    },
    async receive(id) {
      return await sql.begin((tx) => inbox.receive(tx as never, id)) as boolean;
    },
    async close() {
      await sql.unsafe(`DROP SCHEMA "${schema}" CASCADE`).catch(() => {});
      await sql.end({ timeout: 1 });
    },
  };
}

async function libsqlDb(options: Record<string, unknown>): Promise<Db> {
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  const outbox = createOutbox({ ...options, storage: libsqlStorage(client) } as never) as Outbox<LibsqlTx, never>;
  await outbox.setup();
  const inbox = createInbox({ storage: libsqlInbox(client), consumer: "billing" });
  await inbox.setup();
  return {
    outbox: outbox as never,
    async enqueue(message) {
      const tx = await client.transaction("write");
      try {
        await outbox.enqueue(tx, message);
        await tx.commit();
      } finally {
        tx.close();
      }
    },
    async receive(id) {
      const tx = await client.transaction("write");
      try {
        const first = await inbox.receive(tx, id);
        await tx.commit();
        return first;
      } finally {
        tx.close();
      }
    },
    async close() {
      client.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const databases: [string, Make][] = [["Postgres", postgresDb], ["libSQL", libsqlDb]];

const byKind = (spans: ReadableSpan[], kind: SpanKind) => spans.filter((s) => s.kind === kind);

/** The spans as an indented tree (the one docs/observability.md shows). */
export function spanTree(spans: ReadableSpan[]): string {
  const lines: string[] = [];
  const walk = (parent: string | undefined, depth: number) => {
    for (const s of spans.filter((x) => x.parentSpanContext?.spanId === parent)) {
      const attrs = Object.entries(s.attributes).map(([k, v]) => `${k}=${v}`).join(" ");
      lines.push(`${"  ".repeat(depth)}${s.name} [${SpanKind[s.kind]}] ${attrs}`.trimEnd());
      walk(s.spanContext().spanId, depth + 1);
    }
  };
  walk(undefined, 0);
  return lines.join("\n");
}

for (const [label, make] of databases) {
  test(`otel on ${label}: request span → enqueue → JetStream → inbox handler is one trace`, async () => {
    const { exporter, provider, tracer } = tracing();
    const nats = await stream();
    const db = await make({
      publisher: jetstreamPublisher(nats.js),
      instrumentation: otelInstrumentation({ tracerProvider: provider }),
    });
    try {
      const topic = `${nats.prefix}.orders.created`;
      let requestContext: Context | undefined;
      await tracer.startActiveSpan("POST /orders", async (span) => {
        requestContext = context.active();
        await db.enqueue({ topic, payload: { id: "o-1" } });
        span.end();
      });
      const report = await db.outbox.tick();
      assert.equal(report.published, 1);

      const msg = await nats.next();
      const traceparent = msg.headers?.get("traceparent") ?? "";
      assert.match(traceparent, /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/, "the stream's copy carries a traceparent");
      const id = msg.headers?.get("Nats-Msg-Id") ?? "";
      let handled = 0;
      await withConsumerSpan(msg, async (span) => {
        assert.equal(trace.getActiveSpan(), span, "the CONSUMER span is active in the handler");
        if (await db.receive(id)) handled++;
      }, { tracerProvider: provider, consumerGroup: "billing" });
      assert.equal(handled, 1);

      const spans = exporter.getFinishedSpans();
      const request = spans.find((s) => s.name === "POST /orders")!;
      const [producer] = byKind(spans, SpanKind.PRODUCER);
      const [consumer] = byKind(spans, SpanKind.CONSUMER);
      assert.ok(request && producer && consumer, "request, producer and consumer spans were exported");
      const traceId = request.spanContext().traceId;
      assert.equal(trace.getSpanContext(requestContext!)?.traceId, traceId);
      assert.equal(producer.spanContext().traceId, traceId, "the producer span is in the request's trace");
      assert.equal(consumer.spanContext().traceId, traceId, "the consumer span is in the request's trace");
      assert.equal(producer.parentSpanContext?.spanId, request.spanContext().spanId, "producer ⊂ request");
      assert.equal(consumer.parentSpanContext?.spanId, producer.spanContext().spanId, "consumer ⊂ producer");
      assert.ok(traceparent.includes(producer.spanContext().spanId), "the header is the producer span's context");

      assert.equal(producer.name, `send ${topic}`);
      assert.deepEqual(producer.attributes, {
        "messaging.system": "nats",
        "messaging.destination.name": topic,
        "messaging.message.id": id,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
      });
      assert.equal(consumer.name, `process ${topic}`);
      assert.deepEqual(consumer.attributes, {
        "messaging.system": "nats",
        "messaging.destination.name": topic,
        "messaging.message.id": id,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.consumer.group.name": "billing",
      });
      if (label === "libSQL") console.log(`otel trace (${label}):\n${spanTree(spans)}`);
    } finally {
      await db.close();
      await nats.close();
      await provider.shutdown();
    }
  });
}

test("otel: a caller's traceparent is kept, no active span adds no header, parent: link starts a linked trace", async () => {
  const { exporter, provider, tracer } = tracing();
  const seen: Record<string, string>[] = [];
  const db = await libsqlDb({
    publisher: (m: { headers: Record<string, string> }) => void seen.push({ ...m.headers }),
    instrumentation: otelInstrumentation({ tracerProvider: provider, parent: "link", system: "test" }),
  });
  try {
    const chosen = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    await tracer.startActiveSpan("request", async (span) => {
      await db.enqueue({ topic: "a", payload: 1, headers: { traceparent: chosen, x: "1" } });
      span.end();
    });
    await db.enqueue({ topic: "b", payload: 2 }); // no active span
    await db.outbox.tick();
    const producers = byKind(exporter.getFinishedSpans(), SpanKind.PRODUCER);
    assert.equal(producers.length, 2);
    const a = producers.find((s) => s.name === "send a")!;
    assert.equal(a.attributes["messaging.system"], "test");
    assert.equal(a.parentSpanContext, undefined, "parent: link makes the producer a root");
    assert.deepEqual(a.links.map((l) => l.context.spanId), ["b7ad6b7169203331"], "…linked to the caller's context");
    assert.notEqual(a.spanContext().traceId, "0af7651916cd43dd8448eb211c80319c");
    const b = producers.find((s) => s.name === "send b")!;
    assert.deepEqual(b.links, [], "no enqueue context, no link");
    // The publisher still gets the producer span's context, and the caller's other headers.
    const sentA = seen.find((h) => h.x === "1")!;
    assert.ok(sentA.traceparent?.includes(a.spanContext().spanId));
  } finally {
    await db.close();
    await provider.shutdown();
  }
});

test("otel: a failed publish records the exception, ERROR status and error.type, on publish and publishRun", async () => {
  const { exporter, provider, tracer } = tracing();
  const reader = new TestReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const nats = await stream();
  // A subject no stream stores: "no responders", retried. The permanent one: a publisher that refuses.
  const refusing = {
    publish: async () => {
      throw new PublishError("refused", { permanent: true });
    },
  };
  for (const publisher of [refusing, jetstreamPublisher(nats.js, { timeoutMs: 500 })]) {
    const db = await libsqlDb({
      publisher,
      retry: { maxAttempts: 1 },
      instrumentation: otelInstrumentation({ tracerProvider: provider, meterProvider }),
    });
    try {
      await tracer.startActiveSpan("request", async (span) => {
        await db.enqueue({ topic: "nowhere.x", payload: 1 });
        await db.enqueue({ topic: `${nats.prefix}.ok`, payload: 2 });
        span.end();
      });
      await db.outbox.tick();
    } finally {
      await db.close();
    }
  }
  await nats.close();
  const producers = byKind(exporter.getFinishedSpans(), SpanKind.PRODUCER);
  const failed = producers.filter((s) => s.status.code === SpanStatusCode.ERROR);
  // refusing: both fail (publish); JetStream: "nowhere.x" fails in the pipelined run.
  assert.equal(failed.length, 3, "three failed attempts");
  for (const s of failed) {
    assert.ok(s.events.some((e) => e.name === "exception"), `${s.name} records the exception`);
    assert.equal(s.attributes["error.type"], "PublishError");
  }
  assert.ok(producers.some((s) => s.name === `send ${nats.prefix}.ok` && s.status.code === SpanStatusCode.UNSET));

  const sent = await points(reader, "messaging.client.sent.messages");
  assert.equal(sent?.dataPointType, DataPointType.SUM);
  const total = sent!.dataPoints.reduce((n, p) => n + (p.value as number), 0);
  assert.equal(total, 4, "four attempts counted");
  const failures = sent!.dataPoints.filter((p) => p.attributes["error.type"] === "PublishError");
  assert.equal(failures.reduce((n, p) => n + (p.value as number), 0), 3);
  await meterProvider.shutdown();
  await provider.shutdown();
});

test("otel metrics: sent messages, publish durations and the outbox gauges from stats()", async () => {
  const reader = new TestReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const db = await libsqlDb({
    publisher: async (m: { topic: string }) => {
      if (m.topic === "bad") throw new PublishError("no", { permanent: true });
    },
    now: () => 1_000_000,
    instrumentation: otelInstrumentation({ meterProvider }),
  });
  let statsCalls = 0;
  const source = { stats: (o?: { signal?: AbortSignal }) => (statsCalls++, db.outbox.stats(o)) };
  const unobserve = observeOutbox(source, { meterProvider, attributes: { "outbox.name": "orders" } });
  try {
    for (let i = 0; i < 3; i++) await db.enqueue({ topic: "orders", payload: i });
    await db.enqueue({ topic: "bad", payload: 0 });
    let pending = await points(reader, "outbox.messages.pending");
    assert.equal(pending?.dataPointType, DataPointType.GAUGE);
    assert.deepEqual(pending!.dataPoints.map((p) => [p.value, p.attributes]), [[4, { "outbox.name": "orders" }]]);
    await db.outbox.tick();
    await db.enqueue({ topic: "orders", payload: 9 });

    const sent = await points(reader, "messaging.client.sent.messages");
    const byTopic = Object.fromEntries(
      sent!.dataPoints.map((
        p,
      ) => [`${p.attributes["messaging.destination.name"]}:${p.attributes["error.type"] ?? ""}`, p.value]),
    );
    assert.deepEqual(byTopic, { "orders:": 3, "bad:PublishError": 1 });
    assert.equal(sent!.descriptor.unit, "{message}");
    const duration = await points(reader, "messaging.client.operation.duration");
    assert.equal(duration?.dataPointType, DataPointType.HISTOGRAM);
    assert.equal(duration!.descriptor.unit, "s");
    const counts = duration!.dataPoints.map((p) => (p.value as { count: number }).count).reduce((a, b) => a + b, 0);
    assert.equal(counts, 4, "one duration per publish");
    for (const p of duration!.dataPoints) assert.equal(p.attributes["messaging.operation.type"], "send");

    pending = await points(reader, "outbox.messages.pending");
    assert.equal(pending!.dataPoints[0]!.value, 1);
    const dead = await points(reader, "outbox.messages.dead");
    assert.equal(dead!.dataPoints[0]!.value, 1);
    const age = await points(reader, "outbox.oldest_pending.age");
    assert.equal(age!.descriptor.unit, "s");
    assert.equal(age!.dataPoints[0]!.value, 0, "the fixed clock: the pending message has waited 0 s");
    const blocked = await points(reader, "outbox.keys.blocked");
    assert.equal(blocked!.dataPoints[0]!.value, 0);

    const calls = statsCalls;
    assert.equal(calls, 7, "one stats() per collection (7 so far), for all five gauges");
    unobserve();
    await reader.collect();
    assert.equal(statsCalls, calls, "unobserve() stops the stats() calls");
  } finally {
    await db.close();
    await meterProvider.shutdown();
  }
});

test("withConsumerSpan: a throwing handler ends its span with the exception, and reads plain and Web headers", async () => {
  const { exporter, provider, tracer } = tracing();
  const reader = new TestReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  const parent = tracer.startSpan("producer");
  const headers: Record<string, string> = {};
  propagation.inject(trace.setSpan(context.active(), parent), headers);
  parent.end();
  await assert.rejects(
    withConsumerSpan({ id: "m1", topic: "t", headers }, () => {
      throw new TypeError("bad payload");
    }, { tracerProvider: provider, meterProvider }),
    TypeError,
  );
  const value = await withConsumerSpan({ subject: "s.x", headers: new Headers(headers) }, () => 42, {
    tracerProvider: provider,
    meterProvider,
  });
  assert.equal(value, 42);
  const [failed, ok] = byKind(exporter.getFinishedSpans(), SpanKind.CONSUMER);
  assert.equal(failed!.status.code, SpanStatusCode.ERROR);
  assert.equal(failed!.attributes["error.type"], "TypeError");
  assert.equal(failed!.attributes["messaging.message.id"], "m1");
  assert.equal(failed!.parentSpanContext?.spanId, parent.spanContext().spanId);
  assert.equal(ok!.name, "process s.x");
  assert.equal(ok!.parentSpanContext?.spanId, parent.spanContext().spanId, "Web Headers carry the parent too");
  const processed = await points(reader, "messaging.process.duration");
  assert.equal(processed!.dataPoints.reduce((n, p) => n + (p.value as { count: number }).count, 0), 2);
  await meterProvider.shutdown();
  await provider.shutdown();
});
