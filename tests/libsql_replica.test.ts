/**
 * Turso embedded replicas: `@libsql/client` with `syncUrl`, a local replica file whose
 * plain reads are local and whose writes the native driver (`libsql`) forwards to the
 * primary. The primary here is a private sqld (tests/sqld_helpers.mjs): its HTTP port
 * also serves the replication and write-delegation RPCs, so nothing more is needed.
 *
 * What the tests show (README, "Turso embedded replicas"):
 *
 * - Everything the relay runs is a write: the claim (`BEGIN IMMEDIATE`, UPDATE, the
 *   read-back SELECT by token, COMMIT), the settle and the cleanup. The driver sends a
 *   transaction to the primary from its BEGIN on, reads included, so the claim's
 *   read-back reads the primary, and a write transaction on a replica reads its own
 *   uncommitted writes. A relay on a replica that has not synced claims what others
 *   enqueued: at-least-once and per-key order hold as over HTTP.
 * - Plain reads (`inspect()`) read the local file: stale until `sync()` (or the
 *   client's next write, after which the driver syncs: read-your-writes).
 * - The embedded client is synchronous: a statement sent to the primary blocks the
 *   thread. A relay tick on a replica while an interactive write transaction of the
 *   same process is open waits on the primary's lock with the thread blocked, so that
 *   transaction cannot commit: the primary times it out after 5 s. A relay on an HTTP
 *   client waits without blocking.
 */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { type Client, createClient, type Transaction } from "@libsql/client";
import { createOutbox, memoryPublisher, type OutboxRecord } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { runtime, test } from "./harness.ts";
import { startSqld } from "./sqld_helpers.mjs";

/** A private primary, embedded replicas of it (a file each) and an HTTP client to it. */
interface Primary {
  /** The primary's URL (the replicas' `syncUrl`). */
  url: string;
  /** The replica files' folder. */
  dir: string;
  /** A new embedded replica in its own file; not synced yet. */
  replica(name: string): Client;
  /** An HTTP client to the primary. */
  http: Client;
}

