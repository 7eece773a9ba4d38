/**
 * The inbox: the consumer's half of effectively-once delivery. The outbox and the
 * broker deliver each message at least once; the inbox remembers which message ids a
 * consumer has handled, in the consumer's own database transaction, so that a
 * redelivered copy is recognised and its effects are not applied twice.
 *
 * The contract ({@link InboxStorage}) lives here; the libSQL and Postgres adapters
 * implement it (`libsqlInbox`, `postgresInbox`). Published as `@x/outbox/inbox`
 * (inbox/mod.ts), not from `@x/outbox`: nothing in the outbox's own modules imports
 * this file, so the core bundle does not carry it.
 */

import { OutboxConfigError, OutboxMessageError } from "../src/errors.ts";
import { checkOptions, duration, fail, fn, group, int, isObject, type Rule, unchecked } from "../src/rules.ts";

/** Longest message id and consumer name, in UTF-16 code units (the outbox's id limit). */
export const INBOX_MAX_ID_LENGTH = 255;

const DAY = 86_400_000;
const DEFAULT_CONSUMER = "default";

// ---------------------------------------------------------------------------
// Storage contract
// ---------------------------------------------------------------------------

/** One handled message, as the storage records it. */
export interface InboxEntry {
  /** The consumer's name: ids are unique per consumer. */
  readonly consumer: string;
  /** The message id (the outbox id, `Nats-Msg-Id` on JetStream). */
  readonly id: string;
  /** When the message was first received, epoch ms. */
  readonly receivedAt: number;
}

/** What `cleanup` asks a storage to delete. */
export interface InboxCleanupRequest {
  /** Delete entries received strictly before this time, epoch ms. */
  readonly before: number;
  /** Delete at most this many entries. */
  readonly limit: number;
}

/**
 * What an inbox needs of a database. Implemented by `libsqlInbox` (`@x/outbox/libsql`)
 * and `postgresInbox` (`@x/outbox/postgres`); a storage for another database implements
 * the same four members.
 *
 * @typeParam Tx The caller's transaction type, e.g. a postgres.js transaction.
 * @typeParam Stmt The statement type of {@link InboxStorage.statements} (libSQL batches).
 */
export interface InboxStorage<Tx, Stmt = never> {
  /** Short name of the storage for messages, e.g. `"postgres"`. */
  readonly name: string;
  /** Creates the inbox table and its index if missing. Idempotent. */
  setup(): Promise<void>;
  /**
   * Inserts the entry in the caller's transaction unless `(consumer, id)` is already
   * there (committed, or written earlier in the same transaction). A duplicate must not
   * raise an error: an error would abort a Postgres transaction.
   *
   * @param tx The caller's transaction.
   * @param entry What to record.
   * @returns `true` when the entry was inserted, `false` when it was already there.
   */
  record(tx: Tx, entry: InboxEntry): Promise<boolean>;
  /**
   * Optional statement form: statements that insert the entry and FAIL on a duplicate,
   * so that a batch that starts with them is rolled back as a whole for a message that
   * was already handled. {@link InboxStorage.isDuplicate} recognises that failure.
   */
  statements?(entry: InboxEntry): Stmt[];
  /** Whether an error is the duplicate failure of {@link InboxStorage.statements}. */
  isDuplicate?(error: unknown): boolean;
  /**
   * Deletes at most `limit` entries received before `before`, oldest first.
   *
   * @returns How many were deleted.
   */
  cleanup(request: InboxCleanupRequest): Promise<number>;
}

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/** How long handled ids are remembered. */
export interface InboxRetentionOptions {
  /**
   * Keep an id this long after it was first received (default 7 days; `Infinity`
   * keeps ids for ever). Must be longer than the time in which a copy of a handled
   * message can still arrive: the broker's redelivery horizon (JetStream:
   * `max_deliver × ack_wait`, or the sum of `backoff`), plus the longest time the
   * consumer may be down or behind, plus, for publisher duplicates the broker did not
   * drop, the outbox's retry horizon. A copy that arrives after its id was deleted is
   * applied a second time.
   */
  keepMs?: number;
  /** Delete at most this many ids per `cleanup()` call (default 1,000). */
  batchSize?: number;
}

/**
 * Options of {@link createInbox}.
 *
 * @typeParam Tx The caller's transaction type, fixed by the storage.
 * @typeParam Stmt The statement type of `inbox.statements()` (libSQL batches).
 */
export interface InboxOptions<Tx, Stmt = never> {
  /** Where handled ids live: `libsqlInbox(client)` or `postgresInbox(sql)`. */
  storage: InboxStorage<Tx, Stmt>;
  /**
   * Default consumer name (default `"default"`). Ids are unique per consumer, so two
   * consumers of one stream that share a table each handle every message once. Use the
   * durable consumer's name. 1–255 characters.
   */
  consumer?: string;
  /** How long handled ids are kept. */
  retention?: InboxRetentionOptions;
  /** Clock in epoch ms (default `Date.now`); tests inject one to move time. */
  now?: () => number;
}

