/**
 * Operating the outbox: purge() of settled messages, inspect() filtered and paged,
 * and the relay handle as an async disposable.
 */

import assert from "node:assert/strict";
import { type Instrumentation, OutboxConfigError, OutboxMessageError, PublishError } from "../../../mod.ts";
import { Clock, ids, recorder, type StorageSuite } from "./harness.ts";

const text = (body: string | Uint8Array | undefined) =>
  typeof body === "string" ? body : new TextDecoder().decode(body);

/** Registers the purge(), inspect() and asyncDispose tests of the storage conformance suite. */
export function operationsTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("purge() deletes dead or kept published messages by status, age, topic and id; never unsettled ones", async (h) => {
    const clock = new Clock();
    const pub = recorder((m) => m.topic.startsWith("bad") ? new PublishError("no", { permanent: true }) : undefined);
    const outbox = make(h, clock, pub, { retention: { publishedMs: Infinity, deadMs: Infinity } });
    await h.commit((tx) =>
      outbox.enqueue(tx, [
        { id: "d1", topic: "bad.a", payload: 1 },
        { id: "d2", topic: "bad.b", payload: 1 },
        { id: "p1", topic: "ok", payload: 1 },
      ])
    );
    await outbox.tick();
    clock.advance(60_000);
    await h.commit((tx) =>
      outbox.enqueue(tx, [{ id: "d3", topic: "bad.a", payload: 1 }, { id: "p2", topic: "ok", payload: 1 }])
    );
    await outbox.tick();
    await h.commit((tx) => outbox.enqueue(tx, { id: "w", topic: "bad.a", payload: 1, deliverAt: clock.value + 1e6 }));
    assert.deepEqual((await outbox.stats()).dead, 3);

    assert.equal(await outbox.purge({ status: "dead", olderThanMs: 30_000, topic: "bad.b" }), 1, "d2 only");
    assert.equal(await outbox.purge({ status: "dead", ids: ["d3", "p1", "w", "nope"] }), 1, "d3 only");
    assert.equal(await outbox.purge({ status: "dead", ids: [] }), 0);
    assert.equal(await outbox.purge({ status: "published", olderThanMs: 30_000 }), 1, "p1, settled a minute ago");
    assert.equal(await outbox.purge({ status: "dead" }), 1, "d1");
    const left = await outbox.inspect();
    assert.deepEqual(left.map((r) => [r.id, r.status]), [["p2", "published"], ["w", "pending"]]);
    assert.equal(await outbox.purge({ status: "published" }), 1);
    assert.deepEqual(ids(pub.log).sort(), ["p1", "p2"], "purge published nothing");
  });

  it("purge() works through more rows than one batch, and refuses bad options before any SQL", async (h) => {
    const clock = new Clock();
    const outbox = make(h, clock, recorder(() => new PublishError("no", { permanent: true })), {
      retention: { publishedMs: Infinity, deadMs: Infinity, batchSize: 7 },
      batchSize: 50,
    });
    await h.commit((tx) =>
      outbox.enqueue(tx, Array.from({ length: 30 }, (_, i) => ({ id: `m${i}`, topic: "t", payload: i })))
    );
    await outbox.tick();
    assert.equal((await outbox.stats()).dead, 30);
    assert.equal(await outbox.purge({ status: "dead" }), 30);
    assert.equal((await outbox.stats()).dead, 0);
    await assert.rejects(outbox.purge({ status: "pending" as never }), OutboxConfigError);
    await assert.rejects(outbox.purge({ status: "dead", olderThanMs: -1 }), OutboxConfigError);
    await assert.rejects(outbox.purge({ status: "dead", olderThanMs: NaN }), OutboxConfigError);
    await assert.rejects(outbox.purge({ status: "dead", ids: [1] as never }), OutboxMessageError);
  });

  it('purge() of a dead message that blocks its key (retry.onDead "block") lets the key go on', async (h) => {
    const clock = new Clock();
    let broken = true;
    const pub = recorder((m) => broken && m.id === "k1" ? new PublishError("no", { permanent: true }) : undefined);
    const outbox = make(h, clock, pub, { retry: { maxAttempts: 1, onDead: "block" } });
    await h.commit((tx) =>
      outbox.enqueue(tx, [{ id: "k1", topic: "t", key: "k", payload: 1 }, {
        id: "k2",
        topic: "t",
        key: "k",
        payload: 2,
      }])
    );
    await outbox.tick();
    await outbox.tick();
    assert.deepEqual(ids(pub.log), [], "k1 is dead and k2 waits behind it");
    assert.equal((await outbox.stats()).blockedKeys, 1);
    broken = false;
    assert.equal(await outbox.purge({ status: "dead" }), 1);
    await outbox.tick();
    assert.deepEqual(ids(pub.log), ["k2"]);
    assert.equal((await outbox.stats()).blockedKeys, 0);
  });

  it("inspect() filters by status, topic and key, pages after a seq, and returns body, headers and deliverAt", async (h) => {
    const clock = new Clock();
    const pub = recorder((m) =>
      m.topic === "bad" ? new PublishError("broken <script>", { permanent: true }) : undefined
    );
    const outbox = make(h, clock, pub, { retention: { publishedMs: Infinity } });
    const bytes = new Uint8Array([0, 1, 254, 255]);
    await h.commit((tx) =>
      outbox.enqueue(tx, [
        { id: "a", topic: "ok", key: "k1", payload: { n: 1 }, headers: { "x-h": "v" } },
        { id: "b", topic: "bad", key: "k2", payload: { n: 2 } },
        { id: "c", topic: "ok", key: "k1", payload: bytes },
        { id: "d", topic: "ok", payload: 4 },
      ])
    );
    await outbox.tick();
    await h.commit((tx) => outbox.enqueue(tx, { id: "e", topic: "ok", payload: 5, deliverAt: clock.value + 60_000 }));

    const all = await outbox.inspect();
    assert.deepEqual(all.map((r) => r.id), ["a", "b", "c", "d", "e"]);
    const [a, b, c, , e] = all;
    assert.equal(text(a!.body), '{"n":1}');
    assert.deepEqual(JSON.parse(a!.headers!), { "x-h": "v" });
    assert.ok(c!.body instanceof Uint8Array, "bytes come back as bytes");
    assert.deepEqual([...(c!.body as Uint8Array)], [0, 1, 254, 255]);
    assert.equal(b!.status, "dead");
    assert.match(b!.lastError ?? "", /broken <script>/);
    assert.equal(e!.deliverAt, clock.value + 60_000);
    assert.equal(a!.deliverAt, null);

    assert.deepEqual((await outbox.inspect({ status: "dead" })).map((r) => r.id), ["b"]);
    assert.deepEqual((await outbox.inspect({ topic: "ok", key: "k1" })).map((r) => r.id), ["a", "c"]);
    assert.deepEqual((await outbox.inspect({ status: "pending", topic: "ok" })).map((r) => r.id), ["e"]);
    const page1 = await outbox.inspect({ topic: "ok", limit: 2 });
    assert.deepEqual(page1.map((r) => r.id), ["a", "c"]);
    const page2 = await outbox.inspect({ topic: "ok", limit: 2, after: page1.at(-1)!.seq });
    assert.deepEqual(page2.map((r) => r.id), ["d", "e"]);
    assert.deepEqual(await outbox.inspect({ topic: "ok", limit: 2, after: page2.at(-1)!.seq }), []);
    await assert.rejects(outbox.inspect({ status: "gone" as never }), OutboxConfigError);
    await assert.rejects(outbox.inspect({ limit: 0 }), OutboxConfigError);
    await assert.rejects(outbox.inspect({ after: -1 }), OutboxConfigError);
  });

  it("the relay handle is async-disposable: `await using` stops the loop at the end of the scope", async (h) => {
    const clock = new Clock();
    const outbox = make(h, clock, recorder());
    let handle;
    {
      await using relay = outbox.start({ minIdleMs: 60_000, maxIdleMs: 60_000 });
      handle = relay;
      assert.equal(relay.running, true);
    }
    assert.equal(handle.running, false, "disposed at the end of the block");
    await handle.done;
  });
}

