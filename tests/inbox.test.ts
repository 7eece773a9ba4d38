/**
 * The inbox on real Postgres and libSQL: first receive vs redelivery, rollback, consumer
 * scoping, a duplicate inside a Postgres transaction, racing transactions, retention,
 * typed errors, identifiers; and end to end on the real NATS JetStream, where a pull
 * consumer with lost acks, crashes before commit, naks and late publisher duplicates
 * applies each message exactly once.
 */

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import type { Client, Transaction } from "@libsql/client";
import { AckPolicy, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import type postgres from "postgres";
import { OutboxConfigError, OutboxMessageError, OutboxStorageError } from "../mod.ts";
import { createInbox, type Inbox, type InboxOptions, type InboxStorage } from "../inbox/mod.ts";
import { libsqlInbox, libsqlInboxSchema, type LibsqlInboxTx } from "../adapters/libsql/mod.ts";
import {
  postgresInbox,
  postgresInboxSchema,
  type PostgresInboxSql,
  type PostgresInboxTx,
} from "../adapters/postgres/mod.ts";
import { inboxCleanupSql as libsqlCleanupSql, libsqlInboxNames } from "../adapters/libsql/inbox_sql.ts";
import { inboxCleanupSql } from "../adapters/postgres/inbox_sql.ts";
import { postgresNames } from "../adapters/postgres/sql.ts";
import { test } from "./harness.ts";
import { openClient, tempDatabase } from "./libsql_helpers.ts";
import { NATS_URL, uniqueName } from "./nats_helpers.ts";
import { openSql, uniqueSchema } from "./postgres_helpers.ts";

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------
// One harness per database: an inbox table, a counters table the "effects" write to
// (one row per consumer and message id, incremented on each apply), transactions.
// ---------------------------------------------------------------------------

type InboxSettings = Omit<InboxOptions<unknown, unknown>, "storage">;

interface Db {
  readonly name: "libsql" | "postgres";
  /** A fresh inbox on this database's table. */
  inbox(settings?: InboxSettings): Inbox<unknown, unknown>;
  /** Runs fn in a transaction and commits it. */
  commit<T>(fn: (tx: unknown) => Promise<T>): Promise<T>;
  /** Runs fn in a transaction and rolls it back. */
  rollback(fn: (tx: unknown) => Promise<void>): Promise<void>;
  /** The message's effect: counters[consumer/id] += 1. */
  apply(tx: unknown, consumer: string, id: string): Promise<void>;
  /** Counters as `{ "consumer/id": n }`. */
  counters(): Promise<Record<string, number>>;
  /** Rows in the inbox table. */
  inboxRows(): Promise<number>;
  /** A transaction that is already committed, where the driver refuses to use one. */
  closedTransaction?(): Promise<unknown>;
  /** The client itself (receive outside a transaction). */
  readonly client: unknown;
  close(): Promise<void>;
}

async function libsqlDb(): Promise<Db & { url: string; raw: Client }> {
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  await client.execute(
    "CREATE TABLE counters (consumer TEXT NOT NULL, id TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (consumer, id))",
  );
  // One write transaction at a time on this client: two at once would fail with
  // SQLITE_BUSY (the embedded client sets no busy timeout), which is not under test here.
  let queue: Promise<unknown> = Promise.resolve();
  const serialized = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn, fn);
    queue = run.catch(() => {});
    return run;
  };
  const make = (settings: InboxSettings = {}) =>
    createInbox({ ...settings, storage: libsqlInbox(client) as InboxStorage<unknown, unknown> });
  await make().setup();
  return {
    name: "libsql",
    url,
    raw: client,
    client,
    inbox: make,
    commit: (fn) =>
      serialized(async () => {
        const tx = await client.transaction("write");
        try {
          const result = await fn(tx);
          await tx.commit();
          return result;
        } finally {
          tx.close();
        }
      }),
    rollback: (fn) =>
      serialized(async () => {
        const tx = await client.transaction("write");
        try {
          await fn(tx);
        } finally {
          await tx.rollback().catch(() => {});
          tx.close();
        }
      }),
    async apply(tx, consumer, id) {
      await (tx as Transaction).execute({
        sql:
          "INSERT INTO counters (consumer, id, n) VALUES (?, ?, 1) ON CONFLICT (consumer, id) DO UPDATE SET n = n + 1",
        args: [consumer, id],
      });
    },
    async counters() {
      const rs = await client.execute("SELECT consumer, id, n FROM counters");
      return Object.fromEntries(rs.rows.map((r) => [`${r.consumer}/${r.id}`, Number(r.n)]));
    },
    async inboxRows() {
      return Number((await client.execute(`SELECT count(*) AS n FROM outbox_inbox`)).rows[0]!.n);
    },
    async closedTransaction() {
      const tx = await client.transaction("write");
      await tx.commit();
      return tx;
    },
    async close() {
      client.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

interface PostgresDb extends Db {
  readonly schema: string;
  readonly sql: postgres.Sql;
  /** Another client with one connection. */
  connect(): Promise<postgres.Sql>;
  /** An inbox whose setup and cleanup run on another client. */
  inboxOn(client: postgres.Sql, settings?: InboxSettings): Inbox<unknown, unknown>;
}

async function postgresDb(): Promise<PostgresDb> {
  const schema = uniqueSchema("inbox");
  const sql = openSql();
  const clients = [sql];
  await sql.unsafe(`CREATE SCHEMA "${schema}"`);
  await sql.unsafe(
    `CREATE TABLE "${schema}".counters (consumer text NOT NULL, id text NOT NULL, n int NOT NULL, PRIMARY KEY (consumer, id))`,
  );
  const make = (settings: InboxSettings = {}, on: postgres.Sql = sql) =>
    createInbox({ ...settings, storage: postgresInbox(on, { schema }) as InboxStorage<unknown, unknown> });
  await make().setup();
  const marker = new Error("rollback");
  return {
    name: "postgres",
    schema,
    sql,
    client: sql,
    inbox: (settings) => make(settings),
    inboxOn: (client, settings) => make(settings, client),
    async connect() {
      const other = openSql(1);
      clients.push(other);
      return other;
    },
    commit: async <T>(fn: (tx: unknown) => Promise<T>) => (await sql.begin((tx) => fn(tx))) as T,
    async rollback(fn) {
      await sql.begin(async (tx) => {
        await fn(tx);
        throw marker;
      }).catch((e) => {
        if (e !== marker) throw e;
      });
    },
    async apply(tx, consumer, id) {
      await (tx as PostgresInboxTx).unsafe(
        `INSERT INTO "${schema}".counters (consumer, id, n) VALUES ($1, $2, 1) ON CONFLICT (consumer, id) DO UPDATE SET n = counters.n + 1`,
        [consumer, id],
      );
    },
    async counters() {
      const rows = await sql.unsafe(`SELECT consumer, id, n FROM "${schema}".counters`);
      return Object.fromEntries(rows.map((r) => [`${r.consumer}/${r.id}`, Number(r.n)]));
    },
    async inboxRows() {
      const [row] = await sql.unsafe(`SELECT count(*)::int AS n FROM "${schema}".outbox_inbox`);
      return Number(row!.n);
    },
    async close() {
      await sql.unsafe(`DROP SCHEMA "${schema}" CASCADE`).catch(() => {});
      await Promise.all(clients.map((c) => c.end({ timeout: 1 })));
    },
  };
}

const databases: [string, () => Promise<Db>][] = [["libsql", libsqlDb], ["postgres", postgresDb]];

async function using<T extends Db>(open: () => Promise<T>, body: (db: T) => Promise<void>): Promise<void> {
  const db = await open();
  try {
    await body(db);
  } finally {
    await db.close();
  }
}

// ---------------------------------------------------------------------------
// Both databases
// ---------------------------------------------------------------------------

for (const [name, open] of databases) {
  test(`inbox (${name}): receive() is true the first time and false for every redelivery`, () =>
    using(open, async (db) => {
      const inbox = db.inbox();
      const handle = (id: string) =>
        db.commit(async (tx) => {
          const fresh = await inbox.receive(tx, id);
          if (fresh) await db.apply(tx, inbox.consumer, id);
          return fresh;
        });
      assert.equal(await handle("m-1"), true);
      assert.equal(await handle("m-1"), false);
      assert.equal(await handle("m-1"), false);
      assert.equal(await handle("m-2"), true);
      // Twice within one transaction: the second sees the first's uncommitted row.
      assert.deepEqual(
        await db.commit(async (tx) => [await inbox.receive(tx, "m-3"), await inbox.receive(tx, "m-3")]),
        [true, false],
      );
      assert.deepEqual(await db.counters(), { "default/m-1": 1, "default/m-2": 1 });
      assert.equal(await db.inboxRows(), 3);
    }));

  test(`inbox (${name}): a rolled-back transaction records nothing, so the redelivery is applied`, () =>
    using(open, async (db) => {
      const inbox = db.inbox();
      // The consumer crashes after applying, before commit.
      await db.rollback(async (tx) => {
        assert.equal(await inbox.receive(tx, "m-1"), true);
        await db.apply(tx, "default", "m-1");
      });
      assert.equal(await db.inboxRows(), 0);
      assert.deepEqual(await db.counters(), {});
      // The redelivery is new to the inbox and is applied, once.
      const fresh = await db.commit(async (tx) => {
        const f = await inbox.receive(tx, "m-1");
        if (f) await db.apply(tx, "default", "m-1");
        return f;
      });
      assert.equal(fresh, true);
      assert.deepEqual(await db.counters(), { "default/m-1": 1 });
    }));

  test(`inbox (${name}): two consumers of one stream each handle a message once`, () =>
    using(open, async (db) => {
      const billing = db.inbox({ consumer: "billing" });
      const shipping = db.inbox({ consumer: "shipping" });
      const results = await db.commit(async (tx) => [
        await billing.receive(tx, "m-1"),
        await shipping.receive(tx, "m-1"),
        await billing.receive(tx, "m-1"),
        // A per-call consumer overrides the inbox's default.
        await billing.receive(tx, "m-1", { consumer: "audit" }),
        await shipping.receive(tx, "m-1", { consumer: "audit" }),
      ]);
      assert.deepEqual(results, [true, true, false, true, false]);
      assert.equal(await db.commit((tx) => shipping.receive(tx, "m-1")), false);
      assert.equal(await db.inboxRows(), 3);
    }));

  test(`inbox (${name}): bad message ids and consumer names fail with OutboxMessageError before any write`, () =>
    using(open, async (db) => {
      const inbox = db.inbox();
      const bad: [unknown, RegExp][] = [
        ["", /Message id must be a non-empty string of at most 255 characters, got ""/],
        [42, /got number 42/],
        [null, /got null/],
        [undefined, /got undefined/],
        [{ id: "x" }, /got an object/],
        ["x".repeat(256), /at most 255/],
        ["a\u0000b", /must not contain NUL/],
        ["a\uD800b", /unpaired surrogate/],
      ];
      await db.commit(async (tx) => {
        for (const [id, message] of bad) {
          await assert.rejects(() => inbox.receive(tx, id as string), (e: unknown) => {
            assert.ok(e instanceof OutboxMessageError, String(e));
            assert.equal(e.path, "messageId");
            assert.match(e.message, message);
            return true;
          });
        }
        await assert.rejects(() => inbox.receive(tx, "m-1", { consumer: "" }), {
          name: "OutboxMessageError",
          path: "consumer",
        });
        await assert.rejects(() => inbox.receive(tx, "m-1", { consumer: "c".repeat(256) }), {
          name: "OutboxMessageError",
          path: "consumer",
        });
        await assert.rejects(() => inbox.receive(tx, "m-1", { group: "x" } as never), {
          name: "OutboxMessageError",
          path: "group",
        });
        await assert.rejects(() => inbox.receive(tx, "m-1", "billing" as never), {
          name: "OutboxMessageError",
          path: "options",
        });
        // The transaction is untouched and still usable (Postgres would refuse an aborted one).
        assert.equal(await inbox.receive(tx, "x".repeat(255)), true);
        assert.equal(await inbox.receive(tx, "emoji 📦", { consumer: "c".repeat(255) }), true);
      });
      assert.equal(await db.inboxRows(), 2);
    }));

  test(`inbox (${name}): receive() on a closed transaction or a missing table fails with OutboxStorageError`, () =>
    using(open, async (db) => {
      const inbox = db.inbox();
      // (A postgres.js transaction used after sql.begin() has returned is not refused by
      // the driver: the query runs on whatever its connection does next. Not tested.)
      if (db.closedTransaction) {
        await assert.rejects(async () => inbox.receive(await db.closedTransaction!(), "m-1"), (e: unknown) => {
          assert.ok(e instanceof OutboxStorageError, String(e));
          assert.match(e.message, /the transaction is already closed/);
          return true;
        });
      }
      await assert.rejects(() => inbox.receive({} as never, "m-1"), /receive needs a/);
      await assert.rejects(() => inbox.receive(null as never, "m-1"), /receive needs a/);
      const other = createInbox({
        storage: (db.name === "libsql"
          ? libsqlInbox(db.client as Client, { table: "nowhere" })
          : postgresInbox(db.client as PostgresInboxSql, {
            schema: (db as unknown as { schema: string }).schema,
            table: "nowhere",
          })) as InboxStorage<
            unknown,
            unknown
          >,
      });
      await assert.rejects(() => db.commit((tx) => other.receive(tx as Transaction, "m-1")), (e: unknown) => {
        assert.ok(e instanceof OutboxStorageError);
        assert.match(e.message, /"nowhere" does not exist; run inbox\.setup\(\) first/);
        return true;
      });
    }));

  test(`inbox (${name}): receive() on the client itself records the id on its own`, () =>
    using(open, async (db) => {
      const inbox = db.inbox();
      assert.equal(await inbox.receive(db.client, "m-1"), true);
      assert.equal(await inbox.receive(db.client, "m-1"), false);
      assert.equal(await db.inboxRows(), 1);
    }));

  test(`inbox (${name}): setup() is idempotent, also when called concurrently`, () =>
    using(open, async (db) => {
      const inbox = db.inbox();
      await Promise.all([inbox.setup(), inbox.setup(), inbox.setup()]);
      await inbox.setup();
      assert.equal(await db.commit((tx) => inbox.receive(tx, "m-1")), true);
      await inbox.setup();
      assert.equal(await db.inboxRows(), 1);
    }));

  test(`inbox (${name}): cleanup() deletes ids older than keepMs in bounded batches, oldest first`, () =>
    using(open, async (db) => {
      let clock = 1_000_000;
      const inbox = db.inbox({ now: () => clock, retention: { keepMs: 10_000 } });
      assert.equal(inbox.keepMs, 10_000);
      await db.commit(async (tx) => {
        for (let i = 0; i < 2_500; i++) {
          clock = 1_000_000 + i; // received 1,000,000 … 1,002,499
          await inbox.receive(tx, `old-${i}`);
        }
        clock = 1_020_000;
        for (let i = 0; i < 10; i++) await inbox.receive(tx, `new-${i}`);
      });
      assert.equal(await db.inboxRows(), 2_510);
      // At 1,012,000 only ids received before 1,002,000 are older than keepMs: 2,000.
      assert.equal(await inbox.cleanup({ now: 1_012_000, limit: 7 }), 7);
      assert.equal(await inbox.cleanup({ now: new Date(1_012_000) }), 1_000);
      assert.equal(await inbox.cleanup({ now: 1_012_000 }), 993);
      assert.equal(await inbox.cleanup({ now: 1_012_000 }), 0);
      // Oldest first: exactly the ids received from 1,002,000 on are left of the old ones.
      assert.equal(await db.inboxRows(), 510);
      assert.equal(await db.commit((tx) => inbox.receive(tx, "old-1999")), true, "old-1999 was deleted");
      assert.equal(await db.commit((tx) => inbox.receive(tx, "old-2000")), false, "old-2000 was kept");
      // The inbox's own clock: at 1,025,000 every old id goes, the recent ones stay.
      clock = 1_025_000;
      assert.equal(await inbox.cleanup(), 500); // old-1999 was received again at 1,020,000: it stays
      assert.equal(await inbox.cleanup(), 0);
      assert.equal(await db.inboxRows(), 11);
      // keepMs: Infinity keeps everything.
      const forever = db.inbox({ now: () => 9e15, retention: { keepMs: Infinity } });
      assert.equal(await forever.cleanup(), 0);
      assert.equal(await db.inboxRows(), 11);
      // Bad cleanup options are configuration errors.
      await assert.rejects(() => inbox.cleanup({ limit: 0 }), { name: "OutboxConfigError", path: "limit" });
      await assert.rejects(() => inbox.cleanup({ now: Number.NaN }), { name: "OutboxConfigError", path: "now" });
      await assert.rejects(() => inbox.cleanup({ before: 1 } as never), { name: "OutboxConfigError", path: "before" });
    }));
}

// ---------------------------------------------------------------------------
// Options and identifiers (no database needed beyond a client object)
// ---------------------------------------------------------------------------

test("inbox: createInbox() rejects invalid options with OutboxConfigError naming the field", () => {
  const storage = { name: "fake", setup: async () => {}, record: async () => true, cleanup: async () => 0 };
  const cases: [unknown, string, RegExp][] = [
    [undefined, "", /needs an options object/],
    [{}, "storage", /storage must be an InboxStorage/],
    [{ storage: {} }, "storage", /storage must be an InboxStorage/],
    [{ storage, consumer: "" }, "consumer", /consumer must be a non-empty string/],
    [{ storage, consumer: 7 }, "consumer", /got number 7/],
    [{ storage, retention: { keepMs: -1 } }, "retention.keepMs", /≥ 0 \(or Infinity\)/],
    [{ storage, retention: { keepMs: Number.NaN } }, "retention.keepMs", /retention\.keepMs/],
    [{ storage, retention: { batchSize: 0 } }, "retention.batchSize", /between 1 and 100000/],
    [{ storage, retention: { batchSize: 1.5 } }, "retention.batchSize", /integer/],
    [{ storage, retention: { keep: 1 } }, "retention.keep", /unknown option "keep"/],
    [{ storage, retention: 5 }, "retention", /retention must be an object/],
    [{ storage, now: 5 }, "now", /now must be a function/],
    [{ storage, table: "x" }, "table", /Unknown option "table" passed to createInbox/],
  ];
  for (const [options, path, message] of cases) {
    assert.throws(() => createInbox(options as never), (e: unknown) => {
      assert.ok(e instanceof OutboxConfigError, `${JSON.stringify(options)}: ${String(e)}`);
      assert.equal(e.path, path, JSON.stringify(options));
      assert.match(e.message, message);
      return true;
    });
  }
  const inbox = createInbox({ storage });
  assert.equal(inbox.consumer, "default");
  assert.equal(inbox.keepMs, 7 * 86_400_000);
  // A storage without a statement form: statements() says what to use instead.
  assert.throws(() => inbox.statements("m-1"), {
    name: "OutboxConfigError",
    message: /fake inbox storage has no statement form/,
  });
  assert.equal(inbox.isDuplicate(new Error("UNIQUE constraint failed")), false);
});

test("inbox: table and schema names that are not plain identifiers are rejected before any SQL runs", async () => {
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  const sql = openSql(1);
  try {
    const evil = ['outbox_inbox"; DROP TABLE counters; --', "a b", "1abc", "x".repeat(64), "", "inbox.table", 7];
    for (const name of evil) {
      assert.throws(() => libsqlInbox(client, { table: name as string }), { name: "OutboxConfigError", path: "table" });
      assert.throws(() => libsqlInboxSchema({ table: name as string }), { name: "OutboxConfigError", path: "table" });
      assert.throws(() => postgresInbox(sql, { table: name as string }), { name: "OutboxConfigError", path: "table" });
      assert.throws(() => postgresInbox(sql, { schema: name as string }), {
        name: "OutboxConfigError",
        path: "schema",
      });
      assert.throws(() => postgresInboxSchema({ schema: name as string }), {
        name: "OutboxConfigError",
        path: "schema",
      });
    }
    assert.throws(() => libsqlInbox({} as never), { name: "OutboxConfigError", path: "client" });
    assert.throws(() => libsqlInbox(client, { schema: "x" } as never), { name: "OutboxConfigError", path: "schema" });
    assert.throws(() => libsqlInbox(client, { busyTimeoutMs: -1 }), {
      name: "OutboxConfigError",
      path: "busyTimeoutMs",
    });
    assert.throws(() => postgresInbox({} as never), { name: "OutboxConfigError", path: "sql" });
    assert.throws(() => postgresInbox(sql, { notify: true } as never), { name: "OutboxConfigError", path: "notify" });
    // Nothing ran: no table was created.
    assert.equal((await client.execute("SELECT count(*) AS n FROM sqlite_master")).rows[0]!.n, 0);
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
    await sql.end({ timeout: 1 });
  }
});

test("inbox: libsqlInboxSchema() and postgresInboxSchema() return the DDL setup() runs", () => {
  const lite = libsqlInboxSchema({ table: "seen" });
  assert.equal(lite.length, 2);
  assert.equal(
    lite[0],
    `CREATE TABLE IF NOT EXISTS "seen" (\n  consumer TEXT NOT NULL,\n  id TEXT NOT NULL,\n  received_at INTEGER NOT NULL,\n  PRIMARY KEY (consumer, id)\n) WITHOUT ROWID`,
  );
  assert.match(lite[1]!, /CREATE INDEX IF NOT EXISTS "seen_received_idx" ON "seen" \(received_at\)/);
  const pg = postgresInboxSchema({ schema: "billing" });
  assert.equal(pg[0], `CREATE SCHEMA IF NOT EXISTS "billing"`);
  assert.match(pg[1]!, /CREATE TABLE IF NOT EXISTS "billing"\."outbox_inbox"/);
  assert.match(
    pg[2]!,
    /CREATE INDEX IF NOT EXISTS "outbox_inbox_received_idx" ON "billing"\."outbox_inbox" \(received_at\)/,
  );
  assert.match(libsqlInboxSchema()[0]!, /"outbox_inbox"/);
});

// ---------------------------------------------------------------------------
// Postgres
// ---------------------------------------------------------------------------

test("inbox (postgres): a duplicate receive inside a transaction leaves the transaction usable", () =>
  using(postgresDb, async (db) => {
    const inbox = db.inbox();
    await db.commit((tx) => inbox.receive(tx, "m-1"));
    const result = await db.sql.begin(async (tx) => {
      const first = await inbox.receive(tx, "m-1"); // committed earlier: a redelivery
      const again = await inbox.receive(tx, "m-2");
      const twice = await inbox.receive(tx, "m-2"); // written by this very transaction
      // Had either duplicate raised a unique violation, this would fail with 25P02.
      await db.apply(tx, "default", "after-duplicates");
      const [row] = await tx`SELECT 1 AS one`;
      return [first, again, twice, row!.one];
    });
    assert.deepEqual(result, [false, true, false, 1]);
    assert.deepEqual(await db.counters(), { "default/after-duplicates": 1 });
    assert.equal(await db.inboxRows(), 2);
  }));

test("inbox (postgres): racing transactions: the second waits on the unique index and gets false when the first commits", () =>
  using(postgresDb, async (db) => {
    const [a, b, watcher] = [await db.connect(), await db.connect(), await db.connect()];
    const inboxA = db.inboxOn(a);
    const inboxB = createInbox({ storage: postgresInbox(b, { schema: db.schema }) });
    for (const outcome of ["commit", "rollback"] as const) {
      const id = `m-${outcome}`;
      const release = Promise.withResolvers<void>();
      const received = Promise.withResolvers<boolean>();
      const marker = new Error("rollback");
      const first = a.begin(async (tx) => {
        const fresh = await inboxA.receive(tx, id);
        if (fresh) await db.apply(tx, "default", id);
        received.resolve(fresh);
        await release.promise;
        if (outcome === "rollback") throw marker;
        return fresh;
      }).catch((e) => (e === marker ? "rolled back" : Promise.reject(e)));
      assert.equal(await received.promise, true);
      let secondDone = false;
      const second = b.begin(async (tx) => {
        const fresh = await inboxB.receive(tx, id);
        if (fresh) await db.apply(tx, "default", id);
        return fresh;
      }).finally(() => (secondDone = true));
      // The second transaction is blocked on the first one's uncommitted index entry.
      let waiting = 0;
      for (let i = 0; i < 50 && waiting === 0; i++) {
        await sleep(20);
        const [row] = await watcher`SELECT count(*)::int AS n FROM pg_stat_activity
          WHERE wait_event_type = 'Lock' AND query LIKE ${`%"${db.schema}"."outbox_inbox"%`}`;
        waiting = row!.n as number;
      }
      assert.equal(waiting, 1, "the second receive waits on a lock");
      assert.equal(secondDone, false);
      release.resolve();
      if (outcome === "commit") {
        assert.equal(await first, true);
        assert.equal(await second, false);
      } else {
        assert.equal(await first, "rolled back");
        assert.equal(await second, true, "after a rollback the waiting transaction gets the message");
      }
      assert.equal((await db.counters())[`default/${id}`], 1);
    }
  }));

test("inbox (postgres): of eight transactions racing on one id from eight connections exactly one gets true", () =>
  using(postgresDb, async (db) => {
    const connections = await Promise.all(Array.from({ length: 8 }, () => db.connect()));
    for (let round = 0; round < 5; round++) {
      const id = `m-${round}`;
      const results = await Promise.all(connections.map((c) =>
        c.begin(async (tx) => {
          const inbox = db.inboxOn(c);
          const fresh = await inbox.receive(tx, id);
          if (fresh) await db.apply(tx, "default", id);
          return fresh;
        })
      ));
      assert.equal(results.filter((r) => r === true).length, 1, JSON.stringify(results));
    }
    const counters = await db.counters();
    assert.deepEqual(Object.values(counters), [1, 1, 1, 1, 1]);
  }));

test("inbox (postgres): under REPEATABLE READ the losing racer gets a serialization failure to retry, not a false positive", () =>
  using(postgresDb, async (db) => {
    const [a, b] = [await db.connect(), await db.connect()];
    const release = Promise.withResolvers<void>();
    const received = Promise.withResolvers<void>();
    const first = a.begin("isolation level repeatable read", async (tx) => {
      const fresh = await db.inboxOn(a).receive(tx, "m-1");
      received.resolve();
      await release.promise;
      return fresh;
    });
    await received.promise;
    const second = b.begin("isolation level repeatable read", async (tx) => {
      await tx`SELECT 1`; // takes the snapshot before the first commits
      const waiting = db.inboxOn(b).receive(tx, "m-1");
      setTimeout(() => release.resolve(), 100);
      return await waiting;
    });
    assert.equal(await first, true);
    await assert.rejects(second, (e: unknown) => {
      assert.ok(e instanceof OutboxStorageError, String(e));
      assert.equal((e.cause as { code?: string }).code, "40001");
      return true;
    });
    // Retried, the message is a duplicate.
    assert.equal(await b.begin("isolation level repeatable read", (tx) => db.inboxOn(b).receive(tx, "m-1")), false);
  }));

test("inbox (postgres): statements() is not offered; receive() in a transaction is the way", () =>
  using(postgresDb, async (db) => {
    const inbox = db.inbox();
    assert.throws(() => inbox.statements("m-1"), {
      name: "OutboxConfigError",
      message: /postgres inbox storage has no statement form/,
    });
    assert.equal(inbox.isDuplicate(new Error("duplicate key")), false);
  }));

test("inbox (postgres): cleanup walks the received_at index", () =>
  using(postgresDb, async (db) => {
    await db.sql.unsafe(`INSERT INTO "${db.schema}".outbox_inbox (consumer, id, received_at)
      SELECT 'c', 'm-' || g, g FROM generate_series(1, 50000) AS g`);
    await db.sql.unsafe(`ANALYZE "${db.schema}".outbox_inbox`);
    const plan = await db.sql.unsafe(
      `EXPLAIN ${
        inboxCleanupSql(postgresNames(db.schema, "outbox_inbox")).replace("$1", "1000").replace("$2", "1000")
      }`,
    );
    const text = plan.map((r) => String(r["QUERY PLAN"])).join("\n");
    assert.match(text, /Index Scan using outbox_inbox_received_idx/, text);
    assert.match(text, /Tid Scan/, text);
    assert.doesNotMatch(text, /Seq Scan/, text);
    const inbox = db.inbox({ retention: { keepMs: 0 } });
    assert.equal(await inbox.cleanup({ now: 1_001 }), 1_000);
    assert.equal(await db.inboxRows(), 49_000);
  }));

// ---------------------------------------------------------------------------
// libSQL
// ---------------------------------------------------------------------------

test("inbox (libsql): statements() guard a client.batch(): applied once, a redelivered batch fails whole and isDuplicate() says so", () =>
  using(libsqlDb, async (db) => {
    const inbox = createInbox({ storage: libsqlInbox(db.raw), consumer: "billing" });
    const effect = (id: string) => ({
      sql:
        "INSERT INTO counters (consumer, id, n) VALUES ('billing', ?, 1) ON CONFLICT (consumer, id) DO UPDATE SET n = n + 1",
      args: [id],
    });
    const handle = async (id: string) => {
      try {
        await db.raw.batch([...inbox.statements(id), effect(id), effect(`${id}-again`)], "write");
        return "applied";
      } catch (error) {
        if (inbox.isDuplicate(error)) return "duplicate";
        throw error;
      }
    };
    assert.equal(await handle("m-1"), "applied");
    assert.equal(await handle("m-1"), "duplicate");
    assert.equal(await handle("m-2"), "applied");
    assert.deepEqual(await db.counters(), {
      "billing/m-1": 1,
      "billing/m-1-again": 1,
      "billing/m-2": 1,
      "billing/m-2-again": 1,
    });
    // Scoped per consumer like receive(), and the two forms see each other's rows.
    assert.equal(
      await db.raw.batch([...inbox.statements("m-1", { consumer: "audit" })], "write").then(() => true),
      true,
    );
    assert.equal(await db.commit((tx) => inbox.receive(tx as Transaction, "m-2")), false);
    assert.equal(await db.commit((tx) => inbox.receive(tx as Transaction, "m-3")), true);
    assert.equal(await handle("m-3"), "duplicate");
    // Any other failure is not a duplicate.
    const other = await db.raw.batch([...inbox.statements("m-4"), "INSERT INTO nowhere VALUES (1)"], "write").catch((
      e,
    ) => e);
    assert.equal(inbox.isDuplicate(other), false);
    const otherTable = await db.raw.batch([
      effect("m-9"),
      "INSERT INTO counters (consumer, id, n) VALUES ('billing', 'm-9', 1)",
    ], "write")
      .catch((e) => e);
    assert.match(String(otherTable), /UNIQUE constraint failed: counters/);
    assert.equal(inbox.isDuplicate(otherTable), false, "a unique violation of another table is not an inbox duplicate");
    assert.equal(inbox.isDuplicate(undefined), false);
    await assert.rejects(async () => inbox.statements(""), { name: "OutboxMessageError", path: "messageId" });
  }));

test("inbox (libsql): transactions racing on one id from four connections: exactly one gets true", () =>
  using(libsqlDb, async (db) => {
    const clients = await Promise.all(Array.from({ length: 4 }, () => openClient(db.url)));
    try {
      let busy = 0;
      const isBusy = (e: unknown) => /SQLITE_BUSY|database is locked/i.test(String((e as Error)?.message ?? e));
      const racer = async (client: Client, id: string) => {
        const inbox = createInbox({ storage: libsqlInbox(client) });
        for (;;) {
          let tx: Transaction;
          try {
            tx = await client.transaction("write"); // BEGIN IMMEDIATE: the write lock
          } catch (error) {
            if (!isBusy(error)) throw error;
            // The embedded driver keeps the failed BEGIN open on the client's connection,
            // and a later COMMIT there fails ("SQL statements in progress"): start afresh.
            client.reconnect();
            busy++;
            await sleep(1 + Math.random() * 5);
            continue;
          }
          try {
            const fresh = await inbox.receive(tx, id);
            if (fresh) await db.apply(tx, "default", id);
            await sleep(2); // hold the lock a little, so the others really wait
            await tx.commit();
            return fresh;
          } finally {
            tx.close();
          }
        }
      };
      for (let round = 0; round < 5; round++) {
        const results = await Promise.all(clients.map((c) => racer(c, `m-${round}`)));
        assert.equal(results.filter((r) => r).length, 1, JSON.stringify(results));
      }
      assert.deepEqual(Object.values(await db.counters()), [1, 1, 1, 1, 1]);
      assert.ok(busy > 0, "the racers waited for each other's write lock");
    } finally {
      for (const c of clients) c.close();
    }
  }));

test("inbox (libsql): two inboxes with their own tables in one database stay apart", () =>
  using(libsqlDb, async (db) => {
    const other = createInbox({ storage: libsqlInbox(db.raw, { table: "other_inbox" }) });
    await other.setup();
    const main = db.inbox();
    assert.equal(await db.commit((tx) => main.receive(tx, "m-1")), true);
    assert.equal(await db.commit((tx) => other.receive(tx as Transaction, "m-1")), true);
    assert.equal(await db.commit((tx) => other.receive(tx as Transaction, "m-1")), false);
    assert.equal(await db.inboxRows(), 1);
  }));

test("inbox (libsql): cleanup uses the received_at index", () =>
  using(libsqlDb, async (db) => {
    const rs = await db.raw.execute({
      sql: `EXPLAIN QUERY PLAN ${libsqlCleanupSql(libsqlInboxNames("outbox_inbox"))}`,
      args: [5, 10],
    });
    const plan = rs.rows.map((r) => String(r.detail)).join("\n");
    assert.match(plan, /outbox_inbox_received_idx/, plan);
    assert.match(plan, /PRIMARY KEY/, plan);
    assert.doesNotMatch(plan, /TEMP B-TREE/, plan);
  }));

// ---------------------------------------------------------------------------
// End to end on the real NATS JetStream
// ---------------------------------------------------------------------------

/**
 * What a consumer does on the first delivery of message n (by stream sequence; later
 * deliveries and late copies are handled normally):
 * 0 handle, commit, ack · 1 commit, the ack is lost (redelivered after ack_wait) ·
 * 2 crash before commit: roll back, no ack (redelivered after ack_wait) ·
 * 3 handler fails: roll back, nak (redelivered at once) · 4 commit, then nak.
 */
const fault = (n: number) => n % 5;
const MESSAGES = 20;
const LATE_COPIES = ["m-0", "m-7"]; // published again after the dedup window: new stream messages
// Deliveries per consumer: one each, a second one for faults 1–4, and the late copies.
const EXPECTED_DELIVERIES = MESSAGES +
  Array.from({ length: MESSAGES }, (_, n) => n).filter((n) => fault(n) !== 0).length +
  LATE_COPIES.length;

interface Delivery {
  id: string;
  seq: number;
  delivery: number;
  committed: boolean;
  fresh: boolean;
}

async function jetstreamExactlyOnce(db: Db): Promise<void> {
  const nc = await connect({ servers: NATS_URL });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const stream = uniqueName("INBOX");
  const subject = `${stream.toLowerCase()}.orders`;
  await jsm.streams.add({
    name: stream,
    subjects: [`${stream.toLowerCase()}.>`],
    storage: "memory",
    duplicate_window: 300 * 1_000_000,
  });
  try {
    for (let n = 0; n < MESSAGES; n++) {
      const ack = await js.publish(subject, JSON.stringify({ n }), { msgID: `m-${n}` });
      assert.equal(ack.seq, n + 1);
    }
    // A retry inside the window is dropped by the stream itself…
    assert.equal((await js.publish(subject, JSON.stringify({ n: 3 }), { msgID: "m-3" })).duplicate, true);
    // …one after it (a publisher retry that outlived the window) is stored again: only the inbox can catch it.
    await sleep(1_000);
    for (const id of LATE_COPIES) {
      assert.equal((await js.publish(subject, JSON.stringify({ late: id }), { msgID: id })).duplicate, false);
    }
    assert.equal((await jsm.streams.info(stream)).state.messages, MESSAGES + LATE_COPIES.length);

    const consume = async (durable: string): Promise<Delivery[]> => {
      await jsm.consumers.add(stream, {
        durable_name: durable,
        ack_policy: AckPolicy.Explicit,
        ack_wait: 500 * 1_000_000,
        max_deliver: 5,
      });
      const inbox = db.inbox({ consumer: durable });
      const consumer = await js.consumers.get(stream, durable);
      const messages = await consumer.consume({ max_messages: 8, expires: 1_000 });
      const log: Delivery[] = [];
      const timer = setTimeout(() => messages.stop(), 20_000);
      const handle = async (m: JsMsg) => {
        const id = m.headers?.get("Nats-Msg-Id") ?? "";
        const n = Number(id.slice(2));
        const f = m.info.deliveryCount === 1 && m.seq <= MESSAGES ? fault(n) : 0;
        const receiveAndApply = async (tx: unknown) => {
          const fresh = await inbox.receive(tx, id);
          if (fresh) await db.apply(tx, durable, id);
          return fresh;
        };
        if (f === 2 || f === 3) {
          let fresh = false;
          await db.rollback(async (tx) => void (fresh = await receiveAndApply(tx)));
          log.push({ id, seq: m.seq, delivery: m.info.deliveryCount, committed: false, fresh });
          if (f === 3) m.nak();
          return;
        }
        const fresh = await db.commit(receiveAndApply);
        log.push({ id, seq: m.seq, delivery: m.info.deliveryCount, committed: true, fresh });
        if (f === 4) m.nak();
        else if (f === 0) assert.equal(await m.ackAck(), true);
      };
      try {
        for await (const m of messages) {
          await handle(m);
          if (log.length >= EXPECTED_DELIVERIES) break;
        }
      } finally {
        clearTimeout(timer);
        messages.stop();
      }
      return log;
    };

    // Two durable consumers of the stream, with one inbox table, at the same time.
    const [a, b] = await Promise.all([consume("billing"), consume("shipping")]);
    const counters = await db.counters();
    for (const [durable, log] of [["billing", a], ["shipping", b]] as const) {
      assert.equal(log.length, EXPECTED_DELIVERIES, `${durable}: ${JSON.stringify(log)}`);
      // Every message's effect applied exactly once, whatever was redelivered.
      for (let n = 0; n < MESSAGES; n++) assert.equal(counters[`${durable}/m-${n}`], 1, `${durable}/m-${n}`);
      const committed = log.filter((d) => d.committed);
      assert.equal(committed.filter((d) => d.fresh).length, MESSAGES);
      // Redeliveries after a commit (faults 1 and 4) and the late copies were recognised.
      const duplicates = committed.filter((d) => !d.fresh);
      assert.equal(duplicates.length, 8 + LATE_COPIES.length, JSON.stringify(duplicates));
      assert.equal(log.filter((d) => d.seq > MESSAGES).length, LATE_COPIES.length, "the late copies were delivered");
      // Nothing left to deliver or to acknowledge.
      const info = await jsm.consumers.info(stream, durable);
      assert.equal(info.num_pending, 0);
      assert.equal(info.num_ack_pending, 0);
    }
    assert.equal(Object.keys(counters).length, 2 * MESSAGES);
    assert.equal(await db.inboxRows(), 2 * MESSAGES);
  } finally {
    await jsm.streams.delete(stream).catch(() => {});
    await nc.close();
  }
}

for (const [name, open] of databases) {
  test(
    `inbox (${name}) + JetStream: a pull consumer applies each message exactly once through lost acks, crashes, naks and late duplicates`,
    () => using(open, jetstreamExactlyOnce),
    { timeout: 60_000 },
  );
}

// Type-level checks: the storages fix the transaction and statement types.
async function _types(client: Client, sql: postgres.Sql) {
  const lite: Inbox<LibsqlInboxTx, import("@libsql/client").InStatement> = createInbox({
    storage: libsqlInbox(client),
  });
  const pg: Inbox<PostgresInboxTx, never> = createInbox({ storage: postgresInbox(sql) });
  // A postgres.js client and its transactions fit without casts.
  await sql.begin((tx) => pg.receive(tx, "m-1"));
  await lite.receive(await client.transaction("write"), "m-1");
  return [lite, pg];
}
void _types;
