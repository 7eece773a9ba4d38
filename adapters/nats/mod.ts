/**
 * NATS JetStream publisher for @x/outbox, on `@nats-io/jetstream` (v3).
 *
 * - The message id goes out as `Nats-Msg-Id`, so the stream drops a repeated message
 *   inside its `duplicate_window`: with retries that land inside the window, the stream
 *   holds each message once.
 * - A batch is pipelined: each key's run goes out in order on the one connection with
 *   many publishes in flight, instead of one round trip per message.
 * - Failures are classified ({@link classifyJetStreamError}): what can never pass as
 *   sent (a message over the stream's `max_msg_size` or the server's `max_payload`, a
 *   failed expectation header, a permissions violation) is permanent, and the message
 *   goes `dead` with a plain-words `lastError`. Timeouts, disconnects, an unavailable
 *   cluster and "no responders" are retried with back-off: in a cluster only the
 *   stream leader listens on the stream's subjects, so a leader election answers "no
 *   responders" for a while. A stream that does not exist answers the same; `start()`
 *   then warns through `onWarning`, and the messages go out once the stream exists.
 * - A replay inside the duplicate window is dropped: `requeue({ status: "published" })`
 *   of a message the stream still remembers (or an id enqueued again) is acked as a
 *   duplicate and stores nothing, yet the outbox counts it published. `start()` reports
 *   such drops through `onWarning`. To deliver a message again, requeue it after the
 *   stream's `duplicate_window` has passed, or enqueue it again with a new id.
 * - It takes your JetStream client, so any transport works: `@nats-io/transport-node`,
 *   `@nats-io/transport-deno`, or `wsconnect` on the edge.
 *
 * @example
 * ```ts
 * import { connect } from "@nats-io/transport-node";
 * import { jetstream, jetstreamManager } from "@nats-io/jetstream";
 * import { createOutbox } from "@x/outbox";
 * import { ensureStream, jetstreamPublisher } from "@x/outbox/nats";
 *
 * const nc = await connect({ servers: "127.0.0.1:4222" });
 * const outbox = createOutbox({ storage, publisher: jetstreamPublisher(jetstream(nc)) });
 * await ensureStream(await jetstreamManager(nc), { name: "ORDERS", subjects: ["orders.>"], outbox });
 * ```
 *
 * @module
 */

import type {
  JetStreamClient,
  JetStreamManager,
  JetStreamPublishOptions,
  PubAck,
  StreamConfig,
  StreamInfo,
} from "@nats-io/jetstream";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { OutboxConfigError, PublishError } from "../../src/errors.ts";
import { duplicateWarner } from "../shared/duplicates.ts";
import { checkOptions, duration, fail, int, MAX_TIMER_MS, type Rule, unchecked } from "../../src/rules.ts";
import type { OutboxRecord, PublishContext, Publisher, PublishOutcome } from "../../src/types.ts";

/** Options of {@link jetstreamPublisher}. */
export interface JetStreamPublisherOptions {
  /** Maps a message to its subject (default: the topic, after `subjectPrefix`). */
  subject?: (message: OutboxRecord) => string;
  /** Prepended to the topic when no `subject` function is given, e.g. `"events."`. */
  subjectPrefix?: string;
  /** How long to wait for the stream's ack, in ms (default 5,000). */
  timeoutMs?: number;
  /** Most publishes in flight in one pipelined run (default 256). */
  maxInFlight?: number;
  /** Encodes the payload (default: the stored body: JSON text, or the bytes as they are). */
  encode?: (message: OutboxRecord) => Uint8Array | string;
  /** A manager for the dedup-window check; default `js.jetstreamManager()`. */
  manager?: JetStreamManager;
}

/** The JetStream publisher: a {@link Publisher} with pipelining and a dedup-window check. */
export interface JetStreamPublisher extends Publisher {
  /** The subject a message is published to. */
  subjectOf(message: OutboxRecord): string;
}

const NS_PER_MS = 1_000_000;
/** How often a subject answered "no responders" is looked up again for a missing stream. */
const MISSING_STREAM_RECHECK_MS = 60_000;

