/**
 * Writing messages into the libSQL outbox table, shared by the libSQL adapter and the
 * Drizzle SQLite storage (which runs the same statements through a drizzle transaction).
 */

import type { InStatement, InValue } from "@libsql/client";
import { OutboxMessageError, OutboxStorageError } from "../../src/errors.ts";
import type { NewOutboxRow } from "../../src/types.ts";
import { errorCode, errorText, isClosedTransaction } from "./busy.ts";
import { INSERT_COLUMNS, insertSql, type LibsqlNames } from "./sql.ts";

// Rows per INSERT: 9 values each stays far below SQLite's 32,766 bound parameters.
const INSERT_CHUNK = 500;

/** INSERT statements for rows, in chunks, in row order. */
export function insertStatements(n: LibsqlNames, rows: readonly NewOutboxRow[]): InStatement[] {
  const statements: InStatement[] = [];
  for (let start = 0; start < rows.length; start += INSERT_CHUNK) {
    const chunk = rows.slice(start, start + INSERT_CHUNK);
    const args: InValue[] = new Array(chunk.length * INSERT_COLUMNS);
    let i = 0;
    for (const r of chunk) {
      args[i++] = r.id;
      args[i++] = r.topic;
      args[i++] = r.key;
      args[i++] = r.body;
      args[i++] = r.headers;
      args[i++] = r.deliverAt;
      args[i++] = r.availableAt;
      args[i++] = r.deliverAt;
      args[i++] = r.createdAt;
    }
    statements.push({ sql: insertSql(n, chunk.length), args });
  }
  return statements;
}

/**
 * Runs insert statements inside the caller's transaction. One statement is atomic on
 * its own; several get a savepoint, so a failure undoes all of them and nothing of the
 * caller's own work.
 */
export async function runInsertStatements(
  exec: (statement: InStatement | string) => Promise<unknown>,
  statements: readonly InStatement[],
): Promise<void> {
  if (statements.length === 1) {
    await exec(statements[0]!);
    return;
  }
  await exec("SAVEPOINT x_outbox_enqueue");
  try {
    for (const statement of statements) await exec(statement);
    await exec("RELEASE x_outbox_enqueue");
  } catch (error) {
    await exec("ROLLBACK TO x_outbox_enqueue").catch(() => {});
    await exec("RELEASE x_outbox_enqueue").catch(() => {});
    throw error;
  }
}

/** Maps an insert failure to the error a caller can act on. */
export function insertError(
  error: unknown,
  rows: readonly NewOutboxRow[],
  otherwise: (error: unknown) => Error,
): Error {
  const message = errorText(error);
  const code = errorCode(error);
  if (/UNIQUE constraint failed: .*\.id/i.test(message) || code === "SQLITE_CONSTRAINT_UNIQUE") {
    const ids = rows.length === 1 ? ` ${JSON.stringify(rows[0]!.id)}` : "";
    return new OutboxMessageError(
      `Message id${ids} is already in the outbox; ids must be unique`,
      rows.length === 1 ? "id" : "",
      {
        cause: error,
      },
    );
  }
  if (isClosedTransaction(error)) {
    return new OutboxStorageError("Could not enqueue: the transaction is already closed (committed or rolled back)", {
      cause: error,
    });
  }
  return otherwise(error);
}
