/**
 * FAILS INTERMITTENTLY (kept out of tests/faults/): the relay's Postgres connections
 * killed with pg_terminate_backend 5 times, then PostgreSQL restarted mid-run (once).
 * The outbox itself behaves (errors to onError, nothing lost or doubled), but with
 * postgres.js 3.4.9:
 *   - Bun (4 of 6 runs): "TypeError: null is not an object (evaluating 'socket.write')"
 *     at nextWrite (node_modules/postgres/src/connection.js:255), thrown from a
 *     setImmediate: uncatchable, fails the test (and would kill a host process).
 *     porsager/postgres#1066, #1154, #1208.
 *   - Deno (1 of 4 runs) and Bun (1 run): after such a crash was survived, the relay's
 *     claim never settled: "Timed out after 20000 ms waiting for the relay to deliver
 *     everything after the kill (round 5; 330/340 in the stream; 10 pending, 0 processing;
 *     1 postgres.js nextWrite crashes; storage calls in flight: claim for 20006 ms; ...)".
 *     The relay does not bound claim/settle, so start() stops ticking for good
 *     (see .tmp/faults/stalled_storage.test.ts).
 * Restarts PostgreSQL: run it deliberately. NO_RESTART=1 runs only the kills;
 * SKIP_KILLS=1 only the restart.
 *   npx bun test ./.tmp/faults/postgres_kill.test.ts -t Postgres
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync, rmSync } from "node:fs";
import postgres from "postgres";
import { createOutbox, OutboxStorageError, type OutboxErrorContext, type TickReport } from "../../../mod.ts";
import { postgresStorage, type PostgresSql, type PostgresTx } from "../../../adapters/postgres/mod.ts";
import { libsqlStorage } from "../../../adapters/libsql/mod.ts";
import { jetstreamPublisher } from "../../../adapters/nats/mod.ts";
import { test } from "../../../tests/harness.ts";
import { natsStream } from "../../../tests/nats_helpers.ts";
import { openSql, PG_URL, uniqueSchema } from "../../../tests/postgres_helpers.ts";
import { openClient, tempDatabase } from "../../../tests/libsql_helpers.ts";
import { checkStream, Ledger, until } from "../../../tests/faults/helpers.ts";

/**
 * postgres.js 3.4.9 throws from a setImmediate callback when a connection closes with a
 * small write still buffered: "TypeError: null is not an object (evaluating
 * 'socket.write')" at nextWrite (connection.js:255). No caller can catch it; by default
 * it kills the process. Upstream: porsager/postgres#1066, #1154, #1208 (fixes proposed in
 * #1168, #1176, #1209, not released). pg_terminate_backend triggers it often under Bun.
 */
function isKnownPostgresJsCrash(error: unknown): boolean {
  const text = `${String(error)}\n${(error as Error)?.stack ?? ""}`;
  return /socket\.write|reading 'write'/.test(text) && /postgres[\\/]src[\\/]connection\.js/.test(text);
}

/**
 * Records what reaches the host while a test runs: unhandled rejections and uncaught
 * exceptions. Apart from the postgres.js defect above (counted and reported, since the
 * host process would die of it), the host must see nothing.
 */
function watchHost() {
  const seen: unknown[] = [];
  let driverCrashes = 0;
  const onRejection = (reason: unknown) => void seen.push(reason);
  const onException = (error: unknown) => {
    if (isKnownPostgresJsCrash(error)) driverCrashes++;
    else seen.push(error);
  };
  process.on("unhandledRejection", onRejection);
  process.on("uncaughtException", onException);
  return {
    seen,
    get driverCrashes() {
      return driverCrashes;
    },
    stop: () => {
      process.off("unhandledRejection", onRejection);
      process.off("uncaughtException", onException);
    },
  };
}

async function pgAccepts(): Promise<boolean> {
  const probe = postgres(PG_URL, { max: 1, connect_timeout: 1, onnotice: () => {} });
  try {
    await probe`select 1`;
    return true;
  } catch {
    return false;
  } finally {
    await probe.end({ timeout: 1 }).catch(() => {});
  }
}

