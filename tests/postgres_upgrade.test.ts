/**
 * Postgres schema versions: a table of version 1 (as @x/outbox at 1d380c3 made and
 * wrote it, tests/fixtures/schema_v1_postgres.ts) upgraded in place by `setup()` to
 * version 2, then to 3 with `fanOut`; what version 1 processes still running can do
 * meanwhile; and the version record (idempotence, a newer version, concurrent setups).
 */

import assert from "node:assert/strict";
import { createOutbox, memoryPublisher, OutboxConfigError, type OutboxRecord } from "../mod.ts";
import {
  postgresSchemaVersion,
  type PostgresSql,
  postgresStorage,
  type PostgresTx,
  SCHEMA_VERSION,
} from "../adapters/postgres/mod.ts";
import { pgArray } from "../adapters/postgres/array.ts";
import { claimV1Sql, insertOneV1Sql, insertV1Sql, schemaV1Statements } from "./fixtures/schema_v1_postgres.ts";
import { test } from "./harness.ts";
import { openSql, uniqueSchema } from "./postgres_helpers.ts";

type Sql = ReturnType<typeof openSql>;

const BLOCKED = Number.MAX_SAFE_INTEGER;
const asSql = (sql: Sql) => sql as unknown as PostgresSql;

async function withSchemas(count: number, body: (sql: Sql, schemas: string[]) => Promise<void>): Promise<void> {
  const sql = openSql();
  const schemas = Array.from({ length: count }, () => uniqueSchema("up"));
  try {
    await body(sql, schemas);
  } finally {
    for (const schema of schemas) await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await sql.end({ timeout: 1 });
  }
}

/** Creates the version 1 table in `schema` with version 1's own DDL. */
async function createV1(sql: Sql, schema: string): Promise<void> {
  for (const statement of schemaV1Statements(schema)) await sql.unsafe(statement);
}

/** One message as version 1's insert took it. */
interface V1Message {
  id: string;
  key?: string | null;
  deliverAt?: number | null;
}

/** Writes messages in one statement, the way version 1's enqueue did (its own SQL, `ON CONFLICT (id)`). */
async function insertV1(sql: Sql, schema: string, messages: readonly V1Message[], now = Date.now()): Promise<number> {
  const column = <T>(f: (m: V1Message, i: number) => T) => messages.map(f);
  const [row] = await sql.unsafe(insertV1Sql(schema), [
    pgArray(column((m) => m.id)),
    pgArray(column(() => "t")),
    pgArray(column((m) => m.key ?? null)),
    pgArray(column((m) => JSON.stringify(m.id))),
    pgArray(column(() => null)),
    pgArray(column(() => null)),
    pgArray(column((_, i) => now - 60_000 + i)),
    pgArray(column((m) => m.deliverAt ?? null)),
    pgArray(column((_, i) => now - 60_000 + i)),
    false,
  ]);
  return Number(row!.n);
}

/** Writes one message with version 1's one-row insert; resolves with the rows written (0: a duplicate). */
async function insertOneV1(sql: Sql, schema: string, id: string): Promise<number> {
  const now = Date.now();
  const [row] = await sql.unsafe(insertOneV1Sql(schema), [id, "t", null, "1", null, null, now, null, now, false]);
  return Number(row!.n);
}

/** The table's columns, indexes, constraints and functions, with the schema name taken out. */
async function catalog(sql: Sql, schema: string) {
  const normal = (text: unknown) => String(text).replaceAll(`"${schema}"`, "S").replaceAll(schema, "S");
  const columns = await sql.unsafe(
    `SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns
     WHERE table_schema = $1 AND table_name = 'outbox' ORDER BY ordinal_position`,
    [schema],
  );
  const indexes = await sql.unsafe(
    `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = 'outbox' ORDER BY indexname`,
    [schema],
  );
  const constraints = await sql.unsafe(
    `SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
     WHERE conrelid = format('%I.outbox', $1::text)::regclass ORDER BY conname`,
    [schema],
  );
  const functions = await sql.unsafe(
    `SELECT proname, pg_get_function_identity_arguments(oid) AS args FROM pg_proc
     WHERE pronamespace = $1::regnamespace ORDER BY proname`,
    [`"${schema}"`],
  );
  return {
    columns: columns.map((c) => `${c.column_name} ${c.data_type} ${c.is_nullable} ${c.column_default}`),
    indexes: indexes.map((i) => `${i.indexname}: ${normal(i.indexdef)}`),
    constraints: constraints.map((c) => `${c.conname}: ${c.def}`),
    functions: functions.map((f) => `${f.proname}(${f.args})`),
  };
}

