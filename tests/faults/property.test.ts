/**
 * Fault 5: property-based tests (fast-check) of the relay state machine. fast-check
 * generates schedules of enqueues (committed or rolled back), ticks on one of three
 * relays (alone or two at once), crashes (a claim that is never settled), clock jumps,
 * publisher failures (transient, permanent, an ack lost after the broker stored the
 * message) and storage failures (claim or settle throwing before or after the database
 * applied it). The storage is libSQL on a file with three connections; the broker is a
 * model of a JetStream stream with a dedup window. After every step and after a drain,
 * the invariants must hold:
 *
 * - nothing rolled back reaches the stream or the table;
 * - the stream never holds an id twice (every retry lands inside the dedup window);
 * - after the drain every committed message is in the stream or `dead`, nothing is left
 *   pending or processing, and each key's messages are in the stream in enqueue order.
 *
 * A permanent failure sticks to its message (the broker keeps rejecting it), as the
 * word means: when its `dead` settlement is lost (a settle that fails) and the cause
 * went away before the lease ended, the retry could succeed and land after later
 * messages of its key, which went ahead because it was dead. That is outside the
 * contract ("permanent" = retrying cannot help) and not generated.
 *
 * Pipelined runs are modelled as a connection delivers them: a failure at message n of
 * a run fails n and the rest of the run (the tail never reached the stream) or loses
 * only n's ack (n was stored). The "n lost, n+1 stored" case is the one documented
 * exception to key order (README, JetStream publisher) and is not generated.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { rmSync } from "node:fs";
import type { Client } from "@libsql/client";
import { createOutbox, type OutboxRecord, type OutboxStorage, PublishError, type PublishOutcome } from "../../mod.ts";
import { libsqlStorage, type LibsqlTx } from "../../adapters/libsql/mod.ts";
import { runtime, test } from "../harness.ts";
import { openClient, tempDatabase } from "../libsql_helpers.ts";

const LEASE_MS = 5_000;
const RETRY = { maxAttempts: 4, baseDelayMs: 100, maxDelayMs: 1_000, jitter: 0.5 };
/** The model stream's dedup window: ensureStream()'s floor of 2 minutes, in model time. */
const WINDOW_MS = 120_000;
const KEYS = ["a", "b", "c", null] as const;

type StorageFault = "claimBefore" | "claimAfter" | "settleBefore" | "settleAfter";
type PublishFault = "transient" | "permanent" | "ackLost";

type Command =
  | { t: "enqueue"; keys: (string | null)[]; rollback: boolean }
  | { t: "tick"; relay: number; batches: number }
  | { t: "parallel"; relays: [number, number] }
  | { t: "crash"; relay: number; limit: number }
  | { t: "advance"; ms: number }
  | { t: "publishFault"; kind: PublishFault; count: number }
  | { t: "storageFault"; relay: number; op: StorageFault };

