/**
 * RabbitMQ (AMQP 0-9-1) publisher for @x/outbox, on `amqplib`'s confirm channel.
 *
 * - Every publish waits for the broker's confirm (publisher confirms): a message counts
 *   as published only once RabbitMQ has taken responsibility for it.
 * - Messages go out `persistent` (delivery mode 2) with `messageId` = the outbox id,
 *   `type` = the topic, `timestamp` = the enqueue time (seconds), a `contentType`
 *   (`application/json` for JSON bodies, `application/octet-stream` for bytes, or the
 *   message's own `content-type` header), the message's headers, and `x-outbox-key`.
 * - A key's run is pipelined: published back to back on the one channel (RabbitMQ keeps
 *   a channel's order into each queue), its confirms awaited together.
 * - `mandatory` publishes (the default) that no queue accepts come back as
 *   `basic.return`: a permanent failure, so the message goes `dead` with a plain reason
 *   instead of being confirmed into nowhere.
 * - AMQP has no broker-side dedup: a publish whose confirm was lost (a dropped
 *   connection) is published again, so consumers see some messages twice. Deduplicate
 *   by `messageId` on the consuming side, e.g. with `@x/outbox/inbox`.
 *
 * @example
 * ```ts
 * import amqp from "amqplib";
 * import { createOutbox } from "@x/outbox";
 * import { amqpPublisher } from "@x/outbox/amqp";
 *
 * const connection = await amqp.connect("amqp://127.0.0.1", { recovery: true });
 * connection.on("error", () => {}); // a dropped connection is retried, not a crash
 * const outbox = createOutbox({
 *   storage,
 *   // A function, so a channel lost with its connection (or closed by an error) is reopened.
 *   publisher: amqpPublisher(() => connection.createConfirmChannel(), { exchange: "events" }),
 * });
 * ```
 *
 * @module
 */

import { abortable, onAbort } from "../shared/abort.ts";
import { OutboxConfigError, PublishError } from "../../src/errors.ts";
import { bool, checkOptions, duration, fail, int, MAX_TIMER_MS, type Rule } from "../../src/rules.ts";
import type { OutboxRecord, PublishContext, Publisher, PublishOutcome } from "../../src/types.ts";

/** The publish properties this publisher sets (a subset of amqplib's `Options.Publish`). */
export interface AmqpPublishProperties {
  mandatory: boolean;
  persistent: boolean;
  messageId: string;
  type: string;
  timestamp: number;
  contentType: string;
  headers: Record<string, string>;
}

/** A message RabbitMQ returned (`basic.return`), as amqplib emits it on `"return"`. */
export interface AmqpReturnedMessage {
  readonly fields: {
    readonly replyCode: number;
    readonly replyText: string;
    readonly exchange: string;
    readonly routingKey: string;
  };
  readonly properties: { readonly messageId?: string | undefined };
}

/**
 * What the publisher uses of an amqplib `ConfirmChannel` (from
 * `connection.createConfirmChannel()`); typed by shape, so any amqplib version fits.
 */
export interface AmqpConfirmChannel {
  /** amqplib's confirm-channel publish: `callback` gets `null` on ack, an error on nack or close. */
  publish(
    exchange: string,
    routingKey: string,
    content: Uint8Array,
    options: AmqpPublishProperties,
    callback: (error: unknown) => void,
  ): boolean;
  /** Listens for `"return"`, `"error"` and `"close"`. */
  on(event: string, listener: (...args: never[]) => void): unknown;
  /** Only confirm channels have it: tells them apart from a plain channel, which never confirms. */
  waitForConfirms(): Promise<unknown>;
  /** Closes the channel (only channels the publisher opened itself). */
  close(): Promise<unknown>;
}

/** Opens a confirm channel: `() => connection.createConfirmChannel()`. */
export type AmqpChannelFactory = () => Promise<AmqpConfirmChannel>;

/** Options of {@link amqpPublisher}. */
export interface AmqpPublisherOptions {
  /** The exchange to publish to (default `""`, the default exchange: the routing key names a queue). */
  exchange?: string;
  /** Maps a message to its routing key (default: the topic). */
  routingKey?: (message: OutboxRecord) => string;
  /**
   * Publish `mandatory` (default `true`): a message no queue accepts is returned by the
   * broker and goes `dead` as unroutable. With `false` RabbitMQ drops it silently and
   * confirms it, and the outbox counts it published.
   */
  mandatory?: boolean;
  /** Persistent messages, delivery mode 2 (default `true`): they survive a broker restart in durable queues. */
  persistent?: boolean;
  /** How long to wait for a confirm, in ms (default 10,000); then the attempt fails and is retried. */
  timeoutMs?: number;
  /** Most unconfirmed publishes of one run (default 256). */
  maxInFlight?: number;
}

