/**
 * examples/bun/server.ts over HTTP: the service runs as a child process on a free port
 * (libSQL file, NATS JetStream at 127.0.0.1:4222); the test POSTs orders and reads the
 * events back from the stream. Runs under Bun (the example uses Bun.serve); under Deno
 * or Node this file registers nothing.
 */

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { runtime, test } from "./harness.ts";
import { NATS_URL, readStream, uniqueName } from "./nats_helpers.ts";

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

const root = join(import.meta.dirname ?? ".", "..");

/** Starts a server script and resolves with its URL once it prints "listening on <url>". */
async function startServer(command: string, args: string[], env: Record<string, string>) {
  const child = spawn(command, args, {
    cwd: root,
    env: { ...process.env, ...env, PORT: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in 30 s:\n${output}`)), 30_000);
    const onData = (chunk: Buffer) => {
      output += chunk;
      const match = /listening on (http:\/\/\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
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
  return { url, stop, output: () => output };
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

if (runtime === "bun") {
  test(
    "bun example: POST /orders → one libSQL transaction → start() relays each committed order's event to JetStream once",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "x-outbox-bun-example-"));
      const stream = uniqueName("BUNEX");
      const prefix = `${stream.toLowerCase()}.`;
      const nc = await connect({ servers: NATS_URL });
      const jsm = await jetstreamManager(nc);
      const bun = join(root, "node_modules", ".bin", "bun");
      const server = await startServer(bun, ["examples/bun/server.ts"], {
        DATABASE_URL: `file:${join(dir, "orders.db")}`,
        NATS_URL,
        STREAM: stream,
        SUBJECT_PREFIX: prefix,
      });
      try {
        const post = (body: unknown) =>
          fetch(`${server.url}/orders`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify(body),
          });
        for (let i = 1; i <= 5; i++) {
          const response = await post({ id: `o-${i}`, total: i * 10 });
          assert(response.status === 201, `order ${i}: ${response.status} ${await response.text()}`);
        }
        const duplicate = await post({ id: "o-3", total: 999 });
        assert(duplicate.status === 409, `a repeated id is refused, got ${duplicate.status}`);
        const bad = await post({ total: "many" });
        assert(bad.status === 400, `a bad body is refused, got ${bad.status}`);

        const events = await waitFor("5 events in the stream", async () => {
          const read = await readStream(jsm, stream);
          return read.length >= 5 ? read : undefined;
        });
        await new Promise((resolve) => setTimeout(resolve, 500)); // nothing more may arrive
        const all = await readStream(jsm, stream);
        assert(all.length === 5, `5 events, got ${all.length}: the rolled-back order sent none`);
        const payloads = events.map((event) => JSON.parse(new TextDecoder().decode(event.data)));
        // Each order is its own key: no order between their events.
        assert(
          payloads.map((p) => p.id).sort().join() === "o-1,o-2,o-3,o-4,o-5",
          `each order once: ${payloads.map((p) => p.id)}`,
        );
        assert(payloads[2].total === 30, "o-3 keeps its committed total, not the refused one");
        assert(
          events.every((event) => event.subject === `${prefix}orders.created` && event.id),
          "subject and Nats-Msg-Id",
        );
        const stats = await (await fetch(`${server.url}/stats`)).json();
        assert(typeof stats === "object" && stats !== null, "GET /stats answers");
        const admin = await fetch(`${server.url}/admin/api/outbox`);
        assert(admin.status === 200, `GET /admin/api/outbox answers, got ${admin.status}`);
        const adminStats = await admin.json();
        assert(adminStats.readOnly === true && typeof adminStats.topics === "object", "read-only, per-topic counts");
        const refused = await fetch(`${server.url}/admin/api/purge`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ status: "dead" }),
        });
        assert(refused.status === 403, `the example's admin is read-only, got ${refused.status}`);
        await refused.body?.cancel();
      } catch (error) {
        console.error(server.output());
        throw error;
      } finally {
        await server.stop();
        await jsm.streams.delete(stream).catch(() => {});
        await nc.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
    { timeout: 60_000 },
  );
}
