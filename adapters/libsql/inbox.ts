/**
 * The libSQL storage of the inbox (`createInbox` in `@x/outbox/inbox`): handled message ids
 * in a table of the consumer's own libSQL / SQLite / Turso database.
 *
 * Receive inside an interactive transaction (`await client.transaction("write")`), or,
 * where a batch is the atomic unit (Turso over HTTP), put `inbox.statements(id)` first
 * in a `client.batch([...], "write")` with the message's effects.
 */

import { hasMethods } from "../shared/client.ts";
import type { Client, InStatement, Transaction } from "@libsql/client";
import type { InboxCleanupRequest, InboxEntry, InboxStorage } from "../../inbox/mod.ts";
import { OutboxConfigError, OutboxStorageError } from "../../src/errors.ts";
import { checkOptions } from "../../src/rules.ts";
import { errorText } from "../shared/errors.ts";
import { checkIdentifier, identifier } from "../shared/identifier.ts";
import { busyRetry, busyTimeout, isClosedTransaction } from "./busy.ts";
import { libsqlErrors } from "./errors.ts";
import {
  inboxCleanupSql,
  inboxCreateStatements,
  inboxGuardSql,
  inboxReceiveSql,
  type LibsqlInboxNames,
  libsqlInboxNames,
} from "./inbox_sql.ts";

/** What `inbox.receive` accepts with libSQL: an interactive transaction, or a client (the insert is then its own transaction). */
export type LibsqlInboxTx = Transaction | Client;

/** Options of {@link libsqlInbox}. */
export interface LibsqlInboxOptions {
  /** Table name, a plain SQL identifier (default `"outbox_inbox"`). */
  table?: string;
  /**
   * How long `setup()` and `cleanup()` keep retrying while another connection holds
   * the write lock (SQLITE_BUSY), in ms (default 5,000). `receive` runs in the
   * caller's transaction and never retries on its own.
   */
  busyTimeoutMs?: number;
}

/** The libSQL inbox storage: an {@link InboxStorage} whose `statements()` feed `client.batch()`. */
export interface LibsqlInboxStorage extends InboxStorage<LibsqlInboxTx, InStatement> {
  /** The table name. */
  readonly table: string;
  /** The DDL `setup()` runs, for hand-written migrations. */
  readonly schemaSql: readonly string[];
}

/**
 * Returns the DDL (table and index) of the inbox, for teams that write their own
 * migrations. The same statements `inbox.setup()` runs.
 *
 * @param options `table` (default `"outbox_inbox"`).
 * @returns SQL statements, each idempotent.
 * @throws {OutboxConfigError} When `table` is not a plain identifier.
 *
 * @example
 * ```ts
 * import { libsqlInboxSchema } from "@x/outbox/libsql";
 * console.log(libsqlInboxSchema().join(";\n") + ";");
 * ```
 */
export function libsqlInboxSchema(options: { table?: string } = {}): string[] {
  return inboxCreateStatements(libsqlInboxNames(checkIdentifier(options.table ?? "outbox_inbox", "table")));
}

/**
 * Creates the libSQL storage of an inbox.
 *
 * @param client A `@libsql/client` client; `setup()` and `cleanup()` run on it.
 * @param options `table` and `busyTimeoutMs`.
 * @returns The storage to pass to `createInbox`.
 * @throws {OutboxConfigError} When `client` is not a libSQL client or `table` is not a plain identifier.
 *
 * @example In an interactive transaction
 * ```ts
 * import { createClient } from "@libsql/client";
 * import { createInbox } from "@x/outbox/inbox";
 * import { libsqlInbox } from "@x/outbox/libsql";
 *
 * const client = createClient({ url: "file:consumer.db" });
 * const inbox = createInbox({ storage: libsqlInbox(client), consumer: "billing" });
 * await inbox.setup();
 *
 * const tx = await client.transaction("write");
 * try {
 *   if (await inbox.receive(tx, "0190a5c0-…")) {
 *     await tx.execute({ sql: "UPDATE accounts SET balance = balance + ? WHERE id = ?", args: [10, "a-1"] });
 *   }
 *   await tx.commit();
 * } finally {
 *   tx.close();
 * }
 * ```
 */
export function libsqlInbox(client: Client, options: LibsqlInboxOptions = {}): LibsqlInboxStorage {
  if (!hasMethods(client, "execute", "batch")) {
    throw new OutboxConfigError("libsqlInbox needs a @libsql/client Client (createClient({ url }))", "client");
  }
  checkOptions("libsqlInbox", options, { table: identifier, busyTimeoutMs: busyTimeout });
  const table = options.table ?? "outbox_inbox";
  const busyTimeoutMs = options.busyTimeoutMs ?? 5_000;
  const n: LibsqlInboxNames = libsqlInboxNames(table);
  const schemaSql = inboxCreateStatements(n);
  const sql = { receive: inboxReceiveSql(n), guard: inboxGuardSql(n), cleanup: inboxCleanupSql(n) };
  // SQLite reports a primary-key violation as "UNIQUE constraint failed: <table>.<column>, …".
  const duplicateMessage = `UNIQUE constraint failed: ${n.bare}.consumer, ${n.bare}.id`.toLowerCase();

  const wrap = libsqlErrors(
    n.table,
    "inbox.setup()",
    (error) => isClosedTransaction(error) ? "the transaction is already closed (committed or rolled back)" : undefined,
  );
  /** Runs one of the inbox's own statements, retrying while another writer holds the lock. */
  const withBusyRetry = busyRetry(client, busyTimeoutMs, wrap);

  return {
    name: "libsql",
    table,
    schemaSql,

    async setup() {
      await withBusyRetry("create the inbox table", () => client.batch(schemaSql, "write"));
    },

    async record(tx: LibsqlInboxTx, entry: InboxEntry): Promise<boolean> {
      if (typeof tx !== "object" || tx === null || typeof (tx as Transaction).execute !== "function") {
        throw new OutboxStorageError(
          'receive needs a libSQL transaction (await client.transaction("write")) or client as its first argument',
        );
      }
      try {
        const rs = await tx.execute({ sql: sql.receive, args: [entry.consumer, entry.id, entry.receivedAt] });
        return rs.rowsAffected === 1;
      } catch (error) {
        throw wrap("record a received message", error);
      }
    },

    statements(entry: InboxEntry): InStatement[] {
      return [{ sql: sql.guard, args: [entry.consumer, entry.id, entry.receivedAt] }];
    },

    isDuplicate(error: unknown): boolean {
      return errorText(error).toLowerCase().includes(duplicateMessage);
    },

    async cleanup(request: InboxCleanupRequest): Promise<number> {
      const rs = await withBusyRetry(
        "clean up received message ids",
        () => client.execute({ sql: sql.cleanup, args: [request.before, request.limit] }),
      );
      return rs.rowsAffected;
    },
  };
}
