/**
 * Core tests that need no storage: options, ids, payload encoding, back-off, errors.
 */

import assert from "node:assert/strict";
import * as v from "valibot";
import {
  createOutbox,
  isOutboxError,
  isPermanentError,
  memoryPublisher,
  memoryStorage,
  OutboxConfigError,
  OutboxError,
  OutboxMessageError,
  type OutboxStorage,
  PublishError,
  uuidv7,
} from "../mod.ts";
import { backoffDelay, resolveOptions } from "../src/options.ts";
import { encodePayload } from "../src/payload.ts";
import { prepareMessages } from "../src/message.ts";
import { describeError } from "../src/errors.ts";
import { test } from "./harness.ts";

const storage = {
  name: "stub",
  setup: async () => {},
  insert: async () => {},
  claim: async () => [],
  settle: async () => 0,
  cleanup: async () => 0,
  stats: async () => ({ pending: 0, processing: 0, published: 0, dead: 0, oldestPendingAt: null, blockedKeys: 0 }),
  requeue: async () => 0,
} satisfies OutboxStorage<unknown>;
const publisher = async () => {};

test("createOutbox() applies documented defaults", () => {
  const o = resolveOptions({ storage, publisher });
  assert.equal(o.batchSize, 500);
  assert.equal(o.leaseMs, 30_000);
  assert.deepEqual(o.retry, { maxAttempts: 10, baseDelayMs: 1_000, maxDelayMs: 60_000, jitter: 0.25, onDead: "skip" });
  assert.equal(o.clock, "storage", "relay clocks are not trusted by default");
  assert.equal(
    resolveOptions({ storage, publisher, now: () => 5 }).clock,
    "relay",
    "an injected clock is a test clock",
  );
  assert.deepEqual(o.retention, { publishedMs: 0, deadMs: 30 * 86_400_000, intervalMs: 60_000, batchSize: 1_000 });
  assert.equal(o.concurrency, 32);
  assert.equal(o.maxPayloadBytes, 1024 * 1024);
  assert.match(o.relayId, /^relay-[0-9a-f]{8}$/);
});

