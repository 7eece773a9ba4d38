/**
 * Per-key order: messages of one key go out in enqueue order across failures, pipelined
 * runs, dead messages and deliverAt; unkeyed messages and other keys are not held back.
 */

import assert from "node:assert/strict";
import { memoryPublisher, type OutboxRecord, PublishError } from "../../../mod.ts";
import { Clock, ids, recorder, type StorageSuite } from "./harness.ts";

/** Registers the per-key order tests of the storage conformance suite. */
export function keyOrderTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("messages of one key are published in enqueue order across transient failures", async (h) => {
    const clock = new Clock();
    // Every third publish fails transiently: failures land on every key at some point.
    const pub = recorder((_m, call) => call % 3 === 1 ? new Error("transient") : undefined);
    const outbox = make(h, clock, pub, {
      batchSize: 7,
      retry: { maxAttempts: 100, baseDelayMs: 10, maxDelayMs: 10, jitter: 0 },
    });
    const expected = new Map<string, string[]>();
    for (let t = 0; t < 6; t++) {
      await h.commit(async (tx) => {
        const batch = [];
        for (let i = 0; i < 12; i++) {
          const key = i % 4 === 3 ? null : `k${(t + i) % 3}`;
          const id = `m-${t}-${i}`;
          batch.push({ id, topic: "t", key, payload: { t, i } });
          if (key) expected.set(key, [...(expected.get(key) ?? []), id]);
        }
        await outbox.enqueue(tx, batch);
      });
    }
    for (let round = 0; round < 500 && (await outbox.stats()).pending > 0; round++) {
      await outbox.tick({ maxBatches: 1 });
      clock.advance(10);
    }
    assert.equal(pub.log.length, 72, "every message published");
    assert.equal(new Set(ids(pub.log)).size, 72, "no message published twice");
    for (const [key, order] of expected) {
      assert.deepEqual(ids(pub.log.filter((m) => m.key === key)), order, `order of ${key}`);
    }
  });

  it("a pipelined publisher gets each key's run in order, and the unkeyed messages with every key's lone message as one run", async (h) => {
    const clock = new Clock();
    const runs: string[][] = [];
    const outbox = make(h, clock, {
      publish: () => Promise.reject(new Error("publish() must not be used when publishRun() exists")),
      publishRun: (messages) => {
        runs.push(messages.map((m) => m.id));
        return Promise.resolve(messages.map(() => ({ ok: true as const })));
      },
    });
    await h.commit((tx) =>
      outbox.enqueue(tx, [
        { id: "a1", topic: "t", key: "A", payload: 1 },
        { id: "u1", topic: "t", payload: 1 },
        { id: "b1", topic: "t", key: "B", payload: 1 },
        { id: "a2", topic: "t", key: "A", payload: 2 },
        { id: "u2", topic: "t", payload: 2 },
        { id: "a3", topic: "t", key: "A", payload: 3 },
      ])
    );
    const report = await outbox.tick();
    assert.equal(report.published, 6);
    assert.deepEqual(runs.map((r) => r.join(",")).sort(), ["a1,a2,a3", "u1,b1,u2"]);
  });

  it("a pipelined run that fails mid-key keeps what the broker took, retries the failure and holds back the rest", async (h) => {
    const clock = new Clock();
    const outbox = make(h, clock, {
      publish: () => Promise.reject(new Error("unused")),
      // a2 fails; a3 was accepted anyway (already in the broker); a4 failed too.
      publishRun: (messages) =>
        Promise.resolve(
          messages.map((m) =>
            m.id === "a2" || m.id === "a4"
              ? { ok: false as const, error: new Error(`lost ${m.id}`) }
              : { ok: true as const }
          ),
        ),
    });
    await h.commit((tx) =>
      outbox.enqueue(tx, ["a1", "a2", "a3", "a4"].map((id, i) => ({ id, topic: "t", key: "A", payload: i })))
    );
    const report = await outbox.tick();
    assert.deepEqual([report.published, report.retried, report.released], [2, 1, 1]);
    const rows = await outbox.inspect();
    assert.deepEqual(rows.map((r) => [r.id, r.status, r.attempts]), [["a2", "pending", 1], ["a4", "pending", 0]]);
    assert.equal(rows[0]!.lastError, "lost a2");
  });

  it("with a pipelined publisher, key order survives transient failures too", async (h) => {
    const clock = new Clock();
    const log: OutboxRecord[] = [];
    let calls = 0;
    const outbox = make(h, clock, {
      publish: () => Promise.reject(new Error("unused")),
      publishRun: (messages) => {
        let failedKey = false;
        return Promise.resolve(messages.map((m) => {
          // Fail some messages; once a run fails, the rest of it fails as a broker would.
          if (failedKey || calls++ % 4 === 1) {
            failedKey = m.key !== null;
            return { ok: false as const, error: new Error("timeout") };
          }
          log.push(m);
          return { ok: true as const };
        }));
      },
    }, { batchSize: 9, retry: { maxAttempts: 100, baseDelayMs: 10, maxDelayMs: 10, jitter: 0 } });
    const expected = new Map<string, string[]>();
    await h.commit((tx) =>
      outbox.enqueue(
        tx,
        Array.from({ length: 60 }, (_, i) => {
          const key = i % 5 === 0 ? null : `k${i % 4}`;
          if (key) expected.set(key, [...(expected.get(key) ?? []), `p${i}`]);
          return { id: `p${i}`, topic: "t", key, payload: i };
        }),
      )
    );
    for (let round = 0; round < 300 && (await outbox.stats()).pending > 0; round++) {
      await outbox.tick({ maxBatches: 1 });
      clock.advance(10);
    }
    assert.equal(new Set(ids(log)).size, 60);
    for (const [key, order] of expected) {
      assert.deepEqual(ids(log.filter((m) => m.key === key)), order, `order of ${key}`);
    }
  });

  it("a failed message holds back later messages of its key until it is published; other keys flow", async (h) => {
    const clock = new Clock();
    let failA1 = true;
    const pub = recorder((m) => {
      if (m.id === "a1" && failA1) {
        failA1 = false;
        return new Error("broker hiccup");
      }
    });
    const outbox = make(h, clock, pub);
    await h.commit((tx) =>
      outbox.enqueue(tx, [
        { id: "a1", topic: "t", key: "A", payload: 1 },
        { id: "b1", topic: "t", key: "B", payload: 1 },
        { id: "a2", topic: "t", key: "A", payload: 2 },
        { id: "u1", topic: "t", payload: 1 },
        { id: "a3", topic: "t", key: "A", payload: 3 },
      ])
    );
    const first = await outbox.tick();
    assert.equal(first.retried, 1);
    assert.equal(first.released, 2);
    assert.deepEqual(ids(pub.log).sort(), ["b1", "u1"]);
    const held = await outbox.inspect();
    assert.deepEqual(held.map((r) => [r.id, r.status, r.attempts]), [["a1", "pending", 1], ["a2", "pending", 0], [
      "a3",
      "pending",
      0,
    ]]);
    assert.equal(held[0]!.lastError, "broker hiccup");
    assert.equal((await outbox.tick()).claimed, 0, "a2 and a3 wait behind a1's back-off");
    clock.advance(1_000);
    const second = await outbox.tick();
    assert.equal(second.published, 3);
    assert.deepEqual(ids(pub.log).sort(), ["a1", "a2", "a3", "b1", "u1"]);
    assert.deepEqual(ids(pub.log.filter((m) => m.key === "A")), ["a1", "a2", "a3"]);
  });

  it("a message that goes dead releases its key: later messages follow in the same tick", async (h) => {
    const clock = new Clock();
    const pub = recorder((m) =>
      m.id === "a1" ? new PublishError("No stream for subject t", { permanent: true }) : undefined
    );
    const outbox = make(h, clock, pub);
    await h.commit((tx) =>
      outbox.enqueue(tx, [
        { id: "a1", topic: "t", key: "A", payload: 1 },
        { id: "a2", topic: "t", key: "A", payload: 2 },
        { id: "a3", topic: "t", key: "A", payload: 3 },
      ])
    );
    const report = await outbox.tick();
    assert.equal(report.dead, 1);
    assert.equal(report.published, 2);
    assert.deepEqual(ids(pub.log), ["a2", "a3"]);
    const [row] = await outbox.inspect();
    assert.equal(row!.status, "dead");
    assert.match(row!.lastError!, /No stream for subject t/);
  });

  it("a batch carries many messages of one hot key", async (h) => {
    const clock = new Clock();
    const pub = memoryPublisher();
    const outbox = make(h, clock, pub, { batchSize: 100 });
    await h.commit((tx) =>
      outbox.enqueue(tx, Array.from({ length: 60 }, (_, i) => ({ id: `h${i}`, topic: "t", key: "hot", payload: i })))
    );
    const report = await outbox.tick({ maxBatches: 1 });
    assert.equal(report.batches, 1);
    assert.equal(report.published, 60);
    assert.deepEqual(pub.messages.map((m) => m.payload), Array.from({ length: 60 }, (_, i) => i));
  });

  it("a message with a future deliverAt waits, and holds back later messages of its key", async (h) => {
    const clock = new Clock();
    const pub = memoryPublisher();
    const outbox = make(h, clock, pub);
    await h.commit((tx) =>
      outbox.enqueue(tx, [
        { id: "later", topic: "t", key: "K", payload: 1, deliverAt: new Date(clock.value + 60_000) },
        { id: "behind", topic: "t", key: "K", payload: 2 },
        { id: "free", topic: "t", payload: 3, deliverAt: clock.value + 30_000 },
        { id: "now", topic: "t", payload: 4 },
      ])
    );
    await outbox.tick();
    assert.deepEqual(ids(pub.messages), ["now"]);
    clock.advance(30_000);
    await outbox.tick();
    assert.deepEqual(ids(pub.messages), ["now", "free"]);
    clock.advance(30_000);
    await outbox.tick();
    assert.deepEqual(ids(pub.messages), ["now", "free", "later", "behind"]);
  });
}
