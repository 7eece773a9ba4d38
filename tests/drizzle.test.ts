/**
 * Drizzle: the conformance suite on drizzle's postgres-js and libsql drivers, and the
 * exported table definitions compared with what setup() creates, through drizzle-kit.
 */

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { type Client, createClient } from "@libsql/client";
import { drizzle as drizzlePg } from "drizzle-orm/postgres-js";
import { drizzle as drizzleLibsql } from "drizzle-orm/libsql";
import { sql as dsql } from "drizzle-orm";
import type { PgTable } from "drizzle-orm/pg-core";
import {
  generateDrizzleJson,
  generateMigration,
  generateSQLiteDrizzleJson,
  generateSQLiteMigration,
} from "drizzle-kit/api";
import { createOutbox, memoryPublisher, OutboxConfigError } from "../mod.ts";
import { drizzlePgStorage, drizzleSqliteStorage, pgOutboxTable, sqliteOutboxTable } from "../adapters/drizzle/mod.ts";
import type { DrizzlePgTransaction, DrizzleSqliteTransaction } from "../adapters/drizzle/mod.ts";
import { type PostgresSql, postgresStorage } from "../adapters/postgres/mod.ts";
import { libsqlSchemaVersion, libsqlStorage } from "../adapters/libsql/mod.ts";
import { storageConformance, type StorageHarness } from "./conformance/storage.ts";
import { test } from "./harness.ts";
import { openSql, uniqueSchema } from "./postgres_helpers.ts";
import { insertOneV1Sql, schemaV1Statements, v1PgOutboxTable } from "./fixtures/schema_v1_postgres.ts";
import { openClient, tempDatabase } from "./libsql_helpers.ts";
import { v1CreateStatements, v1InsertSql, v1Names, v1SqliteOutboxTable } from "./fixtures/schema_v1_libsql.ts";

async function pgHarness(): Promise<StorageHarness<DrizzlePgTransaction>> {
  const schema = uniqueSchema("dz");
  const clients = [openSql()];
  const db = drizzlePg(clients[0]!);
  await db.execute(dsql.raw(`CREATE SCHEMA "${schema}"`));
  await db.execute(dsql.raw(`CREATE TABLE "${schema}".orders (id text PRIMARY KEY)`));
  const storage = drizzlePgStorage(db, { schema });
  await storage.setup();
  return {
    storage,
    async connect() {
      const other = openSql();
      clients.push(other);
      return drizzlePgStorage(drizzlePg(other), { schema });
    },
    commit: (fn) => db.transaction((tx) => fn(tx)),
    async rollback(fn) {
      await db.transaction(async (tx) => {
        await fn(tx);
        tx.rollback();
      }).catch((e) => {
        if (!/rollback/i.test(String(e))) throw e;
      });
    },
    async insertOrder(tx, id) {
      await tx.execute(dsql`INSERT INTO ${dsql.raw(`"${schema}".orders`)} (id) VALUES (${id})`);
    },
    async orderCount() {
      const rows = await db.execute(dsql.raw(`SELECT count(*)::int AS n FROM "${schema}".orders`));
      return Number((rows as unknown as { n: number }[])[0]!.n);
    },
    async close() {
      await clients[0]!.unsafe(`DROP SCHEMA "${schema}" CASCADE`).catch(() => {});
      await Promise.all(clients.map((c) => c.end({ timeout: 1 })));
    },
  };
}

