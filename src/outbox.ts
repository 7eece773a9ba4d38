/**
 * `createOutbox`: ties a storage, a publisher and the options together.
 */

import { OutboxConfigError, OutboxMessageError } from "./errors.ts";
import { type RelayHandle, startLoop, type StartOptions } from "./loop.ts";
import { prepareMessages } from "./message.ts";
import type { StandardSchemaV1 } from "./standard_schema.ts";
import {
  checkCallOptions,
  type MessageSchemas,
  type OutboxOptions,
  resolveOptions,
  retryHorizonMs,
} from "./options.ts";
import { emptyReport, type RelayContext, runTick, type TickOptions, type TickReport } from "./relay.ts";
import type {
  InspectOptions,
  NewOutboxRow,
  OutboxMessage,
  OutboxRow,
  OutboxStorage,
  Publisher,
  PublishFunction,
  SignalOptions,
  StatusCounts,
} from "./types.ts";

/**
 * The message type `enqueue` accepts: any topic without schemas; with schemas, one of
 * the configured topics with its payload type.
 */
export type EnqueueMessage<M extends MessageSchemas> = [keyof M] extends [never] ? OutboxMessage
  : { [K in keyof M & string]: OutboxMessage<K, StandardSchemaV1.InferInput<M[K]>> }[keyof M & string];

/** What `outbox.stats()` reports. */
export interface OutboxStats {
  /** Waiting to be published (due now or later). */
  pending: number;
  /** Leased by a relay right now. */
  processing: number;
  /** Published and kept by retention. */
  published: number;
  /** Given up; see `lastError`, and `requeue()` to retry. */
  dead: number;
  /**
   * Since when the longest-waiting unpublished message has been due (its enqueue time,
   * or its `deliverAt`), or `null` when none waits. Messages scheduled for the future
   * do not count; messages backing off after failed publishes do.
   */
  oldestPendingAt: Date | null;
  /**
   * How long the longest-waiting due message has waited, in ms (0 when none). A value
   * that keeps growing means a stalled relay or a failing broker: alert on it.
   */
  oldestPendingAgeMs: number;
  /**
   * Keys held back by a dead message (`retry.onDead: "block"`; always 0 with `"skip"`).
   * Requeue the dead messages to let their keys go on.
   */
  blockedKeys: number;
  /** Counts by status per topic (topics with no rows are absent). */
  topics: Record<string, StatusCounts>;
  /** Counts by status per destination (`""`: the one `publisher`; destinations with no rows are absent). */
  destinations: Record<string, StatusCounts>;
}

