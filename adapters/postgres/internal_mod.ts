/**
 * The Postgres adapter's internal entry, for storages built on it (the Drizzle
 * storage): the public API of mod.ts and the parts its storage is made of, so that
 * they import one module rather than the adapter's files by path. nats.js's
 * `internal_mod.ts` is the model.
 *
 * Not an entry point of the package (jsr.json and package.json do not export it):
 * its names may change in any release.
 */

export * from "./mod.ts";
export { outboxErrors, postgresErrors } from "./errors.ts";
export { type Execute, insertError, type InsertQueries, insertQueries, writeRows } from "./insert.ts";
export { objectName, type PostgresNames, postgresNames } from "./sql.ts";
export { transaction, unlessGone } from "./transaction.ts";
