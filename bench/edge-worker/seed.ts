/**
 * The edge bench's writer (bench/edge-cpu.mjs runs it in Node): refills the outbox in
 * sqld between invocations with the outbox's own `statements()`, so the Worker relays
 * rows in the real format, without any of the writing counted against the Worker.
 *
 * @module
 */

import { createClient } from "@libsql/client";
import { createOutbox } from "../../mod.ts";
import { libsqlStorage } from "../../adapters/libsql/mod.ts";
import { payload } from "../lib.ts";

/** A writer on the bench's database: the table, refills, and a row count to check ticks by. */
export function seeder(url: string, authToken: string) {
  const client = createClient({ url, authToken });
  const outbox = createOutbox({ storage: libsqlStorage(client), publisher: () => {} });
  let next = 0;
  return {
    setup: () => outbox.setup(),
    /** Commits `count` messages, one key each, as the example's orders have (one batch). */
    async refill(count: number): Promise<void> {
      const messages = Array.from({ length: count }, () => {
        const i = next++;
        return { topic: "orders.created", key: `o-${i}`, payload: payload(i) };
      });
      await client.batch(outbox.statements(messages), "write");
    },
    /** Rows in the outbox table. */
    async rows(): Promise<number> {
      return Number((await client.execute("SELECT count(*) AS n FROM outbox")).rows[0]!.n);
    },
    close: () => client.close(),
  };
}
