/**
 * The `outbox` CLI, run as a real child process from the sources: `bun cli/mod.ts …`
 * under `bun test`, `deno run -A cli/mod.ts …` under `deno test` (the npm bin under Node
 * is tests/node/cli.test.mjs). Against Postgres (a schema per test), MariaDB (tables of
 * their own per test, in the shared database `test`), a libSQL file (a temp folder) and
 * sqld with a JWT (as Turso), and a JetStream stream for `doctor`.
 *
 * Every run is awaited to its exit; nothing waits on a timer (one test gives a child a
 * deadline, to see that it exits at all). Rows are made by the library itself: dead ones
 * by a tick whose publisher fails with `maxAttempts: 1`, an "old" pending one by an
 * outbox whose clock runs an hour behind, fan-out rows by an outbox with `publishers`,
 * one destination of which fails.
 */

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { type Client, createClient } from "@libsql/client";
import { createOutbox, type Outbox, type OutboxMessage, PublishError } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { mysqlStorage } from "../adapters/mysql/mod.ts";
import { type PostgresSql, postgresStorage } from "../adapters/postgres/mod.ts";
import { main, VERSION } from "../cli/mod.ts";
import { runtime, test } from "./harness.ts";
import { dropTables, inTransaction, MYSQL_URL, openPool, uniqueTable } from "./mysql_helpers.ts";
import { NATS_URL, natsStream } from "./nats_helpers.ts";
import { openSql, PG_URL, uniqueSchema } from "./postgres_helpers.ts";
import { startSqld } from "./sqld_helpers.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const proc = (globalThis as unknown as { process: { execPath: string; env: Record<string, string | undefined> } })
  .process;

/** What one CLI run printed and how it exited. */
interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The CLI as this runtime runs it from the sources. */
const CLI: readonly string[] = runtime === "deno" ? ["run", "-A", "cli/mod.ts"] : ["cli/mod.ts"];

/** Runs `outbox …args` to its exit. The parent's OUTBOX_* variables are not passed on. */
function cli(args: readonly string[], env: Record<string, string> = {}): Promise<Run> {
  return runtimeRun([...CLI, ...args], env);
}

/**
 * Runs this runtime's executable with `args` in the repository, to its exit, without the
 * parent's OUTBOX_* variables. With `deadlineMs`, a child still running then is killed
 * and the run fails: for a test of whether a process exits at all.
 */
