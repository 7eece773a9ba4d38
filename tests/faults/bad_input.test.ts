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
import { createOutbox, memoryPublisher, OutboxConfigError, OutboxMessageError, type OutboxStorage } from "../../mod.ts";
import { libsqlSchema, libsqlStorage } from "../../adapters/libsql/mod.ts";
import { postgresSchema, type PostgresSql, postgresStorage } from "../../adapters/postgres/mod.ts";
import { ensureStream, jetstreamPublisher } from "../../adapters/nats/mod.ts";
import type { StorageHarness } from "../conformance/storage.ts";
import { prepareMessages } from "../../src/message.ts";
import { resolveOptions } from "../../src/options.ts";
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
  stats: async () => ({ pending: 0, processing: 0, published: 0, dead: 0, oldestPendingAt: null, blockedKeys: 0 }),
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
    [{ leaseMs: 2 ** 31 }, "leaseMs"],
    [{ leaseMs: 1e19 }, "leaseMs"],
    [{ retry: { maxAttempts: 2.5 } }, "retry.maxAttempts"],
    [{ retry: { maxAttempts: -1 } }, "retry.maxAttempts"],
    [{ retry: { maxDelayMs: NaN } }, "retry.maxDelayMs"],
    // Added to an epoch-ms time, it would leave a bigint column and a Date's range.
    [{ retry: { maxDelayMs: 1e19 } }, "retry.maxDelayMs"],
    [{ retry: { baseDelayMs: 1e16, maxDelayMs: 1e16 } }, "retry.baseDelayMs"],
    [{ retry: { onDead: "halt" } }, "retry.onDead"],
    [{ retention: { publishedMs: 1e19 } }, "retention.publishedMs"],
    [{ clock: "database" }, "clock"],
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
  assert.throws(
    () => createOutbox({ storage: stub, publisher: 42 } as never),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "publisher",
  );
  // Options of the outbox's own methods.
  const outbox = createOutbox({ storage: stub, publisher });
  await assert.rejects(
    () => outbox.requeue({ status: "pending" as never }),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "status",
  );
  await assert.rejects(
    () => outbox.requeue({ ids: "a" as never }),
    (e: unknown) => e instanceof OutboxMessageError && e.path === "ids",
  );
  assert.throws(
    () => outbox.statements({ topic: "t", payload: 1 }),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "storage",
  );
  await assert.rejects(() => outbox.inspect(), (e: unknown) => e instanceof OutboxConfigError && e.path === "storage");
  // start() idle waits become timer delays: above 2^31−1 ms (or NaN) a timer fires at once
  // and the loop would poll without pause.
  for (
    const [options, path] of [
      [{ minIdleMs: 2 ** 31 }, "minIdleMs"],
      [{ maxIdleMs: Infinity }, "maxIdleMs"],
      [{ maxIdleMs: NaN }, "maxIdleMs"],
      [{ onTick: "log" }, "onTick"],
      [{ signal: {} }, "signal"],
      [{ idleMs: 5 }, "idleMs"],
    ] as const
  ) {
    assert.throws(
      () => outbox.start(options as never),
      (e: unknown) => e instanceof OutboxConfigError && e.path === path,
      JSON.stringify(options),
    );
  }
  for (
    const [options, path] of [[{ budgetMs: NaN }, "budgetMs"], [{ maxBatches: 0 }, "maxBatches"], [
      { budget: 1 },
      "budget",
    ]] as const
  ) {
    await assert.rejects(
      () => outbox.tick(options as never),
      (e: unknown) => e instanceof OutboxConfigError && e.path === path,
      JSON.stringify(options),
    );
  }
  // Adapter and publisher factories.
  const client = { execute() {}, batch() {}, transaction() {} } as never;
  assert.throws(
    () => libsqlStorage(null as never),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "client",
  );
  assert.throws(
    () => libsqlStorage(client, { busyTimeoutMs: -1 }),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "busyTimeoutMs",
  );
  assert.throws(
    () => libsqlStorage(client, { busyTimeoutMs: "5s" } as never),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "busyTimeoutMs",
  );
  assert.throws(
    () => libsqlStorage(client, { schema: "x" } as never),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "schema",
  );
  assert.throws(() => libsqlStorage(client, "outbox" as never), OutboxConfigError);
  const js = { publish() {} } as never;
  assert.throws(
    () => jetstreamPublisher(js, { maxInFlight: 0 }),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "maxInFlight",
  );
  assert.throws(
    () => jetstreamPublisher(js, { maxInFlight: 1.5 }),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "maxInFlight",
  );
  assert.throws(
    () => jetstreamPublisher(js, { timeoutMs: NaN }),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "timeoutMs",
  );
  assert.throws(
    () => jetstreamPublisher(js, { timeoutMs: 2 ** 31 }),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "timeoutMs",
  );
  assert.throws(
    () => jetstreamPublisher(js, { subjectPrefix: 5 } as never),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "subjectPrefix",
  );
  assert.throws(
    () => jetstreamPublisher(js, { subjectPrefix: "a\tb" }),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "subjectPrefix",
  );
  await assert.rejects(
    () =>
      ensureStream({} as never, {
        name: "S",
        subjects: ["s.>"],
        outbox: { retryHorizonMs: 200_000 },
        duplicateWindowMs: 200_000,
      }),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "duplicateWindowMs",
  );
});

