/**
 * PostgreSQL storage for @x/outbox, on postgres.js (`postgres` on npm).
 *
 * - Claims are leases taken with `FOR UPDATE SKIP LOCKED`; claims of many relays run
 *   side by side, and each leaves alone a key's rows behind one it could not lock, so
 *   per-key order holds with any number of relays (see `claimSql` in sql.ts for the race
 *   this closes). A claim runs in one call of the claim function `setup()` creates: one
 *   statement, one round trip. On a table
 *   without it (made by drizzle-kit or by hand from an older `postgresSchema()`), the
 *   claim runs as a short transaction instead: three round trips.
 * - Rows have a destination (`""` for the one `publisher`); a claim takes one
 *   destination's rows, and a key's order holds per destination.
 * - `setup()` creates the table at schema version 2 (3 with `fanOut`: a row per
 *   destination for one message id), or upgrades an older table in place in one
 *   transaction, and records the version in `<table>_schema` ({@link SCHEMA_VERSION},
 *   {@link postgresSchemaVersion}).
 * - A batch is settled in one statement, whatever its size.
 * - Retention cleanup deletes bounded batches, one relay at a time.
 * - `enqueue` NOTIFYs a channel at commit and `start()` LISTENs to it: a wake-up hint.
 *   Polling stays on, so behind PgBouncer in transaction mode (no LISTEN) the relay
 *   still delivers.
 *
 * @example
 * ```ts
 * import postgres from "postgres";
 * import { createOutbox } from "@x/outbox";
 * import { postgresStorage } from "@x/outbox/postgres";
 *
 * const sql = postgres("postgres://localhost/app");
 * const outbox = createOutbox({ storage: postgresStorage(sql), publisher: async (m) => console.log(m.topic) });
 * await outbox.setup();
 * await sql.begin(async (tx) => {
 *   await tx`insert into orders (id) values (${"o-1"})`;
 *   await outbox.enqueue(tx, { topic: "orders.created", key: "o-1", payload: { id: "o-1" } });
 * });
 * ```
 *
 * @module
 */

import { abortable } from "../shared/abort.ts";
import { hasMethods } from "../shared/client.ts";
import { OutboxConfigError, OutboxStorageError } from "../../src/errors.ts";
import { bool, checkOptions } from "../../src/rules.ts";
import { errorCode } from "../shared/errors.ts";
import { checkIdentifier, identifier } from "../shared/identifier.ts";
import { countsByTopic, fromBase64, num, numOrNull, outboxRow, str } from "../shared/row.ts";
import { cleanupSettled } from "../shared/settle.ts";
import type {
  ClaimedRow,
  ClaimRequest,
  CleanupRequest,
  OutboxRow,
  OutboxStorage,
  PurgeRequest,
  RequeueRequest,
  SettleRequest,
  SetupOptions,
  SignalOptions,
  StatusCounts,
  StorageStats,
} from "../../src/types.ts";
import { outboxErrors } from "./errors.ts";
import { insertError, insertQueries, writeRows } from "./insert.ts";
import { transaction } from "./transaction.ts";
import {
  createStatements,
  DEFAULT_SCHEMA_VERSION,
  inspectSchemaSql,
  NOT_READ_COMMITTED,
  type PostgresNames,
  postgresNames,
  readVersionSql,
  relayQueries,
  SCHEMA_VERSION,
  setupLockSql,
  type SqlQuery,
  upgradeStatements,
} from "./sql.ts";

export { SCHEMA_VERSION };

/** A row as postgres.js returns it. */
type Row = Record<string, unknown>;
export type { Row as PostgresRow };

/**
 * What the adapter needs of a postgres.js `sql` or transaction: `unsafe` (parameters
 * are always bound; only checked identifiers are spliced into the text).
 */
export interface PostgresQueryable {
  unsafe(query: string, parameters?: unknown[], options?: { prepare?: boolean }): PromiseLike<Row[]>;
}

/** A postgres.js transaction (`sql.begin(async (tx) => …)`) or the `sql` itself. */
export type PostgresTx = PostgresQueryable;

