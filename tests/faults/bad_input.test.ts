/**
 * Fault 6: a bad-input catalogue. What tests/core.test.ts, the storage conformance suite
 * (tests/conformance/storage.ts), tests/libsql.test.ts, tests/postgres.test.ts and
 * tests/nats.test.ts already reject is not repeated here; this file gathers the rest:
 * options they do not try, identifier injection through every factory and DDL helper,
 * SQL and header injection through values end to end into JetStream, payloads at and
 * over the size limit, and 10,000-message enqueues (one valid, one rejected) inside a
 * transaction that also writes business rows. Each case gets its typed error (with its
 * path) or works, and nothing else in the caller's transaction is lost.
 */

import assert from "node:assert/strict";
import {
  createOutbox,
  memoryPublisher,
  OutboxConfigError,
  OutboxMessageError,
  type OutboxStorage,
} from "../../mod.ts";
import { libsqlSchema, libsqlStorage } from "../../adapters/libsql/mod.ts";
import { postgresSchema, postgresStorage, type PostgresSql } from "../../adapters/postgres/mod.ts";
import { ensureStream, jetstreamPublisher } from "../../adapters/nats/mod.ts";
import type { StorageHarness } from "../conformance/storage.ts";
import { test } from "../harness.ts";
import { libsqlHarness } from "../libsql_helpers.ts";
import { natsStream } from "../nats_helpers.ts";
import { postgresHarness } from "../postgres_helpers.ts";

const stub: OutboxStorage<unknown> = {
  name: "stub",
  setup: async () => {},
  insert: async () => {},
  claim: async () => [],
  settle: async () => 0,
  cleanup: async () => 0,
  stats: async () => ({ pending: 0, processing: 0, published: 0, dead: 0, oldestPendingAt: null }),
  requeue: async () => 0,
};
const publisher = async () => {};

/** Identifiers that must never reach SQL text. */
const EVIL_IDENTIFIERS: unknown[] = [
  'outbox"; DROP TABLE orders; --',
  "outbox; DROP TABLE orders",
  "outbox' OR '1'='1",
  "outbox/*x*/",
  "outbox--",
  "out box",
  "outbox\u0000",
  "outbøx",
  "public.outbox",
  "1outbox",
  "",
  "a".repeat(64),
  42,
  { toString: () => "outbox" },
];

