/**
 * `outbox doctor`: checks what the library cannot see from inside a relay. The expected
 * table, columns, indexes and functions are read from the DDL `setup()` runs
 * (`postgresSchema()`, `mysqlSchema()`, `libsqlSchema()`) for the table's schema
 * version, so the check follows the adapters as they change.
 */

import { createOutbox } from "../src/outbox.ts";
import { libsqlSchema } from "../adapters/libsql/mod.ts";
import { mysqlSchema } from "../adapters/mysql/mod.ts";
import { postgresSchema } from "../adapters/postgres/mod.ts";
import { CliError, type Flags, intFlag, stringFlag } from "./args.ts";
import {
  type Command,
  CONNECTION_FLAGS,
  FAN_OUT_SCHEMA_VERSION,
  openTarget,
  SETUP_SCHEMA_VERSION,
} from "./commands.ts";
import { type Connection, loadDriver, oneLine, redact } from "./connect.ts";
import { formatDuration, parseDuration, table } from "./format.ts";
import type { CliIo } from "./io.ts";

/** The outcome of one check. */
interface Check {
  readonly check: string;
  readonly ok: boolean;
  readonly detail: string;
  /** What to do about a failure. */
  readonly fix?: string;
}

/** What the DDL says should exist. */
interface Expected {
  columns: string[];
  indexes: string[];
  /** Indexes of earlier versions that setup() drops (Postgres lists them in its DDL). */
  oldIndexes: string[];
  /** The table that records the schema version (unquoted; the DDL's other table). */
  versionTable: string | undefined;
  /** `[schema, name]` of each claim function (Postgres: the current one, and version 1's, kept for old relays). */
  claimFunctions: [string, string][];
  /** `[schema, name]` of the claim function of earlier versions, which setup() drops (Postgres). */
  oldClaimFunction?: [string, string];
  /** The fix for missing columns, where `outbox setup` would not add them (MySQL). */
  columnsFix?: string;
}

/** A name in the DDL: `"schema"."name"` or `"name"`; the schema is optional. */
const QUOTED = String.raw`(?:"([^"]+)"\.)?"([^"]+)"`;

/**
 * Reads the expected objects out of the DDL statements of a fresh `table`: its CREATE
 * TABLE gives the columns, the other CREATE TABLE is the version table.
 */
function expectedFrom(ddl: readonly string[], table: string): Expected {
  const all = (pattern: RegExp) => ddl.flatMap((s) => [...s.matchAll(pattern)]);
  const createTable = new RegExp(`^CREATE TABLE IF NOT EXISTS ${QUOTED}`);
  const create = ddl.find((s) => createTable.exec(s)?.[2] === table) ?? "";
  const others = ddl.map((s) => createTable.exec(s)?.[2]).filter((name) => name !== undefined && name !== table);
  const body = create.slice(create.indexOf("(") + 1);
  // Column lines start with a lowercase name; constraints (CHECK …) are upper case.
  const columns = [...body.matchAll(/^\s+([a-z_][a-z0-9_]*)\s/gm)].map((m) => m[1]!);
  const pair = (m: RegExpMatchArray): [string, string] => [m[1]!, m[2]!];
  const old = all(new RegExp(`^DROP FUNCTION IF EXISTS ${QUOTED}`, "g"))[0];
  return {
    columns,
    indexes: all(new RegExp(`^CREATE (?:UNIQUE )?INDEX IF NOT EXISTS ${QUOTED}`, "g")).map((m) => m[2]!),
    oldIndexes: all(new RegExp(`^DROP INDEX IF EXISTS ${QUOTED}`, "g")).map((m) => m[2]!),
    versionTable: others[0],
    claimFunctions: all(new RegExp(`^CREATE OR REPLACE FUNCTION ${QUOTED}`, "g")).map(pair),
    oldClaimFunction: old ? pair(old) : undefined,
  };
}

/**
 * Reads the expected objects out of MySQL's DDL of a fresh `table`: one CREATE TABLE
 * with its indexes inline (`KEY \`name\` (columns)`), and the version table. setup()
 * adds a missing index to an existing table, but no missing column.
 */
