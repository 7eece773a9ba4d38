/**
 * Fault 1: a relay process killed with SIGKILL in the middle of a batch. Its claimed
 * rows stay leased (`processing`) until the lease ends; then a surviving relay takes
 * them and finishes the batch. Messages the dead relay had already sent are sent again
 * and dropped by JetStream's dedup window, so the stream holds each message once, in
 * key order. Prints the time to recovery for each kill.
 */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createOutbox, type OutboxRecord, type PublishContext } from "../../mod.ts";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../../adapters/postgres/mod.ts";
import { jetstreamPublisher } from "../../adapters/nats/mod.ts";
import { runtime, test } from "../harness.ts";
import { NATS_URL, natsStream } from "../nats_helpers.ts";
import { openSql, PG_URL, uniqueSchema } from "../postgres_helpers.ts";
import { checkStream, Ledger, until } from "./helpers.ts";

const here = dirname(fileURLToPath(import.meta.url));
const LEASE_MS = 1_000;
const ROUNDS = 3;

/** Starts tests/faults/relay_child.ts in a child process of the current runtime. */
function spawnRelay(env: Record<string, string>) {
  const script = join(here, "relay_child.ts");
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  const [command, args] = runtime === "deno"
    ? [g.Deno.execPath() as string, ["run", "-A", "--no-check", script]]
    : [process.execPath, [script]];
  return spawn(command, args, {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
    cwd: join(here, "..", ".."),
  });
}

test(
  "faults: a relay process killed with SIGKILL mid-batch; another relay finishes the batch after the lease, each message once in the stream",
  async () => {
    const schema = uniqueSchema("kill");
    const sql = openSql(4);
    const s = await natsStream();
    const ledger = new Ledger();
    const storage = postgresStorage(sql as unknown as PostgresSql, { schema });
    const writer = createOutbox({ storage, publisher: () => {} });
    await writer.setup();
    const inner = jetstreamPublisher(s.js);
    const survivorSent = new Map<string, number>();
    const survivor = createOutbox({
      storage,
      publisher: {
        async publishRun(messages: readonly OutboxRecord[], context: PublishContext) {
          for (const m of messages) survivorSent.set(m.id, (survivorSent.get(m.id) ?? 0) + 1);
          return await inner.publishRun!(messages, context);
        },
        publish: (m, c) => inner.publish(m, c),
      },
      leaseMs: LEASE_MS,
      relayId: "survivor",
      batchSize: 50,
      onError: (e) => console.error("survivor:", e),
    });
    const count = async () => (await s.jsm.streams.info(s.name)).state.messages;
    const recoveries: number[] = [];
    let relay = null as ReturnType<typeof survivor.start> | null;
    try {
      for (let round = 0; round < ROUNDS; round++) {
        // 200 committed messages (10 keys, some unkeyed) and one rolled-back transaction.
        for (let t = 0; t < 5; t++) {
          const batch = Array.from({ length: 40 }, (_, i) => {
            const n = round * 1_000 + t * 40 + i;
            return {
              id: `k${round}-${n}`,
              topic: `${s.prefix}.orders`,
              key: i % 10 === 9 ? null : `key-${n % 10}`,
              payload: { n },
            };
          });
          await sql.begin((tx) => writer.enqueue(tx as unknown as PostgresTx, batch));
          ledger.commit(batch);
        }
        const doomed = Array.from(
          { length: 20 },
          (_, i) => ({ id: `rb${round}-${i}`, topic: `${s.prefix}.orders`, key: `key-${i % 10}`, payload: i }),
        );
        await sql.begin(async (tx) => {
          await writer.enqueue(tx as unknown as PostgresTx, doomed);
          throw new Error("rollback");
        }).catch((e) => assert.equal((e as Error).message, "rollback"));
        ledger.rollback(doomed);

        const child = spawnRelay({
          FAULT_PG_URL: PG_URL,
          FAULT_SCHEMA: schema,
          FAULT_NATS: NATS_URL,
          FAULT_LEASE_MS: String(LEASE_MS),
          FAULT_BATCH: "100",
          FAULT_RELAY_ID: `child-${round}`,
        });
        const exited = new Promise<NodeJS.Signals | null>((resolve) =>
          child.once("exit", (_code, signal) => resolve(signal))
        );
        const childSent: string[] = [];
        const midBatch = Promise.withResolvers<void>();
        let buffer = "";
        child.stdout!.setEncoding("utf8");
        child.stdout!.on("data", (chunk: string) => {
          buffer += chunk;
          let nl: number;
          while ((nl = buffer.indexOf("\n")) >= 0) {
            const line = buffer.slice(0, nl);
            buffer = buffer.slice(nl + 1);
            const event = JSON.parse(line) as { published?: string; error?: string };
            if (event.error) console.error(`child-${round}:`, event.error);
            if (event.published) {
              childSent.push(event.published);
              // The survivor runs from the child's first publish on, as a second replica would.
              if (childSent.length === 1 && !relay) relay = survivor.start({ minIdleMs: 5, maxIdleMs: 50 });
              if (childSent.length === 25) midBatch.resolve();
            }
          }
        });
        const timer = setTimeout(
          () => midBatch.reject(new Error(`the child relay sent ${childSent.length} messages in 20 s`)),
          20_000,
        );
        try {
          await Promise.race([
            midBatch.promise,
            exited.then(() => {
              throw new Error("the child relay exited before it was killed");
            }),
          ]);
        } catch (error) {
          child.kill("SIGKILL");
          throw error;
        } finally {
          clearTimeout(timer);
        }
        child.kill("SIGKILL");
        const killedAt = Date.now();
        assert.equal(await exited, "SIGKILL");

        const rows = await writer.inspect();
        const orphaned = rows.filter((r) => r.status === "processing" && r.lockedBy?.startsWith(`child-${round}:`));
        assert.ok(orphaned.length > 0, "the child died holding a leased batch");
        const leaseEnd = Math.max(...orphaned.map((r) => r.availableAt ?? 0));
        const expected = ledger.committed.length;
        await until("the survivor to deliver every committed message", async () => (await count()) >= expected, 20_000);
        const recovery = Date.now() - killedAt;
        recoveries.push(recovery);
        const resent = childSent.filter((id) => survivorSent.has(id)).length;
        console.log(
          `[faults] recovery after SIGKILL (${runtime}, round ${round + 1}): ${recovery} ms ` +
            `(lease ${LEASE_MS} ms, ended ${
              Math.max(0, leaseEnd - killedAt)
            } ms after the kill; ${orphaned.length} rows orphaned, ` +
            `${childSent.length} already sent by the killed relay, ${resent} of them sent again and dropped by dedup)`,
        );
        assert.ok(recovery < LEASE_MS + 5_000, `recovered within the lease plus 5 s (${recovery} ms)`);
        // Orphaned rows went out again only after their lease ended.
        for (const r of orphaned) {
          assert.ok(survivorSent.has(r.id) || childSent.includes(r.id), `${r.id} was sent by someone`);
        }
        checkStream(await s.read(), ledger, `after kill ${round + 1}`);
        // Stopped between rounds, so the next child claims the next round's first batch.
        await relay!.stop();
        relay = null;
      }
      const stats = await writer.stats();
      assert.equal(stats.pending + stats.processing + stats.dead, 0, "nothing left behind");
    } finally {
      await relay?.stop();
      await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
      await sql.end({ timeout: 1 });
      await s.close();
    }
    assert.equal(recoveries.length, ROUNDS);
  },
  { timeout: 90_000 },
);
