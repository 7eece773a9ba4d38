/**
 * memoryStorage(): the storage conformance suite, unchanged, on the in-process storage,
 * plus what is its own: explicit transactions, and the unit test the README shows.
 */

import assert from "node:assert/strict";
import {
  createOutbox,
  memoryPublisher,
  memoryStorage,
  type MemoryTransaction,
  type Outbox,
  OutboxConfigError,
  OutboxMessageError,
  OutboxStorageError,
} from "../mod.ts";
import { storageConformance, type StorageHarness } from "./conformance/storage.ts";
import { test } from "./harness.ts";

/**
 * The harness: one storage (another "relay process" shares it, as processes share a
 * database), and business rows (orders) that commit with the storage's transaction.
 */
function memoryHarness(): Promise<StorageHarness<MemoryTransaction>> {
  const storage = memoryStorage();
  const orders: string[] = [];
  const staged = new WeakMap<MemoryTransaction, string[]>();
  const commit = async <T>(fn: (tx: MemoryTransaction) => Promise<T>): Promise<T> => {
    let written: string[] = [];
    const result = await storage.transaction(async (tx) => {
      staged.set(tx, written = []);
      return await fn(tx);
    });
    orders.push(...written);
    return result;
  };
  return Promise.resolve({
    storage,
    connect: () => Promise.resolve(storage),
    commit,
    async rollback(fn) {
      const rolledBack = new Error("rollback");
      await commit(async (tx) => {
        await fn(tx);
        throw rolledBack;
      }).catch((error) => {
        if (error !== rolledBack) throw error;
      });
    },
    insertOrder(tx, id) {
      const rows = staged.get(tx);
      if (!rows || orders.includes(id) || rows.includes(id)) {
        return Promise.reject(new Error(rows ? `order ${id} exists` : "no transaction"));
      }
      rows.push(id);
      return Promise.resolve();
    },
    orderCount: () => Promise.resolve(orders.length),
    async closedTransaction() {
      let kept: MemoryTransaction | undefined;
      await storage.transaction((tx) => kept = tx);
      return kept!;
    },
    close: () => Promise.resolve(),
  });
}

storageConformance("memory", memoryHarness);

test("memory: transaction(fn) makes rows visible when fn resolves, and discards them when it throws", async () => {
  const storage = memoryStorage();
  const publisher = memoryPublisher();
  const outbox = createOutbox({ storage, publisher });
  let seen: MemoryTransaction | undefined;
  await assert.rejects(
    storage.transaction(async (tx) => {
      seen = tx;
      await outbox.enqueue(tx, { topic: "orders.created", payload: 1 });
      assert.equal(tx.active, true);
      assert.equal((await outbox.stats()).pending, 0, "not visible before commit");
      throw new Error("business rule failed");
    }),
    /business rule failed/,
  );
  assert.equal(seen?.active, false);
  assert.equal((await outbox.stats()).pending, 0, "discarded");
  const ids = await storage.transaction((tx) => outbox.enqueue(tx, { topic: "orders.created", payload: 2 }));
  assert.equal((await outbox.tick()).published, 1);
  assert.deepEqual(publisher.messages.map((m) => [m.id, m.payload]), [[ids[0], 2]]);
});

test("memory: bad transaction handles and duplicate ids are typed errors, and nothing is half-written", async () => {
  const storage = memoryStorage();
  const outbox = createOutbox({ storage, publisher: memoryPublisher() });
  await assert.rejects(
    outbox.enqueue({} as MemoryTransaction, { topic: "t", payload: 1 }),
    (e: unknown) => e instanceof OutboxConfigError && e.path === "tx",
  );
  await storage.transaction((tx) => outbox.enqueue(tx, { id: "a", topic: "t", payload: 1 }));
  await storage.transaction(async (tx) => {
    await assert.rejects(
      outbox.enqueue(tx, [{ id: "b", topic: "t", payload: 1 }, { id: "a", topic: "t", payload: 1 }]),
      OutboxMessageError,
    );
    await outbox.enqueue(tx, { id: "c", topic: "t", payload: 1 });
  });
  assert.deepEqual((await outbox.inspect()).map((r) => r.id), ["a", "c"], "b was not written with a");
  const bytes = new Uint8Array([1, 2, 3]);
  await storage.transaction((tx) => outbox.enqueue(tx, { id: "d", topic: "t", payload: bytes }));
  bytes[0] = 9;
  assert.deepEqual((await outbox.inspect({ after: 2 }))[0]?.body, new Uint8Array([1, 2, 3]), "bytes are copied");
  let late: MemoryTransaction | undefined;
  await storage.transaction((tx) => late = tx);
  await assert.rejects(outbox.enqueue(late!, { topic: "t", payload: 1 }), OutboxStorageError);
});

test("memory: start() wakes on a commit in the same storage", async () => {
  const storage = memoryStorage();
  let arrived!: () => void;
  const published = new Promise<void>((resolve) => arrived = resolve);
  const relaying = createOutbox({ storage, publisher: () => arrived() });
  // Another instance enqueues, so no in-process nudge reaches the loop, and the idle wait
  // is a minute: only the storage's wake-up on commit finds the message in time.
  const writing = createOutbox({ storage, publisher: () => {} });
  const relay = relaying.start({ minIdleMs: 60_000, maxIdleMs: 60_000 });
  await storage.transaction((tx) => writing.enqueue(tx, { topic: "t", payload: 1 }));
  await published;
  await relay.stop();
});

// The README's unit-test example, with node:assert in place of bun:test's expect.
class OrderService<Tx> {
  constructor(private outbox: Outbox<Tx>) {}
  async place(tx: Tx, order: { id: string; total: number }) {
    if (order.total <= 0) throw new Error("an order needs a total");
    await this.outbox.enqueue(tx, { topic: "orders.placed", key: order.id, payload: order });
  }
}

test("memory: the README's example: a placed order is published once; a refused one never", async () => {
  const storage = memoryStorage();
  const publisher = memoryPublisher();
  const outbox = createOutbox({ storage, publisher });
  const orders = new OrderService(outbox);

  await storage.transaction((tx) => orders.place(tx, { id: "o-1", total: 10 }));
  await assert.rejects(storage.transaction((tx) => orders.place(tx, { id: "o-2", total: 0 })));
  await outbox.tick();

  assert.deepEqual(publisher.messages.map((m) => [m.topic, m.payload]), [["orders.placed", { id: "o-1", total: 10 }]]);
});