/** The parts of a postgres.js `sql` instance the relay uses. */
export interface PostgresSql extends PostgresQueryable {
  begin<T>(cb: (tx: PostgresQueryable) => T | Promise<T>): Promise<unknown>;
  begin<T>(options: string, cb: (tx: PostgresQueryable) => T | Promise<T>): Promise<unknown>;
  listen(
    channel: string,
    onnotify: (value: string) => void,
    onlisten?: () => void,
  ): PromiseLike<{ unlisten(): Promise<void> }>;
}

/**
 * Named (prepared) statements for every parameterized query. Unprepared, postgres.js
 * first sends Describe and waits for the parameter types before it can bind: two round
 * trips per statement. Prepared, the description is cached per connection and a
 * statement costs one round trip (an enqueue went from ~1.1 ms to ~0.4 ms locally).
 * A client created with `prepare: false` (PgBouncer in transaction mode) still wins:
 * postgres.js only prepares when both the client and the query allow it.
 */
const PREPARE = { prepare: true } as const;

/** Options of {@link postgresStorage}. */
export interface PostgresStorageOptions {
  /** Schema name, a plain identifier (default `"public"`); `setup()` creates it if missing. */
  schema?: string;
  /** Table name, a plain identifier (default `"outbox"`). */
  table?: string;
  /**
   * NOTIFY the table's channel when `enqueue` writes (default `true`). Each notifying
   * commit takes Postgres' global notify lock briefly; turn it off at very high commit
   * rates and let the relay poll.
   */
  notify?: boolean;
}

/** The Postgres storage. */
export interface PostgresStorage extends OutboxStorage<PostgresTx, never> {
  /** The schema name. */
  readonly schema: string;
  /** The table name. */
  readonly table: string;
  /** The LISTEN/NOTIFY channel. */
  readonly channel: string;
  /** The DDL `setup()` runs on a fresh table (schema version 2), for hand-written migrations. */
  readonly schemaSql: readonly string[];
  /**
   * The table's schema version: the one `setup()` recorded in `<table>_schema`, or what
   * its layout shows when that is more (see {@link postgresSchemaVersion}); `null` when
   * the table does not exist. {@link SCHEMA_VERSION} is the newest this package knows.
   */
  schemaVersion(options?: SignalOptions): Promise<number | null>;
}

const OPTION_RULES = { schema: identifier, table: identifier, notify: bool };

/**
 * Returns the DDL of a fresh table (schema, table, indexes, claim functions and the
 * version record), for teams that write their own migrations. It does not upgrade a
 * table of an older version: `setup()` does.
 *
 * @param options `schema` (default `"public"`), `table` (default `"outbox"`), and `fanOut`:
 *   schema version 3, a row per destination for one message id (default: version 2).
 * @returns SQL statements, each idempotent.
 */
export function postgresSchema(options: { schema?: string; table?: string; fanOut?: boolean } = {}): string[] {
  return createStatements(
    postgresNames(
      checkIdentifier(options.schema ?? "public", "schema"),
      checkIdentifier(options.table ?? "outbox", "table"),
    ),
    { fanOut: options.fanOut === true },
  );
}

/**
 * Reads the schema version of an outbox table: the one `setup()` recorded in
 * `<table>_schema`, or what the table's layout shows when that is more (a table made by
 * an earlier version, or made or migrated by hand or by drizzle-kit, has no record or an
 * older one): 1 without a `destination` column, 2 with it, 3 with `id` unique per
 * destination only. {@link SCHEMA_VERSION} is the newest this package knows.
 *
 * @param sql The postgres.js client (or a transaction).
 * @param options `schema` (default `"public"`) and `table` (default `"outbox"`).
 * @returns The version, or `null` when the table does not exist.
 * @throws {OutboxConfigError} When a name is not a plain identifier.
 * @throws {OutboxStorageError} When the catalog cannot be read.
 *
 * @example
 * ```ts
 * import postgres from "postgres";
 * import { postgresSchemaVersion, SCHEMA_VERSION } from "@x/outbox/postgres";
 *
 * const version = await postgresSchemaVersion(postgres(url), { schema: "shop" });
 * if (version !== null && version < 2) console.log(`run outbox setup (table at ${version}, latest ${SCHEMA_VERSION})`);
 * ```
 */
