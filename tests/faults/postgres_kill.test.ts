/**
 * Fault: the relay's Postgres connections killed with pg_terminate_backend five times
 * while it works, then PostgreSQL restarted (pg_ctlcluster) with 600 messages waiting.
 * The relay reports typed errors through onError, keeps running, and delivers every
 * committed message once, in key order; nothing reaches the host process as an uncaught
 * exception (postgres.js 3.4 would throw one from a setImmediate without the adapter's
 * workaround in adapters/postgres/transaction.ts).
 *
 * It restarts the machine's PostgreSQL: the other suites' connections recover, but run
 * nothing against PostgreSQL beside it. NO_RESTART=1 runs only the kills; SKIP_KILLS=1
 * only the restart.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import postgres from "postgres";
import { createOutbox, type OutboxErrorContext, OutboxStorageError, type TickReport } from "../../mod.ts";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../../adapters/postgres/mod.ts";
import { postgresNames } from "../../adapters/postgres/sql.ts";
import { jetstreamPublisher } from "../../adapters/nats/mod.ts";
import { test } from "../harness.ts";
import { natsStream } from "../nats_helpers.ts";
import { openSql, PG_URL, uniqueSchema } from "../postgres_helpers.ts";
import { checkStream, Ledger, until, watchHost } from "./helpers.ts";

/**
 * The postgres.js 3.4.9 defect the adapter works around (adapters/postgres/transaction.ts):
 * ROLLBACK/COMMIT written to a closed socket throws from a setImmediate ("TypeError:
 * Cannot read properties of null (reading 'write')" at nextWrite, connection.js), which
 * no caller can catch and which kills the process. Named apart in the failure message,
 * since it means the workaround no longer holds.
 */
function isNextWriteCrash(error: unknown): boolean {
  const text = `${String(error)}\n${(error as Error)?.stack ?? ""}`;
  return /socket\.write|reading 'write'/.test(text) && /postgres[\\/]src[\\/]connection\.js/.test(text);
}

/** How many of the errors that reached the host are that postgres.js crash. */
const driverCrashes = (seen: readonly unknown[]) => seen.filter(isNextWriteCrash).length;

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

