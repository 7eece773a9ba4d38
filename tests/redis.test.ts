/**
 * The Redis Streams publisher on the real Redis (127.0.0.1:6379): the publisher
 * conformance suite, dedup across a crash before settling, end to end from Postgres and
 * libSQL, trimming, the TTL warning, error classes.
 */

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { createOutbox, isPermanentError, type OutboxRecord, type OutboxStorage, type PublishContext } from "../mod.ts";
import { classifyRedisError, redisStreamsPublisher } from "../adapters/redis/mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { publisherConformance } from "./conformance/publisher.ts";
import { onFreshStorage } from "./conformance/storage/harness.ts";
import { test } from "./harness.ts";
import { dropStreams, openRedis, readEntries, type Redis, uniqueStream } from "./redis_helpers.ts";
import { postgresHarness } from "./postgres_helpers.ts";
import { libsqlHarness, openClient, tempDatabase } from "./libsql_helpers.ts";
import { until } from "./faults/helpers.ts";

const decoder = new TextDecoder();
const context: PublishContext = { signal: new AbortController().signal };

publisherConformance("redis streams", async () => {
  const client = await openRedis();
  const stream = uniqueStream();
  // A plain string under the key: XADD answers WRONGTYPE, which no retry can change.
  const unroutable = uniqueStream("outbox-test-string");
  await client.set(unroutable, "not a stream");
  const blockers: Redis[] = [];
  return {
    publisher: redisStreamsPublisher(client),
    topic: stream,
    unroutableTopic: unroutable,
    dedup: true,
    read: () => readEntries(client, stream),
    async timingOut() {
      // A connection stuck behind a blocking command, as behind a stalled server: the
      // script's reply cannot come before the BLPOP's (which never comes).
      const stuck = await openRedis();
      blockers.push(stuck);
      const script = redisStreamsPublisher(stuck, { timeoutMs: 150 });
      stuck.blPop(uniqueStream("outbox-test-never"), 0).catch(() => {});
      return script;
    },
    async close() {
      for (const b of blockers) b.destroy();
      await dropStreams(client, [stream]);
      await client.del(unroutable);
      client.destroy();
    },
  };
});

let counter = 0;
function record(topic: string, fields: Partial<OutboxRecord> = {}): OutboxRecord {
  const payload = fields.payload ?? { n: counter };
  return {
    id: `r-${Date.now().toString(36)}-${counter++}`,
    seq: counter,
    topic,
    key: null,
    payload,
    body: JSON.stringify(payload),
    headers: {},
    attempts: 1,
    createdAt: new Date(),
    ...fields,
  };
}

test("redis: an entry holds the outbox id, topic, key, headers and body as fields", async () => {
  const client = await openRedis();
  const stream = uniqueStream();
  try {
    const publisher = redisStreamsPublisher(client);
    await publisher.publish(
      record(stream, { id: "f-1", key: "order-7", headers: { "x-trace": "t" }, payload: { a: 1 } }),
      context,
    );
    await publisher.publish(record(stream, { id: "f-2" }), context);
    const raw = await client.xRange(stream, "-", "+");
    assert.deepEqual({ ...raw[0]!.message }, {
      id: "f-1",
      topic: stream,
      key: "order-7",
      headers: '{"x-trace":"t"}',
      body: '{"a":1}',
    });
    assert.deepEqual(Object.keys(raw[1]!.message), ["id", "topic", "body"], "no key or headers fields when empty");
    // The dedup key remembers the entry id, with the TTL.
    const key = publisher.dedupKeyOf(record(stream, { id: "f-1" }));
    assert.equal(key, `{${stream}}:outbox-id:f-1`);
    assert.equal(await client.get(key), raw[0]!.id);
    const ttl = await client.pTTL(key);
    assert.ok(ttl > 23 * 3_600_000 && ttl <= 24 * 3_600_000, `TTL about 24 h, got ${ttl}`);
  } finally {
    await dropStreams(client, [stream]);
    client.destroy();
  }
});

test("redis: a message published twice (a crash before settling) is one entry", async () => {
  const client = await openRedis();
  const stream = uniqueStream();
  try {
    const publisher = redisStreamsPublisher(client);
    const m = record(stream, { id: "twice", key: "k" });
    await publisher.publish(m, context);
    // The relay crashed before settling: the next relay claims the row and publishes it again.
    await publisher.publish({ ...m, attempts: 2 }, context);
    const outcomes = await publisher.publishRun!([{ ...m, attempts: 3 }, record(stream, { key: "k" })], context);
    assert.ok(outcomes.every((o) => o.ok));
    const stored = await readEntries(client, stream);
    assert.deepEqual(stored.map((e) => e.id), ["twice", stored[1]!.id]);
    assert.equal(stored.length, 2);
  } finally {
    await dropStreams(client, [stream]);
    client.destroy();
  }
});