async function withPrimary(body: (p: Primary) => Promise<void>): Promise<void> {
  const sqld = await startSqld();
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-replica-"));
  const clients: Client[] = [];
  const open = (config: Parameters<typeof createClient>[0]) => {
    const client = createClient(config);
    clients.push(client);
    return client;
  };
  try {
    await body({
      url: sqld.url,
      dir,
      replica: (name) => open({ url: `file:${join(dir, name)}`, syncUrl: sqld.url }),
      http: open({ url: sqld.url }),
    });
  } finally {
    for (const client of clients) client.close();
    await sqld.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Rows of the outbox table in the client's own view (a plain read: local on a replica). */
const localRows = async (client: Client | Transaction, where = "1 = 1") =>
  Number((await client.execute(`SELECT count(*) AS n FROM outbox WHERE ${where}`)).rows[0]!.n);

/** Ids in publish order, grouped by key. */
function byKey(messages: readonly { id: string; key: string | null }[]): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  for (const m of messages) keys.set(m.key ?? "", [...(keys.get(m.key ?? "") ?? []), m.id]);
  return keys;
}

test(
  "libsql embedded replica: enqueued through a replica (transaction, batch, client), relayed through a second replica and an HTTP client: each committed message once, in key order, nothing rolled back",
  () =>
    withPrimary(async ({ replica, http }) => {
      const app = replica("app.db");
      await app.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)");
      const producer = createOutbox({ storage: libsqlStorage(app), publisher: memoryPublisher() });
      await producer.setup();
      const published: OutboxRecord[] = [];
      const publisher = (m: OutboxRecord) => {
        published.push(m);
      };
      const relays = [
        createOutbox({ storage: libsqlStorage(replica("relay.db")), publisher, batchSize: 7 }),
        createOutbox({ storage: libsqlStorage(http), publisher, batchSize: 5 }),
      ];
      const relayed = [0, 0];

      const committed: { id: string; key: string }[] = [];
      let orders = 0;
      for (let i = 0; i < 60; i++) {
        const key = `k${i % 4}`;
        const message = (id: string) => ({ id, topic: "orders.created", key, payload: { i } });
        switch (i % 5) {
          case 0: { // an interactive transaction on the replica, committed
            const tx = await app.transaction("write");
            await tx.execute({ sql: "INSERT INTO orders (id) VALUES (?)", args: [`o${i}`] });
            await producer.enqueue(tx, message(`m${i}`));
            await tx.commit();
            tx.close();
            committed.push({ id: `m${i}`, key });
            orders++;
            break;
          }
          case 1: { // rolled back
            const tx = await app.transaction("write");
            await tx.execute({ sql: "INSERT INTO orders (id) VALUES (?)", args: [`rb${i}`] });
            await producer.enqueue(tx, message(`rb${i}`));
            await tx.rollback();
            tx.close();
            break;
          }
          case 2: // statements() in one client.batch() with the order
            await app.batch([
              { sql: "INSERT INTO orders (id) VALUES (?)", args: [`o${i}`] },
              ...producer.statements(message(`m${i}`)),
            ], "write");
            committed.push({ id: `m${i}`, key });
            orders++;
            break;
          case 3: // a batch that fails after the message's insert: nothing of it stays
            await assert.rejects(() =>
              app.batch([
                ...producer.statements(message(`fb${i}`)),
                { sql: "INSERT INTO orders (id) VALUES (?)", args: ["o0"] },
              ], "write")
            );
            break;
          default: // the client itself: the insert is its own transaction
            await producer.enqueue(app, message(`m${i}`));
            committed.push({ id: `m${i}`, key });
        }
        // Relays take turns while messages are still being enqueued.
        if (i % 6 === 5) {
          const r = (i / 6) % 2 < 1 ? 0 : 1;
          relayed[r]! += (await relays[r]!.tick()).published;
        }
      }
      for (let idle = 0; idle < 2;) {
        for (let r = 0; r < 2; r++) {
          const report = await relays[r]!.tick();
          relayed[r]! += report.published;
          idle = report.claimed === 0 ? idle + 1 : 0;
        }
      }

      assert.ok(relayed[0]! > 0 && relayed[1]! > 0, `both relays published (${relayed})`);
      assert.deepEqual(published.map((m) => m.id).sort(), committed.map((m) => m.id).sort(), "each once");
      assert.deepEqual(byKey(published), byKey(committed), "in enqueue order per key");
      assert.equal(Number((await http.execute("SELECT count(*) AS n FROM orders")).rows[0]!.n), orders);
      // The producer's replica is up to date after sync(): nothing left.
      await app.sync();
      const stats = await producer.stats();
      assert.equal(stats.pending + stats.processing + stats.dead, 0);
      assert.deepEqual(await producer.inspect(), []);
    }),
  { timeout: 60_000 },
);

test(
  "libsql embedded replica: the claim and its read-back run on the primary, so a relay replica that never synced the messages claims them; a write transaction reads its own writes",
  () =>
    withPrimary(async ({ replica, http }) => {
      const app = replica("app.db");
      const producer = createOutbox({ storage: libsqlStorage(app), publisher: memoryPublisher() });
      await producer.setup();
      const relayClient = replica("relay.db");
      await relayClient.sync(); // the empty table, and nothing after it
      const pub = memoryPublisher();
      const relay = createOutbox({ storage: libsqlStorage(relayClient), publisher: pub });
      await producer.enqueue(app, ["a", "b", "c"].map((id) => ({ id, topic: "t", key: "k", payload: id })));
      assert.equal(await localRows(relayClient), 0, "the relay's replica has not seen the messages");
      const report = await relay.tick();
      assert.equal(report.claimed, 3, "the read-back by token read the primary, not the empty local copy");
      assert.deepEqual(pub.messages.map((m) => m.id), ["a", "b", "c"]);

      // A transaction on a replica runs on the primary from its BEGIN: it reads its own
      // uncommitted insert, which no other client sees.
      const tx = await app.transaction("write");
      await producer.enqueue(tx, { id: "own", topic: "t", payload: 1 });
      assert.equal(await localRows(tx, "id = 'own'"), 1);
      assert.equal(await localRows(http, "id = 'own'"), 0);
      await tx.rollback();
      tx.close();
      assert.equal((await relay.tick()).claimed, 0);
    }),
);