/** Options of `inbox.receive()` and `inbox.statements()`. */
export interface ReceiveOptions {
  /** Consumer name for this call, instead of the inbox's default. 1–255 characters. */
  consumer?: string;
}

/** Options of `inbox.cleanup()`. */
export interface InboxCleanupOptions {
  /** The current time (default: the inbox's clock); ids older than `now - keepMs` go. */
  now?: Date | number;
  /** Delete at most this many ids (default `retention.batchSize`). */
  limit?: number;
}

/**
 * An inbox: records handled message ids in the consumer's transaction.
 *
 * @typeParam Tx The caller's transaction type.
 * @typeParam Stmt The statement type of `statements()` (libSQL).
 */
export interface Inbox<Tx, Stmt = never> {
  /** The default consumer name. */
  readonly consumer: string;
  /** How long ids are kept, in ms (`Infinity`: for ever). */
  readonly keepMs: number;
  /** Creates the inbox table and its index if missing. Idempotent. */
  setup(): Promise<void>;
  /**
   * Records that this consumer has received a message, in the caller's transaction.
   * Resolves `true` the first time (apply the message's effects in the same
   * transaction) and `false` for a copy that was already handled (skip the effects,
   * acknowledge it). Never commits or rolls back, and a duplicate never raises an
   * error, so the transaction stays usable. When the transaction rolls back, nothing
   * is recorded and the next delivery is applied.
   *
   * Two transactions racing on one id: the second waits for the first (on the unique
   * index, or on the database's write lock) and resolves `false` if the first commits,
   * `true` if it rolls back.
   *
   * @param tx The caller's transaction (the type the storage fixes).
   * @param messageId The message id, 1–255 characters.
   * @param options `consumer` for this call.
   * @returns Whether the message is new to this consumer.
   * @throws {OutboxMessageError} Before writing anything, when the id or consumer name is invalid.
   * @throws {OutboxStorageError} When the database refuses (closed transaction, no table).
   */
  receive(tx: Tx, messageId: string, options?: ReceiveOptions): Promise<boolean>;
  /**
   * Statements that record the message and make their batch fail when it was
   * already handled: put them FIRST in an atomic batch (libSQL `client.batch([...],
   * "write")`, the atomic unit over HTTP) with the message's effects, and treat an error
   * for which {@link Inbox.isDuplicate} is `true` as "already applied, acknowledge".
   *
   * @param messageId The message id, 1–255 characters.
   * @param options `consumer` for this call.
   * @returns The statements.
   * @throws {OutboxConfigError} When the storage has no statement form (Postgres: use `receive`).
   * @throws {OutboxMessageError} When the id or consumer name is invalid.
   */
  statements(messageId: string, options?: ReceiveOptions): Stmt[];
  /**
   * Whether a batch failed because its {@link Inbox.statements} found the message
   * already handled. `false` for any other error, and always `false` for a storage
   * without a statement form.
   *
   * @param error What the batch threw.
   */
  isDuplicate(error: unknown): boolean;
  /**
   * Deletes ids received more than `keepMs` ago, at most `limit` of them, oldest first.
   * Call it from a timer or cron, again while it returns `limit`.
   *
   * @param options `now` and `limit`.
   * @returns How many ids were deleted.
   */
  cleanup(options?: InboxCleanupOptions): Promise<number>;
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  if (value === null) return "null";
  if (typeof value === "object") return Array.isArray(value) ? "an array" : "an object";
  return `${typeof value} ${String(value)}`;
}

// A NUL makes Postgres reject the text (and abort the caller's transaction); a lone
// surrogate is replaced on encoding, so two different ids would collide.
// deno-lint-ignore no-control-regex -- NUL is the character being rejected
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function checkName(value: unknown, what: string): string | null {
  if (typeof value !== "string" || value.length === 0 || value.length > INBOX_MAX_ID_LENGTH) {
    return `${what} must be a non-empty string of at most ${INBOX_MAX_ID_LENGTH} characters, got ${describe(value)}`;
  }
  if (UNSTORABLE.test(value)) {
    return `${what} must not contain NUL or unpaired surrogate characters, got ${describe(value)}`;
  }
  return null;
}

function isStorage(value: unknown): value is InboxStorage<unknown, unknown> {
  return isObject(value) && ["setup", "record", "cleanup"].every((m) => typeof value[m] === "function");
}

const STORAGE_MESSAGE = "storage must be an InboxStorage, e.g. libsqlInbox(client) or postgresInbox(sql)";

/** Ids deleted by one cleanup() call: `retention.batchSize` and `cleanup({ limit })`. */
const cleanupLimit = int(1, 100_000);