function expectedFromMysql(ddl: readonly string[], table: string): Expected {
  const createTable = /^CREATE TABLE IF NOT EXISTS `([^`]+)`/;
  const create = ddl.find((s) => createTable.exec(s)?.[1] === table) ?? "";
  const others = ddl.map((s) => createTable.exec(s)?.[1]).filter((name) => name !== undefined && name !== table);
  const body = create.slice(create.indexOf("(") + 1);
  // Column lines start with a lowercase name (`key` is quoted); keys and constraints are upper case.
  const columns = [...body.matchAll(/^\s+`?([a-z_][a-z0-9_]*)`?\s/gm)].map((m) => m[1]!);
  // Named keys only: the primary key has no name of its own (information_schema calls it PRIMARY).
  const keys = [...body.matchAll(/^\s+(?:UNIQUE )?KEY `([^`]+)` \(.*\),?$/gm)];
  return {
    columns,
    indexes: keys.map((m) => m[1]!),
    oldIndexes: [],
    versionTable: others[0],
    claimFunctions: [],
    columnsFix:
      "add them as mysqlSchema() declares them (`outbox setup` does not change an existing MySQL table's columns)",
  };
}

/**
 * The schema version check: the version the adapter reads (recorded by setup(), else
 * what the layout shows) against what this @x/outbox knows. Version 2 is what setup()
 * makes; fan-out (`--fan-out`) needs 3.
 */
function versionCheck(
  version: number,
  recorded: boolean,
  latest: number,
  versionTable: string,
  fanOut: boolean,
): Check {
  const check = "schema version";
  const needed = fanOut ? FAN_OUT_SCHEMA_VERSION : SETUP_SCHEMA_VERSION;
  const how = recorded
    ? `recorded in ${versionTable}`
    : version === 1
    ? `a table of @x/outbox 0.1.0, with no ${versionTable}`
    : `by its layout, with no ${versionTable}: made by drizzle-kit or by hand`;
  const detail = `version ${version} (${how})`;
  if (version > latest) {
    return {
      check,
      ok: false,
      detail: `${detail} is newer than this @x/outbox (${latest})`,
      fix: "upgrade @x/outbox (npm install @x/outbox@latest)",
    };
  }
  if (version < needed) {
    return {
      check,
      ok: false,
      detail: `${detail}; ${fanOut ? `fan-out (publishers) needs ${needed}` : `setup() makes version ${needed}`}`,
      fix: `run \`outbox setup${fanOut ? " --fan-out" : ""}\` (upgrades the table in place)`,
    };
  }
  const ready = version >= FAN_OUT_SCHEMA_VERSION
    ? "ready for fan-out"
    : `fan-out (publishers) needs ${FAN_OUT_SCHEMA_VERSION}: \`outbox setup --fan-out\``;
  return { check, ok: true, detail: `${detail}; ${ready}` };
}

const names = (rows: Record<string, unknown>[]) => new Set(rows.map((r) => String(r.name)));

/** How doctor reads one database: its version line, and the names it finds. */
interface Catalog {
  /** The `connect` check's detail. */
  server(): Promise<string>;
  /** What `setup()` makes (read from the DDL of a fresh table), with fan-out or without. */
  expected(fanOut: boolean): Expected;
  columns(): Promise<Set<string>>;
  /** Whether a table of this name exists next to the outbox table. */
  hasTable(name: string): Promise<boolean>;
  indexes(): Promise<Set<string>>;
  /** Which of these `[schema, name]` functions exist, as `schema.name` (Postgres). */
  functions?(wanted: readonly [string, string][]): Promise<Set<string>>;
}

function postgresCatalog(c: Connection): Catalog {
  const schema = c.schemaName!;
  return {
    server: async () => {
      const [row] = await c.query("SELECT current_setting('server_version') AS v");
      return `Postgres ${row?.v} at ${c.where}`;
    },
    expected: (fanOut) => expectedFrom(postgresSchema({ schema, table: c.tableName, fanOut }), c.tableName),
    columns: async () =>
      names(
        await c.query(
          "SELECT column_name AS name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
          [schema, c.tableName],
        ),
      ),
    hasTable: async (name) =>
      (await c.query("SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2", [
        schema,
        name,
      ])).length > 0,
    indexes: async () =>
      names(
        await c.query("SELECT indexname AS name FROM pg_indexes WHERE schemaname = $1 AND tablename = $2", [
          schema,
          c.tableName,
        ]),
      ),
    functions: async (wanted) =>
      names(
        await c.query(
          `SELECT n.nspname || '.' || p.proname AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname || '.' || p.proname = ANY($1::text[])`,
          [wanted.map((f) => f.join("."))],
        ),
      ),
  };
}