/** The test body; `setPhase` names the step in progress, for the watchdog below. */
async function killAndRestart(setPhase: (phase: string) => void): Promise<void> {
  const tag = uniqueSchema("pgkill");
  const schema = tag;
  const admin = openSql(2);
  const relaySql = postgres(PG_URL, { max: 2, onnotice: () => {}, connection: { application_name: tag } });
  const s = await natsStream();
  const host = watchHost();
  const errors: { error: unknown; phase: OutboxErrorContext["phase"]; at: number }[] = [];
  const ticks: { at: number; report: TickReport }[] = [];
  const ledger = new Ledger();
  const writer = createOutbox({
    storage: postgresStorage(admin as unknown as PostgresSql, { schema }),
    publisher: () => {},
  });
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
      const batch = Array.from(
        { length: 10 },
        (_, i) => ({
          id: `pg-${t}-${i}`,
          topic: `${s.prefix}.orders`,
          key: i === 9 ? null : `k${(t + i) % 8}`,
          payload: { t, i },
        }),
      );
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
    let kills = 0;
    for (let round = 0; round < (process.env.SKIP_KILLS ? 0 : 5); round++) {
      setPhase(`kill round ${round + 1}`);
      const published = await inStream();
      await write(round * 8, 8);
      await until("the relay to be publishing this round's messages", async () => (await inStream()) > published);
      // Kill while the relay holds connections; between errors it may hold none for a moment.
      let killed = 0;
      await until("a relay connection to kill", async () => {
        const [{ n }] =
          await admin`select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where application_name = ${tag}` as unknown as [
            { n: number },
          ];
        killed = n;
        return n > 0;
      });
      const killedAt = Date.now();
      kills += killed;
      const target = ledger.committed.length;
      await until("the relay to deliver everything after the kill", async () => (await inStream()) >= target, 20_000)
        .catch(async (error) => {
          const stats = await writer.stats();
          throw new Error(
            `${(error as Error).message} (round ${round + 1}; ${await inStream()}/${target} in the stream; ` +
              `${stats.pending} pending, ${stats.processing} processing; ${
                driverCrashes(host.seen)
              } postgres.js nextWrite crashes; ` +
              `storage calls in flight: ${
                [...pendingOps.values()].map((p) => `${p.op} for ${Date.now() - p.at} ms`).join(", ") || "none"
              }; last tick ${ticks.length ? Date.now() - ticks.at(-1)!.at : "never"} ms ago; errors: ${
                errors.slice(-3).map((e) => String(e.error)).join(" | ")
              })`,
          );
        });
      killRecoveries.push(Date.now() - killedAt);
    }
    console.log(
      `[faults] pg_terminate_backend ×5 (${kills} connections): caught up ${
        killRecoveries.join(", ")
      } ms after each kill; ${errors.length} errors reported (${
        [...new Set(errors.map((e) => e.phase))].join(", ") || "none"
      })`,
    );

    if (process.env.NO_RESTART) throw new Error("stop before restart");
    // 2. PostgreSQL restarted while 600 messages wait (publishes slowed to 40 ms, so the
    // relay is mid-run when the server goes down). execFile, not execFileSync: the relay
    // must keep running on the event loop during the restart.
    publishDelay = 40;
    const before = await inStream();
    setPhase("write 600");
    await write(40, 60);
    const target = ledger.committed.length;
    await until("the relay to be publishing the new messages", async () => (await inStream()) > before);
    setPhase("restart");
    const version = readdirSync("/etc/postgresql")[0]!;
    const errorsBefore = errors.length;
    const restartAt = Date.now();
    const inStreamAtRestart = await inStream();
    await new Promise<void>((resolve, reject) =>
      execFile("pg_ctlcluster", ["--skip-systemctl-redirect", "--mode", "fast", version, "main", "restart"], {
        timeout: 60_000,
      }, (e) => (e ? reject(e) : resolve()))
    );
    const upAt = Date.now();
    setPhase("wait accept");
    await until("PostgreSQL to accept connections again", pgAccepts, 30_000);
    const acceptingAt = Date.now();
    setPhase("wait deliver");
    await until("the relay to deliver everything after the restart", async () => (await inStream()) >= target, 30_000)
      .catch(async (error) => {
        throw new Error(
          `${(error as Error).message} (${await inStream()}/${target}; storage calls in flight: ${
            [...pendingOps.values()].map((p) => `${p.op} for ${Date.now() - p.at} ms`).join(", ") || "none"
          }; ${driverCrashes(host.seen)} postgres.js nextWrite crashes)`,
        );
      });
    const doneAt = Date.now();
    console.log(
      `[faults] PostgreSQL restart with ${
        target - inStreamAtRestart
      } messages still to publish: pg_ctlcluster restart took ${upAt - restartAt} ms; ` +
        `relay caught up ${doneAt - acceptingAt} ms after the server accepted connections again (${
          doneAt - restartAt
        } ms after the restart began); ` +
        `${errors.length - errorsBefore} errors reported through onError (${
          [...new Set(errors.slice(errorsBefore).map((e) => String(e.error).slice(0, 90)))].slice(0, 3).join(" | ")
        })`,
    );
    assert.ok(relay.running, "the relay loop is still running");
    setPhase("relay.stop");
    await relay.stop();
    relay = null;
    setPhase("checkStream");
    checkStream(await s.read(), ledger, "after kills and a restart");
    setPhase("stats");
    const stats = await writer.stats();
    assert.equal(stats.pending + stats.processing + stats.dead, 0, "nothing waiting or dead");
    for (const e of errors) {
      assert.ok(e.error instanceof OutboxStorageError || e.phase === "listen", `errors are typed: ${String(e.error)}`);
    }
    assert.deepEqual(
      host.seen.map(String),
      [],
      `nothing reached the host as an uncaught exception or unhandled rejection (${
        driverCrashes(host.seen)
      } of them the postgres.js nextWrite crash)`,
    );
  } finally {
    setPhase("finally");
    host.stop();
    await relay?.stop();
    await until("PostgreSQL to accept connections", pgAccepts, 60_000).catch(() => {});
    await admin.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    setPhase("end");
    await Promise.all([admin.end({ timeout: 1 }), relaySql.end({ timeout: 1 })]);
    await s.close();
  }
}

test(
  "faults: the relay's Postgres connections killed 5 times and PostgreSQL restarted mid-run: onError reports, the relay keeps going, nothing lost or doubled",
  async () => {
    // Every wait inside has its own deadline, but a driver call can hang without one; the
    // watchdog turns that into a failure that names the step instead of a bare timeout.
    let phase = "start";
    let timer: ReturnType<typeof setTimeout> | undefined;
    const watchdog = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`stuck for 150 s, in step: ${phase}`)), 150_000);
    });
    try {
      await Promise.race([killAndRestart((p) => (phase = p)), watchdog]);
    } finally {
      clearTimeout(timer);
    }
  },
  { timeout: 160_000 },
);

/**
 * A relay client whose sockets the test can reach: postgres.js's `socket` option with a
 * plain TCP connection to the real server. Destroying one with an ECONNRESET error is
 * the fault a network reset produces, on demand.
 */
function resettableSql(tag: string) {
  const sockets: Socket[] = [];
  const url = new URL(PG_URL);
  // postgres.js accepts a socket factory (its Workers support); its types omit it.
  const options = {
    max: 1,
    // A connection left unable to start (the second postgres.js defect) fails fast.
    connect_timeout: 3,
    onnotice: () => {},
    connection: { application_name: tag },
    socket: () =>
      new Promise<Socket>((resolve, reject) => {
        const socket = createConnection(Number(url.port || 5432), url.hostname);
        socket.once("connect", () => {
          sockets.push(socket);
          resolve(socket);
        });
        socket.once("error", reject);
      }),
  };
  const sql = postgres(PG_URL, options);
  return {
    sql,
    reset() {
      const error = Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" });
      for (const socket of sockets.splice(0)) socket.destroy(error);
    },
  };
}

