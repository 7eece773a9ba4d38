/**
 * The contracts between the core, storage adapters and publishers.
 *
 * @module
 */

/** A message's lifecycle state. */
export type OutboxStatus = "pending" | "processing" | "published" | "dead";

/**
 * A message to enqueue.
 *
 * @typeParam Topic The topic type (a union of literal topics when schemas are configured).
 * @typeParam Payload The payload type for that topic.
 */
export interface OutboxMessage<Topic extends string = string, Payload = unknown> {
  /** Unique id, the dedup id end to end (`Nats-Msg-Id`). Defaults to a UUIDv7. */
  id?: string;
  /** What the message is about, e.g. `"orders.created"`; the default broker subject. */
  topic: Topic;
  /** Ordering key: messages sharing a key are published in enqueue order. */
  key?: string | null;
  /** JSON-serializable value, or a `Uint8Array` sent as it is. */
  payload: Payload;
  /** String headers passed through to the broker. */
  headers?: Record<string, string>;
  /** Earliest time to publish (a `Date` or epoch milliseconds). Defaults to now. */
  deliverAt?: Date | number;
}

/** A message as the relay hands it to a publisher. */
export interface OutboxRecord {
  /** The message id (dedup id). */
  readonly id: string;
  /** Storage sequence number: enqueue order within the outbox. */
  readonly seq: number;
  /** The topic. */
  readonly topic: string;
  /** The ordering key, or `null`. */
  readonly key: string | null;
  /** The decoded payload: the parsed JSON value, or the bytes (parsed on first read). */
  readonly payload: unknown;
  /** The encoded payload as stored: JSON text, or bytes. Publishers send this. */
  readonly body: string | Uint8Array;
  /** Headers given at enqueue (empty object when none). */
  readonly headers: Readonly<Record<string, string>>;
  /** Delivery attempts so far, including the current one (1 on the first try). */
  readonly attempts: number;
  /** When the message was enqueued. */
  readonly createdAt: Date;
}

/** Context passed to a publisher with each message. */
export interface PublishContext {
  /**
   * Aborted shortly before the claim's lease ends: give up, because another relay may
   * take the message after that. (Stopping the relay does not abort a publish in
   * flight; `stop()` waits for it.) A publish still running when the signal fires is
   * counted as a failed attempt.
   */
  readonly signal: AbortSignal;
}

/**
 * Sends messages to a broker. Throw to fail an attempt: a `PublishError` with
 * `permanent: true` (or any error with `permanent: true`) sends the message straight
 * to `dead`; anything else is retried with back-off.
 */
export interface Publisher {
  /**
   * Publishes one message. Resolves once the broker has accepted it.
   *
   * @param message The message to send.
   * @param context Cancellation signal.
   */
  publish(message: OutboxRecord, context: PublishContext): Promise<void>;
  /**
   * Optional pipelined form: publishes a run of messages in the given order with many in
   * flight, and resolves with one outcome per message, in the same order. The relay
   * hands it each key's claimed run, and the messages no order binds (unkeyed ones, and a
   * key's lone message in the batch) as one run in `seq` order.
   * Messages must reach the broker in the order given; a failure must not stop the
   * publisher from reporting the outcomes of the messages after it.
   */
  publishRun?(messages: readonly OutboxRecord[], context: PublishContext): Promise<PublishOutcome[]>;
  /**
   * Optional check run by `start()`: given how long a message may take from its first
   * publish to its last retry (lease + largest back-off), the publisher reports through
   * `warn` what would break a guarantee, such as a broker dedup window that is shorter.
   * It may keep `warn` to report later (for a stream it first meets when publishing).
   */
  check?(options: { retryHorizonMs: number; warn: (message: string) => void }): Promise<void>;
  /** Releases resources; called by nobody but the owner of the publisher. */
  close?(): Promise<void>;
}

/** The outcome of one message of a {@link Publisher.publishRun}. */
export type PublishOutcome = { readonly ok: true } | { readonly ok: false; readonly error: unknown };

