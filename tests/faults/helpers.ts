/**
 * Shared pieces of the fault tests: the end-to-end invariant check against what a
 * JetStream stream holds, waiting for events with a deadline, a private nats-server and
 * a private 3-node nats-server cluster.
 */

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ReadMessage } from "../nats_helpers.ts";
import { freePort } from "../ports.mjs";

/** What the test committed and rolled back, to check the stream against. */
export class Ledger {
  /** Committed message ids, in commit order. */
  readonly committed: string[] = [];
  /** Rolled-back message ids. */
  readonly rolledBack = new Set<string>();
  /** Per key, the committed ids in enqueue order. */
  readonly keyOrder = new Map<string, string[]>();

  commit(messages: readonly { id: string; key?: string | null }[]): void {
    for (const m of messages) {
      this.committed.push(m.id);
      if (m.key) {
        let order = this.keyOrder.get(m.key);
        if (!order) this.keyOrder.set(m.key, order = []);
        order.push(m.id);
      }
    }
  }

  rollback(messages: readonly { id: string }[]): void {
    for (const m of messages) this.rolledBack.add(m.id);
  }
}

/**
 * The invariant every fault test checks: every committed message is in the stream, no
 * rolled-back message is, no id is stored twice, and each key's messages are stored in
 * enqueue order. `dead` lists ids allowed to be missing (they went dead on purpose).
 */
export function checkStream(
  stored: readonly ReadMessage[],
  ledger: Ledger,
  what: string,
  dead: ReadonlySet<string> = new Set(),
): void {
  const ids = stored.map((m) => m.id ?? "");
  const seen = new Set(ids);
  assert.equal(seen.size, ids.length, `${what}: the stream holds no duplicates (${ids.length - seen.size} found)`);
  const missing = ledger.committed.filter((id) => !seen.has(id) && !dead.has(id));
  assert.deepEqual(
    missing.slice(0, 10),
    [],
    `${what}: every committed message reached the stream (${missing.length} missing)`,
  );
  const leaked = ids.filter((id) => ledger.rolledBack.has(id));
  assert.deepEqual(leaked, [], `${what}: nothing rolled back reached the stream`);
  const committed = new Set(ledger.committed);
  const strangers = ids.filter((id) => !committed.has(id));
  assert.deepEqual(strangers.slice(0, 10), [], `${what}: the stream holds only committed messages`);
  const position = new Map(ids.map((id, i) => [id, i]));
  for (const [key, order] of ledger.keyOrder) {
    const got = order.filter((id) => position.has(id)).sort((a, b) => position.get(a)! - position.get(b)!);
    assert.deepEqual(got, order.filter((id) => position.has(id)), `${what}: order of key ${key} in the stream`);
  }
}

/** Waits until `check` holds, polling every 20 ms; fails after `timeoutMs`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let ok = false;
    try {
      ok = await check();
    } catch {
      ok = false;
    }
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Whether something listens on a local TCP port. */
export function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port }, () => {
      socket.end();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

/**
 * A private nats-server (own port and store directory), as in tests/nats_restart.test.ts.
 * `extraArgs` are appended to the command line (cluster settings, a server name).
 */
export async function startNatsServer(
  port: number,
  store: string,
  extraArgs: readonly string[] = [],
): Promise<ChildProcess> {
  const server = spawn("/usr/sbin/nats-server", [
    "-a",
    "127.0.0.1",
    "-p",
    String(port),
    "-js",
    "-sd",
    store,
    ...extraArgs,
  ], { stdio: ["ignore", "ignore", "pipe"] });
  // Its last words, for an error if it exits before listening (drained all along, so a
  // chatty server never blocks on a full pipe).
  let stderr = "";
  server.stderr!.on("data", (chunk) => (stderr = (stderr + chunk).slice(-2_000)));
  let exit: string | null = null;
  server.once("exit", (code, signal) => (exit = signal ?? `code ${code}`));
  try {
    await until(`nats-server to listen on port ${port}`, async () => exit !== null || await portOpen(port));
  } catch (error) {
    await stopProcess(server, "SIGKILL"); // not left running when it starts too late
    throw error;
  }
  if (exit !== null) {
    const log = extraArgs.includes("-l") ? readTail(extraArgs[extraArgs.indexOf("-l") + 1]) : stderr;
    throw new Error(`nats-server for port ${port} exited (${exit}) before it listened:\n${log.trim()}`);
  }
  return server;
}

/** The end of a text file, or a note that it cannot be read. */
function readTail(path: string | undefined, chars = 2_000): string {
  try {
    return readFileSync(path!, "utf8").slice(-chars);
  } catch (error) {
    return `(no log: ${(error as Error).message})`;
  }
}

/** Stops a child process and waits for it to exit. */
export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill(signal);
  await exited;
}

