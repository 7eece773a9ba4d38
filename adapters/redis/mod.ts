/**
 * Redis Streams publisher for @x/outbox: each message is one `XADD` entry, added once.
 *
 * - **Client**: node-redis v5 (`redis` on npm). It runs unchanged on Node, Bun and Deno
 *   (tested on all three); ioredis works too through a two-line wrapper (see
 *   {@link RedisStreamsClient}); Bun's built-in `RedisClient` is Bun-only. The publisher
 *   takes your client, typed by the two methods it calls, so any v5 release fits.
 * - **Entry**: the stream is the topic (or `options.stream(message)`); the entry's fields
 *   are `id` (the outbox id), `topic`, `key` (when the message has one), `headers` (JSON,
 *   when it has any) and `body` (the stored body: JSON text, or the bytes as they are).
 * - **Dedup**: Redis streams do not deduplicate, so the publisher does. One Lua script,
 *   atomic on the server, looks up a dedup key for the message id, and only when there
 *   is none adds the entry and records its entry id under the dedup key with a TTL
 *   (`dedupTtlMs`, default 24 h). A relay that crashed after the `XADD` but before
 *   settling publishes the message again: the script finds the key and adds nothing.
 *   The TTL must outlast the outbox's retry horizon; `start()` warns when it does not.
 * - **Order**: `publishRun` pipelines a key's run on the one connection, so the server
 *   runs (and the stream stores) the run in order, with one round trip for the run.
 * - **Errors**: a lost connection, a timeout, `LOADING`, `BUSY`, `CLUSTERDOWN`,
 *   `TRYAGAIN`, `READONLY` and `OOM` are retried; `WRONGTYPE` (the key holds something
 *   other than a stream) and `NOPERM` can never pass and send the message `dead`
 *   ({@link classifyRedisError}).
 *
 * @example
 * ```ts
 * import { createClient } from "redis";
 * import { createOutbox } from "@x/outbox";
 * import { redisStreamsPublisher } from "@x/outbox/redis";
 *
 * const redis = await createClient({ url: "redis://127.0.0.1:6379" }).connect();
 * const outbox = createOutbox({
 *   storage,
 *   publisher: redisStreamsPublisher(redis, { maxLen: 1_000_000 }),
 * });
 * ```
 *
 * @module
 */

import { OutboxConfigError, PublishError } from "../../src/errors.ts";
import { checkOptions, duration, fail, int, MAX_TIMER_MS, type Rule } from "../../src/rules.ts";
import type { OutboxRecord, PublishContext, Publisher, PublishOutcome } from "../../src/types.ts";
import { onAbort } from "../shared/abort.ts";
import { hasMethods } from "../shared/client.ts";
import { duplicateWarner } from "../shared/duplicates.ts";

/**
 * What the publisher needs of a Redis client: node-redis v5's `evalSha` and
 * `scriptLoad`. A node-redis client (`createClient()`, a cluster from `createCluster()`)
 * is one as it is. Do not pass a pool (`createClientPool()`): a run must go out on one
 * connection to keep its order.
 *
 * @example ioredis
 * ```ts
 * import Redis from "ioredis";
 * const io = new Redis();
 * const client: RedisStreamsClient = {
 *   evalSha: (sha, { keys, arguments: args }) => io.evalsha(sha, keys.length, ...keys, ...args),
 *   scriptLoad: (script) => io.script("LOAD", script),
 * };
 * ```
 */
