/**
 * The storages the relay benches drain a backlog from, made the same way for every
 * bench: Postgres in a schema of its own (a writer client that fills it, and the relay's
 * own client as an app would make it, named so its backends can be found), embedded
 * libSQL in a temp file, and MariaDB / MySQL in a table of its own (a writer pool and
 * the relay's pool, mysql2 defaults).
 *
 * @module
 */

import mysql from "mysql2/promise";
import postgres from "postgres";
import { createOutbox, type OutboxStorage } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { mysqlStorage } from "../adapters/mysql/mod.ts";
import { type PostgresSql, postgresStorage } from "../adapters/postgres/mod.ts";
import { backlogMessages, env, fillLibsqlBacklog, fillPostgresBacklog, libsql, PG_URL } from "./lib.ts";

/** The MariaDB / MySQL the benches use (OUTBOX_BENCH_MYSQL_URL). */
export const MYSQL_URL = env("OUTBOX_BENCH_MYSQL_URL") ?? "mysql://root@127.0.0.1:3306/test";

/** A stored message: id, key and the payload as stored (JSON text, or bytes). */
export interface StoredRow {
  id: string;
  key: string | null;
  body: string | Uint8Array;
}

/** A storage with a backlog to drain. */
export interface BenchStore {
  name: "pg" | "libsql" | "mysql";
  /** The storage as the relay sees it (its own client for Postgres). */
  relayStorage: OutboxStorage<unknown, unknown>;
  fill(messages: number, keys: number, topic: string): Promise<void>;
  /** Stored rows in seq order, as the driver returns them. */
  rows(): Promise<StoredRow[]>;
  count(): Promise<number>;
  /** Backend pids of the relay's Postgres connections (none for libSQL and MySQL). */
  ownPids(): Promise<number[]>;
  close(): Promise<void>;
}

/**
 * A Postgres store in a fresh schema `<prefix>_<time>`; the relay's connections carry
 * `application_name` = `relayApp`.
 */
export async function postgresStore(prefix: string, relayApp: string): Promise<BenchStore> {
  const schema = `${prefix}_${Date.now().toString(36)}`;
  const writerSql = postgres(PG_URL, { max: 2, onnotice: () => {} });
  const writerStorage = postgresStorage(writerSql as unknown as PostgresSql, { schema });
  await writerStorage.setup();
  const writer = createOutbox({ storage: writerStorage, publisher: () => {} });
  // The relay's client as an app would make it: postgres.js defaults, named so its backends can be found.
  const relaySql = postgres(PG_URL, { onnotice: () => {}, connection: { application_name: relayApp } });
  return {
    name: "pg",
    relayStorage: postgresStorage(relaySql as unknown as PostgresSql, { schema }) as OutboxStorage<unknown, unknown>,
    fill: (messages, keys, topic) => fillPostgresBacklog(writerSql, schema, writer, { messages, keys, topic }),
    async rows() {
      const rows = await writerSql.unsafe(
        `SELECT id, key, payload::text AS payload FROM "${schema}".outbox ORDER BY seq`,
      );
      return rows.map((r) => ({
        id: String(r.id),
        key: r.key === null ? null : String(r.key),
        body: String(r.payload),
      }));
    },
    async count() {
      return Number((await writerSql.unsafe(`SELECT count(*)::int AS n FROM "${schema}".outbox`))[0]!.n);
    },
    async ownPids() {
      const rows = await writerSql.unsafe(`SELECT pid FROM pg_stat_activity WHERE application_name = $1`, [relayApp]);
      return rows.map((r) => Number(r.pid));
    },
    async close() {
      await relaySql.end({ timeout: 1 });
      await writerSql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
      await writerSql.end({ timeout: 1 });
    },
  };
}

/** An embedded libSQL store in a temp file (WAL). */
export async function libsqlStore(): Promise<BenchStore> {
  const db = await libsql();
  const client = db.client;
  const storage = libsqlStorage(client);
  await storage.setup();
  const writer = createOutbox({ storage, publisher: () => {} });
  return {
    name: "libsql",
    relayStorage: storage as OutboxStorage<unknown, unknown>,
    fill: (messages, keys, topic) => fillLibsqlBacklog(client, writer, { messages, keys, topic }),
    async rows() {
      const rs = await client.execute("SELECT id, key, payload FROM outbox ORDER BY seq");
      return rs.rows.map((r) => {
        const v = r.payload as unknown;
        const body = typeof v === "string"
          ? v
          : v instanceof ArrayBuffer
          ? new Uint8Array(v)
          : v instanceof Uint8Array
          ? v
          : null;
        if (body === null) throw new Error(`unexpected payload type ${typeof v}`);
        return { id: String(r.id), key: r.key === null ? null : String(r.key), body };
      });
    },
    async count() {
      return Number((await client.execute("SELECT count(*) AS n FROM outbox")).rows[0]!.n);
    },
    ownPids: async () => [],
    async close() {
      db.close();
    },
  };
}

/** A MariaDB / MySQL store in a fresh table `<prefix>_<time>`; the relay has a pool of its own (mysql2 defaults). */
export async function mysqlStore(prefix: string): Promise<BenchStore> {
  const table = `${prefix}_${Date.now().toString(36)}`;
  const writerPool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 2 });
  const writerStorage = mysqlStorage(writerPool, { table });
  await writerStorage.setup();
  const writer = createOutbox({ storage: writerStorage, publisher: () => {} });
  const relayPool = mysql.createPool({ uri: MYSQL_URL });
  return {
    name: "mysql",
    relayStorage: mysqlStorage(relayPool, { table }) as OutboxStorage<unknown, unknown>,
    async fill(messages, keys, topic) {
      await writerPool.query(`TRUNCATE TABLE \`${table}\``);
      for (let s = 0; s < messages; s += 1_000) {
        const conn = await writerPool.getConnection();
        try {
          await conn.beginTransaction();
          await writer.enqueue(conn, backlogMessages(s, Math.min(1_000, messages - s), keys, topic));
          await conn.commit();
        } finally {
          conn.release();
        }
      }
      await writerPool.query(`ANALYZE TABLE \`${table}\``);
    },
    async rows() {
      const [rows] = await writerPool.query(`SELECT id, \`key\`, payload FROM \`${table}\` ORDER BY seq`) as [
        { id: Uint8Array; key: Uint8Array | null; payload: string }[],
        unknown,
      ];
      const text = new TextDecoder();
      return rows.map((r) => ({
        id: text.decode(r.id),
        key: r.key === null ? null : text.decode(r.key),
        body: r.payload,
      }));
    },
    async count() {
      const [rows] = await writerPool.query(`SELECT COUNT(*) AS n FROM \`${table}\``) as [{ n: number }[], unknown];
      return Number(rows[0]!.n);
    },
    ownPids: async () => [],
    async close() {
      await relayPool.end();
      await writerPool.query(`DROP TABLE IF EXISTS \`${table}\`, \`${table}_schema\``).catch(() => {});
      await writerPool.end();
    },
  };
}
