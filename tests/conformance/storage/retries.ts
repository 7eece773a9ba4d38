/**
 * Retries: exponential back-off, then dead with lastError; permanent errors go dead at
 * once; filter() settles without publishing; a publish that outlives its lease is abandoned.
 */

import assert from "node:assert/strict";
import { createOutbox, memoryPublisher, PublishError } from "../../../mod.ts";
import { Clock, ids, recorder, type StorageSuite } from "./harness.ts";

/** Registers the retry tests of the storage conformance suite. */
export function retryTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("a failing message is retried with exponential back-off, then goes dead with lastError", async (h) => {
    const clock = new Clock();
    const pub = recorder(() => new Error("connection refused"));
    const outbox = make(h, clock, pub, {
      retry: { maxAttempts: 3, baseDelayMs: 1_000, maxDelayMs: 60_000, jitter: 0 },
    });
    await h.commit((tx) => outbox.enqueue(tx, { id: "r", topic: "t", payload: 1 }));
    assert.equal((await outbox.tick()).retried, 1);
    let [row] = await outbox.inspect();
    assert.equal(row!.availableAt, clock.value + 1_000);
    assert.equal(row!.lastError, "connection refused");
    clock.advance(999);
    assert.equal((await outbox.tick()).claimed, 0, "not before the back-off");
    clock.advance(1);
    assert.equal((await outbox.tick()).retried, 1);
    [row] = await outbox.inspect();
    assert.equal(row!.availableAt, clock.value + 2_000, "the delay doubles");
    clock.advance(2_000);
    const last = await outbox.tick();
    assert.equal(last.dead, 1);
    [row] = await outbox.inspect();
    assert.equal(row!.status, "dead");
    assert.equal(row!.attempts, 3);
    assert.match(row!.lastError!, /Gave up after 3 attempts; the last failed with: .*connection refused/);
    assert.equal((await outbox.stats()).dead, 1);
  });

  it("a permanent error sends a message straight to dead", async (h) => {
    const clock = new Clock();
    const pub = recorder((m) =>
      m.id === "p1"
        ? new PublishError("Message over max_payload", { permanent: true })
        : Object.assign(new Error("not authorized"), { permanent: true })
    );
    const outbox = make(h, clock, pub);
    await h.commit((tx) =>
      outbox.enqueue(tx, [{ id: "p1", topic: "t", payload: 1 }, { id: "p2", topic: "t", payload: 1 }])
    );
    const report = await outbox.tick();
    assert.equal(report.dead, 2);
    const rows = await outbox.inspect();
    assert.deepEqual(rows.map((r) => [r.id, r.status, r.attempts]), [["p1", "dead", 1], ["p2", "dead", 1]]);
    assert.match(rows[0]!.lastError!, /max_payload/);
  });

  it("filter() settles a message without publishing it", async (h) => {
    const clock = new Clock();
    const pub = memoryPublisher();
    const outbox = make(h, clock, pub, { filter: (m) => m.topic !== "internal" });
    await h.commit((tx) =>
      outbox.enqueue(tx, [{ id: "i", topic: "internal", payload: 1 }, { id: "e", topic: "external", payload: 1 }])
    );
    const report = await outbox.tick();
    assert.equal(report.filtered, 1);
    assert.equal(report.published, 1);
    assert.deepEqual(ids(pub.messages), ["e"]);
    assert.equal((await outbox.stats()).pending, 0);
  });

  it("a publish that outlives its lease is abandoned as a failed attempt, and the tick moves on", async (h) => {
    const outbox = createOutbox<Tx, unknown>({
      storage: h.storage,
      leaseMs: 200,
      onError: () => {},
      publisher: (m, { signal }) => {
        assert.equal(signal.aborted, false);
        // Ignores its signal and never settles: a hung broker connection.
        return m.id === "hangs" ? new Promise<void>(() => {}) : Promise.resolve();
      },
    });
    await h.commit((tx) =>
      outbox.enqueue(tx, [{ id: "hangs", topic: "t", payload: 1 }, { id: "fine", topic: "t", payload: 2 }])
    );
    const report = await outbox.tick();
    assert.equal(report.published, 1);
    assert.equal(report.retried, 1);
    const [row] = await outbox.inspect();
    assert.equal(row!.id, "hangs");
    assert.equal(row!.status, "pending");
    assert.match(row!.lastError!, /lease ended/);
  });
}