test("redis: after the script cache is flushed (NOSCRIPT), the publisher loads it again", async () => {
  const client = await openRedis();
  const stream = uniqueStream();
  try {
    const publisher = redisStreamsPublisher(client);
    await publisher.publish(record(stream), context);
    await client.scriptFlush();
    const run = Array.from({ length: 20 }, (_, i) => record(stream, { id: `ns-${i}`, key: "K" }));
    const outcomes = await publisher.publishRun!(run, context);
    assert.ok(outcomes.every((o) => o.ok), JSON.stringify(outcomes));
    assert.deepEqual((await readEntries(client, stream)).slice(1).map((e) => e.id), run.map((m) => m.id));
  } finally {
    await dropStreams(client, [stream]);
    client.destroy();
  }
});

test("redis: maxLen trims the stream to about that many entries", async () => {
  const client = await openRedis();
  const stream = uniqueStream();
  try {
    const publisher = redisStreamsPublisher(client, { maxLen: 100 });
    const run = Array.from({ length: 1_000 }, () => record(stream));
    const outcomes = await publisher.publishRun!(run, context);
    assert.ok(outcomes.every((o) => o.ok));
    const length = await client.xLen(stream);
    // "~" trims whole macro nodes (100 entries by default): never below 100, well under 1,000.
    assert.ok(length >= 100 && length < 300, `stream length ${length}`);
    const stored = await readEntries(client, stream);
    assert.equal(stored.at(-1)!.id, run.at(-1)!.id, "the newest entries are kept");
  } finally {
    await dropStreams(client, [stream]);
    client.destroy();
  }
});

test("redis: an aborted publish fails and adds nothing", async () => {
  const client = await openRedis();
  const stream = uniqueStream();
  try {
    const publisher = redisStreamsPublisher(client);
    const controller = new AbortController();
    controller.abort();
    await assert.rejects(
      () => publisher.publish(record(stream), { signal: controller.signal }),
      (e: unknown) => !isPermanentError(e) && /cancelled/.test(String(e)),
    );
    const outcomes = await publisher.publishRun!([record(stream), record(stream)], { signal: controller.signal });
    assert.ok(outcomes.every((o) => !o.ok));
    assert.equal(await client.exists(stream), 0);
  } finally {
    await dropStreams(client, [stream]);
    client.destroy();
  }
});

test("redis: a failure in a run does not stop the outcomes after it", async () => {
  const client = await openRedis();
  const stream = uniqueStream();
  const wrong = uniqueStream("outbox-test-string");
  try {
    await client.set(wrong, "x");
    const publisher = redisStreamsPublisher(client);
    const run = [record(stream), record(wrong), record(stream)];
    const outcomes = await publisher.publishRun!(run, context);
    assert.deepEqual(outcomes.map((o) => o.ok), [true, false, true]);
    assert.ok(!outcomes[1]!.ok && isPermanentError(outcomes[1]!.error));
    assert.match(String(!outcomes[1]!.ok && outcomes[1]!.error), /WRONGTYPE/);
    assert.equal(await client.get(publisher.dedupKeyOf(run[1]!)), null, "a failed XADD records no id");
  } finally {
    await dropStreams(client, [stream]);
    await client.del(wrong);
    client.destroy();
  }
});

test("redis: classifies failures into permanent and transient ones with plain reasons", () => {
  const reply = (text: string) => Object.assign(new Error(text), { name: "SimpleError" });
  const cases: [unknown, boolean, RegExp][] = [
    [reply("WRONGTYPE Operation against a key holding the wrong kind of value script: x"), true, /holds another type/],
    [reply("NOPERM User u has no permissions to run the 'evalsha' command"), true, /Not allowed/],
    [reply("ERR Error compiling script (new function): user_script:1: x"), true, /cannot compile/],
    [reply("LOADING Redis is loading the dataset in memory"), false, /LOADING .*\(transient\)/],
    [reply("CLUSTERDOWN The cluster is down"), false, /\(transient\)/],
    [reply("TRYAGAIN Multiple keys request during rehashing of slot"), false, /\(transient\)/],
    [reply("BUSY Redis is busy running a script"), false, /\(transient\)/],
    [reply("READONLY You can't write against a read only replica."), false, /\(transient\)/],
    [reply("OOM command not allowed when used memory > 'maxmemory'."), false, /\(transient\)/],
    [reply("NOSCRIPT No matching script. Please use EVAL."), false, /\(transient\)/],
    [Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }), false, /connection/],
    [
      Object.assign(new Error("Socket closed unexpectedly"), { name: "SocketClosedUnexpectedlyError" }),
      false,
      /connection/,
    ],
    [Object.assign(new Error("The client is closed"), { name: "ClientClosedError" }), false, /connection/],
    [Object.assign(new Error("Timeout"), { name: "TimeoutError" }), false, /timeout/],
    [reply("ERR something unexpected"), false, /failed: ERR something unexpected \(transient\)/],
  ];
  for (const [error, permanent, message] of cases) {
    const classified = classifyRedisError(error, "s");
    assert.equal(isPermanentError(classified), permanent, String(error));
    assert.match(classified.message, message);
    assert.equal(classified.cause, error);
  }
});

