/**
 * Fault: the Redis server stalls (SIGSTOP, SIGCONT), then is SIGKILLed and started
 * again, while a relay (`start()`) publishes 2,000 keyed messages from libSQL into a
 * Redis stream.
 *
 * The test runs its own redis-server (a free port, its own directory) with the AOF on
 * and `appendfsync always`, so an acknowledged XADD survives the kill: with the default
 * `everysec`, a crash may lose up to a second of entries Redis already acknowledged,
 * which no publisher can detect (the docs say so). Commands in flight at the kill fail
 * or time out and are retried; those node-redis queued while offline run after the
 * reconnect, and their retries then find the dedup key. The stream is read back: every
 * committed message once, each key's messages in enqueue order, nothing dead.
 */

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createOutbox, type OutboxRecord, type PublishContext, type Publisher } from "../../mod.ts";
import { libsqlStorage } from "../../adapters/libsql/mod.ts";
import { type RedisStreamsClient, redisStreamsPublisher } from "../../adapters/redis/mod.ts";
import { test } from "../harness.ts";
import { openClient, tempDatabase } from "../libsql_helpers.ts";
import { openRedis, readEntries, type Redis } from "../redis_helpers.ts";
import { checkStream, freePort, Ledger, portOpen, stopProcess, until } from "./helpers.ts";

const TOTAL = 2_000;
const KEYS = 16;
const WRITE_BATCH = 25;

/** A private redis-server on `port` whose data (AOF, fsync per write) lives in `dir`. */
async function startRedis(port: number, dir: string): Promise<ChildProcess> {
  const server = spawn("/usr/bin/redis-server", [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--dir",
    dir,
  ], { stdio: "ignore" });
  try {
    await until(`redis-server to listen on port ${port}`, () => portOpen(port));
  } catch (error) {
    await stopProcess(server, "SIGKILL");
    throw error;
  }
  return server;
}

test(
  "redis: a stalled (SIGSTOP) then SIGKILLed and restarted Redis under a running relay: nothing lost, nothing stored twice, key order kept",
  async () => {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "x-outbox-redis-"));
    const db = tempDatabase();
    let server: ChildProcess | null = await startRedis(port, dir);
    const libsql = await openClient(db.url);
    const clientErrors: unknown[] = [];
    let redis: Redis | null = null;
    let relay: { stop(): Promise<void> } | null = null;
    try {
      redis = await openRedis(`redis://127.0.0.1:${port}`, clientErrors);
      const conn = redis;
      const stream = "orders";
      // Counts the script's replies: [0, id] is a publish the dedup key turned away.
      let deduped = 0;
      const counting: RedisStreamsClient = {
        scriptLoad: (script) => conn.scriptLoad(script),
        evalSha: async (sha, options) => {
          const reply = await conn.evalSha(sha, options) as unknown[];
          if (Number(reply[0]) === 0) deduped++;
          return reply;
        },
      };
      const inner = redisStreamsPublisher(counting, { timeoutMs: 500 });
      let failed = 0;
      let lastFailureAt = 0;
      const publisher: Publisher = {
        publish: (m: OutboxRecord, c: PublishContext) => inner.publish(m, c),
        async publishRun(messages, context) {
          const outcomes = await inner.publishRun!(messages, context);
          for (const o of outcomes) {
            if (!o.ok) {
              failed++;
              lastFailureAt = Date.now();
            }
          }
          return outcomes;
        },
      };
      const errors: unknown[] = [];
      const outbox = createOutbox({
        storage: libsqlStorage(libsql),
        publisher,
        batchSize: 100,
        leaseMs: 5_000,
        retry: { maxAttempts: 1_000, baseDelayMs: 20, maxDelayMs: 200, jitter: 0.2 },
        onError: (e) => errors.push(e),
      });
      await outbox.setup();
      let dead = 0;
      relay = outbox.start({ minIdleMs: 2, maxIdleMs: 20, onTick: (r) => void (dead += r.dead) });

      const ledger = new Ledger();
      const write = async (from: number, to: number) => {
        for (let n = from; n < to; n += WRITE_BATCH) {
          const batch = Array.from({ length: Math.min(WRITE_BATCH, to - n) }, (_, i) => ({
            id: `rr-${n + i}`,
            topic: stream,
            key: `k${(n + i) % KEYS}`,
            payload: { n: n + i },
          }));
          await outbox.enqueue(libsql, batch);
          ledger.commit(batch);
        }
      };
      const length = () => conn.xLen(stream);

      // A third of the messages, then a stall while the relay is busy with the rest:
      // SIGSTOP until publishes time out, then SIGCONT. The timed-out scripts still sit
      // in the socket and run on SIGCONT; their retries, queued behind them, find the
      // dedup keys. This is the crash-before-settle case, driven by a stalled server.
      await write(0, Math.floor(TOTAL / 3));
      const writing = write(Math.floor(TOTAL / 3), TOTAL);
      await until("a sixth of the messages in the stream", async () => (await length()) >= TOTAL / 6, 30_000);
      const stoppedAt = Date.now();
      process.kill(server.pid!, "SIGSTOP");
      try {
        await until("a publish to time out while Redis is stopped", () => lastFailureAt >= stoppedAt, 30_000);
      } finally {
        process.kill(server.pid!, "SIGCONT");
      }
      await until("a retry turned away by the dedup key", () => deduped > 0, 30_000);
      const dedupedInStall = deduped;
      // Then the kill, with the relay still busy.
      await until("a third of the messages in the stream", async () => (await length()) >= TOTAL / 3, 30_000);
      const killedAt = Date.now();
      const atKill = await length().catch(() => -1);
      await stopProcess(server, "SIGKILL");
      server = null;
      await until("a publish to fail while Redis is down", () => lastFailureAt >= killedAt, 30_000);
      server = await startRedis(port, dir);
      const restartedAt = Date.now();
      await writing;
      await until("every message in the stream", async () => (await length()) >= TOTAL, 60_000);
      const recoveredAt = Date.now();
      await relay.stop();
      relay = null;

      const entries = await readEntries(conn, stream);
      checkStream(entries.map((e, seq) => ({ ...e, seq })), ledger, "redis restart");
      assert.equal(entries.length, TOTAL, "every message stored once");
      assert.equal(dead, 0, "nothing went dead");
      const stats = await outbox.stats();
      assert.equal(stats.pending + stats.processing + stats.dead, 0, JSON.stringify(stats));
      console.log(
        `redis restart: ${TOTAL} messages over ${KEYS} keys; killed with ${atKill} in the stream; ` +
          `down ${restartedAt - killedAt} ms; all stored ${recoveredAt - restartedAt} ms after the restart; ` +
          `${failed} failed attempts retried; ${deduped} re-publishes turned away by the dedup key ` +
          `(${dedupedInStall} after the stall); ` +
          `${entries.length} entries, 0 duplicates`,
      );
    } finally {
      await relay?.stop();
      redis?.destroy();
      if (server) await stopProcess(server, "SIGKILL");
      libsql.close();
      rmSync(db.dir, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  },
  { timeout: 120_000 },
);