/** deliverAt values no Date can hold, and what must be said about each. */
const BAD_DELIVER_AT: [unknown, RegExp][] = [
  [1e19, /number 10000000000000000000\b/],
  [1e21, /number 1e\+21/],
  [-1e19, /number -10000000000000000000\b/],
  [8.64e15 + 1, /number 8640000000000001\b/],
  [-8.64e15 - 1, /number -8640000000000001\b/],
  [Number.MAX_VALUE, /number 1\.7976931348623157e\+308/],
  [NaN, /number NaN/],
  [Infinity, /number Infinity/],
  [-Infinity, /number -Infinity/],
  [new Date(8.64e15 + 1), /an invalid Date/],
  [new Date(NaN), /an invalid Date/],
  ["2030-01-01", /"2030-01-01"/],
  [10n, /bigint 10\b/],
];

/** Strings that are not well-formed UTF-16: storage would turn them into U+FFFD. */
const LONE_SURROGATES = ["orders.\uD800", "\uDC00orders", "a\uDBFFb", "z\uDFFF", "\uDC00\uD800"];

test("faults: bad input: deliverAt outside the Date range, lone surrogates and leaseMs past the timer limit are refused before anything is written", async () => {
  let inserts = 0;
  const counting: OutboxStorage<unknown> = { ...stub, insert: async () => void inserts++ };
  const outbox = createOutbox({ storage: counting, publisher });
  const rejects = (message: unknown, path: string, text: RegExp, what: string) =>
    assert.rejects(
      () => outbox.enqueue(null, message as never),
      (e: unknown) => e instanceof OutboxMessageError && e.path === path && text.test(e.message),
      what,
    );
  for (const [deliverAt, quoted] of BAD_DELIVER_AT) {
    const what = `deliverAt ${String(deliverAt)}`;
    await rejects({ topic: "t", payload: 1, deliverAt }, "deliverAt", quoted, what);
    await rejects(
      [{ topic: "t", payload: 1 }, { topic: "t", payload: 1, deliverAt }],
      "[1].deliverAt",
      quoted,
      `${what} in a list`,
    );
  }
  for (const bad of LONE_SURROGATES) {
    const what = JSON.stringify(bad);
    // The message quotes the value JSON-escaped, so the surrogate shows as \udxxx.
    const quoted = /\\ud[89a-f][0-9a-f]{2}/;
    await rejects({ topic: bad, payload: 1 }, "topic", quoted, `topic ${what}`);
    await rejects(
      [{ topic: "t", payload: 1 }, { topic: bad, payload: 1 }],
      "[1].topic",
      quoted,
      `topic ${what} in a list`,
    );
    await rejects({ topic: "t", key: bad, payload: 1 }, "key", quoted, `key ${what}`);
    await rejects({ id: bad, topic: "t", payload: 1 }, "id", quoted, `id ${what}`);
    await rejects({ topic: "t", headers: { "x-a": bad }, payload: 1 }, "headers.x-a", quoted, `header value ${what}`);
    await rejects({ topic: "t", headers: { [bad]: "v" }, payload: 1 }, `headers.${bad}`, quoted, `header name ${what}`);
  }
  assert.equal(inserts, 0, "nothing reached the storage");
  // The edges are accepted: the Date range's ends, surrogate pairs, and a leaseMs of 2^31−1.
  const now = Date.UTC(2030, 0, 1);
  const rows = prepareMessages([
    { topic: "t", payload: 1, deliverAt: 8.64e15 },
    { topic: "t", payload: 1, deliverAt: new Date(8.64e15) },
    { topic: "t", payload: 1, deliverAt: -8.64e15 },
    { topic: "t", payload: 1, deliverAt: now + 0.6 },
    { topic: "orders.😀", key: "k😀", id: "😀", headers: { "x-a": "😀" }, payload: "😀" },
  ], { schemas: undefined, maxPayloadBytes: 1_000, now });
  assert.deepEqual(rows.map((r) => r.availableAt), [8.64e15, 8.64e15, now, now + 1, now]);
  assert.equal(resolveOptions({ storage: stub, publisher, leaseMs: 2_147_483_647 }).leaseMs, 2_147_483_647);
  assert.throws(
    () => createOutbox({ storage: stub, publisher, leaseMs: 2 ** 31 }),
    (e: unknown) =>
      e instanceof OutboxConfigError && e.path === "leaseMs" && /2147483648/.test(e.message) && /timer/.test(e.message),
  );
});