export async function postgresSchemaVersion(
  sql: PostgresQueryable,
  options: { schema?: string; table?: string } = {},
): Promise<number | null> {
  const n = postgresNames(
    checkIdentifier(options.schema ?? "public", "schema"),
    checkIdentifier(options.table ?? "outbox", "table"),
  );
  try {
    const version = await readSchemaVersion(sql, n);
    return version === 0 ? null : version;
  } catch (error) {
    throw outboxErrors(n)("read the schema version", error);
  }
}

/**
 * The schema version of a table: the one `setup()` recorded, or what its layout shows
 * when that is more (a table made by a version before the record, or migrated by hand
 * or by drizzle-kit, has no record or an older one): 1 without a `destination` column,
 * 2 with one and `id` unique on its own, 3 with one and without. 0 when there is no
 * table.
 */
async function readSchemaVersion(db: PostgresQueryable, n: PostgresNames): Promise<number> {
  const [layout] = await db.unsafe(inspectSchemaSql(n));
  if (layout?.has_table !== true) return 0;
  const shown = layout.has_destination !== true ? 1 : layout.id_unique === true ? 2 : 3;
  if (layout.has_version !== true) return shown;
  const [recorded] = await db.unsafe(readVersionSql(n));
  return Math.max(shown, num(recorded?.version ?? 0));
}

/** Totals, per-topic and per-destination counts from `[destination, topic, status, count]` groups. */
function countsByDestination(
  groups: readonly (readonly [string, string, string, unknown])[],
): StatusCounts & { topics: Record<string, StatusCounts>; destinations: Record<string, StatusCounts> } {
  const destinations: Record<string, StatusCounts> = {};
  const byDestination = new Map<string, [string, string, unknown][]>();
  for (const [destination, topic, status, count] of groups) {
    let list = byDestination.get(destination);
    if (!list) byDestination.set(destination, list = []);
    list.push([topic, status, count]);
  }
  for (const [destination, list] of byDestination) {
    const { topics: _, ...counts } = countsByTopic(list);
    destinations[destination] = counts;
  }
  return { ...countsByTopic(groups.map(([, topic, status, count]) => [topic, status, count])), destinations };
}

/**
 * True when the claim function (or its schema) does not exist: 42883 undefined_function,
 * 3F000 invalid_schema_name. The table itself may be missing too; the transaction path
 * then reports that.
 */
function missingFunction(error: unknown): boolean {
  const code = errorCode(error);
  return code === "42883" || code === "3F000";
}

function isPostgresSql(value: unknown): value is PostgresSql {
  return typeof value === "function" && hasMethods(value, "unsafe", "begin", "listen");
}

/**
 * Creates a Postgres storage on a postgres.js `sql` instance.
 *
 * @param sql The postgres.js client: `postgres(url)`.
 * @param options `schema`, `table`, `notify`.
 * @returns The storage to pass to `createOutbox`.
 * @throws {OutboxConfigError} When `sql` is not a postgres.js instance or a name is not a plain identifier.
 */
