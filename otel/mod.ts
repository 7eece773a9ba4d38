/**
 * @x/outbox/otel: OpenTelemetry traces and metrics for the outbox, on `@opentelemetry/api`
 * (an optional peer dependency; `@x/outbox` itself never imports it).
 *
 * - {@link otelInstrumentation} is the outbox's `instrumentation`: it writes the active
 *   trace context into each message's headers at `enqueue` (W3C `traceparent`,
 *   `tracestate`, `baggage`, whatever propagator the application registered), makes a
 *   PRODUCER span per publish (`send {destination}`) whose parent is that enqueue-time
 *   context, and counts and times the publishes (`messaging.client.sent.messages`,
 *   `messaging.client.operation.duration`).
 * - {@link observeOutbox} reports the outbox's own gauges from `outbox.stats()`.
 * - {@link withConsumerSpan} runs a consumer's handler (an inbox transaction) inside a
 *   CONSUMER span (`process {destination}`) whose parent comes from the message headers,
 *   so the trace goes on from the request that enqueued the message.
 *
 * Names follow the OpenTelemetry semantic conventions for messaging. This module only
 * calls the API: register an SDK (tracer and meter providers, a context manager, the W3C
 * propagators) in the application; see docs/observability.md.
 *
 * @example Request → enqueue → publish → consume, one trace
 * ```ts
 * import { createOutbox } from "@x/outbox";
 * import { observeOutbox, otelInstrumentation, withConsumerSpan } from "@x/outbox/otel";
 *
 * const outbox = createOutbox({ storage, publisher, instrumentation: otelInstrumentation() });
 * const stop = observeOutbox(outbox);
 * // consumer side, for each JetStream message:
 * await withConsumerSpan(msg, async () => {
 *   await sql.begin(async (tx) => {
 *     if (await inbox.receive(tx, msg.headers?.get("Nats-Msg-Id") ?? "")) await apply(tx, msg);
 *   });
 * });
 * ```
 *
 * @module
 */

import {
  type Attributes,
  type BatchObservableResult,
  type Context,
  context,
  type Counter,
  type Histogram,
  type Link,
  type Meter,
  type MeterProvider,
  metrics,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapPropagator,
  type TextMapSetter,
  trace,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import type { OutboxStats } from "../src/outbox.ts";
import type {
  Instrumentation,
  NewOutboxRow,
  OutboxRecord,
  OutboxStorage,
  PublishContext,
  Publisher,
  PublishOutcome,
} from "../src/types.ts";

/** The instrumentation scope name of the tracer and meter. */
export const INSTRUMENTATION_SCOPE = "@x/outbox";

/** The bucket boundaries (s) the conventions advise for messaging durations. */
const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

/** Options shared by {@link otelInstrumentation}, {@link withConsumerSpan} and {@link observeOutbox}. */
export interface OtelProviderOptions {
  /** Tracer provider (default: the global one, `trace.getTracerProvider()`). */
  tracerProvider?: TracerProvider;
  /** Meter provider (default: the global one, looked up at the first measurement). */
  meterProvider?: MeterProvider;
  /** Propagator for the headers (default: the global one, `propagation`). */
  propagator?: TextMapPropagator;
}

/** Options of {@link otelInstrumentation}. */
export interface OtelInstrumentationOptions extends OtelProviderOptions {
  /**
   * `messaging.system`: the broker the publisher sends to (default `"nats"`). Set it
   * when the publisher is not JetStream, e.g. `"kafka"`, `"rabbitmq"`, `"webhook"`.
   */
  system?: string;
  /** `messaging.destination.name` of a message (default: its topic). */
  destination?: (message: OutboxRecord) => string;
  /**
   * How a PRODUCER span relates to the enqueue-time context in the message headers:
   * `"child"` (default) makes it a child, so the request, the publish and the consumer
   * are one trace; `"link"` starts a new trace per publish that links to it (for relays
   * whose publishes should not lengthen the request's trace).
   */
  parent?: "child" | "link";
  /** Skip the headers at `enqueue` (the caller propagates by hand): spans and metrics stay. */
  inject?: boolean;
}

/** Options of {@link withConsumerSpan}. */
export interface ConsumerSpanOptions extends OtelProviderOptions {
  /** `messaging.system` (default `"nats"`). */
  system?: string;
  /** `messaging.destination.name` (default: the message's `topic`, else its `subject`). */
  destination?: string;
  /** `messaging.consumer.group.name`, e.g. the durable consumer's name. */
  consumerGroup?: string;
  /** `"child"` (default) or `"link"`: how the span relates to the context in the headers. */
  parent?: "child" | "link";
  /** More span attributes. */
  attributes?: Attributes;
}

/** Options of {@link observeOutbox}. */
export interface ObserveOutboxOptions {
  /** Meter provider (default: the global one). */
  meterProvider?: MeterProvider;
  /** Attributes added to every observation, to tell outboxes apart (e.g. `{ "outbox.name": "orders" }`). */
  attributes?: Attributes;
  /** Abandons a `stats()` call that takes longer (default 10,000 ms). */
  timeoutMs?: number;
}

/** What {@link observeOutbox} reads: an outbox, or anything with its `stats()`. */
export interface StatsSource {
  stats(options?: { signal?: AbortSignal }): Promise<OutboxStats>;
}

/**
 * Headers {@link withConsumerSpan} can read the trace context from: a NATS message's
 * `MsgHdrs`, a Web `Headers`, a `Map`, or a plain record.
 */
export type HeaderCarrier =
  | { get(key: string): string | null | undefined; keys?(): Iterable<string> }
  | Readonly<Record<string, string | readonly string[] | undefined>>;

/** A received message, as {@link withConsumerSpan} needs it: a NATS `JsMsg` fits. */
export interface ConsumedMessage {
  /** The message id (default: the `Nats-Msg-Id` header, which is the outbox id). */
  id?: string;
  /** The outbox topic, if the consumer knows it. */
  topic?: string;
  /** The broker subject (NATS), used when there is no `topic`. */
  subject?: string;
  /** The headers the message arrived with. */
  headers?: HeaderCarrier | null;
}

const recordSetter: TextMapSetter<Record<string, string>> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

const recordGetter: TextMapGetter<Readonly<Record<string, string>>> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};

