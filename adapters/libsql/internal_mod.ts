/**
 * The libSQL adapter's internal entry, for storages built on it (the Drizzle SQLite
 * storage): the public API of mod.ts and the parts its storage is made of, so that
 * they import one module rather than the adapter's files by path. nats.js's
 * `internal_mod.ts` is the model.
 *
 * Not an entry point of the package (jsr.json and package.json do not export it):
 * its names may change in any release.
 */

export * from "./mod.ts";
export { libsqlErrors, libsqlOutboxErrors } from "./errors.ts";
export { insertError, insertStatements, runInsertStatements } from "./insert.ts";
export { type LibsqlNames, libsqlNames } from "./sql.ts";