async function sqliteHarness(): Promise<StorageHarness<DrizzleSqliteTransaction>> {
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  const clients = [client];
  const db = drizzleLibsql(client);
  await db.run(dsql.raw("CREATE TABLE orders (id TEXT PRIMARY KEY)"));
  const storage = drizzleSqliteStorage(db);
  await storage.setup();
  return {
    storage,
    async connect() {
      const other = await openClient(url);
      clients.push(other);
      return drizzleSqliteStorage(drizzleLibsql(other));
    },
    commit: (fn) => db.transaction((tx) => fn(tx)),
    async rollback(fn) {
      await db.transaction(async (tx) => {
        await fn(tx);
        tx.rollback();
      }).catch((e) => {
        if (!/rollback/i.test(String(e))) throw e;
      });
    },
    async insertOrder(tx, id) {
      await tx.run(dsql`INSERT INTO orders (id) VALUES (${id})`);
    },
    async orderCount() {
      const rows = await db.all<{ n: number }>(dsql.raw("SELECT count(*) AS n FROM orders"));
      return Number(rows[0]!.n);
    },
    async close() {
      for (const c of clients) c.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

storageConformance("drizzle-postgres", pgHarness);
storageConformance("drizzle-sqlite", sqliteHarness);

/** The outbox table's columns, indexes and constraints in `schema`, names made comparable. */
async function describePgTable(sql: ReturnType<typeof openSql>, schema: string, table = "outbox") {
  const columns = await sql.unsafe(
    `SELECT column_name, data_type, is_nullable, column_default, is_identity, identity_generation
     FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY column_name`,
    [schema, table],
  );
  // Only the table's own objects: setup() also makes the version table, which drizzle does not declare.
  const indexes = await sql.unsafe(
    `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 ORDER BY indexname`,
    [schema, table],
  );
  const constraints = await sql.unsafe(
    `SELECT conname, pg_get_constraintdef(c.oid) AS def FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
     WHERE n.nspname = $1 AND c.conrelid = format('%I.%I', $1::text, $2::text)::regclass ORDER BY conname`,
    [schema, table],
  );
  const normal = (text: string) => text.replaceAll(`"${schema}"`, "S").replaceAll(schema, "S");
  return {
    columns: columns.map((c) => ({ ...c })),
    indexes: indexes.map((i) => `${i.indexname}: ${normal(String(i.indexdef))}`),
    constraints: constraints.map((c) => `${c.conname}: ${c.def}`),
  };
}

for (const fanOut of [false, true]) {
  test(
    `drizzle: pgOutboxTable(${
      fanOut ? "{ fanOut: true }" : ""
    }) through drizzle-kit creates the same columns, constraints and indexes as setup(${
      fanOut ? "{ fanOut: true }" : ""
    })`,
    async () => {
      const sql = openSql();
      const fromKit = uniqueSchema("kit");
      const fromSetup = uniqueSchema("setup");
      try {
        const table = pgOutboxTable({ schema: fromKit, fanOut });
        const statements = await generateMigration(generateDrizzleJson({}), generateDrizzleJson({ table }));
        await sql.unsafe(`CREATE SCHEMA "${fromKit}"`); // drizzle-kit creates schemas only for exported pgSchema objects
        for (const s of statements) await sql.unsafe(s);
        const storage = postgresStorage(sql as unknown as PostgresSql, { schema: fromSetup });
        await storage.setup({ fanOut });
        const kit = await describePgTable(sql, fromKit);
        const setup = await describePgTable(sql, fromSetup);
        assert.equal(kit.columns.length, 16);
        assert.deepEqual(kit.columns, setup.columns);
        assert.deepEqual(kit.indexes, setup.indexes);
        assert.deepEqual(kit.constraints, setup.constraints);
        assert.ok(
          setup.indexes.some((i) => i.startsWith(fanOut ? "outbox_id_dest_key: CREATE UNIQUE" : "outbox_id_key:")),
        );
        // A table drizzle-kit made has no version record: setup() reads its layout instead.
        const kitStorage = postgresStorage(sql as unknown as PostgresSql, { schema: fromKit });
        assert.equal(await kitStorage.schemaVersion(), fanOut ? 3 : 2);
        await kitStorage.setup();
        assert.equal(await kitStorage.schemaVersion(), fanOut ? 3 : 2);
        assert.deepEqual(await describePgTable(sql, fromKit), kit, "setup() on drizzle-kit's table changes nothing");
      } finally {
        await sql.unsafe(`DROP SCHEMA IF EXISTS "${fromKit}" CASCADE`).catch(() => {});
        await sql.unsafe(`DROP SCHEMA IF EXISTS "${fromSetup}" CASCADE`).catch(() => {});
        await sql.end({ timeout: 1 });
      }
    },
  );
}

/** An SQLite table as drizzle-kit and setup() must agree on: columns, indexes, the status check. */
async function describeSqlite(db: Client, table = "outbox") {
  const columns = (await db.execute({
    sql: 'SELECT name, upper(type) AS type, "notnull", dflt_value, pk FROM pragma_table_info(?) ORDER BY name',
    args: [table],
  })).rows
    .map((r) => `${r.name} ${r.type} notnull=${r.notnull} default=${r.dflt_value} pk=${r.pk}`);
  const indexes = [];
  for (
    const idx of (await db.execute({
      sql: "SELECT name, \"unique\", partial FROM pragma_index_list(?) WHERE origin != 'pk' ORDER BY name",
      args: [table],
    })).rows
  ) {
    const cols = (await db.execute({
      sql: "SELECT name FROM pragma_index_info(?) ORDER BY seqno",
      args: [String(idx.name)],
    }))
      .rows.map((r) => r.name);
    const def = (await db.execute({
      sql: "SELECT sql FROM sqlite_master WHERE name = ?",
      args: [String(idx.name)],
    })).rows[0]
      ?.sql;
    const where = String(def ?? "").replace(/\s+/g, " ").replace(
      /^.* WHERE /i,
      "",
    ).replace(/[`"]/g, "").trim();
    indexes.push(
      `${idx.name} unique=${idx.unique} (${cols.join(", ")}) where ${idx.partial ? where : "-"}`,
    );
  }
  const sql = String(
    (await db.execute({
      sql: "SELECT sql FROM sqlite_master WHERE name = ?",
      args: [table],
    })).rows[0]!.sql,
  );
  // The check's own parentheses: an added column follows it in the table's SQL.
  const checks = /CHECK\s*\(([^()]*\([^()]*\))\s*\)/is.exec(sql)?.[1]?.replace(
    /[`"\s]/g,
    "",
  ) ?? "";
  return { columns, indexes, checks };
}

/** Two fresh SQLite files, for a table made by drizzle-kit and one made by setup(). */
async function withTwoSqliteFiles(
  body: (kitDb: Client, setupDb: Client) => Promise<void>,
) {
  const a = tempDatabase();
  const b = tempDatabase();
  const kitDb = createClient({ url: a.url });
  const setupDb = createClient({ url: b.url });
  try {
    await body(kitDb, setupDb);
  } finally {
    kitDb.close();
    setupDb.close();
    rmSync(a.dir, { recursive: true, force: true });
    rmSync(b.dir, { recursive: true, force: true });
  }
}

test("drizzle: drizzle-kit's migration from 0.1's pgOutboxTable() upgrades a version-1 table with rows, as setup() would", async () => {
  const sql = openSql();
  const kit = uniqueSchema("kit1");
  const fresh = uniqueSchema("fresh");
  try {
    // The version 1 table as 0.1's setup() made it, with rows 0.1's insert wrote.
    for (const s of schemaV1Statements(kit)) await sql.unsafe(s);
    const t = Date.now();
    for (const id of ["a", "b"]) {
      await sql.unsafe(insertOneV1Sql(kit), [id, "t", "k", "1", null, null, t, null, t, false]);
    }
    const migrate = async (from: PgTable, to: PgTable) => {
      const statements = await generateMigration(generateDrizzleJson({ from }), generateDrizzleJson({ to }));
      for (const s of statements) await sql.unsafe(s);
      return statements;
    };
    const v2 = await migrate(v1PgOutboxTable(kit), pgOutboxTable({ schema: kit }));
    assert.ok(v2.some((s) => /ADD COLUMN "destination" text DEFAULT '' NOT NULL/.test(s)), v2.join("\n"));
    const storage = postgresStorage(sql as unknown as PostgresSql, { schema: kit });
    assert.equal(await storage.schemaVersion(), 2, "read from the layout: drizzle-kit records no version");
    await postgresStorage(sql as unknown as PostgresSql, { schema: fresh }).setup();
    const migrated = await describePgTable(sql, kit);
    assert.deepEqual(migrated, await describePgTable(sql, fresh));
    await storage.setup(); // the claim functions and the version record; the table stays as it is
    assert.deepEqual(await describePgTable(sql, kit), migrated);
    assert.equal(await storage.schemaVersion(), 2);

    const v3 = await migrate(pgOutboxTable({ schema: kit }), pgOutboxTable({ schema: kit, fanOut: true }));
    assert.equal(v3.length, 2, v3.join("\n"));
    assert.equal(await storage.schemaVersion(), 3, "the layout outranks the older record");
    await postgresStorage(sql as unknown as PostgresSql, { schema: fresh }).setup({ fanOut: true });
    assert.deepEqual(await describePgTable(sql, kit), await describePgTable(sql, fresh));

    const db = drizzlePg(sql);
    const nats = memoryPublisher();
    const hooks = memoryPublisher();
    const outbox = createOutbox({ storage: drizzlePgStorage(db, { schema: kit }), publishers: { nats, hooks } });
    await outbox.setup();
    await db.transaction((tx) => outbox.enqueue(tx, { id: "c", topic: "t", key: "k", payload: 3 }));
    const single = memoryPublisher();
    await createOutbox({ storage: drizzlePgStorage(db, { schema: kit }), publisher: single }).tick();
    await outbox.tick();
    assert.deepEqual(single.messages.map((m) => m.id), ["a", "b"], "version 1's rows, destination ''");
    assert.deepEqual(nats.messages.map((m) => m.id), ["c"]);
    assert.deepEqual(hooks.messages.map((m) => m.id), ["c"]);
  } finally {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${kit}" CASCADE`).catch(() => {});
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${fresh}" CASCADE`).catch(() => {});
    await sql.end({ timeout: 1 });
  }
});

test("drizzle: fan-out rows into a drizzle Postgres table of schema version 2 are refused with OutboxConfigError", async () => {
  const h = await pgHarness();
  try {
    const outbox = createOutbox({ storage: h.storage, publishers: { nats: () => {}, hooks: () => {} } });
    await h.commit(async (tx) => {
      await assert.rejects(outbox.enqueue(tx, { id: "f", topic: "t", payload: 1 }), OutboxConfigError);
      await h.insertOrder(tx, "still-usable");
    });
    assert.equal(await h.orderCount(), 1);
    assert.deepEqual(await outbox.inspect(), []);
  } finally {
    await h.close();
  }
});

test("drizzle: sqliteOutboxTable() through drizzle-kit creates the same columns and indexes as setup(), also with fanOut", () =>
  withTwoSqliteFiles(async (kitDb, setupDb) => {
    for (const fanOut of [false, true]) {
      const table = fanOut ? "fan" : "outbox";
      const statements = await generateSQLiteMigration(
        await generateSQLiteDrizzleJson({}),
        await generateSQLiteDrizzleJson({
          outbox: sqliteOutboxTable({ table, fanOut }),
        }),
      );
      for (const s of statements) await kitDb.execute(s);
      await libsqlStorage(setupDb, { table }).setup({ fanOut });
      const kit = await describeSqlite(kitDb, table);
      const setup = await describeSqlite(setupDb, table);
      assert.equal(kit.columns.length, 15);
      assert.deepEqual(kit.columns, setup.columns);
      assert.deepEqual(kit.indexes, setup.indexes);
      assert.ok(
        kit.checks.includes(
          "statusIN('pending','processing','published','dead')",
        ),
        kit.checks,
      );
      assert.ok(
        setup.checks.includes(
          "statusIN('pending','processing','published','dead')",
        ),
        setup.checks,
      );
      assert.ok(
        kit.indexes.some((i) => i.startsWith(`${table}_id_${fanOut ? "dest_" : ""}unique unique=1`)),
      );
      // Without setup()'s version record, the version is read from the layout.
      assert.equal(await libsqlSchemaVersion(kitDb, { table }), fanOut ? 3 : 2);
    }
  }));

test("drizzle: drizzle-kit's migration from 0.1's sqliteOutboxTable() upgrades a version-1 table with rows, as setup() would", () =>
  withTwoSqliteFiles(async (kitDb, setupDb) => {
    const n = v1Names("outbox");
    await kitDb.batch(v1CreateStatements(n), "write");
    const t = Date.now();
    await kitDb.execute({
      sql: v1InsertSql(n, 2),
      args: [
        "a",
        "t",
        "k",
        "1",
        null,
        null,
        t,
        null,
        t,
        "b",
        "t",
        "k",
        "2",
        null,
        null,
        t,
        null,
        t,
      ],
    });
    const migrate = async (
      from: Record<string, unknown>,
      to: Record<string, unknown>,
    ) => {
      const statements = await generateSQLiteMigration(
        await generateSQLiteDrizzleJson(from),
        await generateSQLiteDrizzleJson(to),
      );
      for (const s of statements) await kitDb.execute(s);
      return statements;
    };
    const v2 = await migrate({ outbox: v1SqliteOutboxTable() }, {
      outbox: sqliteOutboxTable(),
    });
    assert.ok(
      v2.some((s) =>
        /^ALTER TABLE `outbox` ADD `destination` text DEFAULT '' NOT NULL/.test(
          s,
        )
      ),
      v2.join("\n"),
    );
    await libsqlStorage(setupDb).setup();
    assert.deepEqual(
      await describeSqlite(kitDb),
      await describeSqlite(setupDb),
    );
    assert.equal(await libsqlSchemaVersion(kitDb), 2);
    const kitSchema = async () =>
      (await kitDb.execute(
        "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'outbox' ORDER BY name",
      )).rows;
    const before = await kitSchema();
    await libsqlStorage(kitDb).setup(); // records the version; nothing of the table changes
    assert.deepEqual(await kitSchema(), before);

    const v3 = await migrate({ outbox: sqliteOutboxTable() }, {
      outbox: sqliteOutboxTable({ fanOut: true }),
    });
    assert.equal(v3.length, 2, v3.join("\n"));
    await libsqlStorage(setupDb, { table: "fan" }).setup({ fanOut: true });
    assert.deepEqual(
      await describeSqlite(kitDb),
      await describeSqlite(setupDb, "fan").then((d) => ({
        ...d,
        indexes: d.indexes.map((i) => i.replaceAll("fan_", "outbox_")),
      })),
    );
    assert.equal(
      await libsqlSchemaVersion(kitDb),
      3,
      "the layout outranks the older record",
    );

    const db = drizzleLibsql(kitDb);
    const nats = memoryPublisher();
    const hooks = memoryPublisher();
    const outbox = createOutbox({
      storage: drizzleSqliteStorage(db),
      publishers: { nats, hooks },
    });
    await outbox.setup();
    await db.transaction((tx) => outbox.enqueue(tx, { id: "c", topic: "t", key: "k", payload: 3 }));
    const single = memoryPublisher();
    await createOutbox({ storage: drizzleSqliteStorage(db), publisher: single })
      .tick();
    await outbox.tick();
    assert.deepEqual(
      single.messages.map((m) => m.id),
      ["a", "b"],
      "version 1's rows, destination ''",
    );
    assert.deepEqual(nats.messages.map((m) => m.id), ["c"]);
    assert.deepEqual(hooks.messages.map((m) => m.id), ["c"]);
  }));

test("drizzle: storages refuse a database on another driver", () => {
  assert.throws(
    () => drizzlePgStorage({ $client: {} } as never),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "db",
  );
  assert.throws(
    () => drizzleSqliteStorage({ $client: null } as never),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "db",
  );
  assert.throws(() => pgOutboxTable({ table: "x; drop" }), OutboxConfigError);
  assert.throws(() => sqliteOutboxTable({ table: "" }), OutboxConfigError);
});

test("drizzle: enqueue() inside db.transaction() is typed by drizzle's own transaction type", async () => {
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  try {
    const db = drizzleLibsql(client);
    const pub = memoryPublisher();
    const outbox = createOutbox({ storage: drizzleSqliteStorage(db), publisher: pub });
    await outbox.setup();
    await db.transaction(async (tx) => {
      await outbox.enqueue(tx, { id: "typed", topic: "t", payload: { ok: true } });
    });
    await outbox.enqueue(db, { id: "on-db", topic: "t", payload: 1 });
    await outbox.tick();
    assert.deepEqual(pub.messages.map((m) => m.id), ["typed", "on-db"]);
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
