/**
 * libSQL schema versions: a table of version 1 (0.1, commit 1d380c3; built with that
 * version's own statements, tests/fixtures/schema_v1_libsql.ts) upgraded in place by
 * setup() to 2, then to 3 for fan-out; the version record; setup() racing itself. Each
 * test runs on an embedded file database and on sqld over HTTP, where a batch is the
 * atomic unit and the server arbitrates the write lock.
 */

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { type Client, createClient, type InStatement } from "@libsql/client";
import { createOutbox, memoryPublisher, OutboxConfigError, OutboxMessageError, OutboxStorageError } from "../mod.ts";
import { libsqlSchema, libsqlSchemaVersion, libsqlStorage, SCHEMA_VERSION } from "../adapters/libsql/mod.ts";
import { test } from "./harness.ts";
import { openClient, tempDatabase } from "./libsql_helpers.ts";
import { startSqld } from "./sqld_helpers.mjs";
import { v1ClaimSql, v1CreateStatements, v1InsertSql, v1Names, v1SettleSql } from "./fixtures/schema_v1_libsql.ts";

/** A database with a way to open more clients on it, as more processes would. */
interface Database {
  readonly client: Client;
  connect(): Promise<Client>;
}

/** The databases each test runs on: a file, and sqld over HTTP. */
const targets: { name: string; open(): Promise<Database & { close(): Promise<void> }> }[] = [
  {
    name: "file",
    async open() {
      const { url, dir } = tempDatabase();
      const clients = [await openClient(url)];
      return {
        client: clients[0]!,
        async connect() {
          clients.push(await openClient(url));
          return clients.at(-1)!;
        },
        close() {
          for (const c of clients) c.close();
          rmSync(dir, { recursive: true, force: true });
          return Promise.resolve();
        },
      };
    },
  },
  {
    name: "sqld",
    async open() {
      const sqld = await startSqld();
      const clients = [createClient({ url: sqld.url })];
      return {
        client: clients[0]!,
        connect() {
          clients.push(createClient({ url: sqld.url }));
          return Promise.resolve(clients.at(-1)!);
        },
        async close() {
          for (const c of clients) c.close();
          await sqld.stop();
        },
      };
    },
  },
];

/** Registers `body` once per target: "libsql upgrade (<target>): <title>". */
function upgradeTest(title: string, body: (db: Database) => Promise<void>) {
  for (const target of targets) {
    test(`libsql upgrade (${target.name}): ${title}`, async () => {
      const db = await target.open();
      try {
        await body(db);
      } finally {
        await db.close();
      }
    });
  }
}

const n1 = v1Names("outbox");
const MINUTE = 60_000;

/** A version-1 row for v1InsertSql: id, topic, key, payload, headers, deliver_at, enqueue time, deliver_at, created_at. */
function v1Row(id: string, key: string | null, enqueuedAt: number, deliverAt: number | null = null) {
  return [id, "orders.created", key, JSON.stringify({ id }), null, deliverAt, enqueuedAt, deliverAt, enqueuedAt];
}

/**
 * Builds a version-1 table as a process of that version would have left it, with the
 * version's own statements: at `t`, pending keyed runs, a leased row (a relay of
 * version 1 holds it until t + 55 s) with a row of its key behind it, a published row,
 * a dead row blocking its key with a row behind it, a dead unkeyed row, and a row
 * scheduled for t + 10 min. Seq order is the order below.
 */
async function versionOneTable(client: Client, t: number): Promise<void> {
  await client.batch(v1CreateStatements(n1), "write");
  // Rows to be claimed below are due 10 s earlier than the rest.
  const early = t - 10_000;
  const rows = [
    v1Row("p-1", "k1", t),
    v1Row("p-2", "k1", t),
    v1Row("lease-1", "k2", early),
    v1Row("p-3", "k2", t),
    v1Row("pub-1", null, early),
    v1Row("dead-1", "k3", early),
    v1Row("p-4", "k3", t),
    v1Row("dead-2", null, early),
    v1Row("p-5", null, t),
    v1Row("sched-1", null, t, t + 10 * MINUTE),
  ];
  await client.execute({ sql: v1InsertSql(n1, rows.length), args: rows.flat() });
  // A version-1 relay claims the early rows at t - 5 s (a 60 s lease), and settles
  // three of them: one published, two dead (retry.onDead "block": the keyed one blocks k3).
  const claim = await client.execute({ sql: v1ClaimSql(n1), args: [t - 5_000, 10, "old-relay:1", MINUTE] });
  assert.equal(claim.rowsAffected, 4);
  const seqOf = async (id: string) =>
    Number((await client.execute({ sql: "SELECT seq FROM outbox WHERE id = ?", args: [id] })).rows[0]!.seq);
  await client.batch([
    { sql: v1SettleSql.keepPublished(n1), args: ["old-relay:1", JSON.stringify([await seqOf("pub-1")]), t - 4_000] },
    {
      sql: v1SettleSql.dead(n1),
      args: [
        "old-relay:1",
        JSON.stringify([[await seqOf("dead-1"), "410 Gone"], [await seqOf("dead-2"), "400 Bad Request"]]),
        t - 4_000,
        1,
      ],
    },
  ], "write");
}