/**
 * Hooks for traces, metrics and logs, given as `createOutbox({ instrumentation })`;
 * `otelInstrumentation()` from `@x/outbox/otel` is one. Each hook wraps one part of the
 * outbox once, when it is created, and returns what the outbox then uses; an outbox
 * without instrumentation runs no extra code. What a wrapper sees:
 *
 * - storage `insert(tx, rows)` and `statements(rows)`: every enqueue, in the caller's
 *   context, before the rows are written (a wrapper may add headers to the rows, e.g.
 *   a W3C `traceparent`); `claim` and `settle`: each batch, and each message's outcome
 *   (`published`, `retry`, `dead`, `release`);
 * - publisher `publish(message)` and `publishRun(messages)`: every attempt, its time
 *   and how it ended.
 *
 * @example A log line per dead message
 * ```ts
 * const instrumentation: Instrumentation = {
 *   storage: (s) => ({
 *     ...s,
 *     settle: (r) => {
 *       for (const x of r.settlements) if (x.outcome === "dead") console.warn("dead:", x.seq, x.error);
 *       return s.settle(r);
 *     },
 *   }),
 * };
 * ```
 */
export interface Instrumentation {
  /** Wraps the storage; return an `OutboxStorage` that calls the one given. */
  storage?<Tx, Stmt>(storage: OutboxStorage<Tx, Stmt>): OutboxStorage<Tx, Stmt>;
  /** Wraps the publisher; return a `Publisher` that calls the one given. */
  publisher?(publisher: Publisher): Publisher;
}

/** A plain async function is a publisher too. */
export type PublishFunction = (message: OutboxRecord, context: PublishContext) => Promise<void> | void;

// ---------------------------------------------------------------------------
// Storage contract
// ---------------------------------------------------------------------------

/** A validated, encoded message ready to be written. */
export interface NewOutboxRow {
  readonly id: string;
  readonly topic: string;
  readonly key: string | null;
  /** JSON text or bytes. */
  readonly body: string | Uint8Array;
  /** Headers as JSON text, or `null` when there are none. */
  readonly headers: string | null;
  /** Epoch ms from which the row may be claimed: `deliverAt`, or the enqueue time. */
  readonly availableAt: number;
  /** The time the message was scheduled for (`deliverAt` later than its enqueue), or `null`. */
  readonly deliverAt: number | null;
  /** Epoch ms of the enqueue. */
  readonly createdAt: number;
  /**
   * The destination this row is for: a name of `createOutbox({ publishers })`, or `""`
   * (also when absent) for the one `publisher`. With fan-out, one message is a row per
   * destination, all with the same `id`.
   */
  readonly destination?: string;
}

/** A row returned by {@link OutboxStorage.claim}. */
export interface ClaimedRow {
  readonly seq: number;
  readonly id: string;
  readonly topic: string;
  readonly key: string | null;
  readonly body: string | Uint8Array;
  readonly headers: string | null;
  /** Attempts including the one this claim starts. */
  readonly attempts: number;
  readonly createdAt: number;
}

/**
 * Whose clock a request's times are on.
 *
 * - `"storage"`: relay clocks are not trusted. A storage with a clock of its own (a
 *   database server) compares due times and lease ends on that clock, and reads the
 *   request's times as offsets from its `now`: the lease lasts `lockedUntil − now`, a
 *   retry waits `availableAt − now`. A storage in the relay's process (embedded SQLite,
 *   memory) may use `now` as given: its clock is the relay's.
 * - `"relay"`: the request's times are used as given (a test clock that moves time).
 */
export type ClockSource = "storage" | "relay";

/** What {@link OutboxStorage.claim} is asked to do. */
export interface ClaimRequest {
  /** Unique per claim; rows are leased to it (`lockedBy`) and settled only by it. */
  readonly token: string;
  /** The relay's clock, epoch ms. */
  readonly now: number;
  /** Lease end on the relay's clock, epoch ms: after it, another relay may claim the rows again. */
  readonly lockedUntil: number;
  /** Maximum rows to claim. */
  readonly limit: number;
  /** Whose clock decides what is due and when the lease ends (see {@link ClockSource}). */
  readonly clock?: ClockSource;
  /**
   * Claim only rows of this destination (default `""`). Per-key order holds within a
   * destination: a key's row for one destination never waits for its row for another.
   */
  readonly destination?: string;
}

/**
 * The outcome of one claimed row.
 *
 * - `published`: sent (or filtered out); deleted or kept according to retention.
 * - `retry`: failed; back to `pending` at `availableAt`, `error` kept as `lastError`.
 * - `dead`: failed for good; `error` kept as `lastError`.
 * - `release`: not attempted (stop, time budget, an earlier message of its key failed);
 *   back to `pending` at once, and the attempt the claim counted is given back.
 */