test("createOutbox() rejects each invalid option with OutboxConfigError naming the field", () => {
  const cases: [string, Record<string, unknown>, string][] = [
    ["no storage", { publisher }, "storage"],
    ["storage without methods", { storage: { name: "x" }, publisher }, "storage"],
    ["no publisher", { storage }, "publisher"],
    ["publisher not callable", { storage, publisher: { send() {} } }, "publisher"],
    ["batchSize 0", { storage, publisher, batchSize: 0 }, "batchSize"],
    ["batchSize fractional", { storage, publisher, batchSize: 1.5 }, "batchSize"],
    ["batchSize string", { storage, publisher, batchSize: "100" }, "batchSize"],
    ["leaseMs negative", { storage, publisher, leaseMs: -1 }, "leaseMs"],
    ["leaseMs NaN", { storage, publisher, leaseMs: NaN }, "leaseMs"],
    ["leaseMs Infinity", { storage, publisher, leaseMs: Infinity }, "leaseMs"],
    ["retry not an object", { storage, publisher, retry: 3 }, "retry"],
    ["retry.maxAttempts 0", { storage, publisher, retry: { maxAttempts: 0 } }, "retry.maxAttempts"],
    ["retry.jitter 2", { storage, publisher, retry: { jitter: 2 } }, "retry.jitter"],
    ["retry.baseDelayMs negative", { storage, publisher, retry: { baseDelayMs: -5 } }, "retry.baseDelayMs"],
    [
      "retry.maxDelayMs below base",
      { storage, publisher, retry: { baseDelayMs: 5_000, maxDelayMs: 1_000 } },
      "retry.maxDelayMs",
    ],
    ["unknown retry option", { storage, publisher, retry: { attempts: 3 } }, "retry.attempts"],
    ["retention.publishedMs negative", { storage, publisher, retention: { publishedMs: -1 } }, "retention.publishedMs"],
    ["retention.batchSize 0", { storage, publisher, retention: { batchSize: 0 } }, "retention.batchSize"],
    ["filter not a function", { storage, publisher, filter: true }, "filter"],
    ["concurrency 0", { storage, publisher, concurrency: 0 }, "concurrency"],
    ["maxPayloadBytes 0", { storage, publisher, maxPayloadBytes: 0 }, "maxPayloadBytes"],
    ["relayId with spaces", { storage, publisher, relayId: "my relay" }, "relayId"],
    ["messages not schemas", { storage, publisher, messages: { "a.b": { type: "object" } } }, "messages.a.b"],
    ["unknown option (typo)", { storage, publisher, batchsize: 10 }, "batchsize"],
    ["publisher and publishers", { storage, publisher, publishers: { a: publisher } }, "publisher"],
    ["publishers empty", { storage, publishers: {} }, "publishers"],
    ["publishers not an object", { storage, publishers: [publisher] }, "publishers"],
    ["publishers name with a space", { storage, publishers: { "a b": publisher } }, "publishers.a b"],
    [
      "publishers name too long",
      { storage, publishers: { ["x".repeat(65)]: publisher } },
      `publishers.${"x".repeat(65)}`,
    ],
    ["publishers value not a publisher", { storage, publishers: { a: { send() {} } } }, "publishers.a"],
    ["route not a function", { storage, publishers: { a: publisher }, route: ["a"] }, "route"],
    ["route without publishers", { storage, publisher, route: () => [] }, "route"],
  ];
  for (const [what, options, path] of cases) {
    assert.throws(
      () => createOutbox(options as never),
      (e: unknown) => e instanceof OutboxConfigError && e.path === path && e.message.length > 10,
      `${what} → path ${path}`,
    );
  }
  assert.throws(() => createOutbox(undefined as never), OutboxConfigError);
  assert.throws(
    () => createOutbox({ storage, publisher, batchSize: 0 }),
    /batchSize must be an integer between 1 and 10000, got 0/,
  );
  assert.throws(() => createOutbox({ storage, publisher, batchsize: 10 } as never), /Unknown option "batchsize"/);
  assert.throws(() => createOutbox({ publisher } as never), /^OutboxConfigError: storage is required$/);
  assert.throws(
    () => createOutbox({ storage, publisher: undefined } as never),
    /^OutboxConfigError: createOutbox needs a publisher, or publishers for fan-out \(not both\)$/,
  );
  assert.throws(
    () => createOutbox({ storage, publisher, retry: 3 } as never),
    /^OutboxConfigError: retry must be an object$/,
  );
  assert.throws(
    () => createOutbox({ storage, publisher, retry: { attempts: 3 } } as never),
    /retry has an unknown option "attempts"/,
  );
  assert.throws(() => createOutbox({ storage, publisher, leaseMs: NaN }), /leaseMs must be a number of milliseconds/);
  assert.throws(
    () => createOutbox({ storage, publisher, batchSize: Infinity }),
    /batchSize must be an integer between 1 and 10000, got Infinity/,
  );
  // The first invalid option in the documented order is the one reported.
  assert.throws(
    () => createOutbox({ storage, publisher, onWarning: 1, retry: { jitter: 9 } } as never),
    /retry.jitter must be between 0 and 1/,
  );
});

test("infinite retention keeps rows: publishedMs and deadMs accept Infinity", () => {
  const o = resolveOptions({ storage, publisher, retention: { publishedMs: Infinity, deadMs: Infinity } });
  assert.equal(o.retention.publishedMs, Infinity);
  assert.equal(o.retention.deadMs, Infinity);
});

test("uuidv7() makes RFC 9562 version-7 ids that increase within one millisecond", () => {
  const now = Date.UTC(2030, 5, 1);
  const ids = Array.from({ length: 10_000 }, () => uuidv7(now));
  for (const id of ids.slice(0, 5)) {
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  }
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i - 1]! < ids[i]!, `id ${i} sorts after id ${i - 1}`);
  assert.equal(new Set(ids).size, ids.length);
  const ms = parseInt(uuidv7(now + 10_000).replace(/-/g, "").slice(0, 12), 16);
  assert.equal(ms, now + 10_000);
  assert.ok(uuidv7(now - 5_000) > ids.at(-1)!, "a clock step back never makes a smaller id");
});

