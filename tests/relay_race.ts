/**
 * Many relays on one table at once, for any SQL storage: 4 relays and 4 concurrent
 * writers, rolled-back transactions and transient publish failures. Checks guarantee 1
 * (nothing lost, nothing rolled back published), 2 (order per key) and 3 (no duplicates
 * without a crash). Each database's test file gives its storages and transactions.
 */

import assert from "node:assert/strict";
import {
  createOutbox,
  type Outbox,
  type OutboxMessage,
  type OutboxRecord,
  type OutboxStorage,
  type RelayHandle,
} from "../mod.ts";

/** What a race needs of one database: storages on 8 connections, and a way to commit. */
export interface RaceDatabase<Tx> {
  /** A storage on connection `i` (0–3 relay, 4–7 write), on a set-up table. */
  storage(i: number): OutboxStorage<Tx, unknown>;
  /** Runs `fn` in a transaction on connection `i`: commits, or rolls back and rethrows. */
  commit(i: number, fn: (tx: Tx) => Promise<void>): Promise<void>;
}

/** Runs the race on `db`; throws when a guarantee does not hold. */
export async function relayRace<Tx>(db: RaceDatabase<Tx>): Promise<void> {
  const relays: RelayHandle[] = [];
  try {
    const log: OutboxRecord[] = [];
    let failures = 0;
    const allPublished = Promise.withResolvers<void>();
    const committed = new Set<string>();
    const rolledBack = new Set<string>();
    const seen = new Set<string>();
    let writersDone = false;
    const check = () => {
      if (writersDone && [...committed].every((id) => seen.has(id))) allPublished.resolve();
    };
    let seed = 42;
    const random = () => ((seed = (seed * 1_103_515_245 + 12_345) >>> 0) / 2 ** 32);
    const perRelay = [0, 0, 0, 0];
    const publisher = (m: OutboxRecord) => {
      if (random() < 0.1) {
        failures++;
        throw new Error("injected transient failure");
      }
      log.push(m);
      seen.add(m.id);
      check();
    };
    for (let r = 0; r < 4; r++) {
      const outbox = createOutbox({
        storage: db.storage(r),
        publisher: async (m: OutboxRecord) => {
          // Yield so that relays interleave between claim and settle.
          await new Promise((resolve) => setTimeout(resolve, 0));
          publisher(m);
          perRelay[r]!++;
        },
        batchSize: 20,
        relayId: `relay-${r}`,
        retry: { maxAttempts: 1_000, baseDelayMs: 2, maxDelayMs: 20, jitter: 0.5 },
        onError: (e) => console.error(e),
      });
      relays.push(outbox.start({ minIdleMs: 2, maxIdleMs: 20 }));
    }
    const keyOrder = new Map<string, string[]>();
    const writers = Array.from({ length: 4 }, async (_, w) => {
      const outbox: Outbox<Tx, unknown> = createOutbox({ storage: db.storage(4 + w), publisher: () => {} });
      for (let t = 0; t < 60; t++) {
        const rollback = random() < 0.1;
        const messages: OutboxMessage[] = Array.from({ length: 1 + Math.floor(random() * 5) }, (_, i) => ({
          id: `w${w}-t${t}-m${i}`,
          topic: "orders",
          // Keys shared across writers: concurrent transactions write the same keys.
          key: random() < 0.85 ? `k${Math.floor(random() * 24)}` : null,
          payload: { w, t, i },
        }));
        try {
          await db.commit(4 + w, async (tx) => {
            await outbox.enqueue(tx, messages);
            if (rollback) throw new Error("rollback");
          });
          // Within one writer, transactions are sequential: their order per key is defined.
          for (const m of messages) {
            committed.add(m.id!);
            if (m.key) keyOrder.set(`${w}:${m.key}`, [...(keyOrder.get(`${w}:${m.key}`) ?? []), m.id!]);
          }
        } catch (e) {
          if (!rollback) throw e;
          for (const m of messages) rolledBack.add(m.id!);
        }
      }
    });
    await Promise.all(writers);
    writersDone = true;
    check();
    await allPublished.promise;
    await Promise.all(relays.map((r) => r.stop()));

    const published = log.map((m) => m.id);
    assert.ok(committed.size > 400, `enough traffic (${committed.size} committed)`);
    assert.ok(rolledBack.size > 10, `some transactions rolled back (${rolledBack.size} messages)`);
    assert.ok(failures > 20, `publish failures were injected (${failures})`);
    assert.equal(published.filter((id) => rolledBack.has(id)).length, 0, "nothing rolled back is published");
    assert.equal(new Set(published).size, published.length, "no duplicates");
    assert.equal(published.length, committed.size, "every committed message is published");
    // Per key, across all relays: messages of one writer appear in that writer's order.
    for (const [wk, order] of keyOrder) {
      const [w, key] = wk.split(":");
      const got = log.filter((m) => m.key === key && m.id.startsWith(`w${w}-`)).map((m) => m.id);
      assert.deepEqual(got, order, `order of ${key} from writer ${w}`);
    }
    assert.ok(perRelay.filter((n) => n > 0).length >= 3, `the relays shared the work (${perRelay.join(", ")})`);
  } finally {
    await Promise.all(relays.map((r) => r.stop()));
  }
}
