import { storageConformance } from "./conformance/storage.ts";
import { mysqlHarness } from "./mysql_helpers.ts";

storageConformance("mariadb", () => mysqlHarness());

// ------------------------------------------------------------- MySQL-specific

import assert from "node:assert/strict";
import mysql from "mysql2/promise";
import { createOutbox, memoryPublisher, OutboxConfigError, OutboxMessageError, OutboxStorageError } from "../mod.ts";
import { mysqlSchema, mysqlStorage, type MysqlTx } from "../adapters/mysql/mod.ts";
import { test } from "./harness.ts";
import { dropTables, inTransaction, MYSQL_URL, openPool, uniqueTable } from "./mysql_helpers.ts";

async function withTable(body: (pool: mysql.Pool, table: string) => Promise<void>): Promise<void> {
  const pool = openPool();
  const table = uniqueTable("spec");
  try {
    await body(pool, table);
  } finally {
    await dropTables(pool, table).catch(() => {});
    await pool.end();
  }
}

test("mariadb: enqueue refuses a pool, a callback-style connection and anything else, with OutboxConfigError at tx", () =>
  withTable(async (pool, table) => {
    const outbox = createOutbox({ storage: mysqlStorage(pool, { table }), publisher: memoryPublisher() });
    await outbox.setup();
    await assert.rejects(
      () => outbox.enqueue(pool as unknown as MysqlTx, { topic: "t", payload: 1 }),
      (e: unknown) => e instanceof OutboxConfigError && e.path === "tx" && /not a pool/.test(e.message),
    );
    const conn = await pool.getConnection();
    try {
      const callbackStyle = (conn as unknown as { connection: unknown }).connection;
      await assert.rejects(
        () => outbox.enqueue(callbackStyle as MysqlTx, { topic: "t", payload: 1 }),
        (e: unknown) => e instanceof OutboxConfigError && e.path === "tx" && /promise\(\)/.test(e.message),
      );
    } finally {
      conn.release();
    }
    for (const bad of [{}, null, "conn", { query: async () => [[], []] }]) {
      await assert.rejects(
        () => outbox.enqueue(bad as unknown as MysqlTx, { topic: "t", payload: 1 }),
        (e: unknown) => e instanceof OutboxConfigError && e.path === "tx",
      );
    }
    assert.equal((await outbox.stats()).pending, 0);
  }));

test("mariadb: table names that are not plain identifiers are rejected, and the pool must be a mysql2 pool", () =>
  withTable(async (pool) => {
    for (const name of ["x`; DROP TABLE t; --", "a b", "", "1x", "a".repeat(64), "test.outbox"]) {
      assert.throws(
        () => mysqlStorage(pool, { table: name }),
        (e: unknown) => e instanceof OutboxConfigError && e.path === "table",
      );
      assert.throws(() => mysqlSchema({ table: name }), OutboxConfigError);
    }
    assert.throws(
      () => mysqlStorage({} as never),
      (e: unknown) => e instanceof OutboxConfigError && e.path === "pool",
    );
    assert.throws(() => mysqlStorage(pool, { tabel: "x" } as never), /Unknown option "tabel"/);
  }));

test("mariadb: a missing table is reported with the fix", () =>
  withTable(async (pool, table) => {
    const storage = mysqlStorage(pool, { table });
    await assert.rejects(
      () => storage.stats(Date.now()),
      (e: unknown) => e instanceof OutboxStorageError && /does not exist; run outbox\.setup\(\) first/.test(e.message),
    );
    assert.equal(await storage.schemaVersion(), null);
  }));

test("mariadb: setup() records version 2, fanOut upgrades to 3 and never back; a newer version is refused", () =>
  withTable(async (pool, table) => {
    const storage = mysqlStorage(pool, { table });
    await storage.setup();
    assert.equal(await storage.schemaVersion(), 2);
    // Version 2: one row per id, so a fan-out message is refused with the fix, nothing written.
    const fanOut = createOutbox({
      storage,
      publishers: { a: memoryPublisher(), b: memoryPublisher() },
    });
    await inTransaction(pool, async (conn) => {
      await assert.rejects(
        () => fanOut.enqueue(conn, { id: "m", topic: "t", payload: 1 }),
        (e: unknown) => e instanceof OutboxConfigError && /schema version 3/.test(e.message),
      );
    });
    assert.equal((await storage.inspect!()).length, 0);
    await Promise.all([storage.setup({ fanOut: true }), mysqlStorage(pool, { table }).setup({ fanOut: true })]);
    assert.equal(await storage.schemaVersion(), 3);
    await storage.setup();
    assert.equal(await storage.schemaVersion(), 3);
    await inTransaction(pool, (conn) => fanOut.enqueue(conn, { id: "m", topic: "t", payload: 1 }));
    assert.deepEqual((await storage.inspect!()).map((r) => [r.id, r.destination]), [["m", "a"], ["m", "b"]]);
    await pool.query(`UPDATE \`${table}_schema\` SET version = 9`);
    await assert.rejects(
      () => storage.setup(),
      (e: unknown) => e instanceof OutboxConfigError && /schema version 9 is newer/.test(e.message),
    );
  }));

