/**
 * Fan-out (`publishers` + `route`): a row per destination, each with its own status,
 * retries, dead state and per-key order, and the operations that filter by destination.
 */

import assert from "node:assert/strict";
import { OutboxConfigError, OutboxMessageError, type OutboxRow, PublishError } from "../../../mod.ts";
import { Clock, ids, recorder, type StorageSuite } from "./harness.ts";

const destinationsOf = (rows: readonly OutboxRow[]) => rows.map((r) => `${r.id}@${r.destination}`);

/** Registers the fan-out tests of the storage conformance suite. */
export function fanOutTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("fan-out: enqueue writes a row per destination under the message's id; each destination gets it once", async (h) => {
    const clock = new Clock();
    const nats = recorder();
    const hooks = recorder();
    const outbox = make(h, clock, undefined, { publishers: { nats, hooks } });
    await outbox.setup();
    await outbox.setup(); // idempotent
    const sent = await h.commit((tx) =>
      outbox.enqueue(tx, [
        { topic: "orders.created", key: "o-1", payload: { n: 1 } },
        { topic: "orders.paid", key: "o-1", payload: { n: 2 } },
        { topic: "users.created", payload: { n: 3 } },
      ])
    );
    assert.equal(sent.length, 3, "one id per message, not per row");
    const rows = await outbox.inspect();
    assert.deepEqual(
      [...destinationsOf(rows)].sort(),
      sent.flatMap((id) => [`${id}@hooks`, `${id}@nats`]).sort(),
    );
    const report = await outbox.tick();
    assert.equal(report.claimed, 6);
    assert.equal(report.published, 6);
    for (const log of [nats.log, hooks.log]) {
      // Key o-1's two messages in order; the unkeyed one may go out beside them.
      assert.deepEqual(ids(log).sort(), [...sent].sort());
      assert.deepEqual(ids(log.filter((m) => m.key === "o-1")), sent.slice(0, 2));
    }
    assert.deepEqual(nats.log.find((m) => m.id === sent[2])?.payload, { n: 3 });
    await outbox.tick();
    assert.equal(nats.log.length + hooks.log.length, 6, "nothing goes out twice");
  });

  it("fan-out: a failing destination neither delays nor repeats the other; its retries and dead state are its own", async (h) => {
    const clock = new Clock();
    const nats = recorder();
    let down = true;
    const hooks = recorder(() => down ? new Error("503 Service Unavailable") : undefined);
    const outbox = make(h, clock, undefined, { publishers: { nats, hooks }, retention: { publishedMs: 60_000 } });
    await outbox.setup();
    const sent = await h.commit((tx) =>
      outbox.enqueue(tx, [{ topic: "a", key: "k", payload: 1 }, { topic: "b", key: "k", payload: 2 }])
    );
    const first = await outbox.tick();
    assert.deepEqual(ids(nats.log), sent, "the healthy destination publishes the key's whole run at once");
    assert.deepEqual([first.published, first.retried, first.released], [2, 1, 1]);
    let stats = await outbox.stats();
    assert.deepEqual(stats.destinations, {
      nats: { pending: 0, processing: 0, published: 2, dead: 0 },
      hooks: { pending: 2, processing: 0, published: 0, dead: 0 },
    });
    assert.equal(stats.pending, 2);
    down = false;
    clock.advance(1_000);
    await outbox.tick();
    assert.deepEqual(ids(hooks.log), sent, "the failing destination keeps its key's order across the retry");
    assert.deepEqual(ids(nats.log), sent, "the healthy destination's copy is not sent again");
    const hookRows = await outbox.inspect({ destination: "hooks" });
    assert.deepEqual(hookRows.map((r) => [r.status, r.attempts]), [["published", 2], ["published", 1]]);
    const natsRows = await outbox.inspect({ destination: "nats" });
    assert.deepEqual(natsRows.map((r) => [r.status, r.attempts]), [["published", 1], ["published", 1]]);
    stats = await outbox.stats();
    assert.deepEqual(stats.destinations.hooks, { pending: 0, processing: 0, published: 2, dead: 0 });
  });

  it("fan-out: a dead message blocks its key only on its own destination (retry.onDead block)", async (h) => {
    const clock = new Clock();
    const nats = recorder();
    const hooks = recorder((m) => m.payload === 1 ? new PublishError("410 Gone", { permanent: true }) : undefined);
    const outbox = make(h, clock, undefined, {
      publishers: { nats, hooks },
      retry: { maxAttempts: 5, baseDelayMs: 1_000, maxDelayMs: 8_000, jitter: 0, onDead: "block" },
    });
    await outbox.setup();
    const sent = await h.commit((tx) =>
      outbox.enqueue(tx, [{ topic: "t", key: "k", payload: 1 }, { topic: "t", key: "k", payload: 2 }])
    );
    await outbox.tick();
    clock.advance(60_000);
    await outbox.tick();
    assert.deepEqual(ids(nats.log), sent);
    assert.deepEqual(ids(hooks.log), [], "the key waits behind its dead message on hooks");
    const stats = await outbox.stats();
    assert.equal(stats.blockedKeys, 1);
    assert.deepEqual(stats.destinations.hooks, { pending: 1, processing: 0, published: 0, dead: 1 });
    assert.equal(await outbox.requeue({ destination: "nats" }), 0, "nats has nothing dead");
    assert.equal(await outbox.purge({ status: "dead", destination: "hooks" }), 1);
    await outbox.tick();
    assert.deepEqual(ids(hooks.log), [sent[1]], "purging the dead message lets its key go on");
  });

  it("fan-out: route picks destinations per message; an empty route stores nothing; a bad route fails before writing", async (h) => {
    const clock = new Clock();
    const nats = recorder();
    const hooks = recorder();
    const route = (m: { topic: string }) =>
      m.topic === "audit" ? [] : m.topic.startsWith("orders.") ? ["nats", "hooks", "nats"] : ["nats"];
    const outbox = make(h, clock, undefined, { publishers: { nats, hooks }, route });
    await outbox.setup();
    const sent = await h.commit((tx) =>
      outbox.enqueue(tx, [
        { topic: "orders.created", payload: 1 },
        { topic: "users.created", payload: 2 },
        { topic: "audit", payload: 3 },
      ])
    );
    assert.equal(sent.length, 3);
    assert.deepEqual(destinationsOf(await outbox.inspect()), [
      `${sent[0]}@nats`,
      `${sent[0]}@hooks`,
      `${sent[1]}@nats`,
    ]);
    const bad = make(h, clock, undefined, { publishers: { nats, hooks }, route: () => ["nats", "kafka"] });
    await h.commit(async (tx) => {
      await assert.rejects(
        bad.enqueue(tx, { topic: "x", payload: 1 }),
        (e: unknown) => e instanceof OutboxConfigError && e.path === "route" && /kafka/.test(e.message),
      );
      // The transaction is untouched: the next enqueue in it commits.
      await outbox.enqueue(tx, { topic: "users.updated", payload: 4 });
      await h.insertOrder(tx, "o-1");
    });
    assert.equal(await h.orderCount(), 1);
    assert.equal((await outbox.inspect()).length, 4);
    await outbox.tick();
    assert.deepEqual(nats.log.map((m) => m.payload), [1, 2, 4]);
    assert.deepEqual(hooks.log.map((m) => m.payload), [1]);
  });

  it("fan-out: an id already in the outbox is refused for every destination, leaving the transaction usable", async (h) => {
    const clock = new Clock();
    const outbox = make(h, clock, undefined, { publishers: { nats: recorder(), hooks: recorder() } });
    await outbox.setup();
    await h.commit((tx) => outbox.enqueue(tx, { id: "order-42", topic: "t", payload: 1 }));
    await h.commit(async (tx) => {
      await assert.rejects(
        outbox.enqueue(tx, { id: "order-42", topic: "t", payload: 2 }),
        (e: unknown) => e instanceof OutboxMessageError && /order-42/.test(e.message),
      );
      await h.insertOrder(tx, "o-2");
    });
    assert.equal(await h.orderCount(), 1);
    const rows = await outbox.inspect();
    assert.deepEqual(destinationsOf(rows).sort(), ["order-42@hooks", "order-42@nats"]);
  });

  it("fan-out: requeue, purge and inspect filter by destination; stats count per destination", async (h) => {
    const clock = new Clock();
    const permanent = () => new PublishError("rejected", { permanent: true });
    const outbox = make(h, clock, undefined, {
      publishers: { nats: recorder(permanent), hooks: recorder(permanent) },
    });
    await outbox.setup();
    const [id] = await h.commit((tx) => outbox.enqueue(tx, { topic: "t", payload: 1 }));
    await outbox.tick();
    const stats = await outbox.stats();
    assert.equal(stats.dead, 2);
    assert.deepEqual(stats.topics, { t: { pending: 0, processing: 0, published: 0, dead: 2 } });
    assert.deepEqual(Object.keys(stats.destinations).sort(), ["hooks", "nats"]);
    assert.deepEqual((await outbox.inspect({ status: "dead", destination: "hooks" })).map((r) => r.destination), [
      "hooks",
    ]);
    assert.equal(await outbox.requeue({ destination: "hooks", ids: [id!] }), 1);
    assert.deepEqual((await outbox.inspect({ status: "pending" })).map((r) => r.destination), ["hooks"]);
    assert.equal(await outbox.purge({ status: "dead", destination: "hooks" }), 0, "hooks' row is pending now");
    assert.equal(await outbox.purge({ status: "dead", destination: "nats" }), 1);
    assert.deepEqual(destinationsOf(await outbox.inspect()), [`${id}@hooks`]);
  });

  it("fan-out: a single-publisher outbox on the same table relays only its own rows, and its rows have destination ''", async (h) => {
    const clock = new Clock();
    const nats = recorder();
    const fan = make(h, clock, undefined, { publishers: { nats } });
    await fan.setup();
    const single = recorder();
    const plain = make(h, clock, single);
    await h.commit((tx) => fan.enqueue(tx, { id: "f-1", topic: "t", payload: 1 }));
    await h.commit((tx) => plain.enqueue(tx, { id: "p-1", topic: "t", payload: 2 }));
    assert.deepEqual(destinationsOf(await plain.inspect()), ["f-1@nats", "p-1@"]);
    await plain.tick();
    assert.deepEqual(ids(single.log), ["p-1"], "the other destination's row is not the single publisher's");
    await fan.tick();
    assert.deepEqual(ids(nats.log), ["f-1"]);
    assert.deepEqual((await fan.stats()).destinations, {});
  });

  it("fan-out: start() relays every destination, each in its own loop, and stops them all", async (h) => {
    const clock = new Clock();
    let finish = () => {};
    const all = new Promise<void>((resolve) => finish = resolve);
    const nats = recorder();
    const hooks = recorder();
    const counted = (r: typeof nats) => ({
      publish: async (m: Parameters<typeof r.publish>[0]) => {
        await r.publish(m);
        if (nats.log.length + hooks.log.length === 40) finish();
      },
    });
    const outbox = make(h, clock, undefined, {
      publishers: { nats: counted(nats), hooks: counted(hooks) },
      clock: "storage",
    });
    await outbox.setup();
    const sent = await h.commit((tx) =>
      outbox.enqueue(tx, Array.from({ length: 20 }, (_, i) => ({ topic: "t", key: `k${i % 3}`, payload: i })))
    );
    const reports: number[] = [];
    const relay = outbox.start({ minIdleMs: 5, maxIdleMs: 20, onTick: (r) => reports.push(r.published) });
    await all;
    await relay.stop();
    assert.equal(relay.running, false);
    for (const log of [nats.log, hooks.log]) {
      for (const key of ["k0", "k1", "k2"]) {
        assert.deepEqual(ids(log.filter((m) => m.key === key)), sent.filter((_, i) => `k${i % 3}` === key));
      }
    }
    assert.equal(reports.reduce((a, b) => a + b, 0), 40, "each loop reports its own ticks");
  });
}
