/**
 * The AMQP publisher on the real RabbitMQ: the publisher conformance suite, the message
 * properties, end to end from libSQL, unroutable and refused messages, a channel closed
 * by the broker (with and without a function to reopen it), cancellation.
 */

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { createOutbox, isPermanentError, type OutboxRecord, type PublishContext } from "../mod.ts";
import { type AmqpConfirmChannel, amqpPublisher } from "../adapters/amqp/mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { publisherConformance } from "./conformance/publisher.ts";
import { test } from "./harness.ts";
import { amqpQueue, openConnection, uniqueName } from "./amqp_helpers.ts";
import { openClient, tempDatabase } from "./libsql_helpers.ts";
import { until } from "./faults/helpers.ts";

const decoder = new TextDecoder();
const context: PublishContext = { signal: new AbortController().signal };

let n = 0;
function record(topic: string, fields: Partial<OutboxRecord> = {}): OutboxRecord {
  const id = fields.id ?? `amqp-${Date.now().toString(36)}-${n++}`;
  const payload = fields.payload ?? { n };
  return {
    id,
    seq: n,
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

publisherConformance("amqp", async () => {
  const q = await amqpQueue();
  return {
    publisher: amqpPublisher(q.channel, { exchange: q.exchange }),
    topic: `${q.prefix}.t`,
    // No queue is bound for it: a mandatory publish comes back as unroutable.
    unroutableTopic: `${q.prefix}nowhere.t`,
    unroutable: "permanent",
    // RabbitMQ keeps every publish: consumers deduplicate by messageId.
    dedup: false,
    read: q.read,
    timingOut() {
      // The same channel, but the confirms are dropped on the way back: as with a
      // half-open connection, the publish neither fails nor is confirmed.
      const silent: AmqpConfirmChannel = {
        publish: (exchange, routingKey, content, options) =>
          q.channel.publish(exchange, routingKey, content as never, options, () => {}),
        on: (event, listener) => q.channel.on(event, listener as never),
        waitForConfirms: () => q.channel.waitForConfirms(),
        close: () => q.channel.close(),
      };
      return Promise.resolve(amqpPublisher(silent, { exchange: q.exchange, timeoutMs: 150 }));
    },
    close: q.close,
  };
});

test("amqp: messages go out persistent, with messageId, type, timestamp, content type and the key header", async () => {
  const q = await amqpQueue();
  try {
    const publisher = amqpPublisher(q.channel, { exchange: q.exchange });
    const createdAt = new Date("2025-01-02T03:04:05.678Z");
    await publisher.publish(
      record(`${q.prefix}.orders`, { id: "j", key: "order-7", createdAt, headers: { a: "1" } }),
      context,
    );
    await publisher.publish(
      record(`${q.prefix}.blobs`, { id: "b", body: new Uint8Array([1, 2]), payload: new Uint8Array([1, 2]) }),
      context,
    );
    await publisher.publish(
      record(`${q.prefix}.text`, { id: "t", headers: { "Content-Type": "application/cloudevents+json" } }),
      context,
    );
    const [json, bytes, typed] = await q.read();
    assert.equal(json!.id, "j");
    assert.equal(json!.persistent, true);
    assert.equal(json!.type, `${q.prefix}.orders`);
    assert.equal(json!.subject, `${q.prefix}.orders`, "the routing key is the topic");
    assert.equal(json!.timestamp, Math.floor(createdAt.getTime() / 1000));
    assert.equal(json!.contentType, "application/json");
    assert.deepEqual(json!.headers, { a: "1", "x-outbox-key": "order-7" });
    assert.equal(bytes!.contentType, "application/octet-stream");
    assert.deepEqual([...bytes!.data], [1, 2]);
    assert.equal(bytes!.headers["x-outbox-key"], undefined, "no key, no key header");
    assert.equal(typed!.contentType, "application/cloudevents+json", "the message's own content-type wins");
  } finally {
    await q.close();
  }
});

test("amqp: routingKey maps a message to its routing key; the default exchange routes to the queue named by it", async () => {
  const q = await amqpQueue();
  try {
    const publisher = amqpPublisher(q.channel, { routingKey: () => q.queue });
    assert.equal(publisher.routingKeyOf(record("anything")), q.queue);
    await publisher.publish(record("anything", { id: "direct" }), context);
    assert.deepEqual((await q.read()).map((m) => m.id), ["direct"]);
  } finally {
    await q.close();
  }
});

test("amqp: relayed end to end from libSQL, every message in the queue once, in key order", async () => {
  const q = await amqpQueue();
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  try {
    const outbox = createOutbox({
      storage: libsqlStorage(client),
      publisher: amqpPublisher(q.channel, { exchange: q.exchange }),
      batchSize: 64,
    });
    await outbox.setup();
    const ids: string[] = [];
    const order = new Map<string, string[]>();
    for (let t = 0; t < 10; t++) {
      const batch = Array.from({ length: 50 }, (_, i) => {
        const key = i % 7 === 6 ? null : `k${i % 5}`;
        return { id: `e2e-${t}-${i}`, topic: `${q.prefix}.orders`, key, payload: { t, i } };
      });
      await outbox.enqueue(client, batch);
      for (const m of batch) {
        ids.push(m.id);
        if (m.key) order.set(m.key, [...(order.get(m.key) ?? []), m.id]);
      }
    }
    while ((await outbox.tick()).published > 0);
    const stored = await q.read();
    assert.deepEqual([...stored.map((m) => m.id)].sort(), [...ids].sort(), "every message, once");
    for (const [key, expected] of order) {
      assert.deepEqual(stored.filter((m) => m.headers["x-outbox-key"] === key).map((m) => m.id), expected, key);
    }
    assert.deepEqual(JSON.parse(decoder.decode(stored.find((m) => m.id === "e2e-3-4")!.data)), { t: 3, i: 4 });
    const stats = await outbox.stats();
    assert.equal(stats.pending + stats.processing + stats.dead, 0);
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
    await q.close();
  }
});

test("amqp: an unroutable message goes dead at once with the reason; the routable ones around it go out", async () => {
  const q = await amqpQueue();
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  try {
    const outbox = createOutbox({
      storage: libsqlStorage(client),
      publisher: amqpPublisher(q.channel, { exchange: q.exchange }),
      onError: () => {},
    });
    await outbox.setup();
    await outbox.enqueue(
      client,
      [
        { id: "r1", topic: `${q.prefix}.a`, key: "k" },
        { id: "lost", topic: "nowhere.a", key: "k" },
        { id: "r2", topic: `${q.prefix}.a`, key: "k" },
      ].map((m) => ({ ...m, payload: {} })),
    );
    const first = await outbox.tick();
    assert.equal(first.dead, 1);
    while ((await outbox.tick()).published > 0);
    const [dead] = await outbox.inspect({ status: "dead" });
    assert.equal(dead!.id, "lost");
    assert.match(
      dead!.lastError!,
      new RegExp(
        `RabbitMQ returned message lost as unroutable \\(312 NO_ROUTE\\): no queue is bound to exchange "${q.exchange}" for routing key "nowhere\\.a"`,
      ),
    );
    assert.deepEqual((await q.read()).map((m) => m.id), ["r1", "r2"]);
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
    await q.close();
  }
});

test("amqp: with mandatory false an unroutable message is confirmed and dropped by the broker", async () => {
  const q = await amqpQueue();
  try {
    const publisher = amqpPublisher(q.channel, { exchange: q.exchange, mandatory: false });
    await publisher.publish(record("nowhere.at.all", { id: "dropped" }), context);
    await publisher.publish(record(`${q.prefix}.t`, { id: "kept" }), context);
    assert.deepEqual((await q.read()).map((m) => m.id), ["kept"]);
  } finally {
    await q.close();
  }
});

test("amqp: a nack (a full queue that rejects publishes) is a transient failure", async () => {
  const q = await amqpQueue();
  const queue = uniqueName("full");
  try {
    await q.channel.assertQueue(queue, {
      durable: false,
      arguments: { "x-max-length": 1, "x-overflow": "reject-publish" },
    });
    const publisher = amqpPublisher(q.channel, { routingKey: () => queue });
    const outcomes = await publisher.publishRun!([record("x", { id: "fits" }), record("x", { id: "over" })], context);
    assert.equal(outcomes[0]!.ok, true);
    assert.ok(!outcomes[1]!.ok);
    assert.equal(isPermanentError(outcomes[1]!.error), false);
    assert.match(String(outcomes[1]!.error), /refused message over .*\(nack: .*\) \(transient\)/);
  } finally {
    await q.channel.deleteQueue(queue).catch(() => {});
    await q.close();
  }
});

test("amqp: a missing exchange fails its message permanently; a given channel is then dead and says so", async () => {
  const q = await amqpQueue();
  const warnings: string[] = [];
  try {
    const channel = await q.connection.createConfirmChannel();
    const publisher = amqpPublisher(channel, { exchange: "x-outbox-no-such-exchange" });
    await publisher.check!({ retryHorizonMs: 1_000, warn: (w) => warnings.push(w) });
    const outcomes = await publisher.publishRun!([record("a", { id: "m1" }), record("a", { id: "m2" })], context);
    for (const outcome of outcomes) {
      assert.ok(!outcome.ok);
      assert.equal(isPermanentError(outcome.error), true);
      assert.match(
        String(outcome.error),
        /RabbitMQ closed the channel over message m\d: exchange "x-outbox-no-such-exchange" does not exist \(404 NOT_FOUND\)/,
      );
    }
    await assert.rejects(
      () => publisher.publish(record("a", { id: "m3" }), context),
      (e: unknown) =>
        !isPermanentError(e) &&
        /was given a channel, not a function that opens one, so it cannot reopen it/.test(String(e)),
    );
    await until("the warning about the dead channel", () => warnings.length > 0);
    assert.match(warnings[0]!, /closed by the broker: .*404.*cannot reopen/);
  } finally {
    await q.close();
  }
});

test("amqp: with a function to open channels, the publisher reopens one the broker closed", async () => {
  const q = await amqpQueue();
  try {
    const channels: Awaited<ReturnType<typeof q.connection.createConfirmChannel>>[] = [];
    const publisher = amqpPublisher(async () => {
      const channel = await q.connection.createConfirmChannel();
      channels.push(channel);
      return channel;
    }, { exchange: q.exchange });
    await publisher.publish(record(`${q.prefix}.a`, { id: "one" }), context);
    // A broker error on the channel (404 on a missing exchange) closes it for good.
    await assert.rejects(() => channels[0]!.checkExchange("x-outbox-no-such-exchange"), /404/);
    await publisher.publish(record(`${q.prefix}.a`, { id: "two" }), context);
    assert.equal(channels.length, 2, "a second channel was opened");
    assert.deepEqual((await q.read()).map((m) => m.id), ["one", "two"]);
    await publisher.close!();
    await assert.rejects(() => publisher.publish(record(`${q.prefix}.a`), context), /publisher is closed/);
  } finally {
    await q.close();
  }
});

test("amqp: a lost connection fails the publish transiently", async () => {
  const q = await amqpQueue();
  const connection = await openConnection();
  try {
    const channel = await connection.createConfirmChannel();
    const publisher = amqpPublisher(channel, { exchange: q.exchange });
    await publisher.publish(record(`${q.prefix}.a`, { id: "before" }), context);
    await connection.close();
    await assert.rejects(
      () => publisher.publish(record(`${q.prefix}.a`, { id: "after" }), context),
      (e: unknown) =>
        !isPermanentError(e) && /channel is closed .*not sent \(transient\)|cannot reopen/.test(String(e)),
    );
    assert.deepEqual((await q.read()).map((m) => m.id), ["before"]);
  } finally {
    await connection.close().catch(() => {});
    await q.close();
  }
});

test("amqp: an aborted signal fails the publish (transiently) and every unconfirmed message of a run", async () => {
  const q = await amqpQueue();
  try {
    const publisher = amqpPublisher(q.channel, { exchange: q.exchange });
    const aborted = new AbortController();
    aborted.abort(new Error("lease ending"));
    await assert.rejects(
      () => publisher.publish(record(`${q.prefix}.a`), { signal: aborted.signal }),
      (e: unknown) => !isPermanentError(e) && /cancelled/.test(String(e)),
    );
    const later = new AbortController();
    const run = Array.from({ length: 2_000 }, (_, i) => record(`${q.prefix}.a`, { id: `ab-${i}`, key: "k" }));
    const pending = publisher.publishRun!(run, { signal: later.signal });
    later.abort(new Error("lease ending"));
    const outcomes = await pending;
    assert.equal(outcomes.length, run.length);
    const failed = outcomes.filter((o) => !o.ok);
    assert.ok(failed.length > 0, "the run was cut short");
    assert.ok(failed.every((o) => !o.ok && !isPermanentError(o.error) && /cancelled/.test(String(o.error))));
  } finally {
    await q.close();
  }
});

test("amqp: invalid arguments and options are rejected", () => {
  assert.throws(() => amqpPublisher({} as never), /confirm channel/);
  const plain = { publish() {}, on() {}, close: () => Promise.resolve() } as never;
  assert.throws(() => amqpPublisher(plain), /a plain channel \(createChannel\(\)\) never confirms/);
  const channel = {
    publish() {},
    on() {},
    waitForConfirms: () => Promise.resolve(),
    close: () => Promise.resolve(),
  } as never;
  assert.throws(() => amqpPublisher(channel, { timeoutMs: 0 }), /timeoutMs/);
  assert.throws(() => amqpPublisher(channel, { routingKey: "x" } as never), /routingKey must be a function/);
  assert.throws(() => amqpPublisher(channel, { exchange: 5 } as never), /exchange must be a string/);
  assert.throws(() => amqpPublisher(channel, { mandatory: "yes" } as never), /mandatory/);
  assert.throws(() => amqpPublisher(channel, { confirm: true } as never), /Unknown option "confirm"/);
});