/** The AMQP publisher: a {@link Publisher} with pipelined runs. */
export interface AmqpPublisher extends Publisher {
  /** The routing key a message is published with. */
  routingKeyOf(message: OutboxRecord): string;
}

/** What `Buffer.from` does for us; amqplib only accepts Buffers. */
interface BufferClass {
  from(text: string, encoding: "utf8"): Uint8Array;
  from(data: ArrayBufferLike, byteOffset: number, length: number): Uint8Array;
}

/** Why the broker closed a channel: the code and text of its `channel.close`. */
interface CloseReason {
  readonly code: number | null;
  readonly text: string;
}

/** One channel and what the publisher learnt from its events. */
interface Link {
  readonly channel: AmqpConfirmChannel;
  /** Returned (unroutable) messages not yet matched with their confirm, by message id. */
  readonly returns: Map<string, AmqpReturnedMessage[]>;
  closed: boolean;
  /** Set when the broker closed the channel with an error (404, 403, 406 …). */
  reason: CloseReason | null;
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

const OPTION_RULES: Record<string, Rule> = {
  exchange: (x, path) => {
    if (typeof x !== "string" || x.length > 255) fail("exchange must be a string of at most 255 characters", path);
  },
  routingKey: (x, path) => {
    if (typeof x !== "function") fail("routingKey must be a function (message) => string", path);
  },
  mandatory: bool,
  persistent: bool,
  // A confirm is waited for with setTimeout, whose delays above 2^31−1 ms fire at once.
  timeoutMs: duration(1, false, MAX_TIMER_MS),
  maxInFlight: int(1, Number.MAX_SAFE_INTEGER),
};

function isConfirmChannel(value: unknown): value is AmqpConfirmChannel {
  const c = value as AmqpConfirmChannel;
  return typeof value === "object" && value !== null && typeof c.publish === "function" && typeof c.on === "function";
}

/**
 * Whether the broker's channel error makes this message the culprit, one that gets the
 * same answer on every attempt: a missing exchange (404) or one it may not write to
 * (403) it was published to, or a body over the broker's `max_message_size` (406).
 * The other messages in flight on the channel die with it, but only transiently.
 */
function culprit(reason: CloseReason, exchange: string, size: number): string | null {
  const named = /exchange '([^']*)'/.exec(reason.text)?.[1];
  if (reason.code === 404 && named === exchange) {
    return `exchange "${exchange}" does not exist (404 NOT_FOUND); declare it, then requeue the message`;
  }
  if (reason.code === 403 && named === exchange) {
    return `publishing to exchange "${exchange}" is not allowed (403 ACCESS_REFUSED)`;
  }
  const max = /larger than configured max size (\d+)/.exec(reason.text)?.[1];
  if (reason.code === 406 && max !== undefined && size > Number(max)) {
    return `its ${size}-byte body is larger than the broker's max_message_size (${max} bytes) (406 PRECONDITION_FAILED)`;
  }
  return null;
}