test("faults: bad input: a leaseMs of 2^31−1 ms, the longest timer delay, still publishes (its lease timer does not fire at once)", async () => {
  const h = await libsqlHarness();
  try {
    const pub = memoryPublisher();
    const outbox = createOutbox({ storage: h.storage, publisher: pub, leaseMs: 2_147_483_647 });
    await h.commit((tx) =>
      outbox.enqueue(tx, [{ id: "a", topic: "t", key: "k", payload: 1 }, { id: "b", topic: "t", key: "k", payload: 2 }])
    );
    const report = await outbox.tick();
    assert.equal(report.published, 2);
    assert.equal(report.retried, 0);
    assert.deepEqual(pub.messages.map((m) => m.id), ["a", "b"]);
  } finally {
    await h.close();
  }
});

test("faults: bad input: identifier injection is refused by every factory and DDL helper before any SQL runs", () => {
  const sql = Object.assign(async () => [], {
    unsafe: async () => [],
    begin: async () => [],
    listen: async () => ({ unlisten: async () => {} }),
  });
  const client = { execute() {}, batch() {}, transaction() {} } as never;
  for (const name of EVIL_IDENTIFIERS) {
    const is = (path: string) => (e: unknown) =>
      e instanceof OutboxConfigError && e.path === path && /plain SQL identifier/.test(e.message);
    assert.throws(
      () => libsqlStorage(client, { table: name as string }),
      is("table"),
      `libsqlStorage table ${String(name)}`,
    );
    assert.throws(() => libsqlSchema({ table: name as string }), is("table"), `libsqlSchema table ${String(name)}`);
    assert.throws(
      () => postgresStorage(sql as unknown as PostgresSql, { table: name as string }),
      is("table"),
      `postgresStorage table ${String(name)}`,
    );
    assert.throws(
      () => postgresStorage(sql as unknown as PostgresSql, { schema: name as string }),
      is("schema"),
      `postgresStorage schema ${String(name)}`,
    );
    assert.throws(
      () => postgresSchema({ schema: name as string }),
      is("schema"),
      `postgresSchema schema ${String(name)}`,
    );
    assert.throws(() => postgresSchema({ table: name as string }), is("table"), `postgresSchema table ${String(name)}`);
  }
  // The longest legal names work, and are quoted (the table, or an index or table named after it).
  const longest = libsqlSchema({ table: `_${"a".repeat(62)}` });
  assert.ok(longest.every((s) => s.includes(`"_${"a".repeat(62)}`)));
  assert.ok(longest[0]!.includes(`"_${"a".repeat(62)}" (`));
});

/** The value catalogue: SQL, quoting and placeholder characters in every value field. */
const EVIL_VALUES = [
  "'); DROP TABLE orders; --",
  '" OR 1=1 --',
  "$1",
  "?",
  "\\'",
  "%s%n",
  "Robert'); DELETE FROM outbox WHERE ('1'='1",
  "😀 ‮rtl‬ é",
];