/** Reads NATS `MsgHdrs`, Web `Headers`, a `Map` or a record. NATS answers `""` for a missing key. */
const carrierGetter: TextMapGetter<HeaderCarrier> = {
  keys(carrier) {
    if (typeof carrier.get === "function") {
      const keys = (carrier as { keys?(): Iterable<string> }).keys;
      return typeof keys === "function" ? Array.from(keys.call(carrier)) : [];
    }
    return Object.keys(carrier);
  },
  get(carrier, key) {
    const value = typeof carrier.get === "function"
      ? (carrier as { get(k: string): unknown }).get(key)
      : (carrier as Record<string, unknown>)[key];
    if (typeof value === "string") return value === "" ? undefined : value;
    if (Array.isArray(value)) return value as string[];
    return undefined;
  },
};

function injector(propagator: TextMapPropagator | undefined) {
  return (ctx: Context, carrier: Record<string, string>) =>
    propagator ? propagator.inject(ctx, carrier, recordSetter) : propagation.inject(ctx, carrier, recordSetter);
}

function extractor<C>(propagator: TextMapPropagator | undefined, getter: TextMapGetter<C>) {
  return (ctx: Context, carrier: C): Context =>
    propagator ? propagator.extract(ctx, carrier, getter) : propagation.extract(ctx, carrier, getter);
}

/** `error.type`: low-cardinality, the error's class name. */
function errorType(error: unknown): string {
  if (error instanceof Error) return error.name || error.constructor?.name || "Error";
  return "_OTHER";
}

function fail(span: Span, error: unknown): void {
  span.recordException(error instanceof Error ? error : String(error));
  span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
  span.setAttribute("error.type", errorType(error));
}

/** The span's parent context, or the link to it, from the headers' context. */
function relate(headerContext: Context, base: Context, mode: "child" | "link"): { parent: Context; links?: Link[] } {
  if (mode === "child") return { parent: headerContext };
  const linked = trace.getSpanContext(headerContext);
  // A link to the enqueue context; the span itself starts a trace of its own.
  return { parent: trace.deleteSpan(base), links: linked ? [{ context: linked }] : [] };
}

/** Meter instruments, created at the first measurement so a provider registered late is used. */
function lazyMeter(provider: MeterProvider | undefined) {
  let meter: Meter | undefined;
  return () => meter ??= (provider ?? metrics.getMeterProvider()).getMeter(INSTRUMENTATION_SCOPE);
}