function libsqlCatalog(c: Connection): Catalog {
  return {
    server: async () => {
      const [row] = await c.query("SELECT sqlite_version() AS v");
      return `libSQL (SQLite ${row?.v}) at ${c.where}`;
    },
    expected: (fanOut) => expectedFrom(libsqlSchema({ table: c.tableName, fanOut }), c.tableName),
    columns: async () => names(await c.query("SELECT name FROM pragma_table_info(?)", [c.tableName])),
    hasTable: async (name) =>
      (await c.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [name])).length > 0,
    indexes: async () =>
      names(await c.query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", [c.tableName])),
  };
}

/** MySQL and MariaDB: information_schema of the URL's database (MySQL has no schemas within it). */
function mysqlCatalog(c: Connection): Catalog {
  const inTable = "WHERE table_schema = ? AND table_name = ?";
  const database = c.schemaName!;
  return {
    server: async () => {
      const [row] = await c.query("SELECT VERSION() AS v");
      const version = String(row?.v);
      // MariaDB says so in its version: 10.11.6-MariaDB-0+deb12u1.
      const mariadb = /-MariaDB\b/i.test(version);
      return `${mariadb ? "MariaDB" : "MySQL"} ${version.replace(/-MariaDB\b/i, "")} at ${c.where}`;
    },
    expected: (fanOut) => expectedFromMysql(mysqlSchema({ table: c.tableName, fanOut }), c.tableName),
    columns: async () =>
      names(
        await c.query(`SELECT column_name AS name FROM information_schema.columns ${inTable}`, [
          database,
          c.tableName,
        ]),
      ),
    hasTable: async (name) =>
      (await c.query(`SELECT 1 FROM information_schema.tables ${inTable}`, [database, name])).length > 0,
    // One row per column of each index.
    indexes: async () =>
      names(
        await c.query(`SELECT DISTINCT index_name AS name FROM information_schema.statistics ${inTable}`, [
          database,
          c.tableName,
        ]),
      ),
  };
}

/** The catalog of the connection's database. */
function catalogOf(c: Connection): Catalog {
  switch (c.kind) {
    case "postgres":
      return postgresCatalog(c);
    case "mysql":
      return mysqlCatalog(c);
    case "libsql":
      return libsqlCatalog(c);
  }
}

/**
 * The table's checks. The schema version comes first: which indexes a table should
 * have depends on it (version 3 trades the unique index on `id` for one on
 * `(id, destination)`).
 */
async function tableChecks(c: Connection, catalog: Catalog, fanOut: boolean): Promise<Check[]> {
  const checks: Check[] = [{ check: "connect", ok: true, detail: await catalog.server() }];
  const columns = await catalog.columns();
  if (!tableCheck(checks, c, columns.size > 0)) return checks;
  const version = (await c.schemaVersion()) ?? 1;
  const expected = catalog.expected(version >= FAN_OUT_SCHEMA_VERSION);
  const versionTable = expected.versionTable ?? `${c.tableName}_schema`;
  const recorded = await catalog.hasTable(versionTable);
  const shown = c.schemaName === undefined ? versionTable : `${c.schemaName}.${versionTable}`;
  checks.push(versionCheck(version, recorded, c.latestSchemaVersion, shown, fanOut));
  checks.push(columnCheck(expected, columns));
  const indexes = await catalog.indexes();
  checks.push(...indexChecks(expected, indexes));
  const left = expected.oldIndexes.filter((name) => indexes.has(name));
  if (expected.oldIndexes.length > 0) {
    checks.push(
      left.length === 0 ? { check: "old indexes", ok: true, detail: "none left from schema version 1" } : {
        check: "old indexes",
        ok: false,
        detail: `${left.join(", ")} of schema version 1 still there: every insert pays for ${
          left.length === 1 ? "it" : "them"
        }`,
        fix: "run `outbox setup` (drops them)",
      },
    );
  }
  if (catalog.functions) checks.push(...await functionChecks(catalog.functions, expected));
  return checks;
}

