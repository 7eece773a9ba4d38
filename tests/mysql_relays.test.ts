/**
 * Many relays on one MariaDB table at once (tests/relay_race.ts): concurrent writers,
 * rolled-back transactions and transient publish failures.
 */

import type { PoolConnection } from "mysql2/promise";
import { mysqlStorage } from "../adapters/mysql/mod.ts";
import { test } from "./harness.ts";
import { dropTables, inTransaction, openPool, uniqueTable } from "./mysql_helpers.ts";
import { relayRace } from "./relay_race.ts";

test(
  "mariadb: 4 relays, 4 concurrent writers, 10% rollbacks and flaky publishes: nothing lost, no duplicates, key order kept",
  async () => {
    const table = uniqueTable("relays");
    const admin = openPool(2);
    const clients = Array.from({ length: 8 }, () => openPool(3));
    try {
      await mysqlStorage(admin, { table }).setup();
      await relayRace<PoolConnection>({
        storage: (i) => mysqlStorage(clients[i]!, { table }),
        commit: (i, fn) => inTransaction(clients[i]!, fn),
      });
    } finally {
      await dropTables(admin, table).catch(() => {});
      await Promise.all([admin, ...clients].map((c) => c.end()));
    }
  },
  { timeout: 120_000 },
);