/** Registers the AbortSignal tests of the storage conformance suite. */
export function signalTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("setup, stats, requeue, purge and inspect reject with an aborted signal's reason before touching anything", async (h) => {
    const clock = new Clock();
    const outbox = make(h, clock, recorder(() => new PublishError("no", { permanent: true })), {
      retention: { deadMs: Infinity },
    });
    await h.commit((tx) =>
      outbox.enqueue(tx, [{ id: "a", topic: "t", payload: 1 }, { id: "b", topic: "t", payload: 2 }])
    );
    await outbox.tick();
    const controller = new AbortController();
    const reason = new Error("operator gave up");
    controller.abort(reason);
    const signal = controller.signal;
    const rejectsWithReason = (p: Promise<unknown>) => assert.rejects(p, (e) => e === reason);
    await rejectsWithReason(outbox.setup({ signal }));
    await rejectsWithReason(outbox.stats({ signal }));
    await rejectsWithReason(outbox.requeue({ signal }));
    await rejectsWithReason(outbox.purge({ status: "dead", signal }));
    await rejectsWithReason(outbox.inspect({ signal }));
    const stats = await outbox.stats({ signal: new AbortController().signal });
    assert.equal(stats.dead, 2, "nothing was requeued or purged");
    assert.deepEqual((await outbox.inspect({ signal: AbortSignal.timeout(60_000) })).map((r) => r.id), ["a", "b"]);
  });
}

