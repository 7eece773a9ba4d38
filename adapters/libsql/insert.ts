/**
 * Writing messages into the libSQL outbox table, shared by the libSQL adapter and the
 * Drizzle SQLite storage (which runs the same statements through a drizzle transaction).
 */

import type { InStatement, InValue } from "@libsql/client";
import { OutboxConfigError, OutboxMessageError, OutboxStorageError } from "../../src/errors.ts";
import type { NewOutboxRow } from "../../src/types.ts";
import { errorCode, errorText, isClosedTransaction } from "./busy.ts";
import { INSERT_COLUMNS, insertSql, type LibsqlNames } from "./sql.ts";

// Rows per INSERT: 9 values each (11 checked) stays far below SQLite's 32,766 bound parameters.
const INSERT_CHUNK = 500;

/**
 * INSERT statements for rows, in chunks, in row order. A chunk ends after a run of
 * rows with one id (a fan-out message's rows), never inside it: insertSql's duplicate
 * check must not see a message's own rows from an earlier statement.
 */
export function insertStatements(n: LibsqlNames, rows: readonly NewOutboxRow[]): InStatement[] {
  const statements: InStatement[] = [];
  let start = 0;
  while (start < rows.length) {
    let end = Math.min(start + INSERT_CHUNK, rows.length);
    while (end < rows.length && rows[end]!.id === rows[end - 1]!.id) end++;
    let checked = false;
    for (let i = start; i < end && !checked; i++) checked = !!rows[i]!.destination;
    const args: InValue[] = new Array((end - start) * (INSERT_COLUMNS + (checked ? 2 : 0)));
    let i = 0;
    for (let r = start; r < end; r++) {
      const row = rows[r]!;
      if (checked) args[i++] = row.id;
      args[i++] = row.id;
      args[i++] = row.topic;
      args[i++] = row.key;
      args[i++] = row.body;
      args[i++] = row.headers;
      if (checked) args[i++] = row.destination ?? "";
      args[i++] = row.deliverAt;
      args[i++] = row.availableAt;
      args[i++] = row.deliverAt;
      args[i++] = row.createdAt;
    }
    statements.push({ sql: insertSql(n, end - start, checked), args });
    start = end;
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

/** Whether rows hold one id for two destinations: a fan-out message. */
function fansOut(rows: readonly NewOutboxRow[]): boolean {
  const seen = new Map<string, string>();
  for (const r of rows) {
    const destination = r.destination ?? "";
    const other = seen.get(r.id);
    if (other !== undefined && other !== destination) return true;
    seen.set(r.id, destination);
  }
  return false;
}

/**
 * Maps an insert failure to the error a caller can act on. On a table of schema
 * version 2 the id alone is unique, and SQLite names only `<table>.id`; from version 3
 * it names `<table>.id, <table>.destination`. A fan-out message's rows failing the
 * former means the table is not ready for fan-out, not that the id was used before.
 * insertSql's check of a fan-out row fails NOT NULL on `id` for an id already there.
 */
export function insertError(
  error: unknown,
  rows: readonly NewOutboxRow[],
  otherwise: (error: unknown) => Error,
): Error {
  const message = errorText(error);
  const code = errorCode(error);
  const unique = /UNIQUE constraint failed: \S*\.id\b/i.test(message);
  if (unique && !/UNIQUE constraint failed: \S*\.id, \S*\.destination\b/i.test(message) && fansOut(rows)) {
    return new OutboxConfigError(
      "Could not enqueue a message for several destinations: the outbox table is at schema version 2, where a " +
        "message id has one row; run setup() of an outbox with publishers, or `outbox setup --fan-out`, to upgrade " +
        "the table to schema version 3",
      "",
      { cause: error },
    );
  }
  if (
    unique || code === "SQLITE_CONSTRAINT_UNIQUE" || /NOT NULL constraint failed: \S*\.id\b/i.test(message)
  ) {
    // One message (a fan-out message has a row per destination): its id can be named.
    const one = rows.every((r) => r.id === rows[0]!.id);
    return new OutboxMessageError(
      `Message id${one ? ` ${JSON.stringify(rows[0]!.id)}` : ""} is already in the outbox; ids must be unique`,
      one ? "id" : "",
      { cause: error },
    );
  }
  if (isClosedTransaction(error)) {
    return new OutboxStorageError("Could not enqueue: the transaction is already closed (committed or rolled back)", {
      cause: error,
    });
  }
  return otherwise(error);
}
