/**
 * Relays whose clocks are two minutes apart (one 60 s ahead, one 60 s behind) on one
 * table, with publishes that stall past their lease so the other relay takes the batch
 * over, and transient failures. Relay clocks are not trusted: lease ends and due times
 * are compared on the database's clock (Postgres, and libSQL over HTTP against a real
 * sqld). Checked: every message is published, none goes dead, per-key order holds (no
 * message goes out after a later message of its key did), and a message is never being
 * published by two relays at once.
 *
 * `OUTBOX_SKEW_CLOCK=relay` runs the same test on the relays' own clocks, to see it fail.
 */

import assert from "node:assert/strict";
import { type Client, createClient } from "@libsql/client";
import { createOutbox, type Outbox, type OutboxRecord, type OutboxStorage, type PublishContext } from "../../mod.ts";
import { libsqlStorage } from "../../adapters/libsql/mod.ts";
import { type PostgresSql, postgresStorage } from "../../adapters/postgres/mod.ts";
import { test } from "../harness.ts";
import { openSql, uniqueSchema } from "../postgres_helpers.ts";
import { startSqld } from "../sqld_helpers.mjs";
import { until } from "./helpers.ts";

const SKEW_MS = 60_000;
const LEASE_MS = 800;
const MESSAGES = 400;
const KEYS = 16;
const clock =
  ((globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.OUTBOX_SKEW_CLOCK ??
    "storage") as
      | "storage"
      | "relay";

interface Run {
  readonly published: number;
  readonly lost: number;
  readonly stalls: number;
  readonly pauses: number;
  readonly takeovers: number;
}

async function skewedRelays<Tx>(
  storages: [OutboxStorage<Tx, unknown>, OutboxStorage<Tx, unknown>],
  writer: Tx,
): Promise<Run> {
  const log: { id: string; key: string; n: number; relay: number }[] = [];
  const inFlight = new Map<string, number>();
  const overlaps: string[] = [];
  const errors: unknown[] = [];
  let stalls = 0;
  let lost = 0;
  let seed = 7;
  const random = () => ((seed = (seed * 1_103_515_245 + 12_345) >>> 0) / 2 ** 32);
  const done = Promise.withResolvers<void>();
  const seen = new Set<string>();

  const publisher = (relay: number) => async (m: OutboxRecord, { signal }: PublishContext) => {
    const other = inFlight.get(m.id);
    if (other !== undefined && other !== relay) overlaps.push(`${m.id} by relays ${other} and ${relay}`);
    inFlight.set(m.id, relay);
    try {
      const roll = random();
      if (roll < 0.03) {
        // A relay that pauses past its lease: the publish is abandoned at the lease's end.
        stalls++;
        await new Promise<void>((_, reject) =>
          signal.addEventListener("abort", () => reject(signal.reason), { once: true })
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 0));
      if (roll > 0.92) throw new Error("injected transient failure");
      log.push({ id: m.id, key: m.key!, n: m.payload as number, relay });
      seen.add(m.id);
      if (seen.size === MESSAGES) done.resolve();
    } finally {
      if (inFlight.get(m.id) === relay) inFlight.delete(m.id);
    }
  };

  // The relay 60 s ahead pauses between publishing and settling, past its lease, on every
  // sixth settle, and claims nothing while paused (a GC pause, a laptop lid): the other
  // relay takes the batch over, and the late settle must change nothing.
  let pauses = 0;
  let settles = 0;
  let pausedUntil = 0;
  const pause = async () => {
    const wait = pausedUntil - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  };
  const pausing = (storage: OutboxStorage<Tx, unknown>, relay: number): OutboxStorage<Tx, unknown> =>
    relay !== 0 ? storage : {
      ...storage,
      claim: async (request) => {
        await pause();
        return await storage.claim(request);
      },
      settle: async (request) => {
        if (++settles % 6 === 0) {
          pauses++;
          pausedUntil = Date.now() + LEASE_MS * 1.5;
        }
        await pause();
        return await storage.settle(request);
      },
    };

  const outboxes = storages.map((storage, i) =>
    createOutbox<Tx, unknown>({
      storage: pausing(storage, i),
      publisher: publisher(i),
      now: () => Date.now() + (i === 0 ? SKEW_MS : -SKEW_MS),
      clock,
      leaseMs: LEASE_MS,
      batchSize: 8,
      retry: { maxAttempts: 1_000, baseDelayMs: 5, maxDelayMs: 50, jitter: 0.5 },
      onError: (e) => errors.push(e),
    })
  ) as [Outbox<Tx, unknown>, Outbox<Tx, unknown>];
  const relays = outboxes.map((o) =>
    o.start({
      minIdleMs: 2,
      maxIdleMs: 20,
      onTick: (report) => {
        lost += report.lost;
      },
    })
  );
  try {
    // Both skewed clocks write: the one ahead must not hold its own messages back.
    for (let i = 0; i < MESSAGES; i += 40) {
      await outboxes[(i / 40) % 2]!.enqueue(
        writer,
        Array.from(
          { length: 40 },
          (_, j) => ({ id: `m${i + j}`, topic: "t", key: `k${(i + j) % KEYS}`, payload: i + j }),
        ),
      );
    }
    const timeout = setTimeout(
      () => done.reject(new Error(`Only ${seen.size} of ${MESSAGES} messages were published in 60 s`)),
      60_000,
    );
    try {
      await done.promise;
    } finally {
      clearTimeout(timeout);
    }
    // Rows whose settle landed late go out once more when their lease ends; wait for
    // the table to drain before stopping.
    await until("the table to drain", async () => {
      const s = await outboxes[0].stats();
      return s.pending + s.processing === 0;
    }, 30_000);
  } finally {
    await Promise.all(relays.map((r) => r.stop()));
  }

  assert.deepEqual(overlaps, [], "a message was being published by two relays at once");
  for (let k = 0; k < KEYS; k++) {
    const ns = log.filter((e) => e.key === `k${k}`).map((e) => e.n);
    // At least once: after a takeover a batch may go out again (in order, and a broker
    // that dedups by id drops it), but each message's first delivery keeps enqueue order.
    const expected = Array.from({ length: MESSAGES }, (_, i) => i).filter((i) => i % KEYS === k);
    assert.deepEqual(
      [...new Set(ns)],
      expected,
      `key k${k}: every message, first delivered in enqueue order: ${ns.join(",")}`,
    );
  }
  assert.equal((await outboxes[0].stats()).dead, 0);
  assert.ok(stalls > 0, "some publishes stalled past their lease");
  assert.ok(
    errors.every((e) => /settle|lease/i.test(String(e)) || /injected/.test(String(e))),
    `unexpected relay errors: ${errors.map(String).join("; ")}`,
  );
  assert.ok(pauses > 0, "some settles landed after their lease ended");
  // A takeover: a message published by one relay, then again by the other after the
  // first one's lease ended without a settle.
  const byRelay = new Map<string, Set<number>>();
  for (const e of log) byRelay.set(e.id, (byRelay.get(e.id) ?? new Set()).add(e.relay));
  const takeovers = [...byRelay.values()].filter((relays) => relays.size > 1).length;
  assert.ok(takeovers > 0, "some batches were taken over by the other relay");
  return { published: log.length, lost, stalls, pauses, takeovers };
}

test(
  `postgres: relays 60 s ahead and 60 s behind keep per-key order and never share a lease (clock: ${clock})`,
  async () => {
    const schema = uniqueSchema("skew");
    const sqls = [openSql(4), openSql(4), openSql(2)];
    try {
      const [a, b] = sqls.map((sql) => postgresStorage(sql as unknown as PostgresSql, { schema }));
      await a!.setup();
      const run = await skewedRelays([a!, b!], sqls[2] as unknown as never);
      console.log(
        `postgres skew: ${run.published} publishes of ${MESSAGES} messages, ${run.stalls} publishes stalled past the lease, ${run.pauses} settles landed after it, ${run.takeovers} messages taken over by the other relay`,
      );
    } finally {
      await sqls[2]!.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
      await Promise.all(sqls.map((s) => s.end({ timeout: 1 })));
    }
  },
  { timeout: 90_000 },
);

test(
  `libsql over HTTP (sqld): relays 60 s ahead and 60 s behind keep per-key order and never share a lease (clock: ${clock})`,
  async () => {
    const sqld = await startSqld();
    const clients: Client[] = [0, 1, 2].map(() => createClient({ url: sqld.url }));
    try {
      const [a, b] = clients.map((client) => libsqlStorage(client));
      await a!.setup();
      const run = await skewedRelays([a!, b!], clients[2]!);
      console.log(
        `sqld skew: ${run.published} publishes of ${MESSAGES} messages, ${run.stalls} publishes stalled past the lease, ${run.pauses} settles landed after it, ${run.takeovers} messages taken over by the other relay`,
      );
    } finally {
      for (const c of clients) c.close();
      await sqld.stop();
    }
  },
  { timeout: 90_000 },
);
