import { storageConformance } from "./conformance/storage.ts";
import { postgresHarness } from "./postgres_helpers.ts";

storageConformance("postgres", () => postgresHarness());

// ------------------------------------------------------------- Postgres-specific

import assert from "node:assert/strict";
import { createOutbox, memoryPublisher, OutboxConfigError, type OutboxStorage } from "../mod.ts";
import { postgresSchema, type PostgresSql, postgresStorage, type PostgresTx } from "../adapters/postgres/mod.ts";
import { postgresNames, relayQueries, type SqlQuery } from "../adapters/postgres/sql.ts";
import { test } from "./harness.ts";
import postgres from "postgres";
import { openSql, PG_URL, uniqueSchema } from "./postgres_helpers.ts";
import { until } from "./faults/helpers.ts";

async function withSchema(body: (sql: ReturnType<typeof openSql>, schema: string) => Promise<void>) {
  const sql = openSql();
  const schema = uniqueSchema("spec");
  try {
    await body(sql, schema);
  } finally {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await sql.end({ timeout: 1 });
  }
}

const asSql = (sql: unknown) => sql as PostgresSql;
const asTx = (sql: unknown) => sql as PostgresTx;

test("postgres: schema and table names that are not plain identifiers are rejected, injection included", () =>
  withSchema(async (sql, schema) => {
    await sql.unsafe(`CREATE SCHEMA "${schema}"`);
    await sql.unsafe(`CREATE TABLE "${schema}".victim (id int)`);
    const bad = [
      `x"; DROP TABLE "${schema}".victim; --`,
      "outbox; DROP TABLE victim",
      "Robert'); --",
      "a b",
      "",
      "1x",
      "a".repeat(64),
      "public.outbox",
    ];
    for (const name of bad) {
      assert.throws(
        () => postgresStorage(asSql(sql), { table: name }),
        (e: unknown) => e instanceof OutboxConfigError && e.path === "table",
      );
      assert.throws(
        () => postgresStorage(asSql(sql), { schema: name }),
        (e: unknown) => e instanceof OutboxConfigError && e.path === "schema",
      );
      assert.throws(() => postgresSchema({ schema: name }), OutboxConfigError);
    }
    assert.throws(
      () => postgresStorage({} as PostgresSql),
      (e: unknown) => e instanceof OutboxConfigError && e.path === "sql",
    );
    assert.throws(() => postgresStorage(asSql(async () => {})), OutboxConfigError);
    assert.throws(() => postgresStorage(asSql(sql), { notify: "yes" } as never), /notify must be a boolean/);
    assert.throws(() => postgresStorage(asSql(sql), { tabel: "x" } as never), /Unknown option "tabel"/);
    const [row] = await sql.unsafe(`SELECT count(*)::int AS n FROM "${schema}".victim`);
    assert.equal(row!.n, 0, "the victim table is still there");
  }));

test("postgres: topic, key, header and id values with SQL in them are stored and published verbatim", () =>
  withSchema(async (sql, schema) => {
    const pub = memoryPublisher();
    const outbox = createOutbox({ storage: postgresStorage(asSql(sql), { schema }), publisher: pub });
    await outbox.setup();
    const evil = `'); DROP TABLE "${schema}".outbox; --`;
    await sql.begin((tx) =>
      outbox.enqueue(tx as unknown as PostgresTx, {
        id: evil,
        topic: "t'1",
        key: evil,
        headers: { "x-evil": evil },
        payload: { evil },
      })
    );
    await outbox.tick();
    assert.equal(pub.messages.length, 1);
    const m = pub.messages[0]!;
    assert.deepEqual([m.id, m.topic, m.key, m.headers["x-evil"], (m.payload as { evil: string }).evil], [
      evil,
      "t'1",
      evil,
      evil,
      evil,
    ]);
  }));