/** Every column of every row, in seq order. */
async function allRows(client: Client): Promise<Record<string, unknown>[]> {
  const rs = await client.execute("SELECT * FROM outbox ORDER BY seq");
  return rs.rows.map((row) => Object.fromEntries(rs.columns.map((c) => [c, row[c] ?? null])));
}

/** The table's index definitions as sqlite_master keeps them, with `from` renamed `to`. */
async function indexes(client: Client, table = "outbox"): Promise<string[]> {
  const rs = await client.execute({
    sql: "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL ORDER BY name",
    args: [table],
  });
  return rs.rows.map((r) => String(r.sql).replaceAll(table, "T"));
}

async function indexNames(client: Client): Promise<string[]> {
  const rs = await client.execute(
    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox' AND sql IS NOT NULL ORDER BY name",
  );
  return rs.rows.map((r) => String(r.name));
}

async function columns(client: Client, table: string): Promise<string[]> {
  const rs = await client.execute({ sql: "SELECT * FROM pragma_table_info(?) ORDER BY cid", args: [table] });
  return rs.rows.map((r) => `${r.cid} ${r.name} ${r.type} notnull=${r.notnull} default=${r.dflt_value} pk=${r.pk}`);
}

/** The version table's rows. */
async function versionRows(client: Client): Promise<{ version: number; upgraded_at: number }[]> {
  const rs = await client.execute("SELECT version, upgraded_at FROM outbox_schema");
  return rs.rows.map((r) => ({ version: Number(r.version), upgraded_at: Number(r.upgraded_at) }));
}

