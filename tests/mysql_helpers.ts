/**
 * MySQL / MariaDB test fixtures: the real server at 127.0.0.1:3306 (database `test`,
 * user root), one fresh table per harness so runs never collide. No server, no pass:
 * connection errors fail the test.
 */

import mysql from "mysql2/promise";
import { mysqlStorage, type MysqlTx } from "../adapters/mysql/mod.ts";
import type { StorageHarness } from "./conformance/storage.ts";

/** Connection URL of the test database (override with OUTBOX_TEST_MYSQL_URL). */
export const MYSQL_URL =
  (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.OUTBOX_TEST_MYSQL_URL ??
    "mysql://root@127.0.0.1:3306/test";

let counter = 0;

/** A unique table name for one test. */
export function uniqueTable(prefix = "t"): string {
  return `${prefix}_${Date.now().toString(36)}_${(counter++).toString(36)}_${crypto.randomUUID().slice(0, 6)}`;
}

/** Opens a mysql2/promise pool on the test database. */
export function openPool(connectionLimit = 4): mysql.Pool {
  return mysql.createPool({ uri: MYSQL_URL, connectionLimit, idleTimeout: 5_000 });
}

/** Drops the outbox table and its version table. */
export async function dropTables(pool: mysql.Pool, table: string): Promise<void> {
  await pool.query(`DROP TABLE IF EXISTS \`${table}\`, \`${table}_schema\`, \`${table}_orders\``);
}

/** Runs `fn` in a transaction on a connection of `pool`: commits, or rolls back and rethrows. */
export async function inTransaction<T>(pool: mysql.Pool, fn: (conn: mysql.PoolConnection) => Promise<T>): Promise<T> {
  const conn = await pool.getConnection();
  try {
    await conn.beginTransaction();
    const result = await fn(conn);
    await conn.commit();
    return result;
  } catch (error) {
    await conn.rollback().catch(() => {});
    throw error;
  } finally {
    conn.release();
  }
}

/** Builds the conformance harness on a fresh table. */
export async function mysqlHarness(): Promise<StorageHarness<MysqlTx>> {
  const table = uniqueTable();
  const orders = `\`${table}_orders\``;
  const pools: mysql.Pool[] = [];
  const pool = openPool();
  pools.push(pool);
  const closeAll = () => Promise.all(pools.map((p) => p.end()));
  let storage: ReturnType<typeof mysqlStorage>;
  try {
    await pool.query(`CREATE TABLE ${orders} (id VARCHAR(255) PRIMARY KEY) ENGINE=InnoDB`);
    storage = mysqlStorage(pool, { table });
    await storage.setup();
  } catch (error) {
    await dropTables(pool, table).catch(() => {});
    await closeAll();
    throw error;
  }
  return {
    storage,
    async connect() {
      const other = openPool();
      pools.push(other);
      return mysqlStorage(other, { table });
    },
    commit: (fn) => inTransaction(pool, fn),
    async rollback(fn) {
      const conn = await pool.getConnection();
      try {
        await conn.beginTransaction();
        await fn(conn);
      } finally {
        await conn.rollback().catch(() => {});
        conn.release();
      }
    },
    async insertOrder(tx, id) {
      await tx.query({ sql: `INSERT INTO ${orders} (id) VALUES (?)`, values: [id] });
    },
    async orderCount() {
      const [rows] = await pool.query(`SELECT COUNT(*) AS n FROM ${orders}`);
      return Number((rows as { n: number }[])[0]!.n);
    },
    async close() {
      await dropTables(pool, table).catch(() => {});
      await closeAll();
    },
  };
}
