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
