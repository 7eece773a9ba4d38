/**
 * Drizzle definitions and storage for Postgres (drizzle-orm/pg-core, postgres-js driver).
 */

import {
  type BuildColumns,
  type HasDefault,
  type IsIdentity,
  type IsPrimaryKey,
  type NotNull,
  Param,
  type SQL,
  sql,
  type SQLChunk,
} from "drizzle-orm";
import {
  bigint,
  check,
  customType,
  index,
  integer,
  json,
  type PgBigInt53BuilderInitial,
  type PgCustomColumnBuilder,
  type PgIntegerBuilderInitial,
  type PgJsonBuilderInitial,
  pgSchema,
  pgTable,
  type PgTableWithColumns,
  type PgTextBuilderInitial,
  text,
  uniqueIndex,
} from "drizzle-orm/pg-core";
import { OutboxConfigError, OutboxStorageError } from "../../src/errors.ts";
import type { OutboxStorage } from "../../src/types.ts";
import {
  insertError,
  insertQueries,
  objectName,
  outboxErrors,
  postgresNames,
  type PostgresSql,
  postgresStorage,
  type PostgresStorageOptions,
  unlessGone,
  writeRows,
} from "../postgres/internal_mod.ts";
import { checkIdentifier } from "../shared/identifier.ts";

const bytea = customType<{ data: Uint8Array; driverData: Uint8Array }>({ dataType: () => "bytea" });

type PgText<N extends string> = PgTextBuilderInitial<N, [string, ...string[]]>;
type PgBigInt<N extends string> = PgBigInt53BuilderInitial<N>;

/**
 * The column builders of {@link pgOutboxTable}, spelled out so the table has an explicit
 * type (JSR's "no slow types"); `pgOutboxColumns` is checked against it by the compiler.
 */
// A type alias, not an interface: drizzle wants a Record (an index-signature-compatible type).
export type PgOutboxColumns = {
  /** Insertion order, `bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY`. */
  seq: IsIdentity<IsPrimaryKey<NotNull<PgBigInt<"seq">>>, "always">;
  /** The message id (UUIDv7 by default): unique, or with `fanOut` unique per destination. */
  id: NotNull<PgText<"id">>;
  /** The message topic. */
  topic: NotNull<PgText<"topic">>;
  /** The ordering key, or null. */
  key: PgText<"key">;
  /** A JSON payload (exactly one of payload and payloadBytes is set). */
  payload: PgJsonBuilderInitial<"payload">;
  /** A bytes payload, `bytea`. */
  payloadBytes: PgCustomColumnBuilder<{
    name: "payload_bytes";
    dataType: "custom";
    columnType: "PgCustomColumn";
    data: Uint8Array;
    driverParam: Uint8Array;
    enumValues: undefined;
  }>;
  /** Message headers as a JSON object, or null. */
  headers: PgJsonBuilderInitial<"headers">;
  /** `pending`, `processing`, `published` or `dead`. */
  status: HasDefault<NotNull<PgText<"status">>>;
  /** Publish attempts so far. */
  attempts: HasDefault<NotNull<PgIntegerBuilderInitial<"attempts">>>;
  /** When the row may be claimed next (epoch ms); null once settled. */
  availableAt: PgBigInt<"available_at">;
  /** The requested delivery time (epoch ms), or null. */
  deliverAt: PgBigInt<"deliver_at">;
  /** The relay holding the lease, or null. */
  lockedBy: PgText<"locked_by">;
  /** The last publish error, or null. */
  lastError: PgText<"last_error">;
  /** Enqueue time (epoch ms). */
  createdAt: NotNull<PgBigInt<"created_at">>;
  /** When the row was published or went dead (epoch ms), or null. */
  settledAt: PgBigInt<"settled_at">;
  /** The destination the row is for (`""`: the outbox's one `publisher`). */
  destination: HasDefault<NotNull<PgText<"destination">>>;
};

