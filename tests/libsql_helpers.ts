/**
 * libSQL test fixtures: a fresh database file per test, in the system temp folder; and,
 * for libSQL over HTTP, a fresh sqld (libsql-server) per test (tests/sqld_helpers.mjs).
 */

import { type Client, createClient } from "@libsql/client";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { libsqlStorage, type LibsqlTx } from "../adapters/libsql/mod.ts";
import type { StorageHarness } from "./conformance/storage.ts";
import { type Sqld, startSqld } from "./sqld_helpers.mjs";

/** A temp folder and a `file:` URL inside it. */
export function tempDatabase(): { url: string; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-"));
  return { url: `file:${join(dir, "test.db")}`, dir };
}

/** Opens a client in WAL mode, as a multi-process deployment would. */
export async function openClient(url: string): Promise<Client> {
  const client = createClient({ url });
  await client.execute("PRAGMA journal_mode = WAL");
  return client;
}

/** Builds the conformance harness on a fresh file database. */
export async function libsqlHarness(table = "outbox"): Promise<StorageHarness<LibsqlTx>> {
  const { url, dir } = tempDatabase();
  return await clientHarness(() => openClient(url), table, () => rmSync(dir, { recursive: true, force: true }));
}

/**
 * Builds the conformance harness on libSQL over HTTP: a private sqld with a fresh
 * database for each harness, and `@libsql/client` clients on its `http://` URL (Hrana
 * over HTTP, the protocol Turso serves). `connect()` opens another HTTP client, as
 * another relay process would. Transactions are the client's interactive ones
 * (`client.transaction("write")`, a Hrana stream held open on the server).
 */
export async function libsqlRemoteHarness(table = "outbox"): Promise<StorageHarness<LibsqlTx> & { sqld: Sqld }> {
  const sqld = await startSqld();
  const harness = await clientHarness(() => Promise.resolve(createClient({ url: sqld.url })), table, () => sqld.stop());
  return { ...harness, sqld };
}

/**
 * The harness over clients of one database: `open` makes a client (the test's, and one
 * per `connect()`, as another relay process would), `dispose` runs once they are closed.
 */
async function clientHarness(
  open: () => Promise<Client>,
  table: string,
  dispose: () => void | Promise<void>,
): Promise<StorageHarness<LibsqlTx>> {
  const clients: Client[] = [];
  const closeAll = async () => {
    for (const c of clients) c.close();
    await dispose();
  };
  let client: Client;
  let storage: ReturnType<typeof libsqlStorage>;
  try {
    client = await open();
    clients.push(client);
    await client.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)");
    storage = libsqlStorage(client, { table });
    await storage.setup();
  } catch (error) {
    await closeAll();
    throw error;
  }
  return {
    storage,
    async connect() {
      const other = await open();
      clients.push(other);
      return libsqlStorage(other, { table });
    },
    async commit(fn) {
      const tx = await client.transaction("write");
      try {
        const result = await fn(tx);
        await tx.commit();
        return result;
      } catch (error) {
        await tx.rollback();
        throw error;
      } finally {
        tx.close();
      }
    },
    async rollback(fn) {
      const tx = await client.transaction("write");
      try {
        await fn(tx);
      } finally {
        await tx.rollback();
        tx.close();
      }
    },
    async insertOrder(tx, id) {
      await tx.execute({ sql: "INSERT INTO orders (id) VALUES (?)", args: [id] });
    },
    async orderCount() {
      const rs = await client.execute("SELECT count(*) AS n FROM orders");
      return Number(rs.rows[0]!.n);
    },
    async closedTransaction() {
      const tx = await client.transaction("write");
      await tx.commit();
      return tx;
    },
    close: closeAll,
  };
}