/**
 * The outbox's OpenTelemetry instrumentation: pass it as `createOutbox({ instrumentation })`.
 *
 * - `enqueue`: the active context goes into each message's headers through the
 *   propagator (W3C `traceparent`, `tracestate`, `baggage` once registered); a message
 *   whose headers already have a `traceparent` is left as it is. No active span, no
 *   headers added.
 * - publish: one PRODUCER span per message and attempt, `send {destination}`, with
 *   `messaging.system`, `messaging.destination.name`, `messaging.message.id`,
 *   `messaging.operation.type` and `messaging.operation.name` (`"send"`), a child of the
 *   context in the headers (or linked, `parent: "link"`). The message goes out with the
 *   producer span's context in its headers, so a consumer's span is the producer's child.
 *   A failed publish records the exception, status ERROR and `error.type`. In a
 *   pipelined run (`publishRun`) every message's span starts before the run and ends
 *   when the run reports the outcomes.
 * - metrics: `messaging.client.sent.messages` (counter, `{message}`) and
 *   `messaging.client.operation.duration` (histogram, `s`), attributes
 *   `messaging.system`, `messaging.destination.name`, `messaging.operation.name` and, on
 *   failure, `error.type`. The outbox's gauges come from {@link observeOutbox}.
 *
 * @param options Providers, propagator, `system`, destination naming, child or link.
 * @returns The `Instrumentation` for `createOutbox`.
 *
 * @example
 * ```ts
 * import { createOutbox } from "@x/outbox";
 * import { otelInstrumentation } from "@x/outbox/otel";
 *
 * const outbox = createOutbox({
 *   storage: postgresStorage(sql),
 *   publisher: jetstreamPublisher(js),
 *   instrumentation: otelInstrumentation({ system: "nats" }),
 * });
 * await tracer.startActiveSpan("POST /orders", async (span) => {
 *   await sql.begin((tx) => outbox.enqueue(tx, { topic: "orders.created", payload: { id: "o-1" } }));
 *   span.end(); // the message carries this span's traceparent
 * });
 * ```
 */
export function otelInstrumentation(options: OtelInstrumentationOptions = {}): Instrumentation {
  const system = options.system ?? "nats";
  const destinationOf = options.destination ?? ((m: OutboxRecord) => m.topic);
  const mode = options.parent ?? "child";
  const inject = injector(options.propagator);
  const extract = extractor(options.propagator, recordGetter);
  let tracer: Tracer | undefined;
  const getTracer = () =>
    tracer ??= (options.tracerProvider ?? trace.getTracerProvider()).getTracer(INSTRUMENTATION_SCOPE);
  const getMeter = lazyMeter(options.meterProvider);
  let sent: Counter | undefined;
  let duration: Histogram | undefined;

  /** The rows with the caller's context in their headers (the same array when there is none). */
  function traced(rows: readonly NewOutboxRow[]): readonly NewOutboxRow[] {
    const carrier: Record<string, string> = {};
    inject(context.active(), carrier);
    const added = Object.keys(carrier);
    if (added.length === 0) return rows;
    const bare = JSON.stringify(carrier);
    return rows.map((row) => {
      if (row.headers === null) return { ...row, headers: bare };
      const headers = JSON.parse(row.headers) as Record<string, string>;
      if ("traceparent" in headers) return row; // the caller chose the parent
      return { ...row, headers: JSON.stringify({ ...carrier, ...headers }) };
    });
  }

  /** Starts a message's PRODUCER span; returns it and the record to send (headers with its context). */
  function begin(
    message: OutboxRecord,
  ): { span: Span; active: Context; record: OutboxRecord; destination: string; start: number } {
    const destination = destinationOf(message);
    const base = context.active();
    const { parent, links } = relate(extract(base, message.headers), base, mode);
    const span = getTracer().startSpan(`send ${destination}`, {
      kind: SpanKind.PRODUCER,
      attributes: {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.message.id": message.id,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
      },
      links,
    }, parent);
    const active = trace.setSpan(parent, span);
    const headers: Record<string, string> = { ...message.headers };
    inject(active, headers);
    return { span, active, record: withHeaders(message, headers), destination, start: performance.now() };
  }

  function end(s: { span: Span; destination: string; start: number }, error?: unknown, failed = false): void {
    const attributes: Attributes = {
      "messaging.system": system,
      "messaging.destination.name": s.destination,
      "messaging.operation.name": "send",
    };
    if (failed) {
      fail(s.span, error);
      attributes["error.type"] = errorType(error);
    }
    s.span.end();
    const meter = getMeter();
    sent ??= meter.createCounter("messaging.client.sent.messages", {
      unit: "{message}",
      description: "Messages the relay attempted to send to the broker.",
    });
    duration ??= meter.createHistogram("messaging.client.operation.duration", {
      unit: "s",
      description: "Duration of each publish, from the relay's call to the broker's answer.",
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    });
    sent.add(1, attributes);
    duration.record((performance.now() - s.start) / 1000, { ...attributes, "messaging.operation.type": "send" });
  }

  return {
    storage<Tx, Stmt>(storage: OutboxStorage<Tx, Stmt>): OutboxStorage<Tx, Stmt> {
      if (options.inject === false) return storage;
      // Object.create keeps every other member (and a class-based storage's methods) as it is.
      const wrapped: OutboxStorage<Tx, Stmt> = Object.create(storage);
      wrapped.insert = (tx, rows) => storage.insert(tx, traced(rows));
      if (typeof storage.statements === "function") {
        const statements = storage.statements;
        wrapped.statements = (rows) => statements.call(storage, traced(rows));
      }
      return wrapped;
    },
    publisher(publisher: Publisher): Publisher {
      const wrapped: Publisher = {
        async publish(message: OutboxRecord, ctx: PublishContext): Promise<void> {
          const s = begin(message);
          try {
            await context.with(s.active, () => publisher.publish(s.record, ctx));
          } catch (error) {
            end(s, error, true);
            throw error;
          }
          end(s);
        },
      };
      if (typeof publisher.publishRun === "function") {
        const run = publisher.publishRun;
        wrapped.publishRun = async (messages, ctx): Promise<PublishOutcome[]> => {
          const started = messages.map(begin);
          let outcomes: PublishOutcome[];
          try {
            outcomes = await run.call(publisher, started.map((s) => s.record), ctx);
          } catch (error) {
            for (const s of started) end(s, error, true);
            throw error;
          }
          started.forEach((s, i) => {
            const o = outcomes[i];
            if (o && !o.ok) end(s, o.error, true);
            else end(s);
          });
          return outcomes;
        };
      }
      if (publisher.check) wrapped.check = publisher.check.bind(publisher);
      if (publisher.close) wrapped.close = publisher.close.bind(publisher);
      return wrapped;
    },
  };
}