/** A client that records each write batch it ran and how it ended. */
function recordingWrites(client: Client, log: { statements: string[]; ok: boolean }[]): Client {
  return new Proxy(client, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver);
      if (prop === "batch") {
        return async (statements: InStatement[], mode?: string) => {
          if (mode !== "write") return await target.batch(statements, mode as "read");
          const entry = { statements: statements.map((s) => typeof s === "string" ? s : s.sql), ok: false };
          log.push(entry);
          const result = await target.batch(statements, "write");
          entry.ok = true;
          return result;
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

const V2_INDEXES = [
  "outbox_claim_dest_idx",
  "outbox_id_unique",
  "outbox_key_dest_idx",
  "outbox_locked_idx",
  "outbox_scheduled_idx",
  "outbox_settled_idx",
];
const V3_INDEXES = V2_INDEXES.map((i) => i === "outbox_id_unique" ? "outbox_id_dest_unique" : i);

upgradeTest(
  "setup() upgrades a version-1 table in place: rows keep their data and states, destination '', version 2, the new indexes; a new relay relays them in key order",
  async ({ client }) => {
    let now = Date.now();
    await versionOneTable(client, now);
    assert.equal(await libsqlSchemaVersion(client), 1);
    const before = await allRows(client);
    assert.deepEqual(before.map((r) => `${r.id}:${r.status}`), [
      "p-1:pending",
      "p-2:pending",
      "lease-1:processing",
      "p-3:pending",
      "pub-1:published",
      "dead-1:dead",
      "p-4:pending",
      "dead-2:dead",
      "p-5:pending",
      "sched-1:pending",
    ]);

    const storage = libsqlStorage(client);
    await storage.setup();

    assert.deepEqual(await allRows(client), before.map((r) => ({ ...r, destination: "" })), "data and states kept");
    assert.equal(await libsqlSchemaVersion(client), 2);
    assert.deepEqual((await versionRows(client)).map((r) => r.version), [2]);
    assert.deepEqual(await indexNames(client), V2_INDEXES, "claim_idx and key_idx dropped, the destination ones built");
    // The same table as a fresh setup() makes: columns in the same order, the same indexes.
    await libsqlStorage(client, { table: "fresh" }).setup();
    assert.deepEqual(
      await columns(client, "outbox"),
      await columns(client, "fresh"),
    );
    assert.deepEqual(await indexes(client), await indexes(client, "fresh"));

    const pub = memoryPublisher();
    const outbox = createOutbox({ storage, publisher: pub, now: () => now, clock: "relay", onError: () => {} });
    const stats = await outbox.stats();
    assert.deepEqual(stats.destinations, { "": { pending: 6, processing: 1, published: 1, dead: 2 } });
    assert.equal(stats.blockedKeys, 1);
    await outbox.tick();
    const sent = () => pub.messages.map((m) => m.id);
    assert.deepEqual(sent().sort(), ["p-1", "p-2", "p-5"], "k2 waits behind its leased row, k3 behind its dead one");
    now += MINUTE; // the version-1 relay's lease has ended
    await outbox.tick();
    now += 10 * MINUTE;
    await outbox.tick();
    assert.equal(await outbox.requeue({ status: "dead", ids: ["dead-1"] }), 1);
    await outbox.tick();
    const byKey = (key: string | null) => pub.messages.filter((m) => m.key === key).map((m) => m.id);
    assert.deepEqual(byKey("k1"), ["p-1", "p-2"]);
    assert.deepEqual(byKey("k2"), ["lease-1", "p-3"]);
    assert.deepEqual(byKey("k3"), ["dead-1", "p-4"]);
    assert.deepEqual(byKey(null), ["p-5", "sched-1"]);
    assert.equal(pub.messages.length, 8, "the published and the dead unkeyed row are not sent");
    assert.deepEqual(pub.messages.find((m) => m.id === "lease-1")?.attempts, 2, "its version-1 attempt counts");
  },
);

upgradeTest(
  "a version-1 writer's insert still works on versions 2 and 3, its rows for destination ''",
  async ({ client }) => {
    const t = Date.now();
    await client.batch(v1CreateStatements(n1), "write");
    const storage = libsqlStorage(client);
    await storage.setup();
    await client.execute({ sql: v1InsertSql(n1, 1), args: v1Row("old-1", "k", t) });
    await storage.setup({ fanOut: true });
    await client.execute({ sql: v1InsertSql(n1, 1), args: v1Row("old-2", "k", t) });
    // Its duplicate check still fires: the unique index on (id, destination) names `.id`.
    await assert.rejects(
      () => client.execute({ sql: v1InsertSql(n1, 1), args: v1Row("old-2", "k", t) }),
      /UNIQUE constraint failed: outbox\.id/,
    );
    assert.deepEqual((await allRows(client)).map((r) => r.destination), ["", ""]);
    const pub = memoryPublisher();
    await createOutbox({ storage, publisher: pub }).tick();
    assert.deepEqual(pub.messages.map((m) => m.id), ["old-1", "old-2"]);
  },
);

upgradeTest(
  "fan-out into a version-2 table is refused with nothing written; setup({ fanOut: true }) takes it to 3, and setup() never back",
  async ({ client }) => {
    await versionOneTable(client, Date.now());
    await libsqlStorage(client).setup();
    const rowsBefore = await allRows(client);
    const nats = memoryPublisher();
    const hooks = memoryPublisher();
    const fan = createOutbox({ storage: libsqlStorage(client), publishers: { nats, hooks } });
    const refused = (e: unknown) =>
      e instanceof OutboxConfigError && /schema version 2/.test(e.message) &&
      /outbox setup --fan-out/.test(e.message) && /schema version 3/.test(e.message);
    // In the caller's transaction, which stays usable; and on the client itself.
    const tx = await client.transaction("write");
    try {
      await assert.rejects(() => fan.enqueue(tx, [{ id: "f-1", topic: "t", payload: 1 }]), refused);
      await tx.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)");
      await tx.execute("INSERT INTO orders (id) VALUES ('o-1')");
      await tx.commit();
    } finally {
      tx.close();
    }
    const many = Array.from({ length: 400 }, (_, i) => ({ id: `m-${i}`, topic: "t", payload: i }));
    await assert.rejects(() => fan.enqueue(client, many), refused);
    assert.deepEqual(await allRows(client), rowsBefore, "nothing written");
    assert.equal(Number((await client.execute("SELECT count(*) AS n FROM orders")).rows[0]!.n), 1);

    await fan.setup(); // an outbox with publishers asks for fanOut
    assert.equal(await libsqlSchemaVersion(client), 3);
    assert.deepEqual((await versionRows(client)).map((r) => r.version), [3]);
    assert.deepEqual(await indexNames(client), V3_INDEXES);
    assert.deepEqual(await allRows(client), rowsBefore, "rows untouched by the upgrade to 3");
    await fan.enqueue(client, many);
    assert.equal((await fan.stats()).destinations.hooks?.pending, 400);
    // An id already there, for whichever destination, is still a duplicate.
    const natsOnly = createOutbox({
      storage: libsqlStorage(client),
      publishers: { nats, hooks },
      route: () => ["nats"],
    });
    await assert.rejects(
      () => natsOnly.enqueue(client, { id: "p-1", topic: "t", payload: 1 }),
      (e: unknown) => e instanceof OutboxMessageError && e.path === "id" && /"p-1"/.test(e.message),
    );

    await libsqlStorage(client).setup(); // no fanOut: stays at 3
    assert.equal(await libsqlSchemaVersion(client), 3);
    assert.deepEqual(await indexNames(client), V3_INDEXES);
    await fan.tick();
    assert.deepEqual(nats.messages.map((m) => m.id), many.map((m) => m.id));
    assert.deepEqual(hooks.messages.map((m) => m.id), many.map((m) => m.id));
  },
);

upgradeTest("setup() on an up-to-date table writes nothing: twice is a no-op", async ({ client }) => {
  await versionOneTable(client, Date.now());
  const writes: { statements: string[]; ok: boolean }[] = [];
  const storage = libsqlStorage(recordingWrites(client, writes));
  await storage.setup();
  assert.equal(writes.length, 1);
  const schema = await client.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name");
  const version = await versionRows(client);
  await storage.setup();
  await storage.setup({ fanOut: false });
  assert.equal(writes.length, 1, "no write batch once the table is at its version");
  assert.deepEqual((await client.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")).rows, schema.rows);
  assert.deepEqual(await versionRows(client), version, "the version and its time unchanged");
  // A missing index is built again, as before versions.
  await client.execute("DROP INDEX outbox_locked_idx");
  await storage.setup();
  assert.equal(writes.length, 2);
  assert.deepEqual(await indexNames(client), V2_INDEXES);
  assert.deepEqual(await versionRows(client), version);
});

upgradeTest(
  "a version newer than this package's in <table>_schema fails setup() with OutboxConfigError",
  async ({ client }) => {
    const storage = libsqlStorage(client);
    await storage.setup();
    await client.execute(`UPDATE outbox_schema SET version = ${SCHEMA_VERSION + 1}`);
    const schema = await client.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name");
    for (const fanOut of [false, true]) {
      await assert.rejects(
        () => storage.setup({ fanOut }),
        (e: unknown) =>
          e instanceof OutboxConfigError &&
          e.message.includes(`schema version ${SCHEMA_VERSION + 1} is newer than this @x/outbox (${SCHEMA_VERSION})`) &&
          /upgrade the package/.test(e.message),
      );
    }
    assert.deepEqual(
      (await client.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name")).rows,
      schema.rows,
    );
    assert.equal(await libsqlSchemaVersion(client), SCHEMA_VERSION + 1);
  },
);

upgradeTest("four setup() calls at once on a version-1 table upgrade it once, without error", async (db) => {
  await versionOneTable(db.client, Date.now());
  const before = await allRows(db.client);
  const writes: { statements: string[]; ok: boolean }[] = [];
  const clients = [db.client, await db.connect(), await db.connect(), await db.connect()];
  await Promise.all(clients.map((c) => libsqlStorage(recordingWrites(c, writes)).setup()));
  const upgrades = writes.filter((w) => w.ok && w.statements.some((s) => s.startsWith("ALTER TABLE")));
  assert.equal(upgrades.length, 1, "one batch added the column");
  // The others' batches, when they raced it, failed their version check with nothing
  // written; read again, they found nothing left to do.
  assert.equal(writes.filter((w) => w.ok).length, 1);
  assert.equal(await libsqlSchemaVersion(db.client), 2);
  assert.equal((await versionRows(db.client)).length, 1);
  assert.deepEqual(await indexNames(db.client), V2_INDEXES);
  assert.deepEqual(await allRows(db.client), before.map((r) => ({ ...r, destination: "" })));
});

upgradeTest(
  "setup() calls racing with and without fanOut on a version-1 table end at 3, the id unique per destination",
  async (db) => {
    await versionOneTable(db.client, Date.now());
    const clients = [db.client, await db.connect(), await db.connect(), await db.connect()];
    await Promise.all(clients.map((c, i) => libsqlStorage(c).setup({ fanOut: i % 2 === 1 })));
    assert.equal(await libsqlSchemaVersion(db.client), 3);
    assert.deepEqual(await indexNames(db.client), V3_INDEXES);
  },
);

upgradeTest("a fresh table is created at version 2, or 3 with fanOut", async (db) => {
  assert.equal(await libsqlSchemaVersion(db.client), null);
  await libsqlStorage(db.client).setup();
  assert.equal(await libsqlSchemaVersion(db.client), 2);
  assert.deepEqual(await indexNames(db.client), V2_INDEXES);
  const other = await db.connect();
  await libsqlStorage(other, { table: "fan" }).setup({ fanOut: true });
  assert.equal(await libsqlSchemaVersion(other, { table: "fan" }), 3);
  assert.deepEqual(await columns(other, "fan"), await columns(other, "outbox"));
});

upgradeTest(
  "a table without a version record, or an older one (libsqlSchema() by hand, drizzle-kit), is read from its layout; setup() never undoes fan-out",
  async ({ client }) => {
    await client.batch(libsqlSchema({ fanOut: true }), "write");
    assert.deepEqual((await versionRows(client)).map((r) => r.version), [3], "the DDL records its version");
    await client.execute("DROP TABLE outbox_schema");
    assert.equal(await libsqlSchemaVersion(client), 3);
    await libsqlStorage(client).setup();
    assert.deepEqual((await versionRows(client)).map((r) => r.version), [3]);
    assert.deepEqual(await indexNames(client), V3_INDEXES);
    await client.execute("DROP TABLE outbox_schema");
    await client.execute("DROP INDEX outbox_id_dest_unique");
    await client.execute("CREATE UNIQUE INDEX outbox_id_unique ON outbox (id)");
    assert.equal(await libsqlSchemaVersion(client), 2);
    // Recorded 2, then migrated to fan-out by hand (drizzle-kit with fanOut): the layout wins.
    await libsqlStorage(client).setup();
    assert.deepEqual((await versionRows(client)).map((r) => r.version), [2]);
    await client.execute("DROP INDEX outbox_id_unique");
    await client.execute("CREATE UNIQUE INDEX outbox_id_dest_unique ON outbox (id, destination)");
    assert.equal(await libsqlSchemaVersion(client), 3);
    await libsqlStorage(client).setup();
    assert.deepEqual((await versionRows(client)).map((r) => r.version), [3]);
    assert.deepEqual(await indexNames(client), V3_INDEXES);
  },
);

upgradeTest(
  "on a version-1 table, before setup(), this version's enqueue works and its relay says to run setup()",
  async ({ client }) => {
    await client.batch(v1CreateStatements(n1), "write");
    const pub = memoryPublisher();
    const outbox = createOutbox({ storage: libsqlStorage(client), publisher: pub, onError: () => {} });
    // The one publisher's insert leaves destination to the column: it runs on version 1 too.
    await outbox.enqueue(client, { id: "early", topic: "t", payload: 1 });
    await assert.rejects(
      () => outbox.tick(),
      (e: unknown) =>
        e instanceof OutboxStorageError && /schema version 1/.test(e.message) &&
        /run outbox\.setup\(\)/.test(e.message),
    );
    // A fan-out insert names it.
    const fan = createOutbox({ storage: libsqlStorage(client), publishers: { a: memoryPublisher() } });
    await assert.rejects(() => fan.enqueue(client, { topic: "t", payload: 1 }), /schema version 1/);
    await outbox.setup();
    await outbox.enqueue(client, { id: "late", topic: "t", payload: 2 });
    assert.equal((await outbox.tick()).published, 2);
    assert.deepEqual(pub.messages.map((m) => m.id), ["early", "late"]);
  },
);
