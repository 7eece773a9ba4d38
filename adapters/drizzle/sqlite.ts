/**
 * Drizzle definitions and storage for SQLite / libSQL (drizzle-orm/sqlite-core, libsql driver).
 */

import { hasMethods } from "../shared/client.ts";
import type { Client, InStatement } from "@libsql/client";
import {
  type BuildColumns,
  type HasDefault,
  type IsPrimaryKey,
  type NotNull,
  Param,
  type SQL,
  sql,
  type SQLChunk,
} from "drizzle-orm";
import {
  blob,
  check,
  index,
  integer,
  type SQLiteBlobJsonBuilderInitial,
  type SQLiteIntegerBuilderInitial,
  sqliteTable,
  type SQLiteTableWithColumns,
  type SQLiteTextBuilderInitial,
  text,
  uniqueIndex,
} from "drizzle-orm/sqlite-core";
import { OutboxConfigError, OutboxStorageError } from "../../src/errors.ts";
import type { OutboxStorage } from "../../src/types.ts";
import {
  insertError,
  insertStatements,
  libsqlNames,
  libsqlOutboxErrors,
  libsqlStorage,
  type LibsqlStorageOptions,
  runInsertStatements,
} from "../libsql/internal_mod.ts";
import { checkIdentifier } from "../shared/identifier.ts";

type SqliteText<N extends string> = SQLiteTextBuilderInitial<N, [string, ...string[]], number | undefined>;
type SqliteInteger<N extends string> = SQLiteIntegerBuilderInitial<N>;

/**
 * The column builders of {@link sqliteOutboxTable}, spelled out so the table has an
 * explicit type (JSR's "no slow types"); `sqliteOutboxColumns` is checked against it by
 * the compiler. A type alias, not an interface: drizzle wants a Record.
 */
export type SqliteOutboxColumns = {
  /** Insertion order, `INTEGER PRIMARY KEY` (the rowid). */
  seq: IsPrimaryKey<HasDefault<NotNull<SqliteInteger<"seq">>>>;
  /** The message id (UUIDv7 by default), unique (with `fanOut`, unique per destination). */
  id: NotNull<SqliteText<"id">>;
  /** The message topic. */
  topic: NotNull<SqliteText<"topic">>;
  /** The ordering key, or null. */
  key: SqliteText<"key">;
  /** The payload: JSON text or bytes, as a blob. */
  payload: NotNull<SQLiteBlobJsonBuilderInitial<"payload">>;
  /** Message headers as JSON text, or null. */
  headers: SqliteText<"headers">;
  /** `pending`, `processing`, `published` or `dead`. */
  status: HasDefault<NotNull<SqliteText<"status">>>;
  /** Publish attempts so far. */
  attempts: HasDefault<NotNull<SqliteInteger<"attempts">>>;
  /** When the row may be claimed next (epoch ms); null once settled. */
  availableAt: SqliteInteger<"available_at">;
  /** The requested delivery time (epoch ms), or null. */
  deliverAt: SqliteInteger<"deliver_at">;
  /** The relay holding the lease, or null. */
  lockedBy: SqliteText<"locked_by">;
  /** The last publish error, or null. */
  lastError: SqliteText<"last_error">;
  /** Enqueue time (epoch ms). */
  createdAt: NotNull<SqliteInteger<"created_at">>;
  /** When the row was published or went dead (epoch ms), or null. */
  settledAt: SqliteInteger<"settled_at">;
  /** The publisher the row is for: a `publishers` name, or `""` for the one `publisher`. */
  destination: HasDefault<NotNull<SqliteText<"destination">>>;
};

/** The drizzle table {@link sqliteOutboxTable} returns. */
export type SqliteOutboxTable = SQLiteTableWithColumns<{
  name: string;
  schema: undefined;
  columns: BuildColumns<string, SqliteOutboxColumns, "sqlite">;
  dialect: "sqlite";
}>;

function sqliteOutboxColumns(): SqliteOutboxColumns {
  return {
    seq: integer("seq").primaryKey(),
    id: text("id").notNull(),
    topic: text("topic").notNull(),
    key: text("key"),
    payload: blob("payload").notNull(),
    headers: text("headers"),
    status: text("status").notNull().default("pending"),
    attempts: integer("attempts").notNull().default(0),
    availableAt: integer("available_at"),
    deliverAt: integer("deliver_at"),
    lockedBy: text("locked_by"),
    lastError: text("last_error"),
    createdAt: integer("created_at").notNull(),
    settledAt: integer("settled_at"),
    destination: text("destination").notNull().default(""),
  };
}