test(
  "libsql embedded replica: inspect() reads the local copy, stale until sync(); stats() and inspect() agree with the primary after it",
  () =>
    withPrimary(async ({ replica, http }) => {
      const app = replica("app.db");
      const producer = createOutbox({ storage: libsqlStorage(app), publisher: memoryPublisher() });
      await producer.setup();
      await producer.enqueue(app, [{ id: "x", topic: "t", payload: 1 }, { id: "y", topic: "t", payload: 2 }]);
      // The driver synced after its own write: the replica sees both messages.
      assert.deepEqual((await producer.inspect()).map((row) => `${row.id}:${row.status}`), ["x:pending", "y:pending"]);
      const relay = createOutbox({ storage: libsqlStorage(http), publisher: memoryPublisher() });
      assert.equal((await relay.tick()).published, 2);
      // Published (and deleted) on the primary; the replica's file still has them.
      assert.deepEqual((await producer.inspect()).map((row) => `${row.id}:${row.status}`), ["x:pending", "y:pending"]);
      await app.sync();
      assert.deepEqual(await producer.inspect(), []);
      const stats = await producer.stats();
      assert.deepEqual([stats.pending, stats.processing, stats.published, stats.dead], [0, 0, 0, 0]);
    }),
);

test("libsql embedded replica: start() on a replica publishes what another replica enqueues, with no sync()", () =>
  withPrimary(async ({ replica }) => {
    const app = replica("app.db");
    const producer = createOutbox({ storage: libsqlStorage(app), publisher: memoryPublisher() });
    await producer.setup();
    const pub = memoryPublisher();
    // Idle polls are claims, so writes: they run on the primary and see new messages.
    const handle = createOutbox({ storage: libsqlStorage(replica("relay.db")), publisher: pub })
      .start({ minIdleMs: 2, maxIdleMs: 20 });
    try {
      await new Promise((resolve) => setTimeout(resolve, 50));
      for (let i = 0; i < 5; i++) await producer.enqueue(app, { id: `m${i}`, topic: "t", key: "k", payload: i });
      const deadline = Date.now() + 10_000;
      while (pub.messages.length < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    } finally {
      await handle.stop();
    }
    assert.deepEqual(pub.messages.map((m) => m.id), ["m0", "m1", "m2", "m3", "m4"]);
  }));

test(
  "libsql embedded replica: a relay tick on a replica blocks the thread on the primary's lock, so an open write transaction of the same process is timed out after 5 s; a relay on an HTTP client waits for it to commit",
  () =>
    withPrimary(async ({ replica, http }) => {
      const app = replica("app.db");
      const producer = createOutbox({ storage: libsqlStorage(app), publisher: memoryPublisher() });
      await producer.setup();
      const pub = memoryPublisher();
      const viaHttp = createOutbox({ storage: libsqlStorage(http), publisher: pub });
      const viaReplica = createOutbox({ storage: libsqlStorage(replica("relay.db")), publisher: pub });
      await viaHttp.tick(); // first ticks run retention cleanup: out of the way
      await viaReplica.tick();

      /** Opens a write transaction, enqueues one message, commits 100 ms later; says how it went. */
      const commitSoon = async (id: string) => {
        const tx = await app.transaction("write");
        try {
          await producer.enqueue(tx, { id, topic: "t", payload: id });
          await new Promise((resolve) => setTimeout(resolve, 100));
          await tx.commit();
          return "committed";
        } catch (error) {
          return String(error);
        } finally {
          tx.close();
        }
      };

      let outcome = commitSoon("over-http");
      let started = Date.now();
      let report = await viaHttp.tick();
      assert.equal(await outcome, "committed");
      assert.ok(Date.now() - started < 4_000, "the HTTP relay's claim waited for the commit, no more");
      // The claim got the lock once the transaction committed: it saw the message.
      assert.equal(report.published, 1);

      outcome = commitSoon("over-replica");
      started = Date.now();
      report = await viaReplica.tick();
      const waitedMs = Date.now() - started;
      assert.ok(
        waitedMs >= 4_500,
        `the claim held the thread until the primary gave up the transaction (${waitedMs} ms)`,
      );
      assert.equal(report.claimed, 0);
      assert.match(await outcome, /timed-out/i, "the primary rolled the transaction back");
      assert.equal((await viaReplica.tick()).claimed, 0);
      assert.deepEqual(pub.messages.map((m) => m.id), ["over-http"]);
    }),
  { timeout: 30_000 },
);

test(
  "libsql embedded replica: two relays in two processes, each on its own replica, race on the same keys while a third replica enqueues: each committed message once, in key order",
  () =>
    withPrimary(async ({ url, dir, replica, http }) => {
      const app = replica("app.db");
      const producer = createOutbox({ storage: libsqlStorage(app), publisher: memoryPublisher() });
      await producer.setup();
      const stopFile = join(dir, "stop");
      const script = "tests/fixtures/replica_relay.ts";
      const execPath = process.execPath;
      const children = ["relay-a", "relay-b"].map((relayId) => {
        const args = [
          ...(runtime === "deno" ? ["run", "-A"] : []),
          script,
          url,
          join(dir, `${relayId}.db`),
          stopFile,
          relayId,
        ];
        const child = spawn(execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
        let stdout = "";
        let stderr = "";
        child.stdout.on("data", (chunk: Uint8Array) => (stdout += String(chunk)));
        child.stderr.on("data", (chunk: Uint8Array) => (stderr += String(chunk)));
        const exited = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) =>
          child.on("close", (code: number | null) => resolve({ code, stdout, stderr }))
        );
        return { child, exited };
      });
      try {
        const committed: { id: string; key: string }[] = [];
        for (let i = 0; i < 120; i++) {
          const key = `k${i % 3}`;
          const m = { id: `m${i}`, topic: "t", key, payload: i };
          if (i % 10 === 9) { // rolled back
            const tx = await app.transaction("write");
            await producer.enqueue(tx, { ...m, id: `rb${i}` });
            await tx.rollback();
            tx.close();
          } else if (i % 2 === 0) {
            await app.batch(producer.statements(m), "write");
            committed.push(m);
          } else {
            const tx = await app.transaction("write");
            await producer.enqueue(tx, m);
            await tx.commit();
            tx.close();
            committed.push(m);
          }
          if (i % 20 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
        }
        // Done when the primary has nothing unsettled (published rows are deleted).
        const deadline = Date.now() + 40_000;
        while (Number((await http.execute("SELECT count(*) AS n FROM outbox")).rows[0]!.n) > 0) {
          assert.ok(Date.now() < deadline, "the relays drained the outbox within 40 s");
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        writeFileSync(stopFile, "");
        const results = await Promise.all(children.map((c) => c.exited));
        for (const r of results) assert.equal(r.code, 0, r.stderr);
        const lines = results.flatMap((r) => r.stdout.split("\n").filter((line) => line !== ""));
        const log = lines.map((line) => JSON.parse(line) as { id: string; key: string; relay: string; at: number })
          .sort((a, b) => a.at - b.at);
        const perRelay = new Set(log.map((p) => p.relay));
        assert.equal(perRelay.size, 2, "both relays published");
        assert.deepEqual(log.map((p) => p.id).sort(), committed.map((m) => m.id).sort(), "each once");
        assert.deepEqual(byKey(log), byKey(committed), "in enqueue order per key, across the two processes");
      } finally {
        writeFileSync(stopFile, "");
        for (const { child } of children) {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        }
      }
    }),
  { timeout: 60_000 },
);