function errorName(error: unknown): string {
  return (error as { name?: unknown })?.name as string ?? "";
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * JetStream API error codes (`err_code`) with which the stream refuses a publish that
 * can never pass as sent: retrying the same bytes and headers gets the same answer.
 * Each maps to the reason kept in `lastError`. Codes not listed are retried.
 */
const PERMANENT_API_ERRORS: ReadonlyMap<number, string> = new Map([
  [10054, "it is larger than the stream's max_msg_size (or the account's limit)"],
  [10097, "its headers are larger than JetStream's 64 KiB limit"],
  [10071, "its Nats-Expected-Last-Sequence or -Last-Subject-Sequence header does not match the stream"],
  [10164, "its Nats-Expected-Last-Sequence or -Last-Subject-Sequence header does not match the stream"],
  [10193, "its Nats-Expected-Last-Subject-Sequence header lacks a sequence"],
  [10070, "its Nats-Expected-Last-Msg-Id header does not match the stream"],
  [10060, "its Nats-Expected-Stream header names another stream"],
  [10109, "the stream is sealed"],
  [10165, "its Nats-TTL header is invalid"],
  [10166, "the stream does not allow per-message TTLs (allow_msg_ttl)"],
]);

/** Whether `error` is the client's "no responders" (status 503) answer to a publish. */
function isNoResponders(error: unknown): boolean {
  const cause = (error as { cause?: unknown })?.cause;
  const own = error as { isNoResponders?: () => boolean };
  const inner = cause as { isNoResponders?: () => boolean } | undefined;
  if (typeof own?.isNoResponders === "function" && own.isNoResponders()) return true;
  if (typeof inner?.isNoResponders === "function" && inner.isNoResponders()) return true;
  return /no responders/i.test(errorText(error) + " " + (cause instanceof Error ? cause.message : ""));
}

/**
 * Turns a NATS error into the outbox's view of it: a permanent `PublishError` when the
 * message can never pass as sent, a transient one (retried with back-off) otherwise,
 * each with the original error as `cause`.
 *
 * | failure | class | why |
 * |---|---|---|
 * | "no responders" (503): no stream leader listens on the subject | transient | In a cluster only the stream leader listens, so every leader election answers this for a while. A stream that truly does not exist looks the same; `start()` warns about it through `onWarning` (see {@link jetstreamPublisher}), and its messages are delivered once the stream exists. |
 * | timeout (no ack in `timeoutMs`) | transient | The stream may have stored it; the retry is dropped as a duplicate. |
 * | closed, draining or reconnecting connection | transient | |
 * | JetStream API errors 10054 (message size exceeds maximum allowed: the stream's `max_msg_size`), 10097 (headers over 64 KiB), wrong last sequence or msg id, expected stream mismatch, sealed stream, invalid TTL | permanent | The same message gets the same answer on every attempt. |
 * | other JetStream API errors: unavailable cluster (10008), stream offline, store failed (a full stream with `discard: new`), "duplicate message id is in process", too many requests | transient | They pass once the cluster recovers or the stream has room. |
 * | the client's `max_payload` check | permanent | The server never accepts more than `max_payload` bytes. |
 * | permissions violation | permanent | Fix the permissions, then `requeue()`. |
 *
 * @param error What `js.publish` threw.
 * @param subject The subject that was published to.
 * @param size Encoded payload size in bytes.
 * @returns A `PublishError` whose `permanent` flag decides retry or dead.
 */
export function classifyJetStreamError(error: unknown, subject: string, size: number): PublishError {
  const name = errorName(error);
  const text = errorText(error);
  if (isNoResponders(error)) {
    return new PublishError(
      `No JetStream stream answered for subject "${subject}" (no responders, 503): the stream may be electing a leader, or no stream accepts the subject (transient)`,
      { cause: error },
    );
  }
  if (name === "JetStreamNotEnabled") {
    return new PublishError(
      `JetStream is not enabled for this account on the server (publishing to "${subject}") (transient)`,
      { cause: error },
    );
  }
  const code = (error as { code?: unknown })?.code;
  if (name === "JetStreamApiError" && typeof code === "number") {
    const reason = PERMANENT_API_ERRORS.get(code);
    if (reason !== undefined) {
      return new PublishError(
        `JetStream refused the ${size}-byte message for "${subject}" (${text}, API error ${code}): ${reason}; it can never be published as is`,
        { permanent: true, cause: error },
      );
    }
    return new PublishError(`JetStream publish to "${subject}" failed: ${text} (API error ${code}) (transient)`, {
      cause: error,
    });
  }
  if (/max_payload|maximum payload/i.test(text)) {
    return new PublishError(
      `Message of ${size} bytes is larger than the server's max_payload; it can never be published as is`,
      {
        permanent: true,
        cause: error,
      },
    );
  }
  if (
    /permissions? violation|authorization|not authorized|permission denied/i.test(text) ||
    name === "PermissionViolationError"
  ) {
    return new PublishError(`Not allowed to publish to subject "${subject}": ${text}`, {
      permanent: true,
      cause: error,
    });
  }
  if (name === "TimeoutError" || /timeout/i.test(text)) {
    return new PublishError(`No ack from JetStream for "${subject}" in time (timeout) (transient)`, { cause: error });
  }
  if (/closed|draining|disconnect|reconnect/i.test(name + text)) {
    return new PublishError(`NATS connection unavailable while publishing to "${subject}" (${text}) (transient)`, {
      cause: error,
    });
  }
  return new PublishError(`JetStream publish to "${subject}" failed: ${text} (transient)`, { cause: error });
}

const OPTION_RULES: Record<string, Rule> = {
  subject: (x, path) => {
    if (typeof x !== "function") {
      fail("subject must be a function (message) => string; use subjectPrefix for a prefix", path);
    }
  },
  subjectPrefix: (x, path) => {
    if (typeof x !== "string" || /\s/.test(x)) fail("subjectPrefix must be a string without whitespace", path);
  },
  // nats.js waits with setTimeout, whose delays above 2^31−1 ms fire at once.
  timeoutMs: duration(1, false, MAX_TIMER_MS),
  maxInFlight: int(1, Number.MAX_SAFE_INTEGER),
  encode: unchecked,
  manager: unchecked,
};

function isJetStreamClient(value: unknown): value is JetStreamClient {
  return typeof value === "object" && value !== null && typeof (value as JetStreamClient).publish === "function";
}

/**
 * Creates a JetStream publisher.
 *
 * With `start()`, the publisher also reports through the outbox's `onWarning`: a stream
 * whose `duplicate_window` is shorter than the retry horizon; a subject no stream
 * accepts (looked up when a publish gets "no responders", at most once a minute per
 * subject); and publishes the stream dropped as duplicates on a message's first
 * attempt, such as a `requeue()` of published messages inside the window (at most one
 * warning per 10 s, counting the drops since the last one). `tick()` alone does not warn.
 *
 * @param js A JetStream client: `jetstream(nc)` from `@nats-io/jetstream`.
 * @param options Subject mapping, timeout, pipelining, encoding.
 * @returns The publisher to pass to `createOutbox`.
 * @throws {OutboxConfigError} When `js` is not a JetStream client or an option is invalid.
 */
export function jetstreamPublisher(js: JetStreamClient, options: JetStreamPublisherOptions = {}): JetStreamPublisher {
  if (!isJetStreamClient(js)) {
    throw new OutboxConfigError(
      "jetstreamPublisher needs a JetStream client: jetstream(nc) from @nats-io/jetstream",
      "js",
    );
  }
  checkOptions("jetstreamPublisher", options, OPTION_RULES);
  const timeoutMs = options.timeoutMs ?? 5_000;
  const maxInFlight = options.maxInFlight ?? 256;
  const prefix = options.subjectPrefix ?? "";
  const subjectOf = options.subject ?? ((m: OutboxRecord) => prefix + m.topic);
  const encode = options.encode ?? ((m: OutboxRecord) => m.body);
  const encoder = new TextEncoder();

  // Dedup-window check: set up by check(), applied to every stream that acks.
  let horizonMs: number | null = null;
  let warn: ((message: string) => void) | null = null;
  const checked = new Set<string>();

  async function checkStream(stream: string): Promise<string | null> {
    if (horizonMs === null || checked.has(stream)) return null;
    checked.add(stream);
    const manager = options.manager ?? await js.jetstreamManager();
    const info = await manager.streams.info(stream);
    const windowMs = (info.config.duplicate_window ?? 0) / NS_PER_MS;
    if (windowMs >= horizonMs) return null;
    return `JetStream stream "${stream}" drops duplicates only within ${windowMs} ms, but a message can be retried for up to ${horizonMs} ms ` +
      `(lease + largest back-off): a retry after the window would be stored twice. Raise duplicate_window (ensureStream does).`;
  }

  function afterAck(stream: string) {
    if (horizonMs === null || checked.has(stream)) return;
    checkStream(stream).then(
      (w) => w && warn?.(w),
      (e) => warn?.(`Could not check the duplicate window of stream "${stream}": ${errorText(e)}`),
    );
  }

  // "No responders" means an election or a missing stream. Once per subject per minute
  // (and only with a warn from start()) ask the meta leader whether a stream covers the
  // subject: none means missing, which deserves a warning; the retries go on either way.
  const lookedUp = new Map<string, number>();
  function afterNoResponders(subject: string) {
    if (warn === null) return;
    const now = Date.now();
    const last = lookedUp.get(subject);
    if (last !== undefined && now - last < MISSING_STREAM_RECHECK_MS) return;
    if (lookedUp.size >= 1_000) lookedUp.clear(); // many subjects: bound the memory, not the lookups
    lookedUp.set(subject, now);
    streamsFor(subject).then(
      (names) => {
        if (names.length > 0) return;
        warn?.(
          `No JetStream stream accepts subject "${subject}": its messages are retried with back-off until one does, ` +
            `then go dead after retry.maxAttempts. Create a stream for it (ensureStream does).`,
        );
      },
      // The meta leader cannot answer either (an outage or an election): the retries' lastError says enough.
      () => {},
    );
  }

  async function streamsFor(subject: string): Promise<string[]> {
    const manager = options.manager ?? await js.jetstreamManager();
    const names: string[] = [];
    for await (const name of manager.streams.names(subject)) names.push(name);
    return names;
  }

  // A duplicate ack on a message's first attempt (requeue() resets attempts) means the
  // stream held the id before this row was ever tried: a replay the stream dropped.
  const duplicates = duplicateWarner((what, stream) =>
    `JetStream stream "${stream}" already held ${what} and dropped the publish as a duplicate (same Nats-Msg-Id inside its duplicate_window); ` +
    `the outbox counts it published. Harmless after a lost ack, but a replay (requeue() of published messages, or an id enqueued again) ` +
    `is not delivered again inside the window: requeue after the window has passed, or enqueue the message with a new id.`
  );

  async function send(message: OutboxRecord, signal: AbortSignal): Promise<void> {
    const subject = subjectOf(message);
    const data = encode(message);
    const opts: Partial<JetStreamPublishOptions> = { msgID: message.id, timeout: timeoutMs };
    const entries = Object.entries(message.headers);
    if (entries.length > 0) {
      const h = natsHeaders();
      for (const [k, v] of entries) h.set(k, v);
      opts.headers = h;
    }
    if (signal.aborted) {
      throw new PublishError("Publish cancelled: the claim's lease is ending", { cause: signal.reason });
    }
    let ack: PubAck;
    try {
      ack = await js.publish(subject, data, opts);
    } catch (error) {
      // The size only matters for the error text ("max payload"): computed on failure,
      // not per message (encoding every body again cost ~1–2 % of a relay's CPU).
      const size = typeof data === "string" ? encoder.encode(data).byteLength : data.byteLength;
      const classified = classifyJetStreamError(error, subject, size);
      if (!classified.permanent && isNoResponders(error)) afterNoResponders(subject);
      throw classified;
    }
    afterAck(ack.stream);
    if (ack.duplicate && message.attempts === 1) duplicates.dropped(message, ack.stream);
  }

  return {
    subjectOf,
    publish(message: OutboxRecord, context: PublishContext) {
      return send(message, context.signal);
    },
    async publishRun(messages: readonly OutboxRecord[], context: PublishContext): Promise<PublishOutcome[]> {
      // Each send() writes its message to the connection synchronously, in call order,
      // so the server receives (and the stream stores) a key's run in order. Acks are
      // counted as they come, at most maxInFlight outstanding: no promise per outcome.
      const n = messages.length;
      const outcomes: PublishOutcome[] = new Array(n);
      let settled = 0;
      let sent = 0;
      let wake: (() => void) | null = null;
      const done = (i: number, outcome: PublishOutcome) => {
        outcomes[i] = outcome;
        settled++;
        wake?.();
      };
      const waitForOne = () => new Promise<void>((resolve) => (wake = resolve));
      for (; sent < n; sent++) {
        while (sent - settled >= maxInFlight) await waitForOne();
        const i = sent;
        send(messages[i]!, context.signal).then(() => done(i, OK), (error) => done(i, { ok: false, error }));
      }
      while (settled < n) await waitForOne();
      return outcomes;
    },
    async check({ retryHorizonMs, warn: report }) {
      horizonMs = retryHorizonMs;
      warn = report;
      duplicates.warn = report;
      // Streams met before check() ran are checked again against this horizon.
      const streams = [...checked];
      checked.clear();
      for (const stream of streams) {
        const w = await checkStream(stream);
        if (w) report(w);
      }
    },
  } satisfies JetStreamPublisher & { check: NonNullable<Publisher["check"]> };
}

/** The outcome of every accepted publish (shared: outcomes are read-only). */
const OK: PublishOutcome = { ok: true };

/** Options of {@link ensureStream}. */
export interface EnsureStreamOptions extends Partial<Omit<StreamConfig, "name" | "subjects" | "duplicate_window">> {
  /** Stream name. */
  name: string;
  /** Subjects the stream stores (must cover the outbox's subjects). */
  subjects: string[];
  /** The outbox (or its retry horizon) the window must cover. */
  outbox?: { readonly retryHorizonMs: number };
  /** Dedup window in ms (default: twice the retry horizon, at least 2 minutes). */
  duplicateWindowMs?: number;
}

/**
 * Creates a stream, or updates it, so that it stores the given subjects and its
 * duplicate window is longer than the outbox's retry horizon (lease + largest
 * back-off). Existing settings other than subjects and the window are left alone.
 *
 * @param jsm A JetStream manager: `await jetstreamManager(nc)`.
 * @param options Name, subjects, the outbox, and any other stream settings for creation.
 * @returns The stream's info after the change.
 * @throws {OutboxConfigError} When the requested window is shorter than the horizon.
 */
export async function ensureStream(jsm: JetStreamManager, options: EnsureStreamOptions): Promise<StreamInfo> {
  const { name, subjects, outbox, duplicateWindowMs, ...rest } = options;
  const horizon = outbox?.retryHorizonMs ?? 0;
  const windowMs = duplicateWindowMs ?? Math.max(120_000, horizon * 2);
  if (windowMs <= horizon) {
    throw new OutboxConfigError(
      `duplicateWindowMs (${windowMs}) must be longer than the outbox's retry horizon (${horizon} ms), or retries can be stored twice`,
      "duplicateWindowMs",
    );
  }
  const window = windowMs * NS_PER_MS;
  let info: StreamInfo | null = null;
  try {
    info = await jsm.streams.info(name);
  } catch (error) {
    if (errorName(error) !== "StreamNotFoundError" && !/not found/i.test(errorText(error))) throw error;
  }
  if (!info) {
    return await jsm.streams.add({ ...rest, name, subjects, duplicate_window: window });
  }
  const have = new Set(info.config.subjects ?? []);
  const missing = subjects.filter((s) => !have.has(s));
  if (missing.length === 0 && (info.config.duplicate_window ?? 0) >= window) return info;
  return await jsm.streams.update(name, {
    ...info.config,
    subjects: [...have, ...missing],
    duplicate_window: Math.max(window, info.config.duplicate_window ?? 0),
  });
}