test("mariadb: setup() adds back the indexes a table lacks, at versions 2 and 3, and keeps its rows", () =>
  withTable(async (pool, table) => {
    const storage = mysqlStorage(pool, { table });
    await storage.setup();
    const indexes = async () => {
      const [rows] = await pool.query(
        "SELECT DISTINCT index_name AS name FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ?",
        [table],
      ) as [{ name: string }[], unknown];
      return rows.map((r) => r.name).sort();
    };
    const full = await indexes();
    assert.equal(full.length, 6);
    await inTransaction(
      pool,
      (conn) =>
        createOutbox({ storage, publisher: memoryPublisher() }).enqueue(conn, {
          id: "m",
          key: "k",
          topic: "t",
          payload: 1,
        }),
    );
    await pool.query(
      `ALTER TABLE \`${table}\` DROP INDEX \`${table}_claim_dest_idx\`, DROP INDEX \`${table}_settled_idx\``,
    );
    assert.equal((await indexes()).length, 4);
    await storage.setup();
    assert.deepEqual(await indexes(), full);
    // Version 3: the key on (id, destination) instead of id's own; a dropped one comes back as well.
    await storage.setup({ fanOut: true });
    const fanOut = await indexes();
    assert.ok(fanOut.includes(`${table}_id_dest_unique`) && !fanOut.includes(`${table}_id_unique`));
    await pool.query(`ALTER TABLE \`${table}\` DROP INDEX \`${table}_wait_dest_idx\``);
    await storage.setup();
    assert.deepEqual(await indexes(), fanOut);
    assert.equal(await storage.schemaVersion(), 3);
    assert.deepEqual((await storage.inspect!()).map((r) => r.id), ["m"]);
  }));

test("mariadb: ids and keys are kept byte for byte: case, trailing spaces and 4-byte characters differ", () =>
  withTable(async (pool, table) => {
    const pub = memoryPublisher();
    const outbox = createOutbox({ storage: mysqlStorage(pool, { table }), publisher: pub });
    await outbox.setup();
    const ids = ["a", "A", "a ", "é", "e\u0301", "😀"];
    await inTransaction(
      pool,
      (conn) => outbox.enqueue(conn, ids.map((id) => ({ id, key: id, topic: "t", payload: id }))),
    );
    await inTransaction(pool, async (conn) => {
      await assert.rejects(() => outbox.enqueue(conn, { id: "a ", topic: "t", payload: 1 }), OutboxMessageError);
    });
    await outbox.tick();
    assert.deepEqual(pub.messages.map((m) => [m.id, m.key]), ids.map((id) => [id, id]));
    await assert.rejects(
      () => inTransaction(pool, (conn) => outbox.enqueue(conn, { key: "€".repeat(1_024), topic: "t", payload: 1 })),
      (e: unknown) => e instanceof OutboxMessageError && e.path === "key",
    );
  }));

test("mariadb: an enqueue of several statements is all or none, in a transaction and in autocommit", () =>
  withTable(async (pool, table) => {
    const outbox = createOutbox({ storage: mysqlStorage(pool, { table }), publisher: memoryPublisher() });
    await outbox.setup();
    // ~6 MB: more than one INSERT statement.
    const big = (prefix: string) =>
      Array.from({ length: 60 }, (_, i) => ({ id: `${prefix}-${i}`, topic: "t", payload: "x".repeat(100_000) }));
    await inTransaction(pool, (conn) => outbox.enqueue(conn, { id: "taken", topic: "t", payload: 0 }));
    await inTransaction(pool, async (conn) => {
      await assert.rejects(() => outbox.enqueue(conn, [...big("tx"), { id: "taken", topic: "t", payload: 1 }]));
    });
    assert.equal((await outbox.stats()).pending, 1);
    const conn = await pool.getConnection();
    try {
      await assert.rejects(() => outbox.enqueue(conn, [...big("auto"), { id: "taken", topic: "t", payload: 1 }]));
      assert.equal((await outbox.stats()).pending, 1);
      await outbox.enqueue(conn, big("auto"));
      assert.equal((await outbox.stats()).pending, 61);
    } finally {
      conn.release();
    }
  }));

