/**
 * The Postgres storage of the inbox (`createInbox` in `@x/outbox/inbox`): handled message ids
 * in a table of the consumer's own database, written in the consumer's postgres.js
 * transaction (`sql.begin(async (tx) => …)`).
 */

import { hasMethods } from "../shared/client.ts";
import type { InboxCleanupRequest, InboxEntry, InboxStorage } from "../../inbox/mod.ts";
import { OutboxConfigError, OutboxStorageError } from "../../src/errors.ts";
import { checkOptions } from "../../src/rules.ts";
import { errorCode } from "../shared/errors.ts";
import { checkIdentifier, identifier } from "../shared/identifier.ts";
import { postgresErrors } from "./errors.ts";
import { inboxCleanupSql, inboxCreateStatements, inboxReceiveSql } from "./inbox_sql.ts";
import { postgresNames, setupLockSql } from "./sql.ts";
import { transaction } from "./transaction.ts";

/**
 * What `inbox.receive` needs of a postgres.js transaction (`sql.begin(async (tx) => …)`)
 * or of `sql` itself: `unsafe`, with parameters always bound.
 */
export interface PostgresInboxTx {
  /** Runs a query with bound parameters (postgres.js `sql.unsafe`). */
  unsafe(
    query: string,
    parameters?: unknown[],
    options?: { prepare?: boolean },
  ): PromiseLike<Record<string, unknown>[]>;
}

/** The parts of a postgres.js `sql` instance the inbox uses. */
export interface PostgresInboxSql extends PostgresInboxTx {
  /** Runs `cb` in a transaction (postgres.js `sql.begin`); `setup()` uses it. */
  begin<T>(cb: (tx: PostgresInboxTx) => T | Promise<T>): Promise<unknown>;
}

/**
 * Named (prepared) statements: postgres.js then describes a statement once per
 * connection instead of on every call, one round trip per receive instead of two. A
 * client created with `prepare: false` (PgBouncer in transaction mode) still wins.
 */
const PREPARE = { prepare: true } as const;

/** Options of {@link postgresInbox}. */
export interface PostgresInboxOptions {
  /** Schema name, a plain identifier (default `"public"`); `setup()` creates it if missing. */
  schema?: string;
  /** Table name, a plain identifier (default `"outbox_inbox"`). */
  table?: string;
}

/** The Postgres inbox storage. */
export interface PostgresInboxStorage extends InboxStorage<PostgresInboxTx, never> {
  /** The schema name. */
  readonly schema: string;
  /** The table name. */
  readonly table: string;
  /** The DDL `setup()` runs, for hand-written migrations. */
  readonly schemaSql: readonly string[];
}

/**
 * Returns the DDL (schema, table and index) of the inbox, for teams that write their
 * own migrations. The same statements `inbox.setup()` runs.
 *
 * @param options `schema` (default `"public"`) and `table` (default `"outbox_inbox"`).
 * @returns SQL statements, each idempotent.
 * @throws {OutboxConfigError} When a name is not a plain identifier.
 *
 * @example
 * ```ts
 * import { postgresInboxSchema } from "@x/outbox/postgres";
 * console.log(postgresInboxSchema({ schema: "billing" }).join(";\n") + ";");
 * ```
 */
export function postgresInboxSchema(options: { schema?: string; table?: string } = {}): string[] {
  return inboxCreateStatements(
    postgresNames(
      checkIdentifier(options.schema ?? "public", "schema"),
      checkIdentifier(options.table ?? "outbox_inbox", "table"),
    ),
  );
}

function isPostgresSql(value: unknown): value is PostgresInboxSql {
  return typeof value === "function" && hasMethods(value, "unsafe", "begin");
}

/**
 * Creates the Postgres storage of an inbox.
 *
 * @param sql The postgres.js client (`postgres(url)`); `setup()` and `cleanup()` run on it.
 * @param options `schema` and `table`.
 * @returns The storage to pass to `createInbox`.
 * @throws {OutboxConfigError} When `sql` is not a postgres.js instance or a name is not a plain identifier.
 *
 * @example
 * ```ts
 * import postgres from "postgres";
 * import { createInbox } from "@x/outbox/inbox";
 * import { postgresInbox } from "@x/outbox/postgres";
 *
 * const sql = postgres("postgres://localhost/app");
 * const inbox = createInbox({ storage: postgresInbox(sql, { schema: "billing" }), consumer: "billing" });
 * await inbox.setup();
 * await sql.begin(async (tx) => {
 *   if (!(await inbox.receive(tx, "0190a5c0-…"))) return; // handled before
 *   await tx`update accounts set balance = balance + 10 where id = ${"a-1"}`;
 * });
 * ```
 */
export function postgresInbox(sql: PostgresInboxSql, options: PostgresInboxOptions = {}): PostgresInboxStorage {
  if (!isPostgresSql(sql)) {
    throw new OutboxConfigError("postgresInbox needs a postgres.js sql instance: postgres(url)", "sql");
  }
  checkOptions("postgresInbox", options, { schema: identifier, table: identifier });
  const schema = options.schema ?? "public";
  const table = options.table ?? "outbox_inbox";
  const n = postgresNames(schema, table);
  const schemaSql = inboxCreateStatements(n);
  const q = { receive: inboxReceiveSql(n), cleanup: inboxCleanupSql(n), setupLock: setupLockSql(n) };

  const wrap = postgresErrors(n, "inbox.setup()", (error) =>
    // 25P02 in_failed_sql_transaction: the caller's transaction is already lost.
    errorCode(error) === "25P02"
      ? "the transaction was already aborted by an earlier error; roll it back and retry the message"
      : undefined);

  return {
    name: "postgres",
    schema,
    table,
    schemaSql,

    async setup() {
      try {
        await transaction(sql, async (tx) => {
          // CREATE … IF NOT EXISTS still races on the catalog: one setup at a time.
          await tx.unsafe(q.setupLock);
          for (const statement of schemaSql) await tx.unsafe(statement);
        });
      } catch (error) {
        throw wrap("create the inbox table", error);
      }
    },

    async record(tx: PostgresInboxTx, entry: InboxEntry): Promise<boolean> {
      if ((typeof tx !== "function" && (typeof tx !== "object" || tx === null)) || typeof tx.unsafe !== "function") {
        throw new OutboxStorageError(
          "receive needs a postgres.js transaction (sql.begin(async (tx) => …)) or sql as its first argument",
        );
      }
      try {
        const rows = await tx.unsafe(q.receive, [entry.consumer, entry.id, entry.receivedAt], PREPARE);
        return rows.length === 1;
      } catch (error) {
        throw wrap("record a received message", error);
      }
    },

    async cleanup(request: InboxCleanupRequest): Promise<number> {
      try {
        const result = await sql.unsafe(q.cleanup, [request.before, request.limit], PREPARE);
        return (result as unknown as { count?: number }).count ?? 0;
      } catch (error) {
        throw wrap("clean up received message ids", error);
      }
    },
  };
}
