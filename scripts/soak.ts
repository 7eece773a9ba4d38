/**
 * Soak: a relay from Postgres into NATS JetStream under steady load, for long runs.
 *
 *   npx bun scripts/soak.ts --minutes 10 [--rate 200] [--warmup 1] [--interval 60]
 *                           [--nats 127.0.0.1:4222]
 *
 * Every `--interval` seconds (default 60) it prints one line: heap used and RSS of this
 * process (after a forced GC where the runtime offers one), open Postgres connections of
 * this process (pg_stat_activity, by application_name), NATS connections on the server,
 * messages committed / in the stream, and the age of the oldest waiting message. At the
 * end it drains, checks that the stream holds every committed message exactly once, and
 * prints the growth of heap and RSS from the end of warm-up (`--warmup` minutes, default
 * 1) to the end. The target is no growth after warm-up.
 *
 * NATS: without `--nats`, the soak starts its own nats-server (from $NATS_SERVER,
 * /usr/sbin/nats-server or PATH) on a free port with a temp store and its monitoring
 * port, so connections are counted by the server itself (connz). With `--nats URL` it
 * uses that server and counts only its own connection.
 *
 * Postgres: OUTBOX_TEST_PG_URL or postgres://postgres@127.0.0.1:5432/test; the soak
 * works in a schema of its own and drops it at the end.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { createOutbox, type RelayHandle } from "../mod.ts";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../adapters/postgres/mod.ts";
import { ensureStream, jetstreamPublisher } from "../adapters/nats/mod.ts";

// deno-lint-ignore no-explicit-any
const g = globalThis as any;
const argv: string[] = g.Deno ? g.Deno.args : process.argv.slice(2);

function arg(name: string, fallback: number): number;
function arg(name: string, fallback: string | null): string | null;
function arg(name: string, fallback: number | string | null): number | string | null {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const value = argv[i + 1];
  if (value === undefined) throw new Error(`--${name} needs a value`);
  if (typeof fallback === "number") {
    const n = Number(value);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} must be a positive number, got ${value}`);
    return n;
  }
  return value;
}

const minutes = arg("minutes", 1);
const rate = arg("rate", 200); // messages per second
const warmupMin = arg("warmup", Math.min(1, minutes / 5));
const intervalS = arg("interval", 60);
const natsArg = arg("nats", null);
const PG_URL = process.env.OUTBOX_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";

const MB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function gc() {
  if (g.Bun?.gc) g.Bun.gc(true);
  else if (typeof g.gc === "function") g.gc();
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port }, () => {
      socket.end();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

function findNatsServer(): string | null {
  if (process.env.NATS_SERVER && existsSync(process.env.NATS_SERVER)) return process.env.NATS_SERVER;
  if (existsSync("/usr/sbin/nats-server")) return "/usr/sbin/nats-server";
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir && existsSync(join(dir, "nats-server"))) return join(dir, "nats-server");
  }
  return null;
}

async function main() {
  const tag = `soak_${Date.now().toString(36)}_${process.pid}`;
  let server: ChildProcess | null = null;
  let store: string | null = null;
  let natsUrl = natsArg ?? "127.0.0.1:4222";
  let monitorPort: number | null = null;
  if (!natsArg) {
    const bin = findNatsServer();
    if (bin) {
      const port = 20_000 + Math.floor(Math.random() * 20_000);
      monitorPort = port + 1;
      store = mkdtempSync(join(tmpdir(), "x-outbox-soak-"));
      server = spawn(bin, ["-a", "127.0.0.1", "-p", String(port), "-m", String(monitorPort), "-js", "-sd", store], {
        stdio: "ignore",
      });
      natsUrl = `127.0.0.1:${port}`;
      const deadline = Date.now() + 10_000;
      while (!(await portOpen(port))) {
        if (Date.now() > deadline) throw new Error("own nats-server did not start");
        await sleep(25);
      }
    }
  }

  const sql = postgres(PG_URL, { max: 4, onnotice: () => {}, connection: { application_name: tag } });
  const writerSql = postgres(PG_URL, { max: 2, onnotice: () => {}, connection: { application_name: tag } });
  const nc = await connect({ servers: natsUrl, maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  const jsm = await jetstreamManager(nc);
  const streamName = tag.toUpperCase();
  const subject = `${tag}.orders`;
  const errors: string[] = [];
  const outbox = createOutbox({
    storage: postgresStorage(sql as unknown as PostgresSql, { schema: tag }),
    publisher: jetstreamPublisher(jetstream(nc), { timeoutMs: 2_000 }),
    batchSize: 200,
    retry: { maxAttempts: 1_000, baseDelayMs: 100, maxDelayMs: 5_000, jitter: 0.25 },
    onError: (e) => errors.push(String(e)),
    onWarning: (w) => errors.push(`warning: ${w}`),
  });
  const writer = createOutbox({
    storage: postgresStorage(writerSql as unknown as PostgresSql, { schema: tag }),
    publisher: () => {},
  });
  await outbox.setup();
  await ensureStream(jsm, { name: streamName, subjects: [`${tag}.>`], outbox, storage: "memory" as never });

  const pgConnections = async () =>
    Number((await sql`select count(*)::int as n from pg_stat_activity where application_name = ${tag}`)[0]!.n);
  const natsConnections = async (): Promise<string> => {
    if (monitorPort === null) return "n/a (own: 1)";
    const res = await fetch(`http://127.0.0.1:${monitorPort}/connz`);
    return String(((await res.json()) as { num_connections: number }).num_connections);
  };
  const streamCount = async () => (await jsm.streams.info(streamName)).state.messages;

  let committed = 0;
  let stopWriting = false;
  const perTick = Math.max(1, Math.round(rate / 10));
  const writing = (async () => {
    let next = Date.now();
    while (!stopWriting) {
      const batch = Array.from({ length: perTick }, () => {
        const n = committed++;
        return {
          id: `${tag}-${n}`,
          topic: subject,
          key: `k${n % 64}`,
          payload: { n, at: Date.now(), pad: "x".repeat(200) },
        };
      });
      try {
        await writerSql.begin((tx) => writer.enqueue(tx as unknown as PostgresTx, batch));
      } catch (e) {
        committed -= batch.length; // not committed: ids reused
        errors.push(`writer: ${String(e)}`);
      }
      next += 100;
      const wait = next - Date.now();
      if (wait > 0) await sleep(wait);
      else next = Date.now();
    }
  })();

  const relay: RelayHandle = outbox.start({ minIdleMs: 10, maxIdleMs: 200 });
  const started = Date.now();
  const endAt = started + minutes * 60_000;
  const warmupAt = started + warmupMin * 60_000;
  type Sample = { t: number; heap: number; rss: number };
  const samples: Sample[] = [];
  let warm: Sample | null = null;

  const sample = async (label: string) => {
    gc();
    const m = process.memoryUsage();
    const s = { t: Date.now() - started, heap: m.heapUsed / MB, rss: m.rss / MB };
    samples.push(s);
    const stats = await outbox.stats();
    console.log(
      `[soak] ${label.padEnd(8)} t=${(s.t / 60_000).toFixed(1)}min heapUsed=${s.heap.toFixed(1)}MB rss=${
        s.rss.toFixed(1)
      }MB ` +
        `pgConnections=${await pgConnections()} natsConnections=${await natsConnections()} ` +
        `committed=${committed} inStream=${await streamCount()} waiting=${stats.pending + stats.processing} ` +
        `oldestWaitingMs=${stats.oldestPendingAgeMs} errors=${errors.length}`,
    );
    return s;
  };

  console.log(
    `[soak] ${minutes} min at ${rate} msg/s (64 keys), warm-up ${warmupMin} min, Postgres schema ${tag}, NATS ${natsUrl}, runtime ${
      g.Bun ? `bun ${g.Bun.version}` : g.Deno ? `deno ${g.Deno.version.deno}` : `node ${process.version}`
    }`,
  );
  await sample("start");
  let nextSample = started + intervalS * 1_000;
  while (Date.now() < endAt) {
    const wakeAt = Math.min(nextSample, endAt, warm ? Infinity : warmupAt);
    await sleep(Math.max(0, wakeAt - Date.now()));
    if (!warm && Date.now() >= warmupAt) {
      warm = await sample("warm");
      while (nextSample <= Date.now()) nextSample += intervalS * 1_000; // the warm line stands for this sample
    } else if (Date.now() >= nextSample && Date.now() < endAt) {
      await sample("sample");
      nextSample += intervalS * 1_000;
    }
  }
  stopWriting = true;
  await writing;
  const drainStart = Date.now();
  while ((await streamCount()) < committed && Date.now() - drainStart < 60_000) await sleep(100);
  const end = await sample("end");
  await relay.stop();

  const inStream = await streamCount();
  const base = warm ?? samples[0]!;
  const minutesAfter = (end.t - base.t) / 60_000;
  console.log(
    `[soak] growth after warm-up over ${
      minutesAfter.toFixed(1)
    } min: heapUsed ${(end.heap - base.heap >= 0 ? "+" : "")}${(end.heap - base.heap).toFixed(1)}MB ` +
      `(${base.heap.toFixed(1)} → ${end.heap.toFixed(1)}), rss ${(end.rss - base.rss >= 0 ? "+" : "")}${
        (end.rss - base.rss).toFixed(1)
      }MB (${base.rss.toFixed(1)} → ${end.rss.toFixed(1)}); ` +
      `heapUsed min/max after warm-up ${
        Math.min(...samples.filter((s) => s.t >= base.t).map((s) => s.heap)).toFixed(1)
      }/${Math.max(...samples.filter((s) => s.t >= base.t).map((s) => s.heap)).toFixed(1)}MB`,
  );
  const ok = inStream === committed;
  console.log(
    `[soak] committed=${committed} inStream=${inStream} (${
      ok ? "every committed message once" : "MISMATCH"
    }); ${errors.length} relay errors${errors.length ? `, first: ${errors[0]}` : ""}`,
  );

  await jsm.streams.delete(streamName).catch(() => {});
  await nc.close();
  await sql.unsafe(`drop schema if exists "${tag}" cascade`).catch(() => {});
  await Promise.all([sql.end({ timeout: 1 }), writerSql.end({ timeout: 1 })]);
  if (server) {
    const exited = new Promise((r) => server!.once("exit", r));
    server.kill("SIGTERM");
    await exited;
  }
  if (store) rmSync(store, { recursive: true, force: true });
  process.exit(ok ? 0 : 1);
}

await main();
