/**
 * A settle that reaches Postgres after its lease ended (a paused event loop, a busy
 * pool, a slow filter) must never let another relay publish a key's message n+1 before
 * n. The race, made deterministic: relay A's settle of n (a retry) is held on n's row
 * lock by a third connection, exactly as if the settle were still in flight, while
 * relay B claims. B must either wait for the settle and then see n waiting (and leave
 * n+1 alone), or take n itself; it must never take n+1 alone.
 *
 * Each case runs with the relays' sessions in READ COMMITTED, REPEATABLE READ and
 * SERIALIZABLE (`default_transaction_isolation`), where the claim function's snapshot
 * would predate its lock.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { createOutbox, type OutboxRecord } from "../../mod.ts";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../../adapters/postgres/mod.ts";
import { postgresNames } from "../../adapters/postgres/sql.ts";
import { test } from "../harness.ts";
import { until } from "./helpers.ts";
import { openSql, PG_URL, uniqueSchema } from "../postgres_helpers.ts";

const LEVELS = ["read committed", "repeatable read", "serializable"] as const;

function relaySql(level: (typeof LEVELS)[number]): postgres.Sql {
  return postgres(PG_URL, {
    max: 3,
    onnotice: () => {},
    idle_timeout: 5,
    connection: { default_transaction_isolation: level },
  });
}

for (const level of LEVELS) {
  test(`postgres (${level}): a settle that lands after its lease ended never lets another relay claim n+1 before n`, async () => {
    const schema = uniqueSchema("late");
    const admin = openSql(4);
    const [sqlA, sqlB] = [relaySql(level), relaySql(level)];
    let holder: postgres.ReservedSql | undefined;
    try {
      const a = postgresStorage(sqlA as unknown as PostgresSql, { schema });
      const b = postgresStorage(sqlB as unknown as PostgresSql, { schema });
      await a.setup();
      const outbox = createOutbox({ storage: a, publisher: () => {} });
      await outbox.enqueue(admin as unknown as PostgresTx, [
        { id: "n", topic: "t", key: "k", payload: 1 },
        { id: "n+1", topic: "t", key: "k", payload: 2 },
      ]);
      const t = Date.now();
      const [n] = await a.claim({ token: "A", now: t, lockedUntil: t + 1_000, limit: 1, clock: "relay" });
      assert.equal(n!.id, "n");

      // A third connection holds n's row, as A's settle would while it is written.
      holder = await admin.reserve();
      await holder.unsafe("BEGIN");
      await holder.unsafe(`SELECT 1 FROM ${postgresNames(schema, "outbox").qualified} WHERE seq = $1 FOR UPDATE`, [
        n!.seq,
      ]);

      // A's settle arrives after the lease ended (t + 1,000): n goes back to pending for a minute.
      const late = t + 2_000;
      const settled = a.settle({
        token: "A",
        now: late,
        deletePublished: true,
        settlements: [{ seq: n!.seq, outcome: "retry", availableAt: late + 60_000, error: "failed, and settled late" }],
        clock: "relay",
      });
      await until(
        "A's settle waits",
        async () =>
          (await admin.unsafe(
            `SELECT count(*)::int AS c FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%rty AS%'`,
          ))[0]!.c === 1,
      );

      // B claims meanwhile, its lease clock past A's lease end.
      let claimDone = false;
      const claimed = b.claim({ token: "B", now: late, lockedUntil: late + 1_000, limit: 10, clock: "relay" }).finally(
        () => claimDone = true,
      );
      await until("B's claim waits for the settle, or returns", async () =>
        claimDone ||
        (await admin.unsafe(`SELECT count(*)::int AS c FROM pg_stat_activity WHERE wait_event = 'advisory'`))[0]!.c ===
          1);

      await holder.unsafe("COMMIT");
      holder.release();
      holder = undefined;
      assert.equal(await settled, 1, "A's settle applies: nobody else had claimed n");
      assert.deepEqual((await claimed).map((r) => r.id), [], "n+1 must wait behind n, which is pending again");

      // A minute later n is due, and n+1 comes with it, behind it.
      const after =
        (await b.claim({ token: "B2", now: late + 60_001, lockedUntil: late + 61_001, limit: 10, clock: "relay" }))
          .sort((x, y) => x.seq - y.seq);
      assert.deepEqual(after.map((r) => r.id), ["n", "n+1"]);
    } finally {
      if (holder) {
        await holder.unsafe("ROLLBACK").catch(() => {});
        holder.release();
      }
      await admin.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
      await Promise.all([admin, sqlA, sqlB].map((s) => s.end({ timeout: 1 })));
    }
  });

  test(`postgres (${level}): two relays deliver every message once, in key order`, async () => {
    const schema = uniqueSchema("iso");
    const admin = openSql(2);
    const clients = [relaySql(level), relaySql(level)];
    const log: OutboxRecord[] = [];
    const total = 300;
    const all = Promise.withResolvers<void>();
    const errors: unknown[] = [];
    try {
      const outboxes = clients.map((sql) =>
        createOutbox({
          storage: postgresStorage(sql as unknown as PostgresSql, { schema }),
          publisher: async (m: OutboxRecord) => {
            await new Promise((resolve) => setTimeout(resolve, 0)); // interleave the relays
            log.push(m);
            if (new Set(log.map((r) => r.id)).size === total) all.resolve();
          },
          batchSize: 16,
          onError: (e) => errors.push(e),
        })
      );
      await outboxes[0]!.setup();
      const relays = outboxes.map((o) => o.start({ minIdleMs: 2, maxIdleMs: 20 }));
      try {
        for (let i = 0; i < total; i += 30) {
          await outboxes[0]!.enqueue(
            admin as unknown as PostgresTx,
            Array.from(
              { length: 30 },
              (_, j) => ({ id: `m${i + j}`, topic: "t", key: `k${(i + j) % 10}`, payload: i + j }),
            ),
          );
        }
        await all.promise;
      } finally {
        await Promise.all(relays.map((r) => r.stop()));
      }
      assert.deepEqual(errors, []);
      assert.equal(log.length, total, "no duplicates without a crash");
      for (let k = 0; k < 10; k++) {
        const payloads = log.filter((m) => m.key === `k${k}`).map((m) => m.payload as number);
        assert.deepEqual(payloads, [...payloads].sort((x, y) => x - y), `key k${k} in order`);
      }
    } finally {
      await admin.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
      await Promise.all([admin, ...clients].map((s) => s.end({ timeout: 1 })));
    }
  });
}