const relayArb = fc.integer({ min: 0, max: 2 });
const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant("enqueue" as const),
      keys: fc.array(fc.constantFrom(...KEYS), { minLength: 1, maxLength: 4 }),
      rollback: fc.constantFrom(false, false, false, true),
    }),
  },
  {
    weight: 5,
    arbitrary: fc.record({ t: fc.constant("tick" as const), relay: relayArb, batches: fc.integer({ min: 1, max: 3 }) }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("parallel" as const), relays: fc.tuple(relayArb, relayArb) }) },
  {
    weight: 1,
    arbitrary: fc.record({ t: fc.constant("crash" as const), relay: relayArb, limit: fc.integer({ min: 1, max: 3 }) }),
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("advance" as const), ms: fc.integer({ min: 0, max: 2_500 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("publishFault" as const),
      kind: fc.constantFrom<PublishFault>("transient", "permanent", "ackLost"),
      count: fc.integer({ min: 1, max: 3 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("storageFault" as const),
      relay: relayArb,
      op: fc.constantFrom<StorageFault>("claimBefore", "claimAfter", "settleBefore", "settleAfter"),
    }),
  },
);

/** A storage that throws once, before or after the real call, when armed. */
function faulty<Tx>(inner: OutboxStorage<Tx, unknown>) {
  const armed = new Set<StorageFault>();
  const storage: OutboxStorage<Tx, unknown> = {
    ...inner,
    async claim(request) {
      if (armed.delete("claimBefore")) throw new Error("injected: connection lost before the claim");
      const rows = await inner.claim(request);
      if (armed.delete("claimAfter")) throw new Error("injected: connection lost after the claim committed");
      return rows;
    },
    async settle(request) {
      if (armed.delete("settleBefore")) throw new Error("injected: connection lost before the settle");
      const n = await inner.settle(request);
      if (armed.delete("settleAfter")) throw new Error("injected: connection lost after the settle committed");
      return n;
    },
  };
  return { storage, arm: (op: StorageFault) => armed.add(op) };
}

/** A model of a JetStream stream: stores in arrival order, drops an id seen within the window. */
class ModelStream {
  readonly stored: { id: string; key: string | null; at: number }[] = [];
  readonly firstAt = new Map<string, number>();
  faults: PublishFault[] = [];
  readonly rejected = new Set<string>();
  calls = 0;
  constructor(private readonly clock: { value: number }) {}

  private store(m: OutboxRecord) {
    const first = this.firstAt.get(m.id);
    if (first !== undefined && this.clock.value - first < WINDOW_MS) return; // duplicate dropped
    if (first === undefined) this.firstAt.set(m.id, this.clock.value);
    this.stored.push({ id: m.id, key: m.key, at: this.clock.value });
  }

  /** One message; throws like the JetStream publisher's error classes. */
  publish(m: OutboxRecord): void {
    this.calls++;
    // Permanent means retrying cannot help: the broker keeps rejecting that message.
    if (this.rejected.has(m.id)) throw new PublishError("injected: rejected for good (again)", { permanent: true });
    const fault = this.faults.shift();
    if (fault === "permanent") this.rejected.add(m.id);
    if (fault === "transient") throw new PublishError("injected: no ack (timeout); will retry");
    if (fault === "permanent") throw new PublishError("injected: rejected for good", { permanent: true });
    this.store(m);
    if (fault === "ackLost") throw new PublishError("injected: stored, but the ack was lost (timeout); will retry");
  }

  /** A pipelined run: a failure fails the rest of the run unless only the ack was lost. */
  run(messages: readonly OutboxRecord[]): PublishOutcome[] {
    const outcomes: PublishOutcome[] = [];
    let broken: unknown = null;
    for (const m of messages) {
      if (broken) {
        outcomes.push({ ok: false, error: broken });
        continue;
      }
      try {
        this.publish(m);
        outcomes.push({ ok: true });
      } catch (error) {
        outcomes.push({ ok: false, error });
        if (!/ack was lost/.test((error as Error).message) && m.key !== null) broken = error;
      }
    }
    return outcomes;
  }
}

test(
  "faults: property: under generated schedules of crashes, clock jumps, publisher and storage failures, the invariants hold",
  async () => {
    const { url, dir } = tempDatabase();
    const clients: Client[] = [];
    for (let i = 0; i < 3; i++) clients.push(await openClient(url));
    let run = 0;
    let generated = 0;
    const seed = Number(process.env.OUTBOX_FC_SEED ?? Date.now() % 2 ** 31);
    const totals = { published: 0, dead: 0, rolledBack: 0, crashes: 0, tickErrors: 0, resent: 0 };
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.array(commandArb, { minLength: 5, maxLength: 60 }),
          fc.boolean(),
          async (commands, pipelined) => {
            const table = `p${run++}`;
            const clock = { value: Date.UTC(2030, 0, 1) };
            const start = clock.value;
            const stream = new ModelStream(clock);
            const publisher = pipelined
              ? {
                publish: async (m: OutboxRecord) => stream.publish(m),
                publishRun: async (ms: readonly OutboxRecord[]) => stream.run(ms),
              }
              : { publish: async (m: OutboxRecord) => stream.publish(m) };
            const storages = clients.map((c) =>
              faulty(libsqlStorage(c, { table }) as OutboxStorage<LibsqlTx, unknown>)
            );
            await storages[0]!.storage.setup();
            const relays = storages.map((s, i) =>
              createOutbox<LibsqlTx, unknown>({
                storage: s.storage,
                publisher,
                now: () => clock.value,
                leaseMs: LEASE_MS,
                retry: RETRY,
                batchSize: 5,
                relayId: `r${i}`,
                onError: () => {},
              })
            );
            const committed: string[] = [];
            const rolledBack = new Set<string>();
            const keyOrder = new Map<string, string[]>();
            let n = 0;
            const tick = async (i: number, maxBatches = 1) => {
              try {
                // Several batches in one tick: the relay may claim the next while one is published.
                await relays[i]!.tick({ maxBatches });
              } catch {
                totals.tickErrors++; // a tick may reject (storage failure); it must not lose anything
              }
            };
            const everyStep = () => {
              const ids = stream.stored.map((s) => s.id);
              assert.equal(new Set(ids).size, ids.length, "the stream holds no duplicates");
              assert.ok(!ids.some((id) => rolledBack.has(id)), "nothing rolled back reaches the stream");
            };

            for (const c of commands) {
              switch (c.t) {
                case "enqueue": {
                  const messages = c.keys.map((key) => ({ id: `${table}-${n++}`, topic: "t", key, payload: n }));
                  const tx = await clients[0]!.transaction("write");
                  try {
                    await relays[0]!.enqueue(tx, messages);
                    if (c.rollback) await tx.rollback();
                    else await tx.commit();
                  } finally {
                    tx.close();
                  }
                  if (c.rollback) {
                    for (const m of messages) rolledBack.add(m.id);
                  } else {
                    for (const m of messages) {
                      committed.push(m.id);
                      if (m.key) keyOrder.set(m.key, [...(keyOrder.get(m.key) ?? []), m.id]);
                    }
                  }
                  break;
                }
                case "tick":
                  await tick(c.relay, c.batches);
                  break;
                case "parallel":
                  await Promise.all(c.relays.map((r) => tick(r)));
                  break;
                case "crash":
                  totals.crashes++;
                  await storages[c.relay]!.storage.claim({
                    token: `crash-${n++}`,
                    now: clock.value,
                    lockedUntil: clock.value + LEASE_MS,
                    limit: c.limit,
                    clock: "relay",
                  })
                    .catch(() => {}); // an armed claim fault may fire here too
                  break;
                case "advance":
                  clock.value += c.ms;
                  break;
                case "publishFault":
                  for (let i = 0; i < c.count; i++) stream.faults.push(c.kind);
                  break;
                case "storageFault":
                  storages[c.relay]!.arm(c.op);
                  break;
              }
              everyStep();
            }

            // Drain: publisher faults off (armed storage faults fire at most once more), time moves, relays tick until nothing waits (bounded).
            stream.faults = [];
            for (let i = 0; i < 200; i++) {
              const stats = await relays[0]!.stats();
              if (stats.pending + stats.processing === 0) break;
              clock.value += 1_000;
              await tick(i % 3);
            }
            everyStep();
            assert.ok(
              clock.value - start < WINDOW_MS,
              "the schedule stays inside the dedup window (a precondition, not a finding)",
            );
            const rows = await relays[0]!.inspect();
            for (const row of rows) {
              assert.equal(row.status, "dead", `only dead rows remain; ${row.id} is ${row.status}`);
            }
            assert.ok(
              !rows.some((r) => rolledBack.has(r.id)),
              "no rolled-back row in the table",
            );
            const dead = new Set(rows.map((r) => r.id));
            const inStream = new Set(stream.stored.map((s) => s.id));
            const lost = committed.filter((id) => !inStream.has(id) && !dead.has(id));
            assert.deepEqual(lost, [], "every committed message is in the stream or dead");
            const position = new Map(stream.stored.map((s, i) => [s.id, i]));
            for (const [key, order] of keyOrder) {
              const sent = order.filter((id) => position.has(id));
              const got = [...sent].sort((a, b) => position.get(a)! - position.get(b)!);
              assert.deepEqual(got, sent, `order of key ${key} in the stream`);
            }
            generated++;
            totals.published += inStream.size;
            totals.dead += dead.size;
            totals.rolledBack += rolledBack.size;
            totals.resent += stream.calls - inStream.size;
            await clients[0]!.execute(`DROP TABLE "${table}"`);
          },
        ),
        { numRuns: 300, seed, endOnFailure: true },
      ).catch((error) => {
        // Printed here as well: the report must survive a runner that dies at exit.
        console.error(`[faults] property failed (reproduce with OUTBOX_FC_SEED=${seed}):`, error);
        throw error;
      });
      console.log(
        `[faults] property: ${generated} schedules; ${totals.published} messages in the stream, ${totals.dead} dead, ` +
          `${totals.rolledBack} rolled back, ${totals.crashes} crashes, ${totals.tickErrors} ticks failed, ${totals.resent} publish calls beyond the first per message`,
      );
      assert.ok(
        totals.dead > 0 && totals.crashes > 0 && totals.tickErrors > 0 && totals.resent > 0,
        "the schedules reached every fault",
      );
    } finally {
      for (const c of clients) c.close();
      rmSync(dir, { recursive: true, force: true });
      // Deno 2.9 with @libsql/client's native driver dies with SIGSEGV (exit 139) when the
      // process exits right after a client that ran a few hundred statements was closed;
      // a moment's pause after close() avoids it. (Not the outbox: a bare loop of
      // enqueue + tick on one client does the same.)
      if (runtime === "deno") await new Promise((r) => setTimeout(r, 300));
    }
  },
  { timeout: 90_000 },
);