function runtimeRun(args: readonly string[], env: Record<string, string> = {}, deadlineMs?: number): Promise<Run> {
  const base: Record<string, string> = { NO_COLOR: "1" };
  for (const [k, v] of Object.entries(proc.env)) if (v !== undefined && !k.startsWith("OUTBOX_")) base[k] = v;
  return new Promise((resolve, reject) => {
    const child = spawn(proc.execPath, [...args], {
      cwd: root,
      env: { ...base, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    const deadline = deadlineMs === undefined ? undefined : setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`still running after ${deadlineMs} ms; stdout:\n${stdout}\nstderr:\n${stderr}`));
    }, deadlineMs);
    child.stdout!.on("data", (chunk) => (stdout += chunk));
    child.stderr!.on("data", (chunk) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(deadline);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** Asserts an exit code, showing the run's output when it differs. */
function exits(run: Run, code: number, what: string): void {
  assert.equal(run.code, code, `${what}: exit ${run.code}, stdout:\n${run.stdout}\nstderr:\n${run.stderr}`);
}

/** Asserts that a run failed with exactly one `outbox: …` line on stderr and no stack trace. */
function oneErrorLine(run: Run, code: number, pattern: RegExp, what: string): void {
  exits(run, code, what);
  const lines = run.stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `${what}: one line on stderr, got:\n${run.stderr}`);
  assert.match(lines[0]!, /^outbox: /, what);
  assert.match(lines[0]!, pattern, what);
  assert.doesNotMatch(run.stderr, /^\s+at /m, `${what}: no stack trace`);
}

const json = (run: Run) => JSON.parse(run.stdout);

/** A database the CLI is pointed at, and the library on the same table. */
interface Backend {
  readonly kind: "postgres" | "mysql" | "libsql";
  /** `--url …` and whatever else selects the database (`--schema`, `--auth-token`). */
  readonly connection: readonly string[];
  /** `connection`, and `--table` where the table `outbox` has another name (MySQL). */
  readonly args: readonly string[];
  /**
   * The name of the table called `base` in a test: `base` itself, or on MySQL, where
   * every test shares the database `test`, a name of this backend's own.
   */
  table(base: string): string;
  /** An outbox on the table; `publisher` fails every publish. */
  outbox(options?: { now?: () => number; failing?: boolean }): Outbox<unknown, unknown>;
  /** The storage of another table in the same database (schema). */
  storage(table: string): unknown;
  enqueue(outbox: Outbox<unknown, unknown>, messages: OutboxMessage[]): Promise<void>;
  /** Runs SQL on the database (DDL for doctor's failures). */
  exec(sql: string): Promise<void>;
  /** Quotes a table-level name (schema-qualified on Postgres). */
  qualify(name: string): string;
  /** A table-level name as the CLI prints it: `schema.name`, `database.name` (MySQL) or `name`. */
  shown(name: string): string;
  /** Drops index `name` of `table`. */
  dropIndex(table: string, name: string): Promise<void>;
  /** An index `setup()` makes at every schema version, as `<table>_<suffix>`: lifecycle drops it. */
  readonly indexSuffix: string;
  close(): Promise<void>;
}

function outboxOn(storage: unknown, options: { now?: () => number; failing?: boolean } = {}) {
  return createOutbox({
    storage: storage as never,
    publisher: () => {
      // A lastError with a newline and a terminal escape: the table must not pass them through.
      if (options.failing) throw new Error("broker down\n\u001b[31mred");
    },
    retry: { maxAttempts: 1 },
    now: options.now,
  }) as Outbox<unknown, unknown>;
}

async function postgresBackend(): Promise<Backend> {
  const schema = uniqueSchema("cli");
  const sql = openSql(2);
  const storage = postgresStorage(sql as unknown as PostgresSql, { schema });
  const connection = ["--url", PG_URL, "--schema", schema];
  const qualify = (name: string) => `"${schema}"."${name}"`;
  return {
    kind: "postgres",
    connection,
    args: connection,
    table: (base) => base,
    outbox: (options) => outboxOn(storage, options),
    storage: (table) => postgresStorage(sql as unknown as PostgresSql, { schema, table }),
    enqueue: async (outbox, messages) => void (await outbox.enqueue(sql, messages)),
    exec: async (text) => void (await sql.unsafe(text)),
    qualify,
    shown: (name) => `${schema}.${name}`,
    dropIndex: async (_table, name) => void (await sql.unsafe(`DROP INDEX ${qualify(name)}`)),
    indexSuffix: "key_dest_idx",
    async close() {
      await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await sql.end();
    },
  };
}

/**
 * MariaDB (or MySQL): the database `test` of the shared server, so each backend has
 * tables of its own (`cli_…_outbox`, `cli_…_fan`), dropped with their version tables.
 */
function mysqlBackend(): Backend {
  const prefix = uniqueTable("cli");
  const tables = new Set<string>();
  const table = (base: string) => {
    const name = `${prefix}_${base}`;
    tables.add(name);
    return name;
  };
  const pool = openPool(2);
  const storage = mysqlStorage(pool, { table: table("outbox") });
  const connection = ["--url", MYSQL_URL];
  const database = new URL(MYSQL_URL).pathname.slice(1);
  return {
    kind: "mysql",
    connection,
    args: [...connection, "--table", table("outbox")],
    table,
    outbox: (options) => outboxOn(storage, options),
    storage: (name) => mysqlStorage(pool, { table: name }),
    enqueue: (outbox, messages) => inTransaction(pool, async (conn) => void (await outbox.enqueue(conn, messages))),
    exec: async (text) => void (await pool.query(text)),
    qualify: (name) => `\`${name}\``,
    shown: (name) => `${database}.${name}`,
    dropIndex: async (on, name) => void (await pool.query(`DROP INDEX \`${name}\` ON \`${on}\``)),
    indexSuffix: "wait_dest_idx",
    async close() {
      try {
        for (const name of tables) await dropTables(pool, name);
      } finally {
        await pool.end();
      }
    },
  };
}

function libsqlBackend(client: Client, args: readonly string[], close: () => Promise<void>): Backend {
  const storage = libsqlStorage(client);
  return {
    kind: "libsql",
    connection: args,
    args,
    table: (base) => base,
    outbox: (options) => outboxOn(storage, options),
    storage: (table) => libsqlStorage(client, { table }),
    enqueue: async (outbox, messages) => void (await outbox.enqueue(client, messages)),
    exec: async (text) => void (await client.execute(text)),
    qualify: (name) => `"${name}"`,
    shown: (name) => name,
    dropIndex: async (_table, name) => void (await client.execute(`DROP INDEX "${name}"`)),
    indexSuffix: "key_dest_idx",
    close: async () => {
      client.close();
      await close();
    },
  };
}

function fileBackend(): Backend {
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-cli-"));
  const url = `file:${join(dir, "app.db")}`;
  return libsqlBackend(
    createClient({ url }),
    ["--url", url],
    async () => rmSync(dir, { recursive: true, force: true }),
  );
}

async function sqldBackend(): Promise<Backend & { url: string; token: string }> {
  const sqld = await startSqld({ auth: true });
  const token = sqld.authToken!;
  const backend = libsqlBackend(
    createClient({ url: sqld.url, authToken: token }),
    ["--url", sqld.url, "--auth-token", token],
    () => sqld.stop(),
  );
  return { ...backend, url: sqld.url, token };
}

async function withBackend<B extends Backend>(open: () => B | Promise<B>, body: (b: B) => Promise<void>) {
  const backend = await open();
  try {
    await body(backend);
  } finally {
    await backend.close();
  }
}

/**
 * The operator's round trip on one database: setup, counts, dead messages listed,
 * requeued and purged, the health check both ways, doctor both ways.
 */
async function lifecycle(b: Backend, name: string): Promise<void> {
  const setup = await cli(["setup", ...b.args]);
  exits(setup, 0, "setup");
  assert.match(setup.stdout, /is set up at .*: schema version 2$/m);

  const empty = json(await cli(["status", ...b.args, "--json"]));
  assert.deepEqual(
    [
      empty.pending,
      empty.processing,
      empty.published,
      empty.dead,
      empty.topics,
      empty.destinations,
      empty.oldestPendingAt,
    ],
    [0, 0, 0, 0, {}, {}, null],
  );

  // Two dead messages and one pending message, all made an hour ago; one pending now.
  const hourAgo = () => Date.now() - 3_600_000;
  const past = b.outbox({ now: hourAgo, failing: true });
  await b.enqueue(past, [
    { id: "d-1", topic: "orders.failed", key: "k1", payload: { n: 1, html: "<script>x</script>" } },
    { id: "d-2", topic: "orders.failed", key: "k2", payload: { n: 2 } },
  ]);
  const report = await past.tick();
  assert.equal(report.dead, 2, `${name}: the failing tick made both messages dead`);
  await b.enqueue(past, [{ id: "p-1", topic: "orders.created", key: "k3", payload: { n: 3 } }]);
  await b.enqueue(b.outbox(), [{ id: "p-2", topic: "orders.created", payload: new Uint8Array([1, 2, 255]) }]);

  const status = await cli(["status", ...b.args, "--json"]);
  exits(status, 0, "status --json");
  const s = json(status);
  assert.deepEqual([s.pending, s.processing, s.published, s.dead, s.blockedKeys], [2, 0, 0, 2, 0]);
  assert.deepEqual(s.topics, {
    "orders.failed": { pending: 0, processing: 0, published: 0, dead: 2 },
    "orders.created": { pending: 2, processing: 0, published: 0, dead: 0 },
  });
  assert.ok(
    s.oldestPendingAgeMs >= 3_500_000,
    `the oldest pending message is about an hour old: ${s.oldestPendingAgeMs}`,
  );
  assert.equal(typeof s.oldestPendingAt, "string");
  assert.deepEqual(s.destinations, { "": { pending: 2, processing: 0, published: 0, dead: 2 } }, 'one publisher: ""');
  const table = await cli(["status", ...b.args]);
  exits(table, 0, "status");
  assert.match(table.stdout, /^dead\s+2$/m);
  assert.match(table.stdout, /^orders\.created\s+2\s+0\s+0\s+0$/m);
  assert.doesNotMatch(table.stdout, /DESTINATION/, "no destination table without fan-out");
  assert.match(table.stdout, /^oldest pending\s+1h (?:[0-9]+m )?\(since /m);

  // The health check: an hour-old message fails 30m and passes 2h.
  const stale = await cli(["status", ...b.args, "--max-age", "30m"]);
  oneErrorLine(stale, 1, /longer than --max-age 30m/, "status --max-age 30m");
  assert.match(stale.stdout, /max age\s+FAIL/);
  exits(await cli(["status", ...b.args, "--max-age", "2h"]), 0, "status --max-age 2h");
  assert.equal(json(await cli(["status", ...b.args, "--max-age", "30m", "--json"])).healthy, false);

  // list: the dead ones, with their error; a page at a time; payloads on request.
  const dead = json(await cli(["list", ...b.args, "--status", "dead", "--json"]));
  assert.deepEqual(dead.messages.map((m: { id: string }) => m.id), ["d-1", "d-2"]);
  assert.equal(dead.next, null);
  assert.equal(dead.messages[0].attempts, 1);
  assert.equal(dead.messages[0].status, "dead");
  assert.equal(dead.messages[0].destination, "");
  assert.match(dead.messages[0].lastError, /broker down/);
  assert.equal(dead.messages[0].payload, undefined, "no payload without --payload");
  const withPayload = json(await cli(["list", ...b.args, "--payload", "--json"]));
  assert.deepEqual(withPayload.messages.map((m: { payload: unknown }) => m.payload), [
    { n: 1, html: "<script>x</script>" },
    { n: 2 },
    { n: 3 },
    null,
  ]);
  assert.equal(withPayload.messages[3].payloadBase64, "AQL/");
  const page1 = json(await cli(["list", ...b.args, "--limit", "1", "--json"]));
  assert.equal(page1.messages[0].id, "d-1");
  const page2 = json(await cli(["list", ...b.args, "--limit", "1", "--after", String(page1.next), "--json"]));
  assert.equal(page2.messages[0].id, "d-2");
  const byKey = json(await cli(["list", ...b.args, "--key", "k3", "--json"]));
  assert.deepEqual(byKey.messages.map((m: { id: string }) => m.id), ["p-1"]);

  const listed = await cli(["list", ...b.args, "--payload"]);
  exits(listed, 0, "list");
  const lines = listed.stdout.trimEnd().split("\n");
  assert.match(
    lines[0]!,
    /^\s*SEQ\s+ID\s+TOPIC\s+KEY\s+STATUS\s+ATTEMPTS\s+CREATED\s+LAST ERROR\s+PAYLOAD$/,
    "no destination column when every row is the one publisher's",
  );
  assert.equal(lines.length, 5, "a header and four rows");
  assert.match(lines[1]!, /d-1\s+orders\.failed\s+k1\s+dead\s+1\s+.*broker down \?\[31mred/);
  assert.match(lines[4]!, /<3 bytes> 0102ff/);
  assert.ok(!listed.stdout.includes("\u001b"), "no terminal escape from a stored error reaches the terminal");

  // requeue one by id, then purge: without --yes it only counts.
  const requeued = await cli(["requeue", ...b.args, "--status", "dead", "--id", "d-1"]);
  exits(requeued, 0, "requeue");
  assert.equal(requeued.stdout, "requeued 1 dead message\n");
  const dry = await cli(["purge", ...b.args, "--status", "dead"]);
  oneErrorLine(dry, 2, /add --yes/, "purge without --yes");
  assert.equal(dry.stdout, "would purge 1 dead message\n");
  assert.equal(json(await cli(["purge", ...b.args, "--status", "dead", "--topic", "nope", "--json"])).wouldPurge, 0);
  const young = await cli(["purge", ...b.args, "--status", "dead", "--older-than", "2h", "--yes"]);
  exits(young, 0, "purge --older-than 2h");
  assert.equal(young.stdout, "purged 0 dead messages\n", "settled an hour ago: not older than 2h");
  const purged = await cli(["purge", ...b.args, "--status", "dead", "--yes", "--json"]);
  exits(purged, 0, "purge --yes");
  assert.deepEqual(json(purged), { purged: 1 });
  const after = json(await cli(["status", ...b.args, "--json"]));
  assert.deepEqual([after.pending, after.dead], [3, 0]);

  // doctor: all ok on the set-up table, then a dropped index is named.
  const t = b.table("outbox");
  const index = `${t}_${b.indexSuffix}`;
  const ok = await cli(["doctor", ...b.args]);
  exits(ok, 0, "doctor");
  assert.match(ok.stdout, /^ok\s+connect\s+(?:Postgres|MariaDB|MySQL|libSQL) \S/m);
  assert.match(ok.stdout, new RegExp(`^ok\\s+table\\s+${escaped(b.shown(t))} exists$`, "m"));
  assert.match(
    ok.stdout,
    new RegExp(`^ok\\s+schema version\\s+version 2 \\(recorded in ${escaped(b.shown(`${t}_schema`))}\\); fan-out`, "m"),
  );
  assert.match(ok.stdout, new RegExp(`^ok\\s+index\\s+${index} exists$`, "m"));
  assert.doesNotMatch(ok.stdout, /FAIL/);
  await b.dropIndex(t, index);
  const broken = await cli(["doctor", ...b.args]);
  exits(broken, 1, `doctor without ${index}`);
  assert.match(broken.stdout, new RegExp(`^FAIL\\s+index\\s+${index} is missing; fix: run \`outbox setup\``, "m"));
  assert.match(broken.stdout, /^1 of \d+ checks failed$/m);
  const report2 = json(await cli(["doctor", ...b.args, "--json"]));
  assert.equal(report2.ok, false);
  const failed = report2.checks.filter((c: { ok: boolean }) => !c.ok);
  assert.deepEqual(failed.map((c: { detail: string }) => c.detail), [`${index} is missing`]);
  exits(await cli(["setup", ...b.args]), 0, "setup again");
  exits(await cli(["doctor", ...b.args]), 0, "doctor after the fix");
}

/** Text for a RegExp that matches it literally. */
const escaped = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Counts by status, as `status --json` prints them per topic and destination. */
const counts = (pending: number, processing: number, published: number, dead: number) => ({
  pending,
  processing,
  published,
  dead,
});

/**
 * Fan-out on a table of its own (`fan`): a table of version 1 found and upgraded (MySQL,
 * which starts at 2: one without its version table), `setup --fan-out` to version 3, then
 * rows for the one publisher (`""`) and for two destinations, one of which fails: status,
 * list, requeue and purge by destination, and doctor's schema version check both ways.
 */
async function fanOut(b: Backend, name: string): Promise<void> {
  const fanTable = b.table("fan");
  const args = [...b.connection, "--table", fanTable];
  const schemaTable = b.qualify(`${fanTable}_schema`);
  exits(await cli(["setup", ...args]), 0, "setup");

  if (b.kind === "mysql") {
    // No MySQL table was ever at version 1. One without its version table (drizzle-kit's,
    // or made by hand) is read by its layout, and setup records the version.
    await b.exec(`DROP TABLE ${schemaTable}`);
    const bare = await cli(["doctor", ...args]);
    exits(bare, 0, `${name}: doctor on a table without its version table`);
    assert.match(
      bare.stdout,
      new RegExp(
        `^ok\\s+schema version\\s+version 2 \\(by its layout, with no ${
          escaped(b.shown(`${fanTable}_schema`))
        }: made by drizzle-kit or by hand\\); fan-out \\(publishers\\) needs 3`,
        "m",
      ),
    );
  } else {
    // A table as @x/outbox 0.1.0 left it: no destination column and no version table.
    await b.dropIndex(fanTable, `${fanTable}_claim_dest_idx`);
    await b.dropIndex(fanTable, `${fanTable}_key_dest_idx`);
    await b.exec(`DROP TABLE ${schemaTable}`);
    await b.exec(`ALTER TABLE ${b.qualify(fanTable)} DROP COLUMN destination`);
    const old = await cli(["doctor", ...args]);
    exits(old, 1, `${name}: doctor on a version 1 table`);
    assert.match(
      old.stdout,
      /^FAIL\s+schema version\s+version 1 \(a table of @x\/outbox 0\.1\.0, with no (?:\S+\.)?fan_schema\); setup\(\) makes version 2; fix: run `outbox setup`/m,
    );
    assert.match(old.stdout, /^FAIL\s+columns\s+missing destination: .*fix: run `outbox setup`/m);
  }
  const upgraded = await cli(["setup", ...args]);
  exits(upgraded, 0, "setup of the old table");
  assert.match(upgraded.stdout, /^outbox table \S*fan is set up at .*: schema version 2$/m);

  // Version 2 serves one publisher; publishers need 3.
  const single = createOutbox({ storage: b.storage(fanTable) as never, publisher: () => {} });
  await b.enqueue(single as Outbox<unknown, unknown>, [{ id: "s-1", topic: "orders.created", payload: { n: 0 } }]);
  const two = await cli(["doctor", ...args]);
  exits(two, 0, "doctor on version 2");
  assert.match(two.stdout, /^ok\s+schema version\s+version 2 \(recorded in \S+\); fan-out \(publishers\) needs 3/m);
  const needsThree = await cli(["doctor", ...args, "--fan-out"]);
  exits(needsThree, 1, "doctor --fan-out on version 2");
  assert.match(
    needsThree.stdout,
    /^FAIL\s+schema version\s+version 2 .*fan-out \(publishers\) needs 3; fix: run `outbox setup --fan-out`/m,
  );
  const ready = await cli(["setup", ...args, "--fan-out"]);
  exits(ready, 0, "setup --fan-out");
  assert.match(ready.stdout, /: schema version 3 \(fan-out\)$/m);
  assert.deepEqual(
    json(await cli(["setup", ...args, "--json"])),
    { ok: true, table: b.shown(fanTable), schemaVersion: 3, fanOut: true },
    "setup without --fan-out never downgrades",
  );

  // nats takes everything, hooks the orders (and fails them for good).
  const fan = createOutbox({
    storage: b.storage(fanTable) as never,
    publishers: {
      nats: () => {},
      hooks: (m) => {
        throw new PublishError(`HTTP 410 from hooks for ${m.id}`, { permanent: true });
      },
    },
    route: (m) => (m.topic.startsWith("orders.") ? ["nats", "hooks"] : ["nats"]),
    retention: { publishedMs: 3_600_000 },
  }) as Outbox<unknown, unknown>;
  await b.enqueue(fan, [
    { id: "f-1", topic: "orders.created", key: "o-1", payload: { n: 1 } },
    { id: "f-2", topic: "orders.paid", key: "o-1", payload: { n: 2 } },
    { id: "f-3", topic: "emails.send", payload: { n: 3 } },
  ]);
  const report = await fan.tick();
  assert.deepEqual([report.published, report.dead], [3, 2], `${name}: nats published 3, hooks gave up on 2`);

  const status = json(await cli(["status", ...args, "--json"]));
  assert.deepEqual([status.pending, status.published, status.dead], [1, 3, 2], "counts are rows");
  assert.deepEqual(status.destinations, {
    "": counts(1, 0, 0, 0),
    hooks: counts(0, 0, 0, 2),
    nats: counts(0, 0, 3, 0),
  });
  assert.deepEqual(status.topics["orders.created"], counts(1, 0, 1, 1));
  const shown = await cli(["status", ...args]);
  exits(shown, 0, "status");
  assert.match(shown.stdout, /^DESTINATION\s+PENDING\s+PROCESSING\s+PUBLISHED\s+DEAD$/m);
  assert.match(shown.stdout, /^\(default\)\s+1\s+0\s+0\s+0$/m);
  assert.match(shown.stdout, /^hooks\s+0\s+0\s+0\s+2$/m);
  assert.match(shown.stdout, /^nats\s+0\s+0\s+3\s+0$/m);

  // list: a destination column, and --destination (a name, '' or '(default)' for the one publisher's rows).
  const ids = async (...more: string[]) =>
    json(await cli(["list", ...args, ...more, "--json"])).messages.map((m: { id: string; destination: string }) =>
      `${m.id}@${m.destination}`
    );
  assert.deepEqual(await ids("--destination", "hooks"), ["f-1@hooks", "f-2@hooks"]);
  assert.deepEqual(await ids("--destination=nats"), ["f-1@nats", "f-2@nats", "f-3@nats"]);
  assert.deepEqual(await ids("--destination", ""), ["s-1@"]);
  assert.deepEqual(await ids("--destination="), ["s-1@"]);
  assert.deepEqual(await ids("--destination", "(default)"), ["s-1@"]);
  assert.deepEqual(await ids("--destination", "hooks", "--status", "published"), []);
  assert.deepEqual(await ids("--destination", "nowhere"), []);
  const listed = await cli(["list", ...args]);
  exits(listed, 0, "list");
  const lines = listed.stdout.trimEnd().split("\n");
  assert.match(lines[0]!, /^\s*SEQ\s+ID\s+DESTINATION\s+TOPIC\s+KEY\s+STATUS\s+ATTEMPTS\s+CREATED\s+LAST ERROR$/);
  assert.match(lines[1]!, /^\s*\d+\s+s-1\s+\(default\)\s+orders\.created\s+-\s+pending\s+0\s/);
  assert.ok(lines.some((l) => /\sf-1\s+hooks\s+orders\.created\s+o-1\s+dead\s+1\s.*HTTP 410 from hooks/.test(l)));
  const hooksOnly = await cli(["list", ...args, "--destination", "hooks"]);
  assert.equal(hooksOnly.stdout.trimEnd().split("\n").length, 3, "a header and the two hooks rows");

  // requeue and purge act on one destination: f-1's other rows stay as they are.
  const requeued = await cli(["requeue", ...args, "--status", "published", "--id", "f-1", "--destination", "nats"]);
  exits(requeued, 0, "requeue --destination nats");
  assert.equal(requeued.stdout, "requeued 1 published message\n");
  const dry = await cli(["purge", ...args, "--status", "dead", "--destination", "hooks", "--json"]);
  exits(dry, 2, "purge --destination without --yes");
  assert.deepEqual(json(dry), { wouldPurge: 2 });
  assert.deepEqual(
    json(await cli(["purge", ...args, "--status", "dead", "--destination", "hooks", "--id", "f-2", "--json"])),
    { wouldPurge: 1 },
  );
  assert.equal(
    (await cli(["purge", ...args, "--status", "dead", "--destination", "nats", "--yes"])).stdout,
    "purged 0 dead messages\n",
  );
  const purged = await cli(["purge", ...args, "--status", "dead", "--destination", "hooks", "--id", "f-1", "--yes"]);
  exits(purged, 0, "purge --destination hooks --id f-1");
  assert.equal(purged.stdout, "purged 1 dead message\n");
  assert.deepEqual(json(await cli(["status", ...args, "--json"])).destinations, {
    "": counts(1, 0, 0, 0),
    hooks: counts(0, 0, 0, 1),
    nats: counts(1, 0, 2, 0),
  });

  // doctor on version 3, and on a version newer than this code.
  const doctor = await cli(["doctor", ...args, "--fan-out"]);
  exits(doctor, 0, "doctor --fan-out on version 3");
  assert.match(doctor.stdout, /^ok\s+schema version\s+version 3 \(recorded in \S+\); ready for fan-out$/m);
  assert.doesNotMatch(doctor.stdout, /FAIL/);
  await b.exec(`UPDATE ${schemaTable} SET version = 9`);
  const newer = json(await cli(["doctor", ...args, "--json"]));
  assert.equal(newer.ok, false);
  assert.deepEqual(newer.checks.find((c: { check: string }) => c.check === "schema version"), {
    check: "schema version",
    ok: false,
    detail: `version 9 (recorded in ${b.shown(`${fanTable}_schema`)}) is newer than this @x/outbox (3)`,
    fix: "upgrade @x/outbox (npm install @x/outbox@latest)",
  });
  oneErrorLine(await cli(["setup", ...args]), 1, /schema version 9\b.*newer than this @x\/outbox/, "setup on 9");
  await b.exec(`UPDATE ${schemaTable} SET version = 3`);
}

test(
  `cli (${runtime}): setup, status, list, requeue, purge and doctor on Postgres`,
  () =>
    withBackend(postgresBackend, async (b) => {
      await lifecycle(b, "postgres");
      // Postgres only: the claim functions, the old one setup() drops, and version 1's indexes.
      const fn = b.qualify("outbox_claim");
      await b.exec(`CREATE FUNCTION ${fn}(bigint, integer, text, bigint) RETURNS void LANGUAGE sql AS ''`);
      await b.exec(`DROP FUNCTION ${b.qualify("outbox_claim_v3")}`);
      await b.exec(`CREATE INDEX outbox_claim_idx ON ${b.qualify("outbox")} (seq)`);
      const broken = await cli(["doctor", ...b.args]);
      exits(broken, 1, "doctor with the old claim function");
      assert.match(broken.stdout, /^FAIL\s+claim function\s+\S+outbox_claim_v3 is missing/m);
      assert.match(broken.stdout, /^ok\s+claim function\s+\S+outbox_claim_v2 exists$/m, "kept for 0.1 relays");
      assert.match(broken.stdout, /^FAIL\s+old claim function\s+\S+\.outbox_claim of a version before 0\.2/m);
      assert.match(broken.stdout, /^FAIL\s+old indexes\s+outbox_claim_idx of schema version 1 still there/m);
      exits(await cli(["setup", ...b.args]), 0, "setup");
      exits(await cli(["doctor", ...b.args]), 0, "doctor after setup");
    }),
  { timeout: 120_000 },
);

test(
  `cli (${runtime}): setup, status, list, requeue, purge and doctor on MariaDB, also as mariadb:// and from OUTBOX_URL`,
  () =>
    withBackend(mysqlBackend, async (b) => {
      await lifecycle(b, "mariadb");
      const table = ["--table", b.table("outbox")];
      const alias = MYSQL_URL.replace(/^mysql:/, "mariadb:");
      const [viaAlias, fromEnv] = await Promise.all([
        cli(["status", "--url", alias, ...table, "--json"]),
        cli(["status", ...table, "--json"], { OUTBOX_URL: MYSQL_URL }),
      ]);
      exits(viaAlias, 0, "status on a mariadb:// URL");
      assert.equal(json(viaAlias).pending, 3);
      exits(fromEnv, 0, "status from OUTBOX_URL");
      assert.equal(json(fromEnv).table, b.shown(b.table("outbox")));
    }),
  { timeout: 120_000 },
);

test(
  `cli (${runtime}): setup, status, list, requeue, purge and doctor on a libSQL file`,
  () => withBackend(fileBackend, (b) => lifecycle(b, "libsql file")),
  { timeout: 120_000 },
);

test(
  `cli (${runtime}): the same on sqld over HTTP with a JWT, from flags or OUTBOX_URL and OUTBOX_AUTH_TOKEN`,
  () =>
    withBackend(sqldBackend, async (b) => {
      await lifecycle(b, "sqld");
      const fromEnv = await cli(["status", "--json"], { OUTBOX_URL: b.url, OUTBOX_AUTH_TOKEN: b.token });
      exits(fromEnv, 0, "status from the environment");
      assert.equal(json(fromEnv).pending, 3);
      const noToken = await cli(["status", "--url", b.url]);
      oneErrorLine(
        noToken,
        1,
        /cannot connect to .*pass --auth-token or set OUTBOX_AUTH_TOKEN/,
        "status without a token",
      );
    }),
  { timeout: 120_000 },
);

for (
  const [where, open] of [
    ["Postgres", postgresBackend],
    ["MariaDB", mysqlBackend],
    ["a libSQL file", fileBackend],
    ["sqld over HTTP", sqldBackend],
  ] as const
) {
  test(
    `cli (${runtime}): fan-out on ${where}: upgrade, setup --fan-out, counts, list, requeue and purge by destination`,
    () => withBackend<Backend>(open, (b) => fanOut(b, where)),
    { timeout: 120_000 },
  );
}

test(
  `cli (${runtime}): doctor --nats fails a stream whose duplicate window is shorter than the retry horizon`,
  () =>
    withBackend(fileBackend, async (b) => {
      exits(await cli(["setup", ...b.args]), 0, "setup");
      const short = await natsStream({ duplicateWindowMs: 1_000 });
      const long = await natsStream({ duplicateWindowMs: 120_000 });
      try {
        const nats = ["--nats", NATS_URL];
        const [fail, pass, tuned, missing] = await Promise.all([
          cli(["doctor", ...b.args, ...nats, "--stream", short.name]),
          cli(["doctor", ...b.args, ...nats, "--stream", long.name]),
          cli(["doctor", ...b.args, ...nats, "--stream", long.name, "--lease-ms", "60000", "--max-delay-ms", "2m"]),
          cli(["doctor", ...b.args, ...nats, "--stream", `${short.name}_GONE`]),
        ]);
        exits(fail, 1, "doctor on a 1s window");
        assert.match(
          fail.stdout,
          new RegExp(`^FAIL\\s+stream\\s+${short.name}: duplicate_window 1s, retry horizon 1m 30s; .*fix: raise`, "m"),
        );
        exits(pass, 0, "doctor on a 2m window");
        assert.match(
          pass.stdout,
          new RegExp(`^ok\\s+stream\\s+${long.name}: duplicate_window 2m, retry horizon 1m 30s$`, "m"),
        );
        exits(tuned, 1, "doctor with a 3m horizon on a 2m window");
        assert.match(tuned.stdout, /retry horizon 3m/);
        exits(missing, 1, "doctor on a missing stream");
        assert.match(missing.stdout, /^FAIL\s+stream\s+.*not found/m);
      } finally {
        await short.close();
        await long.close();
      }
    }),
  { timeout: 120_000 },
);

test(`cli (${runtime}): a database that cannot be used is one line on stderr and exit 1`, async () => {
  const schema = uniqueSchema("cli");
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-cli-"));
  /** The test server's URL with another port or database. */
  const mysqlAt = (port: string, database?: string) => {
    const url = new URL(MYSQL_URL);
    url.port = port;
    if (database !== undefined) url.pathname = `/${database}`;
    return url.href;
  };
  // A password the server refuses (the test user has none): it never reaches the output.
  const wrongPassword = MYSQL_URL.replace(/^mysql:\/\/([^:@/]+)(?::[^@/]*)?@/, "mysql://$1:s3cr3t-pw@");
  try {
    const [noTable, refused, noFile, doctorRefused, mysqlNoTable, mysqlRefused, mysqlDoctor, mysqlDenied, noDatabase] =
      await Promise.all([
        cli(["status", "--url", PG_URL, "--schema", schema]),
        cli(["list", "--url", "postgres://postgres@127.0.0.1:1/test"]),
        cli(["status", "--url", `file:${join(dir, "typo.db")}`]),
        cli(["doctor", "--url", "postgres://postgres@127.0.0.1:1/test"]),
        cli(["status", "--url", MYSQL_URL, "--table", uniqueTable("cli_none")]),
        cli(["list", "--url", mysqlAt("1")]),
        cli(["doctor", "--url", mysqlAt("1")]),
        cli(["status", "--url", wrongPassword]),
        cli(["status", "--url", mysqlAt(new URL(MYSQL_URL).port, uniqueTable("nodb"))]),
      ]);
    oneErrorLine(noTable, 1, /does not exist; run `outbox setup` first/, "status without the table");
    oneErrorLine(refused, 1, /^outbox: cannot connect to postgres:\/\/postgres@127\.0\.0\.1:1\/test: /, "refused");
    oneErrorLine(noFile, 1, /no database file at .*typo\.db/, "a missing file");
    assert.deepEqual(readdirSync(dir), [], "status created no database file");
    exits(doctorRefused, 1, "doctor, refused");
    assert.match(doctorRefused.stdout, /^FAIL\s+connect\s+cannot connect/m);

    oneErrorLine(mysqlNoTable, 1, /does not exist; run `outbox setup` first/, "MariaDB: status without the table");
    oneErrorLine(
      mysqlRefused,
      1,
      new RegExp(`^outbox: cannot connect to ${escaped(mysqlAt("1"))}: \\S`),
      "MariaDB: refused",
    );
    exits(mysqlDoctor, 1, "MariaDB: doctor, refused");
    assert.match(mysqlDoctor.stdout, /^FAIL\s+connect\s+cannot connect to mysql:\/\//m);
    oneErrorLine(
      mysqlDenied,
      1,
      /^outbox: cannot connect to mysql:\/\/[^:@/]+:\*\*\*@.*: Access denied/,
      "wrong password",
    );
    assert.doesNotMatch(mysqlDenied.stderr, /s3cr3t-pw/, "the password is not printed");
    oneErrorLine(noDatabase, 1, /^outbox: cannot connect to .*: Unknown database 'nodb_/, "MariaDB: no such database");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, { timeout: 60_000 });

test(`cli (${runtime}): usage errors exit 2 with one line on stderr and nothing on stdout`, async () => {
  const file = ["--url", "file:/nonexistent/x.db"];
  const cases: [string[], RegExp][] = [
    [[], /no command given/],
    [["frob"], /unknown command "frob"/],
    [["--frob"], /expected a command before "--frob"/],
    [["status"], /--url is required \(or set OUTBOX_URL\)/],
    [["status", "--url"], /--url needs a value/],
    [["status", "extra", ...file], /status takes no argument "extra"/],
    [["status", ...file, "--bogus"], /unknown flag --bogus for status/],
    [["status", ...file, "--json", "--json"], /--json is given twice/],
    [["status", "--url", "mssql://x/y"], /scheme mssql: is not supported; use postgres:\/\/, mysql:\/\/, mariadb:\/\//],
    [
      ["status", "--url", "mysql://root@127.0.0.1:3306"],
      /"mysql:\/\/root@127\.0\.0\.1:3306" names no database; add it/,
    ],
    [
      ["status", "--url", "mariadb://root@127.0.0.1:3306/"],
      /names no database; add it as the path: mariadb:\/\/user@host/,
    ],
    [
      ["setup", "--url", "mysql://root:pw@127.0.0.1/", "--json"],
      /"mysql:\/\/root:\*\*\*@127\.0\.0\.1\/" names no database/,
    ],
    [
      ["status", "--url", "mysql://root@127.0.0.1:3306/test", "--schema", "s"],
      /--schema is for postgres:\/\/ URLs; on mysql:\/\/ the database is the URL's path/,
    ],
    [
      ["doctor", "--url", "mysql://root@127.0.0.1:3306/test", "--auth-token", "t"],
      /--auth-token is for libsql:\/\/ and http\(s\):\/\/ URLs/,
    ],
    [
      ["status", "--url", "mysql://root@127.0.0.1:3306/test", "--table", "bad-name"],
      /--table must be a plain SQL identifier/,
    ],
    [["status", ...file, "--max-age", "soon"], /--max-age must be a duration/],
    [["status", ...file, "--table", "bad-name"], /--table must be a plain SQL identifier/],
    [["status", ...file, "--schema", "s"], /--schema is for postgres:\/\/ URLs/],
    [["list", ...file, "--limit", "1001"], /--limit must be a whole number from 1 to 1000/],
    [["list", ...file, "--status", "gone"], /--status must be pending, processing, published or dead/],
    [["requeue", ...file, "--status", "pending"], /--status must be dead or published/],
    [["purge", ...file], /purge needs --status/],
    [["purge", ...file, "--status", "dead", "--older-than", "7 days"], /--older-than must be a duration/],
    [["list", ...file, "--destination", "a b"], /--destination must be a destination name .*got "a b"/],
    [["requeue", ...file, "--destination", "x".repeat(65)], /--destination must be a destination name/],
    [["purge", ...file, "--status", "dead", "--destination", "<b>"], /--destination must be a destination name/],
    [["list", ...file, "--destination"], /--destination needs a value/],
    [["setup", ...file, "--fan-out=yes"], /--fan-out takes no value/],
    [["doctor", ...file, "--nats", "127.0.0.1:4222"], /--nats and --stream go together/],
  ];
  const runs = await Promise.all(cases.map(([args]) => cli(args)));
  runs.forEach((run, i) => {
    const [args, pattern] = cases[i]!;
    oneErrorLine(run, 2, pattern, `outbox ${args.join(" ")}`);
    assert.equal(run.stdout, "", `outbox ${args.join(" ")}: nothing on stdout`);
  });
}, { timeout: 60_000 });

test(`cli (${runtime}): --help for the CLI and every command, and --version`, async () => {
  const commands = ["setup", "status", "list", "requeue", "purge", "doctor"];
  const [top, version, ...helps] = await Promise.all([
    cli(["--help"]),
    cli(["--version"]),
    ...commands.map((c) => cli([c, "--help"])),
    cli(["list", "-h"]),
  ]);
  exits(top, 0, "--help");
  assert.match(top.stdout, /--url URL\s+postgres:\/\/…, mysql:\/\/user@host:3306\/db \(or mariadb:\/\/\)/);
  for (const c of commands) assert.match(top.stdout, new RegExp(`^  ${c}\\s+\\S`, "m"), `--help lists ${c}`);
  exits(version, 0, "--version");
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  assert.equal(version.stdout, `${pkg.version}\n`);
  assert.equal(VERSION, pkg.version, "cli/version.ts has the package.json version");
  helps.forEach((run, i) => {
    const c = commands[i] ?? "list";
    exits(run, 0, `${c} --help`);
    assert.match(run.stdout, new RegExp(`^Usage: outbox ${c} `, "m"));
    assert.match(run.stdout, /--url URL/);
    assert.equal(run.stderr, "");
  });
  const doctorHelp = helps[commands.indexOf("doctor")]!.stdout;
  assert.match(doctorHelp, /--nats URL/);
  assert.match(doctorHelp, /--fan-out/);
  assert.match(helps[commands.indexOf("setup")]!.stdout, /--fan-out\s+also ready the table for publishers/);
  for (const c of ["list", "requeue", "purge"]) {
    assert.match(helps[commands.indexOf(c)]!.stdout, /--destination NAME\s+only this destination .*'\(default\)'/, c);
  }
  assert.match(helps[commands.indexOf("status")]!.stdout, /per destination/);
}, { timeout: 60_000 });

test("cli: a missing driver is named in one line (main() in process, its loader failing)", async () => {
  let out = "";
  let err = "";
  const io = {
    stdout: (t: string) => void (out += t),
    stderr: (t: string) => void (err += t),
    env: {},
    loadDriver: () => Promise.reject(new Error("Cannot find package 'postgres'")),
  };
  assert.equal(await main(["status", "--url", "postgres://localhost/app"], io), 1);
  assert.equal(err, "outbox: install postgres to use a postgres:// URL (npm install postgres)\n");
  assert.equal(out, "");
  err = "";
  assert.equal(await main(["status", "--url", "libsql://db.example.turso.io"], io), 1);
  assert.equal(err, "outbox: install @libsql/client to use a libsql: URL (npm install @libsql/client)\n");
  err = "";
  assert.equal(await main(["status", "--url", "mariadb://app@localhost/app"], io), 1);
  assert.equal(err, "outbox: install mysql2 to use a mariadb:// URL (npm install mysql2)\n");
});

test(
  `cli (${runtime}): main() on a mysql:// URL leaves nothing running: a process that never calls exit ends`,
  async () => {
    // bin.ts and `deno run cli/mod.ts` exit explicitly; code that calls main() does not.
    const table = uniqueTable("cli_main");
    const url = JSON.stringify(MYSQL_URL);
    const script = `
      import { main } from ${JSON.stringify(pathToFileURL(join(root, "cli", "mod.ts")).href)};
      const io = { stdout: (t) => console.log(t.trimEnd()), stderr: (t) => console.log(t.trimEnd()), env: {} };
      const table = ["--table", ${JSON.stringify(table)}];
      const codes = [
        await main(["setup", "--url", ${url}, ...table, "--json"], io),
        await main(["doctor", "--url", ${url}, ...table], io),
        await main(["status", "--url", ${url}, "--table", "cli_never_made"], io),
        await main(["status", "--url", "mysql://root@127.0.0.1:1/test"], io),
      ];
      console.log("codes " + codes.join(" "));
    `;
    try {
      const run = await runtimeRun(runtime === "deno" ? ["eval", script] : ["-e", script], {}, 30_000);
      exits(run, 0, "the script");
      assert.match(run.stdout, /^codes 0 0 1 1$/m);
      assert.match(run.stdout, /^all \d+ checks passed$/m);
    } finally {
      const pool = openPool(1);
      await dropTables(pool, table).finally(() => pool.end());
    }
  },
  { timeout: 60_000 },
);

test("cli: only cli/runtime.ts touches the runtime, and only cli/io.ts imports drivers", () => {
  const files = readdirSync(join(root, "cli")).filter((f) => f.endsWith(".ts"));
  assert.ok(files.includes("mod.ts") && files.includes("runtime.ts"));
  for (const file of files) {
    const source = readFileSync(join(root, "cli", file), "utf8").replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
    if (file !== "runtime.ts") {
      assert.doesNotMatch(source, /\b(?:Deno|Bun|process)\s*\.|globalThis/, `${file} uses no runtime global`);
      assert.doesNotMatch(source, /["']node:/, `${file} imports no Node built-in`);
    }
    if (file !== "io.ts") {
      assert.doesNotMatch(source, /import\(\s*["'](?!\.|node:)/, `${file} imports no package dynamically`);
    }
  }
});
