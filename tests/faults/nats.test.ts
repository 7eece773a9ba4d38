/**
 * Fault 3 (broker side): publishes that time out (a subscriber that never replies, so
 * no ack ever comes) and a JetStream stream deleted while the relay runs. A nats-server
 * stop and restart is covered by tests/nats_restart.test.ts, a stream-leader election
 * in a 3-node cluster by tests/faults/nats_cluster.test.ts.
 */

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { createOutbox } from "../../mod.ts";
import { libsqlStorage } from "../../adapters/libsql/mod.ts";
import { jetstreamPublisher } from "../../adapters/nats/mod.ts";
import { test } from "../harness.ts";
import { openClient, tempDatabase } from "../libsql_helpers.ts";
import { natsStream, readStream, uniqueName } from "../nats_helpers.ts";
import { checkStream, Ledger, until } from "./helpers.ts";

test(
  "faults: publishes that time out are retried with back-off and delivered once, in key order, when acks come back",
  async () => {
    const s = await natsStream();
    const { url, dir } = tempDatabase();
    const client = await openClient(url);
    const name = uniqueName("TO");
    const subject = name.toLowerCase();
    const errors: unknown[] = [];
    try {
      // A plain subscriber that never replies: the publish is a request nobody answers.
      s.nc.subscribe(`${subject}.>`, { callback: () => {} });
      const outbox = createOutbox({
        storage: libsqlStorage(client),
        publisher: jetstreamPublisher(s.js, { timeoutMs: 150 }),
        retry: { maxAttempts: 1_000, baseDelayMs: 50, maxDelayMs: 200, jitter: 0.2 },
        onError: (e) => errors.push(e),
      });
      await outbox.setup();
      const ledger = new Ledger();
      for (let t = 0; t < 4; t++) {
        const batch = Array.from(
          { length: 15 },
          (_, i) => ({
            id: `to-${t}-${i}`,
            topic: `${subject}.orders`,
            key: i % 5 === 4 ? null : `k${i % 4}`,
            payload: { t, i },
          }),
        );
        await outbox.enqueue(client, batch);
        ledger.commit(batch);
      }
      const relay = outbox.start({ minIdleMs: 5, maxIdleMs: 50 });
      const started = Date.now();
      try {
        // Unkeyed messages are all tried each time; a key's later messages wait behind its first.
        await until("each unkeyed message and each key's first to have timed out twice", async () => {
          const rows = await outbox.inspect();
          const heads = new Set(["k0", "k1", "k2", "k3"].map((k) => rows.find((r) => r.key === k)!.id));
          return rows.every((r) => (r.key !== null && !heads.has(r.id)) || r.attempts >= 2);
        }, 15_000);
        const rows = await outbox.inspect();
        assert.ok(rows.every((r) => r.status !== "dead"), "a timeout is transient: nothing goes dead");
        const timedOut = rows.find((r) => r.lastError !== null)!;
        assert.match(timedOut.lastError!, /No ack from JetStream .* in time \(timeout\) \(transient\)/);
        // The broker comes back: a stream now answers for the subject.
        await s.jsm.streams.add({
          name,
          subjects: [`${subject}.>`],
          storage: "memory" as never,
          duplicate_window: 120_000_000_000,
        });
        const healed = Date.now();
        await until(
          "every message in the stream",
          async () => (await s.jsm.streams.info(name)).state.messages >= ledger.committed.length,
          15_000,
        );
        console.log(
          `[faults] publish timeouts: ${
            rows.reduce((n, r) => n + Math.max(0, r.attempts - 1), 0)
          } timed-out attempts over ${healed - started} ms; delivered ${Date.now() - healed} ms after acks came back`,
        );
      } finally {
        await relay.stop();
      }
      checkStream(await readStream(s.jsm, name), ledger, "after timeouts");
      const stats = await outbox.stats();
      assert.equal(stats.pending + stats.processing + stats.dead, 0);
      assert.equal(errors.length, 0, "timeouts are publish outcomes, not relay errors");
    } finally {
      await s.jsm.streams.delete(name).catch(() => {});
      client.close();
      rmSync(dir, { recursive: true, force: true });
      await s.close();
    }
  },
  { timeout: 60_000 },
);