/** The claim functions setup() creates (Postgres), and the one of versions before 0.2 that it drops. */
async function functionChecks(
  lookup: NonNullable<Catalog["functions"]>,
  expected: Expected,
): Promise<Check[]> {
  const checks: Check[] = [];
  const wanted = [...expected.claimFunctions, ...(expected.oldClaimFunction ? [expected.oldClaimFunction] : [])];
  const functions = await lookup(wanted);
  expected.claimFunctions.forEach((f, i) => {
    const name = f.join(".");
    // The first is the relay's; the others stay for relays of older versions.
    const without = i === 0 ? "each claim" : "each claim of a relay of @x/outbox 0.1";
    checks.push(
      functions.has(name) ? { check: "claim function", ok: true, detail: `${name} exists` } : {
        check: "claim function",
        ok: false,
        detail: `${name} is missing: ${without} falls back to a transaction of 3 round trips`,
        fix: "run `outbox setup`",
      },
    );
  });
  if (expected.oldClaimFunction) {
    const name = expected.oldClaimFunction.join(".");
    checks.push(
      functions.has(name)
        ? {
          check: "old claim function",
          ok: false,
          detail: `${name} of a version before 0.2 is still there`,
          fix: "once no relay older than 0.2 runs, run `outbox setup` (it drops the old function)",
        }
        : { check: "old claim function", ok: true, detail: "none left from versions before 0.2" },
    );
  }
  return checks;
}

/** Adds the table check; `false` when the table is missing and nothing else can be checked. */
function tableCheck(checks: Check[], c: Connection, exists: boolean): boolean {
  checks.push(
    exists
      ? { check: "table", ok: true, detail: `${c.table} exists` }
      : { check: "table", ok: false, detail: `${c.table} does not exist`, fix: "run `outbox setup`" },
  );
  return exists;
}

function columnCheck(expected: Expected, found: ReadonlySet<string>): Check {
  const missing = expected.columns.filter((name) => !found.has(name));
  return missing.length === 0 ? { check: "columns", ok: true, detail: `all ${expected.columns.length} columns` } : {
    check: "columns",
    ok: false,
    detail: `missing ${missing.join(", ")}: the table was made by an older version or by hand`,
    fix: expected.columnsFix ?? "run `outbox setup` (upgrades the table in place)",
  };
}

function indexChecks(expected: Expected, found: ReadonlySet<string>): Check[] {
  return expected.indexes.map((name): Check => {
    if (found.has(name)) return { check: "index", ok: true, detail: `${name} exists` };
    return {
      check: "index",
      ok: false,
      detail: `${name} is missing`,
      fix: "run `outbox setup` (creates missing indexes)",
    };
  });
}

interface NatsTransport {
  connect(options: { servers: string; timeout?: number; reconnect?: boolean }): Promise<{ close(): Promise<void> }>;
}

interface NatsJetstream {
  jetstreamManager(nc: unknown): Promise<{
    streams: { info(name: string): Promise<{ config: { duplicate_window?: number } }> };
  }>;
}

/** The stream check: its duplicate window must cover the retry horizon, or a retry is stored twice. */
async function streamCheck(io: CliIo, server: string, stream: string, horizonMs: number): Promise<Check> {
  const transport = await loadDriver<NatsTransport>(io, "@nats-io/transport-node", "--nats");
  const js = await loadDriver<NatsJetstream>(io, "@nats-io/jetstream", "--nats");
  const where = redact(server);
  let nc: { close(): Promise<void> };
  try {
    nc = await transport.connect({ servers: server, timeout: 5_000, reconnect: false });
  } catch (error) {
    return { check: "stream", ok: false, detail: `cannot connect to NATS at ${where}: ${oneLine(error)}` };
  }
  try {
    const jsm = await js.jetstreamManager(nc);
    const info = await jsm.streams.info(stream);
    const windowMs = (info.config.duplicate_window ?? 0) / 1_000_000;
    const compare = `duplicate_window ${formatDuration(windowMs)}, retry horizon ${formatDuration(horizonMs)}`;
    return windowMs >= horizonMs ? { check: "stream", ok: true, detail: `${stream}: ${compare}` } : {
      check: "stream",
      ok: false,
      detail: `${stream}: ${compare}; a retry after the window would be stored twice`,
      fix: `raise duplicate_window to ${formatDuration(horizonMs)} or more (ensureStream() does)`,
    };
  } catch (error) {
    return { check: "stream", ok: false, detail: `${stream}: ${oneLine(error)}` };
  } finally {
    await nc.close().catch(() => {});
  }
}