/**
 * Creates a RabbitMQ publisher on an amqplib confirm channel.
 *
 * Give it a function that opens a channel (`() => connection.createConfirmChannel()`)
 * rather than a channel, unless something else replaces the publisher when the channel
 * dies: AMQP closes a channel for good on a broker error (a missing exchange) and with
 * its connection. With a function, the next publish after a close opens a new channel
 * (with amqplib's `recovery` connection, it waits for the reconnect); the publisher
 * owns those channels and `close()` closes the current one. With a channel, publishes
 * after its close fail (transiently, so nothing goes dead before `retry.maxAttempts`)
 * and `start()` warns through `onWarning` that it cannot reopen.
 *
 * The publisher listens for `"return"`, `"error"` and `"close"` on each channel. Its
 * `"error"` listener means a channel error no longer throws: it is reported as the
 * failure of the messages in flight.
 *
 * | failure | class |
 * |---|---|
 * | returned as unroutable (`mandatory`, 312 NO_ROUTE) | permanent |
 * | nack (the broker could not take it: e.g. a full queue with `overflow: reject-publish`) | transient |
 * | channel or connection closed, no confirm within `timeoutMs`, lease ending | transient |
 * | channel closed by the broker for this message: missing exchange (404), access refused (403), over `max_message_size` (406) | permanent (the other messages in flight: transient) |
 * | headers too large to encode (amqplib's `RangeError`) | permanent |
 *
 * @example With a named exchange and a routing key of your own
 * ```ts
 * const publisher = amqpPublisher(() => connection.createConfirmChannel(), {
 *   exchange: "orders",
 *   routingKey: (message) => `${message.topic}.${message.key ?? "none"}`,
 * });
 * ```
 *
 * @param channel A confirm channel (`await connection.createConfirmChannel()`), or a
 *   function that opens one (so the publisher can reopen it).
 * @param options Exchange, routing key, `mandatory`, persistence, timeout, pipelining.
 * @returns The publisher to pass to `createOutbox`.
 * @throws {OutboxConfigError} When `channel` is neither, is a channel without confirms,
 *   or an option is invalid.
 */
