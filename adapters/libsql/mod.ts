/**
 * libSQL / SQLite / Turso storage for @x/outbox, on `@libsql/client`.
 *
 * One adapter serves the embedded database (`file:`), Turso and sqld
 * (`libsql://`, `https://`) and the edge client (`@libsql/client/web`): it only uses
 * `execute` and `batch`, which every libSQL client has.
 *
 * With `:memory:`, `@libsql/client` gives every `client.transaction()` a new, empty
 * database: enqueue with `outbox.statements()` in `client.batch()` or with the client
 * itself there, or use a `file:` database (a temp file is as fast for tests).
 *
 * A Turso embedded replica (`createClient({ url: "file:replica.db", syncUrl })`) needs
 * nothing more: the relay's claim, settle and cleanup are writes, which the driver runs
 * on the primary (the claim's read-back too, in the same transaction), so the relay
 * never reads the stale local copy; `inspect()` does, until `client.sync()`. See the
 * README, "Turso embedded replicas", for what blocks and the recommended setup.
 *
 * @example
 * ```ts
 * import { createClient } from "@libsql/client";
 * import { createOutbox, memoryPublisher } from "@x/outbox";
 * import { libsqlStorage } from "@x/outbox/libsql";
 *
 * const client = createClient({ url: "file:app.db" });
 * const outbox = createOutbox({ storage: libsqlStorage(client), publisher: memoryPublisher() });
 * await outbox.setup();
 *
 * // In an interactive transaction:
 * const tx = await client.transaction("write");
 * await tx.execute({ sql: "INSERT INTO orders (id) VALUES (?)", args: ["o-1"] });
 * await outbox.enqueue(tx, { topic: "orders.created", key: "o-1", payload: { id: "o-1" } });
 * await tx.commit();
 *
 * // Or as one batch, the atomic unit over HTTP:
 * await client.batch([
 *   { sql: "INSERT INTO orders (id) VALUES (?)", args: ["o-2"] },
 *   ...outbox.statements({ topic: "orders.created", key: "o-2", payload: { id: "o-2" } }),
 * ], "write");
 * ```
 *
 * @module
 */

import { abortable } from "../shared/abort.ts";
import { hasMethods } from "../shared/client.ts";
import type { Client, InStatement, ResultSet, Row, Transaction } from "@libsql/client";
import { OutboxConfigError, OutboxStorageError } from "../../src/errors.ts";
import { checkOptions } from "../../src/rules.ts";
import { checkIdentifier, identifier } from "../shared/identifier.ts";
import { countsByTopic, num, numOrNull, outboxRow } from "../shared/row.ts";
import type {
  ClaimedRow,
  ClaimRequest,
  CleanupRequest,
  OutboxRow,
  OutboxStorage,
  PurgeRequest,
  RequeueRequest,
  SettleRequest,
  StorageStats,
} from "../../src/types.ts";
import { busyRetry, busyTimeout } from "./busy.ts";
import { libsqlOutboxErrors } from "./errors.ts";
import { insertError, insertStatements, runInsertStatements } from "./insert.ts";
import { schemaVersion, setupTable } from "./setup.ts";
import { createStatements, libsqlNames, relayQueries, SCHEMA_VERSION } from "./sql.ts";

export { SCHEMA_VERSION };

/** What `enqueue` accepts with libSQL: an interactive transaction, or a client (the insert is then its own transaction). */
export type LibsqlTx = Transaction | Client;

/** Options of {@link libsqlStorage}. */
export interface LibsqlStorageOptions {
  /** Table name, a plain SQL identifier (default `"outbox"`). */
  table?: string;
  /**
   * How long to keep retrying the relay's own statements while another connection
   * holds the write lock (SQLITE_BUSY), in ms (default 5,000). The embedded client
   * opens connections with no busy timeout of its own. Over HTTP (Turso, sqld) the
   * server waits for the lock itself and SQLITE_BUSY does not reach the client, so the
   * option has no effect there.
   */
  busyTimeoutMs?: number;
}

