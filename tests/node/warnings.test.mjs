// Node is the runtime most users run, and it prints what Bun and Deno do not: a relay
// with default options, `start()`, the JetStream publisher and many keys per batch must
// make Node print no warning (MaxListenersExceededWarning came from one abort listener
// per publish in flight on one shared signal) and leave no unhandled rejection.
// Runs the npm build (dist/) against NATS JetStream at 127.0.0.1:4222.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createClient } from "@libsql/client";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { createOutbox } from "@x/outbox";
import { libsqlStorage } from "@x/outbox/libsql";
import { ensureStream, jetstreamPublisher } from "@x/outbox/nats";
import { redisStreamsPublisher } from "@x/outbox/redis";
import { amqpPublisher } from "@x/outbox/amqp";
import { createClient as createRedis } from "redis";
import { connect as connectAmqp } from "amqplib";

const NATS_URL = process.env.OUTBOX_TEST_NATS_URL ?? "127.0.0.1:4222";

/** Records the process's warnings and unhandled rejections until `stop()`. */
function watchProcess() {
  const warnings = [];
  const rejections = [];
  const onWarning = (w) => warnings.push(`${w.name}: ${w.message}`);
  const onRejection = (reason) => rejections.push(reason);
  process.on("warning", onWarning);
  process.on("unhandledRejection", onRejection);
  return {
    async assertQuiet() {
      // Warnings are emitted on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
      assert.deepEqual(warnings, []);
      assert.deepEqual(rejections, []);
    },
    stop() {
      process.off("warning", onWarning);
      process.off("unhandledRejection", onRejection);
    },
  };
}

test("Node: start() with default options relays 3,000 messages over 200 keys to JetStream without a warning or an unhandled rejection", async () => {
  const watch = watchProcess();
  const dir = mkdtempSync(join(tmpdir(), "outbox-warnings-"));
  const client = createClient({ url: `file:${join(dir, "outbox.db")}` });
  const nc = await connect({ servers: NATS_URL });
  const token = `nodewarn${process.pid}${Date.now().toString(36)}`;
  const stream = token.toUpperCase();
  const jsm = await jetstreamManager(nc);
  try {
    const outbox = createOutbox({
      storage: libsqlStorage(client),
      publisher: jetstreamPublisher(jetstream(nc), { subjectPrefix: `${token}.` }),
    });
    await outbox.setup();
    await ensureStream(jsm, { name: stream, subjects: [`${token}.>`], outbox });
    const total = 3_000;
    for (let i = 0; i < total; i += 500) {
      await outbox.enqueue(
        client,
        Array.from({ length: 500 }, (_, j) => ({ topic: "orders", key: `k${(i + j) % 200}`, payload: { n: i + j } })),
      );
    }
    const relay = outbox.start();
    try {
      const deadline = Date.now() + 60_000;
      while ((await jsm.streams.info(stream)).state.messages < total) {
        assert.ok(Date.now() < deadline, "all messages reach the stream within 60 s");
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } finally {
      await relay.stop();
    }
    assert.equal((await jsm.streams.info(stream)).state.messages, total);
    await watch.assertQuiet();
  } finally {
    watch.stop();
    await jsm.streams.delete(stream).catch(() => {});
    await nc.close();
    client.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * The same for the Redis Streams and AMQP publishers, whose pipelined runs each waited on
 * the batch's lease signal: with more than 10 keys in a batch Node warned once per batch.
 */
async function relaysWithoutWarnings(name, publisher, count) {
  const watch = watchProcess();
  const dir = mkdtempSync(join(tmpdir(), "outbox-warnings-"));
  const client = createClient({ url: `file:${join(dir, "outbox.db")}` });
  try {
    const outbox = createOutbox({ storage: libsqlStorage(client), publisher });
    await outbox.setup();
    const total = 2_000;
    for (let i = 0; i < total; i += 500) {
      await outbox.enqueue(
        client,
        Array.from({ length: 500 }, (_, j) => ({ topic: name, key: `k${(i + j) % 64}`, payload: { n: i + j } })),
      );
    }
    const relay = outbox.start();
    try {
      const deadline = Date.now() + 60_000;
      while ((await count()) < total) {
        assert.ok(Date.now() < deadline, "all messages arrive within 60 s");
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } finally {
      await relay.stop();
    }
    assert.equal(await count(), total);
    await watch.assertQuiet();
  } finally {
    watch.stop();
    client.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test("Node: start() relays 2,000 messages over 64 keys to Redis Streams without a warning", async () => {
  const redis = await createRedis({ url: process.env.OUTBOX_TEST_REDIS_URL ?? "redis://127.0.0.1:6379" }).connect();
  const stream = `nodewarn-${process.pid}-${Date.now().toString(36)}`;
  try {
    await relaysWithoutWarnings(stream, redisStreamsPublisher(redis), () => redis.xLen(stream));
  } finally {
    for await (const keys of redis.scanIterator({ MATCH: `{${stream}}*`, COUNT: 1000 })) {
      if (keys.length) await redis.del(keys);
    }
    await redis.del(stream);
    await redis.close();
  }
});

test("Node: start() relays 2,000 messages over 64 keys to RabbitMQ without a warning", async () => {
  const connection = await connectAmqp(process.env.OUTBOX_TEST_AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672");
  const admin = await connection.createChannel();
  const name = `nodewarn-${process.pid}-${Date.now().toString(36)}`;
  await admin.assertExchange(name, "topic", { durable: false, autoDelete: false });
  await admin.assertQueue(name, { durable: false });
  await admin.bindQueue(name, name, "#");
  try {
    const publisher = amqpPublisher(() => connection.createConfirmChannel(), { exchange: name });
    await relaysWithoutWarnings(name, publisher, async () => (await admin.checkQueue(name)).messageCount);
    await publisher.close();
  } finally {
    await admin.deleteQueue(name).catch(() => {});
    await admin.deleteExchange(name).catch(() => {});
    await connection.close();
  }
});