export type Settlement =
  | { readonly seq: number; readonly outcome: "published" }
  | { readonly seq: number; readonly outcome: "retry"; readonly availableAt: number; readonly error: string }
  | { readonly seq: number; readonly outcome: "dead"; readonly error: string }
  | { readonly seq: number; readonly outcome: "release" };

/** What {@link OutboxStorage.settle} is asked to do. */
export interface SettleRequest {
  /** The claim token; rows leased to another token are left alone. */
  readonly token: string;
  readonly now: number;
  readonly settlements: readonly Settlement[];
  /** Delete published rows at once instead of keeping them as `published`. */
  readonly deletePublished: boolean;
  /** Whose clock `now` and retry times are on (see {@link ClockSource}). */
  readonly clock?: ClockSource;
  /**
   * `"block"`: a keyed message settled `dead` keeps holding back the later messages of
   * its key (it stays unsettled for the claim's per-key barrier) until it is requeued.
   * `"skip"` (default): it is settled like any other and its key moves on.
   */
  readonly onDead?: "skip" | "block";
}

/** What {@link OutboxStorage.cleanup} is asked to do. */
export interface CleanupRequest {
  readonly now: number;
  /** Delete `published` rows settled before this epoch ms, or `null` to keep them. */
  readonly publishedBefore: number | null;
  /** Delete `dead` rows settled before this epoch ms, or `null` to keep them. */
  readonly deadBefore: number | null;
  /** Most rows to delete in this call. */
  readonly limit: number;
}

/** Raw counts returned by {@link OutboxStorage.stats}. */
export interface StorageStats {
  readonly pending: number;
  readonly processing: number;
  readonly published: number;
  readonly dead: number;
  /**
   * Since when (epoch ms) the longest-waiting unpublished message has been due: its
   * `createdAt`, or its `deliverAt` when it was scheduled. Messages scheduled for the
   * future are not counted; messages backing off after failures are.
   */
  readonly oldestPendingAt: number | null;
  /** Keys held back by a dead message (`retry.onDead: "block"`). */
  readonly blockedKeys: number;
  /** Counts per topic and status (optional for storages written before it). */
  readonly topics?: Readonly<Record<string, StatusCounts>>;
  /** Counts per destination (`""`: the one `publisher`) and status (optional, as `topics`). */
  readonly destinations?: Readonly<Record<string, StatusCounts>>;
}

/** Message counts by status. */
export interface StatusCounts {
  readonly pending: number;
  readonly processing: number;
  readonly published: number;
  readonly dead: number;
}

/** Which rows {@link OutboxStorage.requeue} moves back to `pending`. */
export interface RequeueRequest {
  readonly now: number;
  /** Cancels the call: it rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /** Whose clock `now` is on (see {@link ClockSource}). */
  readonly clock?: ClockSource;
  readonly status: "dead" | "published";
  readonly ids?: readonly string[];
  readonly topic?: string;
  /** Only rows of this destination (`""`: the one `publisher`'s). */
  readonly destination?: string;
}

/** Which settled rows {@link OutboxStorage.purge} deletes, at most `limit` per call. */
export interface PurgeRequest {
  readonly status: "dead" | "published";
  /** Cancels the call: it rejects with the signal's reason. */
  readonly signal?: AbortSignal;
  /** Only rows settled before this epoch ms (the relay's clock, as retention), or `null` for any. */
  readonly before: number | null;
  readonly ids?: readonly string[];
  readonly topic?: string;
  /** Only rows of this destination (`""`: the one `publisher`'s). */
  readonly destination?: string;
  /** Most rows to delete in this call. */
  readonly limit: number;
}

/** Which rows {@link OutboxStorage.inspect} lists: filters, and a page after a `seq`. */
export interface InspectOptions {
  readonly status?: OutboxStatus;
  readonly topic?: string;
  readonly key?: string;
  /** Only rows of this destination (`""`: the one `publisher`'s). */
  readonly destination?: string;
  /** Most rows to return (default: all). */
  readonly limit?: number;
  /** Only rows with a larger `seq`: pass the last row's `seq` to read the next page. */
  readonly after?: number;
  /** Cancels the call: it rejects with the signal's reason. */
  readonly signal?: AbortSignal;
}

