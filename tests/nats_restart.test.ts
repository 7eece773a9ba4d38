/**
 * A relay keeps working across a nats-server restart. The test runs its own nats-server
 * (another port, its own store directory) so the shared one stays up.
 */

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { createOutbox } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { jetstreamPublisher } from "../adapters/nats/mod.ts";
import { test } from "./harness.ts";
import { openClient, tempDatabase } from "./libsql_helpers.ts";
import { freePort, startNatsServer, stopProcess } from "./faults/helpers.ts";

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

test(
  "nats: a running relay keeps delivering across a nats-server restart, with no duplicates in the stream",
  async () => {
    const port = await freePort();
    const store = mkdtempSync(join(tmpdir(), "x-outbox-nats-"));
    const { url, dir } = tempDatabase();
    let server = await startNatsServer(port, store);
    const client = await openClient(url);
    try {
      const nc = await connect({ servers: `127.0.0.1:${port}`, maxReconnectAttempts: -1, reconnectTimeWait: 50 });
      const jsm = await jetstreamManager(nc);
      await jsm.streams.add({ name: "RESTART", subjects: ["restart.>"], duplicate_window: 120_000_000_000 });
      const errors: unknown[] = [];
      const outbox = createOutbox({
        storage: libsqlStorage(client),
        publisher: jetstreamPublisher(jetstream(nc), { timeoutMs: 500 }),
        retry: { maxAttempts: 1_000, baseDelayMs: 20, maxDelayMs: 200, jitter: 0.2 },
        onError: (e) => errors.push(e),
      });
      await outbox.setup();
      const relay = outbox.start({ minIdleMs: 5, maxIdleMs: 50 });
      const count = async () => (await jsm.streams.info("RESTART")).state.messages;
      const enqueue = (from: number, n: number) =>
        outbox.enqueue(
          client,
          Array.from(
            { length: n },
            (_, i) => ({
              id: `r-${from + i}`,
              topic: "restart.orders",
              key: `k${(from + i) % 4}`,
              payload: { i: from + i },
            }),
          ),
        );
      try {
        await enqueue(0, 100);
        await until("the first messages in the stream", async () => (await count()) >= 100);
        await stopProcess(server);
        await enqueue(100, 100); // committed while the broker is down
        await until(
          "a publish to fail while the broker is down",
          async () => (await outbox.inspect()).some((r) => r.lastError !== null),
        );
        server = await startNatsServer(port, store);
        await until("all 200 messages in the stream", async () => {
          try {
            return (await count()) >= 200;
          } catch {
            return false;
          }
        }, 30_000);
        // The stream acks before the relay settles: wait for the settles to commit.
        await until("every row settled", async () => {
          const stats = await outbox.stats();
          return stats.pending + stats.processing === 0;
        });
        assert.equal(await count(), 200, "nothing stored twice");
        assert.equal((await outbox.stats()).dead, 0);
      } finally {
        await relay.stop();
        await nc.close();
      }
    } finally {
      await stopProcess(server);
      client.close();
      rmSync(dir, { recursive: true, force: true });
      rmSync(store, { recursive: true, force: true });
    }
  },
  { timeout: 60_000 },
);