export interface RedisStreamsClient {
  /**
   * `EVALSHA sha numkeys ...keys ...arguments`. Every argument is a string but a binary
   * body, which goes as a Node `Buffer` where the runtime has one (node-redis takes no
   * other binary type), else as a `Uint8Array`. It is typed `string` because a module
   * free of Node's types cannot name `Buffer`, and node-redis's client must fit as it is.
   */
  evalSha(sha: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  /** `SCRIPT LOAD script`: resolves with the script's SHA1. */
  scriptLoad(script: string): Promise<unknown>;
}

/** Options of {@link redisStreamsPublisher}. */
export interface RedisStreamsPublisherOptions {
  /** Maps a message to its stream key (default: the topic). */
  stream?: (message: OutboxRecord) => string;
  /**
   * Trims each stream to about this many entries as it adds (`XADD … MAXLEN ~ n`);
   * default: no trimming.
   */
  maxLen?: number;
  /**
   * How long the publisher remembers a published id, in ms (default 24 h). A publish of
   * the same id within it adds nothing. Must exceed the outbox's retry horizon (lease +
   * largest back-off); `start()` warns when it does not.
   */
  dedupTtlMs?: number;
  /** How long to wait for Redis's reply, in ms (default 5,000); then the publish is retried. */
  timeoutMs?: number;
}

/** The Redis Streams publisher: a {@link Publisher} with pipelining and dedup. */
export interface RedisStreamsPublisher extends Publisher {
  /** The stream key a message is added to. */
  streamOf(message: OutboxRecord): string;
  /** The key under which a message's id is remembered (its value: the entry id). */
  dedupKeyOf(message: OutboxRecord): string;
}

/** Default `dedupTtlMs`: a day, far above the default retry horizon. */
const DEFAULT_DEDUP_TTL_MS = 24 * 60 * 60 * 1_000;

/**
 * KEYS[1] the stream, KEYS[2] the dedup key; ARGV[1] the TTL in ms, ARGV[2] MAXLEN (0:
 * none), then the entry's field/value pairs. Replies `{1, entryId}` when it added the
 * entry, `{0, entryId}` for a duplicate.
 *
 * The XADD runs before the SET: Redis does not roll back a script's earlier writes when
 * a later command fails, so a dedup key set first would survive a failed XADD (a
 * WRONGTYPE stream key) and turn every retry into a "duplicate" that was never stored.
 * Atomicity makes GET-then-SET as safe as `SET NX`: no other client runs in between.
 */
const SCRIPT = `local seen = redis.call('GET', KEYS[2])
if seen then return {0, seen} end
local args = {'XADD', KEYS[1]}
local maxlen = tonumber(ARGV[2])
if maxlen > 0 then
  args[#args + 1] = 'MAXLEN'
  args[#args + 1] = '~'
  args[#args + 1] = ARGV[2]
end
args[#args + 1] = '*'
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
local entry = redis.call(unpack(args))
redis.call('SET', KEYS[2], entry, 'PX', ARGV[1])
return {1, entry}`;

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The Redis error reply's first word (`WRONGTYPE`, `NOSCRIPT`, …), or `""`. */
function replyCode(error: unknown): string {
  const match = /^([A-Z][A-Z_]+)\b/.exec(errorText(error));
  return match ? match[1]! : "";
}

const isNoScript = (error: unknown) => replyCode(error) === "NOSCRIPT";

/**
 * Turns what the Redis client threw into the outbox's view of it: a permanent
 * `PublishError` when the message can never be added as sent, a transient one (retried
 * with back-off) otherwise, each with the original error as `cause`.
 *
 * | failure | class | why |
 * |---|---|---|
 * | `WRONGTYPE` | permanent | The stream key holds a string, hash, list…: no retry can add an entry to it. Delete or rename the key, then `requeue()`. |
 * | `NOPERM` | permanent | The ACL user may not run the script or write the key. Fix the ACL, then `requeue()`. |
 * | `ERR` from the script's compile step | permanent | The script can never run on this server. |
 * | `LOADING`, `BUSY`, `CLUSTERDOWN`, `TRYAGAIN`, `MASTERDOWN`, `READONLY`, `OOM`, `NOSCRIPT` | transient | They pass once the server has loaded its data, a failover is over or memory is free. |
 * | connection refused or lost, client closed or offline, socket or reply timeout | transient | The dedup key makes the retry safe if the entry was added. |
 * | anything else | transient | Retried until `retry.maxAttempts`. |
 *
 * @param error What the client threw.
 * @param stream The stream key that was written to.
 * @returns A `PublishError` whose `permanent` flag decides retry or dead.
 */
export function classifyRedisError(error: unknown, stream: string): PublishError {
  if (error instanceof PublishError) return error;
  const text = errorText(error);
  const code = replyCode(error);
  if (code === "WRONGTYPE") {
    return new PublishError(
      `Redis key "${stream}" holds another type than a stream (WRONGTYPE): no entry can ever be added to it; ` +
        `delete or rename the key (or map the topic to another stream), then requeue()`,
      { permanent: true, cause: error },
    );
  }
  if (code === "NOPERM") {
    return new PublishError(`Not allowed to add to Redis stream "${stream}": ${text}`, {
      permanent: true,
      cause: error,
    });
  }
  if (/Error compiling script/i.test(text)) {
    return new PublishError(`Redis cannot compile the publisher's script (${text}); it can never run there`, {
      permanent: true,
      cause: error,
    });
  }
  if (code !== "" && code !== "ERR") {
    return new PublishError(`Redis refused the XADD to stream "${stream}" for now: ${text} (transient)`, {
      cause: error,
    });
  }
  const name = (error as { name?: unknown })?.name;
  if (/timeout/i.test(String(name) + " " + text)) {
    return new PublishError(`No reply from Redis for stream "${stream}" in time (timeout) (transient)`, {
      cause: error,
    });
  }
  if (/ECONNREFUSED|ECONNRESET|EPIPE|closed|offline|socket|connect|disconnect/i.test(String(name) + " " + text)) {
    return new PublishError(`Redis connection unavailable while adding to stream "${stream}" (${text}) (transient)`, {
      cause: error,
    });
  }
  return new PublishError(`XADD to Redis stream "${stream}" failed: ${text} (transient)`, { cause: error });
}

const OPTION_RULES: Record<string, Rule> = {
  stream: (x, path) => {
    if (typeof x !== "function") fail("stream must be a function (message) => string", path);
  },
  maxLen: int(1, Number.MAX_SAFE_INTEGER),
  dedupTtlMs: duration(1),
  // The reply timeout is a setTimeout, whose delays above 2^31−1 ms fire at once.
  timeoutMs: duration(1, false, MAX_TIMER_MS),
};

/**
 * The dedup key of `id` for `stream`, in the stream's cluster hash slot so that the
 * script's two keys may live in a Redis Cluster: it starts with the stream's own hash
 * tag when the stream key has one, and wraps the stream key in `{…}` otherwise.
 */
function dedupKey(stream: string, id: string): string {
  const open = stream.indexOf("{");
  const close = open < 0 ? -1 : stream.indexOf("}", open + 1);
  const tagged = close > open + 1 || stream.includes("}") ? stream : `{${stream}}`;
  return `${tagged}:outbox-id:${id}`;
}

/**
 * node-redis takes bytes only as a Node `Buffer`; Node, Bun and Deno (where its socket
 * code runs) all have one. Found at run time rather than imported, so this module stays
 * free of Node built-ins for clients that take a plain `Uint8Array`.
 */
const BufferClass = (globalThis as { Buffer?: { from(a: ArrayBuffer, o: number, n: number): Uint8Array } }).Buffer;
function bytesArgument(body: Uint8Array): Uint8Array {
  return BufferClass ? BufferClass.from(body.buffer as ArrayBuffer, body.byteOffset, body.byteLength) : body;
}

const timeoutError = (ms: number) => new PublishError(`No reply from Redis in ${ms} ms (timeout) (transient)`);
const abortError = (signal: AbortSignal) =>
  new PublishError("Publish cancelled: the claim's lease is ending", { cause: signal.reason });

/** `pending`, or a transient timeout after `ms`, or the abort error, whichever comes first. */
function deadline<T>(pending: Promise<T>, ms: number, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => settle(() => reject(timeoutError(ms))), ms);
    const settle = (how: () => void) => {
      clearTimeout(timer);
      stopWaiting();
      how();
    };
    const stopWaiting = onAbort(signal, () => settle(() => reject(abortError(signal))));
    pending.then((value) => settle(() => resolve(value)), (error) => settle(() => reject(error)));
  });
}