/** The record with other headers; the payload stays lazy (parsed only if read). */
function withHeaders(m: OutboxRecord, headers: Record<string, string>): OutboxRecord {
  return {
    id: m.id,
    seq: m.seq,
    topic: m.topic,
    key: m.key,
    get payload() {
      return m.payload;
    },
    body: m.body,
    headers,
    attempts: m.attempts,
    createdAt: m.createdAt,
  };
}

/**
 * Runs a consumer's handler inside a CONSUMER span, `process {destination}`, whose parent
 * is the context in the message's headers: for a message the outbox published with
 * {@link otelInstrumentation}, the relay's PRODUCER span, so the request that enqueued
 * the message, its publish and its processing are one trace. The span is active while
 * `fn` runs (database spans, further enqueues and logs join it) and ends when `fn`
 * settles; a throw records the exception, status ERROR and `error.type`, and is rethrown.
 * Also records `messaging.process.duration` (s).
 *
 * Attributes: `messaging.system`, `messaging.destination.name`, `messaging.message.id`,
 * `messaging.operation.type` and `messaging.operation.name` (`"process"`), and
 * `messaging.consumer.group.name` when given.
 *
 * @param message The received message: a NATS `JsMsg` (`subject`, `headers`), or `{ id, topic, headers }`.
 * @param fn The handler; it gets the span.
 * @param options `system`, `destination`, `consumerGroup`, providers, child or link.
 * @returns What `fn` returns.
 *
 * @example With the inbox, on JetStream and Postgres
 * ```ts
 * import { withConsumerSpan } from "@x/outbox/otel";
 *
 * for await (const msg of await consumer.consume()) {
 *   await withConsumerSpan(msg, async () => {
 *     await sql.begin(async (tx) => {
 *       if (!(await inbox.receive(tx, msg.headers?.get("Nats-Msg-Id") ?? ""))) return; // a copy
 *       await tx`update accounts set balance = balance + ${msg.json<{ amount: number }>().amount}`;
 *     });
 *   }, { consumerGroup: "billing" });
 *   msg.ack();
 * }
 * ```
 */
