import { storageConformance } from "./conformance/storage.ts";
import { libsqlHarness } from "./libsql_helpers.ts";

storageConformance("libsql", () => libsqlHarness());

// ------------------------------------------------------------- libSQL-specific

import assert from "node:assert/strict";
import type { Client, InValue } from "@libsql/client";
import { createOutbox, memoryPublisher, OutboxConfigError, OutboxMessageError, OutboxStorageError } from "../mod.ts";
import { libsqlSchema, libsqlSchemaVersion, libsqlStorage } from "../adapters/libsql/mod.ts";
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

test("libsql: libsqlSchema() returns the DDL of a fresh table, version 2 or with fanOut 3, as setup() creates it", () =>
  withDatabase(async (client) => {
    const statements = libsqlSchema({ table: "events_outbox" });
    assert.equal(statements.length, 11);
    for (const s of statements) await client.execute(s);
    const storage = libsqlStorage(client, { table: "events_outbox" });
    assert.deepEqual(storage.schemaSql, statements);
    await storage.setup(); // idempotent on top of a hand-run migration
    const indexes = async (table: string) =>
      (await client.execute({
        sql: "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name",
        args: [table],
      })).rows.map((r) => String(r.name).slice(table.length + 1));
    const expected = ["claim_dest_idx", "id_unique", "key_dest_idx", "locked_idx", "scheduled_idx", "settled_idx"];
    assert.deepEqual(await indexes("events_outbox"), expected);
    assert.equal(await libsqlSchemaVersion(client, { table: "events_outbox" }), 2);
    for (const s of libsqlSchema({ table: "fan", fanOut: true })) await client.execute(s);
    assert.deepEqual(await indexes("fan"), expected.map((i) => i === "id_unique" ? "id_dest_unique" : i).sort());
    assert.equal(await libsqlSchemaVersion(client, { table: "fan" }), 3);
    assert.equal(await libsqlSchemaVersion(client, { table: "none" }), null);
    assert.throws(() => libsqlSchema({ table: "bad name" }), OutboxConfigError);
    await assert.rejects(() => libsqlSchemaVersion(client, { table: "bad name" }), OutboxConfigError);
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
    assert.match(claim, /SEARCH c USING COVERING INDEX outbox_claim_dest_idx \(destination=\?\)/);
    assert.match(
      claim,
      /SEARCH b USING COVERING INDEX outbox_key_dest_idx \(destination=\? AND key=\? AND available_at>\?\)/,
    );
    assert.doesNotMatch(claim, /TEMP B-TREE/, "the index gives seq order within the destination");
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
    const oldest = await plan(q.stats(1)[1]!);
    assert.match(
      oldest,
      /SEARCH outbox USING COVERING INDEX outbox_claim_dest_idx \(destination>\?\)/,
      "next destination",
    );
    assert.match(oldest, /SEARCH outbox USING INDEX outbox_claim_dest_idx \(destination=\?\)/, "its oldest row");
    assert.match(oldest, /USING (COVERING )?INDEX outbox_scheduled_idx \(deliver_at/);
    assert.doesNotMatch(claim + cleanup + oldest, /SCAN outbox(?! USING)|SCAN [cb]$/m);
  }));

test("libsql: with thousands of rows for two destinations, a claim reads one destination through its indexes", () =>
  withDatabase(async (client) => {
    const storage = libsqlStorage(client);
    await storage.setup({ fanOut: true });
    const now = Date.now();
    const rows = Array.from({ length: 3_000 }, (_, i) =>
      ["a", "b"].map((destination) => ({
        id: `m${i}`,
        topic: "t",
        key: i % 3 === 0 ? null : `k${i % 40}`,
        body: "{}",
        headers: null,
        availableAt: now,
        deliverAt: null,
        createdAt: now,
        destination,
      }))).flat();
    await storage.insert(client, rows);
    // Destination a: the first 1,000 published; k1's first row failed and waits for its retry.
    await client.execute(
      "UPDATE outbox SET status = 'published', available_at = NULL, settled_at = 1 WHERE destination = 'a' AND seq <= 2000",
    );
    await client.execute(
      "UPDATE outbox SET available_at = available_at + 3600000 WHERE id = 'm1001' AND destination = 'a'",
    );
    const q = relayQueries(libsqlNames("outbox"));
    for (const analyzed of [false, true]) {
      if (analyzed) await client.execute("ANALYZE");
      for (const destination of ["a", "b"]) {
        const [claim] = q.claim({ now, limit: 100, token: "t", lockedUntil: now + 1, clock: "relay", destination });
        const plan = (await client.execute({ sql: `EXPLAIN QUERY PLAN ${claim.sql}`, args: claim.args })).rows
          .map((r) => String(r.detail)).join("\n");
        assert.match(plan, /SEARCH c USING COVERING INDEX outbox_claim_dest_idx \(destination=\?\)/, plan);
        assert.match(plan, /SEARCH b USING COVERING INDEX outbox_key_dest_idx \(destination=\? AND key=\?/, plan);
      }
    }
    const claimed = await storage.claim({ now, limit: 50, token: "a1", lockedUntil: now + 1_000, destination: "a" });
    assert.equal(claimed.length, 50);
    assert.ok(claimed.every((r) => Number(r.id.slice(1)) >= 1_000), "a's published rows are not claimable");
    assert.ok(!claimed.some((r) => r.key === "k1" && Number(r.id.slice(1)) > 1_001), "k1 waits behind m1001 on a");
    const onB = await storage.claim({ now, limit: 3_000, token: "b1", lockedUntil: now + 1_000, destination: "b" });
    assert.equal(onB.length, 3_000, "b's k1 does not wait for a's failed row");
    assert.deepEqual(onB.map((r) => r.seq), [...onB.map((r) => r.seq)].sort((x, y) => x - y));
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

test("libsql: a fan-out enqueue in several INSERT statements keeps each message's rows in one; the one publisher's stay plain", () =>
  withDatabase(async (client) => {
    const outbox = createOutbox({
      storage: libsqlStorage(client),
      publishers: { a: memoryPublisher(), b: memoryPublisher(), c: memoryPublisher() },
    });
    await outbox.setup();
    const messages = Array.from({ length: 200 }, (_, i) => ({ id: `m${i}`, topic: "t", payload: i }));
    // 600 rows; row 500 is m166's row for c, so the first statement takes 501 rows.
    const statements = outbox.statements(messages) as { sql: string; args: InValue[] }[];
    assert.deepEqual(statements.map((s) => s.args.length / 11), [501, 99]);
    assert.ok(statements.every((s) => s.sql.includes("EXISTS")), "fan-out rows check the id");
    await client.batch(statements, "write");
    assert.equal((await outbox.inspect()).length, 600);
    // In a transaction (savepoint path) and on the client (batch path): every row or none.
    const more = Array.from({ length: 200 }, (_, i) => ({ id: `n${i}`, topic: "t", payload: i }));
    const tx = await client.transaction("write");
    try {
      await outbox.enqueue(tx, more);
      await assert.rejects(() => outbox.enqueue(tx, [...more.slice(0, 199), { id: "m0", topic: "t", payload: 0 }]));
      await tx.commit();
    } finally {
      tx.close();
    }
    await assert.rejects(
      () => outbox.enqueue(client, [{ id: "x", topic: "t", payload: 0 }, ...more.slice(1)]),
      OutboxMessageError,
    );
    assert.equal((await outbox.inspect()).length, 1_200);

    const single = createOutbox({ storage: libsqlStorage(client), publisher: memoryPublisher() });
    const plain = single.statements(Array.from({ length: 600 }, (_, i) => ({ id: `p${i}`, topic: "t", payload: i })));
    assert.deepEqual(plain.map((s) => (s as { args: unknown[] }).args.length / 9), [500, 100]);
    assert.ok(plain.every((s) => !(s as { sql: string }).sql.includes("EXISTS")), "no check on the hot path");
  }));

test("libsql: inspect() refuses a destination that is not a string", () =>
  withDatabase(async (client) => {
    const storage = libsqlStorage(client);
    await storage.setup();
    await assert.rejects(
      () => storage.inspect!({ destination: 1 as unknown as string }),
      (e: unknown) => e instanceof OutboxConfigError && e.path === "destination",
    );
  }));
