/**
 * Postgres driver errors as the outbox, the inbox and the Drizzle storage report them
 * (see adapters/shared/errors.ts).
 */

import { errorCode, errorText, storageErrors, type WrapStorageError } from "../shared/errors.ts";
import type { PostgresNames } from "./sql.ts";

/**
 * 42P01 undefined_table, or its text when the code is lost on the way (not a missing
 * column: `column "destination" of relation "outbox" does not exist`).
 */
function missingTable(error: unknown): boolean {
  const code = errorCode(error);
  return code === "42P01" || (code === "" && /(?<!column .* of )relation .* does not exist/i.test(errorText(error)));
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

/**
 * The outbox's error wrapper: {@link postgresErrors} for `outbox.setup()`, which also
 * says that a table without a `destination` column (42703 undefined_column: schema
 * version 1) needs `setup()` to upgrade it before this version can write or claim.
 */
export function outboxErrors(n: PostgresNames): WrapStorageError {
  return postgresErrors(
    n,
    "outbox.setup()",
    (error) =>
      errorCode(error) === "42703" && /destination/.test(errorText(error))
        ? `table ${n.qualified} has no destination column (schema version 1); run outbox.setup() to upgrade it`
        : undefined,
  );
}
