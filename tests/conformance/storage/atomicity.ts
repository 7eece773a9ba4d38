/**
 * Atomicity: a committed message is published once with what was written; a rolled-back
 * one never; enqueue() validates before it writes and leaves the caller's transaction usable.
 */

import assert from "node:assert/strict";
import * as v from "valibot";
import { createOutbox, memoryPublisher, OutboxMessageError, OutboxStorageError } from "../../../mod.ts";
import { Clock, ids, type StorageSuite } from "./harness.ts";

/** Registers the atomicity tests of the storage conformance suite. */
export function atomicityTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("tick() publishes a committed message with its id, topic, key, payload and headers", async (h) => {
    const clock = new Clock();
    const pub = memoryPublisher();
    const outbox = make(h, clock, pub);
    const payload = { id: "o-1", total: 12.5, note: "café ✓", items: [{ sku: "a", qty: 2 }], at: null };
    const returned = await h.commit(async (tx) => {
      await h.insertOrder(tx, "o-1");
      return await outbox.enqueue(tx, {
        id: "msg-1",
        topic: "orders.created",
        key: "o-1",
        payload,
        headers: { "x-trace-id": "t-1" },
      });
    });
    assert.deepEqual(returned, ["msg-1"]);
    const report = await outbox.tick();
    assert.equal(report.claimed, 1);
    assert.equal(report.published, 1);
    assert.equal(pub.messages.length, 1);
    const m = pub.messages[0]!;
    assert.equal(m.id, "msg-1");
    assert.equal(m.topic, "orders.created");
    assert.equal(m.key, "o-1");
    assert.deepEqual(m.payload, payload);
    assert.equal(m.body, JSON.stringify(payload));
    assert.deepEqual(m.headers, { "x-trace-id": "t-1" });
    assert.equal(m.attempts, 1);
    assert.equal(m.createdAt.getTime(), clock.value);
    assert.equal((await outbox.tick()).claimed, 0);
  });

  it("tick() publishes a bytes payload as the same bytes, and generates time-ordered UUIDv7 ids", async (h) => {
    const clock = new Clock();
    const pub = memoryPublisher();
    const outbox = make(h, clock, pub);
    const bytes = new Uint8Array([0, 1, 2, 250, 255]);
    const [a, b] = await h.commit((tx) =>
      outbox.enqueue(tx, [{ topic: "bin", payload: bytes }, { topic: "json", payload: "x" }])
    );
    assert.match(a!, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.ok(a! < b!, "ids generated in one enqueue increase");
    await outbox.tick();
    const got = pub.messages.find((m) => m.id === a)!;
    assert.ok(got.payload instanceof Uint8Array);
    assert.deepEqual([...(got.payload as Uint8Array)], [...bytes]);
    assert.deepEqual(pub.messages.find((m) => m.id === b)!.payload, "x");
  });

  it("tick() publishes nothing that was rolled back", async (h) => {
    const clock = new Clock();
    const pub = memoryPublisher();
    const outbox = make(h, clock, pub);
    await h.rollback(async (tx) => {
      await h.insertOrder(tx, "o-rolled");
      await outbox.enqueue(tx, { id: "rolled", topic: "orders.created", payload: {} });
    });
    await h.commit(async (tx) => {
      await h.insertOrder(tx, "o-kept");
      await outbox.enqueue(tx, { id: "kept", topic: "orders.created", payload: {} });
    });
    const report = await outbox.tick();
    assert.equal(report.claimed, 1);
    assert.deepEqual(ids(pub.messages), ["kept"]);
    assert.equal(await h.orderCount(), 1);
    assert.equal((await outbox.stats()).pending, 0);
  });

  it("enqueue() leaves the caller's transaction open and usable", async (h) => {
    const clock = new Clock();
    const pub = memoryPublisher();
    const outbox = make(h, clock, pub);
    await h.commit(async (tx) => {
      await outbox.enqueue(tx, { id: "first", topic: "t", payload: 1 });
      await h.insertOrder(tx, "after-enqueue");
      await outbox.enqueue(tx, { id: "second", topic: "t", payload: 2 });
    });
    assert.equal(await h.orderCount(), 1);
    await outbox.tick();
    assert.deepEqual(ids(pub.messages), ["first", "second"]);
  });

  it("enqueue() of many messages writes all or none, and the transaction stays usable", async (h) => {
    const clock = new Clock();
    const pub = memoryPublisher();
    const outbox = make(h, clock, pub);
    await h.commit((tx) => outbox.enqueue(tx, { id: "taken", topic: "t", payload: 0 }));
    // 1,200 messages: more than one INSERT statement for adapters that chunk.
    const many = Array.from({ length: 1_200 }, (_, i) => ({ id: `bulk-${i}`, topic: "t", payload: i }));
    many.push({ id: "taken", topic: "t", payload: -1 });
    await h.commit(async (tx) => {
      await h.insertOrder(tx, "before");
      await assert.rejects(() => outbox.enqueue(tx, many), OutboxMessageError);
      await h.insertOrder(tx, "after");
      await outbox.enqueue(tx, { id: "good", topic: "t", payload: 1 });
    });
    assert.equal(await h.orderCount(), 2);
    const report = await outbox.tick({ maxBatches: 100 });
    assert.equal(report.published, 2);
    assert.deepEqual(ids(pub.messages).sort(), ["good", "taken"]);
  });

  it("enqueue() of 10,000 messages in one transaction publishes them all", async (h) => {
    const clock = new Clock();
    let count = 0;
    const outbox = make(h, clock, () => void count++, { batchSize: 1_000 });
    const many = Array.from({ length: 10_000 }, (_, i) => ({ topic: "bulk", key: `k${i % 10}`, payload: { i } }));
    const written = await h.commit((tx) => outbox.enqueue(tx, many));
    assert.equal(new Set(written).size, 10_000);
    assert.equal((await outbox.stats()).pending, 10_000);
    const report = await outbox.tick({ budgetMs: 600_000 });
    assert.equal(report.published, 10_000);
    assert.equal(count, 10_000);
  }, 120_000);

  it("enqueue() rejects bad messages with OutboxMessageError and the field path, writing nothing", async (h) => {
    const clock = new Clock();
    const pub = memoryPublisher();
    const schemas = { "orders.created": v.object({ id: v.string(), total: v.pipe(v.number(), v.minValue(0)) }) };
    const typed = createOutbox({ storage: h.storage, publisher: pub, now: clock.now, messages: schemas });
    const outbox = make(h, clock, pub, { maxPayloadBytes: 200 });
    const cycle: Record<string, unknown> = { a: 1 };
    cycle.self = cycle;
    const bad: [string, unknown, string][] = [
      ["no topic", { payload: 1 }, "topic"],
      ["empty topic", { topic: "", payload: 1 }, "topic"],
      ["topic with spaces", { topic: "orders created", payload: 1 }, "topic"],
      ["topic not a string", { topic: 42, payload: 1 }, "topic"],
      ["no payload", { topic: "t" }, "payload"],
      ["BigInt", { topic: "t", payload: { n: 10n } }, "payload.n"],
      ["cycle", { topic: "t", payload: cycle }, "payload.self"],
      ["function", { topic: "t", payload: { f: () => 1 } }, "payload.f"],
      ["symbol", { topic: "t", payload: [Symbol("s")] }, "payload[0]"],
      ["NaN", { topic: "t", payload: { x: NaN } }, "payload.x"],
      ["Map", { topic: "t", payload: { m: new Map() } }, "payload.m"],
      ["too large", { topic: "t", payload: "x".repeat(300) }, "payload"],
      ["too large bytes", { topic: "t", payload: new Uint8Array(201) }, "payload"],
      ["unknown field", { topic: "t", payload: 1, delay: 5 }, "delay"],
      ["numeric key", { topic: "t", payload: 1, key: 5 }, "key"],
      ["empty id", { topic: "t", payload: 1, id: "" }, "id"],
      ["NUL in id", { topic: "t", payload: 1, id: "a\u0000b" }, "id"],
      ["NUL in key", { topic: "t", payload: 1, key: "k\u0000" }, "key"],
      ["lone surrogate in key", { topic: "t", payload: 1, key: "k\ud800" }, "key"],
      ["header value not a string", { topic: "t", payload: 1, headers: { a: 1 } }, "headers.a"],
      ["header name with space", { topic: "t", payload: 1, headers: { "a b": "1" } }, "headers.a b"],
      ["header with newline", { topic: "t", payload: 1, headers: { a: "1\r\nx: y" } }, "headers.a"],
      ["invalid deliverAt", { topic: "t", payload: 1, deliverAt: new Date("nope") }, "deliverAt"],
      ["not an object", "orders.created", ""],
      ["second of two invalid", [{ topic: "t", payload: 1 }, { topic: "", payload: 1 }], "[1].topic"],
      [
        "duplicate ids in one call",
        [{ id: "a", topic: "t", payload: 1 }, { id: "a", topic: "t", payload: 2 }],
        "[1].id",
      ],
    ];
    await h.commit(async (tx) => {
      for (const [what, message, path] of bad) {
        await assert.rejects(
          // deno-lint-ignore no-explicit-any
          () => outbox.enqueue(tx, message as any),
          (e: unknown) => e instanceof OutboxMessageError && e.path === path,
          `${what} is rejected with path ${JSON.stringify(path)}`,
        );
      }
      const badSchema: [unknown, string][] = [
        [{ topic: "orders.created", payload: { id: 1, total: 5 } }, "payload.id"],
        [{ topic: "orders.created", payload: { id: "o", total: -1 } }, "payload.total"],
        [{ topic: "orders.unknown", payload: {} }, "topic"],
      ];
      for (const [message, path] of badSchema) {
        await assert.rejects(
          // deno-lint-ignore no-explicit-any
          () => typed.enqueue(tx, message as any),
          (e: unknown) => e instanceof OutboxMessageError && e.path === path,
          `schema violation at ${path}`,
        );
      }
      await h.insertOrder(tx, "still-usable");
      await typed.enqueue(tx, { id: "valid", topic: "orders.created", payload: { id: "o", total: 3 } });
    });
    assert.equal(await h.orderCount(), 1);
    await outbox.tick();
    assert.deepEqual(ids(pub.messages), ["valid"]);
  });

  it("enqueue() on a closed transaction throws OutboxStorageError", async (h) => {
    const clock = new Clock();
    const outbox = make(h, clock, memoryPublisher());
    if (!h.closedTransaction) return;
    const closed = await h.closedTransaction();
    await assert.rejects(() => outbox.enqueue(closed, { topic: "t", payload: 1 }), OutboxStorageError);
    assert.equal((await outbox.stats()).pending, 0);
  });
}
