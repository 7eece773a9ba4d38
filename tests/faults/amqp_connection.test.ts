/**
 * Fault: the RabbitMQ connection closed by the broker mid-run (`rabbitmqctl
 * close_connection`, as an operator, a node failure or a load balancer would). The
 * publisher is given a function that opens channels on amqplib's recovering connection,
 * so after the close it waits for the reconnect and carries on.
 *
 * rabbitmqctl takes about a second to start, longer than the relay needs for most of
 * the run, so the close would usually land on an idle relay. To make it land on
 * publishes in flight, the test holds back the confirms that arrive once it has asked
 * for the close (as if they were still on the wire): those publishes are unconfirmed
 * when the connection goes, and their messages are in the queue already.
 *
 * AMQP has no broker-side dedup: a message whose confirm was lost is published again,
 * so the queue holds it twice. The test counts those duplicates, checks each is a
 * message whose publish had failed (a redelivery, never a stray), and checks that
 * nothing is lost and that each key's first deliveries are in enqueue order. Consumers
 * deduplicate by messageId (e.g. with @x/outbox/inbox).
 */

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { type ConfirmChannel, connect } from "amqplib";
import { createOutbox, type Publisher, type RelayHandle } from "../../mod.ts";
import { libsqlStorage } from "../../adapters/libsql/mod.ts";
import { type AmqpConfirmChannel, amqpPublisher } from "../../adapters/amqp/mod.ts";
import { test } from "../harness.ts";
import { openClient, tempDatabase } from "../libsql_helpers.ts";
import { AMQP_URL, amqpQueue, closeConnection, connectionsNamed, uniqueName } from "../amqp_helpers.ts";
import { Ledger, until, watchHost } from "./helpers.ts";

const TOTAL = 2_000;
const KEYS = 16;

/**
 * A confirm channel whose confirms are held back while `holding()` is true at publish
 * time: they reach the publisher only as the channel's close error, like confirms lost
 * with the connection. A nack or close error still gets through at once.
 */
function holdingConfirms(channel: ConfirmChannel, holding: () => boolean): AmqpConfirmChannel {
  const held = new Set<(error: unknown) => void>();
  channel.on("close", () => {
    for (const callback of held) callback(new Error("channel closed"));
    held.clear();
  });
  return {
    publish(exchange, routingKey, content, options, callback) {
      if (!holding()) return channel.publish(exchange, routingKey, content as never, options, callback);
      held.add(callback);
      return channel.publish(exchange, routingKey, content as never, options, (error) => {
        if (error === null || error === undefined) return; // confirmed, but "still on the wire"
        held.delete(callback);
        callback(error);
      });
    },
    on: (event, listener) => channel.on(event, listener as never),
    waitForConfirms: () => channel.waitForConfirms(),
    close: () => channel.close(),
  };
}

