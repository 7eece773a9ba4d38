/**
 * MySQL / MariaDB driver errors as the outbox reports them (see adapters/shared/errors.ts).
 */

import { errorCode, storageErrors, type WrapStorageError } from "../shared/errors.ts";

/** mysql2's `errno` of an error, or of its cause. */
export function errno(error: unknown): number {
  const e = error as { errno?: unknown; cause?: { errno?: unknown } };
  return typeof e?.errno === "number" ? e.errno : typeof e?.cause?.errno === "number" ? e.cause.errno : 0;
}

/** ER_NO_SUCH_TABLE (1146). */
function missingTable(error: unknown): boolean {
  return errorCode(error) === "ER_NO_SUCH_TABLE" || errno(error) === 1146;
}

/** ER_LOCK_DEADLOCK (1213): InnoDB rolled back the whole transaction. */
export function isDeadlock(error: unknown): boolean {
  return errorCode(error) === "ER_LOCK_DEADLOCK" || errno(error) === 1213;
}

/** ER_DUP_ENTRY (1062). */
export function isDuplicate(error: unknown): boolean {
  return errorCode(error) === "ER_DUP_ENTRY" || errno(error) === 1062;
}

/**
 * The error wrapper of the outbox table: "Could not <what> in MySQL table `<table>`: …",
 * and "run outbox.setup() first" for a missing table.
 *
 * @param table The quoted table name.
 * @returns `wrap(what, error)`.
 */
export function mysqlOutboxErrors(table: string): WrapStorageError {
  return storageErrors({
    database: "MySQL",
    table,
    setup: "outbox.setup()",
    missingTable,
    explain: (error) =>
      isDeadlock(error)
        ? "a deadlock rolled the transaction back (InnoDB undoes the whole transaction); retry it"
        : undefined,
  });
}