async function catalogue<Tx>(name: string, make: () => Promise<StorageHarness<Tx>>) {
  test(
    `faults: bad input (${name}): SQL in topic, key, id, header and payload values goes through verbatim, end to end into JetStream`,
    async () => {
      const h = await make();
      const s = await natsStream();
      try {
        const outbox = createOutbox({
          storage: h.storage,
          publisher: jetstreamPublisher(s.js),
          onError: (e) => console.error(e),
        });
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
    },
    { timeout: 30_000 },
  );

  test(`faults: bad input (${name}): deliverAt beyond the Date range and lone surrogates are refused before any SQL; the transaction still inserts and commits`, async () => {
    const h = await make();
    try {
      const pub = memoryPublisher();
      const outbox = createOutbox({ storage: h.storage, publisher: pub });
      await h.commit(async (tx) => {
        await h.insertOrder(tx, "before");
        const refused: [unknown, string][] = [
          [{ topic: "t", payload: 1, deliverAt: 1e19 }, "deliverAt"],
          [{ topic: "t", payload: 1, deliverAt: 1e21 }, "deliverAt"],
          [{ topic: "t", payload: 1, deliverAt: -1e19 }, "deliverAt"],
          [[{ topic: "t", payload: 1 }, { topic: "t", payload: 1, deliverAt: 8.64e15 + 1 }], "[1].deliverAt"],
          [{ topic: "orders.\uD800", payload: 1 }, "topic"],
          [[{ topic: "t", payload: 1 }, { topic: "t", key: "k\uDC00", payload: 1 }], "[1].key"],
        ];
        for (const [message, path] of refused) {
          await assert.rejects(
            () => outbox.enqueue(tx, message as never),
            (e: unknown) => e instanceof OutboxMessageError && e.path === path,
            path,
          );
        }
        // The same transaction goes on: on Postgres a failed statement would have aborted it.
        await h.insertOrder(tx, "after");
        await outbox.enqueue(tx, [
          { id: "latest", topic: "t", payload: 1, deliverAt: 8.64e15 },
          { id: "earliest", topic: "t", payload: 2, deliverAt: new Date(-8.64e15) },
          { id: "emoji", topic: "orders.😀", key: "k😀", payload: 3 },
        ]);
      });
      assert.equal(await h.orderCount(), 2, "both business rows committed");
      const report = await outbox.tick();
      assert.equal(report.published, 2);
      assert.deepEqual(pub.messages.map((m) => m.id).sort(), ["earliest", "emoji"]);
      assert.equal(pub.messages.find((m) => m.id === "emoji")!.topic, "orders.😀", "the topic is stored as given");
      assert.equal((await outbox.stats()).pending, 1, "the message at the end of time waits");
    } finally {
      await h.close();
    }
  });

  test(
    `faults: bad input (${name}): payloads at the size limit work, one byte over is refused, and the transaction goes on`,
    async () => {
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
          await outbox.enqueue(tx, [{ id: "json-at-limit", topic: "t", payload: atLimit }, {
            id: "bytes-at-limit",
            topic: "t",
            payload: bytes,
          }]);
          const refused: [unknown, string][] = [
            [{ topic: "t", payload: atLimit + "x" }, "payload"],
            [{ topic: "t", payload: new Uint8Array(limit + 1) }, "payload"],
            [{ topic: "t", payload: multibyte }, "payload"],
            [[{ topic: "t", payload: 1 }, { topic: "t", payload: { deep: [atLimit] } }], "[1].payload"],
          ];
          for (const [message, path] of refused) {
            await assert.rejects(
              () => outbox.enqueue(tx, message as never),
              (e: unknown) => e instanceof OutboxMessageError && e.path === path && /over the limit/.test(e.message),
              path,
            );
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
    },
    { timeout: 60_000 },
  );

  test(
    `faults: bad input (${name}): 10,000 messages in one transaction with business rows; a rejected 10,000-message enqueue loses nothing else`,
    async () => {
      const h = await make();
      try {
        let published = 0;
        const outbox = createOutbox({ storage: h.storage, publisher: () => void published++, batchSize: 1_000 });
        const many = (tag: string) =>
          Array.from(
            { length: 10_000 },
            (_, i) => ({ id: `${tag}-${i}`, topic: "bulk", key: `k${i % 100}`, payload: { i } }),
          );
        await h.commit((tx) => outbox.enqueue(tx, { id: "taken", topic: "t", payload: 0 }));
        await h.commit(async (tx) => {
          await h.insertOrder(tx, "first");
          await outbox.enqueue(tx, many("ok"));
          // Invalid last message: refused before anything of it is written.
          const bad = many("bad") as { id: string; topic: string; key: string; payload: unknown }[];
          bad[9_999]!.payload = { n: 1n };
          await assert.rejects(
            () => outbox.enqueue(tx, bad),
            (e: unknown) => e instanceof OutboxMessageError && e.path === "[9999].payload.n",
          );
          // An id the table already holds: refused by the database, compensated by the adapter.
          const clash = many("clash");
          clash[5_000]!.id = "taken";
          await assert.rejects(() => outbox.enqueue(tx, clash), (e: unknown) => e instanceof OutboxMessageError);
          await h.insertOrder(tx, "second");
        });
        assert.equal(await h.orderCount(), 2, "both business rows committed");
        assert.equal(
          (await outbox.stats()).pending,
          10_001,
          "the valid 10,000 (and the earlier one), nothing of the refused batches",
        );
        await outbox.tick({ budgetMs: 60_000 });
        assert.equal(published, 10_001);
      } finally {
        await h.close();
      }
    },
    { timeout: 90_000 },
  );
}

catalogue("libsql", () => libsqlHarness());
catalogue("postgres", () => postgresHarness());