test(
  "faults: the RabbitMQ connection closed mid-run: nothing lost, key order kept, duplicates only of unconfirmed publishes",
  async () => {
    const host = watchHost();
    const q = await amqpQueue({ durable: true });
    const { url, dir } = tempDatabase();
    const client = await openClient(url);
    const connectionName = uniqueName("outbox-fault-");
    // amqplib's recovering connection: reconnects by itself after the close; its
    // createConfirmChannel() waits for the new connection.
    const connection = await connect(AMQP_URL, {
      clientProperties: { connection_name: connectionName },
      recovery: { initialDelay: 20, maxDelay: 200 },
    });
    // What the consumer sees, in queue order (one consumer: deliveries are in queue order).
    const delivered: string[] = [];
    let disconnects = 0;
    let deliveredAtDisconnect = -1;
    connection.on("error", () => {}); // the close is expected; unhandled, "error" would throw
    connection.on("disconnect", () => {
      if (disconnects++ === 0) deliveredAtDisconnect = delivered.length;
    });
    const consumer = await q.connection.createChannel();
    await consumer.consume(q.queue, (m) => m && delivered.push(m.properties.messageId), { noAck: true });
    let relay: RelayHandle | null = null;
    let holding = false;
    let opened = 0;
    try {
      const amqp = amqpPublisher(async () => {
        opened++;
        return holdingConfirms(await connection.createConfirmChannel(), () => holding);
      }, { exchange: q.exchange });
      // Every id whose publish failed at least once: the only ones allowed twice in the queue.
      const failed = new Set<string>();
      const publisher: Publisher = {
        publish: (m, ctx) => amqp.publish(m, ctx).catch((e) => (failed.add(m.id), Promise.reject(e))),
        publishRun: async (messages, ctx) => {
          const outcomes = await amqp.publishRun!(messages, ctx);
          outcomes.forEach((o, i) => !o.ok && failed.add(messages[i]!.id));
          return outcomes;
        },
      };
      const errors: unknown[] = [];
      const outbox = createOutbox({
        storage: libsqlStorage(client),
        publisher,
        batchSize: 64,
        retry: { maxAttempts: 1_000, baseDelayMs: 20, maxDelayMs: 200, jitter: 0.2 },
        onError: (e) => errors.push(e),
      });
      await outbox.setup();
      const ledger = new Ledger();
      // The broker's pid for our connection, looked up before the run (rabbitmqctl is slow).
      const [pid] = connectionsNamed(connectionName);
      assert.ok(pid, `RabbitMQ lists the connection named ${connectionName}`);

      relay = outbox.start({ minIdleMs: 2, maxIdleMs: 20 });
      let closed: Promise<void> | null = null;
      let closeAskedAt = 0;
      for (let written = 0; written < TOTAL;) {
        const batch = Array.from({ length: 40 }, (_, i) => ({
          id: `amqp-f-${String(written + i).padStart(5, "0")}`,
          topic: `${q.prefix}.orders`,
          key: `k${(written + i) % KEYS}`,
          payload: { n: written + i },
        }));
        await outbox.enqueue(client, batch);
        ledger.commit(batch);
        written += batch.length;
        if (closed === null) {
          // A bounded backlog before the close; after it the relay stalls on held confirms.
          await until("the relay to keep up with the writer", () => delivered.length >= written - 200);
          if (delivered.length >= TOTAL / 4) {
            closeAskedAt = delivered.length;
            holding = true;
            closed = closeConnection(pid, "closed by the outbox fault test");
          }
        }
        // Half the messages are written after the close: the relay goes on from the new connection.
        if (written === TOTAL / 2 && closed !== null) {
          await closed;
          await until("the broker's close to reach the client", () => disconnects > 0);
          holding = false;
        }
      }
      assert.ok(closed !== null, "the close was asked for mid-run");
      await until("every message in the queue", () => new Set(delivered).size >= TOTAL, 30_000);
      await relay.stop();
      relay = null;

      // Nothing lost, nothing foreign.
      const first = new Map<string, number>();
      delivered.forEach((id, i) => first.has(id) || first.set(id, i));
      assert.deepEqual(ledger.committed.filter((id) => !first.has(id)), [], "every committed message was delivered");
      assert.equal(first.size, TOTAL, "only committed messages were delivered");
      // Each key's first deliveries in enqueue order.
      for (const [key, order] of ledger.keyOrder) {
        const got = [...order].sort((a, b) => first.get(a)! - first.get(b)!);
        assert.deepEqual(got, order, `first deliveries of key ${key} in enqueue order`);
      }
      // Duplicates: only messages whose publish failed (unconfirmed when the connection went).
      const duplicates = delivered.length - first.size;
      const twice = [...new Set(delivered.filter((id, i) => first.get(id) !== i))];
      assert.deepEqual(twice.filter((id) => !failed.has(id)), [], "every duplicate had a failed (unconfirmed) publish");
      assert.ok(failed.size > 0, "the close caught publishes in flight");
      assert.equal(disconnects, 1, "the connection was closed under the relay once");
      assert.ok(opened >= 2, "the publisher opened a channel on the new connection");
      assert.equal(connectionsNamed(connectionName).length, 1, "and amqplib reconnected");
      const stats = await outbox.stats();
      assert.equal(stats.pending + stats.processing + stats.dead, 0, "nothing left behind, nothing dead");
      assert.deepEqual(errors, [], "a lost connection is a publish outcome, not a relay error");
      assert.deepEqual(host.seen, [], "no unhandled rejection or uncaught exception");
      console.log(
        `[faults] amqp connection closed (asked after ${closeAskedAt}, landed after ${deliveredAtDisconnect} of ` +
          `${TOTAL} first deliveries): ${failed.size} publishes failed and were retried on the new connection; ` +
          `${duplicates} duplicate deliveries (${twice.length} ids), all of unconfirmed publishes; 0 lost; ` +
          `key order kept for ${KEYS} keys`,
      );
    } finally {
      await relay?.stop();
      host.stop();
      await consumer.close().catch(() => {});
      await connection.close().catch(() => {});
      client.close();
      rmSync(dir, { recursive: true, force: true });
      await q.close();
    }
  },
  { timeout: 90_000 },
);