test(
  "postgres: start() wakes on NOTIFY when another process commits, long before its next poll",
  () =>
    withSchema(async (sql, schema) => {
      const writer = openSql(1);
      try {
        const published = Promise.withResolvers<string>();
        const relay = createOutbox({
          storage: postgresStorage(asSql(sql), { schema }),
          publisher: (m) => published.resolve(m.id),
        });
        await relay.setup();
        let listening = false;
        const storage = postgresStorage(asSql(sql), { schema });
        const listened: OutboxStorage<PostgresTx> = {
          ...storage,
          listen: async (onWake, signal) => {
            await storage.listen!(onWake, signal);
            listening = true;
          },
        };
        const loop = createOutbox({ storage: listened, publisher: (m) => published.resolve(m.id) }).start({
          minIdleMs: 60_000,
          maxIdleMs: 60_000,
        });
        try {
          for (let i = 0; i < 200 && !listening; i++) await new Promise((r) => setTimeout(r, 5));
          assert.ok(listening, "LISTEN is set up");
          // A different outbox instance on another connection: no in-process hint, only NOTIFY.
          const other = createOutbox({ storage: postgresStorage(asSql(writer), { schema }), publisher: () => {} });
          await writer.begin((tx) =>
            other.enqueue(tx as unknown as PostgresTx, { id: "notified", topic: "t", payload: 1 })
          );
          assert.equal(await published.promise, "notified");
        } finally {
          await loop.stop();
        }
      } finally {
        await writer.end({ timeout: 1 });
      }
    }),
  { timeout: 10_000 },
);

test("postgres: without LISTEN (PgBouncer in transaction mode) the relay still delivers by polling", () =>
  withSchema(async (sql, schema) => {
    const published = Promise.withResolvers<string>();
    const storage = postgresStorage(asSql(sql), { schema, notify: false });
    await storage.setup();
    const noListen: OutboxStorage<PostgresTx> = {
      ...storage,
      listen: () => Promise.reject(new Error("LISTEN is not supported in transaction pooling mode")),
    };
    const errors: unknown[] = [];
    const outbox = createOutbox({
      storage: noListen,
      publisher: (m) => published.resolve(m.id),
      onError: (e) => errors.push(e),
    });
    const writer = createOutbox({ storage, publisher: () => {} });
    const loop = outbox.start({ minIdleMs: 5, maxIdleMs: 20 });
    try {
      await sql.begin((tx) => writer.enqueue(tx as unknown as PostgresTx, { id: "polled", topic: "t", payload: 1 }));
      assert.equal(await published.promise, "polled");
      assert.match(String(errors[0]), /LISTEN is not supported/);
    } finally {
      await loop.stop();
    }
  }));

test("postgres: enqueue() with an id that exists keeps the caller's transaction usable", () =>
  withSchema(async (sql, schema) => {
    const outbox = createOutbox({ storage: postgresStorage(asSql(sql), { schema }), publisher: memoryPublisher() });
    await outbox.setup();
    await outbox.enqueue(asSql(sql), { id: "taken", topic: "t", payload: 1 });
    await sql.begin(async (tx) => {
      const t = tx as unknown as PostgresTx;
      await assert.rejects(
        () => outbox.enqueue(t, [{ id: "fresh", topic: "t", payload: 1 }, { id: "taken", topic: "t", payload: 2 }]),
        /"taken" is already in the outbox/,
      );
      await outbox.enqueue(t, { id: "after", topic: "t", payload: 3 });
    });
    const rows = await outbox.inspect();
    assert.deepEqual(rows.map((r) => r.id), ["taken", "after"]);
  }));

test("postgres: postgresSchema() returns the DDL setup() runs, and setup() accepts a hand-run migration", () =>
  withSchema(async (sql, schema) => {
    const ddl = postgresSchema({ schema, table: "events" });
    for (const statement of ddl) await sql.unsafe(statement);
    const storage = postgresStorage(asSql(sql), { schema, table: "events" });
    assert.deepEqual(storage.schemaSql, ddl);
    await storage.setup();
    const idx = await sql.unsafe(
      `SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'events' ORDER BY indexname`,
      [schema],
    );
    assert.deepEqual(idx.map((r) => r.indexname), [
      "events_claim_idx",
      "events_id_key",
      "events_key_idx",
      "events_pkey",
      "events_scheduled_idx",
      "events_settled_idx",
    ]);
  }));

