/**
 * Drizzle ORM integration for @x/outbox: table definitions for `drizzle-orm/pg-core`,
 * `drizzle-orm/sqlite-core` and `drizzle-orm/mysql-core` (so drizzle-kit migrations
 * include the outbox), and storages (Postgres, SQLite) that take a drizzle database, so
 * `outbox.enqueue(tx, …)` works inside `db.transaction(async (tx) => …)`.
 *
 * @example Postgres
 * ```ts
 * import postgres from "postgres";
 * import { drizzle } from "drizzle-orm/postgres-js";
 * import { createOutbox } from "@x/outbox";
 * import { drizzlePgStorage } from "@x/outbox/drizzle";
 *
 * const db = drizzle(postgres(url));
 * const outbox = createOutbox({ storage: drizzlePgStorage(db), publisher });
 * await db.transaction(async (tx) => {
 *   await tx.insert(orders).values({ id: "o-1" });
 *   await outbox.enqueue(tx, { topic: "orders.created", key: "o-1", payload: { id: "o-1" } });
 * });
 * ```
 *
 * @module
 */

export { drizzlePgStorage, pgOutboxTable } from "./pg.ts";
export type { DrizzlePgDatabase, DrizzlePgTransaction, PgOutboxTableOptions } from "./pg.ts";
export { drizzleSqliteStorage, sqliteOutboxTable } from "./sqlite.ts";
export { mysqlOutboxTable } from "./mysql.ts";
export type { MysqlOutboxColumns, MysqlOutboxTable, MysqlOutboxTableOptions } from "./mysql.ts";
export type { DrizzleSqliteDatabase, DrizzleSqliteTransaction } from "./sqlite.ts";