test("faults: bad input: options the core suite does not try are rejected with OutboxConfigError and the field path", async () => {
  const cases: [Record<string, unknown>, string][] = [
    [{ batchSize: 10_001 }, "batchSize"],
    [{ batchSize: Infinity }, "batchSize"],
    [{ leaseMs: 99 }, "leaseMs"],
    [{ leaseMs: "30s" }, "leaseMs"],
    [{ retry: { maxAttempts: 2.5 } }, "retry.maxAttempts"],
    [{ retry: { maxAttempts: -1 } }, "retry.maxAttempts"],
    [{ retry: { maxDelayMs: NaN } }, "retry.maxDelayMs"],
    [{ retry: { jitter: -0.1 } }, "retry.jitter"],
    [{ retry: { jitter: "0.2" } }, "retry.jitter"],
    [{ retry: null }, "retry"],
    [{ retention: { deadMs: -1 } }, "retention.deadMs"],
    [{ retention: { deadMs: NaN } }, "retention.deadMs"],
    [{ retention: { intervalMs: Infinity } }, "retention.intervalMs"],
    [{ retention: { batchSize: 100_001 } }, "retention.batchSize"],
    [{ retention: { keepFor: 1 } }, "retention.keepFor"],
    [{ concurrency: 10_001 }, "concurrency"],
    [{ maxPayloadBytes: 1024 ** 3 + 1 }, "maxPayloadBytes"],
    [{ maxPayloadBytes: 1.5 }, "maxPayloadBytes"],
    [{ relayId: "" }, "relayId"],
    [{ relayId: "r".repeat(101) }, "relayId"],
    [{ relayId: "relay'; DROP TABLE outbox; --" }, "relayId"],
    [{ relayId: 7 }, "relayId"],
    [{ now: Date.now() }, "now"],
    [{ onError: "console.error" }, "onError"],
    [{ onWarning: {} }, "onWarning"],
    [{ messages: { "": { kind: "schema", "~run": () => {} } } }, "messages"],
  ];
  for (const [extra, path] of cases) {
    assert.throws(
      () => createOutbox({ storage: stub, publisher, ...extra } as never),
      (e: unknown) => e instanceof OutboxConfigError && e.path.startsWith(path) && e.message.length > 10,
      `${JSON.stringify(extra)} → ${path}`,
    );
  }
  assert.throws(() => createOutbox(null as never), OutboxConfigError);
  assert.throws(() => createOutbox("storage" as never), OutboxConfigError);
  assert.throws(() => createOutbox({ storage: stub, publisher: 42 } as never), (e: unknown) => e instanceof OutboxConfigError && e.path === "publisher");
  // Options of the outbox's own methods.
  const outbox = createOutbox({ storage: stub, publisher });
  await assert.rejects(() => outbox.requeue({ status: "pending" as never }), (e: unknown) => e instanceof OutboxConfigError && e.path === "status");
  await assert.rejects(() => outbox.requeue({ ids: "a" as never }), (e: unknown) => e instanceof OutboxMessageError && e.path === "ids");
  assert.throws(() => outbox.statements({ topic: "t", payload: 1 }), (e: unknown) => e instanceof OutboxConfigError && e.path === "storage");
  await assert.rejects(() => outbox.inspect(), (e: unknown) => e instanceof OutboxConfigError && e.path === "storage");
  // Adapter and publisher factories.
  const client = { execute() {}, batch() {}, transaction() {} } as never;
  assert.throws(() => libsqlStorage(null as never), (e: unknown) => e instanceof OutboxConfigError && e.path === "client");
  assert.throws(() => libsqlStorage(client, { busyTimeoutMs: -1 }), (e: unknown) => e instanceof OutboxConfigError && e.path === "busyTimeoutMs");
  assert.throws(() => libsqlStorage(client, { busyTimeoutMs: "5s" } as never), (e: unknown) => e instanceof OutboxConfigError && e.path === "busyTimeoutMs");
  assert.throws(() => libsqlStorage(client, { schema: "x" } as never), (e: unknown) => e instanceof OutboxConfigError && e.path === "schema");
  assert.throws(() => libsqlStorage(client, "outbox" as never), OutboxConfigError);
  const js = { publish() {} } as never;
  assert.throws(() => jetstreamPublisher(js, { maxInFlight: 0 }), (e: unknown) => e instanceof OutboxConfigError && e.path === "maxInFlight");
  assert.throws(() => jetstreamPublisher(js, { maxInFlight: 1.5 }), (e: unknown) => e instanceof OutboxConfigError && e.path === "maxInFlight");
  assert.throws(() => jetstreamPublisher(js, { timeoutMs: NaN }), (e: unknown) => e instanceof OutboxConfigError && e.path === "timeoutMs");
  assert.throws(() => jetstreamPublisher(js, { subjectPrefix: 5 } as never), (e: unknown) => e instanceof OutboxConfigError && e.path === "subjectPrefix");
  assert.throws(() => jetstreamPublisher(js, { subjectPrefix: "a\tb" }), (e: unknown) => e instanceof OutboxConfigError && e.path === "subjectPrefix");
  await assert.rejects(() => ensureStream({} as never, { name: "S", subjects: ["s.>"], outbox: { retryHorizonMs: 200_000 }, duplicateWindowMs: 200_000 }), (e: unknown) => e instanceof OutboxConfigError && e.path === "duplicateWindowMs");
});