/** Registers the instrumentation tests of the storage conformance suite. */
export function instrumentationTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("instrumentation wraps storage and publisher: it sees each enqueue, claim, outcome and publish, and may add headers", async (h) => {
    const clock = new Clock();
    const seen: string[] = [];
    const instrumentation: Instrumentation = {
      storage: (s) => ({
        ...s,
        insert: (tx, rows) => {
          seen.push(`enqueue ${rows.map((r) => r.id).join(",")}`);
          // What a tracer does: carry the enqueuing context in the headers.
          const traced = rows.map((r) => ({
            ...r,
            headers: JSON.stringify({ ...JSON.parse(r.headers ?? "{}"), trace: r.id }),
          }));
          return s.insert(tx, traced);
        },
        claim: async (r) => {
          const rows = await s.claim(r);
          if (rows.length) seen.push(`claim ${rows.length}`);
          return rows;
        },
        settle: (r) => {
          seen.push(`settle ${r.settlements.map((x) => x.outcome).join(",")}`);
          return s.settle(r);
        },
      }),
      publisher: (p) => ({
        publish: async (m, c) => {
          seen.push(`publish ${m.id} ${m.headers.trace}`);
          await p.publish(m, c);
        },
      }),
    };
    const pub = recorder((m) => m.id === "b" ? new PublishError("no", { permanent: true }) : undefined);
    const outbox = make(h, clock, pub, { instrumentation });
    await h.commit((tx) =>
      outbox.enqueue(tx, [{ id: "a", topic: "t", payload: 1 }, { id: "b", topic: "t", payload: 2 }])
    );
    await outbox.tick();
    assert.deepEqual(seen.slice(0, 2), ["enqueue a,b", "claim 2"]);
    assert.deepEqual(seen.filter((x) => x.startsWith("publish")).sort(), ["publish a a", "publish b b"]);
    assert.deepEqual(seen.filter((x) => x.startsWith("settle")).map((x) => x.split(" ")[1]!.split(",").sort()), [[
      "dead",
      "published",
    ]]);
    assert.deepEqual(ids(pub.log), ["a"]);
    assert.throws(() => make(h, clock, pub, { instrumentation: { storage: 1 } as never }), OutboxConfigError);
    assert.throws(() => make(h, clock, pub, { instrumentation: { tracer: () => {} } as never }), OutboxConfigError);
  });
}

/** Registers the Retry-After test of the storage conformance suite. */
export function retryAfterTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("a publish error's retryAfterMs (an HTTP Retry-After) sets the next attempt, within retry.maxDelayMs", async (h) => {
    const clock = new Clock();
    let calls = 0;
    const pub = recorder((m) => {
      if (m.attempts > 1) return undefined;
      calls++;
      return new PublishError("busy", { retryAfterMs: m.id === "soon" ? 3_000 : 60_000 });
    });
    const outbox = make(h, clock, pub); // retry: base 1 s, max 8 s, no jitter
    await h.commit((tx) =>
      outbox.enqueue(tx, [{ id: "soon", topic: "t", payload: 1 }, { id: "late", topic: "t", payload: 2 }])
    );
    await outbox.tick();
    assert.equal(calls, 2);
    clock.advance(2_999);
    await outbox.tick();
    assert.deepEqual(ids(pub.log), [], "not before Retry-After (the back-off alone would allow it after 1 s)");
    clock.advance(1);
    await outbox.tick();
    assert.deepEqual(ids(pub.log), ["soon"]);
    clock.advance(8_000 - 3_000 - 1);
    await outbox.tick();
    assert.deepEqual(ids(pub.log), ["soon"], "60 s is capped at maxDelayMs, 8 s");
    clock.advance(1);
    await outbox.tick();
    assert.deepEqual(ids(pub.log), ["soon", "late"]);
  });
}