/** A duration flag given as whole ms or with a unit (`30000`, `30s`). */
function msFlag(flags: Flags, name: string): number | undefined {
  const text = stringFlag(flags, name);
  if (text === undefined) return undefined;
  if (/^\d+$/.test(text)) return intFlag(flags, name, 0, 1e14);
  const ms = parseDuration(text);
  if (ms === undefined) {
    throw new CliError(`--${name} must be milliseconds or a duration (30s), got ${JSON.stringify(text)}`, 2);
  }
  return ms;
}

/** `outbox doctor`. */
export const doctor: Command = {
  summary: "check the table, its schema version, indexes and claim function, and a stream's dedup window",
  usage: "[--url URL] [--fan-out] [--nats URL --stream NAME [--lease-ms MS] [--max-delay-ms MS]] [--json]",
  details: [
    "Each check prints one line, ok or FAIL with a fix; exits 1 if any fails.",
    `The schema version must be at least the one setup() makes (${SETUP_SCHEMA_VERSION}), and at most the newest this`,
    `@x/outbox knows; with --fan-out (an outbox with publishers) at least ${FAN_OUT_SCHEMA_VERSION}.`,
    "A missing index is fixed by `outbox setup`.",
    "With --nats and --stream, the stream's duplicate_window must be at least the outbox's",
    "retry horizon (leaseMs + retry.maxDelayMs; defaults 30s + 60s), or a retry after the",
    "window is stored twice. Give your relay's --lease-ms and --max-delay-ms if you changed them.",
  ].join("\n"),
  flags: {
    ...CONNECTION_FLAGS,
    "fan-out": {
      kind: "boolean",
      help: `the outbox has publishers: the table must be at schema version ${FAN_OUT_SCHEMA_VERSION}`,
    },
    nats: { kind: "string", value: "URL", help: "NATS server, e.g. nats://127.0.0.1:4222" },
    stream: { kind: "string", value: "NAME", help: "JetStream stream the relay publishes to" },
    "lease-ms": { kind: "string", value: "MS", help: "the relay's leaseMs (default 30000)" },
    "max-delay-ms": { kind: "string", value: "MS", help: "the relay's retry.maxDelayMs (default 60000)" },
  },
  async run(flags, io) {
    const nats = stringFlag(flags, "nats");
    const stream = stringFlag(flags, "stream");
    if ((nats === undefined) !== (stream === undefined)) throw new CliError("--nats and --stream go together", 2);
    const leaseMs = msFlag(flags, "lease-ms");
    const maxDelayMs = msFlag(flags, "max-delay-ms");
    let checks: Check[];
    let connection: Connection | undefined;
    try {
      connection = await openTarget(flags, io, { create: false });
    } catch (error) {
      if (error instanceof CliError && error.exitCode === 2) throw error;
      checks = [{ check: "connect", ok: false, detail: oneLine(error) }];
    }
    if (connection) {
      try {
        const outbox = createOutbox({
          storage: connection.storage,
          publisher: () => {},
          leaseMs,
          retry: maxDelayMs === undefined ? undefined : { maxDelayMs, baseDelayMs: Math.min(1_000, maxDelayMs) },
        });
        const catalog = catalogOf(connection);
        checks = await tableChecks(connection, catalog, flags["fan-out"] === true);
        if (nats !== undefined && stream !== undefined) {
          checks.push(await streamCheck(io, nats, stream, outbox.retryHorizonMs));
        }
      } finally {
        await connection.close();
      }
    }
    const all = checks!;
    const failed = all.filter((c) => !c.ok).length;
    if (flags.json) {
      io.stdout(`${JSON.stringify({ ok: failed === 0, checks: all })}\n`);
    } else {
      const rows = all.map((c) => [c.ok ? "ok" : "FAIL", c.check, c.fix ? `${c.detail}; fix: ${c.fix}` : c.detail]);
      io.stdout(table(["", "CHECK", "DETAIL"], rows).split("\n").slice(1).join("\n"));
      io.stdout(failed === 0 ? `all ${all.length} checks passed\n` : `${failed} of ${all.length} checks failed\n`);
    }
    return failed === 0 ? 0 : 1;
  },
};