test("postgres: a table without the claim function (drizzle-kit, hand-written DDL) still claims, in a transaction; setup() adds the function", () =>
  withSchema(async (sql, schema) => {
    const storage = postgresStorage(asSql(sql), { schema });
    await storage.setup();
    const n = postgresNames(schema, "outbox");
    const functions = async () =>
      (await sql.unsafe(`SELECT proname FROM pg_proc WHERE pronamespace = $1::regnamespace`, [`"${schema}"`])).map((
        r,
      ) => r.proname);
    assert.deepEqual(await functions(), ["outbox_claim_v2"]);
    const outbox = createOutbox({ storage, publisher: () => {} });
    const request = () => ({
      now: Date.now(),
      limit: 10,
      token: crypto.randomUUID(),
      lockedUntil: Date.now() + 60_000,
    });

    await sql.unsafe(`DROP FUNCTION ${n.claimFunction}`);
    await outbox.enqueue(asTx(sql), [{ topic: "t", key: "k", payload: 1 }, { topic: "t", key: "k", payload: 2 }]);
    const first = await storage.claim(request());
    assert.deepEqual(first.map((r) => JSON.parse(String(r.body))), [1, 2], "claimed without the function");
    const statuses = await sql.unsafe(`SELECT DISTINCT status FROM ${n.qualified}`);
    assert.deepEqual(statuses.map((r) => r.status), ["processing"]);

    await storage.setup();
    assert.deepEqual(await functions(), ["outbox_claim_v2"]);
    await outbox.enqueue(asTx(sql), { topic: "t", key: "j", payload: 3 });
    const second = await storage.claim(request());
    assert.deepEqual(second.map((r) => JSON.parse(String(r.body))), [3], "claimed through the function again");
  }));

test("postgres: tables with 58–63 character names get every index and a claim function of their own, and claim only their own rows", () =>
  withSchema(async (sql, schema) => {
    const tables = [58, 61, 62, 63, 63].map((len, i) => (i === 4 ? "u" : "t").repeat(len - 1) + String(i));
    const storages = tables.map((table) => postgresStorage(asSql(sql), { schema, table }));
    for (const s of storages) await s.setup();
    for (const table of tables) {
      const idx = await sql.unsafe(
        `SELECT count(*)::int AS n FROM pg_indexes WHERE schemaname = $1 AND tablename = $2`,
        [schema, table],
      );
      assert.equal(idx[0]!.n, 6, `${table.length}-character table: pkey, unique id and the 4 outbox indexes`);
    }
    const fns = await sql.unsafe(`SELECT count(*)::int AS n FROM pg_proc WHERE pronamespace = $1::regnamespace`, [
      `"${schema}"`,
    ]);
    assert.equal(fns[0]!.n, tables.length, "one claim function per table");
    const outboxes = storages.map((storage) => createOutbox({ storage, publisher: () => {} }));
    for (const [i, outbox] of outboxes.entries()) {
      await outbox.enqueue(asTx(sql), { id: `in-${i}`, topic: "t", payload: i });
    }
    const request = () => ({
      now: Date.now(),
      limit: 10,
      token: crypto.randomUUID(),
      lockedUntil: Date.now() + 60_000,
    });
    for (const [i, storage] of storages.entries()) {
      assert.deepEqual((await storage.claim(request())).map((r) => r.id), [`in-${i}`]);
    }
  }));

test("postgres: claim, settle and cleanup queries use index scans", () =>
  withSchema(async (sql, schema) => {
    const storage = postgresStorage(asSql(sql), { schema });
    await storage.setup();
    const n = postgresNames(schema, "outbox");
    // A table big enough that the planner prefers indexes (ANALYZE after the load).
    await sql.unsafe(`INSERT INTO ${n.qualified} (id, topic, key, payload, status, available_at, created_at, settled_at)
      SELECT 'm' || g, 't', 'k' || (g % 100), '1', CASE WHEN g % 10 = 0 THEN 'pending' ELSE 'published' END,
        CASE WHEN g % 10 = 0 THEN g END, g, CASE WHEN g % 10 = 0 THEN NULL ELSE g END
      FROM generate_series(1, 50000) AS g`);
    await sql.unsafe(`ANALYZE ${n.qualified}`);
    const plan = async (query: SqlQuery) => {
      // Plain EXPLAIN plans without executing.
      const rows = await sql.unsafe(`EXPLAIN ${query.text}`, query.values as never[]);
      return rows.map((r) => String(r["QUERY PLAN"])).join("\n");
    };
    const q = relayQueries(n);
    const claim = await plan(
      q.claim({ now: 1_000_000, limit: 100, token: "t", lockedUntil: 1_030_000, clock: "relay" }),
    );
    assert.match(claim, /Index (Only )?Scan using outbox_claim_idx/);
    assert.match(claim, /Index (Only )?Scan using outbox_key_idx/);
    // A full batch of 500: the plan must stay on the primary key (no nested loop over the batch twice).
    const seqs = Array.from({ length: 500 }, (_, i) => (i + 1) * 10);
    const settle = await plan(q.settle({
      token: "t",
      now: 1,
      deletePublished: true,
      onDead: "block",
      settlements: seqs.flatMap((seq) => [
        { seq, outcome: "published" as const },
        { seq, outcome: "retry" as const, availableAt: 2, error: "e" },
        { seq, outcome: "dead" as const, error: "e" },
        { seq, outcome: "release" as const },
      ]),
    }));
    assert.doesNotMatch(settle, /Seq Scan on outbox/);
    assert.match(settle, /Index Scan using outbox_pkey/);
    assert.doesNotMatch(settle, /outbox_locked_idx/);
    // Each part takes the shared claim lock (a one-time filter) before it touches a row.
    // (The part for kept published rows is planned away: deletePublished is true.)
    assert.equal(settle.match(/One-Time Filter: \(\$\d+ IS NOT NULL\)/g)?.length, 4, settle);
    assert.equal(settle.match(/One-Time Filter: false/g)?.length, 1, settle);
    const cleanup = await plan(q.cleanup("published", 10_000, 1_000));
    assert.match(cleanup, /Index (Only )?Scan using outbox_settled_idx/);
    assert.doesNotMatch(claim + cleanup, /Seq Scan on outbox/);
  }));