export function postgresStorage(sql: PostgresSql, options: PostgresStorageOptions = {}): PostgresStorage {
  if (!isPostgresSql(sql)) {
    throw new OutboxConfigError("postgresStorage needs a postgres.js sql instance: postgres(url)", "sql");
  }
  checkOptions("postgresStorage", options, OPTION_RULES);
  const schema = options.schema ?? "public";
  const table = options.table ?? "outbox";
  const notify = options.notify ?? true;
  const n = postgresNames(schema, table);
  const schemaSql = createStatements(n);
  const inserts = insertQueries(n);
  const setupLock = setupLockSql(n);
  const q = relayQueries(n);

  const wrap = outboxErrors(n);

  // Claims go through the claim function until a call finds it missing; setup() creates
  // it and turns this back on.
  let claimByFunction = true;
  // Set once the claim function reports a session that is not READ COMMITTED (a
  // default_transaction_isolation of the role, database or client): claims and settles
  // then run in transactions that ask for READ COMMITTED, whose statements each see
  // what committed before them (the claim lock's whole point).
  let isolate = false;
  const READ_COMMITTED = "isolation level read committed";

  async function run(what: string, query: SqlQuery, signal?: AbortSignal): Promise<Row[]> {
    try {
      // On abort the call rejects at once, and postgres.js's cancel() asks the server to
      // stop the statement (a CancelRequest on a connection of its own; best effort).
      return await abortable(
        signal,
        () => sql.unsafe(query.text, query.values, PREPARE),
        (pending) => void Promise.resolve((pending as { cancel?: () => unknown }).cancel?.()).catch(() => {}),
      );
    } catch (error) {
      if (signal?.aborted && error === signal.reason) throw error;
      throw wrap(what, error);
    }
  }

  return {
    name: "postgres",
    schema,
    table,
    channel: n.channel,
    schemaSql,

    async setup(options: SetupOptions = {}) {
      const signal = options.signal;
      try {
        // An abort rejects at once; the DDL transaction, already sent, commits or rolls
        // back on its own (statements after the abort are not sent). Under the setup
        // lock, concurrent setups upgrade one after the other: the later ones read the
        // version the first recorded and find nothing left to do.
        await abortable(signal, () =>
          transaction(sql, async (tx: PostgresQueryable) => {
            await tx.unsafe(setupLock);
            const found = await readSchemaVersion(tx, n);
            if (found > SCHEMA_VERSION) {
              throw new OutboxConfigError(
                `Postgres table ${n.qualified} has schema version ${found}, newer than this @x/outbox knows ` +
                  `(${SCHEMA_VERSION}); upgrade the package`,
              );
            }
            // Never down: a version 3 table stays at 3 when asked for the default.
            const target = Math.max(found, options.fanOut === true ? SCHEMA_VERSION : DEFAULT_SCHEMA_VERSION);
            const statements = [
              ...upgradeStatements(n, found, target),
              ...createStatements(n, { fanOut: target === SCHEMA_VERSION }),
            ];
            for (const statement of statements) {
              signal?.throwIfAborted();
              await tx.unsafe(statement);
            }
          }));
      } catch (error) {
        if (signal?.aborted && error === signal.reason) throw error;
        if (error instanceof OutboxConfigError) throw error;
        throw wrap("create the outbox table", error);
      }
      claimByFunction = true;
      isolate = false;
    },

    async insert(tx, rows) {
      if (typeof tx !== "function" && (typeof tx !== "object" || tx === null) || typeof tx.unsafe !== "function") {
        throw new OutboxStorageError(
          "enqueue needs a postgres.js transaction (sql.begin(async (tx) => …)) or sql as its first argument",
        );
      }
      const write = (target: PostgresQueryable) =>
        writeRows(inserts, rows, notify, (text, params) => target.unsafe(text, params, PREPARE));
      try {
        if (isPostgresSql(tx)) {
          // No caller transaction: make the insert (and a compensation) atomic on its own.
          await transaction(tx, write);
        } else {
          await write(tx);
        }
      } catch (error) {
        throw insertError(error, (e) => wrap("enqueue", e));
      }
    },

    async claim(request: ClaimRequest): Promise<ClaimedRow[]> {
      let rows: Row[] | undefined;
      if (claimByFunction && !isolate) {
        try {
          const call = q.claimCall(request);
          rows = await sql.unsafe(call.text, call.values, PREPARE);
        } catch (error) {
          if (errorCode(error) === NOT_READ_COMMITTED) isolate = true;
          else if (missingFunction(error)) claimByFunction = false;
          else throw wrap("claim messages", error);
        }
      }
      if (!rows) {
        try {
          // BEGIN, then the lock and the claim pipelined, then COMMIT: three round trips
          // (postgres.js awaits BEGIN). Sending all four at once on a reserved connection
          // saves two, but a reserved connection killed mid-claim (pg_terminate_backend)
          // left the claim waiting forever in postgres.js 3.4, so it stays on sql.begin.
          // READ COMMITTED whatever the session's default: the claim's snapshot must
          // follow the lock (see claimLockSql).
          const [lock, claim] = [q.claimLock(), q.claim(request)];
          const results = await transaction(sql, (tx) =>
            Promise.all([
              tx.unsafe(lock.text),
              tx.unsafe(claim.text, claim.values, PREPARE),
            ]), READ_COMMITTED);
          rows = results[1]!;
        } catch (error) {
          throw wrap("claim messages", error);
        }
      }
      return rows.map((row) => ({
        seq: num(row.seq),
        id: String(row.id),
        topic: String(row.topic),
        key: str(row.key),
        body: row.payload !== null && row.payload !== undefined
          ? String(row.payload)
          : fromBase64(String(row.payload_bytes ?? "")),
        headers: str(row.headers),
        attempts: num(row.attempts),
        createdAt: num(row.created_at),
      }));
    },

    async settle(request: SettleRequest): Promise<number> {
      if (request.settlements.length === 0) return 0;
      const settle = q.settle(request);
      // Under REPEATABLE READ a settle whose lease was taken meanwhile would fail on the
      // row (a serialization error) instead of leaving it to its new owner.
      const [row] = isolate
        ? await transaction(sql, async (tx) => await tx.unsafe(settle.text, settle.values, PREPARE), READ_COMMITTED)
          .catch(
            (error: unknown): never => {
              throw wrap("settle messages", error);
            },
          )
        : await run("settle messages", settle);
      return num(row?.n ?? 0);
    },

    async cleanup(request: CleanupRequest): Promise<number> {
      return await cleanupSettled(request, async (status, before, limit) => {
        const result = await run("clean up settled messages", q.cleanup(status, before, limit));
        return (result as unknown as { count?: number }).count ?? 0;
      });
    },

    async stats(now: number, options = {}): Promise<StorageStats> {
      const [row] = await run("read outbox stats", q.stats(now), options.signal);
      return {
        ...countsByDestination(row?.counts ? JSON.parse(String(row.counts)) : []),
        oldestPendingAt: numOrNull(row?.since),
        blockedKeys: num(row?.blocked ?? 0),
      };
    },

    async requeue(request: RequeueRequest): Promise<number> {
      const result = await run("requeue messages", q.requeue(request), request.signal);
      return (result as unknown as { count?: number }).count ?? 0;
    },

    async inspect(inspectOptions = {}): Promise<OutboxRow[]> {
      const rows = await run("list messages", q.inspect(inspectOptions), inspectOptions.signal);
      return rows.map((row) => ({ ...outboxRow(row), destination: String(row.destination) }));
    },

    async purge(request: PurgeRequest): Promise<number> {
      const result = await run("purge messages", q.purge(request), request.signal);
      return (result as unknown as { count?: number }).count ?? 0;
    },

    async schemaVersion(options: SignalOptions = {}): Promise<number | null> {
      try {
        const version = await abortable(options.signal, () => readSchemaVersion(sql, n));
        return version === 0 ? null : version;
      } catch (error) {
        if (options.signal?.aborted && error === options.signal.reason) throw error;
        throw wrap("read the schema version", error);
      }
    },

    async listen(onWake, signal) {
      if (signal.aborted) return;
      const subscription = await sql.listen(n.channel, () => onWake());
      if (signal.aborted) {
        await subscription.unlisten();
        return;
      }
      signal.addEventListener("abort", () => void subscription.unlisten().catch(() => {}), { once: true });
    },
  };
}

export { postgresInbox, postgresInboxSchema } from "./inbox.ts";
export type { PostgresInboxOptions, PostgresInboxSql, PostgresInboxStorage, PostgresInboxTx } from "./inbox.ts";