/** The libSQL storage: an {@link OutboxStorage} whose `statements()` feed `client.batch()`. */
export interface LibsqlStorage extends OutboxStorage<LibsqlTx, InStatement> {
  /** The table name. */
  readonly table: string;
  /** The DDL of a fresh table at schema version 2, as `setup()` creates it, for hand-written migrations. */
  readonly schemaSql: readonly string[];
}

/**
 * Returns the DDL (table, indexes, and the version table with its row) of a fresh
 * outbox table, for teams that write their own migrations: what `setup()` creates in
 * an empty database, at schema version 2, or 3 with `fanOut` (a row per destination
 * for an outbox with `publishers`). An existing table of an earlier version is
 * upgraded by `setup()` (or `outbox setup`), not by these statements.
 *
 * @param options `table` (default `"outbox"`), `fanOut` (default false).
 * @returns SQL statements, each idempotent.
 *
 * @example
 * ```ts
 * import { libsqlSchema } from "@x/outbox/libsql";
 *
 * console.log(libsqlSchema({ table: "outbox", fanOut: true }).join(";\n") + ";");
 * ```
 */
export function libsqlSchema(options: { table?: string; fanOut?: boolean } = {}): string[] {
  return createStatements(libsqlNames(checkIdentifier(options.table ?? "outbox", "table")), {
    fanOut: options.fanOut === true,
  });
}

/**
 * Reads the schema version of an outbox table: the one `setup()` recorded in
 * `<table>_schema`, or what the table's layout shows when that is more (a table made
 * by an earlier version, or made or migrated by hand or by drizzle-kit, has no record
 * or an older one): 1 without a `destination` column, 2 with it, 3 with the unique
 * index on (id, destination). {@link SCHEMA_VERSION} is the newest this package knows.
 *
 * @param client A `@libsql/client` client.
 * @param options `table` (default `"outbox"`).
 * @returns The version, or `null` when the table does not exist.
 * @throws {OutboxConfigError} When `table` is not a plain identifier.
 *
 * @example
 * ```ts
 * import { createClient } from "@libsql/client";
 * import { libsqlSchemaVersion, SCHEMA_VERSION } from "@x/outbox/libsql";
 *
 * const version = await libsqlSchemaVersion(createClient({ url: "file:app.db" }));
 * if (version !== null && version < 2) console.log(`run outbox setup (table at ${version}, latest ${SCHEMA_VERSION})`);
 * ```
 */
export async function libsqlSchemaVersion(client: Client, options: { table?: string } = {}): Promise<number | null> {
  const n = libsqlNames(checkIdentifier(options.table ?? "outbox", "table"));
  try {
    return await schemaVersion(client, n);
  } catch (error) {
    throw libsqlOutboxErrors(n.table)("read the schema version", error);
  }
}

function isClient(value: unknown): value is Client {
  return typeof (value as Client).transaction === "function" && typeof (value as Client).batch === "function";
}