/** A seeded pseudo-random generator, so a failing run reproduces. */
export function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (s * 1_103_515_245 + 12_345) >>> 0) / 2 ** 32);
}

/**
 * Records unhandled rejections and uncaught exceptions while a test runs. Without these
 * handlers either would kill the process; a fault test expects `seen` to stay empty.
 */
export function watchHost(): { readonly seen: unknown[]; stop(): void } {
  const seen: unknown[] = [];
  const onError = (reason: unknown) => void seen.push(reason);
  process.on("unhandledRejection", onError);
  process.on("uncaughtException", onError);
  return {
    seen,
    stop: () => {
      process.off("unhandledRejection", onError);
      process.off("uncaughtException", onError);
    },
  };
}

export { freePort };

/** One server of a {@link NatsCluster}. */
export interface NatsClusterServer {
  /** Server name, as JetStream reports it (stream info `cluster.leader`). */
  readonly name: string;
  /** Client port on 127.0.0.1. */
  readonly port: number;
  /** The running process, or `null` while the server is down. */
  process: ChildProcess | null;
}

/** A private nats-server cluster with JetStream: one process, port and store per server. */
export interface NatsCluster {
  readonly servers: readonly NatsClusterServer[];
  /** Client URLs of every server, for a connection that fails over. */
  readonly urls: string[];
  /** The server with this name; throws for an unknown one. */
  server(name: string): NatsClusterServer;
  /** Kills a server (SIGKILL by default: a crash, no leadership hand-over) and waits for it to exit. */
  kill(name: string, signal?: NodeJS.Signals): Promise<void>;
  /** Starts a killed server again with its store, ports and name; resolves once it listens. */
  restart(name: string): Promise<void>;
  /** Stops every server still running (by its pid) and removes the store directories. */
  stop(): Promise<void>;
}

/**
 * Starts `size` nats-server processes on free loopback ports, routed to each other as
 * one cluster with JetStream (each its own store directory and server name). Resolves
 * once every server listens; wait for a JetStream meta leader before creating streams.
 * On a failed start, the servers already started are stopped.
 */
export async function startNatsCluster(size = 3): Promise<NatsCluster> {
  const root = mkdtempSync(join(tmpdir(), "x-outbox-nats-cluster-"));
  const clusterName = `c${crypto.randomUUID().slice(0, 8)}`;
  const nodes: { server: NatsClusterServer; args: string[]; store: string }[] = [];
  const clusterPorts: number[] = [];
  for (let i = 0; i < size; i++) clusterPorts.push(await freePort());
  for (let i = 0; i < size; i++) {
    const name = `${clusterName}-n${i + 1}`;
    const store = join(root, name);
    mkdirSync(store);
    const routes = clusterPorts.filter((_, j) => j !== i).map((p) => `nats://127.0.0.1:${p}`).join(",");
    const args = [
      "--server_name",
      name,
      "--cluster_name",
      clusterName,
      "--cluster",
      `nats://127.0.0.1:${clusterPorts[i]}`,
      "--routes",
      routes,
      "-l",
      join(root, `${name}.log`),
    ];
    nodes.push({ server: { name, port: await freePort(), process: null }, args, store });
  }
  const node = (name: string) => {
    const found = nodes.find((n) => n.server.name === name);
    if (!found) {
      throw new Error(`No server named "${name}" in this cluster (${nodes.map((n) => n.server.name).join(", ")})`);
    }
    return found;
  };
  const cluster: NatsCluster = {
    servers: nodes.map((n) => n.server),
    urls: nodes.map((n) => `127.0.0.1:${n.server.port}`),
    server: (name) => node(name).server,
    async kill(name, signal = "SIGKILL") {
      const { server } = node(name);
      if (server.process) await stopProcess(server.process, signal);
      server.process = null;
    },
    async restart(name) {
      const { server, store, args } = node(name);
      if (server.process) throw new Error(`Cannot restart server "${name}": it is still running`);
      server.process = await startNatsServer(server.port, store, args);
    },
    async stop() {
      await Promise.all(nodes.map(async ({ server }) => {
        if (server.process) await stopProcess(server.process, "SIGKILL");
        server.process = null;
      }));
      rmSync(root, { recursive: true, force: true });
    },
  };
  try {
    // Started together: each server's routes to the others come up as they start.
    const started = await Promise.allSettled(nodes.map(async (n) => {
      n.server.process = await startNatsServer(n.server.port, n.store, n.args);
    }));
    const failed = started.find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
  } catch (error) {
    await cluster.stop();
    throw error;
  }
  return cluster;
}
