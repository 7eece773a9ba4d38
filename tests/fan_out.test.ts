/**
 * Fan-out end to end, against the real servers: one outbox, three destinations
 * (JetStream, Redis Streams, a signed webhook), relayed by `start()` from Postgres and
 * from libSQL. The webhook fails for a while (503), then answers; one message it refuses
 * for good (410). The other two destinations get every message once, in key order,
 * without waiting for the webhook; the webhook gets every message but the refused one,
 * once, in key order; the refused one is dead on the webhook destination only.
 */

import assert from "node:assert/strict";
import { createOutbox, type OutboxStorage } from "../mod.ts";
import { jetstreamPublisher } from "../adapters/nats/mod.ts";
import { redisStreamsPublisher } from "../adapters/redis/mod.ts";
import { generateWebhookSecret, verifyWebhook, webhookPublisher } from "../adapters/webhook/mod.ts";
import type { HarnessFactory } from "./conformance/storage.ts";
import { onFreshStorage } from "./conformance/storage/harness.ts";
import { checkStream, Ledger, until } from "./faults/helpers.ts";
import { test } from "./harness.ts";
import { libsqlHarness } from "./libsql_helpers.ts";
import { natsStream } from "./nats_helpers.ts";
import { postgresHarness } from "./postgres_helpers.ts";
import { dropStreams, openRedis, readEntries, uniqueStream } from "./redis_helpers.ts";
import { startReceiver } from "./webhook_helpers.ts";

const MESSAGES = 300;
const KEYS = 12;

async function fanOutRun<Tx>(name: string, factory: HarnessFactory<Tx>): Promise<void> {
  const nats = await natsStream();
  const redis = await openRedis();
  const stream = uniqueStream("fan-out");
  const secret = generateWebhookSecret();
  let failing = 25;
  const receiver = await startReceiver((request) => {
    const topic = request.headers["x-topic"];
    if (topic === "orders.gone") return { status: 410 };
    return failing-- > 0 ? { status: 503 } : { status: 204 };
  }, { dedup: true });
  const errors: unknown[] = [];
  try {
    await onFreshStorage(factory, async (storage, commit) => {
      const outbox = createOutbox({
        storage: storage as OutboxStorage<Tx, unknown>,
        publishers: {
          nats: jetstreamPublisher(nats.js, { subject: (m) => `${nats.prefix}.${m.topic}` }),
          redis: redisStreamsPublisher(redis, { stream: () => stream }),
          hooks: webhookPublisher({ url: receiver.url, secret, headers: (m) => ({ "x-topic": m.topic }) }),
        },
        retry: { maxAttempts: 20, baseDelayMs: 20, maxDelayMs: 200, jitter: 0 },
        onError: (error) => errors.push(error),
      });
      await outbox.setup();
      const ledger = new Ledger();
      const gone = new Set<string>();
      for (let start = 0; start < MESSAGES; start += 50) {
        const batch = Array.from({ length: 50 }, (_, j) => {
          const i = start + j;
          return { topic: i === 77 ? "orders.gone" : "orders.created", key: `k${i % KEYS}`, payload: { i } };
        });
        const ids = await commit((tx) => outbox.enqueue(tx as Tx, batch)) as string[];
        ledger.commit(ids.map((id, j) => ({ id, key: batch[j]!.key })));
        ids.forEach((id, j) => batch[j]!.topic === "orders.gone" && gone.add(id));
      }

      const relay = outbox.start({ minIdleMs: 5, maxIdleMs: 50 });
      try {
        await until(`${name}: JetStream and Redis have every message`, async () => {
          const info = await nats.jsm.streams.info(nats.name);
          return info.state.messages === MESSAGES && (await redis.xLen(stream)) === MESSAGES;
        }, 30_000);
        await until(
          `${name}: the webhook receiver stored all but the refused one`,
          () => receiver.stored.length === MESSAGES - 1,
          30_000,
        );
        await until(`${name}: nothing left pending`, async () => (await outbox.stats()).pending === 0, 30_000);
      } finally {
        await relay.stop();
      }

      checkStream(await nats.read(), ledger, `${name} → JetStream`);
      const entries = await readEntries(redis, stream);
      checkStream(entries.map((e, i) => ({ ...e, seq: i })), ledger, `${name} → Redis`);
      const hooks = receiver.stored.map((r, i) => ({
        seq: i,
        subject: "",
        id: r.headers["webhook-id"] ?? null,
        headers: r.headers,
        data: r.body,
      }));
      checkStream(hooks, ledger, `${name} → webhook`, gone);
      assert.ok(failing < 0, "the webhook failed before it answered");
      for (const [id, n] of receiver.deliveries) assert.equal(n, 1, `${id} stored once by the webhook`);
      const first = receiver.stored[0]!;
      const verified = await verifyWebhook({ body: first.body, headers: first.headers, secret });
      assert.equal(verified, true, "requests are signed with the secret");

      const stats = await outbox.stats();
      assert.deepEqual(stats.destinations, { hooks: { pending: 0, processing: 0, published: 0, dead: 1 } });
      const dead = await outbox.inspect({ status: "dead" });
      assert.deepEqual(dead.map((r) => [r.destination, r.id]), [["hooks", [...gone][0]]]);
      assert.match(dead[0]!.lastError ?? "", /410/);
    });
  } finally {
    await receiver.close();
    await dropStreams(redis, [stream]);
    await redis.close();
    await nats.close();
  }
}

test(
  "fan-out from Postgres: JetStream, Redis and a failing webhook each get every message once, in key order",
  async () => {
    await fanOutRun("postgres", postgresHarness);
  },
  { timeout: 90_000 },
);

test(
  "fan-out from libSQL: JetStream, Redis and a failing webhook each get every message once, in key order",
  async () => {
    await fanOutRun("libsql", () => libsqlHarness());
  },
  { timeout: 90_000 },
);