test("redis: invalid publisher options are rejected", () => {
  const fake = { evalSha: async () => [1, "0-1"], scriptLoad: async () => "sha" };
  assert.throws(() => redisStreamsPublisher({} as never), /evalSha\(\) and scriptLoad\(\)/);
  assert.throws(() => redisStreamsPublisher(fake, { maxLen: 0 }), /maxLen/);
  assert.throws(() => redisStreamsPublisher(fake, { dedupTtlMs: -1 }), /dedupTtlMs/);
  assert.throws(() => redisStreamsPublisher(fake, { stream: "s" } as never), /stream must be a function/);
  assert.throws(() => redisStreamsPublisher(fake, { ttl: 5 } as never), /Unknown option "ttl"/);
});

test("redis: start() warns when dedupTtlMs is shorter than the retry horizon", async () => {
  const client = await openRedis();
  const { url, dir } = tempDatabase();
  const db = await openClient(url);
  try {
    const warned = Promise.withResolvers<string>();
    const outbox = createOutbox({
      storage: libsqlStorage(db),
      publisher: redisStreamsPublisher(client, { dedupTtlMs: 1_000 }),
      leaseMs: 30_000,
      retry: { maxDelayMs: 60_000 },
      onWarning: (w) => warned.resolve(w),
    });
    await outbox.setup();
    const relay = outbox.start({ minIdleMs: 5, maxIdleMs: 20 });
    try {
      const warning = await warned.promise;
      assert.match(warning, /dedupTtlMs = 1000 ms, but a message can be retried for up to 90000 ms/);
    } finally {
      await relay.stop();
    }
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
    client.destroy();
  }
});

async function endToEnd<Tx>(
  storage: OutboxStorage<Tx, unknown>,
  commit: (fn: (tx: Tx) => Promise<unknown>) => Promise<unknown>,
) {
  const client = await openRedis();
  const stream = uniqueStream();
  try {
    const warnings: string[] = [];
    const outbox = createOutbox({
      storage,
      publisher: redisStreamsPublisher(client),
      batchSize: 200,
      onError: (e) => console.error(e),
      onWarning: (w) => warnings.push(w),
    });
    await outbox.setup();
    const sent: { id: string; topic: string; key: string | null; payload: unknown; headers: Record<string, string> }[] =
      [];
    for (let t = 0; t < 10; t++) {
      const batch = Array.from({ length: 60 }, (_, i) => {
        const n = t * 60 + i;
        const m = {
          id: `e2e-${n}`,
          topic: stream,
          key: n % 9 === 0 ? null : `k${n % 16}`,
          payload: { n, text: "é ✓" },
          headers: { "x-n": String(n) },
        };
        sent.push(m);
        return m;
      });
      await commit((tx) => outbox.enqueue(tx, batch));
    }
    const relay = outbox.start({ minIdleMs: 2, maxIdleMs: 10 });
    try {
      await until("every message in the stream", async () => (await client.xLen(stream)) >= sent.length, 30_000);
    } finally {
      await relay.stop();
    }
    const stored = await readEntries(client, stream);
    assert.equal(stored.length, sent.length, "every committed message is in the stream once");
    assert.deepEqual(new Set(stored.map((m) => m.id)), new Set(sent.map((m) => m.id)));
    const byId = new Map(sent.map((m) => [m.id, m]));
    for (const m of stored) {
      const original = byId.get(m.id!)!;
      assert.equal(m.subject, stream);
      assert.equal(m.key, original.key);
      assert.deepEqual(JSON.parse(decoder.decode(m.data)), original.payload);
      assert.equal(m.headers["x-n"], original.headers["x-n"]);
    }
    for (let k = 0; k < 16; k++) {
      const expected = sent.filter((m) => m.key === `k${k}`).map((m) => m.id);
      const got = stored.filter((m) => m.key === `k${k}`).map((m) => m.id);
      assert.deepEqual(got, expected, `stream order of key k${k}`);
    }
    // Published rows are gone (retention 0): enqueue the same ids again and relay them.
    // The publisher remembers them: nothing is added, and start() ran, so it warns once.
    await commit((tx) => outbox.enqueue(tx, sent.slice(0, 50)));
    const report = await outbox.tick();
    assert.equal(report.published, 50);
    assert.equal(await client.xLen(stream), sent.length, "re-sent ids add nothing to the stream");
    assert.equal(warnings.length, 1, warnings.join("\n"));
    assert.match(warnings[0]!, /already held message e2e-\d+: the publisher remembered the id/);
  } finally {
    await dropStreams(client, [stream]);
    client.destroy();
  }
}

test(
  "redis: end to end from Postgres: ids, payloads, headers, key order, and no duplicates in the stream",
  () => onFreshStorage(postgresHarness, endToEnd),
  {
    timeout: 60_000,
  },
);

test(
  "redis: end to end from libSQL: ids, payloads, headers, key order, and no duplicates in the stream",
  () => onFreshStorage(libsqlHarness, endToEnd),
  {
    timeout: 60_000,
  },
);