test("encodePayload() keeps JSON values and bytes, and names the path of what JSON would lose", () => {
  assert.equal(
    encodePayload({ a: 1, b: undefined, d: new Date(0) }, 1_000, "payload"),
    '{"a":1,"d":"1970-01-01T00:00:00.000Z"}',
  );
  assert.equal(encodePayload(null, 10, "payload"), "null");
  const bytes = new Uint8Array([1, 2]);
  assert.equal(encodePayload(bytes, 10, "payload"), bytes);
  const shared = { x: 1 };
  assert.equal(
    encodePayload({ a: shared, b: shared }, 100, "payload"),
    '{"a":{"x":1},"b":{"x":1}}',
    "shared references are not cycles",
  );
  const cases: [unknown, RegExp, string][] = [
    [{ "odd key": [1, { n: 1n }] }, /BigInt/, 'payload["odd key"][1].n'],
    [{ when: Infinity }, /Infinity/, "payload.when"],
    [[undefined], /undefined/, "payload[0]"],
    [new (class Order {})(), /Order/, "payload"],
    [new Set([1]), /Set/, "payload"],
    [undefined, /undefined/, "payload"],
  ];
  for (const [value, message, path] of cases) {
    assert.throws(
      () => encodePayload(value, 1_000, "payload"),
      (e: unknown) => e instanceof OutboxMessageError && message.test(e.message) && e.path === path,
    );
  }
  assert.throws(() => encodePayload("é".repeat(6), 10, "payload"), /12 bytes as JSON|14 bytes as JSON/);
});

test("prepareMessages() validates against the topic's schema and stores the schema's output", () => {
  const schemas = { "price.set": v.object({ cents: v.pipe(v.string(), v.transform(Number)) }) };
  const [row] = prepareMessages({ topic: "price.set", payload: { cents: "250" } }, {
    schemas,
    maxPayloadBytes: 1_000,
    now: 5,
  });
  assert.equal(row!.body, '{"cents":250}');
  assert.equal(row!.availableAt, 5);
  assert.equal(row!.key, null);
  assert.equal(row!.headers, null);
  const [delayed] = prepareMessages({
    topic: "price.set",
    payload: { cents: "1" },
    deliverAt: new Date(1_000),
    headers: { a: "b" },
  }, {
    schemas,
    maxPayloadBytes: 1_000,
    now: 5,
  });
  assert.equal(delayed!.availableAt, 1_000);
  assert.equal(delayed!.headers, '{"a":"b"}');
  assert.throws(
    () => prepareMessages({ topic: "price.set", payload: { cents: 3 } }, { schemas, maxPayloadBytes: 1_000, now: 5 }),
    (e: unknown) => e instanceof OutboxMessageError && e.path === "payload.cents" && Array.isArray(e.cause),
  );
});

test("backoffDelay() doubles from baseDelayMs, caps at maxDelayMs and spreads by ±jitter", () => {
  const retry = { maxAttempts: 10, baseDelayMs: 1_000, maxDelayMs: 60_000, jitter: 0 };
  assert.deepEqual([1, 2, 3, 4, 7, 8, 20].map((n) => backoffDelay(retry, n)), [
    1_000,
    2_000,
    4_000,
    8_000,
    60_000,
    60_000,
    60_000,
  ]);
  const jittered = { ...retry, jitter: 0.25 };
  assert.equal(backoffDelay(jittered, 1, () => 0), 750);
  assert.equal(backoffDelay(jittered, 1, () => 0.999999), 1_250);
  assert.equal(backoffDelay(jittered, 10, () => 0.999999), 60_000, "jitter never exceeds the cap");
});

