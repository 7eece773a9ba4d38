/**
 * The publisher conformance suite: what every publisher must do, checked against the
 * real broker by reading back what it stored. A publisher's test file provides a
 * harness and calls `publisherConformance(name, factory)`.
 */

import assert from "node:assert/strict";
import { isPermanentError, type OutboxRecord, type PublishContext, type Publisher } from "../../mod.ts";
import { test } from "../harness.ts";

/** A message as the broker stored it. */
export interface StoredMessage {
  readonly id: string | null;
  readonly subject: string;
  readonly headers: Record<string, string>;
  readonly data: Uint8Array;
}

/** What a publisher's test file provides. */
export interface PublisherHarness {
  /** A publisher whose messages for topic `t` land where `read()` finds them. */
  readonly publisher: Publisher;
  /** A topic that is routed (stored). */
  readonly topic: string;
  /** A topic that nothing accepts: publishing to it must fail (see `unroutable`). */
  readonly unroutableTopic: string;
  /**
   * How a publish to `unroutableTopic` fails: `"permanent"` (the default) when the
   * broker can say for certain that nothing accepts it; `"transient"` when that looks
   * the same as a passing outage (JetStream: "no responders" is also the answer during
   * a stream-leader election), so the message is retried rather than dead-lettered.
   */
  readonly unroutable?: "permanent" | "transient";
  /** Everything stored so far, in store order. */
  read(): Promise<StoredMessage[]>;
  /** Whether the broker drops a repeated id (then a re-publish stores nothing new). */
  readonly dedup: boolean;
  /** A publisher on the same broker whose acks cannot arrive in time (a transient failure). */
  timingOut?(): Promise<Publisher>;
  close(): Promise<void>;
}

const context: PublishContext = { signal: new AbortController().signal };
const decoder = new TextDecoder();

let counter = 0;
function record(topic: string, fields: Partial<OutboxRecord> = {}): OutboxRecord {
  const id = fields.id ?? `pc-${Date.now().toString(36)}-${counter++}`;
  const payload = fields.payload ?? { n: counter };
  return {
    id,
    seq: counter,
    topic,
    key: null,
    payload,
    body: fields.body ?? JSON.stringify(payload),
    headers: {},
    attempts: 1,
    createdAt: new Date(),
    ...fields,
  };
}

/**
 * Registers the publisher conformance tests.
 *
 * @param name Publisher name used as the test-name prefix.
 * @param factory Makes a fresh harness per test.
 */
export function publisherConformance(name: string, factory: () => Promise<PublisherHarness>): void {
  const it = (title: string, body: (h: PublisherHarness) => Promise<void>) =>
    test(`${name} publisher: ${title}`, async () => {
      const h = await factory();
      try {
        await body(h);
      } finally {
        await h.close();
      }
    });

  it("publish() stores the payload, the headers and the message id as the dedup id", async (h) => {
    const json = record(h.topic, {
      id: "json-1",
      payload: { order: "o-1", total: 12.5 },
      headers: { "x-trace-id": "t-1", "content-type": "application/json" },
    });
    const bytes = record(h.topic, {
      id: "bytes-1",
      payload: new Uint8Array([0, 1, 255]),
      body: new Uint8Array([0, 1, 255]),
    });
    await h.publisher.publish(json, context);
    await h.publisher.publish(bytes, context);
    const stored = await h.read();
    assert.deepEqual(stored.map((m) => m.id), ["json-1", "bytes-1"]);
    assert.deepEqual(JSON.parse(decoder.decode(stored[0]!.data)), { order: "o-1", total: 12.5 });
    assert.equal(stored[0]!.headers["x-trace-id"], "t-1");
    assert.deepEqual([...stored[1]!.data], [0, 1, 255]);
  });

  it("publishRun() stores a key's run in order, with every outcome reported", async (h) => {
    if (!h.publisher.publishRun) return;
    const run = Array.from({ length: 300 }, (_, i) => record(h.topic, { id: `run-${i}`, key: "K", payload: { i } }));
    const outcomes = await h.publisher.publishRun(run, context);
    assert.equal(outcomes.length, 300);
    assert.ok(outcomes.every((o) => o.ok));
    const stored = await h.read();
    assert.deepEqual(stored.map((m) => m.id), run.map((m) => m.id));
  });

  it("publishing an id again stores nothing new when the broker deduplicates", async (h) => {
    if (!h.dedup) return;
    const m = record(h.topic, { id: "again" });
    await h.publisher.publish(m, context);
    await h.publisher.publish({ ...m, attempts: 2 }, context);
    if (h.publisher.publishRun) await h.publisher.publishRun([m, m], context);
    assert.deepEqual((await h.read()).map((s) => s.id), ["again"]);
  });

  it("a message nothing accepts fails (permanently unless the broker cannot tell it from an outage), with a reason in plain words", async (h) => {
    const m = record(h.unroutableTopic, { id: "nowhere" });
    const permanent = (h.unroutable ?? "permanent") === "permanent";
    await assert.rejects(
      () => h.publisher.publish(m, context),
      (e: unknown) => isPermanentError(e) === permanent && /stream|route|subject/i.test(String(e)),
    );
    if (h.publisher.publishRun) {
      const [outcome] = await h.publisher.publishRun([m], context);
      assert.equal(outcome!.ok, false);
      assert.ok(!outcome!.ok && isPermanentError(outcome!.error) === permanent);
    }
  });

  it("a publish whose ack does not arrive in time fails transiently (it will be retried)", async (h) => {
    if (!h.timingOut) return;
    const slow = await h.timingOut();
    await assert.rejects(
      () => slow.publish(record(h.topic, { id: "slow" }), context),
      (e: unknown) => !isPermanentError(e) && /time/i.test(String(e)),
    );
  });
}
