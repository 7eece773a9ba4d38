/**
 * The libSQL → memoryPublisher micro-benchmark (relay core vs the storage alone, time
 * split, batch sizes). `npm run bench` runs the full suite in bench/run.ts instead.
 * Formerly bench/run.ts. Prints a table and, as its last line, one JSON object with
 * the headline figures.
 *
 * Usage:
 *   npx bun bench/libsql-memory.ts            full run (~1.5 min)
 *   npx bun bench/libsql-memory.ts --quick    smoke run (< 60 s)
 *   npx deno run -A bench/libsql-memory.ts    the same under Deno
 *
 * Options: --messages=N, --repeats=N, --write-md (old per-runtime BENCHMARKS.md sections; off).
 *
 * BENCHMARKS.md keeps one section per runtime: a run replaces its own runtime's section
 * and leaves the others (and the hand-written notes) as they were.
 *
 * @module
 */

import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release } from "node:os";
import { fileURLToPath } from "node:url";
import {
  type Breakdown,
  findCase,
  keysLabel,
  median,
  type RelayBenchResult,
  type RelayCaseResult,
  runRelayBench,
} from "./relay-libsql.ts";

// deno-lint-ignore no-explicit-any
const g = globalThis as any;

function argv(): string[] {
  if (g.Deno) return [...g.Deno.args];
  return (g.process?.argv ?? []).slice(2);
}

function option(args: string[], name: string): string | undefined {
  const hit = args.find((a) => a.startsWith(`--${name}=`));
  return hit?.slice(name.length + 3);
}

/** The runtime running this script: id (bun/deno/node) and a display name with its version. */
export function runtime(): { id: string; name: string } {
  if (g.Bun) return { id: "bun", name: `Bun ${g.Bun.version}` };
  if (g.Deno) return { id: "deno", name: `Deno ${g.Deno.version.deno} (V8 ${g.Deno.version.v8})` };
  return { id: "node", name: `Node ${g.process?.version ?? "?"}` };
}

/** The commit measured, and whether the code under test (mod.ts, src/, adapters/) had uncommitted changes. */
function gitRevision(root: string): string {
  try {
    const git = (...args: string[]) => execFileSync("git", args, { cwd: root, encoding: "utf8" }).trim();
    const head = git("rev-parse", "--short", "HEAD");
    const dirty = git("status", "--porcelain", "--", "mod.ts", "src", "adapters") !== "";
    return dirty ? `${head} + uncommitted changes in mod.ts/src/adapters` : head;
  } catch {
    return "unknown";
  }
}

function cpuModel(): string {
  try {
    const line = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => l.startsWith("model name"));
    if (line) return line.split(":")[1]!.trim();
  } catch {
    // not Linux
  }
  return cpus()[0]?.model ?? "unknown";
}

const fmt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–");
/**
 * relay/raw as the median of per-repeat ratios: run i of a case and run i of its raw
 * twin ran back to back, so a ratio of the pair cancels most of the machine's drifting load.
 */
const ratio = (a: RelayCaseResult | undefined, b: RelayCaseResult | undefined): number | null => {
  if (!a || !b || a.drainRates.length !== b.drainRates.length || a.drainRates.length === 0) return null;
  return Math.round(median(a.drainRates.map((x, i) => x / b.drainRates[i]!)) * 100) / 100;
};
const spread = (rates: readonly number[]) =>
  rates.length > 1 ? `${fmt(Math.min(...rates))}–${fmt(Math.max(...rates))}` : "";

/** The headline figures: default batch size (100), `tick()` drains. */
export function headline(result: RelayBenchResult, rt: { name: string }): Record<string, unknown> {
  const drain = (keys: number, mode: "tick" | "start" | "raw", batch = 100) =>
    findCase(result, keys, batch, mode)?.drain;
  const pair = (keys: number) => ratio(findCase(result, keys, 100, "tick"), findCase(result, keys, 100, "raw"));
  const enqueue = (keys: number) => median(result.cases.filter((c) => c.keys === keys).flatMap((c) => c.enqueueRates));
  const round = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? null : Math.round(n));
  return {
    runtime: rt.name,
    messages: result.messages,
    repeats: result.repeats,
    libsql_unkeyed_msgs_per_s: round(drain(0, "tick")),
    libsql_16keys_msgs_per_s: round(drain(16, "tick")),
    libsql_10000keys_msgs_per_s: round(drain(10_000, "tick")),
    libsql_unkeyed_start_msgs_per_s: round(drain(0, "start")),
    libsql_16keys_start_msgs_per_s: round(drain(16, "start")),
    libsql_raw_claim_unkeyed_msgs_per_s: round(drain(0, "raw")),
    libsql_raw_claim_16keys_msgs_per_s: round(drain(16, "raw")),
    libsql_relay_vs_raw_claim_unkeyed: pair(0),
    libsql_relay_vs_raw_claim_16keys: pair(16),
    libsql_unkeyed_batch1000_msgs_per_s: round(drain(0, "tick", 1000)),
    libsql_16keys_batch1000_msgs_per_s: round(drain(16, "tick", 1000)),
    libsql_enqueue_unkeyed_msgs_per_s: round(enqueue(0)),
    libsql_enqueue_16keys_msgs_per_s: round(enqueue(16)),
  };
}

