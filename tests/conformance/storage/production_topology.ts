/**
 * Production topology: replicas sharing a relayId, retry.onDead "block", callbacks that
 * throw, a filter slower than the lease, and relay clocks skewed against the storage's.
 */

import assert from "node:assert/strict";
import { createOutbox, memoryPublisher, type OutboxStorage, PublishError } from "../../../mod.ts";
import { Clock, ids, recorder, type StorageSuite } from "./harness.ts";

/** Registers the production topology tests of the storage conformance suite. */
export function productionTopologyTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("two outboxes sharing a relayId never settle each other's claims", async (h) => {
    const clock = new Clock();
    const gate = (started: PromiseWithResolvers<void>, open: Promise<void>) => async () => {
      started.resolve();
      await open;
    };
    const [aStarted, aOpen, bStarted, bOpen] = [0, 0, 0, 0].map(() => Promise.withResolvers<void>());
    const common = { relayId: "replica", leaseMs: 60_000 };
    const a = make(h, clock, gate(aStarted!, aOpen!.promise), common);
    const b = make(h, clock, gate(bStarted!, bOpen!.promise), { ...common, storage: await h.connect() });
    await h.commit((tx) => a.enqueue(tx, { id: "m", topic: "t", payload: 1 }));
    const aTick = a.tick();
    await aStarted!.promise;
    clock.advance(60_001); // a's lease ends while it publishes (a paused relay)
    const bTick = b.tick();
    await bStarted!.promise; // b has taken the row over
    aOpen!.resolve();
    const aReport = await aTick;
    assert.equal(aReport.lost, 1, "a's late settle must not match b's claim");
    assert.deepEqual(
      (await a.inspect()).map((r) => [r.id, r.status]),
      [["m", "processing"]],
      "b still holds the lease",
    );
    bOpen!.resolve();
    const bReport = await bTick;
    assert.equal(bReport.lost, 0);
    assert.equal(bReport.published, 1);
    assert.equal((await a.stats()).pending + (await a.stats()).processing, 0);
  });

  it('retry.onDead "block": a dead message holds back its key until it is requeued; other keys flow', async (h) => {
    const clock = new Clock();
    let broken = true;
    const pub = recorder((m) =>
      broken && m.id === "a1" ? new PublishError("Rejected by the broker", { permanent: true }) : undefined
    );
    const outbox = make(h, clock, pub, {
      retry: { maxAttempts: 5, baseDelayMs: 1_000, maxDelayMs: 8_000, jitter: 0, onDead: "block" },
      retention: { deadMs: 0 },
    });
    await h.commit((tx) =>
      outbox.enqueue(tx, [
        { id: "a1", topic: "t", key: "A", payload: 1 },
        { id: "a2", topic: "t", key: "A", payload: 2 },
        { id: "b1", topic: "t", key: "B", payload: 1 },
        { id: "u1", topic: "t", payload: 1 },
        { id: "a3", topic: "t", key: "A", payload: 3 },
      ])
    );
    let report = await outbox.tick();
    assert.equal(report.dead, 1);
    assert.deepEqual(ids(pub.log).sort(), ["b1", "u1"]);
    clock.advance(3_600_000);
    report = await outbox.tick(); // retention (deadMs: 0) runs, and key A stays blocked
    assert.deepEqual(ids(pub.log).sort(), ["b1", "u1"], "nothing of key A goes out after its dead message");
    let stats = await outbox.stats();
    assert.equal(stats.dead, 1);
    assert.equal(stats.blockedKeys, 1);
    assert.equal(stats.pending, 2);
    assert.deepEqual((await outbox.inspect()).map((r) => [r.id, r.status]), [["a1", "dead"], ["a2", "pending"], [
      "a3",
      "pending",
    ]]);
    broken = false;
    assert.equal(await outbox.requeue({ status: "dead" }), 1);
    await outbox.tick();
    assert.deepEqual(ids(pub.log.filter((m) => m.key === "A")), ["a1", "a2", "a3"]);
    stats = await outbox.stats();
    assert.equal(stats.blockedKeys, 0);
    assert.equal(stats.pending + stats.dead, 0);
  });

  it('retry.onDead "block" blocks nothing for an unkeyed dead message', async (h) => {
    const clock = new Clock();
    const pub = recorder((m) => m.id === "u1" ? new PublishError("Rejected", { permanent: true }) : undefined);
    const outbox = make(h, clock, pub, { retry: { onDead: "block" } });
    await h.commit((tx) =>
      outbox.enqueue(tx, [{ id: "u1", topic: "t", payload: 1 }, { id: "u2", topic: "t", payload: 2 }, {
        id: "k1",
        topic: "t",
        key: "K",
        payload: 3,
      }])
    );
    await outbox.tick();
    assert.deepEqual(ids(pub.log).sort(), ["k1", "u2"]);
    const stats = await outbox.stats();
    assert.equal(stats.blockedKeys, 0);
    assert.equal(stats.dead, 1);
  });

  it("a throwing or rejecting onTick or onError never stops start(), and done never rejects", async (h) => {
    const errors: unknown[] = [];
    let published = 0;
    const first = Promise.withResolvers<void>();
    const second = Promise.withResolvers<void>();
    let failClaim = true;
    const storage: OutboxStorage<Tx, unknown> = {
      ...h.storage,
      claim: (request) => {
        if (failClaim) {
          failClaim = false;
          return Promise.reject(new Error("claim failed once"));
        }
        return h.storage.claim(request);
      },
    };
    const original = console.error;
    const printed: unknown[][] = [];
    console.error = (...args: unknown[]) => void printed.push(args);
    try {
      const outbox = createOutbox<Tx, unknown>({
        storage,
        publisher: () => {
          if (++published === 1) first.resolve();
          if (published === 2) second.resolve();
        },
        onError: (error) => {
          errors.push(error);
          throw new Error("onError itself throws");
        },
      });
      await h.commit((tx) => outbox.enqueue(tx, { id: "one", topic: "t", payload: 1 }));
      let ticks = 0;
      const relay = outbox.start({
        minIdleMs: 1,
        maxIdleMs: 5,
        onTick: () => {
          ticks++;
          if (ticks === 1) throw new Error("onTick throws");
          return Promise.reject(new Error("onTick rejects")) as unknown as void;
        },
      });
      // The first claim fails (onError throws), the first tick's onTick throws: the loop
      // must still publish a message enqueued afterwards.
      await first.promise;
      await h.commit((tx) => outbox.enqueue(tx, { id: "two", topic: "t", payload: 2 }));
      await second.promise;
      assert.equal(relay.running, true);
      await relay.stop();
      await relay.done;
      assert.equal(relay.running, false);
      assert.ok(errors.some((e) => /claim failed once/.test(String(e))));
      assert.ok(errors.some((e) => /onTick throws/.test(String(e))), "a throwing onTick goes to onError");
      assert.ok(
        printed.some((args) => args.some((a) => /onError itself throws/.test(String(a)))),
        "a throwing onError is printed",
      );
    } finally {
      console.error = original;
    }
  }, 10_000);

  it("a filter slower than the lease is abandoned at the lease's end, and the message retried", async (h) => {
    let first = true;
    const pub = memoryPublisher();
    const outbox = createOutbox<Tx, unknown>({
      storage: h.storage,
      leaseMs: 200,
      onError: () => {},
      publisher: pub,
      filter: () => {
        if (!first) return true;
        first = false;
        return new Promise<boolean>(() => {}); // never answers
      },
    });
    await h.commit((tx) => outbox.enqueue(tx, [{ id: "slow", topic: "t", payload: 1 }]));
    const report = await outbox.tick();
    assert.equal(report.retried, 1);
    const [row] = await outbox.inspect();
    assert.equal(row!.status, "pending");
    assert.match(row!.lastError!, /lease ended/);
    assert.deepEqual(pub.messages, []);
  });

  it("on the storage's clock, a relay clock an hour off neither claims early nor steals a live lease", async (h) => {
    const hour = 3_600_000;
    const pub = memoryPublisher();
    const ahead = createOutbox<Tx, unknown>({
      storage: h.storage,
      publisher: pub,
      now: () => Date.now() + hour,
      clock: "storage",
      leaseMs: 60_000,
      onError: () => {},
    });
    const behind = createOutbox<Tx, unknown>({
      storage: await h.connect(),
      publisher: pub,
      now: () => Date.now() - hour,
      clock: "storage",
      leaseMs: 60_000,
      onError: () => {},
    });
    // Written by the clock that runs ahead: due at once all the same. Scheduled in ten
    // minutes by the one behind: due in ten minutes on the database's clock.
    await h.commit((tx) => ahead.enqueue(tx, { id: "now", topic: "t", key: "K", payload: 1 }));
    await h.commit((tx) =>
      behind.enqueue(tx, { id: "later", topic: "t", key: "L", payload: 2, deliverAt: Date.now() + 600_000 })
    );
    // A claim by the relay an hour ahead, as a paused relay would hold it.
    const leased = await h.storage.claim({
      token: "paused",
      now: Date.now() + hour,
      lockedUntil: Date.now() + hour + 60_000,
      limit: 10,
      clock: "storage",
    });
    assert.deepEqual(leased.map((r) => r.id), ["now"], "due on the database's clock; the scheduled one is not");
    const [row] = await ahead.inspect();
    const leaseEnd = row!.availableAt!;
    assert.ok(
      Math.abs(leaseEnd - (Date.now() + 60_000)) < 30_000,
      `the lease ends leaseMs from the database's now, not the relay's (${leaseEnd - Date.now()} ms)`,
    );
    // The relay an hour ahead would see that lease as long expired, and the scheduled
    // message as due, on its own clock.
    assert.equal((await ahead.tick()).claimed, 0);
    assert.equal((await behind.tick()).claimed, 0);
    assert.equal(pub.messages.length, 0);
    // One relay "now" for both: two Date.now() calls can differ by a millisecond, and a
    // retry due 1 ms later was not yet due to a tick in the same millisecond.
    const pausedNow = Date.now() + hour;
    const settled = await h.storage.settle({
      token: "paused",
      now: pausedNow,
      deletePublished: true,
      settlements: [{ seq: leased[0]!.seq, outcome: "retry", availableAt: pausedNow, error: "x" }],
      clock: "storage",
    });
    assert.equal(settled, 1);
    assert.equal(
      (await behind.tick()).published,
      1,
      "a retry due at once on the relay's terms is due at once on the database's",
    );
    assert.deepEqual(pub.messages.map((m) => m.id), ["now"]);
  });
}