/** Options of the storage calls that take nothing else. */
export interface SignalOptions {
  /** Cancels the call: it rejects with the signal's reason (an `AbortError` by default). */
  readonly signal?: AbortSignal;
}

/**
 * Options of {@link OutboxStorage.setup}. Setup creates the table at the current schema
 * version, or upgrades an older table in place, and records the version it reached.
 */
export interface SetupOptions extends SignalOptions {
  /**
   * Also let one message id have a row per destination (fan-out, schema version 3):
   * the id's unique index becomes one on (id, destination). Writers of versions before
   * this one cannot insert into such a table, so `outbox.setup()` asks for it only when
   * the outbox has `publishers`; upgrade every process first.
   */
  readonly fanOut?: boolean;
}

/** A message row as {@link OutboxStorage.inspect} returns it (for tests and tooling). */
export interface OutboxRow {
  readonly seq: number;
  readonly id: string;
  readonly topic: string;
  readonly key: string | null;
  readonly status: OutboxStatus;
  readonly attempts: number;
  readonly availableAt: number | null;
  readonly lockedBy: string | null;
  readonly lastError: string | null;
  readonly createdAt: number;
  readonly settledAt: number | null;
  /** The row's destination (`""`: the one `publisher`'s; absent from storages written before it). */
  readonly destination?: string;
  /** The scheduled time (`deliverAt`), or `null`. */
  readonly deliverAt?: number | null;
  /** The encoded payload as stored: JSON text, or bytes. */
  readonly body?: string | Uint8Array;
  /** Headers as JSON text, or `null` when there are none. */
  readonly headers?: string | null;
}

/**
 * The storage contract every adapter implements. `Tx` is the type of the caller's
 * transaction handle that `enqueue` writes through; `Stmt` is the statement type an
 * adapter can return for batch APIs (libSQL's `client.batch()`).
 *
 * Rules every adapter follows (the conformance suite checks them):
 * - `insert` writes all rows or none, in the given transaction, and never commits or
 *   rolls it back.
 * - `claim` is atomic: a row is leased to one token at a time. A row is claimable when
 *   it is pending and due, or processing with an expired lease, and no earlier row of
 *   its key is unsettled and not claimable; rows are taken in `seq` order.
 * - `settle` touches only rows still leased to the request's token.
 */
export interface OutboxStorage<Tx = unknown, Stmt = never> {
  /** A short name for logs, e.g. `"libsql"`. */
  readonly name: string;
  /** Creates the table and indexes if missing, or upgrades them, and records the schema version. Idempotent. */
  setup(options?: SetupOptions): Promise<void>;
  /** Writes rows inside the caller's transaction. */
  insert(tx: Tx, rows: readonly NewOutboxRow[]): Promise<void>;
  /** Statements that insert rows, for a batch API (optional). */
  statements?(rows: readonly NewOutboxRow[]): Stmt[];
  /** Leases up to `limit` claimable rows to `token`. */
  claim(request: ClaimRequest): Promise<ClaimedRow[]>;
  /** Applies outcomes; resolves with how many rows were still leased to the token. */
  settle(request: SettleRequest): Promise<number>;
  /** Deletes expired `published`/`dead` rows, at most `limit`; resolves with the count. */
  cleanup(request: CleanupRequest): Promise<number>;
  /** Counts rows per status and finds the longest-waiting due row. */
  stats(now: number, options?: SignalOptions): Promise<StorageStats>;
  /** Moves matching rows back to `pending`; resolves with the count. */
  requeue(request: RequeueRequest): Promise<number>;
  /** Lists rows in `seq` order, filtered and paged (diagnostics, tooling, tests; not for hot paths). */
  inspect?(options?: InspectOptions): Promise<OutboxRow[]>;
  /** Deletes up to `limit` matching settled rows; resolves with the count. */
  purge?(request: PurgeRequest): Promise<number>;
  /**
   * Calls `onWake` when new messages may be claimable (Postgres LISTEN/NOTIFY).
   * A hint only: the relay keeps polling. Resolves once listening; stops on `signal`.
   */
  listen?(onWake: () => void, signal: AbortSignal): Promise<void>;
}
