/**
 * stats() and requeue(): counts by status, the age of the oldest waiting message, and
 * dead messages given another life.
 */

import assert from "node:assert/strict";
import { memoryPublisher, PublishError } from "../../../mod.ts";
import { Clock, ids, recorder, type StorageSuite } from "./harness.ts";

/** Registers the stats() and requeue() tests of the storage conformance suite. */
export function statsRequeueTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("stats() counts messages by status and reports the age of the oldest unpublished one", async (h) => {
    const clock = new Clock();
    const pub = recorder((m) => m.topic === "bad" ? new PublishError("no", { permanent: true }) : undefined);
    const outbox = make(h, clock, pub, { retention: { publishedMs: 60_000 } });
    let stats = await outbox.stats();
    assert.deepEqual(stats, {
      pending: 0,
      processing: 0,
      published: 0,
      dead: 0,
      oldestPendingAt: null,
      oldestPendingAgeMs: 0,
      blockedKeys: 0,
      topics: {},
      destinations: {},
    });
    const t0 = clock.value;
    await h.commit((tx) => outbox.enqueue(tx, [{ topic: "ok", payload: 1 }, { topic: "bad", payload: 1 }]));
    clock.advance(1_000);
    await h.commit((tx) => outbox.enqueue(tx, { topic: "later", payload: 1, deliverAt: clock.value + 10_000 }));
    clock.advance(4_000);
    stats = await outbox.stats();
    assert.equal(stats.pending, 3);
    assert.equal(stats.oldestPendingAgeMs, 5_000);
    assert.equal(stats.oldestPendingAt?.getTime(), t0);
    await outbox.tick();
    stats = await outbox.stats();
    assert.deepEqual([stats.pending, stats.processing, stats.published, stats.dead], [1, 0, 1, 1]);
    assert.deepEqual(stats.topics, {
      ok: { pending: 0, processing: 0, published: 1, dead: 0 },
      bad: { pending: 0, processing: 0, published: 0, dead: 1 },
      later: { pending: 1, processing: 0, published: 0, dead: 0 },
    });
    assert.equal(stats.oldestPendingAgeMs, 0, "the one left is scheduled for later");
    await h.storage.claim({
      token: "z:1",
      now: clock.value + 20_000,
      lockedUntil: clock.value + 50_000,
      limit: 10,
      clock: "relay",
    });
    stats = await outbox.stats();
    assert.deepEqual([stats.pending, stats.processing], [0, 1]);
  });

  it("stats() does not count a message scheduled for later as waiting until it is due", async (h) => {
    const clock = new Clock();
    const outbox = make(h, clock, memoryPublisher());
    const t0 = clock.value;
    await h.commit((tx) => outbox.enqueue(tx, { topic: "reminder", payload: 1, deliverAt: t0 + 86_400_000 }));
    clock.advance(3_600_000);
    let stats = await outbox.stats();
    assert.equal(stats.pending, 1);
    assert.equal(stats.oldestPendingAt, null, "a message due tomorrow is not a stall");
    assert.equal(stats.oldestPendingAgeMs, 0);
    await h.commit((tx) => outbox.enqueue(tx, { topic: "now", payload: 1 }));
    clock.advance(1_000);
    stats = await outbox.stats();
    assert.equal(stats.oldestPendingAgeMs, 1_000);
    clock.value = t0 + 86_400_000 + 5_000;
    stats = await outbox.stats();
    assert.equal(stats.oldestPendingAt?.getTime(), t0 + 3_600_000, "the unscheduled message has waited longest");
    assert.equal(stats.oldestPendingAgeMs, 86_400_000 - 3_600_000 + 5_000);
    await outbox.tick();
    await h.commit((tx) => outbox.enqueue(tx, { topic: "later", payload: 1, deliverAt: clock.value - 1 }));
    const due = await h.commit((tx) =>
      outbox.enqueue(tx, { topic: "soon", payload: 1, deliverAt: clock.value + 10_000 })
    );
    clock.advance(12_000);
    stats = await outbox.stats();
    assert.equal(stats.pending, 2);
    assert.equal(stats.oldestPendingAgeMs, 12_000, "a past deliverAt counts from enqueue time");
    assert.ok(due.length === 1);
  });

  it("requeue() gives dead messages another life, by topic, by id or all", async (h) => {
    const clock = new Clock();
    let broken = true;
    const pub = recorder(() => broken ? new PublishError("stream missing", { permanent: true }) : undefined);
    const outbox = make(h, clock, pub);
    await h.commit((tx) =>
      outbox.enqueue(tx, [
        { id: "a", topic: "ta", payload: 1 },
        { id: "b", topic: "tb", payload: 1 },
        { id: "c", topic: "tc", payload: 1 },
      ])
    );
    await outbox.tick();
    assert.equal((await outbox.stats()).dead, 3);
    broken = false;
    assert.equal(await outbox.requeue({ topic: "ta" }), 1);
    assert.equal(await outbox.requeue({ ids: ["b", "missing"] }), 1);
    assert.equal(await outbox.requeue({ ids: [] }), 0);
    await outbox.tick();
    assert.deepEqual(ids(pub.log).sort(), ["a", "b"]);
    assert.equal(await outbox.requeue(), 1);
    await outbox.tick();
    assert.deepEqual(ids(pub.log).sort(), ["a", "b", "c"]);
    assert.equal(pub.log.find((m) => m.id === "c")!.attempts, 1, "attempts start over");
    assert.equal(await outbox.requeue(), 0);
  });
}