/** The recorded version row. */
async function versionRow(sql: Sql, schema: string) {
  const [row] = await sql.unsafe(`SELECT version, upgraded_at FROM "${schema}".outbox_schema`);
  return row ? { version: Number(row.version), upgradedAt: Number(row.upgraded_at) } : undefined;
}

/** Every column of every row, in seq order. */
async function rows(sql: Sql, schema: string) {
  return (await sql.unsafe(`SELECT * FROM "${schema}".outbox ORDER BY seq`)).map((r) => ({ ...r }));
}

/** The ids published per key, in publish order. */
function byKey(messages: readonly OutboxRecord[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const m of messages) (out[m.key ?? "-"] ??= []).push(m.id);
  out["-"]?.sort(); // unkeyed messages have no order among themselves
  return out;
}

test(
  "postgres upgrade: setup() brings a version 1 table with rows in every state to version 2 in place, then to 3 with fanOut",
  () =>
    withSchemas(2, async (sql, [schema, fresh]) => {
      await createV1(sql, schema!);
      const storage = postgresStorage(asSql(sql), { schema });
      assert.equal(await storage.schemaVersion(), 1, "a table without a version record and without destination");
      assert.equal(await postgresSchemaVersion(asSql(sql), { schema }), 1);
      assert.equal(await postgresSchemaVersion(asSql(sql), { schema: fresh }), null, "no table");

      // Rows in several states, the way version 1 made them: its inserts, its claim, then
      // settles (the settle statement is the same in both versions).
      const now = Date.now();
      assert.equal(
        await insertV1(sql, schema!, [
          { id: "a1", key: "ka" },
          { id: "b1", key: "kb" },
          { id: "a2", key: "ka" },
          { id: "c1", key: "kc" },
          { id: "u1" },
          { id: "p1" },
          { id: "d1" },
          { id: "b2", key: "kb" },
          { id: "c2", key: "kc" },
          { id: "a3", key: "ka" },
          { id: "s1", deliverAt: now + 3_600_000 },
        ], now),
        11,
      );
      assert.equal(await insertOneV1(sql, schema!, "u2"), 1);
      const claimed = await sql.unsafe(claimV1Sql(schema!), [null, 100, "v1:relay", 600_000]);
      const seqOf = new Map(claimed.map((r) => [String(r.id), Number(r.seq)]));
      assert.equal(seqOf.size, 11, "everything due was claimed; s1 is scheduled for later");
      const settle = (
        settlements: Parameters<typeof storage.settle>[0]["settlements"],
        onDead: "skip" | "block" = "skip",
      ) => storage.settle({ token: "v1:relay", now, settlements, deletePublished: false, onDead });
      const release = (id: string) => ({ seq: seqOf.get(id)!, outcome: "release" as const });
      assert.equal(
        await settle([
          ...["a1", "a2", "a3", "b2", "c2", "u1", "u2"].map(release),
          { seq: seqOf.get("p1")!, outcome: "published" },
          { seq: seqOf.get("d1")!, outcome: "dead", error: "gone" },
        ]),
        9,
      );
      assert.equal(await settle([{ seq: seqOf.get("c1")!, outcome: "dead", error: "refused" }], "block"), 1);
      // b1 stays leased (processing) to the version 1 relay.
      const before = await rows(sql, schema!);
      const statusOf = (id: string) => before.find((r) => r.id === id)!.status;
      assert.deepEqual(["b1", "p1", "d1", "c1", "s1"].map(statusOf), [
        "processing",
        "published",
        "dead",
        "dead",
        "pending",
      ]);
      assert.equal(Number(before.find((r) => r.id === "c1")!.available_at), BLOCKED);

      await storage.setup();

      // Same rows, same data and states, destination "" everywhere.
      const after = await rows(sql, schema!);
      assert.deepEqual(after, before.map((r) => ({ ...r, destination: "" })));
      assert.equal(await storage.schemaVersion(), 2);
      assert.equal(await postgresSchemaVersion(asSql(sql), { schema }), 2);
      assert.equal((await versionRow(sql, schema!))?.version, 2);
      // The table now is what setup() makes fresh at version 2: the new indexes, the old
      // ones gone, both claim functions, the same columns (destination last) and constraints.
      await postgresStorage(asSql(sql), { schema: fresh }).setup();
      const upgraded = await catalog(sql, schema!);
      assert.deepEqual(upgraded, await catalog(sql, fresh!));
      assert.deepEqual(upgraded.indexes.map((i) => i.split(":")[0]), [
        "outbox_claim_dest_idx",
        "outbox_id_key",
        "outbox_key_dest_idx",
        "outbox_pkey",
        "outbox_scheduled_idx",
        "outbox_settled_idx",
      ]);
      assert.deepEqual(upgraded.functions, [
        "outbox_claim_v2(p_now bigint, p_limit integer, p_token text, p_lease bigint)",
        "outbox_claim_v3(p_now bigint, p_limit integer, p_token text, p_lease bigint, p_destination text)",
      ]);

      // Version 1 processes still running: their insert (ON CONFLICT (id)) works, a
      // duplicate is still one, and their claim takes only destination "" rows.
      assert.equal(await insertOneV1(sql, schema!, "v1-after"), 1);
      assert.equal(await insertOneV1(sql, schema!, "v1-after"), 0);
      await storage.insert(asSql(sql) as PostgresTx, [{
        id: "h1",
        topic: "t",
        key: null,
        body: "1",
        headers: null,
        availableAt: now - 1_000,
        deliverAt: null,
        createdAt: now - 1_000,
        destination: "hooks",
      }]);
      const v1Claim = await sql.unsafe(claimV1Sql(schema!), [null, 100, "v1:late", 600_000]);
      const v1Ids = v1Claim.map((r) => String(r.id));
      assert.ok(v1Ids.includes("v1-after") && v1Ids.includes("a1"), v1Ids.join());
      assert.ok(!v1Ids.includes("h1"), "not h1: another destination's row");
      await storage.settle({
        token: "v1:late",
        now,
        settlements: v1Claim.map((r) => ({ seq: Number(r.seq), outcome: "release" as const })),
        deletePublished: false,
      });

      // A relay of the new code, two hours on (b1's version 1 lease has ended, s1 is due):
      // every pending message in key order; kc stays behind its blocking dead message.
      const pub = memoryPublisher();
      const outbox = createOutbox({ storage, publisher: pub, now: () => now + 7_200_000, onError: () => {} });
      for (let i = 0; i < 5; i++) await outbox.tick();
      assert.deepEqual(byKey(pub.messages), {
        ka: ["a1", "a2", "a3"],
        kb: ["b1", "b2"],
        "-": ["s1", "u1", "u2", "v1-after"],
      });
      assert.deepEqual((await outbox.inspect({ destination: "hooks" })).map((r) => [r.id, r.status]), [[
        "h1",
        "pending",
      ]]);
      assert.equal((await outbox.stats()).blockedKeys, 1);

      // Version 3: the id is unique per destination; a fan-out outbox works.
      await storage.setup({ fanOut: true });
      assert.equal(await storage.schemaVersion(), 3);
      const fanned = await catalog(sql, schema!);
      await postgresStorage(asSql(sql), { schema: fresh }).setup({ fanOut: true });
      assert.deepEqual(fanned, await catalog(sql, fresh!));
      assert.ok(
        fanned.indexes.includes(
          `outbox_id_dest_key: CREATE UNIQUE INDEX outbox_id_dest_key ON S.outbox USING btree (id, destination)`,
        ),
      );
      assert.ok(!fanned.indexes.some((i) => i.startsWith("outbox_id_key")));
      const nats = memoryPublisher();
      const hooks = memoryPublisher();
      const fan = createOutbox({ storage, publishers: { nats, hooks }, now: () => now + 7_200_000, onError: () => {} });
      await fan.setup();
      assert.equal(await storage.schemaVersion(), 3);
      const [id] = await sql.begin((tx) =>
        fan.enqueue(tx as unknown as PostgresTx, { id: "fan-1", topic: "t", payload: 1 })
      );
      assert.equal(id, "fan-1");
      await fan.tick();
      assert.deepEqual(nats.messages.map((m) => m.id), ["fan-1"]);
      assert.deepEqual(hooks.messages.map((m) => m.id).sort(), ["fan-1", "h1"]);
      // Writers of version 1 cannot write any more (documented: upgrade every process first).
      await assert.rejects(insertOneV1(sql, schema!, "v1-late"), /ON CONFLICT/);
      // setup() without fanOut never goes back.
      await storage.setup();
      assert.equal(await storage.schemaVersion(), 3);
      assert.deepEqual(await catalog(sql, schema!), fanned);
    }),
  { timeout: 60_000 },
);

