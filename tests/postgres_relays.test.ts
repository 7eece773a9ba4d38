/**
 * Many relays on one Postgres table at once (tests/relay_race.ts): concurrent writers,
 * rolled-back transactions and transient publish failures.
 */

import { type PostgresSql, postgresStorage, type PostgresTx } from "../adapters/postgres/mod.ts";
import { test } from "./harness.ts";
import { openSql, uniqueSchema } from "./postgres_helpers.ts";
import { relayRace } from "./relay_race.ts";

test(
  "postgres: 4 relays, 4 concurrent writers, 10% rollbacks and flaky publishes: nothing lost, no duplicates, key order kept",
  async () => {
    const schema = uniqueSchema("relays");
    const admin = openSql(2);
    const clients = Array.from({ length: 8 }, () => openSql(3));
    try {
      await postgresStorage(admin as unknown as PostgresSql, { schema }).setup();
      await relayRace<PostgresTx>({
        storage: (i) => postgresStorage(clients[i] as unknown as PostgresSql, { schema }),
        commit: async (i, fn) => {
          await clients[i]!.begin((tx) => fn(tx as unknown as PostgresTx));
        },
      });
    } finally {
      await admin.unsafe(`DROP SCHEMA "${schema}" CASCADE`).catch(() => {});
      await Promise.all([admin, ...clients].map((c) => c.end({ timeout: 1 })));
    }
  },
  { timeout: 120_000 },
);
