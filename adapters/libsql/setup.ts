/**
 * Creating the libSQL outbox table, or upgrading an older one in place, and reading its
 * schema version. The layout is read first (SQLite has no ADD COLUMN IF NOT EXISTS, and
 * a statement naming a missing table fails), then one write batch brings it to the
 * target version: one transaction on the embedded database, one request over HTTP
 * (where a batch is the atomic unit; an interactive transaction would also give
 * `:memory:` clients a database of their own).
 */

import type { Client } from "@libsql/client";
import { OutboxConfigError } from "../../src/errors.ts";
import { numOrNull } from "../shared/row.ts";
import {
  currentVersion,
  layoutQueries,
  type LayoutState,
  type LibsqlNames,
  SCHEMA_VERSION,
  upgradeStatements,
  versionSql,
} from "./sql.ts";

/** Runs a statement with busy retries and error wrapping (busyRetry's runner). */
type Runner = <T>(what: string, run: () => Promise<T>) => Promise<T>;

/** How often setup() reads again after another setup() changed the table under it. */
const MAX_ATTEMPTS = 10;

/** Reads the table's layout and recorded version: one read batch, and a read of the version table when there is one. */
export async function readLayout(client: Client, n: LibsqlNames): Promise<LayoutState> {
  const [objects, columns] = await client.batch(layoutQueries(n), "read");
  const tables = new Set<string>();
  const indexes = new Set<string>();
  for (const row of objects!.rows) (row.type === "index" ? indexes : tables).add(String(row.name));
  let recorded: number | null = null;
  if (tables.has(`${n.name}_schema`)) recorded = numOrNull((await client.execute(versionSql(n))).rows[0]?.version);
  return {
    table: tables.has(n.name),
    destination: columns!.rows.some((row) => row.name === "destination"),
    indexes,
    recorded,
  };
}

/** The version setup() brings a table to; a table newer than this code is refused. */
function targetVersion(n: LibsqlNames, state: LayoutState, fanOut: boolean): number {
  const current = currentVersion(n, state);
  if (current > SCHEMA_VERSION) {
    throw new OutboxConfigError(
      `libSQL table ${n.table}: schema version ${current} is newer than this @x/outbox (${SCHEMA_VERSION}); ` +
        "upgrade the package",
    );
  }
  // Never down: setup() without fanOut leaves a fan-out table (3) as it is.
  return Math.max(current, fanOut ? 3 : 2);
}

function sameLayout(a: LayoutState, b: LayoutState): boolean {
  return a.table === b.table && a.destination === b.destination && a.recorded === b.recorded &&
    a.indexes.size === b.indexes.size && [...a.indexes].every((i) => b.indexes.has(i));
}

/**
 * Creates the table at schema version 2 (3 with `fanOut`) or upgrades it, and records
 * the version. Safe to race: SQLite runs one write transaction at a time, and a batch
 * whose read went stale (another setup() upgraded the table in between) fails its
 * version check with nothing written, so this setup() reads again and finds less or
 * nothing left to do.
 *
 * @throws {OutboxConfigError} When the table's version is newer than this code.
 */
export async function setupTable(client: Client, n: LibsqlNames, fanOut: boolean, run: Runner): Promise<void> {
  for (let attempt = 1;; attempt++) {
    const state = await run("read the outbox table's layout", () => readLayout(client, n));
    const statements = upgradeStatements(n, state, targetVersion(n, state, fanOut));
    if (statements.length === 0) return;
    try {
      await run("create or upgrade the outbox table", () => client.batch(statements, "write"));
      return;
    } catch (error) {
      if (attempt >= MAX_ATTEMPTS) throw error;
      const now = await run("read the outbox table's layout", () => readLayout(client, n));
      if (sameLayout(state, now)) throw error;
    }
  }
}

/**
 * The schema version of a table (see {@link SCHEMA_VERSION}), or null when there is no
 * table.
 */
export async function schemaVersion(client: Client, n: LibsqlNames): Promise<number | null> {
  const state = await readLayout(client, n);
  return state.table ? currentVersion(n, state) : null;
}