/** Which messages `outbox.requeue()` gives another life. */
export interface RequeueOptions {
  /** Status to requeue (default `"dead"`). `"published"` replays kept messages. */
  status?: "dead" | "published";
  /** Only these message ids. */
  ids?: readonly string[];
  /** Only this topic. */
  topic?: string;
  /** Only this destination (a `publishers` name; `""`: the one `publisher`). */
  destination?: string;
  /** Cancels the call: it rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Which settled messages `outbox.purge()` deletes: dead ones you gave up on, or
 * published ones kept by retention. Pending and processing messages are never purged.
 */
export interface PurgeOptions {
  /** Status to delete. */
  status: "dead" | "published";
  /** Only messages settled more than this many ms ago. */
  olderThanMs?: number;
  /** Only these message ids. */
  ids?: readonly string[];
  /** Only this topic. */
  topic?: string;
  /** Only this destination (a `publishers` name; `""`: the one `publisher`). */
  destination?: string;
  /** Cancels the call (between batches too): it rejects with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * An outbox: enqueue messages in your transactions, relay them with `tick()` or `start()`.
 *
 * @typeParam Tx Transaction type of the storage.
 * @typeParam Stmt Statement type of `statements()` (libSQL).
 * @typeParam M Schemas per topic.
 */
export interface Outbox<Tx, Stmt = never, M extends MessageSchemas = Record<never, never>> {
  /** Name of this relay as written into `lockedBy`. */
  readonly relayId: string;
  /**
   * The longest gap between two publish attempts of one message (lease + largest
   * back-off): a broker's dedup window must be longer (see `ensureStream`).
   */
  readonly retryHorizonMs: number;
  /**
   * Creates the outbox table and indexes, or upgrades an older table in place, and
   * records its schema version. Idempotent. An outbox with `publishers` also readies the
   * table for a row per destination (schema version 3; see docs/destinations.md).
   */
  setup(options?: SignalOptions): Promise<void>;
  /**
   * Validates messages and writes them in the caller's transaction. Never commits or
   * rolls back. Throws `OutboxMessageError` before writing anything when a message is
   * invalid, leaving the transaction as it was.
   *
   * @param tx The caller's transaction (the type the storage fixes).
   * @param messages One message or an array of them.
   * @returns The ids of the messages, in order.
   */
  enqueue(tx: Tx, messages: EnqueueMessage<M> | readonly EnqueueMessage<M>[]): Promise<string[]>;
  /**
   * Statements that insert messages, for a batch API that is the atomic unit
   * (libSQL `client.batch([...])`). Validates like `enqueue`.
   *
   * @throws {OutboxConfigError} When the storage has no statement form.
   */
  statements(messages: EnqueueMessage<M> | readonly EnqueueMessage<M>[]): Stmt[];
  /** One bounded relay pass: claim → publish → settle, repeated within the budget. */
  tick(options?: TickOptions): Promise<TickReport>;
  /** Runs the relay loop until `stop()` or the signal. */
  start(options?: StartOptions): RelayHandle;
  /** Counts per status and the age of the oldest unpublished message. */
  stats(options?: SignalOptions): Promise<OutboxStats>;
  /** Moves dead (or kept published) messages back to pending; resolves with the count. */
  requeue(options?: RequeueOptions): Promise<number>;
  /**
   * Deletes settled messages in batches of `retention.batchSize`; resolves with the count.
   *
   * @example
   * await outbox.purge({ status: "dead", olderThanMs: 7 * 86_400_000 });
   */
  purge(options: PurgeOptions): Promise<number>;
  /**
   * Lists stored rows in enqueue order, filtered; page with `after` (the last row's `seq`).
   * For diagnostics, tooling and tests.
   *
   * @example
   * const dead = await outbox.inspect({ status: "dead", limit: 50 });
   * const next = await outbox.inspect({ status: "dead", limit: 50, after: dead.at(-1)?.seq });
   */
  inspect(options?: InspectOptions): Promise<OutboxRow[]>;
}

/** Checks the status and ids of a requeue or purge. */
function settledFilter<O extends { status?: unknown; ids?: readonly string[] }>(op: string, o: O): O {
  if (o.status !== "dead" && o.status !== "published") {
    throw new OutboxConfigError(
      `${op} status must be "dead" or "published", got ${JSON.stringify(o.status)}`,
      "status",
    );
  }
  if (o.ids !== undefined && (!Array.isArray(o.ids) || o.ids.some((id) => typeof id !== "string"))) {
    throw new OutboxMessageError(`${op} ids must be an array of strings`, "ids");
  }
  return o;
}

function toPublisher(publisher: Publisher | PublishFunction): Publisher {
  if (typeof publisher === "function") {
    return { publish: async (message, context) => void (await publisher(message, context)) };
  }
  return publisher;
}

/**
 * Creates an outbox.
 *
 * @param options Storage, publisher, schemas and relay settings.
 * @returns The outbox.
 * @throws {OutboxConfigError} When an option is invalid (`error.path` names it).
 *
 * @example libSQL and a function publisher
 * ```ts
 * import { createClient } from "@libsql/client";
 * import { createOutbox } from "@x/outbox";
 * import { libsqlStorage } from "@x/outbox/libsql";
 *
 * const client = createClient({ url: "file:app.db" });
 * const outbox = createOutbox({
 *   storage: libsqlStorage(client),
 *   publisher: async (message) => console.log(message.topic, message.payload),
 * });
 * await outbox.setup();
 * const tx = await client.transaction("write");
 * await tx.execute({ sql: "insert into orders (id) values (?)", args: ["o-1"] });
 * await outbox.enqueue(tx, { topic: "orders.created", key: "o-1", payload: { id: "o-1" } });
 * await tx.commit();
 * await outbox.tick();
 * ```
 */
export function createOutbox<Tx, Stmt = never, M extends MessageSchemas = Record<never, never>>(
  options: OutboxOptions<Tx, Stmt, M>,
): Outbox<Tx, Stmt, M> {
  const resolved = resolveOptions(options);
  const hooks = options.instrumentation;
  const storage = hooks?.storage?.(options.storage) ?? options.storage;
  const schemas = options.messages && Object.keys(options.messages).length > 0 ? options.messages : undefined;
  const fanOut = options.publishers;
  const names = fanOut ? Object.keys(fanOut) : [""];
  const instance = crypto.randomUUID().slice(0, 8);
  const nudges = new Set<() => void>();
  // One relay context per destination: its own claims, lanes and loop, so a slow or
  // failing destination holds up only its own rows. The first one runs cleanup.
  const ctxs: RelayContext[] = names.map((destination, i) => {
    const publisher = toPublisher(fanOut ? fanOut[destination]! : options.publisher!);
    return {
      storage: storage as OutboxStorage<unknown, unknown>,
      publisher: hooks?.publisher?.(publisher) ?? publisher,
      options: resolved,
      destination,
      // Claim tokens must differ between the destinations' contexts too.
      instance: fanOut ? `${instance}${i}` : instance,
      claims: 0,
      lastCleanupAt: i ? Infinity : -Infinity,
      nudges,
    };
  });
  const ctx = ctxs[0]!;
  const nudge = () => {
    for (const n of nudges) n();
  };
  /** The messages' rows, and the rows to write: with fan-out, a copy per destination. */
  const prepare = (messages: unknown): [NewOutboxRow[], NewOutboxRow[]] => {
    const rows = prepareMessages(messages, { schemas, maxPayloadBytes: resolved.maxPayloadBytes, now: resolved.now() });
    if (!fanOut) return [rows, rows];
    const list = Array.isArray(messages) ? messages : [messages];
    return [
      rows,
      rows.flatMap((row, i) => {
        const to = options.route ? options.route(list[i]) : names;
        if (!Array.isArray(to) || to.some((d) => !Object.hasOwn(fanOut, d))) {
          throw new OutboxConfigError(
            `route must return names of publishers (${names.join(", ")}), got ${JSON.stringify(to)}`,
            "route",
          );
        }
        return [...new Set(to)].map((destination) => ({ ...row, destination }));
      }),
    ];
  };

  return {
    relayId: resolved.relayId,
    retryHorizonMs: retryHorizonMs(resolved),
    setup: (o) => storage.setup(fanOut ? { ...o, fanOut: true } : o),
    async enqueue(tx, messages) {
      const [prepared, rows] = prepare(messages);
      if (rows.length > 0) {
        await storage.insert(tx, rows);
        nudge();
      }
      return prepared.map((r) => r.id);
    },
    statements(messages) {
      if (!storage.statements) {
        throw new OutboxConfigError(
          `The ${storage.name} storage has no statements(); use enqueue(tx, messages)`,
          "storage",
        );
      }
      const rows = prepare(messages)[1];
      if (rows.length === 0) return [];
      nudge();
      return storage.statements(rows);
    },
    async tick(tickOptions) {
      checkCallOptions("tick", tickOptions);
      if (!fanOut) return await runTick(ctx, tickOptions);
      // Every destination's pass runs to its end before an error is thrown: none is
      // left running unseen behind a rejected tick.
      const results = await Promise.allSettled(ctxs.map((c) => runTick(c, tickOptions)));
      const total = emptyReport();
      for (const r of results) {
        if (r.status === "rejected") throw r.reason;
        for (const k in total) {
          const key = k as keyof TickReport;
          total[key] = key === "durationMs" ? Math.max(total[key], r.value[key]) : total[key] + r.value[key];
        }
      }
      return total;
    },
    start(startOptions) {
      checkCallOptions("start", startOptions);
      return startLoop(ctxs, startOptions);
    },
    async stats(o) {
      const now = resolved.now();
      const s = await storage.stats(now, o);
      return {
        topics: {},
        destinations: {},
        ...s,
        oldestPendingAt: s.oldestPendingAt === null ? null : new Date(s.oldestPendingAt),
        oldestPendingAgeMs: s.oldestPendingAt === null ? 0 : Math.max(0, now - s.oldestPendingAt),
      };
    },
    async requeue(requeueOptions = {}) {
      const o = settledFilter("requeue", { ...requeueOptions, status: requeueOptions.status ?? "dead" });
      return await storage.requeue({ ...o, now: resolved.now(), clock: resolved.clock });
    },
    async purge(purgeOptions) {
      const o = settledFilter("purge", purgeOptions);
      const age = o.olderThanMs;
      if (age !== undefined && !(age >= 0 && age <= 1e14)) {
        throw new OutboxConfigError(`purge olderThanMs must be 0 to 1e14 ms, got ${age}`, "olderThanMs");
      }
      if (!storage.purge) throw new OutboxConfigError(`The ${storage.name} storage cannot purge`, "storage");
      const limit = resolved.retention.batchSize;
      const before = age === undefined ? null : resolved.now() - age;
      let total = 0;
      for (let n = limit; n >= limit;) {
        total += n = await storage.purge({ ...o, before, limit });
      }
      return total;
    },
    async inspect(inspectOptions) {
      checkCallOptions("inspect", inspectOptions);
      if (!storage.inspect) throw new OutboxConfigError(`The ${storage.name} storage cannot list rows`, "storage");
      return await storage.inspect(inspectOptions);
    },
  };
}
