import { storageConformance } from "./conformance/storage.ts";
import { libsqlHarness } from "./libsql_helpers.ts";

storageConformance("libsql", () => libsqlHarness());

// ------------------------------------------------------------- libSQL-specific

import assert from "node:assert/strict";
import type { Client } from "@libsql/client";
import { createOutbox, memoryPublisher, OutboxConfigError, OutboxStorageError } from "../mod.ts";
import { libsqlSchema, libsqlStorage } from "../adapters/libsql/mod.ts";
import { libsqlNames, type LibsqlQuery, relayQueries } from "../adapters/libsql/sql.ts";
import { test } from "./harness.ts";
import { openClient, tempDatabase } from "./libsql_helpers.ts";
import { rmSync } from "node:fs";

async function withDatabase(body: (client: Client, url: string) => Promise<void>) {
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  try {
    await client.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)");
    await body(client, url);
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test("libsql: statements() make messages part of a client.batch(), committed or rolled back with it", () =>
  withDatabase(async (client) => {
    const pub = memoryPublisher();
    const outbox = createOutbox({ storage: libsqlStorage(client), publisher: pub });
    await outbox.setup();
    await client.batch([
      { sql: "INSERT INTO orders (id) VALUES (?)", args: ["o-1"] },
      ...outbox.statements({ id: "m-1", topic: "orders.created", key: "o-1", payload: { id: "o-1" } }),
    ], "write");
    await assert.rejects(() =>
      client.batch([
        ...outbox.statements([{ id: "m-2", topic: "orders.created", payload: {} }]),
        { sql: "INSERT INTO orders (id) VALUES (?)", args: ["o-1"] }, // duplicate key: the batch fails
      ], "write")
    );
    await outbox.tick();
    assert.deepEqual(pub.messages.map((m) => m.id), ["m-1"]);
    assert.deepEqual(outbox.statements([]), []);
  }));

test("libsql: enqueue() on the client itself writes many messages atomically", () =>
  withDatabase(async (client) => {
    const outbox = createOutbox({ storage: libsqlStorage(client), publisher: memoryPublisher() });
    await outbox.setup();
    await outbox.enqueue(client, { id: "dup", topic: "t", payload: 1 });
    const many = Array.from({ length: 1_100 }, (_, i) => ({ id: `m${i}`, topic: "t", payload: i }));
    await assert.rejects(
      () => outbox.enqueue(client, [...many, { id: "dup", topic: "t", payload: 2 }]),
      /already in the outbox/,
    );
    assert.equal((await outbox.stats()).pending, 1);
    await outbox.enqueue(client, many);
    assert.equal((await outbox.stats()).pending, 1_101);
  }));

test("libsql: a relay recovers after another connection held the write lock (SQLITE_BUSY)", () =>
  withDatabase(async (client, url) => {
    const holder = await openClient(url);
    try {
      const pub = memoryPublisher();
      const outbox = createOutbox({
        storage: libsqlStorage(client, { busyTimeoutMs: 0 }),
        publisher: pub,
        onError: () => {},
      });
      await outbox.setup();
      await outbox.enqueue(client, { id: "m", topic: "t", payload: 1 });
      const tx = await holder.transaction("write");
      await tx.execute("INSERT INTO orders (id) VALUES ('locked')");
      await assert.rejects(
        () => outbox.tick(),
        (e: unknown) => e instanceof OutboxStorageError && /locked|BUSY/i.test(e.message),
      );
      await tx.commit();
      const report = await outbox.tick();
      assert.equal(report.published, 1);
      assert.deepEqual(pub.messages.map((m) => m.id), ["m"]);
    } finally {
      holder.close();
    }
  }));

test("libsql: table names that are not plain identifiers are rejected before any SQL runs", () =>
  withDatabase(async (client) => {
    const bad = ["outbox; DROP TABLE orders", 'x" --', "1abc", "", "a-b", "a".repeat(64), "schema.table", 42];
    for (const table of bad) {
      assert.throws(
        () => libsqlStorage(client, { table: table as string }),
        (e: unknown) => e instanceof OutboxConfigError && e.path === "table",
        `rejects ${JSON.stringify(table)}`,
      );
    }
    assert.throws(() => libsqlStorage({} as Client), OutboxConfigError);
    assert.throws(() => libsqlStorage(client, { tabel: "x" } as never), /Unknown option "tabel"/);
    const orders = await client.execute("SELECT count(*) AS n FROM orders");
    assert.equal(Number(orders.rows[0]!.n), 0);
  }));

test("libsql: two outboxes with their own tables in one database stay apart", () =>
  withDatabase(async (client) => {
    const a = memoryPublisher();
    const b = memoryPublisher();
    const first = createOutbox({ storage: libsqlStorage(client, { table: "outbox_a" }), publisher: a });
    const second = createOutbox({ storage: libsqlStorage(client, { table: "outbox_b" }), publisher: b });
    await first.setup();
    await second.setup();
    await first.enqueue(client, { id: "to-a", topic: "t", payload: 1 });
    await second.enqueue(client, { id: "to-b", topic: "t", payload: 1 });
    await first.tick();
    await second.tick();
    assert.deepEqual(a.messages.map((m) => m.id), ["to-a"]);
    assert.deepEqual(b.messages.map((m) => m.id), ["to-b"]);
  }));

test("libsql: enqueue() before setup() says to run setup()", () =>
  withDatabase(async (client) => {
    const outbox = createOutbox({
      storage: libsqlStorage(client, { table: "never_created" }),
      publisher: memoryPublisher(),
      onError: () => {},
    });
    await assert.rejects(() => outbox.enqueue(client, { topic: "t", payload: 1 }), /run outbox\.setup\(\)/);
    await assert.rejects(() => outbox.tick(), /run outbox\.setup\(\)/);
  }));

test("libsql: libsqlSchema() returns the DDL that setup() runs", () =>
  withDatabase(async (client) => {
    const statements = libsqlSchema({ table: "events_outbox" });
    assert.equal(statements.length, 7);
    for (const s of statements) await client.execute(s);
    const storage = libsqlStorage(client, { table: "events_outbox" });
    assert.deepEqual(storage.schemaSql, statements);
    await storage.setup(); // idempotent on top of a hand-run migration
    const idx = await client.execute(
      "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events_outbox' AND sql IS NOT NULL ORDER BY name",
    );
    assert.deepEqual(idx.rows.map((r) => r.name), [
      "events_outbox_claim_idx",
      "events_outbox_id_unique",
      "events_outbox_key_idx",
      "events_outbox_locked_idx",
      "events_outbox_scheduled_idx",
      "events_outbox_settled_idx",
    ]);
    assert.throws(() => libsqlSchema({ table: "bad name" }), OutboxConfigError);
  }));

test("libsql: the claim, read-back, settle and cleanup queries use the outbox indexes", () =>
  withDatabase(async (client) => {
    const storage = libsqlStorage(client);
    await storage.setup();
    const n = libsqlNames("outbox");
    const plan = async ({ sql, args }: LibsqlQuery) => {
      const rs = await client.execute({ sql: `EXPLAIN QUERY PLAN ${sql}`, args });
      return rs.rows.map((r) => String(r.detail)).join("\n");
    };
    const q = relayQueries(n);
    const [claimStatement, readBack] = q.claim({ now: 1, limit: 10, token: "t", lockedUntil: 2, clock: "relay" });
    const claim = await plan(claimStatement);
    assert.match(claim, /SCAN c USING (COVERING )?INDEX outbox_claim_idx/);
    assert.match(claim, /SEARCH b USING (COVERING )?INDEX outbox_key_idx \(key=\? AND available_at>\?\)/);
    assert.match(await plan(readBack), /USING INDEX outbox_locked_idx \(locked_by=\?\)/);
    const settlements = [
      { seq: 1, outcome: "published" as const },
      { seq: 2, outcome: "retry" as const, availableAt: 2, error: "e" },
      { seq: 3, outcome: "dead" as const, error: "e" },
      { seq: 4, outcome: "release" as const },
    ];
    const settles = q.settle({ token: "t", now: 1, deletePublished: true, settlements, clock: "relay" });
    assert.equal(settles.length, 4);
    for (const settle of settles) {
      assert.match(await plan(settle), /outbox_locked_idx \(locked_by=\?( AND rowid=\?)?\)/);
    }
    const cleanup = await plan(q.cleanup(1, 1, 10));
    assert.equal(
      cleanup.match(/USING (COVERING )?INDEX outbox_settled_idx \(status=\? AND settled_at<\?\)/g)?.length,
      2,
      "published and dead rows, each through the index",
    );
    assert.match(claim, /SCAN c USING COVERING INDEX outbox_claim_idx/, "the claim scan reads no table rows");
    const oldest = await plan(q.stats(1)[1]!);
    assert.match(oldest, /USING (COVERING )?INDEX outbox_claim_idx/);
    assert.match(oldest, /USING (COVERING )?INDEX outbox_scheduled_idx \(deliver_at/);
    assert.doesNotMatch(claim + cleanup, /SCAN outbox(?! USING)|SCAN c$/m);
  }));

test("libsql: an idle tick sends one statement batch to the database", () =>
  withDatabase(async (client) => {
    const calls: string[] = [];
    const counting = new Proxy(client, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver);
        if (prop === "execute" || prop === "batch") {
          return (...args: unknown[]) => {
            calls.push(String(prop));
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const outbox = createOutbox({ storage: libsqlStorage(counting), publisher: memoryPublisher() });
    await outbox.setup();
    await outbox.tick(); // the first tick of an instance also runs retention cleanup
    calls.length = 0;
    const report = await outbox.tick();
    assert.equal(report.claimed, 0);
    assert.deepEqual(calls, ["batch"]);
  }));

test("libsql: a payload column holding a number (written by hand) reaches the publisher as text, bytes as bytes", () =>
  withDatabase(async (client) => {
    const publisher = memoryPublisher();
    const outbox = createOutbox({ storage: libsqlStorage(client), publisher });
    await outbox.setup();
    await outbox.enqueue(client, [
      { id: "n", topic: "t", payload: 1 },
      { id: "b", topic: "t", payload: new Uint8Array([1, 2]) },
    ]);
    await client.execute("UPDATE outbox SET payload = 12345 WHERE id = 'n'");
    await outbox.tick();
    const [n, b] = publisher.messages;
    assert.equal(n!.body, "12345");
    assert.equal(n!.payload, 12345);
    assert.deepEqual([...(b!.body as Uint8Array)], [1, 2]);
  }));
