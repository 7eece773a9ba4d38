/**
 * `createOutbox` options: their types, defaults and validation (with the rules of
 * rules.ts; the users' message schemas validate payloads, in message.ts).
 */

import { OutboxConfigError } from "./errors.ts";
import { checkEntries, duration, fail, fn, group, int, isObject, MAX_TIMER_MS, oneOf, type Rule } from "./rules.ts";
import type { StandardSchemaV1 } from "./standard_schema.ts";
import type {
  Instrumentation,
  OutboxMessage,
  OutboxRecord,
  OutboxStorage,
  Publisher,
  PublishFunction,
} from "./types.ts";

/**
 * Payload schemas per topic, any Standard Schema v1 validator (valibot, zod, arktype …):
 * `{ "orders.created": v.object({ id: v.string() }) }`.
 */
export type MessageSchemas = Record<string, StandardSchemaV1>;

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
  /**
   * What a dead keyed message does to the later messages of its key (default `"skip"`).
   * `"skip"`: they go on. `"block"`: they wait until the dead message is requeued
   * (`outbox.requeue()`) or deleted, so consumers never see message n+1 without n;
   * `stats().blockedKeys` counts the keys held back. Unkeyed messages block nothing.
   */
  onDead?: "skip" | "block";
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
  /** The relay step that failed; `"onTick"` is the `start()` hook of that name throwing. */
  readonly phase: "tick" | "claim" | "settle" | "cleanup" | "listen" | "check" | "onTick";
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
  /**
   * Where messages go: a `Publisher` or a plain async function. Give this or
   * `publishers`, not both.
   */
  publisher?: Publisher | PublishFunction;
  /**
   * Fan-out: several destinations by name, e.g. `{ nats: jetstreamPublisher(js), hooks:
   * webhookPublisher({ … }) }`. `enqueue` writes a row per destination (see `route`),
   * all with the message's id, and each row has its own status, attempts, back-off,
   * dead state and per-key order: a failing destination never delays or repeats the
   * others. Names are 1–64 letters, digits and `_ . -`. Run `outbox.setup()` of such an
   * outbox once (it readies the table: schema version 3).
   */
  publishers?: Record<string, Publisher | PublishFunction>;
  /**
   * With `publishers`: the destinations of a message, by name (default: all of them).
   * An empty list stores nothing for the message. Called at `enqueue`, after validation.
   *
   * @example
   * route: (m) => (m.topic.startsWith("orders.") ? ["nats", "hooks"] : ["nats"])
   */
  route?: (message: OutboxMessage<string, unknown>) => readonly string[];
  /** Hooks for traces, metrics and logs, e.g. `otelInstrumentation()` from `@x/outbox/otel`. */
  instrumentation?: Instrumentation;
  /** Optional valibot schema per topic: enqueue is typed and validated, and only these topics are accepted. */
  messages?: M;
  /**
   * Messages claimed per batch (default 500). A claim and a settle cost the same for one
   * message or hundreds, so larger batches cost the relay and the database less per
   * message. The claimed rows are held in memory: at most `batchSize` × your largest
   * payload. Lower it on the edge (a Workers CPU budget) or for very large payloads.
   */
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
  /**
   * Clock in epoch ms (default `Date.now`); tests inject one to move time. It stamps
   * enqueued messages (`createdAt`); what is due and when a lease ends is decided as
   * `clock` says.
   */
  now?: () => number;
  /**
   * Whose clock decides when a message is due and when a lease ends.
   * `"storage"`: the database's (Postgres, libSQL over HTTP), so relays whose clocks are
   * minutes apart still keep per-key order and never share a lease; an embedded
   * database's clock is this process's. `"relay"`: `now`, as tests with a fake clock
   * need. Default: `"relay"` when `now` is given, else `"storage"`.
   */
  clock?: "storage" | "relay";
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
  clock: "storage" | "relay";
  filter: ((message: OutboxRecord) => boolean | Promise<boolean>) | undefined;
  onError: (error: unknown, context: OutboxErrorContext) => void;
  onWarning: (message: string) => void;
}

const DAY = 86_400_000;

const isNumber = (x: unknown): x is number => typeof x === "number" && x === x;

const isPublisher: Rule = (x, path) => {
  if (typeof x !== "function" && !(isObject(x) && typeof x.publish === "function")) {
    fail(`${path} must be a function or an object with publish(message)`, path);
  }
};

const OPTION_RULES: Record<string, Rule> = {
  storage: (x, path) => {
    if (
      !isObject(x) ||
      !["setup", "insert", "claim", "settle", "cleanup", "stats", "requeue"].every((m) => typeof x[m] === "function")
    ) {
      fail("storage must be an OutboxStorage, e.g. libsqlStorage(client)", path);
    }
  },
  publisher: isPublisher,
  publishers: (x, path) => {
    if (!isObject(x) || Array.isArray(x) || !Object.keys(x)[0]) {
      fail(`${path} must be an object of named publishers`, path);
    }
    for (const name in x) {
      if (!/^[\w.-]{1,64}$/.test(name)) fail(`${path} names must be 1–64 letters, digits and _ . -`, `${path}.${name}`);
      isPublisher(x[name], `${path}.${name}`);
    }
  },
  route: fn,
  messages: (x, path) => {
    if (!isObject(x)) fail("messages must be an object mapping topics to schemas", path);
    for (const topic of Object.keys(x)) {
      if (!topic) fail("messages keys (topics) must not be empty", `${path}.`);
      const schema = x[topic];
      const std = isObject(schema) ? schema["~standard"] : undefined;
      if (!isObject(std) || typeof std.validate !== "function") {
        fail("messages values must be Standard Schemas, e.g. v.object({ id: v.string() })", `${path}.${topic}`);
      }
    }
  },
  batchSize: int(1, 10_000),
  leaseMs: duration(100, false, MAX_TIMER_MS),
  retry: group({
    maxAttempts: int(1, 1_000_000),
    baseDelayMs: duration(0),
    maxDelayMs: duration(0),
    jitter: (x, path) => {
      if (!isNumber(x)) fail(`${path} must be a number`, path);
      if (x < 0 || x > 1) fail(`${path} must be between 0 and 1`, path);
    },
    onDead: oneOf("skip", "block"),
  }),
  retention: group({
    publishedMs: duration(0, true),
    deadMs: duration(0, true),
    intervalMs: duration(0),
    batchSize: int(1, 100_000),
  }),
  filter: fn,
  concurrency: int(1, 10_000),
  maxPayloadBytes: int(1, 1024 * 1024 * 1024),
  relayId: (x, path) => {
    if (typeof x !== "string") fail(`${path} must be a string`, path);
    if (!/^[\w.:@-]{1,100}$/.test(x)) fail(`${path} must be 1–100 characters of letters, digits, and . : @ _ -`, path);
  },
  now: fn,
  clock: oneOf("storage", "relay"),
  onError: fn,
  onWarning: fn,
  instrumentation: group({ storage: fn, publisher: fn }),
};