/** The drizzle table {@link pgOutboxTable} returns (in `public` or another schema). */
export type PgOutboxTable = PgTableWithColumns<{
  name: string;
  schema: string | undefined;
  columns: BuildColumns<string, PgOutboxColumns, "pg">;
  dialect: "pg";
}>;

function pgOutboxColumns(name: string, fanOut: boolean): PgOutboxColumns {
  // Version 3 has no unique constraint on id alone: the unique index on (id, destination).
  const id = text("id").notNull();
  return {
    seq: bigint("seq", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    id: fanOut ? id : id.unique(`${name}_id_key`),
    topic: text("topic").notNull(),
    key: text("key"),
    payload: json("payload"),
    payloadBytes: bytea("payload_bytes"),
    headers: json("headers"),
    status: text("status").notNull().default("pending"),
    attempts: integer("attempts").notNull().default(0),
    availableAt: bigint("available_at", { mode: "number" }),
    deliverAt: bigint("deliver_at", { mode: "number" }),
    lockedBy: text("locked_by"),
    lastError: text("last_error"),
    createdAt: bigint("created_at", { mode: "number" }).notNull(),
    settledAt: bigint("settled_at", { mode: "number" }),
    destination: text("destination").notNull().default(""),
  };
}

/** Options of {@link pgOutboxTable}. */
export interface PgOutboxTableOptions {
  /** Schema name, a plain identifier (default `"public"`). */
  schema?: string;
  /** Table name, a plain identifier (default `"outbox"`). */
  table?: string;
  /**
   * The table of schema version 3, as `setup({ fanOut: true })` makes it: one message id
   * may have a row per destination (`createOutbox({ publishers })`), so the unique index
   * is on `(id, destination)` instead of `id` alone. Writers of @x/outbox before schema
   * versions cannot insert into it: upgrade every process first. Default: version 2.
   */
  fanOut?: boolean;
}

/**
 * The outbox table as a drizzle `pg-core` table, identical (columns, constraints,
 * indexes) to what `outbox.setup()` creates, so drizzle-kit migrations include it.
 * Drizzle cannot declare the claim functions or the version record (`<table>_schema`);
 * `outbox.setup()` adds them to a table drizzle-kit made.
 *
 * @param options `schema` (default `"public"`), `table` (default `"outbox"`) and
 *   `fanOut` (schema version 3, for `createOutbox({ publishers })`).
 * @returns The table; export it from your drizzle schema file.
 *
 * @example
 * ```ts
 * // schema.ts, read by drizzle-kit
 * import { pgOutboxTable } from "@x/outbox/drizzle";
 * export const outbox = pgOutboxTable();
 * ```
 */
export function pgOutboxTable(options: PgOutboxTableOptions = {}): PgOutboxTable {
  const schema = checkIdentifier(options.schema ?? "public", "schema");
  const name = checkIdentifier(options.table ?? "outbox", "table");
  const fanOut = options.fanOut === true;
  const columns = pgOutboxColumns(name, fanOut);
  // Keep in step with createStatements in adapters/postgres/sql.ts (a test compares them).
  const extras = (t: { [K in keyof typeof columns]: never }) => [
    check(`${name}_status_check`, sql`${sql.raw("status")} IN ('pending', 'processing', 'published', 'dead')`),
    check(`${name}_check`, sql.raw("(payload IS NULL) <> (payload_bytes IS NULL)")),
    ...(fanOut ? [uniqueIndex(objectName(name, "id_dest_key")).on(t.id, t.destination)] : []),
    index(objectName(name, "claim_dest_idx")).on(t.destination, t.seq, t.availableAt, t.key).where(
      sql.raw("available_at IS NOT NULL"),
    ),
    index(objectName(name, "key_dest_idx")).on(t.destination, t.key, t.availableAt, t.seq).where(
      sql.raw("available_at IS NOT NULL AND key IS NOT NULL"),
    ),
    index(objectName(name, "settled_idx")).on(t.status, t.settledAt).where(sql.raw("available_at IS NULL")),
    index(objectName(name, "scheduled_idx")).on(t.deliverAt).where(
      sql.raw("available_at IS NOT NULL AND deliver_at IS NOT NULL"),
    ),
  ];
  return schema === "public"
    ? pgTable(name, columns, (t) => extras(t as never))
    : pgSchema(schema).table(name, columns, (t) => extras(t as never));
}

/** A drizzle postgres-js database: what `drizzle(sql)` returns. */
export interface DrizzlePgDatabase {
  /** The postgres.js client drizzle wraps. */
  readonly $client: unknown;
  /** Runs a callback in a transaction. */
  transaction<T>(fn: (tx: DrizzlePgTransaction) => Promise<T>): Promise<T>;
}

/** A drizzle Postgres transaction (or database): anything with `execute(sql)`. */
export interface DrizzlePgTransaction {
  execute(query: SQL): PromiseLike<unknown>;
}

/** Turns `$n` placeholders into drizzle params, so the statement runs through drizzle. */
export function drizzleSql(text: string, params: readonly unknown[]): SQL {
  const chunks: SQLChunk[] = [];
  const re = /\$(\d+)/g;
  let last = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    chunks.push(sql.raw(text.slice(last, m.index)));
    chunks.push(new Param(params[Number(m[1]) - 1]));
    last = m.index + m[0].length;
  }
  chunks.push(sql.raw(text.slice(last)));
  return sql.join(chunks);
}

