import { storageConformance } from "./conformance/storage.ts";
import { postgresHarness } from "./postgres_helpers.ts";

storageConformance("postgres", () => postgresHarness());

// ------------------------------------------------------------- Postgres-specific

import assert from "node:assert/strict";
import {
  type ClaimRequest,
  createOutbox,
  memoryPublisher,
  OutboxConfigError,
  OutboxMessageError,
  type OutboxStorage,
} from "../mod.ts";
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
    assert.equal(await storage.schemaVersion(), 2, "the hand-run DDL records its version");
    await storage.setup();
    assert.equal(await storage.schemaVersion(), 2);
    const idx = await sql.unsafe(
      `SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'events' ORDER BY indexname`,
      [schema],
    );
    assert.deepEqual(idx.map((r) => r.indexname), [
      "events_claim_dest_idx",
      "events_id_key",
      "events_key_dest_idx",
      "events_pkey",
      "events_scheduled_idx",
      "events_settled_idx",
    ]);
    // The fan-out DDL on a fresh table: version 3, unique per (id, destination).
    const fanOut = postgresSchema({ schema, table: "fanned", fanOut: true });
    for (const statement of fanOut) await sql.unsafe(statement);
    const fanned = postgresStorage(asSql(sql), { schema, table: "fanned" });
    assert.equal(await fanned.schemaVersion(), 3);
    await fanned.setup();
    assert.equal(await fanned.schemaVersion(), 3, "setup() without fanOut never downgrades");
    const unique = await sql.unsafe(
      `SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'fanned' AND indexdef LIKE 'CREATE UNIQUE%'
       ORDER BY indexname`,
      [schema],
    );
    assert.deepEqual(unique.map((r) => r.indexname), ["fanned_id_dest_key", "fanned_pkey"]);
    assert.equal(await postgresStorage(asSql(sql), { schema, table: "none" }).schemaVersion(), null);
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
    assert.deepEqual(await functions(), ["outbox_claim_v2", "outbox_claim_v3"]);
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
    assert.deepEqual(await functions(), ["outbox_claim_v2", "outbox_claim_v3"]);
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
    assert.equal(fns[0]!.n, 2 * tables.length, "claim functions (v3, and v2 for version 1 relays) per table");
    for (const s of storages) assert.equal(await s.schemaVersion(), 2, "a version record per table");
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

