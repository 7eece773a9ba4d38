/**
 * Faults at the webhook receiver, end to end through the relay (libSQL file storage, a
 * real local HTTP server): a receiver that never answers (the lease aborts the request),
 * 503 then 200, 410 Gone, 429 with Retry-After, and `start()` over 16 keys with a
 * receiver failing one request in ten. Nothing is lost, a receiver that deduplicates by
 * `webhook-id` stores each message once, and each key's first deliveries are in order.
 */

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { createOutbox, type Outbox, type Publisher } from "../../mod.ts";
import { libsqlStorage, type LibsqlTx } from "../../adapters/libsql/mod.ts";
import { type RetryAfterError, verifyWebhook, webhookPublisher } from "../../adapters/webhook/mod.ts";
import { test } from "../harness.ts";
import { openClient, tempDatabase } from "../libsql_helpers.ts";
import { type Answer, type ReceivedRequest, startReceiver } from "../webhook_helpers.ts";
import { checkStream, Ledger, until } from "./helpers.ts";
import type { ReadMessage } from "../nats_helpers.ts";
import type { Client } from "@libsql/client";

/** A libSQL outbox relaying to `publisher`, with fast retries; `errors` collects what the publisher threw. */
async function fixture(publisher: Publisher, options: { leaseMs?: number } = {}) {
  const { url, dir } = tempDatabase();
  const client = await openClient(url);
  const thrown: unknown[] = [];
  const outbox = createOutbox({
    storage: libsqlStorage(client),
    publisher,
    leaseMs: options.leaseMs ?? 30_000,
    retry: { maxAttempts: 1_000, baseDelayMs: 5, maxDelayMs: 40, jitter: 0.2 },
    // Sees each attempt's error as the relay does (retryAfterMs included).
    instrumentation: {
      publisher: (p) => ({
        ...p,
        publish: async (m, c) => {
          try {
            await p.publish(m, c);
          } catch (error) {
            thrown.push(error);
            throw error;
          }
        },
      }),
    },
  });
  await outbox.setup();
  return {
    client,
    outbox: outbox as Outbox<LibsqlTx, unknown>,
    thrown,
    close() {
      client.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Ticks until nothing is pending or processing (each tick is a real relay pass, not a sleep). */
async function drain(outbox: Outbox<LibsqlTx, unknown>, what: string): Promise<void> {
  await until(what, async () => {
    await outbox.tick();
    const s = await outbox.stats();
    return s.pending + s.processing === 0;
  });
}

async function enqueue(outbox: Outbox<LibsqlTx, unknown>, client: Client, id: string, key: string | null = null) {
  await outbox.enqueue(client, { id, topic: "orders.created", key, payload: { id } });
}

test(
  "faults (webhook): a receiver that never answers: the lease aborts the request (transient), the retry is delivered",
  async () => {
    let hang = true;
    const r = await startReceiver(() => hang ? "hang" : { status: 204 });
    // A request timeout far beyond the lease: only the lease can end the first attempt.
    const f = await fixture(webhookPublisher({ url: `${r.url}/in`, timeoutMs: 60_000 }), { leaseMs: 600 });
    try {
      await enqueue(f.outbox, f.client, "hang-1");
      const started = Date.now();
      const report = await f.outbox.tick();
      assert.equal(report.retried, 1, JSON.stringify(report));
      assert.ok(Date.now() - started < 5_000, "the tick ended with the lease, not the request timeout");
      const [row] = await f.outbox.inspect();
      assert.equal(row!.status, "pending");
      assert.equal(row!.attempts, 1);
      // The relay stops waiting when the lease ends (its own words in lastError)...
      assert.match(row!.lastError!, /lease ended/);
      // ...and the publisher gives up too: it aborts the request on the lease signal, so
      // the receiver sees the connection close unanswered, and says why in its error.
      await until("the receiver to see the aborted request", () => r.aborted() === 1);
      await until("the publisher's error", () => f.thrown.length === 1);
      assert.match(String(f.thrown[0]), /aborted: the claim's lease is ending \(timeout, transient\)/);
      hang = false;
      await drain(f.outbox, "the retry to be delivered");
      assert.equal(r.stored.length, 1);
      assert.equal(r.stored[0]!.headers["webhook-id"], "hang-1");
    } finally {
      f.close();
      await r.close();
    }
  },
  { timeout: 30_000 },
);

test("faults (webhook): 503 then 200: retried and stored once by a receiver that deduplicates by webhook-id", async () => {
  const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const tries = new Map<string, number>();
  const verified: boolean[] = [];
  const r = await startReceiver(async (req) => {
    verified.push(await verifyWebhook({ secret, headers: req.headers, body: req.body }));
    const id = req.headers["webhook-id"]!;
    const n = (tries.get(id) ?? 0) + 1;
    tries.set(id, n);
    // "a": refused twice before it is stored. "b": stored, but the 2xx is lost (503 sent
    // instead), as when a receiver's proxy times out after the write: it comes again.
    if (id === "a" && n <= 2) return { status: 503, body: "busy" };
    if (id === "b" && n === 1) return { status: 503, store: true };
    return { status: 200 };
  }, { dedup: true });
  const f = await fixture(webhookPublisher({ url: r.url, secret }));
  try {
    await enqueue(f.outbox, f.client, "a", "k");
    await enqueue(f.outbox, f.client, "b", "k");
    await drain(f.outbox, "both delivered");
    assert.deepEqual(Object.fromEntries(tries), { a: 3, b: 2 }, "requests per id");
    assert.deepEqual(Object.fromEntries(r.deliveries), { a: 1, b: 2 }, "b reached the receiver's store twice");
    assert.deepEqual(r.stored.map((s) => s.headers["webhook-id"]), ["a", "b"], "stored once each, in key order");
    assert.ok(verified.length === 5 && verified.every(Boolean), "every attempt is signed afresh and verifies");
    assert.equal(f.thrown.length, 3);
    assert.ok(f.thrown.every((e) => /answered 503 Service Unavailable/.test(String(e))));
  } finally {
    f.close();
    await r.close();
  }
});

test("faults (webhook): 410 Gone: dead after one attempt, with the reason in lastError", async () => {
  const r = await startReceiver(() => ({ status: 410, body: "endpoint removed" }));
  const f = await fixture(webhookPublisher({ url: r.url }));
  try {
    await enqueue(f.outbox, f.client, "gone-1");
    const report = await f.outbox.tick();
    assert.equal(report.dead, 1);
    const [row] = await f.outbox.inspect();
    assert.equal(row!.status, "dead");
    assert.equal(row!.attempts, 1);
    assert.match(row!.lastError!, /refused the message with 410 Gone: "endpoint removed" \(410 Gone: the receiver/);
    assert.equal(r.requests.length, 1, "no retry");
  } finally {
    f.close();
    await r.close();
  }
});

test("faults (webhook): 429 with Retry-After: transient, and the error the relay sees carries retryAfterMs", async () => {
  let limited = true;
  const r = await startReceiver(() => limited ? { status: 429, headers: { "retry-after": "3" } } : { status: 204 });
  const f = await fixture(webhookPublisher({ url: r.url }));
  try {
    await enqueue(f.outbox, f.client, "rl-1");
    const report = await f.outbox.tick();
    assert.equal(report.retried, 1);
    const error = f.thrown[0] as RetryAfterError;
    assert.equal(error.retryAfterMs, 3_000);
    assert.equal(error.permanent, false);
    const [row] = await f.outbox.inspect();
    assert.match(row!.lastError!, /answered 429 Too Many Requests \(transient, Retry-After 3 s\)/);
    limited = false;
    await drain(f.outbox, "delivered once the limit lifts");
    assert.equal(r.stored.length, 1);
  } finally {
    f.close();
    await r.close();
  }
});

test(
  "faults (webhook): start() over 16 keys with 1 request in 10 failing (503): nothing lost, stored once, key order kept",
  async () => {
    let count = 0;
    // Deterministic 10 %: every tenth request fails; half of those after the receiver
    // stored the message (a lost 2xx), so the retry is a duplicate it must drop.
    const r = await startReceiver((): Answer => {
      const n = count++;
      if (n % 10 !== 9) return { status: 204 };
      return n % 20 === 19 ? { status: 503, store: true } : { status: 503 };
    }, { dedup: true });
    const f = await fixture(webhookPublisher({ url: r.url, secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }));
    const ledger = new Ledger();
    try {
      const relay = f.outbox.start({ minIdleMs: 5, maxIdleMs: 50 });
      try {
        for (let t = 0; t < 20; t++) {
          const batch = Array.from({ length: 20 }, (_, i) => ({
            id: `e2e-${t}-${i}`,
            topic: "orders.created",
            key: i % 20 < 16 ? `k${(i + t) % 16}` : null,
            payload: { t, i },
          }));
          await f.outbox.enqueue(f.client, batch);
          ledger.commit(batch);
        }
        await until("every message stored", () => r.stored.length >= ledger.committed.length, 30_000);
        await until("every row settled", async () => {
          const s = await f.outbox.stats();
          return s.pending + s.processing === 0;
        });
      } finally {
        await relay.stop();
      }
      const stored: ReadMessage[] = r.stored.map((s: ReceivedRequest, seq) => ({
        seq,
        subject: s.path,
        id: s.headers["webhook-id"] ?? null,
        headers: s.headers,
        data: s.body,
      }));
      // Stored = each id's first successful delivery: none lost, none twice, keys in order.
      checkStream(stored, ledger, "webhook receiver");
      const failed = r.requests.length - [...r.deliveries.values()].reduce((a, b) => a + b, 0);
      const duplicates = [...r.deliveries.values()].filter((n) => n > 1).length;
      assert.ok(failed > 0 && duplicates > 0, `the faults happened (${failed} refused, ${duplicates} delivered twice)`);
      assert.equal((await f.outbox.stats()).dead, 0);
      console.log(
        `[faults] webhook 10% 503: ${ledger.committed.length} messages, ${r.requests.length} requests, ` +
          `${failed} refused, ${duplicates} stored-then-503 dropped as duplicates by the receiver`,
      );
    } finally {
      f.close();
      await r.close();
    }
  },
  { timeout: 60_000 },
);
