/**
 * libSQL driver errors as the outbox, the inbox and the Drizzle storage report them
 * (see adapters/shared/errors.ts).
 */

import { errorText, storageErrors, type WrapStorageError } from "../shared/errors.ts";

/** SQLite says "no such table: <name>"; drizzle puts it in its error's cause. */
function missingTable(error: unknown): boolean {
  return /no such table/i.test(errorText(error));
}

/**
 * The error wrapper of a libSQL storage: "Could not <what> in libSQL table "<table>": …".
 *
 * @param table The quoted table name.
 * @param setup The call that creates the table: `"outbox.setup()"`, `"inbox.setup()"`.
 * @param explain Conditions the caller can act on, worded for its users.
 * @returns `wrap(what, error)`.
 */
export function libsqlErrors(
  table: string,
  setup: string,
  explain?: (error: unknown) => string | undefined,
): WrapStorageError {
  return storageErrors({ database: "libSQL", table, setup, missingTable, explain });
}

/**
 * The error wrapper of the outbox table (the libSQL and Drizzle SQLite storages): a
 * statement that names `destination` on a table of schema version 1 (a process
 * upgraded before anyone ran setup()) says to run setup().
 *
 * @param table The quoted table name.
 * @returns `wrap(what, error)`.
 */
export function libsqlOutboxErrors(table: string): WrapStorageError {
  return libsqlErrors(
    table,
    "outbox.setup()",
    (error) =>
      /no such column: \S*destination|has no column named destination/i.test(errorText(error))
        ? `table ${table} is at schema version 1 (it has no destination column); run outbox.setup() to upgrade it`
        : undefined,
  );
}
