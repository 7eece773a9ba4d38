/**
 * `createOutbox` options: their types, defaults and validation (valibot).
 */

import * as v from "valibot";
import { OutboxConfigError } from "./errors.ts";
import type { OutboxRecord, OutboxStorage, PublishFunction, Publisher } from "./types.ts";

/** Valibot schemas per topic: `{ "orders.created": v.object({ id: v.string() }) }`. */
export type MessageSchemas = Record<string, v.GenericSchema>;

/** Retry policy of failed publishes. */
export interface RetryOptions {
  /** Attempts before a message goes `dead` (default 10). */
  maxAttempts?: number;
  /** Delay after the first failure, doubled after each further one (default 1,000 ms). */
  baseDelayMs?: number;
  /** Cap of the delay (default 60,000 ms). Keep lease + this inside the broker's dedup window. */
  maxDelayMs?: number;
  /** Random spread of each delay, as a fraction: 0.25 means ±25% (default 0.25). */
  jitter?: number;
}

/** How long settled rows are kept. */
export interface RetentionOptions {
  /** Keep `published` rows this long; 0 deletes a row as soon as it is published (default 0). */
  publishedMs?: number;
  /** Keep `dead` rows this long (default 30 days). `Infinity` keeps them. */
  deadMs?: number;
  /** Run cleanup at most this often per outbox instance (default 60,000 ms). */
  intervalMs?: number;
  /** Delete at most this many rows per cleanup run (default 1,000). */
  batchSize?: number;
}

/** Where an error reported to `onError` came from. */
export interface OutboxErrorContext {
  /** The relay step that failed. */
  readonly phase: "tick" | "claim" | "settle" | "cleanup" | "listen" | "check";
}

/**
 * Options of `createOutbox`.
 *
 * @typeParam Tx The caller's transaction type, fixed by the storage.
 * @typeParam Stmt The statement type of `outbox.statements()` (libSQL batches).
 * @typeParam M Valibot schemas per topic.
 */
export interface OutboxOptions<Tx, Stmt, M extends MessageSchemas> {
  /** Where messages live, e.g. `libsqlStorage(client)`. */
  storage: OutboxStorage<Tx, Stmt>;
  /** Where messages go: a `Publisher` or a plain async function. */
  publisher: Publisher | PublishFunction;
  /** Optional valibot schema per topic: enqueue is typed and validated, and only these topics are accepted. */
  messages?: M;
  /** Messages claimed per batch (default 100). */
  batchSize?: number;
  /** How long a claim holds before another relay may take the rows (default 30,000 ms). */
  leaseMs?: number;
  /** Retry policy. */
  retry?: RetryOptions;
  /** Retention of settled rows. */
  retention?: RetentionOptions;
  /** `false` settles a message as published without publishing it. */
  filter?: (message: OutboxRecord) => boolean | Promise<boolean>;
  /** Publishes in flight at once within a batch (default 32). Messages of one key are always sequential. */
  concurrency?: number;
  /** Largest encoded payload accepted by `enqueue` (default 1 MiB). */
  maxPayloadBytes?: number;
  /** Name of this relay in `lockedBy` (default: a random id). */
  relayId?: string;
  /** Clock in epoch ms (default `Date.now`); tests inject one to move time. */
  now?: () => number;
  /** Receives errors the relay loop survives (default: `console.error`). */
  onError?: (error: unknown, context: OutboxErrorContext) => void;
  /** Receives configuration warnings, e.g. a broker dedup window shorter than the retry horizon (default: `console.warn`). */
  onWarning?: (message: string) => void;
}

/** Options after validation, with defaults applied. */
export interface ResolvedOptions {
  batchSize: number;
  leaseMs: number;
  retry: Required<RetryOptions>;
  retention: Required<RetentionOptions>;
  concurrency: number;
  maxPayloadBytes: number;
  relayId: string;
  now: () => number;
  filter: ((message: OutboxRecord) => boolean | Promise<boolean>) | undefined;
  onError: (error: unknown, context: OutboxErrorContext) => void;
  onWarning: (message: string) => void;
}