/**
 * The outbox table as a drizzle `sqlite-core` table, identical (columns, indexes) to
 * what `outbox.setup()` creates, so drizzle-kit migrations include it: schema version
 * 2, or 3 with `fanOut`. `setup()` also keeps the version in a table of its own
 * (`<table>_schema`); without it, it reads the version from the layout.
 *
 * @param options `table` (default `"outbox"`); `fanOut` (default false): the table of an
 *   outbox with `publishers` (schema version 3), the message id unique per destination
 *   (`<table>_id_dest_unique` on (id, destination)) rather than on its own
 *   (`<table>_id_unique`), so a message can have a row per destination. Every process
 *   writing to the table must run a version that knows destinations.
 * @returns The table; export it from your drizzle schema file.
 *
 * @example
 * ```ts
 * import { sqliteOutboxTable } from "@x/outbox/drizzle";
 *
 * // schema.ts, for an outbox with publishers (fan-out)
 * export const outbox = sqliteOutboxTable({ fanOut: true });
 * ```
 */
export function sqliteOutboxTable(options: { table?: string; fanOut?: boolean } = {}): SqliteOutboxTable {
  const name = checkIdentifier(options.table ?? "outbox", "table");
  // Keep in step with createStatements in adapters/libsql/sql.ts (a test compares them).
  return sqliteTable(name, sqliteOutboxColumns(), (t) => [
    check(`${name}_status_check`, sql.raw("status IN ('pending', 'processing', 'published', 'dead')")),
    options.fanOut === true
      ? uniqueIndex(`${name}_id_dest_unique`).on(t.id, t.destination)
      : uniqueIndex(`${name}_id_unique`).on(t.id),
    index(`${name}_claim_dest_idx`).on(t.destination, t.seq, t.availableAt, t.key).where(
      sql.raw("available_at IS NOT NULL"),
    ),
    index(`${name}_key_dest_idx`).on(t.destination, t.key, t.availableAt, t.seq).where(
      sql.raw("available_at IS NOT NULL AND key IS NOT NULL"),
    ),
    index(`${name}_settled_idx`).on(t.status, t.settledAt).where(sql.raw("available_at IS NULL")),
    index(`${name}_locked_idx`).on(t.lockedBy).where(sql.raw("locked_by IS NOT NULL")),
    index(`${name}_scheduled_idx`).on(t.deliverAt).where(
      sql.raw("available_at IS NOT NULL AND deliver_at IS NOT NULL"),
    ),
  ]);
}

/** A drizzle libsql database: what `drizzle(client)` from `drizzle-orm/libsql` returns. */
export interface DrizzleSqliteDatabase {
  /** The libSQL client drizzle wraps. */
  readonly $client: unknown;
  /** Runs a callback in a transaction. */
  transaction<T>(fn: (tx: DrizzleSqliteTransaction) => Promise<T>): Promise<T>;
}

/** A drizzle SQLite transaction (or database): anything with `run(sql)`. */
export interface DrizzleSqliteTransaction {
  run(query: SQL): PromiseLike<unknown>;
}

/** Turns `?` placeholders into drizzle params, so the statement runs through drizzle. */
function drizzleSql(statement: InStatement | string): SQL {
  if (typeof statement === "string") return sql.raw(statement);
  const args = statement.args as unknown[];
  const parts = statement.sql.split("?");
  const chunks: SQLChunk[] = [sql.raw(parts[0]!)];
  for (let i = 1; i < parts.length; i++) {
    chunks.push(new Param(args[i - 1]));
    chunks.push(sql.raw(parts[i]!));
  }
  return sql.join(chunks);
}

/**
 * A storage on a drizzle libsql database: the relay runs on the libSQL client drizzle
 * wraps, and `outbox.enqueue(tx, …)` writes through the drizzle transaction.
 *
 * @param db `drizzle(client)` from `drizzle-orm/libsql`.
 * @param options `table`, `busyTimeoutMs`, as for `libsqlStorage`.
 * @returns The storage; its transaction type is drizzle's transaction.
 * @throws {OutboxConfigError} When `db` does not run on a libSQL client.
 */
export function drizzleSqliteStorage(
  db: DrizzleSqliteDatabase,
  options: LibsqlStorageOptions = {},
): OutboxStorage<DrizzleSqliteTransaction> {
  const client = (db as { $client?: unknown })?.$client as Client | undefined;
  if (!client || !hasMethods(client, "execute", "batch")) {
    throw new OutboxConfigError(
      "drizzleSqliteStorage needs a drizzle database on the libsql driver: drizzle(createClient({ url }))",
      "db",
    );
  }
  const base = libsqlStorage(client, options);
  const n = libsqlNames(base.table);
  const wrap = libsqlOutboxErrors(n.table);
  return {
    ...base,
    name: "drizzle-sqlite",
    statements: undefined,
    async insert(tx, rows) {
      if (typeof tx !== "object" || tx === null || typeof tx.run !== "function") {
        throw new OutboxStorageError(
          "enqueue needs a drizzle transaction (db.transaction(async (tx) => …)) or the db as its first argument",
        );
      }
      const statements = insertStatements(n, rows);
      try {
        if (tx === (db as unknown) && statements.length > 1) {
          await db.transaction((inner) =>
            runInsertStatements((s) => Promise.resolve(inner.run(drizzleSql(s))), statements)
          );
        } else {
          await runInsertStatements((s) => Promise.resolve(tx.run(drizzleSql(s))), statements);
        }
      } catch (error) {
        throw insertError(error, rows, (e) => wrap("enqueue", e));
      }
    },
  };
}