test("faults: bad input: identifier injection is refused by every factory and DDL helper before any SQL runs", () => {
  const sql = Object.assign(async () => [], { unsafe: async () => [], begin: async () => [], listen: async () => ({ unlisten: async () => {} }) });
  const client = { execute() {}, batch() {}, transaction() {} } as never;
  for (const name of EVIL_IDENTIFIERS) {
    const is = (path: string) => (e: unknown) => e instanceof OutboxConfigError && e.path === path && /plain SQL identifier/.test(e.message);
    assert.throws(() => libsqlStorage(client, { table: name as string }), is("table"), `libsqlStorage table ${String(name)}`);
    assert.throws(() => libsqlSchema({ table: name as string }), is("table"), `libsqlSchema table ${String(name)}`);
    assert.throws(() => postgresStorage(sql as unknown as PostgresSql, { table: name as string }), is("table"), `postgresStorage table ${String(name)}`);
    assert.throws(() => postgresStorage(sql as unknown as PostgresSql, { schema: name as string }), is("schema"), `postgresStorage schema ${String(name)}`);
    assert.throws(() => postgresSchema({ schema: name as string }), is("schema"), `postgresSchema schema ${String(name)}`);
    assert.throws(() => postgresSchema({ table: name as string }), is("table"), `postgresSchema table ${String(name)}`);
  }
  // The longest legal names work, and are quoted.
  assert.ok(libsqlSchema({ table: `_${"a".repeat(62)}` }).every((s) => s.includes(`"_${"a".repeat(62)}"`)));
});

/** The value catalogue: SQL, quoting and placeholder characters in every value field. */
const EVIL_VALUES = [
  "'); DROP TABLE orders; --",
  "\" OR 1=1 --",
  "$1",
  "?",
  "\\'",
  "%s%n",
  "Robert'); DELETE FROM outbox WHERE ('1'='1",
  "😀 ‮rtl‬ é",
];

