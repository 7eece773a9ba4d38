// The npm bin under Node 20: `node dist/cli/bin.js …` (what `npx @x/outbox …` runs), as a
// child process against Postgres (a schema of its own), MariaDB (a database of its own),
// a libSQL file and a private sqld (libSQL over HTTP with a JWT, as Turso). Run after
// `npm run build`. Bun and Deno run the same CLI from the sources in tests/cli.test.ts.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { createClient } from "@libsql/client";
import mysql from "mysql2/promise";
import postgres from "postgres";
import { createOutbox } from "@x/outbox";
import { libsqlStorage } from "@x/outbox/libsql";
import { mysqlStorage } from "@x/outbox/mysql";
import { startSqld } from "../sqld_helpers.mjs";
import { postgresStorage } from "@x/outbox/postgres";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const PG_URL = process.env.OUTBOX_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const MYSQL_URL = process.env.OUTBOX_TEST_MYSQL_URL ?? "mysql://root@127.0.0.1:3306/test";
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const BIN = join(root, pkg.bin.outbox);

/** Runs the bin to its exit; the parent's OUTBOX_* variables are not passed on. */
function cli(args, { bin = BIN, env = {} } = {}) {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("OUTBOX_")));
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args], {
      env: { ...base, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

function exits(run, code, what) {
  assert.equal(run.code, code, `${what}: exit ${run.code}, stdout:\n${run.stdout}\nstderr:\n${run.stderr}`);
}

const outboxOn = (storage, options = {}) =>
  createOutbox({
    storage,
    publisher: () => {
      if (options.failing) throw new Error("broker down");
    },
    retry: { maxAttempts: 1 },
    now: options.now,
  });

/** setup → status → dead messages listed, requeued, purged → health check → setup --fan-out → doctor. */
async function lifecycle(args, storage, tx, dropIndex, env = {}) {
  const run = (argv) => cli(argv, { env });
  const setup = await run(["setup", ...args]);
  exits(setup, 0, "setup");
  assert.match(setup.stdout, /: schema version 2\n$/);
  const past = outboxOn(storage, { now: () => Date.now() - 3_600_000, failing: true });
  await past.enqueue(tx, [
    { id: "d-1", topic: "orders.failed", payload: { n: 1 } },
    { id: "d-2", topic: "orders.failed", payload: { n: 2 } },
  ]);
  assert.equal((await past.tick()).dead, 2);
  await past.enqueue(tx, { id: "p-1", topic: "orders.created", payload: { n: 3 } });

  const status = await run(["status", ...args, "--json"]);
  exits(status, 0, "status");
  const s = JSON.parse(status.stdout);
  assert.deepEqual([s.pending, s.dead], [1, 2]);
  assert.deepEqual(s.topics["orders.failed"], { pending: 0, processing: 0, published: 0, dead: 2 });
  assert.deepEqual(s.destinations, { "": { pending: 1, processing: 0, published: 0, dead: 2 } });

  exits(await run(["status", ...args, "--max-age", "30m"]), 1, "status --max-age 30m");
  exits(await run(["status", ...args, "--max-age", "2h"]), 0, "status --max-age 2h");

  const dead = JSON.parse((await run(["list", ...args, "--status", "dead", "--json"])).stdout);
  assert.deepEqual(dead.messages.map((m) => m.id), ["d-1", "d-2"]);
  assert.match(dead.messages[1].lastError, /broker down/);

  const requeued = await run(["requeue", ...args, "--id", "d-2"]);
  exits(requeued, 0, "requeue");
  assert.equal(requeued.stdout, "requeued 1 dead message\n");
  const dry = await run(["purge", ...args, "--status", "dead"]);
  exits(dry, 2, "purge without --yes");
  assert.equal(dry.stdout, "would purge 1 dead message\n");
  const purged = await run(["purge", ...args, "--status", "dead", "--yes"]);
  exits(purged, 0, "purge --yes");
  assert.equal(purged.stdout, "purged 1 dead message\n");
  const after = JSON.parse((await run(["status", ...args, "--json"])).stdout);
  assert.deepEqual([after.pending, after.dead], [2, 0]);

  exits(await run(["doctor", ...args]), 0, "doctor");
  exits(await run(["doctor", ...args, "--fan-out"]), 1, "doctor --fan-out on version 2");
  const fanOut = await run(["setup", ...args, "--fan-out", "--json"]);
  exits(fanOut, 0, "setup --fan-out");
  assert.deepEqual([JSON.parse(fanOut.stdout).schemaVersion, JSON.parse(fanOut.stdout).fanOut], [3, true]);
  const ready = await run(["doctor", ...args, "--fan-out"]);
  exits(ready, 0, "doctor --fan-out on version 3");
  assert.match(ready.stdout, /^ok\s+schema version\s+version 3 \(recorded in \S+\); ready for fan-out$/m);
  await dropIndex("outbox_settled_idx");
  const broken = await run(["doctor", ...args]);
  exits(broken, 1, "doctor without settled_idx");
  assert.match(broken.stdout, /^FAIL\s+index\s+outbox_settled_idx is missing/m);
}

test("the bin is dist/cli/bin.js: a node shebang, executable", () => {
  assert.equal(pkg.bin.outbox, "./dist/cli/bin.js");
  assert.match(readFileSync(BIN, "utf8"), /^#!\/usr\/bin\/env node\n/);
  assert.ok((statSync(BIN).mode & 0o111) !== 0, "bin.js is executable");
});

test("node bin: setup, status, list, requeue, purge and doctor on Postgres", async () => {
  const schema = `cli_node_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  const sql = postgres(PG_URL, { max: 2, onnotice: () => {} });
  try {
    await lifecycle(
      ["--url", PG_URL, "--schema", schema],
      postgresStorage(sql, { schema }),
      sql,
      (name) => sql.unsafe(`DROP INDEX "${schema}"."${name}"`),
    );
  } finally {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await sql.end();
  }
});

test("node bin: setup, status, list, requeue, purge and doctor on MariaDB", async () => {
  const database = `cli_node_${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`;
  const admin = await mysql.createConnection({ uri: MYSQL_URL });
  await admin.query(`CREATE DATABASE \`${database}\``);
  const target = new URL(MYSQL_URL);
  target.pathname = `/${database}`;
  const url = target.href;
  const pool = mysql.createPool({ uri: url, connectionLimit: 2 });
  const conn = await pool.getConnection();
  try {
    // Enqueued on a connection in autocommit: each enqueue is its own transaction.
    await lifecycle(
      ["--url", url],
      mysqlStorage(pool),
      conn,
      (name) => pool.query(`ALTER TABLE outbox DROP INDEX \`${name}\``),
    );
  } finally {
    conn.release();
    await pool.end();
    await admin.query(`DROP DATABASE IF EXISTS \`${database}\``);
    await admin.end();
  }
});

test("node bin: setup, status, list, requeue, purge and doctor on a libSQL file", async () => {
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-cli-node-"));
  const url = `file:${join(dir, "app.db")}`;
  const client = createClient({ url });
  try {
    await lifecycle(
      ["--url", url],
      libsqlStorage(client),
      client,
      (name) => client.execute(`DROP INDEX "${name}"`),
    );
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("node bin: setup, status, list, requeue, purge and doctor on sqld with an auth token", async () => {
  const sqld = await startSqld({ auth: true });
  const client = createClient({ url: sqld.url, authToken: sqld.authToken });
  try {
    // The token from the environment, as a deployment passes it.
    const args = ["--url", sqld.url];
    const env = { OUTBOX_AUTH_TOKEN: sqld.authToken };
    const refused = await cli(["status", ...args]);
    exits(refused, 1, "status without a token");
    assert.match(refused.stderr, /pass --auth-token or set OUTBOX_AUTH_TOKEN/);
    await lifecycle(
      args,
      libsqlStorage(client),
      client,
      (name) => client.execute(`DROP INDEX "${name}"`),
      env,
    );
  } finally {
    client.close();
    await sqld.stop();
  }
});

test("node bin: usage errors exit 2 and failures exit 1, each one line on stderr", async () => {
  const [usage, unknown, refused, help] = await Promise.all([
    cli(["status"]),
    cli(["list", "--url", "file:x.db", "--limit", "5000"]),
    cli(["status", "--url", "postgres://postgres@127.0.0.1:1/test"]),
    cli(["purge", "--help"]),
  ]);
  exits(usage, 2, "status without --url");
  assert.equal(usage.stderr, "outbox: --url is required (or set OUTBOX_URL)\n");
  exits(unknown, 2, "--limit 5000");
  assert.match(unknown.stderr, /^outbox: --limit must be a whole number from 1 to 1000, got "5000"\n$/);
  exits(refused, 1, "refused");
  assert.match(refused.stderr, /^outbox: cannot connect to postgres:\/\/postgres@127\.0\.0\.1:1\/test: [^\n]+\n$/);
  exits(help, 0, "purge --help");
  assert.match(help.stdout, /^Usage: outbox purge --status dead\|published/m);
});

test("node bin: without the driver installed, one line says which package to install", async () => {
  // The build alone, with valibot (the one dependency) and no driver beside it.
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-cli-nodriver-"));
  try {
    cpSync(join(root, "dist"), join(dir, "dist"), { recursive: true });
    writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
    mkdirSync(join(dir, "node_modules"));
    symlinkSync(join(root, "node_modules", "valibot"), join(dir, "node_modules", "valibot"), "dir");
    const bin = join(dir, "dist", "cli", "bin.js");
    const [pg, libsql] = await Promise.all([
      cli(["status", "--url", "postgres://localhost/app"], { bin }),
      cli(["setup", "--url", `file:${join(dir, "app.db")}`], { bin }),
    ]);
    exits(pg, 1, "postgres:// without postgres");
    assert.equal(pg.stderr, "outbox: install postgres to use a postgres:// URL (npm install postgres)\n");
    exits(libsql, 1, "file: without @libsql/client");
    assert.equal(libsql.stderr, "outbox: install @libsql/client to use a file: URL (npm install @libsql/client)\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