const defaultOnError = (error: unknown, context: OutboxErrorContext) =>
  console.error(`[@x/outbox] ${context.phase} failed:`, error);

/**
 * A hook that cannot throw: the relay calls `onError` and `onWarning` from its loop, and
 * a hook that throws must not stop it. What the hook threw goes to `console.error`,
 * the one place left to report it.
 */
function guarded<A extends unknown[]>(hook: (...args: A) => void): (...args: A) => void {
  const report = (error: unknown) => console.error("[@x/outbox] a hook threw:", error);
  return (...args) => {
    try {
      // An async hook's rejection would otherwise be unhandled (fatal on Node).
      const result: unknown = hook(...args);
      if (result instanceof Promise) result.catch(report);
    } catch (error) {
      report(error);
    }
  };
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
  const unknown = (key: string) => `Unknown option ${key} passed to createOutbox`;
  checkEntries(input as Record<string, unknown>, OPTION_RULES, "", unknown, ["storage"]);
  const o = input as OutboxOptions<unknown, unknown, MessageSchemas>;
  if (!o.publisher === !o.publishers) {
    fail("createOutbox needs a publisher, or publishers for fan-out (not both)", "publisher");
  }
  if (o.route && !o.publishers) fail("route needs publishers", "route");
  const retry: Required<RetryOptions> = {
    maxAttempts: o.retry?.maxAttempts ?? 10,
    baseDelayMs: o.retry?.baseDelayMs ?? 1_000,
    maxDelayMs: o.retry?.maxDelayMs ?? 60_000,
    jitter: o.retry?.jitter ?? 0.25,
    onDead: o.retry?.onDead ?? "skip",
  };
  if (retry.maxDelayMs < retry.baseDelayMs) {
    throw new OutboxConfigError(
      `retry.maxDelayMs (${retry.maxDelayMs}) must not be smaller than retry.baseDelayMs (${retry.baseDelayMs})`,
      "retry.maxDelayMs",
    );
  }
  return {
    batchSize: o.batchSize ?? 500,
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
    now: o.now ?? Date.now,
    clock: o.clock ?? (o.now ? "relay" : "storage"),
    filter: o.filter,
    onError: guarded(o.onError ?? defaultOnError),
    onWarning: guarded(o.onWarning ?? ((message) => console.warn(`[@x/outbox] ${message}`))),
  };
}

/**
 * Delay before the next attempt after `attempts` failed ones: exponential from
 * `baseDelayMs`, capped at `maxDelayMs`, spread by ±`jitter`, never above the cap.
 */
export function backoffDelay(
  retry: Required<Pick<RetryOptions, "baseDelayMs" | "maxDelayMs" | "jitter">>,
  attempts: number,
  random: () => number = Math.random,
): number {
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

const signalRule: Rule = (x, path) => {
  if (!(isObject(x) && typeof x.aborted === "boolean")) fail(`${path} must be an AbortSignal`, path);
};

const text: Rule = (x, path) => {
  if (typeof x !== "string") fail(`${path} must be a string, got ${JSON.stringify(x)}`, path);
};

const CALL_RULES: Record<"start" | "tick" | "inspect", Record<string, Rule>> = {
  // Idle waits become timer delays.
  start: {
    signal: signalRule,
    minIdleMs: duration(1, false, MAX_TIMER_MS),
    maxIdleMs: duration(1, false, MAX_TIMER_MS),
    onTick: fn,
  },
  tick: {
    budgetMs: duration(0, true),
    maxBatches: (x, path) => x === Infinity || int(1, Number.MAX_SAFE_INTEGER)(x, path),
    signal: signalRule,
  },
  // A bad filter or page is the caller's mistake, named before any storage sees it.
  inspect: {
    status: oneOf("pending", "processing", "published", "dead"),
    topic: text,
    key: text,
    destination: text,
    limit: int(1, Number.MAX_SAFE_INTEGER),
    after: int(0, Number.MAX_SAFE_INTEGER),
    signal: signalRule,
  },
};

/**
 * Validates the options of `outbox.start()`, `outbox.tick()` or `outbox.inspect()`.
 *
 * @throws {OutboxConfigError} Naming the first invalid field.
 */
export function checkCallOptions(method: "start" | "tick" | "inspect", input: unknown): void {
  if (input === undefined) return;
  if (!isObject(input)) fail(`${method}() options must be an object`, "options");
  checkEntries(input, CALL_RULES[method], "", (key) => `Unknown option ${key} passed to ${method}()`);
}