/** Gives a callback postgres.js scheduled with setImmediate the chance to run. */
async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setTimeout(resolve, 0));
}

// Both claim paths: the claim function (one statement) and, on a table without it, the
// claim transaction, the path the postgres.js workaround protects.
for (const fault of ["reset", "terminate"] as const) {
  for (const path of ["function", "transaction"] as const) {
    test(
      `faults: a claim (${path}) whose connection dies while it waits on the server (${
        fault === "reset" ? "ECONNRESET" : "pg_terminate_backend"
      }) rejects with a typed error, nothing reaches the host, and the next claim works`,
      async () => {
        const schema = uniqueSchema("pgtx");
        const admin = openSql(2);
        const relay = resettableSql(schema);
        const host = watchHost();
        try {
          const storage = postgresStorage(relay.sql as unknown as PostgresSql, { schema });
          await storage.setup();
          if (path === "transaction") {
            await admin.unsafe(`DROP FUNCTION ${postgresNames(schema, "outbox").claimFunction}`);
          }
          const writer = createOutbox({
            storage: postgresStorage(admin as unknown as PostgresSql, { schema }),
            publisher: () => {},
          });
          await writer.enqueue(admin as unknown as PostgresTx, { topic: "t", key: "k", payload: 1 });
          const lease = 60_000;
          const lostClaimAt = Date.now();
          const claimRequest = (now = Date.now()) => ({
            now,
            limit: 10,
            token: crypto.randomUUID(),
            lockedUntil: now + lease,
            clock: "relay" as const,
          });

          // Another session holds the table, so the claim is waiting on the server (in its
          // transaction, on that path) when its connection dies. (Claims take the claim lock
          // in shared mode: holding that would not make them wait.)
          let release!: () => void;
          const released = new Promise<void>((resolve) => (release = resolve));
          let locked!: () => void;
          const lockHeld = new Promise<void>((resolve) => (locked = resolve));
          const holder = admin.begin(async (tx) => {
            await tx.unsafe(`LOCK TABLE ${postgresNames(schema, "outbox").qualified} IN ACCESS EXCLUSIVE MODE`);
            locked();
            await released;
          });
          await lockHeld;
          const claim = storage.claim(claimRequest(lostClaimAt));
          const outcome = claim.then(() => "claimed", (error: unknown) => error);
          await until("the claim to wait for the lock", async () => {
            const rows =
              await admin`select 1 from pg_stat_activity where application_name = ${schema} and wait_event_type = 'Lock'`;
            return rows.length === 1;
          });
          if (fault === "reset") relay.reset();
          else await admin`select pg_terminate_backend(pid) from pg_stat_activity where application_name = ${schema}`;
          const error = await outcome;
          release();
          await holder;
          await turns();
          assert.ok(error instanceof OutboxStorageError, `typed error: ${String(error)}`);
          assert.match(error.message, /Could not claim messages/);
          assert.deepEqual(
            host.seen.map(String),
            [],
            `nothing reached the host (${driverCrashes(host.seen)} postgres.js nextWrite crashes)`,
          );

          // The client recovers on a fresh connection. After a FATAL, postgres.js 3.4 can hand
          // the stale error to the first query of the new connection, so one more attempt is
          // allowed; a connection left unable to start would fail with CONNECT_TIMEOUT instead.
          // The claims run at a clock past the lost claim's lease: with ECONNRESET on the
          // function path the server, which does not notice the client is gone while it waits
          // for the lock, then runs and commits the claim; its row comes back after the lease.
          const failures: string[] = [];
          let rows: { attempts: number }[] = [];
          for (let attempt = 0; attempt < 3 && rows.length === 0; attempt++) {
            rows = await storage.claim(claimRequest(lostClaimAt + lease + 1)).catch((e: Error) => {
              failures.push(String((e.cause as { code?: string })?.code ?? e.message));
              return [];
            });
          }
          assert.equal(rows.length, 1, `a later claim takes the row (failures: ${failures.join(", ") || "none"})`);
          assert.ok(
            failures.length <= 1 && !failures.includes("CONNECT_TIMEOUT"),
            `recovered at once: ${failures.join(", ")}`,
          );
          const committedLostClaim = path === "function" && fault === "reset";
          assert.equal(
            rows[0]!.attempts,
            committedLostClaim ? 2 : 1,
            committedLostClaim
              ? "the claim the client never heard back from was committed and counted"
              : "the lost claim was rolled back (or never ran)",
          );
        } finally {
          host.stop();
          await admin.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
          await Promise.all([admin.end({ timeout: 1 }), relay.sql.end({ timeout: 1 })]);
        }
      },
      { timeout: 30_000 },
    );
  }
}