test("faults: the relay's Postgres connections killed 5 times and PostgreSQL restarted mid-run: onError reports, the relay keeps going, nothing lost or doubled", async () => {
  const tag = uniqueSchema("pgkill");
  const schema = tag;
  const admin = openSql(2);
  const relaySql = postgres(PG_URL, { max: 2, onnotice: () => {}, connection: { application_name: tag } });
  const s = await natsStream();
  const host = watchHost();
  const errors: { error: unknown; phase: OutboxErrorContext["phase"]; at: number }[] = [];
  const ticks: { at: number; report: TickReport }[] = [];
  const ledger = new Ledger();
  const writer = createOutbox({ storage: postgresStorage(admin as unknown as PostgresSql, { schema }), publisher: () => {} });
  const inner = jetstreamPublisher(s.js);
  let publishDelay = 0;
  const pendingOps = new Map<number, { op: string; at: number }>();
  let opSeq = 0;
  const base = postgresStorage(relaySql as unknown as PostgresSql, { schema });
  const traced = { ...base } as typeof base;
  for (const op of ["claim", "settle", "cleanup", "stats"] as const) {
    // deno-lint-ignore no-explicit-any
    (traced as any)[op] = async (...args: unknown[]) => {
      const id = opSeq++;
      pendingOps.set(id, { op, at: Date.now() });
      try {
        // deno-lint-ignore no-explicit-any
        return await (base as any)[op](...args);
      } finally {
        pendingOps.delete(id);
      }
    };
  }
  const outbox = createOutbox({
    storage: traced,
    publisher: {
      // Slowed down for the restart phase, so that messages are still waiting when the server goes down.
      async publish(m, c) {
        if (publishDelay > 0) await new Promise((r) => setTimeout(r, publishDelay));
        return await inner.publish(m, c);
      },
    },
    batchSize: 25,
    leaseMs: 2_000,
    retry: { maxAttempts: 1_000, baseDelayMs: 20, maxDelayMs: 500 },
    onError: (error, context) => errors.push({ error, phase: context.phase, at: Date.now() }),
  });
  const inStream = async () => (await s.jsm.streams.info(s.name)).state.messages;
  const write = async (from: number, count: number) => {
    for (let t = from; t < from + count; t++) {
      const batch = Array.from({ length: 10 }, (_, i) => ({ id: `pg-${t}-${i}`, topic: `${s.prefix}.orders`, key: i === 9 ? null : `k${(t + i) % 8}`, payload: { t, i } }));
      const rollback = t % 7 === 3;
      await admin.begin(async (tx) => {
        await writer.enqueue(tx as unknown as PostgresTx, batch);
        if (rollback) throw new Error("rollback");
      }).catch((e) => assert.equal((e as Error).message, "rollback"));
      if (rollback) ledger.rollback(batch);
      else ledger.commit(batch);
    }
  };
  let relay: ReturnType<typeof outbox.start> | null = null;
  try {
    await writer.setup();
    relay = outbox.start({ minIdleMs: 5, maxIdleMs: 100, onTick: (report) => ticks.push({ at: Date.now(), report }) });

    // 1. pg_terminate_backend on every connection of the relay, five times, while it works.
    const killRecoveries: number[] = [];
    for (let round = 0; round < (process.env.SKIP_KILLS ? 0 : 5); round++) {
      console.log(`round ${round + 1}: writing`);
      await write(round * 8, 8);
      console.log(`round ${round + 1}: written`);
      await until("the relay to be publishing", async () => (await inStream()) > 0 && ticks.length > 0);
      const [{ n }] = await admin`select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where application_name = ${tag}` as unknown as [{ n: number }];
      const killedAt = Date.now();
      console.log(`round ${round + 1}: killed ${n}`);
      assert.ok(n >= 1, "the relay had connections to kill");
      const target = ledger.committed.length;
      await until("the relay to deliver everything after the kill", async () => (await inStream()) >= target, 20_000).catch(async (error) => {
        const stats = await writer.stats();
        throw new Error(`${(error as Error).message} (round ${round + 1}; ${await inStream()}/${target} in the stream; ` +
          `${stats.pending} pending, ${stats.processing} processing; ${host.driverCrashes} postgres.js nextWrite crashes; ` +
          `storage calls in flight: ${[...pendingOps.values()].map((p) => `${p.op} for ${Date.now() - p.at} ms`).join(", ") || "none"}; last tick ${ticks.length ? Date.now() - ticks.at(-1)!.at : "never"} ms ago; errors: ${errors.slice(-3).map((e) => String(e.error)).join(" | ")})`);
      });
      killRecoveries.push(Date.now() - killedAt);
    }
    console.log(`[faults] pg_terminate_backend ×5: caught up ${killRecoveries.join(", ")} ms after each kill; ${errors.length} errors reported (${[...new Set(errors.map((e) => e.phase))].join(", ") || "none"})`);

    if (process.env.NO_RESTART) throw new Error("stop before restart");
    // 2. PostgreSQL restarted while 600 messages wait (publishes slowed to 40 ms, so the
    // relay is mid-run when the server goes down). execFile, not execFileSync: the relay
    // must keep running on the event loop during the restart.
    publishDelay = 40;
    const before = await inStream();
    await write(40, 60);
    const target = ledger.committed.length;
    await until("the relay to be publishing the new messages", async () => (await inStream()) > before);
    const version = readdirSync("/etc/postgresql")[0]!;
    const errorsBefore = errors.length;
    const restartAt = Date.now();
    const inStreamAtRestart = await inStream();
    await new Promise<void>((resolve, reject) =>
      execFile("pg_ctlcluster", ["--skip-systemctl-redirect", version, "main", "restart"], { timeout: 60_000 }, (e) => (e ? reject(e) : resolve()))
    );
    const upAt = Date.now();
    await until("PostgreSQL to accept connections again", pgAccepts, 30_000);
    const acceptingAt = Date.now();
    await until("the relay to deliver everything after the restart", async () => (await inStream()) >= target, 30_000).catch(async (error) => {
      throw new Error(`${(error as Error).message} (${await inStream()}/${target}; storage calls in flight: ${[...pendingOps.values()].map((p) => `${p.op} for ${Date.now() - p.at} ms`).join(", ") || "none"}; ${host.driverCrashes} postgres.js nextWrite crashes)`);
    });
    const doneAt = Date.now();
    console.log(
      `[faults] PostgreSQL restart with ${target - inStreamAtRestart} messages still to publish: pg_ctlcluster restart took ${upAt - restartAt} ms; ` +
        `relay caught up ${doneAt - acceptingAt} ms after the server accepted connections again (${doneAt - restartAt} ms after the restart began); ` +
        `${errors.length - errorsBefore} errors reported through onError (${[...new Set(errors.slice(errorsBefore).map((e) => String(e.error).slice(0, 90)))].slice(0, 3).join(" | ")})`,
    );
    assert.ok(relay.running, "the relay loop is still running");
    await relay.stop();
    relay = null;
    checkStream(await s.read(), ledger, "after kills and a restart");
    const stats = await writer.stats();
    assert.equal(stats.pending + stats.processing + stats.dead, 0, "nothing waiting or dead");
    for (const e of errors) assert.ok(e.error instanceof OutboxStorageError || e.phase === "listen", `errors are typed: ${String(e.error)}`);
    assert.deepEqual(host.seen, [], "no unhandled rejection or exception from the outbox reached the host");
    if (host.driverCrashes > 0) {
      console.log(`[faults] postgres.js defect (porsager/postgres#1066): ${host.driverCrashes} uncatchable TypeError(s) from nextWrite after a killed connection; without an uncaughtException handler the host process would have died`);
    }
  } finally {
    host.stop();
    await relay?.stop();
    await until("PostgreSQL to accept connections", pgAccepts, 60_000).catch(() => {});
    await admin.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await Promise.all([admin.end({ timeout: 1 }), relaySql.end({ timeout: 1 })]);
    await s.close();
  }
}, { timeout: 120_000 });

