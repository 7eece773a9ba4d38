/**
 * Retention: published and dead rows are deleted after their time, in bounded batches, so
 * the table does not grow without bound.
 */

import assert from "node:assert/strict";
import { createOutbox, memoryPublisher, type OutboxStorage, PublishError } from "../../../mod.ts";
import { Clock, recorder, type StorageSuite } from "./harness.ts";

/** Registers the retention tests of the storage conformance suite. */
export function retentionTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("published rows are deleted at once by default", async (h) => {
    const clock = new Clock();
    const outbox = make(h, clock, memoryPublisher());
    await h.commit((tx) => outbox.enqueue(tx, [{ topic: "t", payload: 1 }, { topic: "t", payload: 2 }]));
    await outbox.tick();
    assert.deepEqual(await outbox.inspect(), []);
  });

  it("retention keeps published and dead rows for their time, then deletes them in bounded batches", async (h) => {
    const clock = new Clock();
    const pub = recorder((m) => m.topic === "bad" ? new PublishError("rejected", { permanent: true }) : undefined);
    const outbox = make(h, clock, pub, {
      retention: { publishedMs: 1_000, deadMs: 5_000, intervalMs: 0, batchSize: 3 },
    });
    await h.commit((tx) =>
      outbox.enqueue(tx, [...Array.from({ length: 5 }, (_, i) => ({ topic: "ok", payload: i })), {
        topic: "bad",
        payload: 0,
      }])
    );
    await outbox.tick();
    let stats = await outbox.stats();
    assert.deepEqual([stats.published, stats.dead, stats.pending], [5, 1, 0]);
    clock.advance(999);
    assert.equal((await outbox.tick()).cleaned, 0, "not before publishedMs");
    clock.advance(2);
    assert.equal((await outbox.tick()).cleaned, 3, "bounded by retention.batchSize");
    assert.equal((await outbox.tick()).cleaned, 2);
    stats = await outbox.stats();
    assert.deepEqual([stats.published, stats.dead], [0, 1]);
    clock.advance(5_000);
    assert.equal((await outbox.tick()).cleaned, 1);
    assert.deepEqual(await outbox.inspect(), []);
  });

  it("retention cleanup keeps going tick after tick while it is behind, then waits for its interval", async (h) => {
    const clock = new Clock();
    let cleanups = 0;
    const storage: OutboxStorage<Tx, unknown> = { ...h.storage, cleanup: (r) => (cleanups++, h.storage.cleanup(r)) };
    const outbox = createOutbox<Tx, unknown>({
      storage,
      publisher: () => {},
      now: clock.now,
      retention: { publishedMs: 1_000, intervalMs: 60_000, batchSize: 2 },
    });
    await h.commit((tx) => outbox.enqueue(tx, Array.from({ length: 5 }, (_, i) => ({ topic: "t", payload: i }))));
    assert.equal((await outbox.tick()).published, 5); // this first tick's cleanup found nothing
    assert.equal(cleanups, 1);
    clock.advance(60_000);
    const cleaned = [];
    for (let i = 0; i < 3; i++) cleaned.push((await outbox.tick()).cleaned);
    assert.deepEqual(cleaned, [2, 2, 1], "a full batch keeps cleanup due on the next tick");
    assert.equal((await outbox.stats()).published, 0);
    await outbox.tick();
    assert.equal(cleanups, 4, "caught up: no cleanup query until the interval has passed again");
  });
}