async function catalogue<Tx>(name: string, make: () => Promise<StorageHarness<Tx>>) {
  test(`faults: bad input (${name}): SQL in topic, key, id, header and payload values goes through verbatim, end to end into JetStream`, async () => {
    const h = await make();
    const s = await natsStream();
    try {
      const outbox = createOutbox({ storage: h.storage, publisher: jetstreamPublisher(s.js), onError: (e) => console.error(e) });
      const messages = EVIL_VALUES.map((evil, i) => ({
        id: `${evil}#${i}`,
        // Topics are subjects: printable, no whitespace; NATS tokens are separated by dots.
        topic: `${s.prefix}.${encodeURIComponent(evil).replace(/[.*>%]/g, "_")}`,
        key: evil,
        headers: { "x-evil": evil, "x-i": String(i) },
        payload: { evil, nested: [evil, { [evil]: evil }] },
      }));
      await h.commit(async (tx) => {
        await h.insertOrder(tx, "o-1");
        await outbox.enqueue(tx, messages);
        await h.insertOrder(tx, "o-2");
      });
      assert.equal(await h.orderCount(), 2, "the business rows committed with the messages");
      const report = await outbox.tick();
      assert.equal(report.published, messages.length);
      const stored = await s.read();
      assert.deepEqual(stored.map((m) => m.id), messages.map((m) => m.id), "ids unchanged, in order");
      const decoder = new TextDecoder();
      for (const [i, m] of stored.entries()) {
        assert.equal(m.subject, messages[i]!.topic);
        assert.equal(m.headers["x-evil"], EVIL_VALUES[i]);
        assert.deepEqual(JSON.parse(decoder.decode(m.data)), messages[i]!.payload);
      }
      assert.equal((await outbox.stats()).pending, 0, "the outbox table is intact");
    } finally {
      await s.close();
      await h.close();
    }
  }, { timeout: 30_000 });

  test(`faults: bad input (${name}): payloads at the size limit work, one byte over is refused, and the transaction goes on`, async () => {
    const h = await make();
    try {
      const pub = memoryPublisher();
      const limit = 1024 * 1024;
      const outbox = createOutbox({ storage: h.storage, publisher: pub });
      const big = createOutbox({ storage: h.storage, publisher: pub, maxPayloadBytes: 8 * limit });
      const atLimit = "x".repeat(limit - 2); // JSON adds the two quotes
      const bytes = new Uint8Array(limit).map((_, i) => i % 251);
      const multibyte = "é".repeat(limit / 2); // limit chars of UTF-16, 2 bytes each in UTF-8 → over
      await h.commit(async (tx) => {
        await h.insertOrder(tx, "before");
        await outbox.enqueue(tx, [{ id: "json-at-limit", topic: "t", payload: atLimit }, { id: "bytes-at-limit", topic: "t", payload: bytes }]);
        const refused: [unknown, string][] = [
          [{ topic: "t", payload: atLimit + "x" }, "payload"],
          [{ topic: "t", payload: new Uint8Array(limit + 1) }, "payload"],
          [{ topic: "t", payload: multibyte }, "payload"],
          [[{ topic: "t", payload: 1 }, { topic: "t", payload: { deep: [atLimit] } }], "[1].payload"],
        ];
        for (const [message, path] of refused) {
          await assert.rejects(() => outbox.enqueue(tx, message as never), (e: unknown) => e instanceof OutboxMessageError && e.path === path && /over the limit/.test(e.message), path);
        }
        await big.enqueue(tx, { id: "eight-mib", topic: "t", payload: { blob: "y".repeat(8 * limit - 20) } });
        await h.insertOrder(tx, "after");
      });
      assert.equal(await h.orderCount(), 2);
      const report = await outbox.tick();
      assert.equal(report.published, 3);
      const byId = new Map(pub.messages.map((m) => [m.id, m]));
      assert.equal(byId.get("json-at-limit")!.payload, atLimit);
      assert.deepEqual(byId.get("bytes-at-limit")!.payload, bytes);
      assert.equal((byId.get("eight-mib")!.payload as { blob: string }).blob.length, 8 * limit - 20);
    } finally {
      await h.close();
    }
  }, { timeout: 60_000 });

  test(`faults: bad input (${name}): 10,000 messages in one transaction with business rows; a rejected 10,000-message enqueue loses nothing else`, async () => {
    const h = await make();
    try {
      let published = 0;
      const outbox = createOutbox({ storage: h.storage, publisher: () => void published++, batchSize: 1_000 });
      const many = (tag: string) => Array.from({ length: 10_000 }, (_, i) => ({ id: `${tag}-${i}`, topic: "bulk", key: `k${i % 100}`, payload: { i } }));
      await h.commit((tx) => outbox.enqueue(tx, { id: "taken", topic: "t", payload: 0 }));
      await h.commit(async (tx) => {
        await h.insertOrder(tx, "first");
        await outbox.enqueue(tx, many("ok"));
        // Invalid last message: refused before anything of it is written.
        const bad = many("bad") as { id: string; topic: string; key: string; payload: unknown }[];
        bad[9_999]!.payload = { n: 1n };
        await assert.rejects(() => outbox.enqueue(tx, bad), (e: unknown) => e instanceof OutboxMessageError && e.path === "[9999].payload.n");
        // An id the table already holds: refused by the database, compensated by the adapter.
        const clash = many("clash");
        clash[5_000]!.id = "taken";
        await assert.rejects(() => outbox.enqueue(tx, clash), (e: unknown) => e instanceof OutboxMessageError);
        await h.insertOrder(tx, "second");
      });
      assert.equal(await h.orderCount(), 2, "both business rows committed");
      assert.equal((await outbox.stats()).pending, 10_001, "the valid 10,000 (and the earlier one), nothing of the refused batches");
      await outbox.tick({ budgetMs: 60_000 });
      assert.equal(published, 10_001);
    } finally {
      await h.close();
    }
  }, { timeout: 90_000 });
}

catalogue("libsql", () => libsqlHarness());
catalogue("postgres", () => postgresHarness());