export async function withConsumerSpan<T>(
  message: ConsumedMessage,
  fn: (span: Span) => T | Promise<T>,
  options: ConsumerSpanOptions = {},
): Promise<T> {
  const headers = message.headers ?? {};
  const destination = options.destination ?? message.topic ?? message.subject ?? "unknown";
  const id = message.id ?? carrierGetter.get(headers, "Nats-Msg-Id");
  const system = options.system ?? "nats";
  const base = context.active();
  const { parent, links } = relate(
    extractor(options.propagator, carrierGetter)(base, headers),
    base,
    options.parent ?? "child",
  );
  const attributes: Attributes = {
    "messaging.system": system,
    "messaging.destination.name": destination,
    "messaging.operation.type": "process",
    "messaging.operation.name": "process",
    ...options.attributes,
  };
  if (typeof id === "string") attributes["messaging.message.id"] = id;
  if (options.consumerGroup !== undefined) attributes["messaging.consumer.group.name"] = options.consumerGroup;
  const tracer = (options.tracerProvider ?? trace.getTracerProvider()).getTracer(INSTRUMENTATION_SCOPE);
  const span = tracer.startSpan(`process ${destination}`, { kind: SpanKind.CONSUMER, attributes, links }, parent);
  const start = performance.now();
  const measured: Attributes = {
    "messaging.system": system,
    "messaging.destination.name": destination,
    "messaging.operation.name": "process",
  };
  if (options.consumerGroup !== undefined) measured["messaging.consumer.group.name"] = options.consumerGroup;
  try {
    return await context.with(trace.setSpan(parent, span), () => fn(span));
  } catch (error) {
    fail(span, error);
    measured["error.type"] = errorType(error);
    throw error;
  } finally {
    span.end();
    processDuration(options.meterProvider).record((performance.now() - start) / 1000, measured);
  }
}

const processHistograms = new WeakMap<MeterProvider, Histogram>();
/** The consumer-side duration histogram of the messaging conventions. */
const PROCESS_DURATION = "messaging.process.duration";

function processDuration(provider = metrics.getMeterProvider()): Histogram {
  let h = processHistograms.get(provider);
  if (!h) {
    h = provider.getMeter(INSTRUMENTATION_SCOPE).createHistogram(PROCESS_DURATION, {
      unit: "s",
      description: "Duration of a consumer's processing of a message.",
      advice: { explicitBucketBoundaries: DURATION_BUCKETS },
    });
    processHistograms.set(provider, h);
  }
  return h;
}

/**
 * Reports the outbox's state as observable gauges, read by one `outbox.stats()` call per
 * metric collection (one query, whatever the number of gauges):
 *
 * | gauge | unit | |
 * |---|---|---|
 * | `outbox.messages.pending` | `{message}` | waiting to be published |
 * | `outbox.messages.processing` | `{message}` | leased by a relay |
 * | `outbox.messages.dead` | `{message}` | given up, waiting for `requeue()` |
 * | `outbox.oldest_pending.age` | `s` | how long the longest-waiting due message has waited: alert on it |
 * | `outbox.keys.blocked` | `{key}` | keys held back by a dead message (`retry.onDead: "block"`) |
 *
 * Run it in one process per outbox table (the numbers are the table's, not the
 * process's), e.g. beside the relay.
 *
 * @param outbox The outbox (anything with its `stats()`).
 * @param options Meter provider, extra attributes, the stats timeout.
 * @returns A function that unregisters the gauges' callback.
 *
 * @example
 * ```ts
 * import { observeOutbox } from "@x/outbox/otel";
 *
 * const unobserve = observeOutbox(outbox, { attributes: { "outbox.name": "orders" } });
 * // at shutdown
 * unobserve();
 * ```
 */
export function observeOutbox(outbox: StatsSource, options: ObserveOutboxOptions = {}): () => void {
  const meter = (options.meterProvider ?? metrics.getMeterProvider()).getMeter(INSTRUMENTATION_SCOPE);
  const attributes = options.attributes ?? {};
  const timeoutMs = options.timeoutMs ?? 10_000;
  const gauge = (name: string, unit: string, description: string) =>
    meter.createObservableGauge(name, { unit, description });
  const pending = gauge("outbox.messages.pending", "{message}", "Messages waiting to be published.");
  const processing = gauge("outbox.messages.processing", "{message}", "Messages leased by a relay.");
  const dead = gauge("outbox.messages.dead", "{message}", "Messages given up, waiting for requeue().");
  const age = gauge("outbox.oldest_pending.age", "s", "How long the longest-waiting due message has waited.");
  const blocked = gauge("outbox.keys.blocked", "{key}", "Keys held back by a dead message.");
  const observables = [pending, processing, dead, age, blocked];
  const callback = async (observer: BatchObservableResult) => {
    const s = await outbox.stats({ signal: AbortSignal.timeout(timeoutMs) });
    observer.observe(pending, s.pending, attributes);
    observer.observe(processing, s.processing, attributes);
    observer.observe(dead, s.dead, attributes);
    observer.observe(age, s.oldestPendingAgeMs / 1000, attributes);
    observer.observe(blocked, s.blockedKeys, attributes);
  };
  meter.addBatchObservableCallback(callback, observables);
  return () => meter.removeBatchObservableCallback(callback, observables);
}
