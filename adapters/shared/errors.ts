/**
 * Driver errors as a storage adapter reports them, the same way in every adapter
 * (unstorage's `createError(driver, message)` is the model): an OutboxStorageError
 * that says what was attempted, on which database and table, and why, with the driver's
 * error as `cause`. A missing table says which `setup()` creates it.
 */

import { OutboxMessageError, OutboxStorageError } from "../../src/errors.ts";

/**
 * The driver's error code (`42P01`, `SQLITE_BUSY`, `TRANSACTION_CLOSED`, …), from the
 * error or, when a wrapper threw (drizzle's "Failed query"), from its cause.
 *
 * @param error Anything caught.
 * @returns The code, or `""` when there is none.
 */
export function errorCode(error: unknown): string {
  const e = error as { code?: unknown; cause?: { code?: unknown } };
  return typeof e?.code === "string" ? e.code : typeof e?.cause?.code === "string" ? e.cause.code : "";
}

/**
 * The error's message, and its cause's when that adds something: drizzle wraps a
 * driver error in "Failed query: …", and the reason is in the cause.
 *
 * @param error Anything caught.
 * @returns Text to match conditions against and to quote in messages.
 */
export function errorText(error: unknown): string {
  const own = error instanceof Error ? error.message : String(error);
  const cause = (error as { cause?: unknown })?.cause;
  return cause instanceof Error && !own.includes(cause.message) ? `${own}: ${cause.message}` : own;
}

/** Where a storage keeps its rows, and how its driver says the table is missing. */
export interface StorageErrorSource {
  /** The database as messages name it: `"Postgres"`, `"libSQL"`. */
  readonly database: string;
  /** The table as messages show it: quoted, schema-qualified where there is a schema. */
  readonly table: string;
  /** The call that creates the table: `"outbox.setup()"`, `"inbox.setup()"`. */
  readonly setup: string;
  /** Whether a driver error means that the table does not exist. */
  readonly missingTable: (error: unknown) => boolean;
  /**
   * The reason for a failure the caller can act on (an aborted or closed transaction),
   * in place of the driver's text; `undefined` for any other error.
   */
  readonly explain?: (error: unknown) => string | undefined;
}

/** Turns what a driver threw while the storage was doing `what` into the error to throw. */
export type WrapStorageError = (what: string, error: unknown) => Error;

/**
 * Makes the function a storage wraps its driver's errors with. The errors read
 * "Could not <what> in <database> table <table>: <driver text>", or
 * "Could not <what>: table <table> does not exist; run <setup> first", or
 * "Could not <what>: <explain(error)>". Our own OutboxStorageError and
 * OutboxMessageError pass through unchanged.
 *
 * @param source The database, table, setup call and driver conditions.
 * @returns `wrap(what, error)`, `what` being a verb phrase: `"claim messages"`.
 *
 * @example
 * ```ts
 * const wrap = storageErrors({ database: "libSQL", table: `"outbox"`, setup: "outbox.setup()", missingTable });
 * throw wrap("claim messages", error); // Could not claim messages in libSQL table "outbox": …
 * ```
 */
export function storageErrors(source: StorageErrorSource): WrapStorageError {
  return (what, error) => {
    if (error instanceof OutboxStorageError || error instanceof OutboxMessageError) return error;
    const reason = source.missingTable(error)
      ? `table ${source.table} does not exist; run ${source.setup} first`
      : source.explain?.(error);
    const message = reason === undefined
      ? `Could not ${what} in ${source.database} table ${source.table}: ${errorText(error)}`
      : `Could not ${what}: ${reason}`;
    return new OutboxStorageError(message, { cause: error });
  };
}
