// examples/node/server.mjs over HTTP under Node 20, on the npm build (dist/): the service
// runs as a child process on a free port (Postgres schema of its own, NATS JetStream at
// 127.0.0.1:4222); the test POSTs orders and reads the events back from the stream.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import postgres from "postgres";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const DATABASE_URL = process.env.OUTBOX_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const NATS_URL = process.env.OUTBOX_TEST_NATS_URL ?? "127.0.0.1:4222";
const token = `nodeex${process.pid}${Date.now().toString(36)}`;
const schema = token;
const stream = token.toUpperCase();
const prefix = `${token}.`;

const sql = postgres(DATABASE_URL, { max: 1, onnotice: () => {} });
after(async () => {
  await sql`DROP SCHEMA IF EXISTS ${sql(schema)} CASCADE`;
  await sql.end();
});

function startServer() {
  const child = spawn(process.execPath, ["examples/node/server.mjs"], {
    cwd: root,
    env: {
      ...process.env,
      PORT: "0",
      DATABASE_URL,
      DATABASE_SCHEMA: schema,
      NATS_URL,
      STREAM: stream,
      SUBJECT_PREFIX: prefix,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 30 s:\n${output}`)), 30_000);
    const onData = (chunk) => {
      output += chunk;
      const match = /listening on (http:\/\/\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code}:\n${output}`));
    });
  });
  const stop = async () => {
    if (child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  };
  return { ready, stop, output: () => output };
}

async function readStream(jsm) {
  const info = await jsm.streams.info(stream);
  const out = [];
  for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (m) {
      out.push({
        subject: m.subject,
        id: m.header?.get("Nats-Msg-Id"),
        payload: JSON.parse(new TextDecoder().decode(m.data)),
      });
    }
  }
  return out;
}

test(
  "node example: POST /orders → one Postgres transaction → start() relays each committed order's event to JetStream once",
  { timeout: 60_000 },
  async () => {
    const nc = await connect({ servers: NATS_URL });
    const jsm = await jetstreamManager(nc);
    const server = startServer();
    try {
      const url = await server.ready;
      const post = (body) =>
        fetch(`${url}/orders`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
      for (let i = 1; i <= 5; i++) {
        const response = await post({ id: `o-${i}`, total: i * 10 });
        assert.equal(response.status, 201, await response.text());
      }
      assert.equal((await post({ id: "o-3", total: 999 })).status, 409, "a repeated id is refused");
      assert.equal((await post({ total: "many" })).status, 400, "a bad body is refused");

      const deadline = Date.now() + 15_000;
      let events = [];
      while (events.length < 5 && Date.now() < deadline) {
        events = await readStream(jsm);
        if (events.length < 5) await new Promise((resolve) => setTimeout(resolve, 100));
      }
      await new Promise((resolve) => setTimeout(resolve, 500)); // nothing more may arrive
      events = await readStream(jsm);
      // Each order is its own key: events of different keys have no order between them.
      assert.deepEqual(
        events.map((e) => e.payload.id).sort(),
        ["o-1", "o-2", "o-3", "o-4", "o-5"],
        "each committed order once",
      );
      assert.equal(
        events.find((e) => e.payload.id === "o-3")?.payload.total,
        30,
        "o-3 keeps its committed total, not the refused one",
      );
      for (const event of events) {
        assert.equal(event.subject, `${prefix}orders.created`);
        assert.ok(event.id, "Nats-Msg-Id set");
      }
      const orders = await sql`SELECT id FROM ${sql(schema)}.orders ORDER BY id`;
      assert.equal(orders.length, 5);
      assert.equal((await fetch(`${url}/stats`)).status, 200, "GET /stats answers");
      const admin = await fetch(`${url}/admin/api/outbox`);
      assert.equal(admin.status, 200, "GET /admin/api/outbox answers");
      assert.match(admin.headers.get("content-type"), /^application\/json/);
      const adminStats = await admin.json();
      assert.equal(adminStats.readOnly, true);
      assert.equal(adminStats.dead, 0);
      assert.equal(typeof adminStats.topics, "object");
      const refused = await fetch(`${url}/admin/api/purge`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ status: "dead" }),
      });
      assert.equal(refused.status, 403, "the example's admin is read-only");
      assert.equal((await fetch(`${url}/admin/`)).headers.get("content-type"), "text/html; charset=utf-8");
    } catch (error) {
      console.error(server.output());
      throw error;
    } finally {
      await server.stop();
      await jsm.streams.delete(stream).catch(() => {});
      await nc.close();
    }
  },
);
