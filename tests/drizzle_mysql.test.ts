/**
 * `mysqlOutboxTable()` through drizzle-kit creates exactly the table
 * `mysqlStorage().setup()` creates, on the real MariaDB.
 */

import assert from "node:assert/strict";
import { generateMySQLDrizzleJson, generateMySQLMigration } from "drizzle-kit/api";
import { mysqlOutboxTable } from "../adapters/drizzle/mod.ts";
import { mysqlStorage } from "../adapters/mysql/mod.ts";
import { OutboxConfigError } from "../mod.ts";
import { test } from "./harness.ts";
import { dropTables, openPool, uniqueTable } from "./mysql_helpers.ts";

type Row = Record<string, unknown>;

/** The table's columns, indexes and checks, with its name replaced, comparable across tables. */
async function describeTable(pool: ReturnType<typeof openPool>, table: string) {
  const normal = (value: unknown) => String(value ?? "").replaceAll(table, "T");
  const [columns] = await pool.query(
    `SELECT column_name, column_type, is_nullable, column_default, character_set_name, collation_name, extra,
       generation_expression
     FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ? ORDER BY column_name`,
    [table],
  ) as [Row[], unknown];
  const [indexes] = await pool.query(
    `SELECT index_name, non_unique, GROUP_CONCAT(column_name ORDER BY seq_in_index) AS cols
     FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ?
     GROUP BY index_name, non_unique ORDER BY index_name`,
    [table],
  ) as [Row[], unknown];
  const [checks] = await pool.query(
    `SELECT constraint_name, check_clause FROM information_schema.check_constraints
     WHERE constraint_schema = DATABASE() AND table_name = ? ORDER BY constraint_name`,
    [table],
  ) as [Row[], unknown];
  return {
    columns: columns.map((c) => Object.values(c).map(normal).join(" ")).sort(),
    indexes: indexes.map((i) => `${normal(i.index_name)} unique=${Number(i.non_unique) === 0} (${i.cols})`).sort(),
    checks: checks.map((c) => `${normal(c.constraint_name)}: ${normal(c.check_clause).replace(/`/g, "")}`).sort(),
  };
}

for (const fanOut of [false, true]) {
  test(
    `drizzle: mysqlOutboxTable(${
      fanOut ? "{ fanOut: true }" : ""
    }) through drizzle-kit creates the same columns, checks and indexes as setup() on MariaDB`,
    async () => {
      const pool = openPool(2);
      const fromKit = uniqueTable("kit");
      const fromSetup = uniqueTable("setup");
      try {
        const table = mysqlOutboxTable({ table: fromKit, fanOut });
        const statements = await generateMySQLMigration(
          await generateMySQLDrizzleJson({}),
          await generateMySQLDrizzleJson({ table }),
        );
        for (const s of statements) await pool.query(s);
        const storage = mysqlStorage(pool, { table: fromSetup });
        await storage.setup({ fanOut });
        const kit = await describeTable(pool, fromKit);
        const setup = await describeTable(pool, fromSetup);
        assert.equal(kit.columns.length, 17);
        assert.deepEqual(kit.columns, setup.columns);
        assert.deepEqual(kit.indexes, setup.indexes);
        assert.deepEqual(kit.checks, setup.checks);
        assert.equal(kit.checks.length, 2);
        // A table drizzle-kit made has no version record: setup() reads its layout instead.
        const kitStorage = mysqlStorage(pool, { table: fromKit });
        assert.equal(await kitStorage.schemaVersion(), fanOut ? 3 : 2);
        await kitStorage.setup();
        assert.equal(await kitStorage.schemaVersion(), fanOut ? 3 : 2);
        assert.deepEqual(await describeTable(pool, fromKit), kit, "setup() on drizzle-kit's table changes nothing");
      } finally {
        await dropTables(pool, fromKit).catch(() => {});
        await dropTables(pool, fromSetup).catch(() => {});
        await pool.end();
      }
    },
  );
}

test("drizzle: mysqlOutboxTable refuses a table name that is not a plain identifier", () => {
  assert.throws(() => mysqlOutboxTable({ table: "x; drop" }), OutboxConfigError);
});