const DAY = 86_400_000;

function int(name: string, min: number, max: number) {
  return v.pipe(
    v.number(`${name} must be a number`),
    v.check((n) => Number.isInteger(n), `${name} must be an integer`),
    v.check((n) => n >= min && n <= max, `${name} must be between ${min} and ${max}`),
  );
}

function duration(name: string, min: number, allowInfinity = false) {
  return v.pipe(
    v.number(`${name} must be a number of milliseconds`),
    v.check(
      (n) => (allowInfinity && n === Infinity) || (Number.isFinite(n) && n >= min),
      `${name} must be a finite number of milliseconds ≥ ${min}${allowInfinity ? " (or Infinity)" : ""}`,
    ),
  );
}

const fn = (name: string) => v.custom<(...args: never[]) => unknown>((x) => typeof x === "function", `${name} must be a function`);

const storageSchema = v.custom<OutboxStorage<unknown, unknown>>(
  (x) =>
    typeof x === "object" && x !== null &&
    ["setup", "insert", "claim", "settle", "cleanup", "stats", "requeue"].every(
      (m) => typeof (x as Record<string, unknown>)[m] === "function",
    ),
  "storage must be an OutboxStorage, e.g. libsqlStorage(client)",
);

const publisherSchema = v.custom<Publisher | PublishFunction>(
  (x) =>
    typeof x === "function" ||
    (typeof x === "object" && x !== null && typeof (x as { publish?: unknown }).publish === "function"),
  "publisher must be an async function (message) => void or an object with publish(message)",
);

const schemasSchema = v.pipe(
  v.record(
    v.pipe(v.string(), v.minLength(1, "messages keys (topics) must not be empty")),
    v.custom<v.GenericSchema>(
      (x) => typeof x === "object" && x !== null && (x as { kind?: unknown }).kind === "schema" &&
        typeof (x as { "~run"?: unknown })["~run"] === "function",
      "messages values must be valibot schemas, e.g. v.object({ id: v.string() })",
    ),
    "messages must be an object mapping topics to valibot schemas",
  ),
);

const optionsSchema = v.strictObject(
  {
    storage: storageSchema,
    publisher: publisherSchema,
    messages: v.optional(schemasSchema),
    batchSize: v.optional(int("batchSize", 1, 10_000)),
    leaseMs: v.optional(duration("leaseMs", 100)),
    retry: v.optional(
      v.strictObject(
        {
          maxAttempts: v.optional(int("retry.maxAttempts", 1, 1_000_000)),
          baseDelayMs: v.optional(duration("retry.baseDelayMs", 0)),
          maxDelayMs: v.optional(duration("retry.maxDelayMs", 0)),
          jitter: v.optional(
            v.pipe(v.number("retry.jitter must be a number"), v.check((n) => n >= 0 && n <= 1, "retry.jitter must be between 0 and 1")),
          ),
        },
        (issue) => `retry has an unknown option ${formatKey(issue.input)}`,
      ),
    ),
    retention: v.optional(
      v.strictObject(
        {
          publishedMs: v.optional(duration("retention.publishedMs", 0, true)),
          deadMs: v.optional(duration("retention.deadMs", 0, true)),
          intervalMs: v.optional(duration("retention.intervalMs", 0)),
          batchSize: v.optional(int("retention.batchSize", 1, 100_000)),
        },
        (issue) => `retention has an unknown option ${formatKey(issue.input)}`,
      ),
    ),
    filter: v.optional(fn("filter")),
    concurrency: v.optional(int("concurrency", 1, 10_000)),
    maxPayloadBytes: v.optional(int("maxPayloadBytes", 1, 1024 * 1024 * 1024)),
    relayId: v.optional(
      v.pipe(
        v.string("relayId must be a string"),
        v.regex(/^[\w.:@-]{1,100}$/, "relayId must be 1–100 characters of letters, digits, and . : @ _ -"),
      ),
    ),
    now: v.optional(fn("now")),
    onError: v.optional(fn("onError")),
    onWarning: v.optional(fn("onWarning")),
  },
  (issue) => `Unknown option ${formatKey(issue.input)} passed to createOutbox`,
);