test("postgres upgrade: a version 1 table goes to version 3 in one setup({ fanOut: true })", () =>
  withSchemas(2, async (sql, [schema, fresh]) => {
    await createV1(sql, schema!);
    await insertV1(sql, schema!, [{ id: "m1", key: "k" }, { id: "m2", key: "k" }]);
    const storage = postgresStorage(asSql(sql), { schema });
    await storage.setup({ fanOut: true });
    assert.equal(await storage.schemaVersion(), SCHEMA_VERSION);
    await postgresStorage(asSql(sql), { schema: fresh }).setup({ fanOut: true });
    assert.deepEqual(await catalog(sql, schema!), await catalog(sql, fresh!));
    assert.deepEqual((await rows(sql, schema!)).map((r) => `${r.id}@${r.destination}`), ["m1@", "m2@"]);
  }));

test("postgres upgrade: setup() a second time changes nothing: not the table, the rows or the version record", () =>
  withSchemas(1, async (sql, [schema]) => {
    await createV1(sql, schema!);
    await insertV1(sql, schema!, [{ id: "m1" }]);
    const storage = postgresStorage(asSql(sql), { schema });
    await storage.setup();
    const first = {
      catalog: await catalog(sql, schema!),
      rows: await rows(sql, schema!),
      version: await versionRow(sql, schema!),
    };
    await new Promise((resolve) => setTimeout(resolve, 5));
    await storage.setup();
    await storage.setup({ signal: new AbortController().signal });
    assert.deepEqual(
      { catalog: await catalog(sql, schema!), rows: await rows(sql, schema!), version: await versionRow(sql, schema!) },
      first,
    );
    // The same for a version 3 table.
    await storage.setup({ fanOut: true });
    const third = await versionRow(sql, schema!);
    assert.equal(third?.version, 3);
    await storage.setup({ fanOut: true });
    assert.deepEqual(await versionRow(sql, schema!), third);
  }));