test("postgres: a client made with fetch_types: false (as on Workers) enqueues, relays, settles and requeues", () =>
  withSchema(async (_sql, schema) => {
    const bare = postgres(PG_URL, { fetch_types: false, max: 2, onnotice: () => {} });
    try {
      const pub = memoryPublisher();
      const outbox = createOutbox({
        storage: postgresStorage(asSql(bare), { schema }),
        publisher: pub,
        onError: () => {},
      });
      await outbox.setup();
      const tricky = { "x-q": 'say "hi" \\ {a,b}' };
      await bare.begin((tx) =>
        outbox.enqueue(tx as unknown as PostgresTx, [
          { id: 'id "1", {x}', topic: "t", key: "k,1", payload: { n: 1 }, headers: tricky },
          { id: "id-2", topic: "t", key: null, payload: new Uint8Array([7, 8]) },
        ])
      );
      await bare.begin((tx) => outbox.enqueue(tx as unknown as PostgresTx, { id: "id-3", topic: "t", payload: 3 }));
      const report = await outbox.tick();
      assert.equal(report.published, 3);
      assert.deepEqual(pub.messages.map((m) => m.id).sort(), ['id "1", {x}', "id-2", "id-3"].sort());
      assert.deepEqual(pub.messages.find((m) => m.id === 'id "1", {x}')!.headers, tricky);
      assert.equal(await outbox.requeue({ ids: ["nothing"] }), 0);
    } finally {
      await bare.end({ timeout: 1 });
    }
  }));

test("postgres: an aborted stats() waiting on a table lock rejects at once, and its statement is cancelled on the server", () =>
  withSchema(async (sql, schema) => {
    const outbox = createOutbox({
      storage: postgresStorage(asSql(sql), { schema }),
      publisher: memoryPublisher(),
    });
    await outbox.setup();
    const holder = openSql();
    const app = `x-outbox-abort-${schema}`;
    const waiter = postgres(PG_URL, { max: 1, onnotice: () => {}, connection: { application_name: app } });
    try {
      // Another session holds the table, so the stats query waits for its lock on the server.
      const release = Promise.withResolvers<void>();
      const locked = Promise.withResolvers<void>();
      const held = holder.begin(async (tx) => {
        await tx.unsafe(`LOCK TABLE "${schema}".outbox IN ACCESS EXCLUSIVE MODE`);
        locked.resolve();
        await release.promise;
      });
      await locked.promise;
      const controller = new AbortController();
      const waiting = createOutbox({
        storage: postgresStorage(asSql(waiter), { schema }),
        publisher: memoryPublisher(),
      }).stats({ signal: controller.signal });
      const lockWait = async () =>
        (await sql.unsafe(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'`,
          [app],
        ))[0]!.n === 1;
      await until("the stats query to wait for the table lock", lockWait);
      controller.abort();
      await assert.rejects(waiting, (e: unknown) => e instanceof DOMException && e.name === "AbortError");
      await until("the server to cancel the waiting statement", async () => !(await lockWait()));
      release.resolve();
      await held;
      const again = createOutbox({ storage: postgresStorage(asSql(waiter), { schema }), publisher: memoryPublisher() });
      assert.equal((await again.stats()).pending, 0, "the connection serves the next call");
    } finally {
      await waiter.end({ timeout: 1 });
      await holder.end({ timeout: 1 });
    }
  }));