/** Bytes of a hex string (a BLOB payload read back through JSON). */
function fromHex(hex: string): Uint8Array {
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

/** A claimed row as claimedSql packs it. */
type PackedRow = [number, string, string, string | null, string | null, number, number, string | null, string | null];

/**
 * Creates a libSQL storage.
 *
 * @param client A `@libsql/client` client (`createClient` from `@libsql/client`,
 *   `@libsql/client/web` or `@libsql/client/node`).
 * @param options `table` and `busyTimeoutMs`.
 * @returns The storage to pass to `createOutbox`.
 * @throws {OutboxConfigError} When `client` is not a libSQL client or `table` is not a plain identifier.
 */
export function libsqlStorage(client: Client, options: LibsqlStorageOptions = {}): LibsqlStorage {
  if (!hasMethods(client, "execute", "batch")) {
    throw new OutboxConfigError("libsqlStorage needs a @libsql/client Client (createClient({ url }))", "client");
  }
  checkOptions("libsqlStorage", options, { table: identifier, busyTimeoutMs: busyTimeout });
  const table = options.table ?? "outbox";
  const busyTimeoutMs = options.busyTimeoutMs ?? 5_000;
  const n = libsqlNames(table);
  const schemaSql = createStatements(n);
  const q = relayQueries(n);

  const wrap = libsqlOutboxErrors(n.table);
  /** Runs a relay statement, retrying while another writer holds the lock. */
  const withBusyRetry = busyRetry(client, busyTimeoutMs, wrap);

  return {
    name: "libsql",
    table,
    schemaSql,

    async setup(options = {}) {
      await abortable(options.signal, () => setupTable(client, n, options.fanOut === true, withBusyRetry));
    },

    async insert(tx, rows) {
      if (typeof tx !== "object" || tx === null || typeof (tx as Transaction).execute !== "function") {
        throw new OutboxStorageError(
          'enqueue needs a libSQL transaction (await client.transaction("write")) or client as its first argument',
        );
      }
      const statements = insertStatements(n, rows);
      try {
        if (statements.length > 1 && isClient(tx)) {
          await tx.batch(statements, "write");
        } else {
          await runInsertStatements((statement) => tx.execute(statement), statements);
        }
      } catch (error) {
        throw insertError(error, rows, (e) => wrap("enqueue", e));
      }
    },

    statements(rows) {
      return insertStatements(n, rows);
    },

    async claim(request: ClaimRequest): Promise<ClaimedRow[]> {
      // A write batch is BEGIN IMMEDIATE … COMMIT locally and one request over HTTP.
      const [updated, rs] = await withBusyRetry("claim messages", () => client.batch(q.claim(request), "write"));
      if (updated!.rowsAffected === 0) return [];
      return (JSON.parse(String(rs!.rows[0]![0])) as PackedRow[]).map((
        [seq, id, topic, key, headers, attempts, createdAt, text, hex],
      ) => ({ seq, id, topic, key, body: hex === null ? text! : fromHex(hex), headers, attempts, createdAt }));
    },

    async settle(request: SettleRequest): Promise<number> {
      const statements = q.settle(request);
      if (statements.length === 0) return 0;
      const results = await withBusyRetry("settle messages", () => client.batch(statements, "write"));
      return results.reduce((sum: number, rs: ResultSet) => sum + rs.rowsAffected, 0);
    },

    async cleanup(request: CleanupRequest): Promise<number> {
      const rs = await withBusyRetry(
        "clean up settled messages",
        () => client.execute(q.cleanup(request.publishedBefore, request.deadBefore, request.limit)),
      );
      return rs.rowsAffected;
    },

    async stats(now: number, options = {}): Promise<StorageStats> {
      const [counts, oldest, blocked] = await abortable(
        options.signal,
        () => withBusyRetry("read outbox stats", () => client.batch(q.stats(now), "read")),
      );
      const first = oldest!.rows[0];
      const groups = counts!.rows;
      return {
        ...countsByTopic(groups.map((row) => [String(row.topic), String(row.status), row.n] as const)),
        destinations: countsByTopic(groups.map((row) => [String(row.destination), String(row.status), row.n] as const))
          .topics,
        oldestPendingAt: first ? numOrNull(first.since) : null,
        blockedKeys: num(blocked!.rows[0]?.n ?? 0),
      };
    },

    async requeue(request: RequeueRequest): Promise<number> {
      const rs = await abortable(
        request.signal,
        () => withBusyRetry("requeue messages", () => client.execute(q.requeue(request))),
      );
      return rs.rowsAffected;
    },

    async inspect(inspectOptions = {}): Promise<OutboxRow[]> {
      if (inspectOptions.destination !== undefined && typeof inspectOptions.destination !== "string") {
        throw new OutboxConfigError("inspect destination must be a string", "destination");
      }
      const query = q.inspect(inspectOptions);
      const rs = await abortable(
        inspectOptions.signal,
        () => withBusyRetry("list messages", () => client.execute(query)),
      );
      return rs.rows.map((row: Row) => ({ ...outboxRow(row), destination: String(row.destination) }));
    },

    async purge(request: PurgeRequest): Promise<number> {
      const rs = await abortable(
        request.signal,
        () => withBusyRetry("purge messages", () => client.execute(q.purge(request))),
      );
      return rs.rowsAffected;
    },
  };
}

export { libsqlInbox, libsqlInboxSchema } from "./inbox.ts";
export type { LibsqlInboxOptions, LibsqlInboxStorage, LibsqlInboxTx } from "./inbox.ts";