test("postgres upgrade: a table of a newer schema version is refused with OutboxConfigError, untouched", () =>
  withSchemas(1, async (sql, [schema]) => {
    const storage = postgresStorage(asSql(sql), { schema });
    await storage.setup();
    await sql.unsafe(`UPDATE "${schema}".outbox_schema SET version = $1`, [SCHEMA_VERSION + 1]);
    const before = await catalog(sql, schema!);
    for (const fanOut of [false, true]) {
      await assert.rejects(
        storage.setup({ fanOut }),
        (e: unknown) =>
          e instanceof OutboxConfigError &&
          e.message.includes(
            `schema version ${SCHEMA_VERSION + 1}, newer than this @x/outbox knows (${SCHEMA_VERSION})`,
          ) &&
          /upgrade the package/.test(e.message),
      );
    }
    assert.deepEqual(await catalog(sql, schema!), before);
    assert.equal(await storage.schemaVersion(), SCHEMA_VERSION + 1);
  }));

test("postgres upgrade: four setup() calls at once on a version 1 table upgrade it once, without an error", () =>
  withSchemas(2, async (sql, [schema, fresh]) => {
    await createV1(sql, schema!);
    await insertV1(sql, schema!, [{ id: "m1", key: "k" }, { id: "m2" }]);
    const clients = Array.from({ length: 4 }, () => openSql(1));
    try {
      await Promise.all(clients.map((c) => postgresStorage(asSql(c), { schema }).setup()));
    } finally {
      await Promise.all(clients.map((c) => c.end({ timeout: 1 })));
    }
    assert.equal((await versionRow(sql, schema!))?.version, 2);
    await postgresStorage(asSql(sql), { schema: fresh }).setup();
    assert.deepEqual(await catalog(sql, schema!), await catalog(sql, fresh!));
    assert.deepEqual((await rows(sql, schema!)).map((r) => `${r.id}@${r.destination}`), ["m1@", "m2@"]);
  }));

test("postgres upgrade: on a version 1 table before its setup(), this version's enqueue works and its claim says to run setup()", () =>
  withSchemas(1, async (sql, [schema]) => {
    await createV1(sql, schema!);
    const storage = postgresStorage(asSql(sql), { schema });
    const outbox = createOutbox({ storage, publisher: () => {} });
    // The one publisher's insert names no destination: a writer may be deployed first.
    await outbox.enqueue(asSql(sql) as PostgresTx, { id: "early", topic: "t", payload: 1 });
    const now = Date.now();
    await assert.rejects(
      storage.claim({ token: "t", now, lockedUntil: now + 60_000, limit: 10 }),
      /no destination column \(schema version 1\); run outbox\.setup\(\) to upgrade it/,
    );
    await storage.setup();
    assert.deepEqual(
      (await storage.claim({ token: "t", now, lockedUntil: now + 60_000, limit: 10 })).map((r) => r.id),
      [
        "early",
      ],
    );
  }));
