/**
 * Fault 2 (storage side): a libSQL file whose write lock another writer holds
 * (SQLITE_BUSY). The relay reports through onError, keeps running, never crashes its
 * host, and delivers everything once, in key order.
 *
 * The Postgres half of fault 2 is tests/faults/postgres_kill.test.ts.
 */

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { createOutbox, OutboxStorageError } from "../../mod.ts";
import { libsqlStorage } from "../../adapters/libsql/mod.ts";
import { jetstreamPublisher } from "../../adapters/nats/mod.ts";
import { test } from "../harness.ts";
import { natsStream } from "../nats_helpers.ts";
import { openClient, tempDatabase } from "../libsql_helpers.ts";
import { checkStream, Ledger, until, watchHost } from "./helpers.ts";

test(
  "faults: a libSQL file whose write lock another writer holds (SQLITE_BUSY): the relay reports, retries and delivers once the lock is gone",
  async () => {
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
      const first = Array.from(
        { length: 50 },
        (_, i) => ({ id: `busy-a${i}`, topic: `${s.prefix}.orders`, key: `k${i % 5}`, payload: i }),
      );
      await outbox.enqueue(relayClient, first);
      ledger.commit(first);
      const relay = outbox.start({ minIdleMs: 5, maxIdleMs: 50 });
      let heldFor = 0;
      try {
        await until(
          "the first messages in the stream",
          async () => (await s.jsm.streams.info(s.name)).state.messages >= 50,
        );
        // Another writer takes the write lock and keeps it while it writes more messages.
        const tx = await other.transaction("write");
        const heldAt = Date.now();
        const second = Array.from(
          { length: 50 },
          (_, i) => ({ id: `busy-b${i}`, topic: `${s.prefix}.orders`, key: `k${i % 5}`, payload: i }),
        );
        await outbox.enqueue(tx, second);
        // A tick that fails on the lock rejects with a typed error instead of hanging.
        await assert.rejects(
          () => outbox.tick(),
          (e: unknown) => e instanceof OutboxStorageError && /SQLITE_BUSY|locked/i.test(String((e as Error).message)),
        );
        await until("the running relay to report SQLITE_BUSY through onError", () => errors.length >= 2, 10_000);
        await tx.commit();
        tx.close();
        heldFor = Date.now() - heldAt;
        ledger.commit(second);
        const releasedAt = Date.now();
        await until(
          "the second writer's messages in the stream",
          async () => (await s.jsm.streams.info(s.name)).state.messages >= 100,
          15_000,
        );
        console.log(
          `[faults] SQLITE_BUSY: lock held ${heldFor} ms, ${errors.length} errors reported through onError, delivered ${
            Date.now() - releasedAt
          } ms after the lock was released`,
        );
        assert.ok(relay.running, "the relay loop is still running");
      } finally {
        await relay.stop();
      }
      for (const e of errors) {
        assert.ok(
          e instanceof OutboxStorageError && /SQLITE_BUSY|locked/i.test(e.message),
          `typed busy error: ${String(e)}`,
        );
      }
      checkStream(await s.read(), ledger, "after SQLITE_BUSY");
      assert.deepEqual(host.seen, [], "nothing unhandled reached the host");
    } finally {
      host.stop();
      relayClient.close();
      other.close();
      rmSync(dir, { recursive: true, force: true });
      await s.close();
    }
  },
  { timeout: 60_000 },
);
