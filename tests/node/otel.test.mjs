// @x/outbox/otel from dist/ (run `npm run build` first) with the real OpenTelemetry SDK on
// Node: a request span → enqueue on libSQL (a file) or Postgres (a schema of its own) →
// tick() with the JetStream publisher →
// the message from the stream → an inbox transaction inside withConsumerSpan. One trace,
// request → PRODUCER → CONSUMER; and the publish metrics and the outbox gauges.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createClient } from "@libsql/client";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { context, propagation, SpanKind, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { CompositePropagator, W3CBaggagePropagator, W3CTraceContextPropagator } from "@opentelemetry/core";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { MeterProvider, MetricReader } from "@opentelemetry/sdk-metrics";
import postgres from "postgres";
import { createOutbox } from "@x/outbox";
import { createInbox } from "@x/outbox/inbox";
import { libsqlInbox, libsqlStorage } from "@x/outbox/libsql";
import { postgresInbox, postgresStorage } from "@x/outbox/postgres";
import { ensureStream, jetstreamPublisher } from "@x/outbox/nats";
import { observeOutbox, otelInstrumentation, withConsumerSpan } from "@x/outbox/otel";

const NATS_URL = process.env.OUTBOX_TEST_NATS_URL ?? "127.0.0.1:4222";
const PG_URL = process.env.OUTBOX_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** libSQL on a temp file: storages, a write transaction around `fn`, and cleanup. */
function libsqlDatabase() {
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-otel-"));
  const client = createClient({ url: `file:${join(dir, "app.db")}` });
  return {
    storage: libsqlStorage(client),
    inbox: libsqlInbox(client),
    async transaction(fn) {
      const tx = await client.transaction("write");
      try {
        const result = await fn(tx);
        await tx.commit();
        return result;
      } finally {
        tx.close(); // after a commit, a no-op; otherwise the rollback
      }
    },
    async close() {
      client.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Postgres in a schema of its own, dropped at the end. */
function postgresDatabase() {
  const schema = `otel_node_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  const sql = postgres(PG_URL, { max: 2, onnotice: () => {} });
  return {
    storage: postgresStorage(sql, { schema }),
    inbox: postgresInbox(sql, { schema }),
    transaction: (fn) => sql.begin(fn),
    async close() {
      await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await sql.end();
    },
  };
}

context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
propagation.setGlobalPropagator(
  new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }),
);

class TestReader extends MetricReader {
  async onShutdown() {}
  async onForceFlush() {}
}

async function metric(reader, name) {
  const { resourceMetrics, errors } = await reader.collect();
  assert.deepEqual(errors, []);
  return resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
}

for (const [label, open] of [["libSQL", libsqlDatabase], ["Postgres", postgresDatabase]]) {
  test(`otel on Node (dist/): request → enqueue on ${label} → JetStream → inbox handler is one trace, with metrics`, async () => {
    const exporter = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
    const reader = new TestReader();
    const meterProvider = new MeterProvider({ readers: [reader] });
    const tracer = provider.getTracer("app");

    const nc = await connect({ servers: NATS_URL });
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const name = `OTELNODE${Date.now().toString(36)}${crypto.randomUUID().slice(0, 6)}`.toUpperCase();
    const prefix = name.toLowerCase();
    await ensureStream(jsm, { name, subjects: [`${prefix}.>`], storage: "memory" });

    const db = open();
    const outbox = createOutbox({
      storage: db.storage,
      publisher: jetstreamPublisher(js),
      instrumentation: otelInstrumentation({ tracerProvider: provider, meterProvider }),
    });
    const inbox = createInbox({ storage: db.inbox, consumer: "billing" });
    const unobserve = observeOutbox(outbox, { meterProvider });
    try {
      await outbox.setup();
      await inbox.setup();
      const topic = `${prefix}.orders.created`;
      await tracer.startActiveSpan("POST /orders", async (span) => {
        await db.transaction((tx) => outbox.enqueue(tx, { topic, payload: { id: "o-1" } }));
        span.end();
      });
      assert.equal((await metric(reader, "outbox.messages.pending")).dataPoints[0].value, 1);
      assert.equal((await outbox.tick()).published, 1);

      const consumer = await js.consumers.get(name);
      const msg = await consumer.next({ expires: 5_000 });
      assert.ok(msg, "the stream delivers the message");
      const id = msg.headers?.get("Nats-Msg-Id") ?? "";
      let applied = 0;
      await withConsumerSpan(msg, async () => {
        if (await db.transaction((tx) => inbox.receive(tx, id))) applied++;
      }, { tracerProvider: provider, meterProvider });
      assert.equal(applied, 1);

      const spans = exporter.getFinishedSpans();
      const request = spans.find((s) => s.name === "POST /orders");
      const producer = spans.find((s) => s.kind === SpanKind.PRODUCER);
      const consumed = spans.find((s) => s.kind === SpanKind.CONSUMER);
      const traceId = request.spanContext().traceId;
      assert.equal(producer.spanContext().traceId, traceId);
      assert.equal(consumed.spanContext().traceId, traceId);
      assert.equal(producer.parentSpanContext?.spanId, request.spanContext().spanId);
      assert.equal(consumed.parentSpanContext?.spanId, producer.spanContext().spanId);
      assert.equal(producer.name, `send ${topic}`);
      assert.equal(producer.attributes["messaging.message.id"], id);
      assert.equal(producer.attributes["messaging.operation.type"], "send");
      assert.equal(consumed.name, `process ${topic}`);
      assert.equal(consumed.attributes["messaging.operation.type"], "process");
      assert.equal(trace.getActiveSpan(), undefined, "nothing stays active after the handler");

      const sent = await metric(reader, "messaging.client.sent.messages");
      assert.equal(sent.dataPoints.reduce((n, p) => n + p.value, 0), 1);
      const duration = await metric(reader, "messaging.client.operation.duration");
      assert.equal(duration.dataPoints[0].value.count, 1);
      assert.equal((await metric(reader, "outbox.messages.pending")).dataPoints[0].value, 0);
    } finally {
      unobserve();
      await db.close();
      await jsm.streams.delete(name).catch(() => {});
      await nc.close();
      await meterProvider.shutdown();
      await provider.shutdown();
    }
  });
}