const OPTION_RULES: Record<string, Rule> = {
  storage: (x, path) => {
    if (!isStorage(x)) fail(STORAGE_MESSAGE, path);
  },
  consumer: (x, path) => {
    const problem = checkName(x, path);
    if (problem) fail(problem, path);
  },
  // Infinity keeps ids for ever; finite periods have no cap (createInbox never had one).
  retention: group({ keepMs: duration(0, true, Infinity), batchSize: cleanupLimit }),
  now: fn,
};

/** Options of one receive() or statements() call: its errors are message errors, like a bad id's. */
const RECEIVE_RULES: Record<string, Rule> = {
  consumer: (x) => {
    const problem = checkName(x, "Consumer name");
    if (problem) throw new OutboxMessageError(problem, "consumer");
  },
};

/**
 * Creates an inbox: the consumer-side record of handled message ids that turns
 * at-least-once delivery into effectively-once processing.
 *
 * @param options Storage, default consumer name, retention and clock.
 * @returns The inbox.
 * @throws {OutboxConfigError} When an option is invalid (`error.path` names it).
 *
 * @example Apply each JetStream message once, with Postgres
 * ```ts
 * import postgres from "postgres";
 * import { createInbox } from "@x/outbox/inbox";
 * import { postgresInbox } from "@x/outbox/postgres";
 *
 * const sql = postgres("postgres://localhost/app");
 * const inbox = createInbox({ storage: postgresInbox(sql), consumer: "billing" });
 * await inbox.setup();
 *
 * for await (const msg of messages) { // a JetStream pull consumer's messages
 *   await sql.begin(async (tx) => {
 *     if (!(await inbox.receive(tx, msg.headers?.get("Nats-Msg-Id") ?? ""))) return; // a copy
 *     await tx`update accounts set balance = balance + ${msg.json<{ amount: number }>().amount}`;
 *   });
 *   msg.ack(); // after commit: a lost ack means a redelivery, which receive() recognises
 * }
 * ```
 */
export function createInbox<Tx, Stmt = never>(options: InboxOptions<Tx, Stmt>): Inbox<Tx, Stmt> {
  if (!isObject(options)) {
    throw new OutboxConfigError("createInbox needs an options object: createInbox({ storage })", "");
  }
  checkOptions("createInbox", options, OPTION_RULES);
  // The rules skip an absent option, and storage has no default.
  if (options.storage === undefined) fail(STORAGE_MESSAGE, "storage");
  const storage = options.storage;
  const consumer = options.consumer ?? DEFAULT_CONSUMER;
  const keepMs = options.retention?.keepMs ?? 7 * DAY;
  const batchSize = options.retention?.batchSize ?? 1_000;
  const now = options.now ?? Date.now;

  /** Validates a call's id and options into the entry to record. */
  function entry(messageId: unknown, receiveOptions: ReceiveOptions | undefined): InboxEntry {
    const idProblem = checkName(messageId, "Message id");
    if (idProblem) throw new OutboxMessageError(idProblem, "messageId");
    if (receiveOptions !== undefined) checkOptions("receive", receiveOptions, RECEIVE_RULES, OutboxMessageError);
    return { consumer: receiveOptions?.consumer ?? consumer, id: messageId as string, receivedAt: now() };
  }

  return {
    consumer,
    keepMs,
    setup: () => storage.setup(),
    async receive(tx, messageId, receiveOptions) {
      return await storage.record(tx, entry(messageId, receiveOptions));
    },
    statements(messageId, receiveOptions) {
      if (!storage.statements || !storage.isDuplicate) {
        throw new OutboxConfigError(
          `The ${storage.name} inbox storage has no statement form; use receive(tx, messageId) in a transaction`,
          "storage",
        );
      }
      return storage.statements(entry(messageId, receiveOptions));
    },
    isDuplicate(error) {
      return storage.isDuplicate ? storage.isDuplicate(error) : false;
    },
    async cleanup(cleanupOptions = {}) {
      // now (a Date or epoch ms) is checked below, with what the inbox's own clock says.
      checkOptions("cleanup", cleanupOptions, { now: unchecked, limit: cleanupLimit });
      const at = cleanupOptions.now === undefined
        ? now()
        : cleanupOptions.now instanceof Date
        ? cleanupOptions.now.getTime()
        : cleanupOptions.now;
      if (typeof at !== "number" || !Number.isFinite(at)) {
        throw new OutboxConfigError(
          `now must be a valid Date or epoch milliseconds, got ${describe(cleanupOptions.now)}`,
          "now",
        );
      }
      if (keepMs === Infinity) return 0;
      return await storage.cleanup({ before: at - keepMs, limit: cleanupOptions.limit ?? batchSize });
    },
  };
}