interface Row {
  keys: number;
  batch: number;
  tick?: RelayCaseResult;
  start?: RelayCaseResult;
  raw?: RelayCaseResult;
}

function rows(result: RelayBenchResult): Row[] {
  const out: Row[] = [];
  for (const c of result.cases) {
    let row = out.find((r) => r.keys === c.keys && r.batch === c.batchSize);
    if (!row) out.push(row = { keys: c.keys, batch: c.batchSize });
    row[c.mode] = c;
  }
  return out;
}

function markdownTable(header: string[], body: (string | number)[][], align: string[]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(align), ...body.map(line)].join("\n");
}

/** The drain table: rates per drain mode and the relay/raw ratios side by side. */
export function drainTable(result: RelayBenchResult): string {
  const body = rows(result).map((r) => [
    keysLabel(r.keys),
    r.batch,
    r.tick ? `**${fmt(r.tick.drain)}**` : "",
    r.start ? fmt(r.start.drain) : "",
    r.raw ? fmt(r.raw.drain) : "",
    ratio(r.tick, r.raw)?.toFixed(2) ?? "",
    ratio(r.start, r.raw)?.toFixed(2) ?? "",
    r.tick ? spread(r.tick.drainRates) : "",
    r.raw ? spread(r.raw.drainRates) : "",
  ]);
  return markdownTable(
    [
      "keys",
      "batchSize",
      "tick() msg/s",
      "start() msg/s",
      "raw claim+settle msg/s",
      "tick/raw",
      "start/raw",
      "tick range",
      "raw range",
    ],
    body,
    ["---", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:"],
  );
}

/** Enqueue rates per key distribution (every run fills a backlog, so every run counts). */
export function enqueueTable(result: RelayBenchResult): string {
  const body = [...new Set(result.cases.map((c) => c.keys))].map((keys) => {
    const rates = result.cases.filter((c) => c.keys === keys).flatMap((c) => c.enqueueRates);
    return [keysLabel(keys), `**${fmt(median(rates))}**`, spread(rates), rates.length];
  });
  return markdownTable(["keys", "enqueue msg/s (median)", "range", "runs"], body, ["---", "--:", "--:", "--:"]);
}

/** Where the wall time of `tick()` drains went: inside storage.claim, storage.settle, or the relay core. */
export function breakdownTable(result: RelayBenchResult): string {
  const body = result.cases.filter((c) => c.breakdown).map((c) => {
    const b = c.breakdown as Breakdown;
    const core = b.drainMs - b.claimMs - b.settleMs;
    const messages = result.messages * result.repeats;
    const us = (ms: number) => ((ms * 1000) / messages).toFixed(1);
    const pct = (ms: number) => `${Math.round((100 * ms) / b.drainMs)}%`;
    return [
      keysLabel(c.keys),
      c.batchSize,
      `${pct(b.claimMs)} (${us(b.claimMs)} µs)`,
      `${pct(b.settleMs)} (${us(b.settleMs)} µs)`,
      `${pct(core)} (${us(core)} µs)`,
      us(b.drainMs),
    ];
  });
  return markdownTable(
    ["keys", "batchSize", "storage.claim", "storage.settle", "relay core (decode, lanes, publish)", "total µs/msg"],
    body,
    ["---", "--:", "--:", "--:", "--:", "--:"],
  );
}

function plainTable(result: RelayBenchResult): string {
  const lines = [
    `${"keys".padEnd(12)}${"batch".padStart(6)}${"tick/s".padStart(10)}${"start/s".padStart(10)}${
      "raw/s".padStart(10)
    }${"tick/raw".padStart(10)}${"start/raw".padStart(10)}${"enqueue/s".padStart(11)}`,
  ];
  for (const r of rows(result)) {
    const enq = median([r.tick, r.start, r.raw].flatMap((c) => c?.enqueueRates ?? []));
    lines.push(
      `${keysLabel(r.keys).padEnd(12)}${String(r.batch).padStart(6)}${fmt(r.tick?.drain ?? NaN).padStart(10)}${
        fmt(r.start?.drain ?? NaN).padStart(10)
      }${fmt(r.raw?.drain ?? NaN).padStart(10)}${(ratio(r.tick, r.raw)?.toFixed(2) ?? "").padStart(10)}${
        (ratio(r.start, r.raw)?.toFixed(2) ?? "").padStart(10)
      }${fmt(enq).padStart(11)}`,
    );
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------
// BENCHMARKS.md
// ---------------------------------------------------------------------------

const NOTES_PLACEHOLDER = "## Where the time goes\n\n(Not written yet.)";

function section(text: string, name: string): string | undefined {
  const start = `<!-- section:${name} -->`;
  const end = `<!-- /section:${name} -->`;
  const i = text.indexOf(start);
  const j = text.indexOf(end);
  return i >= 0 && j > i ? text.slice(i + start.length, j).trim() : undefined;
}

function wrap(name: string, body: string): string {
  return `<!-- section:${name} -->\n${body.trim()}\n<!-- /section:${name} -->`;
}

function runtimeSection(
  result: RelayBenchResult,
  head: Record<string, unknown>,
  env: Record<string, string>,
  command: string,
): string {
  const rt = String(head.runtime);
  return [
    `<!-- headline ${JSON.stringify({ ...head, date: env.date })} -->`,
    `## ${rt}`,
    "",
    `- Command: \`${command}\``,
    `- Date: ${env.date}; code: ${env.revision}`,
    `- Machine: ${env.nproc} CPUs (\`nproc\`), ${env.cpu}, Linux ${env.kernel}; 1-min load average ${env.loadBefore} before, ${env.loadAfter} after ` +
    "(a shared machine: other work inflates the ranges)",
    `- Runtime: ${rt}; @libsql/client ${env.client} (embedded, \`file:\` in the system temp folder); SQLite ${result.sqliteVersion}`,
    `- Database: journal_mode=${result.journalMode.toUpperCase()}, other PRAGMAs at their defaults (synchronous=FULL); a fresh file per run`,
    `- Workload: ${
      fmt(result.messages)
    } messages per run, ~${result.payloadBytes}-byte JSON payloads, enqueued in write transactions of ${result.txSize}; ` +
    `each figure is the median of ${result.repeats} interleaved runs; wall time ${(result.wallMs / 1000).toFixed(0)} s`,
    "",
    "### Drain (messages/s into `memoryPublisher()`)",
    "",
    "`tick()`: `await outbox.tick()` until a tick claims nothing. `start()`: the loop until `onTick` has counted every message published " +
    "(then `stats()` shows 0 pending, 0 processing) and `stop()`. Raw: the same storage with no relay, " +
    "`storage.claim()` then `storage.settle()` with every row published: the ceiling. tick/raw is the share of it the relay keeps, " +
    "the median of the per-repeat ratios (each relay run and its raw twin run close together, which cancels most of the drifting load).",
    "",
    drainTable(result),
    "",
    "### Enqueue (messages/s into the outbox, committed)",
    "",
    enqueueTable(result),
    "",
    "### Time split of `tick()` drains",
    "",
    "Wall time inside `storage.claim()` and `storage.settle()` (measured by a wrapper around the storage) and the rest: " +
    "the relay core (row → record with JSON decode, lanes, the publisher). µs per message in parentheses.",
    "",
    breakdownTable(result),
  ].join("\n");
}

function headlineTable(sections: string[]): string {
  const heads = sections
    .map((s) => /<!-- headline (\{.*\}) -->/.exec(s)?.[1])
    .filter((x): x is string => !!x)
    .map((x) => JSON.parse(x) as Record<string, number | string | null>);
  const n = (v: unknown) => (typeof v === "number" ? fmt(v) : "–");
  const r = (v: unknown) => (typeof v === "number" ? v.toFixed(2) : "–");
  return markdownTable(
    [
      "runtime",
      "date",
      "unkeyed",
      "16 keys",
      "10,000 keys",
      "tick/raw unkeyed",
      "tick/raw 16 keys",
      "start() unkeyed",
      "start() 16 keys",
      "enqueue unkeyed",
    ],
    heads.map((h) => [
      String(h.runtime),
      String(h.date ?? "").slice(0, 10),
      `**${n(h.libsql_unkeyed_msgs_per_s)}**`,
      `**${n(h.libsql_16keys_msgs_per_s)}**`,
      n(h.libsql_10000keys_msgs_per_s),
      r(h.libsql_relay_vs_raw_claim_unkeyed),
      r(h.libsql_relay_vs_raw_claim_16keys),
      n(h.libsql_unkeyed_start_msgs_per_s),
      n(h.libsql_16keys_start_msgs_per_s),
      n(h.libsql_enqueue_unkeyed_msgs_per_s),
    ]),
    ["---", "---", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:"],
  );
}

/** Rewrites BENCHMARKS.md: this runtime's section replaced, the others and the notes kept. */
export function writeBenchmarks(path: string, runtimeId: string, body: string): void {
  const old = existsSync(path) ? readFileSync(path, "utf8") : "";
  const notes = section(old, "notes") ?? NOTES_PLACEHOLDER;
  const order = ["bun", "deno", "node"];
  const runtimes = order
    .map((id) => [id, id === runtimeId ? body : section(old, `runtime:${id}`)] as const)
    .filter((x): x is readonly [string, string] => !!x[1]);
  const text = [
    "# Benchmarks",
    "",
    "Relay throughput of `@x/outbox` on embedded libSQL (`file:`) into `memoryPublisher()`: how fast a backlog drains, " +
    "and how that compares with the storage alone. Generated by `bench/run.ts`; each runtime's section is replaced by its " +
    "own full run:",
    "",
    "```sh",
    "npm run bench                      # bun bench/run.ts, ~1.5 min",
    "npx deno run -A bench/run.ts       # the same under Deno",
    "npx bun bench/run.ts --quick       # smoke run < 60 s (writes this file only with --write)",
    "```",
    "",
    "## Headline (`tick()` drains, default batchSize 100, messages/s)",
    "",
    headlineTable(runtimes.map(([, s]) => s)),
    "",
    wrap("notes", notes),
    "",
    ...runtimes.map(([id, s]) => `${wrap(`runtime:${id}`, s)}\n`),
  ].join("\n");
  writeFileSync(path, text);
}

// ---------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------

if ((import.meta as { main?: boolean }).main) {
  const args = argv();
  const quick = args.includes("--quick");
  const write = args.includes("--write-md"); // the suite (bench/run.ts) owns BENCHMARKS.md now
  const messages = Number(option(args, "messages") ?? (quick ? 5_000 : 20_000));
  const repeats = Number(option(args, "repeats") ?? (quick ? 3 : 5));
  const rt = runtime();
  const root = fileURLToPath(new URL("..", import.meta.url));
  let clientVersion = "?";
  try {
    clientVersion = JSON.parse(readFileSync(`${root}node_modules/@libsql/client/package.json`, "utf8")).version;
  } catch {
    // not installed where expected
  }
  const env = {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    nproc: String(cpus().length),
    cpu: cpuModel(),
    kernel: release(),
    client: clientVersion,
    revision: gitRevision(root),
    loadBefore: loadavg()[0]!.toFixed(2),
    loadAfter: "",
  };
  console.log(`@x/outbox relay bench: libSQL file: → memoryPublisher, ${rt.name}, ${env.nproc} CPUs (${env.cpu})`);
  console.log(`${fmt(messages)} messages per run, ${repeats} interleaved repeats${quick ? " (quick)" : ""}`);
  const result = await runRelayBench({ messages, repeats, log: console.log });
  const head = headline(result, rt);
  env.loadAfter = loadavg()[0]!.toFixed(2);
  console.log("");
  console.log(
    `SQLite ${result.sqliteVersion}, journal_mode=${result.journalMode}, ~${result.payloadBytes}-byte payloads; medians, messages/s`,
  );
  console.log(plainTable(result));
  console.log("");
  console.log(breakdownTable(result));
  if (write) {
    const command = g.Deno
      ? `npx deno run -A bench/run.ts ${args.join(" ")}`.trim()
      : `npx bun bench/run.ts ${args.join(" ")}`.trim();
    writeBenchmarks(`${root}BENCHMARKS.md`, rt.id, runtimeSection(result, head, env, command));
    console.log(`\nWrote BENCHMARKS.md (${rt.id} section), wall time ${(result.wallMs / 1000).toFixed(0)} s`);
  }
  console.log(JSON.stringify(head));
}