function formatKey(input: unknown): string {
  return typeof input === "string" ? JSON.stringify(input) : String(input);
}

function defaultRelayId(): string {
  return `relay-${crypto.randomUUID().slice(0, 8)}`;
}

/**
 * Validates `createOutbox` options and applies defaults.
 *
 * @throws {OutboxConfigError} Naming the first invalid field.
 */
export function resolveOptions(input: unknown): ResolvedOptions {
  if (typeof input !== "object" || input === null) {
    throw new OutboxConfigError("createOutbox needs an options object with storage and publisher");
  }
  const result = v.safeParse(optionsSchema, input);
  if (!result.success) {
    const issue = result.issues[0];
    const path = v.getDotPath(issue) ?? "";
    let message = issue.message;
    if (issue.kind === "schema" && issue.input === undefined && path && !message.includes("Unknown")) {
      message = `${path} is required`;
    }
    throw new OutboxConfigError(message, path);
  }
  const o = result.output;
  const retry: Required<RetryOptions> = {
    maxAttempts: o.retry?.maxAttempts ?? 10,
    baseDelayMs: o.retry?.baseDelayMs ?? 1_000,
    maxDelayMs: o.retry?.maxDelayMs ?? 60_000,
    jitter: o.retry?.jitter ?? 0.25,
  };
  if (retry.maxDelayMs < retry.baseDelayMs) {
    throw new OutboxConfigError(
      `retry.maxDelayMs (${retry.maxDelayMs}) must not be smaller than retry.baseDelayMs (${retry.baseDelayMs})`,
      "retry.maxDelayMs",
    );
  }
  return {
    batchSize: o.batchSize ?? 100,
    leaseMs: o.leaseMs ?? 30_000,
    retry,
    retention: {
      publishedMs: o.retention?.publishedMs ?? 0,
      deadMs: o.retention?.deadMs ?? 30 * DAY,
      intervalMs: o.retention?.intervalMs ?? 60_000,
      batchSize: o.retention?.batchSize ?? 1_000,
    },
    concurrency: o.concurrency ?? 32,
    maxPayloadBytes: o.maxPayloadBytes ?? 1024 * 1024,
    relayId: o.relayId ?? defaultRelayId(),
    now: (o.now as (() => number) | undefined) ?? Date.now,
    filter: o.filter as ResolvedOptions["filter"],
    onError: (o.onError as ResolvedOptions["onError"] | undefined) ??
      ((error, context) => console.error(`[@x/outbox] ${context.phase} failed:`, error)),
    onWarning: (o.onWarning as ResolvedOptions["onWarning"] | undefined) ?? ((message) => console.warn(`[@x/outbox] ${message}`)),
  };
}

/**
 * Delay before the next attempt after `attempts` failed ones: exponential from
 * `baseDelayMs`, capped at `maxDelayMs`, spread by ±`jitter`, never above the cap.
 */
export function backoffDelay(retry: Required<RetryOptions>, attempts: number, random: () => number = Math.random): number {
  const exp = retry.baseDelayMs * 2 ** Math.max(0, attempts - 1);
  const base = Math.min(retry.maxDelayMs, exp);
  const spread = base * retry.jitter * (random() * 2 - 1);
  return Math.max(0, Math.min(retry.maxDelayMs, Math.round(base + spread)));
}

/**
 * The longest a message can take from one publish attempt to the next: a lease that
 * expires (a crashed relay) plus the largest back-off. A broker that drops duplicates
 * only inside a window must keep that window longer than this.
 */
export function retryHorizonMs(o: Pick<ResolvedOptions, "leaseMs" | "retry">): number {
  return o.leaseMs + o.retry.maxDelayMs;
}
