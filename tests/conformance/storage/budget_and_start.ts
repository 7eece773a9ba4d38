/**
 * tick()'s time budget and the start() loop: what happens to work in flight when the budget
 * or the loop ends, storage errors and stalls, and the enqueue wake-up hint.
 */

import assert from "node:assert/strict";
import { createOutbox, type OutboxStorage, OutboxStorageError } from "../../../mod.ts";
import { Clock, recorder, type StorageSuite } from "./harness.ts";

/** Registers the tick() budget and start() tests of the storage conformance suite. */
export function budgetAndStartTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("tick() stops starting messages when its time budget runs out and releases the rest", async (h) => {
    const clock = new Clock();
    const pub = recorder(() => void clock.advance(1_000));
    const outbox = make(h, clock, pub, { concurrency: 1 });
    await h.commit((tx) =>
      outbox.enqueue(tx, Array.from({ length: 10 }, (_, i) => ({ id: `b${i}`, topic: "t", payload: i })))
    );
    const report = await outbox.tick({ budgetMs: 2_500 });
    assert.equal(report.published, 3);
    assert.equal(report.released, 7);
    const stats = await outbox.stats();
    assert.deepEqual([stats.pending, stats.processing], [7, 0]);
    assert.ok((await outbox.inspect()).every((r) => r.attempts === 0), "released messages keep their attempts");
  });

  it("tick() awaits a publish in flight when its time budget runs out, and counts it published", async (h) => {
    // Real time, but frozen until the first publish starts, so a slow claim on a busy
    // machine cannot use up the budget before anything is published.
    let since: number | null = null;
    const base = Date.now();
    const outbox = createOutbox<Tx, unknown>({
      storage: h.storage,
      onError: () => {},
      concurrency: 1,
      now: () => base + (since === null ? 0 : Date.now() - since),
      // Slower than the budget: the publish must not be abandoned (that would send it twice).
      publisher: () => {
        since ??= Date.now();
        return new Promise<void>((resolve) => setTimeout(resolve, 60));
      },
    });
    await h.commit((tx) =>
      outbox.enqueue(tx, [{ id: "slow-1", topic: "t", payload: 1 }, { id: "slow-2", topic: "t", payload: 2 }])
    );
    const report = await outbox.tick({ budgetMs: 10 });
    assert.deepEqual([report.published, report.retried, report.released], [1, 0, 1]);
    const rows = await outbox.inspect();
    assert.deepEqual(rows.map((r) => [r.id, r.status, r.lastError]), [["slow-2", "pending", null]]);
  });

  it("start() publishes what commits while it runs, and stop() waits for the batch in flight", async (h) => {
    const gate = Promise.withResolvers<void>();
    const entered = Promise.withResolvers<void>();
    const log: string[] = [];
    const outbox = createOutbox<Tx, unknown>({
      storage: h.storage,
      onError: () => {},
      publisher: async (m) => {
        if (m.id === "slow") {
          entered.resolve();
          await gate.promise;
        }
        log.push(m.id);
      },
    });
    const relay = outbox.start({ minIdleMs: 1, maxIdleMs: 5 });
    await h.commit((tx) =>
      outbox.enqueue(tx, [
        { id: "slow", topic: "t", key: "K", payload: 1 },
        { id: "next", topic: "t", key: "K", payload: 2 },
      ])
    );
    await entered.promise;
    let stopped = false;
    const stopping = relay.stop().then(() => (stopped = true));
    for (let i = 0; i < 20; i++) await Promise.resolve();
    assert.equal(stopped, false, "stop() waits for the publish in flight");
    assert.equal(relay.running, true);
    gate.resolve();
    await stopping;
    assert.equal(relay.running, false);
    assert.deepEqual(log, ["slow"], "nothing new starts after stop()");
    const rows = await outbox.inspect();
    assert.deepEqual(
      rows.map((r) => [r.id, r.status, r.attempts]),
      [["next", "pending", 0]],
      "the unstarted message is released",
    );
  });

  it("start() stops on an AbortSignal and keeps running through storage errors", async (h) => {
    const controller = new AbortController();
    const errors: unknown[] = [];
    let failNextClaim = true;
    const storage: OutboxStorage<Tx, unknown> = {
      ...h.storage,
      claim: (request) => {
        if (failNextClaim) {
          failNextClaim = false;
          return Promise.reject(new Error("connection reset"));
        }
        return h.storage.claim(request);
      },
    };
    const published = Promise.withResolvers<string>();
    const outbox = createOutbox<Tx, unknown>({
      storage,
      publisher: (m) => published.resolve(m.id),
      onError: (e) => errors.push(e),
    });
    await h.commit((tx) => outbox.enqueue(tx, { id: "after-error", topic: "t", payload: 1 }));
    const relay = outbox.start({ signal: controller.signal, minIdleMs: 1, maxIdleMs: 5 });
    assert.equal(await published.promise, "after-error");
    controller.abort();
    await relay.done;
    assert.equal(relay.running, false);
    assert.equal(errors.length, 1);
    assert.match(String(errors[0]), /connection reset/);
  });

  it(
    "a storage call that never returns does not stall start(): it is reported after the lease and the loop goes on",
    async (h) => {
      let hung = false;
      const storage: OutboxStorage<Tx, unknown> = {
        ...h.storage,
        claim: (request) => {
          if (!hung) {
            hung = true;
            return new Promise(() => {}); // a query lost by the driver
          }
          return h.storage.claim(request);
        },
      };
      const errors: unknown[] = [];
      const published = Promise.withResolvers<string>();
      const outbox = createOutbox<Tx, unknown>({
        storage,
        leaseMs: 200,
        publisher: (m) => published.resolve(m.id),
        onError: (e) => errors.push(e),
      });
      await h.commit((tx) => outbox.enqueue(tx, { id: "after-stall", topic: "t", payload: 1 }));
      const relay = outbox.start({ minIdleMs: 1, maxIdleMs: 5 });
      try {
        assert.equal(await published.promise, "after-stall");
        assert.ok(
          errors.some((e) => e instanceof OutboxStorageError && /took over 200 ms/.test(e.message)),
        );
      } finally {
        await relay.stop();
      }
    },
    10_000,
  );

  it("start() picks up a message enqueued in this process without waiting out its idle interval", async (h) => {
    const firstClaim = Promise.withResolvers<void>();
    const storage: OutboxStorage<Tx, unknown> = {
      ...h.storage,
      claim: async (request) => {
        const rows = await h.storage.claim(request);
        firstClaim.resolve();
        return rows;
      },
    };
    const published = Promise.withResolvers<string>();
    const outbox = createOutbox<Tx, unknown>({ storage, publisher: (m) => published.resolve(m.id), onError: () => {} });
    // Idle polling every 60 s: only the enqueue hint can make this test finish in time.
    const relay = outbox.start({ minIdleMs: 60_000, maxIdleMs: 60_000 });
    try {
      await firstClaim.promise;
      await h.commit((tx) => outbox.enqueue(tx, { id: "hinted", topic: "t", payload: 1 }));
      assert.equal(await published.promise, "hinted");
    } finally {
      await relay.stop();
    }
  }, 10_000);

  it("start() keeps polling soon after an enqueue hint whose commit its first poll did not see", async (h) => {
    const firstClaim = Promise.withResolvers<void>();
    let blind = false;
    const storage: OutboxStorage<Tx, unknown> = {
      ...h.storage,
      claim: async (request) => {
        // The poll the hint triggers runs before the commit is visible, as when the
        // caller's transaction takes longer to commit than the hint's delay.
        if (blind) {
          blind = false;
          return [];
        }
        const rows = await h.storage.claim(request);
        firstClaim.resolve();
        return rows;
      },
    };
    const published = Promise.withResolvers<string>();
    const outbox = createOutbox<Tx, unknown>({ storage, publisher: (m) => published.resolve(m.id), onError: () => {} });
    const relay = outbox.start({ minIdleMs: 60_000, maxIdleMs: 60_000 });
    try {
      await firstClaim.promise;
      blind = true;
      await h.commit((tx) => outbox.enqueue(tx, { id: "late-commit", topic: "t", payload: 1 }));
      assert.equal(await published.promise, "late-commit");
      assert.equal(blind, false, "the hinted poll ran and saw nothing");
    } finally {
      await relay.stop();
    }
  }, 10_000);
}