test("error classes extend OutboxError, set name and cause, and are recognised across copies", () => {
  const cause = new Error("socket closed");
  const e = new PublishError("No responders", { permanent: true, cause });
  assert.ok(e instanceof OutboxError && e instanceof Error);
  assert.equal(e.name, "PublishError");
  assert.equal(e.cause, cause);
  assert.ok(isPermanentError(e));
  assert.ok(!isPermanentError(new PublishError("timeout")));
  assert.ok(isPermanentError({ permanent: true }));
  assert.ok(isOutboxError(e, "PublishError"));
  assert.ok(!isOutboxError(e, "OutboxConfigError"));
  // A copy of the library loaded twice brands its errors with the same global symbol.
  const foreign = Object.assign(new Error("x"), { [Symbol.for("@x/outbox/error")]: "OutboxMessageError" });
  assert.ok(isOutboxError(foreign, "OutboxMessageError"));
  assert.equal(new OutboxConfigError("bad", "retry.jitter").path, "retry.jitter");
  assert.equal(describeError(new TypeError("nope")), "TypeError: nope");
  assert.equal(describeError("plain"), "plain");
  assert.equal(describeError({ code: 503 }), '{"code":503}');
});

test("statements() refuses storages that have no statement form", () => {
  const outbox = createOutbox({ storage, publisher });
  assert.throws(() => outbox.statements({ topic: "t", payload: 1 }), OutboxConfigError);
});

test("memoryPublisher() records messages in order and its hook can fail a publish", async () => {
  let fail = true;
  const pub = memoryPublisher({
    onPublish: () => {
      if (fail) {
        fail = false;
        throw new Error("once");
      }
    },
  });
  const record = {
    id: "1",
    seq: 1,
    topic: "a",
    key: null,
    payload: 1,
    body: "1",
    headers: {},
    attempts: 1,
    createdAt: new Date(),
  };
  const context = { signal: new AbortController().signal };
  await assert.rejects(() => pub.publish(record, context), /once/);
  await pub.publish(record, context);
  await pub.publish({ ...record, id: "2", topic: "b" }, context);
  assert.deepEqual(pub.messages.map((m) => m.id), ["1", "2"]);
  assert.deepEqual(pub.byTopic("b").map((m) => m.id), ["2"]);
  pub.clear();
  assert.equal(pub.messages.length, 0);
});

test("start(): a tick that fails after publishing a batch still reports it to onTick", async () => {
  const storage = memoryStorage();
  let claims = 0;
  // The second claim (claimed ahead while the first batch publishes) fails.
  const flaky = {
    ...storage,
    claim: (request: Parameters<typeof storage.claim>[0]) =>
      ++claims === 2 ? Promise.reject(new Error("claim failed")) : storage.claim(request),
  };
  const publisher = memoryPublisher();
  const errors: unknown[] = [];
  const outbox = createOutbox({ storage: flaky, publisher, batchSize: 10, onError: (e) => errors.push(e) });
  await storage.transaction((tx) =>
    outbox.enqueue(tx, Array.from({ length: 25 }, (_, i) => ({ topic: "t", payload: i })))
  );
  const reports: { published: number }[] = [];
  let drained!: () => void;
  const done = new Promise<void>((resolve) => (drained = resolve));
  const relay = outbox.start({
    minIdleMs: 1,
    maxIdleMs: 5,
    onTick: (report) => {
      reports.push(report);
      if (publisher.messages.length === 25) drained();
    },
  });
  await done;
  await relay.stop();
  assert.equal(errors.length, 1);
  assert.match(String(errors[0]), /claim failed/);
  assert.equal(publisher.messages.length, 25);
  // Every publish is in some report: the failed tick's first batch too.
  assert.equal(reports.reduce((sum, r) => sum + r.published, 0), 25);
  assert.equal(reports[0]!.published, 10);
});

test("typed enqueue: with schemas, only configured topics and payload shapes type-check", () => {
  const outbox = createOutbox({
    storage,
    publisher,
    messages: { "orders.created": v.object({ id: v.string() }) },
  });
  // Compile-time checks (deno check / tsc): these lines must not type-check.
  const typeChecks = () => {
    // @ts-expect-error unknown topic
    void outbox.enqueue(null, { topic: "orders.deleted", payload: { id: "1" } });
    // @ts-expect-error wrong payload type
    void outbox.enqueue(null, { topic: "orders.created", payload: { id: 1 } });
    void outbox.enqueue(null, { topic: "orders.created", payload: { id: "1" } });
  };
  assert.equal(typeof typeChecks, "function");
});