/** The outcome of every accepted publish (shared: outcomes are read-only). */
const OK: PublishOutcome = { ok: true };

/**
 * Creates a Redis Streams publisher.
 *
 * With `start()`, the publisher also reports through the outbox's `onWarning`: a
 * `dedupTtlMs` shorter than the retry horizon (a retry after the TTL would add a second
 * entry), and publishes dropped as duplicates on a message's first attempt, such as a
 * `requeue()` of published messages within the TTL (at most one warning per 10 s).
 *
 * @param client A connected node-redis v5 client (or anything {@link RedisStreamsClient}).
 * @param options Stream mapping, trimming, dedup TTL, reply timeout.
 * @returns The publisher to pass to `createOutbox`.
 * @throws {OutboxConfigError} When `client` lacks `evalSha`/`scriptLoad` or an option is invalid.
 *
 * @example Streams per tenant, trimmed
 * ```ts
 * const publisher = redisStreamsPublisher(redis, {
 *   stream: (m) => `events:${m.topic}`,
 *   maxLen: 100_000,
 *   dedupTtlMs: 48 * 3_600_000,
 * });
 * ```
 */
export function redisStreamsPublisher(
  client: RedisStreamsClient,
  options: RedisStreamsPublisherOptions = {},
): RedisStreamsPublisher {
  if (!hasMethods(client, "evalSha", "scriptLoad")) {
    throw new OutboxConfigError(
      "redisStreamsPublisher needs a connected Redis client with evalSha() and scriptLoad(): createClient() from redis (node-redis v5)",
      "client",
    );
  }
  checkOptions("redisStreamsPublisher", options, OPTION_RULES);
  const streamOf = options.stream ?? ((m: OutboxRecord) => m.topic);
  const ttl = String(options.dedupTtlMs ?? DEFAULT_DEDUP_TTL_MS);
  const dedupTtlMs = options.dedupTtlMs ?? DEFAULT_DEDUP_TTL_MS;
  const maxLen = String(options.maxLen ?? 0);
  const timeoutMs = options.timeoutMs ?? 5_000;

  // The script's SHA1, from SCRIPT LOAD on first use and again after a NOSCRIPT (a
  // restarted server, or SCRIPT FLUSH). EVALSHA sends 40 bytes instead of the script.
  let sha: Promise<string> | null = null;
  const load = (): Promise<string> => {
    const loading = client.scriptLoad(SCRIPT).then(String);
    sha = loading;
    loading.catch(() => {
      if (sha === loading) sha = null; // the next publish tries again
    });
    return loading;
  };

  // A duplicate on a message's first attempt (requeue() resets attempts) is a replay the
  // dedup key turned away, not a retry after a crash.
  const duplicates = duplicateWarner((what, stream) =>
    `Redis stream "${stream}" already held ${what}: the publisher remembered the id (dedupTtlMs) and added nothing; ` +
    `the outbox counts it published. Harmless after a crash before settling, but a replay (requeue() of published ` +
    `messages, or an id enqueued again) is not delivered again within dedupTtlMs: enqueue it with a new id.`
  );

  function send(hash: string, message: OutboxRecord, stream: string): Promise<unknown> {
    const fields: string[] = ["id", message.id, "topic", message.topic];
    if (message.key !== null) fields.push("key", message.key);
    const headers = Object.keys(message.headers).length > 0 ? JSON.stringify(message.headers) : null;
    if (headers !== null) fields.push("headers", headers);
    // A Buffer (or Uint8Array) among the strings: see RedisStreamsClient.evalSha.
    fields.push(
      "body",
      typeof message.body === "string" ? message.body : bytesArgument(message.body) as unknown as string,
    );
    return client.evalSha(hash, {
      keys: [stream, dedupKey(stream, message.id)],
      arguments: [ttl, maxLen, ...fields],
    });
  }

  /**
   * Issues every message's EVALSHA at once, without awaiting in between: the client
   * writes them to its connection in call order and Redis runs them in that order.
   * Settles each outcome as its reply comes, or all that are left at the timeout or
   * the abort, whichever comes first.
   */
  function pipeline(
    hash: string,
    messages: readonly OutboxRecord[],
    streams: readonly string[],
    signal: AbortSignal,
  ): Promise<({ ok: true; reply: unknown } | { ok: false; error: unknown })[]> {
    const n = messages.length;
    const results: ({ ok: true; reply: unknown } | { ok: false; error: unknown })[] = new Array(n);
    return new Promise((resolve) => {
      let left = n;
      let done = false;
      const finish = () => {
        done = true;
        clearTimeout(timer);
        stopWaiting();
        resolve(results);
      };
      const fillRest = (error: unknown) => {
        if (done) return;
        for (let i = 0; i < n; i++) results[i] ??= { ok: false, error };
        finish();
      };
      const timer = setTimeout(() => fillRest(timeoutError(timeoutMs)), timeoutMs);
      const stopWaiting = onAbort(signal, () => fillRest(abortError(signal)));
      for (let i = 0; i < n; i++) {
        let pending: Promise<unknown>;
        try {
          pending = send(hash, messages[i]!, streams[i]!);
        } catch (error) {
          pending = Promise.reject(error); // a client that throws instead of rejecting
        }
        pending.then(
          (reply) => {
            if (done) return;
            results[i] = { ok: true, reply };
            if (--left === 0) finish();
          },
          (error) => {
            if (done) return;
            results[i] = { ok: false, error };
            if (--left === 0) finish();
          },
        );
      }
    });
  }

  async function publishRun(messages: readonly OutboxRecord[], context: PublishContext): Promise<PublishOutcome[]> {
    const n = messages.length;
    if (n === 0) return [];
    const signal = context.signal;
    const streams = messages.map((m) => streamOf(m));
    const failAll = (error: unknown): PublishOutcome[] =>
      streams.map((stream) => ({ ok: false, error: classifyRedisError(error, stream) }));
    if (signal.aborted) {
      return failAll(abortError(signal));
    }
    let hash: string;
    try {
      // The load waits for a reply too (behind a stalled connection, say): same timeout.
      hash = await deadline(sha ?? load(), timeoutMs, signal);
    } catch (error) {
      return failAll(error);
    }
    let results = await pipeline(hash, messages, streams, signal);
    // NOSCRIPT: the server lost its script cache (a restart, SCRIPT FLUSH). Load the
    // script and send again, but only a suffix of the run that failed with it, so a
    // message is never added after one of the same run that is still missing.
    const first = results.findIndex((r) => !r.ok && isNoScript(r.error));
    if (first >= 0 && results.slice(first).every((r) => !r.ok && isNoScript(r.error)) && !signal.aborted) {
      try {
        hash = await deadline(load(), timeoutMs, signal);
        const again = await pipeline(hash, messages.slice(first), streams.slice(first), signal);
        results = [...results.slice(0, first), ...again];
      } catch {
        // The load failed: the NOSCRIPT errors stand, as transient failures.
      }
    }
    const outcomes: PublishOutcome[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const result = results[i]!;
      if (!result.ok) {
        outcomes[i] = { ok: false, error: classifyRedisError(result.error, streams[i]!) };
        continue;
      }
      outcomes[i] = OK;
      const reply = result.reply as unknown[] | undefined;
      if (Array.isArray(reply) && Number(reply[0]) === 0 && messages[i]!.attempts === 1) {
        duplicates.dropped(messages[i]!, streams[i]!);
      }
    }
    return outcomes;
  }

  return {
    streamOf,
    dedupKeyOf: (message) => dedupKey(streamOf(message), message.id),
    async publish(message: OutboxRecord, context: PublishContext) {
      const [outcome] = await publishRun([message], context);
      if (!outcome!.ok) throw outcome!.error;
    },
    publishRun,
    async check({ retryHorizonMs, warn: report }) {
      duplicates.warn = report;
      if (dedupTtlMs <= retryHorizonMs) {
        report(
          `redisStreamsPublisher remembers published ids for dedupTtlMs = ${dedupTtlMs} ms, but a message can be retried for up to ` +
            `${retryHorizonMs} ms (lease + largest back-off): a retry after the TTL would add a second entry. Raise dedupTtlMs.`,
        );
      }
    },
  } satisfies RedisStreamsPublisher & { check: NonNullable<Publisher["check"]> };
}
