/**
 * The JetStream publisher on the real nats-server: the publisher conformance suite,
 * end to end from Postgres and libSQL, the dedup window, error classes.
 */

import assert from "node:assert/strict";
import { createOutbox, isPermanentError, type OutboxRecord, type OutboxStorage } from "../mod.ts";
import { classifyJetStreamError, ensureStream, jetstreamPublisher } from "../adapters/nats/mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { publisherConformance } from "./conformance/publisher.ts";
import { onFreshStorage } from "./conformance/storage/harness.ts";
import { test } from "./harness.ts";
import { natsStream, readStream, uniqueName } from "./nats_helpers.ts";
import { until } from "./faults/helpers.ts";
import { postgresHarness } from "./postgres_helpers.ts";
import { libsqlHarness, openClient, tempDatabase } from "./libsql_helpers.ts";
import { rmSync } from "node:fs";

const decoder = new TextDecoder();

publisherConformance("jetstream", async () => {
  const s = await natsStream();
  const silent = `${s.prefix}silent`;
  return {
    publisher: jetstreamPublisher(s.js),
    topic: `${s.prefix}.t`,
    unroutableTopic: `${s.prefix}nostream.t`,
    // "No responders" is also a cluster's answer while the stream elects a leader.
    unroutable: "transient",
    dedup: true,
    read: s.read,
    async timingOut() {
      // A plain subscriber that never replies: the request neither fails fast (no
      // responders) nor gets an ack, as with a stalled stream leader.
      s.nc.subscribe(silent, { callback: () => {} });
      const publisher = jetstreamPublisher(s.js, { timeoutMs: 150, subject: () => silent });
      return publisher;
    },
    close: s.close,
  };
});

/** A JetStream API error as `@nats-io/jetstream` throws it for a negative publish ack. */
function apiError(code: number, description: string, status = 400): Error {
  return Object.assign(new Error(description), { name: "JetStreamApiError", code, status });
}

test("jetstream: classifies failures into permanent and transient ones with plain reasons", () => {
  const noResponders = Object.assign(new Error("no responders: 'a.b'"), {
    name: "RequestError",
    isNoResponders: () => true,
  });
  const cases: [unknown, boolean, RegExp][] = [
    // What the client throws when no stream leader listens: an election, or no stream.
    [
      Object.assign(new Error("jetstream is not enabled", { cause: noResponders }), { name: "JetStreamNotEnabled" }),
      false,
      /No JetStream stream answered for subject "a\.b" \(no responders, 503\): the stream may be electing a leader, or no stream accepts the subject \(transient\)/,
    ],
    [
      Object.assign(new Error("jetstream is not enabled"), { name: "JetStreamNotEnabled" }),
      false,
      /JetStream is not enabled .*\(transient\)/,
    ],
    [
      Object.assign(new Error("'payload' max_payload size exceeded"), { name: "InvalidArgumentError" }),
      true,
      /larger than the server's max_payload/,
    ],
    [
      apiError(10054, "message size exceeds maximum allowed"),
      true,
      /refused the 10-byte message for "a\.b" \(message size exceeds maximum allowed, API error 10054\): it is larger than the stream's max_msg_size.*can never be published/,
    ],
    [apiError(10097, "header size exceeds maximum allowed of 64k"), true, /headers are larger/],
    [apiError(10071, "wrong last sequence: 7"), true, /Expected-Last-Sequence/],
    [apiError(10070, "wrong last msg ID: x"), true, /Expected-Last-Msg-Id/],
    [apiError(10060, "expected stream does not match"), true, /Expected-Stream/],
    [apiError(10109, "invalid operation on sealed stream"), true, /sealed/],
    [
      apiError(10008, "JetStream system temporarily unavailable", 503),
      false,
      /failed: JetStream system temporarily unavailable \(API error 10008\) \(transient\)/,
    ],
    [apiError(10077, "maximum messages exceeded", 503), false, /maximum messages exceeded .*\(transient\)/],
    [apiError(10158, "duplicate message id is in process", 409), false, /\(transient\)/],
    [apiError(10118, "stream is offline", 500), false, /\(transient\)/],
    [new Error('Permissions Violation for Publish to "a.b"'), true, /Not allowed to publish/],
    [Object.assign(new Error("timeout"), { name: "TimeoutError" }), false, /timeout/],
    [Object.assign(new Error("closed connection"), { name: "ClosedConnectionError" }), false, /connection unavailable/],
    [
      Object.assign(new Error("insufficient resources"), { name: "JetStreamApiError" }),
      false,
      /failed: insufficient resources \(transient\)/,
    ],
  ];
  for (const [error, permanent, message] of cases) {
    const classified = classifyJetStreamError(error, "a.b", 10);
    assert.equal(isPermanentError(classified), permanent, String(error));
    assert.match(classified.message, message);
    assert.equal(classified.cause, error);
  }
});

