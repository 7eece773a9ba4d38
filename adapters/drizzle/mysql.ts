/**
 * Drizzle definitions for MySQL / MariaDB (drizzle-orm/mysql-core): the outbox table as
 * `mysqlStorage().setup()` creates it, for drizzle-kit migrations.
 */

import {
  type BuildColumns,
  type HasDefault,
  type HasGenerated,
  type IsAutoincrement,
  type IsPrimaryKey,
  type NotNull,
  sql,
} from "drizzle-orm";
import {
  bigint,
  check,
  customType,
  index,
  int,
  type MySqlBigInt53BuilderInitial,
  type MySqlCustomColumnBuilder,
  type MySqlIntBuilderInitial,
  mysqlTable,
  type MySqlTableWithColumns,
  uniqueIndex,
} from "drizzle-orm/mysql-core";
import { MAX_KEY_BYTES, mysqlNames, objectName } from "../mysql/internal_mod.ts";
import { checkIdentifier } from "../shared/identifier.ts";

/** A column of an exact MySQL type (a drizzle custom type): the DDL's own spelling, character set included. */
type MysqlColumn<N extends string, D> = MySqlCustomColumnBuilder<{
  name: N;
  dataType: "custom";
  columnType: "MySqlCustomColumn";
  data: D;
  driverParam: unknown;
  enumValues: undefined;
}>;

type MysqlBigInt<N extends string> = MySqlBigInt53BuilderInitial<N>;

/**
 * The column builders of {@link mysqlOutboxTable}, spelled out so the table has an
 * explicit type (JSR's "no slow types"). A type alias, not an interface: drizzle wants a Record.
 */
export type MysqlOutboxColumns = {
  /** Insertion order, `BIGINT AUTO_INCREMENT PRIMARY KEY`. */
  seq: IsPrimaryKey<NotNull<IsAutoincrement<HasDefault<MysqlBigInt<"seq">>>>>;
  /** The message id, `VARBINARY(1024)`: unique, or with `fanOut` unique per destination. */
  id: NotNull<MysqlColumn<"id", string>>;
  /** The message topic. */
  topic: NotNull<MysqlColumn<"topic", string>>;
  /** The ordering key, `VARBINARY(2048)`, or null. */
  key: MysqlColumn<"key", string>;
  /** A JSON payload as text (exactly one of payload and payloadBytes is set). */
  payload: MysqlColumn<"payload", string>;
  /** A bytes payload, `LONGBLOB`. */
  payloadBytes: MysqlColumn<"payload_bytes", Uint8Array>;
  /** Message headers as JSON text, or null. */
  headers: MysqlColumn<"headers", string>;
  /** `pending`, `processing`, `published` or `dead`. */
  status: HasDefault<NotNull<MysqlColumn<"status", string>>>;
  /** Publish attempts so far. */
  attempts: HasDefault<NotNull<MySqlIntBuilderInitial<"attempts">>>;
  /** When the row may be claimed next (epoch ms); null once settled. */
  availableAt: MysqlBigInt<"available_at">;
  /** The requested delivery time (epoch ms), or null. */
  deliverAt: MysqlBigInt<"deliver_at">;
  /** The claim token holding the lease, or null. */
  lockedBy: MysqlColumn<"locked_by", string>;
  /** The last publish error, or null. */
  lastError: MysqlColumn<"last_error", string>;
  /** Enqueue time (epoch ms). */
  createdAt: NotNull<MysqlBigInt<"created_at">>;
  /** When the row was published or went dead (epoch ms), or null. */
  settledAt: MysqlBigInt<"settled_at">;
  /** The destination the row is for (`""`: the outbox's one `publisher`). */
  destination: HasDefault<NotNull<MysqlColumn<"destination", string>>>;
  /** `available_at IS NULL`, stored: leads the claim index where Postgres has a partial index. */
  settled: HasGenerated<MysqlColumn<"settled", number>, { type: "always" }>;
};

/** The drizzle table {@link mysqlOutboxTable} returns. */
export type MysqlOutboxTable = MySqlTableWithColumns<{
  name: string;
  schema: undefined;
  columns: BuildColumns<string, MysqlOutboxColumns, "mysql">;
  dialect: "mysql";
}>;

