/**
 * The MySQL adapter's internal entry, for modules built on it (the Drizzle mysql
 * table): the public API of mod.ts and the parts it is made of, so that they import
 * one module rather than the adapter's files by path.
 *
 * Not an entry point of the package (jsr.json and package.json do not export it):
 * its names may change in any release.
 */

export * from "./mod.ts";
export { MAX_KEY_BYTES, type MysqlNames, mysqlNames, objectName } from "./sql.ts";