test("jetstream: invalid publisher options are rejected", () => {
  assert.throws(() => jetstreamPublisher({} as never), /JetStream client/);
  assert.throws(() => jetstreamPublisher({ publish() {} } as never, { timeoutMs: 0 }), /timeoutMs/);
  assert.throws(
    () => jetstreamPublisher({ publish() {} } as never, { subject: "x" } as never),
    /subject must be a function/,
  );
  assert.throws(() => jetstreamPublisher({ publish() {} } as never, { subjectPrefix: "a b" }), /subjectPrefix/);
  assert.throws(
    () => jetstreamPublisher({ publish() {} } as never, { timeout: 5 } as never),
    /Unknown option "timeout"/,
  );
});

test("jetstream: a message over max_payload goes dead at once with the reason", async () => {
  const s = await natsStream();
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  try {
    const outbox = createOutbox({
      storage: libsqlStorage(client),
      publisher: jetstreamPublisher(s.js),
      maxPayloadBytes: 4 * 1024 * 1024,
      onError: () => {},
    });
    await outbox.setup();
    const max = s.nc.info!.max_payload;
    await outbox.enqueue(client, { id: "huge", topic: `${s.prefix}.t`, payload: new Uint8Array(max + 1) });
    const report = await outbox.tick();
    assert.equal(report.dead, 1);
    const [row] = await outbox.inspect();
    assert.match(row!.lastError!, /larger than the server's max_payload/);
    assert.equal((await s.read()).length, 0);
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
    await s.close();
  }
});

test("jetstream: ensureStream() creates a stream whose dedup window outlasts the retry horizon, and widens a short one", async () => {
  const s = await natsStream();
  const name = uniqueName("E");
  try {
    const outbox = { retryHorizonMs: 90_000 };
    let info = await ensureStream(s.jsm, {
      name,
      subjects: [`${name.toLowerCase()}.a`],
      outbox,
      storage: "memory" as never,
    });
    assert.equal(info.config.duplicate_window, 180_000 * 1_000_000);
    await s.jsm.streams.update(name, { ...info.config, duplicate_window: 1_000 * 1_000_000 });
    info = await ensureStream(s.jsm, {
      name,
      subjects: [`${name.toLowerCase()}.a`, `${name.toLowerCase()}.b`],
      outbox,
    });
    assert.equal(info.config.duplicate_window, 180_000 * 1_000_000);
    assert.deepEqual(info.config.subjects, [`${name.toLowerCase()}.a`, `${name.toLowerCase()}.b`]);
    await assert.rejects(
      () => ensureStream(s.jsm, { name, subjects: [], outbox, duplicateWindowMs: 60_000 }),
      /longer than the outbox's retry horizon/,
    );
  } finally {
    await s.jsm.streams.delete(name).catch(() => {});
    await s.close();
  }
});

test("jetstream: start() warns when the stream's dedup window is shorter than the retry horizon", async () => {
  const s = await natsStream({ duplicateWindowMs: 1_000 });
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  try {
    const warned = Promise.withResolvers<string>();
    const outbox = createOutbox({
      storage: libsqlStorage(client),
      publisher: jetstreamPublisher(s.js),
      leaseMs: 30_000,
      retry: { maxDelayMs: 60_000 },
      onWarning: (w) => warned.resolve(w),
    });
    await outbox.setup();
    await outbox.enqueue(client, { topic: `${s.prefix}.t`, payload: 1 });
    const relay = outbox.start({ minIdleMs: 5, maxIdleMs: 20 });
    try {
      const warning = await warned.promise;
      assert.match(warning, new RegExp(`stream "${s.name}" drops duplicates only within 1000 ms`));
      assert.match(warning, /90000 ms/);
    } finally {
      await relay.stop();
    }
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
    await s.close();
  }
});

async function endToEnd<Tx>(
  storage: OutboxStorage<Tx, unknown>,
  commit: (fn: (tx: Tx) => Promise<unknown>) => Promise<unknown>,
) {
  const s = await natsStream();
  try {
    const warnings: string[] = [];
    const outbox = createOutbox({
      storage,
      publisher: jetstreamPublisher(s.js),
      batchSize: 200,
      onError: (e) => console.error(e),
      onWarning: (w) => warnings.push(w),
    });
    await outbox.setup();
    const topic = `${s.prefix}.orders`;
    const sent: { id: string; topic: string; key: string | null; payload: unknown; headers: Record<string, string> }[] =
      [];
    for (let t = 0; t < 10; t++) {
      const batch = Array.from({ length: 60 }, (_, i) => {
        const n = t * 60 + i;
        const m = {
          id: `e2e-${n}`,
          topic,
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
    for (let i = 0; i < 500; i++) {
      if ((await s.jsm.streams.info(s.name)).state.messages >= sent.length) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    await relay.stop();
    const stored = await s.read();
    assert.equal(stored.length, sent.length, "every committed message is in the stream once");
    assert.deepEqual(new Set(stored.map((m) => m.id)), new Set(sent.map((m) => m.id)));
    const byId = new Map(sent.map((m) => [m.id, m]));
    for (const m of stored) {
      const original = byId.get(m.id!)!;
      assert.equal(m.subject, topic);
      assert.deepEqual(JSON.parse(decoder.decode(m.data)), original.payload);
      assert.equal(m.headers["x-n"], original.headers["x-n"]);
    }
    for (let k = 0; k < 16; k++) {
      const expected = sent.filter((m) => m.key === `k${k}`).map((m) => m.id);
      const got = stored.filter((m) => byId.get(m.id!)!.key === `k${k}`).map((m) => m.id);
      assert.deepEqual(got, expected, `stream order of key k${k}`);
    }
    // Published rows are gone (retention 0): enqueue the same ids again and relay them.
    // The stream drops them as duplicates: nothing is added.
    await commit((tx) => outbox.enqueue(tx, sent.slice(0, 50)));
    const report = await outbox.tick();
    assert.equal(report.published, 50);
    assert.equal(
      (await s.jsm.streams.info(s.name)).state.messages,
      sent.length,
      "re-sent ids add nothing to the stream",
    );
    // start() ran before, so the publisher says what it dropped (one throttled warning).
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /already held message e2e-\d+ and dropped the publish as a duplicate/);
  } finally {
    await s.close();
  }
}

test(
  "jetstream: end to end from Postgres: ids, payloads, headers, key order, and no duplicates in the stream",
  () => onFreshStorage(postgresHarness, endToEnd),
  {
    timeout: 60_000,
  },
);

test(
  "jetstream: end to end from libSQL: ids, payloads, headers, key order, and no duplicates in the stream",
  () => onFreshStorage(libsqlHarness, endToEnd),
  {
    timeout: 60_000,
  },
);

test("jetstream: pipelined runs keep one hot key in order in the stream", async () => {
  const s = await natsStream();
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  try {
    const outbox = createOutbox({
      storage: libsqlStorage(client),
      publisher: jetstreamPublisher(s.js),
      batchSize: 1_000,
    });
    await outbox.setup();
    const ids = Array.from({ length: 2_000 }, (_, i) => `hot-${i}`);
    await outbox.enqueue(client, ids.map((id, i) => ({ id, topic: `${s.prefix}.hot`, key: "hot", payload: { i } })));
    const report = await outbox.tick({ budgetMs: 60_000 });
    assert.equal(report.published, 2_000);
    assert.equal(report.batches >= 2, true);
    assert.deepEqual((await s.read()).map((m) => m.id), ids);
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
    await s.close();
  }
});

test("jetstream: a subject no stream accepts (no responders) is retried, not dead; start() warns, and the messages go out once a stream exists", async () => {
  const s = await natsStream();
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  const late = uniqueName("L");
  const subject = `${late.toLowerCase()}.t`;
  const warnings: string[] = [];
  try {
    const outbox = createOutbox({
      storage: libsqlStorage(client),
      publisher: jetstreamPublisher(s.js),
      retry: { maxAttempts: 1_000, baseDelayMs: 10, maxDelayMs: 50, jitter: 0 },
      onWarning: (w) => warnings.push(w),
      onError: (e) => console.error(e),
    });
    await outbox.setup();
    await outbox.enqueue(client, [1, 2, 3].map((n) => ({ id: `late-${n}`, topic: subject, key: "k", payload: n })));
    const relay = outbox.start({ minIdleMs: 5, maxIdleMs: 20 });
    try {
      await until(
        "the first message to have failed three times",
        async () => (await outbox.inspect()).some((r) => r.attempts >= 3),
      );
      const rows = await outbox.inspect();
      assert.equal(rows.filter((r) => r.status === "dead").length, 0, "no responders is transient: nothing goes dead");
      assert.match(
        rows.find((r) => r.id === "late-1")!.lastError!,
        new RegExp(
          `No JetStream stream answered for subject "${
            subject.replace(/\./g, "\\.")
          }" \\(no responders, 503\\): the stream may be electing a leader, or no stream accepts the subject \\(transient\\)`,
        ),
      );
      await until(
        "a warning that no stream accepts the subject",
        () => warnings.some((w) => w.includes(`No JetStream stream accepts subject "${subject}"`)),
      );
      await s.jsm.streams.add({ name: late, subjects: [`${late.toLowerCase()}.>`], storage: "memory" as never });
      await until(
        "the three messages in the new stream",
        async () => (await s.jsm.streams.info(late)).state.messages === 3,
      );
    } finally {
      await relay.stop();
    }
    assert.deepEqual((await readStream(s.jsm, late)).map((m) => m.id), ["late-1", "late-2", "late-3"]);
    const stats = await outbox.stats();
    assert.equal(stats.pending + stats.processing + stats.dead, 0);
    assert.equal(
      warnings.filter((w) => w.includes("No JetStream stream accepts")).length,
      1,
      "one lookup and warning per subject per minute",
    );
  } finally {
    await s.jsm.streams.delete(late).catch(() => {});
    client.close();
    rmSync(dir, { recursive: true, force: true });
    await s.close();
  }
});

test("jetstream: a message over the stream's max_msg_size goes dead after one attempt, with the reason in lastError", async () => {
  const s = await natsStream();
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  try {
    await s.jsm.streams.update(s.name, { ...(await s.jsm.streams.info(s.name)).config, max_msg_size: 64 });
    const outbox = createOutbox({
      storage: libsqlStorage(client),
      publisher: jetstreamPublisher(s.js),
      retry: { maxAttempts: 1_000, baseDelayMs: 10, maxDelayMs: 50 },
      onError: (e) => console.error(e),
    });
    await outbox.setup();
    const payload = { text: "x".repeat(100) };
    await outbox.enqueue(client, [
      { id: "big", topic: `${s.prefix}.t`, key: "k", payload },
      { id: "small", topic: `${s.prefix}.t`, key: "k", payload: 1 },
    ]);
    const report = await outbox.tick();
    assert.equal(report.dead, 1);
    const big = (await outbox.inspect()).find((r) => r.id === "big")!;
    assert.equal(big.status, "dead");
    assert.equal(big.attempts, 1, "a size the stream can never accept is not retried");
    assert.match(
      big.lastError!,
      new RegExp(
        `JetStream refused the ${
          JSON.stringify(payload).length
        }-byte message for "${s.prefix}\\.t" \\(message size exceeds maximum allowed, API error 10054\\): it is larger than the stream's max_msg_size`,
      ),
    );
    // A dead message does not hold back its key: the next one goes out.
    await until("the small message to go out", async () => {
      await outbox.tick();
      return (await s.read()).length === 1;
    });
    assert.deepEqual((await s.read()).map((m) => m.id), ["small"]);
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
    await s.close();
  }
});

test("jetstream: requeue() of a published message inside the duplicate window is dropped by the stream and warned about; after the window, or with a new id, it goes out again", async () => {
  const s = await natsStream({ duplicateWindowMs: 2_000 });
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  const warnings: string[] = [];
  try {
    const outbox = createOutbox({
      storage: libsqlStorage(client),
      publisher: jetstreamPublisher(s.js),
      leaseMs: 500,
      retry: { baseDelayMs: 20, maxDelayMs: 200 },
      retention: { publishedMs: 3_600_000 },
      onWarning: (w) => warnings.push(w),
    });
    await outbox.setup();
    const topic = `${s.prefix}.replay`;
    await outbox.enqueue(client, [{ id: "replay-1", topic, payload: 1 }, { id: "replay-2", topic, payload: 2 }]);
    // start() hands the publisher its warn callback.
    const relay = outbox.start({ minIdleMs: 5, maxIdleMs: 20 });
    try {
      await until("both messages in the stream", async () => (await s.read()).length === 2);
      await until("both rows published", async () => (await outbox.stats()).published === 2);
      // Replay them at once: the stream still remembers both ids.
      assert.equal(await outbox.requeue({ status: "published" }), 2);
      await until("the replay to be settled", async () => (await outbox.stats()).published === 2);
      assert.equal((await s.read()).length, 2, "the stream dropped the replay as a duplicate");
      assert.equal((await outbox.stats()).published, 2, "yet the outbox counts it published");
      await until(
        "a warning about the dropped replay",
        () => warnings.some((w) => /dropped the publish as a duplicate/.test(w)),
      );
      const warning = warnings.find((w) => /dropped the publish as a duplicate/.test(w))!;
      assert.match(warning, new RegExp(`stream "${s.name}" already held message replay-\\d`));
      assert.match(warning, /requeue after the window has passed, or enqueue the message with a new id/);
      // With a new id, it is a new message to the stream.
      await outbox.enqueue(client, { id: "replay-1-again", topic, payload: 1 });
      await until("the re-enqueued message in the stream", async () => (await s.read()).length === 3);
      // Once the window (2 s here) has passed, a requeue delivers again. The server forgets
      // ids on a timer, so poll: requeue, wait for the settle, look at the stream.
      await until("a requeue after the window to be stored", async () => {
        await outbox.requeue({ status: "published", ids: ["replay-2"] });
        await until("the requeued row settled", async () => (await outbox.stats()).published === 3, 2_000);
        return (await s.read()).length === 4;
      }, 10_000);
    } finally {
      await relay.stop();
    }
    assert.deepEqual((await s.read()).map((m) => m.id), ["replay-1", "replay-2", "replay-1-again", "replay-2"]);
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
    await s.close();
  }
});

// Keep the OutboxRecord type referenced for readers of the conformance contract.
export type { OutboxRecord };
