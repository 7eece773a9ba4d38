/**
 * Postgres test fixtures: the real server at 127.0.0.1:5432 (database `test`), one
 * fresh schema per test so runs never collide. No server, no pass: connection errors fail the test.
 */

import postgres from "postgres";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../adapters/postgres/mod.ts";
import type { StorageHarness } from "./conformance/storage.ts";

/** Connection URL of the test database (override with OUTBOX_TEST_PG_URL). */
export const PG_URL =
  (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.OUTBOX_TEST_PG_URL ??
    "postgres://postgres@127.0.0.1:5432/test";

let counter = 0;

/** A unique schema name for one test. */
export function uniqueSchema(prefix = "t"): string {
  return `${prefix}_${Date.now().toString(36)}_${(counter++).toString(36)}_${crypto.randomUUID().slice(0, 6)}`;
}

/** Opens a postgres.js client with notices silenced. */
export function openSql(max = 4): postgres.Sql {
  return postgres(PG_URL, { max, onnotice: () => {}, idle_timeout: 5 });
}

/** Builds the conformance harness on a fresh schema. */
export async function postgresHarness(): Promise<StorageHarness<PostgresTx>> {
  const schema = uniqueSchema();
  const clients: postgres.Sql[] = [];
  const sql = openSql();
  clients.push(sql);
  await sql.unsafe(`CREATE SCHEMA "${schema}"`);
  await sql.unsafe(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY)`);
  const storage = postgresStorage(sql as unknown as PostgresSql, { schema });
  await storage.setup();
  return {
    storage,
    async connect() {
      const other = openSql();
      clients.push(other);
      return postgresStorage(other as unknown as PostgresSql, { schema });
    },
    async commit(fn) {
      return await sql.begin((tx) => fn(tx as unknown as PostgresTx)) as Awaited<ReturnType<typeof fn>>;
    },
    async rollback(fn) {
      const marker = new Error("rollback");
      await sql.begin(async (tx) => {
        await fn(tx as unknown as PostgresTx);
        throw marker;
      }).catch((e) => {
        if (e !== marker) throw e;
      });
    },
    async insertOrder(tx, id) {
      await tx.unsafe(`INSERT INTO "${schema}".orders (id) VALUES ($1)`, [id]);
    },
    async orderCount() {
      const [row] = await sql.unsafe(`SELECT count(*)::int AS n FROM "${schema}".orders`);
      return Number(row!.n);
    },
    async close() {
      await sql.unsafe(`DROP SCHEMA "${schema}" CASCADE`).catch(() => {});
      await Promise.all(clients.map((c) => c.end({ timeout: 1 })));
    },
  };
}