/**
 * A storage on a drizzle postgres-js database: the relay runs on the postgres.js client
 * drizzle wraps, and `outbox.enqueue(tx, …)` writes through the drizzle transaction.
 *
 * @param db `drizzle(sql)` from `drizzle-orm/postgres-js`.
 * @param options `schema`, `table`, `notify`, as for `postgresStorage`.
 * @returns The storage; its transaction type is drizzle's transaction.
 * @throws {OutboxConfigError} When `db` does not run on postgres.js.
 *
 * @example
 * ```ts
 * const outbox = createOutbox({ storage: drizzlePgStorage(db), publisher });
 * await db.transaction(async (tx) => {
 *   await tx.insert(orders).values({ id: "o-1" });
 *   await outbox.enqueue(tx, { topic: "orders.created", key: "o-1", payload: { id: "o-1" } });
 * });
 * ```
 */
export function drizzlePgStorage(
  db: DrizzlePgDatabase,
  options: PostgresStorageOptions = {},
): OutboxStorage<DrizzlePgTransaction> {
  const client = (db as { $client?: unknown })?.$client;
  if (typeof client !== "function" || typeof (client as unknown as PostgresSql).unsafe !== "function") {
    throw new OutboxConfigError(
      "drizzlePgStorage needs a drizzle database on the postgres-js driver: drizzle(postgres(url))",
      "db",
    );
  }
  const base = postgresStorage(client as unknown as PostgresSql, options);
  const n = postgresNames(base.schema, base.table);
  const q = insertQueries(n);
  const wrap = outboxErrors(n);
  const notify = options.notify ?? true;
  const execute = (tx: DrizzlePgTransaction) => async (text: string, params: unknown[]) =>
    (await tx.execute(drizzleSql(text, params))) as Record<string, unknown>[];
  return {
    ...base,
    name: "drizzle-postgres",
    async insert(tx, rows) {
      if (typeof tx !== "object" || tx === null || typeof tx.execute !== "function") {
        throw new OutboxStorageError(
          "enqueue needs a drizzle transaction (db.transaction(async (tx) => …)) or the db as its first argument",
        );
      }
      try {
        if (tx === (db as unknown)) {
          // unlessGone: drizzle's transaction is postgres.js's sql.begin (see transaction.ts).
          await db.transaction((inner) => unlessGone(writeRows(q, rows, notify, execute(inner))));
        } else {
          await writeRows(q, rows, notify, execute(tx));
        }
      } catch (error) {
        throw insertError(error, (e) => wrap("enqueue", e));
      }
    },
  };
}
