/**
 * `outbox doctor`: checks what the library cannot see from inside a relay. The expected
 * table, columns, indexes and functions are read from the DDL `setup()` runs
 * (`postgresSchema()`, `libsqlSchema()`), so the check follows the adapters as they change.
 */

import { createOutbox } from "../src/outbox.ts";
import { libsqlSchema } from "../adapters/libsql/mod.ts";
import { postgresSchema } from "../adapters/postgres/mod.ts";
import { CliError, type Flags, intFlag, stringFlag } from "./args.ts";
import { type Command, CONNECTION_FLAGS, openTarget } from "./commands.ts";
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
  /** `[schema, name]` of the claim function (Postgres). */
  claimFunction?: [string, string];
  /** `[schema, name]` of the claim function of earlier versions, which setup() drops (Postgres). */
  oldClaimFunction?: [string, string];
}

/** Reads the expected objects out of the DDL statements. */
function expectedFrom(ddl: readonly string[]): Expected {
  const create = ddl.find((s) => s.startsWith("CREATE TABLE")) ?? "";
  const body = create.slice(create.indexOf("(") + 1);
  // Column lines start with a lowercase name; constraints (CHECK …) are upper case.
  const columns = [...body.matchAll(/^\s+([a-z_][a-z0-9_]*)\s/gm)].map((m) => m[1]!);
  const indexes = ddl.flatMap((s) =>
    [...s.matchAll(/^CREATE (?:UNIQUE )?INDEX IF NOT EXISTS "([^"]+)"/g)].map((m) => m[1]!)
  );
  const fn = (pattern: RegExp): [string, string] | undefined => {
    const m = ddl.map((s) => pattern.exec(s)).find((x) => x !== null);
    return m ? [m[1]!, m[2]!] : undefined;
  };
  return {
    columns,
    indexes,
    claimFunction: fn(/^CREATE OR REPLACE FUNCTION "([^"]+)"\."([^"]+)"/),
    oldClaimFunction: fn(/^DROP FUNCTION IF EXISTS "([^"]+)"\."([^"]+)"/),
  };
}

const names = (rows: Record<string, unknown>[]) => new Set(rows.map((r) => String(r.name)));

/** The table's checks on Postgres. */
async function postgresChecks(c: Connection): Promise<Check[]> {
  const schema = c.schemaName!;
  const expected = expectedFrom(postgresSchema({ schema, table: c.tableName }));
  const [version] = await c.query("SELECT current_setting('server_version') AS v");
  const checks: Check[] = [{ check: "connect", ok: true, detail: `Postgres ${version?.v} at ${c.where}` }];
  const columns = names(
    await c.query(
      "SELECT column_name AS name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
      [schema, c.tableName],
    ),
  );
  if (!tableCheck(checks, c, columns.size > 0)) return checks;
  checks.push(columnCheck(expected.columns, columns));
  const indexes = names(
    await c.query("SELECT indexname AS name FROM pg_indexes WHERE schemaname = $1 AND tablename = $2", [
      schema,
      c.tableName,
    ]),
  );
  checks.push(...indexChecks(expected.indexes, indexes));
  const wanted = [expected.claimFunction, expected.oldClaimFunction].filter((f) => f !== undefined);
  const functions = names(
    await c.query(
      `SELECT n.nspname || '.' || p.proname AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
       WHERE n.nspname || '.' || p.proname = ANY($1::text[])`,
      [wanted.map((f) => f.join("."))],
    ),
  );
  if (expected.claimFunction) {
    const name = expected.claimFunction.join(".");
    checks.push(
      functions.has(name) ? { check: "claim function", ok: true, detail: `${name} exists` } : {
        check: "claim function",
        ok: false,
        detail: `${name} is missing: each claim falls back to a transaction of 3 round trips`,
        fix: "run `outbox setup`",
      },
    );
  }
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

/** The table's checks on libSQL / SQLite. */
async function libsqlChecks(c: Connection): Promise<Check[]> {
  const expected = expectedFrom(libsqlSchema({ table: c.tableName }));
  const [version] = await c.query("SELECT sqlite_version() AS v");
  const checks: Check[] = [{ check: "connect", ok: true, detail: `libSQL (SQLite ${version?.v}) at ${c.where}` }];
  const columns = names(await c.query("SELECT name FROM pragma_table_info(?)", [c.tableName]));
  if (!tableCheck(checks, c, columns.size > 0)) return checks;
  checks.push(columnCheck(expected.columns, columns));
  const indexes = names(
    await c.query("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", [c.tableName]),
  );
  checks.push(...indexChecks(expected.indexes, indexes));
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

function columnCheck(expected: readonly string[], found: ReadonlySet<string>): Check {
  const missing = expected.filter((name) => !found.has(name));
  return missing.length === 0 ? { check: "columns", ok: true, detail: `all ${expected.length} columns` } : {
    check: "columns",
    ok: false,
    detail: `missing ${missing.join(", ")}: the table was made by an older version or by hand`,
    fix: "add the columns as postgresSchema()/libsqlSchema() declare them",
  };
}

function indexChecks(expected: readonly string[], found: ReadonlySet<string>): Check[] {
  return expected.map((name) =>
    found.has(name)
      ? { check: "index", ok: true, detail: `${name} exists` }
      : { check: "index", ok: false, detail: `${name} is missing`, fix: "run `outbox setup` (creates missing indexes)" }
  );
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
  summary: "check the table, its indexes and claim function, and a JetStream stream's dedup window",
  usage: "[--url URL] [--nats URL --stream NAME [--lease-ms MS] [--max-delay-ms MS]] [--json]",
  details: [
    "Each check prints one line, ok or FAIL with a fix; exits 1 if any fails.",
    "With --nats and --stream, the stream's duplicate_window must be at least the outbox's",
    "retry horizon (leaseMs + retry.maxDelayMs; defaults 30s + 60s), or a retry after the",
    "window is stored twice. Give your relay's --lease-ms and --max-delay-ms if you changed them.",
  ].join("\n"),
  flags: {
    ...CONNECTION_FLAGS,
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
        checks = connection.kind === "postgres" ? await postgresChecks(connection) : await libsqlChecks(connection);
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