test("mariadb: a claim never takes message n+1 of a key while n is held by another relay's claim or a late settle", () =>
  withTable(async (pool, table) => {
    const storage = mysqlStorage(pool, { table });
    const outbox = createOutbox({ storage, publisher: memoryPublisher() });
    await outbox.setup();
    await inTransaction(pool, (conn) =>
      outbox.enqueue(conn, [
        { id: "k1", key: "k", topic: "t", payload: 1 },
        { id: "k2", key: "k", topic: "t", payload: 2 },
        { id: "free", topic: "t", payload: 3 },
      ]));
    const now = Date.now() + 1_000;
    const claim = (token: string) =>
      storage.claim({ token, now, lockedUntil: now + 30_000, limit: 10, clock: "relay" });
    // Another relay's claim of k1, not committed yet: it holds k1's row lock.
    const other = await pool.getConnection();
    try {
      await other.query("SET TRANSACTION ISOLATION LEVEL READ COMMITTED");
      await other.beginTransaction();
      await other.query(`SELECT seq FROM \`${table}\` WHERE id = 'k1' FOR UPDATE`);
      assert.deepEqual((await claim("b:1")).map((r) => r.id), ["free"]);
      // A late settle of k1 (its lease expired) in flight: the row is locked again.
      await other.query(
        `UPDATE \`${table}\` SET status = 'processing', locked_by = 'a:1', available_at = 0 WHERE id = 'k1'`,
      );
      await other.commit();
      await other.beginTransaction();
      await other.query(`UPDATE \`${table}\` SET status = 'pending', available_at = ? WHERE id = 'k1'`, [now + 60_000]);
      assert.deepEqual((await claim("b:2")).map((r) => r.id), []);
      await other.rollback();
      // Nothing holds k1 now: its expired lease is claimable, and k2 comes with it.
      assert.deepEqual((await claim("b:3")).map((r) => r.id), ["k1", "k2"]);
    } finally {
      other.release();
    }
  }));

test("mariadb: on 50,000 rows, claim, settle and cleanup read index ranges, never the whole table", () =>
  withTable(async (pool, table) => {
    const storage = mysqlStorage(pool, { table });
    await storage.setup();
    const now = 10_000_000;
    // As bench/explain-mariadb.ts (which runs 1M rows): 90% settled at the head, 10% unsettled over 1,000 keys.
    await pool.query(
      `INSERT INTO \`${table}\` (id, topic, \`key\`, payload, status, attempts, available_at, deliver_at, created_at, settled_at)
      SELECT CONCAT('m', seq), 't', CASE WHEN seq % 7 = 0 THEN NULL ELSE CONCAT('k', seq % 1000) END, '{}',
        CASE WHEN seq % 10 = 0 THEN 'pending' WHEN seq % 10 = 1 THEN 'dead' ELSE 'published' END, 1,
        CASE WHEN seq % 10 = 0 THEN seq END, NULL, seq, CASE WHEN seq % 10 = 0 THEN NULL ELSE seq END
      FROM seq_1_to_50000`,
    );
    await pool.query(`ANALYZE TABLE \`${table}\``);
    const { mysqlNames, relayQueries } = await import("../adapters/mysql/sql.ts");
    const q = relayQueries(mysqlNames(table));
    const claim = { token: "x:1", now, lockedUntil: now + 30_000, limit: 100, clock: "relay" as const };
    const [found] = await pool.query(q.candidates(claim, 0, 100).sql, q.candidates(claim, 0, 100).values) as [
      { seq: number }[],
      unknown,
    ];
    const seqs = found.map((r) => Number(r.seq));
    assert.equal(seqs.length, 100);
    const cleanup = q.cleanup("published", now, 1_000);
    const statements = {
      candidates: q.candidates(claim, 0, 200),
      lock: q.lock(claim, seqs, 100),
      skipped: q.skipped(claim, ["k10", "k20"], seqs, Math.max(...seqs)),
      lease: q.lease(claim, seqs),
      settle: q.settle({
        token: "x:1",
        now,
        deletePublished: true,
        settlements: [{ seq: seqs[0]!, outcome: "published" }],
      })[0]!,
      retry: q.settle({
        token: "x:1",
        now,
        deletePublished: false,
        settlements: [{ seq: seqs[0]!, outcome: "retry", availableAt: now + 1, error: "e" }],
      })[0]!,
      "cleanup select": cleanup.select,
      "stats oldest": q.oldest(now),
      "cleanup delete": cleanup.apply(seqs),
    };
    for (const [name, s] of Object.entries(statements)) {
      const [plan] = await pool.query(`EXPLAIN ${mysql.format(s.sql, s.values as never[])}`) as [
        { table: string | null; type: string | null; key: string | null }[],
        unknown,
      ];
      for (const step of plan) {
        if (step.table === null || step.table.startsWith("<")) continue; // derived tables: their own steps are listed
        assert.ok(
          step.type !== "ALL" && step.type !== "index" && step.key !== null,
          `${name} reads ${step.table} by ${step.type} (${step.key ?? "no index"})`,
        );
      }
    }
    // stats() backs health checks: the oldest-pending lookup reads a few index entries,
    // not the 5,000 unsettled rows (a MIN(created_at) over them read the whole table).
    const oldest = q.oldest(now);
    const [analyzed] = await pool.query(
      `ANALYZE FORMAT=TRADITIONAL ${mysql.format(oldest.sql, oldest.values as never[])}`,
    ) as [
      { table: string | null; r_rows: string | number | null }[],
      unknown,
    ];
    for (const step of analyzed) {
      assert.ok(Number(step.r_rows ?? 0) <= 10, `stats oldest reads ${step.r_rows} rows of ${step.table}`);
    }
  }));