test("postgres: claim, settle, cleanup and stats queries use index scans, on a table of two destinations", () =>
  withSchema(async (sql, schema) => {
    const storage = postgresStorage(asSql(sql), { schema });
    await storage.setup({ fanOut: true });
    const n = postgresNames(schema, "outbox");
    // A table big enough that the planner prefers indexes (ANALYZE after the load): 25,000
    // messages, each with a row for destination "" and one for "hooks".
    await sql.unsafe(
      `INSERT INTO ${n.qualified} (id, destination, topic, key, payload, status, available_at, created_at, settled_at)
      SELECT 'm' || (g / 2), CASE WHEN g % 2 = 0 THEN '' ELSE 'hooks' END, 't', 'k' || (g / 2 % 100), '1',
        CASE WHEN g / 2 % 10 = 0 THEN 'pending' ELSE 'published' END,
        CASE WHEN g / 2 % 10 = 0 THEN g END, g, CASE WHEN g / 2 % 10 = 0 THEN NULL ELSE g END
      FROM generate_series(2, 50001) AS g`,
    );
    await sql.unsafe(`ANALYZE ${n.qualified}`);
    const plan = async (query: SqlQuery) => {
      // Plain EXPLAIN plans without executing.
      const rows = await sql.unsafe(`EXPLAIN (COSTS OFF) ${query.text}`, query.values as never[]);
      return rows.map((r) => String(r["QUERY PLAN"])).join("\n");
    };
    const q = relayQueries(n);
    const claimOf = (destination?: string) =>
      q.claim({ now: 1_000_000, limit: 100, token: "t", lockedUntil: 1_030_000, clock: "relay", destination });
    const claim = await plan(claimOf());
    // The scan, the per-key barrier and the skipped check each seek to the destination.
    assert.match(
      claim,
      /Index Scan using outbox_claim_dest_idx on outbox c\s+Index Cond: \(\(destination = ''::text\)/,
    );
    assert.match(
      claim,
      /Index Only Scan using outbox_key_dest_idx on outbox b\s+Index Cond: \(\(destination = ''::text\)/,
    );
    assert.match(
      claim,
      /Index (Only )?Scan (using|on) outbox_(claim|key)_dest_idx( on outbox s)?\s+Index Cond: \(\(destination = ''::text\)/,
    );
    const hooks = await plan(claimOf("hooks"));
    assert.match(
      hooks,
      /Index Scan using outbox_claim_dest_idx on outbox c\s+Index Cond: \(\(destination = 'hooks'::text\)/,
    );
    assert.doesNotMatch(claim + hooks, /Seq Scan on outbox|Sort/);
    // The claim function keeps a generic plan once it has run a few times: the same.
    const claimText = q.claim({ now: 0, limit: 0, token: "", lockedUntil: 0 }).text;
    await sql.begin(async (tx) => {
      await tx.unsafe(`SET LOCAL plan_cache_mode = force_generic_plan`);
      await tx.unsafe(`PREPARE outbox_claim_plan (bigint, integer, text, bigint, text) AS ${claimText}`);
      const rows = await tx.unsafe(`EXPLAIN (COSTS OFF) EXECUTE outbox_claim_plan (1000000, 100, 't', 30000, 'hooks')`);
      await tx.unsafe(`DEALLOCATE outbox_claim_plan`);
      const generic = rows.map((r) => String(r["QUERY PLAN"])).join("\n");
      assert.match(generic, /Index Scan using outbox_claim_dest_idx on outbox c\s+Index Cond: \(\(destination = \$5\)/);
      assert.match(generic, /Index Only Scan using outbox_key_dest_idx on outbox b/);
      assert.doesNotMatch(generic, /Seq Scan on outbox|Sort/);
    });
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
    // stats() counts every row (a sequential scan), but finds the oldest due row of each
    // destination with a probe of claim_dest_idx, skipping from destination to destination.
    const stats = await plan(q.stats(1_000_000));
    assert.equal(stats.match(/Index (Only )?Scan using outbox_claim_dest_idx/g)?.length, 3, stats);
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

// ------------------------------------------------------------------------- fan-out

/** A due row for `destination`, as the core's enqueue writes it. */
function row(id: string, destination: string, key: string | null = null) {
  const now = Date.now() - 1_000;
  return {
    id,
    topic: "t",
    key,
    body: JSON.stringify(id),
    headers: null,
    availableAt: now,
    deliverAt: null,
    createdAt: now,
    destination,
  };
}

/** A claim request for `destination`, on the database's clock. */
function claimOf(destination: string, limit = 100): ClaimRequest {
  const now = Date.now();
  return { token: crypto.randomUUID(), now, lockedUntil: now + 60_000, limit, destination };
}

/** Claimed ids in seq order (RETURNING gives them in any order). */
const tags = (rows: readonly { id: string; seq: number }[]) => [...rows].sort((a, b) => a.seq - b.seq).map((r) => r.id);

test("postgres: fan-out rows of one id are claimed per destination, each on its own", () =>
  withSchema(async (sql, schema) => {
    const storage = postgresStorage(asSql(sql), { schema });
    await storage.setup({ fanOut: true });
    await storage.insert(asTx(sql), [row("m1", "nats", "k"), row("m1", "hooks", "k")]);
    await storage.insert(asTx(sql), [row("m2", "nats", "k"), row("m2", "hooks", "k")]);
    const nats = claimOf("nats");
    assert.deepEqual(tags(await storage.claim(nats)), ["m1", "m2"]);
    assert.deepEqual(tags(await storage.claim(claimOf("nats"))), [], "nats' rows are leased");
    const hooks = claimOf("hooks", 1);
    assert.deepEqual(tags(await storage.claim(hooks)), ["m1"], "hooks' copy is not held by nats' lease");
    assert.deepEqual(tags(await storage.claim(claimOf(""))), [], "the one publisher's destination has no rows");
    // Settling one destination's rows leaves the other's alone.
    const [m1nats, m2nats] = (await storage.inspect!({ destination: "nats" })).map((r) => r.seq);
    assert.equal(
      await storage.settle({
        token: nats.token,
        now: Date.now(),
        settlements: [{ seq: m1nats!, outcome: "published" }, { seq: m2nats!, outcome: "published" }],
        deletePublished: false,
      }),
      2,
    );
    const rows = await storage.inspect!();
    assert.deepEqual(rows.map((r) => `${r.id}@${r.destination}:${r.status}`), [
      "m1@nats:published",
      "m1@hooks:processing",
      "m2@nats:published",
      "m2@hooks:pending",
    ]);
    const stats = await storage.stats(Date.now());
    assert.deepEqual(stats.destinations, {
      nats: { pending: 0, processing: 0, published: 2, dead: 0 },
      hooks: { pending: 1, processing: 1, published: 0, dead: 0 },
    });
    assert.deepEqual(stats.topics, { t: { pending: 1, processing: 1, published: 2, dead: 0 } });
  }));

test("postgres: a key's row backing off or dead on one destination does not hold back its rows on another", () =>
  withSchema(async (sql, schema) => {
    const storage = postgresStorage(asSql(sql), { schema });
    await storage.setup({ fanOut: true });
    const run = ["m1", "m2", "m3"].flatMap((id) => [row(id, "a", "k"), row(id, "b", "k")]);
    await storage.insert(asTx(sql), run);
    const settleFirst = async (destination: string, outcome: "retry" | "dead") => {
      const claim = claimOf(destination, 1);
      const [first] = await storage.claim(claim);
      assert.equal(first?.id, "m1");
      const settlement = outcome === "retry"
        ? { seq: first!.seq, outcome, availableAt: claim.now + 3_600_000, error: "503" }
        : { seq: first!.seq, outcome, error: "410" };
      await storage.settle({
        token: claim.token,
        now: claim.now,
        settlements: [settlement],
        deletePublished: false,
        onDead: "block",
      });
    };
    // m1 backs off an hour on a: the key waits there, and only there.
    await settleFirst("a", "retry");
    assert.deepEqual(tags(await storage.claim(claimOf("a"))), [], "a: m2 and m3 wait behind m1's retry");
    // m1 goes dead on b and blocks the key there (onDead "block").
    await settleFirst("b", "dead");
    assert.deepEqual(tags(await storage.claim(claimOf("b"))), [], "b: m2 and m3 wait behind the dead m1");
    assert.equal((await storage.stats(Date.now())).blockedKeys, 1);
    // Requeue on b alone: b's run goes on; a's still waits for its retry.
    assert.equal(await storage.requeue!({ now: Date.now(), status: "dead", destination: "a" }), 0);
    assert.equal(await storage.requeue!({ now: Date.now(), status: "dead", destination: "b" }), 1);
    assert.deepEqual(tags(await storage.claim(claimOf("b"))), ["m1", "m2", "m3"]);
    assert.deepEqual(tags(await storage.claim(claimOf("a"))), []);
  }));

test("postgres: an id already in the outbox for one destination is a duplicate for any other, in either insert", () =>
  withSchema(async (sql, schema) => {
    const storage = postgresStorage(asSql(sql), { schema });
    await storage.setup({ fanOut: true });
    await storage.insert(asTx(sql), [row("x", "a")]);
    await sql.begin(async (tx) => {
      await assert.rejects(storage.insert(asTx(tx), [row("x", "b")]), /"x" is already in the outbox/);
      await assert.rejects(storage.insert(asTx(tx), [row("y", "a"), row("x", "c")]), OutboxMessageError);
      await storage.insert(asTx(tx), [row("z", "a"), row("z", "b")]);
    });
    assert.deepEqual((await storage.inspect!()).map((r) => `${r.id}@${r.destination}`), ["x@a", "z@a", "z@b"]);
  }));

test("postgres: fan-out rows into a table of schema version 2 are refused with OutboxConfigError, writing nothing", () =>
  withSchema(async (sql, schema) => {
    const storage = postgresStorage(asSql(sql), { schema });
    await storage.setup();
    const fan = createOutbox({ storage, publishers: { nats: () => {}, hooks: () => {} } });
    await sql.begin(async (tx) => {
      await fan.enqueue(asTx(tx), { id: "before", topic: "t", payload: 1 }).then(
        () => assert.fail("a version 2 table took fan-out rows"),
        (e: unknown) => {
          assert.ok(e instanceof OutboxConfigError, String(e));
          assert.match(e.message, /"before" for several destinations/);
          assert.match(e.message, /outbox setup --fan-out`, to upgrade the table to schema version 3/);
        },
      );
      // The transaction is still usable, and nothing of the refused message is in it.
      await createOutbox({ storage, publisher: () => {} }).enqueue(asTx(tx), { id: "after", topic: "t", payload: 2 });
      assert.deepEqual((await tx.unsafe(`SELECT id, destination FROM "${schema}".outbox`)).map((r) => r.id), ["after"]);
    });
    // One destination per id is fine on version 2; fan.setup() upgrades, then fan-out works.
    await storage.insert(asTx(sql), [row("single", "nats")]);
    await fan.setup();
    assert.equal(await storage.schemaVersion(), 3);
    await fan.enqueue(asTx(sql), { id: "fanned", topic: "t", payload: 3 });
    assert.deepEqual((await storage.inspect!()).map((r) => `${r.id}@${r.destination}`), [
      "after@",
      "single@nats",
      "fanned@nats",
      "fanned@hooks",
    ]);
  }));

test("postgres: a 63-character table goes to schema version 3: its id constraint is found and dropped whatever its name", () =>
  withSchema(async (sql, schema) => {
    const table = "f".repeat(63);
    const storage = postgresStorage(asSql(sql), { schema, table });
    await storage.setup();
    const unique = async () =>
      (await sql.unsafe(
        `SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = $2 AND indexdef LIKE 'CREATE UNIQUE%'
         AND indexname NOT LIKE '%pkey' ORDER BY indexname`,
        [schema, table],
      )).map((r) => String(r.indexname));
    const [before] = await unique();
    assert.ok(before && !before.endsWith(`${table}_id_key`), `Postgres shortened the name: ${before}`);
    await storage.setup({ fanOut: true });
    assert.equal(await storage.schemaVersion(), 3);
    const after = await unique();
    assert.equal(after.length, 1);
    assert.match(after[0]!, /_id_dest_key$/);
    await storage.insert(asTx(sql), [row("m", "a"), row("m", "b")]);
    assert.equal((await storage.inspect!()).length, 2);
  }));
