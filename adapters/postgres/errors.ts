/**
 * Postgres driver errors as the outbox, the inbox and the Drizzle storage report them
 * (see adapters/shared/errors.ts).
 */

import { errorCode, errorText, storageErrors, type WrapStorageError } from "../shared/errors.ts";
import type { PostgresNames } from "./sql.ts";

/** 42P01 undefined_table, or its text when the code is lost on the way. */
function missingTable(error: unknown): boolean {
  return errorCode(error) === "42P01" || /relation .* does not exist/i.test(errorText(error));
}

/**
 * The error wrapper of a Postgres storage: "Could not <what> in Postgres table
 * "<schema>"."<table>": …".
 *
 * @param n The table's names.
 * @param setup The call that creates the table: `"outbox.setup()"`, `"inbox.setup()"`.
 * @param explain Conditions the caller can act on, worded for its users.
 * @returns `wrap(what, error)`.
 */
export function postgresErrors(
  n: PostgresNames,
  setup: string,
  explain?: (error: unknown) => string | undefined,
): WrapStorageError {
  return storageErrors({ database: "Postgres", table: n.qualified, setup, missingTable, explain });
}