test("mariadb: statements that change rows by seq lock those rows only, on a small table too", () =>
  withTable(async (plain, table) => {
    // A drained outbox is a small table: there the optimizer, left alone, scanned the
    // whole table for a settle's DELETE and locked the row after its batch, which the
    // relay's next claim held, while the claim's lease waited on the settle's rows.
    // Here every row but the batch is held by another transaction; each statement
    // must finish without waiting for it (a wait of 1 s fails).
    const pool = openPool(1);
    pool.on("connection", (conn) => void conn.query("SET SESSION innodb_lock_wait_timeout = 1"));
    try {
      const storage = mysqlStorage(pool, { table });
      const outbox = createOutbox({ storage, publisher: memoryPublisher() });
      await outbox.setup();
      await inTransaction(
        plain,
        (conn) => outbox.enqueue(conn, Array.from({ length: 12 }, (_, i) => ({ id: `m${i}`, topic: "t", payload: i }))),
      );
      const now = Date.now() + 1_000;
      const other = await plain.getConnection();
      try {
        await other.beginTransaction();
        // Rows m0 and m11: before and after the batch.
        await other.query(`SELECT seq FROM \`${table}\` WHERE id IN ('m0', 'm11') FOR UPDATE`);
        const request = { token: "r:1", now, lockedUntil: now + 30_000, limit: 10, clock: "relay" as const };
        const rows = await storage.claim(request);
        assert.deepEqual(rows.map((r) => r.id), ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9", "m10"]);
        const seq = (id: string) => rows.find((r) => r.id === id)!.seq;
        const settled = await storage.settle({
          token: "r:1",
          now,
          clock: "relay",
          deletePublished: true,
          settlements: [
            { seq: seq("m1"), outcome: "published" },
            { seq: seq("m2"), outcome: "retry", availableAt: now + 60_000, error: "later" },
            { seq: seq("m3"), outcome: "dead", error: "no" },
            { seq: seq("m4"), outcome: "release" },
          ],
        });
        assert.equal(settled, 4);
        assert.equal(
          await storage.settle({
            token: "r:1",
            now,
            clock: "relay",
            deletePublished: false,
            settlements: ["m5", "m6", "m7", "m8", "m9", "m10"].map((id) => ({ seq: seq(id), outcome: "published" })),
          }),
          6,
        );
        assert.equal(await storage.requeue({ status: "published", ids: ["m5"], now, clock: "relay" }), 1);
        assert.equal(await storage.cleanup({ now, publishedBefore: now + 1, deadBefore: null, limit: 100 }), 5);
        assert.equal(await storage.purge!({ status: "dead", before: null, ids: ["m3"], limit: 100 }), 1);
        await other.rollback();
      } finally {
        other.release();
      }
    } finally {
      await pool.end();
    }
  }));

test("mariadb: a pool made with rowsAsArray, namedPlaceholders and a typeCast of its own works the same", () =>
  withTable(async (plain, table) => {
    const pool = mysql.createPool({
      uri: MYSQL_URL,
      connectionLimit: 2,
      rowsAsArray: true,
      namedPlaceholders: true,
      typeCast: (field, next) => field.type === "VAR_STRING" ? "cast!" : next(),
    });
    try {
      const pub = memoryPublisher();
      const outbox = createOutbox({ storage: mysqlStorage(pool, { table }), publisher: pub });
      await outbox.setup();
      await inTransaction(pool, (conn) =>
        outbox.enqueue(conn, [
          { id: "a", key: "k", topic: "t", payload: { n: 1 } },
          { id: "b", key: "k", topic: "t", payload: new Uint8Array([1, 2]) },
        ]));
      await outbox.tick();
      assert.deepEqual(pub.messages.map((m) => [m.id, m.key, m.topic]), [["a", "k", "t"], ["b", "k", "t"]]);
      assert.deepEqual(pub.messages[1]!.payload, new Uint8Array([1, 2]));
      assert.equal((await outbox.stats()).pending, 0);
      assert.equal(await mysqlStorage(plain, { table }).schemaVersion(), 2);
    } finally {
      await pool.end();
    }
  }));