test(
  "faults: a stream deleted mid-run: messages are retried (no responders is transient), start() warns, and they go out once, in key order, when the stream is recreated",
  async () => {
    const s = await natsStream();
    const { url, dir } = tempDatabase();
    const client = await openClient(url);
    const errors: unknown[] = [];
    const warnings: string[] = [];
    try {
      const outbox = createOutbox({
        storage: libsqlStorage(client),
        publisher: jetstreamPublisher(s.js, { timeoutMs: 1_000 }),
        retry: { maxAttempts: 1_000, baseDelayMs: 20, maxDelayMs: 200 },
        onError: (e) => errors.push(e),
        onWarning: (w) => warnings.push(w),
      });
      await outbox.setup();
      const ledger = new Ledger();
      const write = async (t: number) => {
        const batch = Array.from(
          { length: 20 },
          (_, i) => ({
            id: `del-${t}-${i}`,
            topic: `${s.prefix}.orders`,
            key: i % 5 === 4 ? null : `k${i % 4}`,
            payload: { t, i },
          }),
        );
        await outbox.enqueue(client, batch);
        ledger.commit(batch);
      };
      const relay = outbox.start({ minIdleMs: 5, maxIdleMs: 50 });
      try {
        for (let t = 0; t < 5; t++) await write(t);
        await until(
          "the first 100 messages in the stream",
          async () => (await s.jsm.streams.info(s.name)).state.messages >= 100,
        );
        const before = await s.read();
        await s.jsm.streams.delete(s.name);
        const deletedAt = Date.now();
        for (let t = 5; t < 10; t++) await write(t);
        await until(
          "a warning that no stream accepts the subject",
          () => warnings.some((w) => w.includes(`No JetStream stream accepts subject "${s.prefix}.orders"`)),
        );
        const warnedAt = Date.now();
        await until("every unkeyed message and each key's first to have failed twice", async () => {
          const rows = (await outbox.inspect()).filter((r) => r.status === "pending");
          const heads = new Set(["k0", "k1", "k2", "k3"].map((k) => rows.find((r) => r.key === k)?.id));
          return rows.length === 100 && rows.every((r) => (r.key !== null && !heads.has(r.id)) || r.attempts >= 2);
        });
        const rows = await outbox.inspect();
        assert.equal(
          rows.filter((r) => r.status === "dead").length,
          0,
          "no responders is transient: nothing goes dead",
        );
        const failed = rows.filter((r) => r.lastError !== null);
        assert.ok(failed.length > 0);
        for (const row of failed) {
          assert.match(
            row.lastError!,
            /No JetStream stream answered for subject ".*" \(no responders, 503\): the stream may be electing a leader, or no stream accepts the subject \(transient\)/,
          );
        }
        console.log(
          `[faults] stream deleted mid-run: warned ${
            warnedAt - deletedAt
          } ms after the deletion; ${failed.length} messages retrying, none dead`,
        );
        // Nothing lost: what is not waiting was in the old stream before it was deleted.
        const waiting = new Set(rows.map((r) => r.id));
        const beforeIds = new Set(before.map((m) => m.id));
        assert.deepEqual(ledger.committed.filter((id) => !waiting.has(id) && !beforeIds.has(id)), []);
        // Recreate the stream: the retries deliver the waiting messages, no requeue() needed.
        await s.jsm.streams.add({
          name: s.name,
          subjects: [`${s.prefix}.>`],
          storage: "memory" as never,
          duplicate_window: 120_000_000_000,
        });
        const recreatedAt = Date.now();
        await until(
          "the waiting messages in the new stream",
          async () => (await s.jsm.streams.info(s.name)).state.messages >= 100,
        );
        console.log(`[faults] stream recreated: 100 waiting messages delivered in ${Date.now() - recreatedAt} ms`);
        assert.equal(await outbox.requeue({ status: "dead" }), 0);
      } finally {
        await relay.stop();
      }
      const after = await s.read();
      const waited = new Ledger();
      waited.commit(ledger.committed.slice(100).map((id) => ({ id, key: keyOf(id) })));
      checkStream(after, waited, "the recreated stream");
      const stats = await outbox.stats();
      assert.equal(stats.pending + stats.processing + stats.dead, 0);
      assert.equal(errors.length, 0, "failed publishes are outcomes, not relay errors");
    } finally {
      client.close();
      rmSync(dir, { recursive: true, force: true });
      await s.close();
    }
  },
  { timeout: 60_000 },
);

function keyOf(id: string): string | null {
  const i = Number(id.split("-")[2]);
  return i % 5 === 4 ? null : `k${i % 4}`;
}
