/**
 * Shared pieces of the fault tests: the end-to-end invariant check against what a
 * JetStream stream holds, waiting for events with a deadline, and a private nats-server.
 */

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createConnection } from "node:net";
import type { ReadMessage } from "../nats_helpers.ts";

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
export function checkStream(stored: readonly ReadMessage[], ledger: Ledger, what: string, dead: ReadonlySet<string> = new Set()): void {
  const ids = stored.map((m) => m.id ?? "");
  const seen = new Set(ids);
  assert.equal(seen.size, ids.length, `${what}: the stream holds no duplicates (${ids.length - seen.size} found)`);
  const missing = ledger.committed.filter((id) => !seen.has(id) && !dead.has(id));
  assert.deepEqual(missing.slice(0, 10), [], `${what}: every committed message reached the stream (${missing.length} missing)`);
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

/** A private nats-server (own port and store directory), as in tests/nats_restart.test.ts. */
export async function startNatsServer(port: number, store: string): Promise<ChildProcess> {
  const server = spawn("/usr/sbin/nats-server", ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", store], { stdio: "ignore" });
  await until("nats-server to listen", () => portOpen(port));
  return server;
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