/** A column of the exact type `type` (as setup()'s CREATE TABLE spells it). */
function typed<D>(type: string) {
  return customType<{ data: D; driverData: unknown }>({ dataType: () => type });
}

const UTF8 = "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin";
const ASCII = "CHARACTER SET ascii COLLATE ascii_bin";

function mysqlOutboxColumns(): MysqlOutboxColumns {
  const text = typed<string>(`longtext ${UTF8}`);
  return {
    seq: bigint("seq", { mode: "number" }).autoincrement().primaryKey(),
    id: typed<string>("varbinary(1024)")("id").notNull(),
    topic: typed<string>(`varchar(255) ${UTF8}`)("topic").notNull(),
    key: typed<string>(`varbinary(${MAX_KEY_BYTES})`)("key"),
    payload: text("payload"),
    payloadBytes: typed<Uint8Array>("longblob")("payload_bytes"),
    headers: text("headers"),
    status: typed<string>(`varchar(16) ${ASCII}`)("status").notNull().default("pending"),
    attempts: int("attempts").notNull().default(0),
    availableAt: bigint("available_at", { mode: "number" }),
    deliverAt: bigint("deliver_at", { mode: "number" }),
    lockedBy: typed<string>(`varchar(255) ${UTF8}`)("locked_by"),
    lastError: text("last_error"),
    createdAt: bigint("created_at", { mode: "number" }).notNull(),
    settledAt: bigint("settled_at", { mode: "number" }),
    destination: typed<string>(`varchar(64) ${ASCII}`)("destination").notNull().default(""),
    settled: typed<number>("tinyint")("settled").generatedAlwaysAs(sql.raw("(available_at IS NULL)"), {
      mode: "stored",
    }),
  };
}

/** Options of {@link mysqlOutboxTable}. */
export interface MysqlOutboxTableOptions {
  /** Table name, a plain identifier (default `"outbox"`). */
  table?: string;
  /**
   * The table of schema version 3, as `setup({ fanOut: true })` makes it: one message id
   * may have a row per destination (`createOutbox({ publishers })`), so the unique index
   * is on `(id, destination)` instead of `id` alone. Default: version 2.
   */
  fanOut?: boolean;
}

/**
 * The outbox table as a drizzle `mysql-core` table, identical (columns with their
 * character sets, the generated `settled` column, checks, indexes) to what
 * `mysqlStorage().setup()` creates, so drizzle-kit migrations include it. Drizzle cannot
 * declare the version record (`<table>_schema`); `outbox.setup()` adds it to a table
 * drizzle-kit made, and reads the version from the table's indexes until then.
 *
 * @param options `table` (default `"outbox"`) and `fanOut` (schema version 3, for
 *   `createOutbox({ publishers })`).
 * @returns The table; export it from your drizzle schema file.
 *
 * @example
 * ```ts
 * // schema.ts, read by drizzle-kit (dialect: "mysql")
 * import { mysqlOutboxTable } from "@x/outbox/drizzle";
 * export const outbox = mysqlOutboxTable();
 * ```
 */
export function mysqlOutboxTable(options: MysqlOutboxTableOptions = {}): MysqlOutboxTable {
  const name = checkIdentifier(options.table ?? "outbox", "table");
  const n = mysqlNames(name);
  const fanOut = options.fanOut === true;
  // Keep in step with createTableSql in adapters/mysql/sql.ts (a test compares them).
  return mysqlTable(name, mysqlOutboxColumns(), (t) => [
    fanOut ? uniqueIndex(n.idDestinationIndex).on(t.id, t.destination) : uniqueIndex(n.idIndex).on(t.id),
    index(n.claimIndex).on(t.destination, t.settled, t.seq, t.availableAt, t.key),
    index(n.waitIndex).on(t.destination, t.settled, t.availableAt, t.key, t.seq),
    index(n.settledIndex).on(t.status, t.settledAt),
    index(n.scheduledIndex).on(t.settled, t.deliverAt),
    check(objectName(name, "status_check"), sql.raw("status IN ('pending', 'processing', 'published', 'dead')")),
    check(objectName(name, "payload_check"), sql.raw("(payload IS NULL) <> (payload_bytes IS NULL)")),
  ]);
}