test("faults: a libSQL file whose write lock another writer holds (SQLITE_BUSY): the relay reports, retries and delivers once the lock is gone", async () => {
  const s = await natsStream();
  const { url, dir } = tempDatabase();
  const relayClient = await openClient(url);
  const other = await openClient(url);
  const host = watchHost();
  const errors: unknown[] = [];
  try {
    const outbox = createOutbox({
      storage: libsqlStorage(relayClient, { busyTimeoutMs: 200 }),
      publisher: jetstreamPublisher(s.js),
      onError: (error) => errors.push(error),
    });
    await outbox.setup();
    const ledger = new Ledger();
    const first = Array.from({ length: 50 }, (_, i) => ({ id: `busy-a${i}`, topic: `${s.prefix}.orders`, key: `k${i % 5}`, payload: i }));
    await outbox.enqueue(relayClient, first);
    ledger.commit(first);
    const relay = outbox.start({ minIdleMs: 5, maxIdleMs: 50 });
    let heldFor = 0;
    try {
      await until("the first messages in the stream", async () => (await s.jsm.streams.info(s.name)).state.messages >= 50);
      // Another writer takes the write lock and keeps it while it writes more messages.
      const tx = await other.transaction("write");
      const heldAt = Date.now();
      const second = Array.from({ length: 50 }, (_, i) => ({ id: `busy-b${i}`, topic: `${s.prefix}.orders`, key: `k${i % 5}`, payload: i }));
      await outbox.enqueue(tx, second);
      // A tick that fails on the lock rejects with a typed error instead of hanging.
      await assert.rejects(() => outbox.tick(), (e: unknown) => e instanceof OutboxStorageError && /SQLITE_BUSY|locked/i.test(String((e as Error).message)));
      await until("the running relay to report SQLITE_BUSY through onError", () => errors.length >= 2, 10_000);
      await tx.commit();
      tx.close();
      heldFor = Date.now() - heldAt;
      ledger.commit(second);
      const releasedAt = Date.now();
      await until("the second writer's messages in the stream", async () => (await s.jsm.streams.info(s.name)).state.messages >= 100, 15_000);
      console.log(`[faults] SQLITE_BUSY: lock held ${heldFor} ms, ${errors.length} errors reported through onError, delivered ${Date.now() - releasedAt} ms after the lock was released`);
      assert.ok(relay.running, "the relay loop is still running");
    } finally {
      await relay.stop();
    }
    for (const e of errors) assert.ok(e instanceof OutboxStorageError && /SQLITE_BUSY|locked/i.test(e.message), `typed busy error: ${String(e)}`);
    checkStream(await s.read(), ledger, "after SQLITE_BUSY");
    assert.deepEqual(host.seen, [], "no unhandled rejection reached the host");
  } finally {
    host.stop();
    relayClient.close();
    other.close();
    rmSync(dir, { recursive: true, force: true });
    await s.close();
  }
}, { timeout: 60_000 });