export function amqpPublisher(
  channel: AmqpConfirmChannel | AmqpChannelFactory,
  options: AmqpPublisherOptions = {},
): AmqpPublisher {
  const factory = typeof channel === "function" ? channel : null;
  if (!factory && !isConfirmChannel(channel)) {
    throw new OutboxConfigError(
      "amqpPublisher needs a confirm channel (await connection.createConfirmChannel() from amqplib) or a function that opens one",
      "channel",
    );
  }
  if (!factory && typeof (channel as AmqpConfirmChannel).waitForConfirms !== "function") {
    throw new OutboxConfigError(
      "amqpPublisher needs a confirm channel: a plain channel (createChannel()) never confirms a publish; use connection.createConfirmChannel()",
      "channel",
    );
  }
  checkOptions("amqpPublisher", options, OPTION_RULES);
  const NodeBuffer = (globalThis as { Buffer?: BufferClass }).Buffer;
  if (!NodeBuffer) {
    throw new OutboxConfigError("amqpPublisher needs Buffer (Node, Bun and Deno have it), as amqplib does", "channel");
  }
  const exchange = options.exchange ?? "";
  const routingKeyOf = options.routingKey ?? ((m: OutboxRecord) => m.topic);
  const mandatory = options.mandatory ?? true;
  const persistent = options.persistent ?? true;
  const timeoutMs = options.timeoutMs ?? 10_000;
  const maxInFlight = options.maxInFlight ?? 256;

  let warn: ((message: string) => void) | null = null;
  let link: Link | null = factory ? null : attach(channel as AmqpConfirmChannel);
  /** A channel being opened by the factory: shared, so concurrent runs open one, not many. */
  let opening: Promise<Link> | null = null;
  let closedForGood = false;

  function attach(ch: AmqpConfirmChannel): Link {
    const l: Link = { channel: ch, returns: new Map(), closed: false, reason: null };
    ch.on("return", (message: AmqpReturnedMessage) => {
      const id = message.properties.messageId;
      if (id === undefined) return; // not ours
      let list = l.returns.get(id);
      if (!list) l.returns.set(id, list = []);
      list.push(message);
    });
    // amqplib emits "error" (with the broker's reply code) just before "close". Without
    // a listener, a channel error would be thrown from amqplib's frame handler.
    ch.on("error", (error: { code?: unknown; message?: unknown }) => {
      l.reason = { code: typeof error?.code === "number" ? error.code : null, text: String(error?.message ?? error) };
    });
    ch.on("close", () => {
      l.closed = true;
      l.returns.clear();
      if (!factory && warn) warn(deadChannelText(l));
    });
    return l;
  }

  function deadChannelText(l: Link): string {
    const why = l.reason ? `by the broker: ${l.reason.text}` : "(its connection was lost or it was closed)";
    return `The AMQP channel was closed ${why}. amqpPublisher was given a channel, not a function that opens one, ` +
      `so it cannot reopen it: every publish fails until the publisher is replaced. ` +
      `Pass () => connection.createConfirmChannel() instead.`;
  }

  /** The live channel, opening one with the factory when there is none. */
  async function current(signal: AbortSignal): Promise<Link> {
    if (link && !link.closed) return link;
    if (!factory) throw new PublishError(`${deadChannelText(link!)} (transient)`);
    if (closedForGood) throw new PublishError("The AMQP publisher is closed (transient)");
    if (!opening) {
      opening = factory().then((ch) => {
        if (!isConfirmChannel(ch) || typeof ch.waitForConfirms !== "function") {
          throw new Error("the function did not return a confirm channel (use connection.createConfirmChannel())");
        }
        return (link = attach(ch));
      }).finally(() => (opening = null));
    }
    const pending = opening;
    try {
      return await abortable(signal, () => pending);
    } catch (error) {
      if (signal.aborted) throw cancelled(signal);
      throw new PublishError(`Could not open an AMQP channel: ${errorText(error)} (transient)`, { cause: error });
    }
  }

  function cancelled(signal: AbortSignal): PublishError {
    return new PublishError("Publish cancelled: the claim's lease is ending (transient)", { cause: signal.reason });
  }

  function encode(message: OutboxRecord): { content: Uint8Array; properties: AmqpPublishProperties } {
    const body = message.body;
    const content = typeof body === "string"
      ? NodeBuffer!.from(body, "utf8")
      : NodeBuffer!.from(body.buffer, body.byteOffset, body.byteLength); // a view, not a copy
    const headers: Record<string, string> = { ...message.headers };
    let contentType = typeof body === "string" ? "application/json" : "application/octet-stream";
    for (const name in headers) {
      // The message's own content-type says more than the storage format does.
      if (name.toLowerCase() === "content-type") contentType = headers[name]!;
    }
    if (message.key !== null) headers["x-outbox-key"] = message.key;
    return {
      content,
      properties: {
        mandatory,
        persistent,
        messageId: message.id,
        type: message.topic,
        timestamp: Math.floor(message.createdAt.getTime() / 1000),
        contentType,
        headers,
      },
    };
  }

  /** The outbox's view of a failed confirm on `l` for `message`. */
  function classify(l: Link, error: unknown, message: OutboxRecord, routingKey: string, size: number): PublishError {
    const where = `exchange "${exchange}" with routing key "${routingKey}"`;
    if (/nack/i.test(errorText(error))) {
      return new PublishError(
        `RabbitMQ refused message ${message.id} to ${where} (nack: a queue could not take it, e.g. full with overflow reject-publish) (transient)`,
        { cause: error },
      );
    }
    if (l.reason) {
      const why = culprit(l.reason, exchange, size);
      if (why !== null) {
        return new PublishError(`RabbitMQ closed the channel over message ${message.id}: ${why}`, {
          permanent: true,
          cause: error,
        });
      }
      return new PublishError(
        `The AMQP channel closed before message ${message.id} was confirmed (the broker closed it: ${l.reason.text}) (transient)`,
        { cause: error },
      );
    }
    return new PublishError(
      `The AMQP channel closed before message ${message.id} was confirmed (connection lost or channel closed: ${
        errorText(error)
      }) (transient)`,
      { cause: error },
    );
  }

  /**
   * Publishes `message` on `l`; calls `done` once with `null` (confirmed) or the error.
   * The frame is written synchronously, so calls in order reach the broker in order.
   */
  function send(l: Link, message: OutboxRecord, done: (error: PublishError | null) => void): void {
    const routingKey = routingKeyOf(message);
    let encoded: ReturnType<typeof encode>;
    try {
      encoded = encode(message);
      l.channel.publish(exchange, routingKey, encoded.content, encoded.properties, (error) => {
        // RabbitMQ sends basic.return before the ack of the same message, so a return is
        // known by the time its confirm arrives. Returns are matched by message id.
        const returned = l.returns.get(message.id)?.shift();
        if (returned && l.returns.get(message.id)!.length === 0) l.returns.delete(message.id);
        // A returned message is unroutable whatever came after the return (an ack, or the
        // channel's close before it): every attempt would be returned the same way.
        if (returned) {
          const { replyCode, replyText } = returned.fields;
          return done(
            new PublishError(
              `RabbitMQ returned message ${message.id} as unroutable (${replyCode} ${replyText}): no queue is bound to ` +
                `exchange "${exchange}" for routing key "${routingKey}"; bind one, then requeue the message`,
              { permanent: true },
            ),
          );
        }
        if (error === null || error === undefined) return done(null);
        if (/channel closed/i.test(errorText(error))) l.closed = true;
        done(classify(l, error, message, routingKey, encoded.content.byteLength));
      });
    } catch (error) {
      // Thrown before anything was sent: a closed channel (transient), or a message
      // amqplib cannot encode, such as headers over 64 KiB (the same every attempt).
      const name = (error as { name?: unknown })?.name;
      if (name === "IllegalOperationError" || /clos/i.test(errorText(error))) {
        l.closed = true;
        const why = l.reason ? `the broker closed it: ${l.reason.text}` : errorText(error);
        return done(
          new PublishError(`The AMQP channel is closed (${why}); message ${message.id} was not sent (transient)`, {
            cause: error,
          }),
        );
      }
      return done(
        new PublishError(`amqplib could not send message ${message.id}: ${errorText(error)}`, {
          permanent: error instanceof RangeError || error instanceof TypeError,
          cause: error,
        }),
      );
    }
  }

  async function publishRun(messages: readonly OutboxRecord[], context: PublishContext): Promise<PublishOutcome[]> {
    const { signal } = context;
    const n = messages.length;
    const outcomes: PublishOutcome[] = new Array(n);
    if (signal.aborted) return outcomes.fill({ ok: false, error: cancelled(signal) });
    let l: Link;
    try {
      l = await current(signal);
    } catch (error) {
      return outcomes.fill({ ok: false, error });
    }
    // The whole run goes out on this one channel. It is never swapped mid-run: after a
    // close, the rest of the run fails (and is retried in order) rather than overtaking
    // the messages lost with the old channel.
    let settled = 0;
    let sent = 0;
    let wake: (() => void) | null = null;
    const sentAt: number[] = new Array(n);
    const settle = (i: number, outcome: PublishOutcome) => {
      if (outcomes[i] !== undefined) return; // a late confirm after a timeout or an abort
      outcomes[i] = outcome;
      settled++;
      wake?.();
    };
    // A confirm that never comes (a half-open connection) fails after timeoutMs; a lease
    // ending fails everything still waiting. One timer per run, not one per message.
    let oldest = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expire = () => {
      timer = undefined;
      const now = Date.now();
      for (; oldest < sent; oldest++) {
        if (outcomes[oldest] !== undefined) continue;
        if (sentAt[oldest]! + timeoutMs > now) break;
        settle(
          oldest,
          {
            ok: false,
            error: new PublishError(
              `No confirm from RabbitMQ for message ${messages[oldest]!.id} in ${timeoutMs} ms (timeout) (transient)`,
            ),
          },
        );
      }
      if (oldest < sent) timer = setTimeout(expire, Math.max(1, sentAt[oldest]! + timeoutMs - now));
    };
    const cancelAll = () => {
      const error = cancelled(signal);
      for (let i = 0; i < n; i++) settle(i, { ok: false, error });
    };
    const stopWaiting = onAbort(signal, cancelAll);
    if (signal.aborted) cancelAll(); // aborted while the channel was being opened
    try {
      const waitForOne = () => new Promise<void>((resolve) => (wake = resolve));
      for (; sent < n && !signal.aborted; sent++) {
        while (sent - settled >= maxInFlight) await waitForOne();
        if (signal.aborted) break;
        const i = sent;
        sentAt[i] = Date.now();
        send(l, messages[i]!, (error) => settle(i, error ? { ok: false, error } : OK));
        if (timer === undefined) timer = setTimeout(expire, timeoutMs);
      }
      while (settled < n) await waitForOne();
    } finally {
      stopWaiting();
      if (timer !== undefined) clearTimeout(timer);
    }
    return outcomes;
  }

  return {
    routingKeyOf,
    async publish(message: OutboxRecord, context: PublishContext): Promise<void> {
      const [outcome] = await publishRun([message], context);
      if (!outcome!.ok) throw outcome!.error;
    },
    publishRun,
    check({ warn: report }) {
      warn = report;
      if (!factory && link?.closed) report(deadChannelText(link));
      return Promise.resolve();
    },
    async close() {
      closedForGood = true;
      // Only a channel the publisher opened is its own to close.
      if (factory && link && !link.closed) await link.channel.close().catch(() => {});
    },
  } satisfies AmqpPublisher & { check: NonNullable<Publisher["check"]> };
}

/** The outcome of every confirmed publish (shared: outcomes are read-only). */
const OK: PublishOutcome = { ok: true };
