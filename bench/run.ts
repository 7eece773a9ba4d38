/**
 * `npm run bench`: the benchmark suite, ours next to the physical ceiling and a peer,
 * interleaved in one run, reported as ratios.
 *
 *   npx bun bench/run.ts            full run (~6–8 min): rewrites BENCHMARKS.md, bench/*.svg, bench/results.json
 *   npx bun bench/run.ts --quick    smoke run (< 60 s): prints only (add --write to write the files)
 *
 * Needs PostgreSQL (OUTBOX_BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432/test)
 * and nats-server with JetStream (OUTBOX_BENCH_NATS_URL, default 127.0.0.1:4222).
 * Progress goes to stderr; stdout ends with one JSON line of headline figures.
 *
 * @module
 */

import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, release } from "node:os";
import { fileURLToPath } from "node:url";
import { edgeLibsql, edgePostgres } from "./edge.ts";
import { runEnqueue } from "./enqueue.ts";

/** The enqueue ratios the target covers, and how the table names them. */
const ENQUEUE_TARGETS = [
  "pg_seq/pg_hand_seq",
  "pg_pipe/pg_hand_pipe",
  "libsql_seq/libsql_hand_seq",
  "libsql_batch/libsql_batch_hand",
];
const ENQUEUE_LABEL: Record<string, string> = {
  "pg_seq/pg_hand_seq": "Postgres sequential",
  "pg_pipe/pg_hand_pipe": "Postgres pipelined",
  "libsql_seq/libsql_hand_seq": "libSQL transaction",
  "libsql_batch/libsql_batch_hand": "libSQL batch",
};
import { type LatencyResult, runLatency } from "./latency.ts";
import { g, loadavg, log, median, nats, pg, rawPublishRate, round } from "./lib.ts";
import { peerFill, peerRate, peerSetup } from "./peer.ts";
import { runScale } from "./scale.ts";
import { barChart } from "./svg.ts";
import { med, postgresTarget, relayRate, runThroughput } from "./throughput.ts";

const args: string[] = g.Deno ? [...g.Deno.args] : (g.process?.argv ?? []).slice(2);
const quick = args.includes("--quick");
const write = args.includes("--write") || (!quick && !args.includes("--no-write"));
const root = fileURLToPath(new URL("..", import.meta.url));

const cfg = quick
  ? {
    messages: 5_000,
    repeats: 1,
    keys: [0, 16, 10_000],
    peerMessages: 2_000,
    peerRepeats: 1,
    enqBlocks: 3,
    enqPerBlock: 100,
    latencySeconds: 2,
    scale: { small: 10_000, large: 100_000, ticks: 10, probe: 10_000 },
  }
  : {
    messages: 20_000,
    repeats: 3,
    keys: [0, 16, 10_000],
    peerMessages: 20_000,
    peerRepeats: 3,
    enqBlocks: 7,
    enqPerBlock: 300,
    latencySeconds: 10,
    scale: { small: 10_000, large: 1_000_000, ticks: 30, probe: 50_000 },
  };

function sh(cmd: string, a: string[]): string {
  try {
    return execFileSync(cmd, a, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "?";
  }
}
const pkgVersion = (name: string) => {
  try {
    return JSON.parse(readFileSync(`${root}node_modules/${name}/package.json`, "utf8")).version as string;
  } catch {
    return "?";
  }
};
const cpuModel = () => {
  try {
    return readFileSync("/proc/cpuinfo", "utf8").split("\n").find((l) => l.startsWith("model name"))?.split(":")[1]
      ?.trim() ?? cpus()[0]?.model ?? "?";
  } catch {
    return cpus()[0]?.model ?? "?";
  }
};
const runtimeName = () =>
  g.Bun ? `Bun ${g.Bun.version}` : g.Deno ? `Deno ${g.Deno.version.deno}` : `Node ${g.process?.version}`;

const started = performance.now();
const loadBefore = await loadavg();
log(`@x/outbox bench suite (${quick ? "quick" : "full"}), ${runtimeName()}, load ${loadBefore.join(" ")}`);

const n = await nats();
const sqlInfo = pg({ max: 1 });
const pgVersion = String((await sqlInfo.unsafe("SHOW server_version"))[0]!.server_version);
const pgSync = String((await sqlInfo.unsafe("SHOW synchronous_commit"))[0]!.synchronous_commit);
await sqlInfo.end({ timeout: 1 });
const natsVersion = (n.nc as unknown as { info?: { version?: string } }).info?.version ?? "?";

// 1 + 2: ceilings and relay throughput.
log("1/2 ceilings and relay throughput …");
const tp = await runThroughput(n, {
  messages: cfg.messages,
  repeats: cfg.repeats,
  batchSize: 1_000,
  keysList: cfg.keys,
});

// 6: the peer, interleaved with our Postgres relay and raw JetStream.
log("6 peer: pg-transactional-outbox …");
const peerSamples: number[] = [];
const oursForPeer: number[] = [];
const peerRatios: number[] = [];
const rawForPeer: number[] = [];
{
  const sql = pg({ max: 2 });
  const schema = `benchpeer_${Date.now().toString(36)}`;
  const target = await postgresTarget(pg(), `benchpeerours_${Date.now().toString(36)}`);
  try {
    await peerSetup(sql, schema);
    for (let r = 0; r < cfg.peerRepeats; r++) {
      rawForPeer.push(await rawPublishRate(n.js, n.subject, cfg.peerMessages, 256));
      const ours = await relayRate(target, n.js, n.jsm, n.stream, cfg.peerMessages, 0, n.subject, 1_000);
      await peerFill(sql, schema, cfg.peerMessages, 0, n.subject);
      const theirs = await peerRate(sql, schema, n.js, n.subject, cfg.peerMessages, 500);
      oursForPeer.push(ours);
      peerSamples.push(theirs);
      peerRatios.push(ours / theirs);
      log(
        `  peer r${r}: ours ${Math.round(ours)} msg/s, pg-transactional-outbox ${Math.round(theirs)} msg/s, ratio ${
          (ours / theirs).toFixed(1)
        }`,
      );
    }
  } finally {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await sql.end({ timeout: 1 });
    await target.close();
  }
}

// 3: enqueue overhead.
log("3 enqueue overhead …");
const enq = await runEnqueue({ blocks: cfg.enqBlocks, perBlock: cfg.enqPerBlock });
log(`  ${JSON.stringify(enq.ratio)}`);

// 4: latency.
log("4 latency at 1,000 msg/s …");
const lat = await runLatency(n.js, n.subject, cfg.latencySeconds, 1_000);

// 5: scale.
log("5 scale …");
const scale = await runScale(cfg.scale);
log(`  ${JSON.stringify(scale.full)}`);

// 7: edge cost.
log("7 edge cost …");
const edgePg = await edgePostgres();
const edgeLite = await edgeLibsql();
const edge = [...edgePg, ...edgeLite.cases];

await n.close();
const loadAfter = await loadavg();
const wallS = (performance.now() - started) / 1000;

// ---- headline ----
const raw256 = med(tp.samples, "raw_256");
const ratio = (k: string) => median(tp.ratios[k] ?? []);
const latOf = (mode: string) => lat.find((l) => l.mode === mode);
const edgeOf = (db: string, tick: string) => edge.find((e) => e.db === db && e.tick === tick);
const head: Record<string, unknown> = {
  mode: quick ? "quick" : "full",
  runtime: runtimeName(),
  messages: cfg.messages,
  load_before: loadBefore[0],
  load_after: loadAfter[0],
  jetstream_raw_256_msgs_per_s: Math.round(raw256),
  jetstream_raw_1_msgs_per_s: Math.round(med(tp.samples, "raw_1")),
  pg_claim_delete_msgs_per_s: Math.round(med(tp.samples, "pg_claim_delete")),
  pg_delete_returning_msgs_per_s: Math.round(med(tp.samples, "pg_delete_returning")),
  libsql_claim_delete_msgs_per_s: Math.round(med(tp.samples, "libsql_claim_delete")),
  libsql_delete_returning_msgs_per_s: Math.round(med(tp.samples, "libsql_delete_returning")),
};
for (const db of ["pg", "libsql"]) {
  for (const k of cfg.keys) {
    const key = `${db}_js_${k === 0 ? "unkeyed" : `${k}keys`}`;
    head[`relay_${db}_${k === 0 ? "unkeyed" : `${k}keys`}_msgs_per_s`] = Math.round(med(tp.samples, key));
    head[`relay_${db}_${k === 0 ? "unkeyed" : `${k}keys`}_vs_ceiling`] = round(ratio(key));
  }
}
Object.assign(head, {
  peer_pg_transactional_outbox_msgs_per_s: Math.round(median(peerSamples)),
  ours_pg_unkeyed_same_backlog_msgs_per_s: Math.round(median(oursForPeer)),
  ours_vs_peer: round(median(peerRatios), 1),
  ...Object.fromEntries(Object.entries(enq.ratio).map(([k, r]) => [`enqueue_${k.replace("/", "_vs_")}`, round(r)])),
});
for (const l of lat) {
  head[`latency_${l.mode}_p50_ms`] = round(l.p50, 1);
  head[`latency_${l.mode}_p99_ms`] = round(l.p99, 1);
  head[`latency_${l.mode}_max_ms`] = round(l.max, 1);
}
Object.assign(head, {
  scale_tick_ms_small: round(scale.small.tickMsMedian),
  scale_tick_ms_large: round(scale.large.tickMsMedian),
  scale_drain_small_msgs_per_s: Math.round(scale.small.drainRate),
  scale_drain_large_msgs_per_s: Math.round(scale.large.drainRate),
  scale_drain_large_vs_small: round(scale.large.drainRate / scale.small.drainRate),
  scale_large_rows: cfg.scale.large,
  scale_table_mb_full: round(scale.full.sizeFull / 2 ** 20, 1),
  scale_table_mb_after_drain: round(scale.full.sizeAfter / 2 ** 20, 1),
  scale_table_mb_after_vacuum: round(scale.full.sizeVacuumed / 2 ** 20, 1),
  scale_table_mb_after_reuse: round(scale.full.sizeReused / 2 ** 20, 1),
  cpu_us_per_msg: Object.fromEntries(
    Object.entries(tp.cpu).map((
      [k, c],
    ) => [k, { relay: round(median(c.self), 1), pg: round(median(c.pg), 1), nats: round(median(c.nats), 1) }]),
  ),
  edge_pg_idle_statements: edgeOf("pg", "idle")?.statements,
  edge_pg_idle_round_trips: edgeOf("pg", "idle")?.roundTrips,
  edge_pg_idle_rows_read: edgeOf("pg", "idle")?.rowsRead,
  edge_pg_publish1_round_trips: edgeOf("pg", "publish1")?.roundTrips,
  edge_pg_publish1_rows_read: edgeOf("pg", "publish1")?.rowsRead,
  edge_libsql_idle_requests: edgeOf("libsql", "idle")?.roundTrips,
  edge_libsql_publish1_requests: edgeOf("libsql", "publish1")?.roundTrips,
});
const pgStartP99 = latOf("pg_start")?.p99 ?? NaN;
const targets = {
  relay_unkeyed_ge_0_8: ["pg", "libsql"].every((db) => ratio(`${db}_js_unkeyed`) >= 0.8),
  relay_keyed_ge_0_5: ["pg", "libsql"].every((db) =>
    cfg.keys.filter((k) => k > 0).every((k) => ratio(`${db}_js_${k}keys`) >= 0.5)
  ),
  enqueue_le_1_1_handwritten: ENQUEUE_TARGETS.every((k) => enq.ratio[k]! <= 1.1),
  latency_pg_start_p99_le_10ms: pgStartP99 <= 10,
  scale_flat_within_20pct: scale.large.drainRate / scale.small.drainRate >= 0.8,
  // Bounded: nothing left behind, and after the drain, a VACUUM and more traffic the relation is smaller than
  // it was while it held the whole backlog (freed space is reused; growth stays that of the traffic since the vacuum).
  table_bounded: scale.full.rowsLeft === 0 && scale.full.sizeReused < scale.full.sizeFull,
};
head.targets_met = targets;
head.wall_s = Math.round(wallS);

// ---- report ----
const fmt = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString("en-US") : "–");
const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "–");
const yes = (b: boolean) => (b ? "**met**" : "**not met**");
const kl = (k: number) => (k === 0 ? "unkeyed" : `${k.toLocaleString("en-US")} keys`);
const table = (header: string[], rows: (string | number)[][], align?: string[]) =>
  [
    `| ${header.join(" | ")} |`,
    `| ${header.map((_, i) => (align?.[i] ?? (i === 0 ? "---" : "--:"))).join(" | ")} |`,
    ...rows.map((r) => `| ${r.join(" | ")} |`),
  ].join("\n");

const throughputSvg = barChart({
  title: `Relay → JetStream, ${cfg.messages.toLocaleString("en-US")}-message backlog (median msg/s)`,
  unit: "messages/s",
  groups: [
    {
      label: "Ceilings",
      bars: [
        { label: "JetStream js.publish, 256 in flight", value: raw256, color: "#888" },
        { label: "JetStream js.publish, 1 in flight", value: med(tp.samples, "raw_1"), color: "#aaa" },
        { label: "Postgres claim+delete (adapter)", value: med(tp.samples, "pg_claim_delete"), color: "#aaa" },
        { label: "libSQL claim+delete (adapter)", value: med(tp.samples, "libsql_claim_delete"), color: "#aaa" },
      ],
    },
    ...(["pg", "libsql"] as const).map((db) => ({
      label: db === "pg" ? "@x/outbox, Postgres → JetStream" : "@x/outbox, libSQL → JetStream",
      bars: cfg.keys.map((k) => {
        const key = `${db}_js_${k === 0 ? "unkeyed" : `${k}keys`}`;
        return {
          label: kl(k),
          value: med(tp.samples, key),
          note: `(${ratio(key).toFixed(2)}× raw)`,
          color: db === "pg" ? "#336699" : "#3a8a5a",
        };
      }),
    })),
    {
      label: `Peer, Postgres → JetStream, unkeyed (${cfg.peerMessages.toLocaleString("en-US")} backlog)`,
      bars: [
        { label: "@x/outbox", value: median(oursForPeer), color: "#336699" },
        { label: "pg-transactional-outbox 0.5.7", value: median(peerSamples), color: "#c07030" },
      ],
    },
  ],
  refs: [{ value: 0.8 * raw256, label: "0.8× raw (unkeyed target)" }, {
    value: 0.5 * raw256,
    label: "0.5× raw (keyed target)",
    color: "#e08000",
  }],
});
const latencySvg = barChart({
  title: "Latency commit → JetStream ack at 1,000 msg/s offered (ms)",
  unit: "milliseconds",
  log: true,
  groups: lat.map((l) => ({
    label: `${l.mode.startsWith("pg") ? "Postgres" : "libSQL"}, ${
      l.mode.endsWith("start") ? "start()" : "tick() once per second"
    }`,
    bars: [
      { label: "p50", value: l.p50, color: "#6a9fd4" },
      { label: "p99", value: l.p99, color: "#336699" },
      { label: "max", value: l.max, color: "#1a3350" },
    ],
  })),
  refs: [{ value: 10, label: "10 ms (start() p99 target on Postgres)" }],
});

const md = `# Benchmarks

\`@x/outbox\` next to the physical ceiling (raw JetStream publishing, the database's own
claim+delete) and a peer (\`pg-transactional-outbox\`), measured in one run, interleaved,
and reported as ratios: this is a shared 2-CPU machine and absolute numbers drift with
its load; a ratio of two runs made back to back drifts much less.

<!-- generated by bench/run.ts: everything from here to the notes marker is rewritten by a full run -->

## How to run

\`\`\`sh
npm run bench                 # = bun bench/run.ts: full suite, ~${
  Math.max(1, Math.round(wallS / 60))
} min; rewrites this file, bench/*.svg, bench/results.json
npm run bench -- --quick      # smoke run, < 60 s, prints only (--write to write the files)
npx bun bench/libsql-memory.ts   # libSQL → memoryPublisher micro-benchmark (relay core vs storage, time split)
npx bun bench/explain-postgres.ts # EXPLAIN ANALYZE of every hot query on 1M rows → bench/explain-postgres.md
\`\`\`

Services: PostgreSQL (\`OUTBOX_BENCH_PG_URL\`, default \`postgres://postgres@127.0.0.1:5432/test\`)
and nats-server with JetStream (\`OUTBOX_BENCH_NATS_URL\`, default \`127.0.0.1:4222\`). The last
line of stdout is one JSON object with the headline figures and \`targets_met\`.

## This run

- Command: \`npx bun bench/run.ts${args.length ? ` ${args.join(" ")}` : ""}\`; date ${
  new Date().toISOString().replace(/\.\d+Z$/, "Z")
}; code ${sh("git", ["rev-parse", "--short", "HEAD"])}${
  sh("git", ["status", "--porcelain", "--", "mod.ts", "src", "adapters"])
    ? " + uncommitted changes in src/adapters"
    : ""
}; wall time ${Math.round(wallS)} s
- Machine: ${cpus().length} CPUs, ${cpuModel()}, Linux ${release()}; load average (1 min) ${loadBefore[0]} before, ${
  loadAfter[0]
} after (shared machine)
- Runtime: ${runtimeName()}; postgres.js ${pkgVersion("postgres")}, @libsql/client ${
  pkgVersion("@libsql/client")
} (embedded \`file:\`, WAL), @nats-io/jetstream ${pkgVersion("@nats-io/jetstream")}, pg ${
  pkgVersion("pg")
}, pg-transactional-outbox ${pkgVersion("pg-transactional-outbox")}
- Servers: PostgreSQL ${pgVersion} (synchronous_commit=${pgSync}) and nats-server ${natsVersion} on localhost; streams with file storage
- Workload: ~150-byte JSON order payloads; relay throughput ${
  cfg.messages.toLocaleString("en-US")
}-message backlogs, median of ${cfg.repeats} interleaved repeats; relays at batchSize 1,000, concurrency 64

## Targets

| # | target | measured | |
| --- | --- | --- | --- |
| 2 | relay unkeyed ≥ 0.8 × raw pipelined JetStream (same run) | Postgres ${
  ratio("pg_js_unkeyed").toFixed(3)
}×, libSQL ${ratio("libsql_js_unkeyed").toFixed(3)}× | ${yes(targets.relay_unkeyed_ge_0_8)} |
| 2 | relay keyed ≥ 0.5 × raw | Postgres ${
  cfg.keys.filter((k) => k).map((k) => `${ratio(`pg_js_${k}keys`).toFixed(2)}× (${kl(k)})`).join(", ")
}; libSQL ${
  cfg.keys.filter((k) => k).map((k) => `${ratio(`libsql_js_${k}keys`).toFixed(2)}× (${kl(k)})`).join(", ")
} | ${yes(targets.relay_keyed_ge_0_5)} |
| 3 | enqueue ≤ 1.1 × a hand-written INSERT of the same row, same transaction | ${
  ENQUEUE_TARGETS.map((k) => `${ENQUEUE_LABEL[k]} ${enq.ratio[k]!.toFixed(2)}×`).join(", ")
} | ${yes(targets.enqueue_le_1_1_handwritten)} |
| 4 | start() on Postgres: p99 commit → ack ≤ 10 ms at 1,000 msg/s | p99 ${ms(pgStartP99)} ms (p50 ${
  ms(latOf("pg_start")?.p50 ?? NaN)
} ms) | ${yes(targets.latency_pg_start_p99_le_10ms)} |
| 5 | flat with backlog size: drain rate at ${cfg.scale.large.toLocaleString("en-US")} rows vs ${
  cfg.scale.small.toLocaleString("en-US")
} | ${(scale.large.drainRate / scale.small.drainRate).toFixed(2)}×; tick of 100: ${ms(scale.small.tickMsMedian)} vs ${
  ms(scale.large.tickMsMedian)
} ms | ${yes(targets.scale_flat_within_20pct)} |
| 5 | table bounded after ${
  cfg.scale.large.toLocaleString("en-US")
} messages, default retention | ${scale.full.rowsLeft} rows left; ${
  (scale.full.sizeVacuumed / 2 ** 20).toFixed(1)
} MB after VACUUM, ${(scale.full.sizeReused / 2 ** 20).toFixed(1)} MB after another ${
  cfg.scale.small.toLocaleString("en-US")
} | ${yes(targets.table_bounded)} |
| 6 | peer, same backlog, same run | ${median(peerRatios).toFixed(1)}× pg-transactional-outbox | |

## 1. Ceilings

| ceiling | msg/s (median) | samples |
| --- | --: | --: |
| JetStream \`js.publish\`, 256 in flight | ${fmt(raw256)} | ${(tp.samples.raw_256 ?? []).map(fmt).join(", ")} |
| JetStream \`js.publish\`, 1 in flight | ${fmt(med(tp.samples, "raw_1"))} | ${
  (tp.samples.raw_1 ?? []).map(fmt).join(", ")
} |
| Postgres: adapter claim + settle(delete), batch 1,000, nothing published | ${
  fmt(med(tp.samples, "pg_claim_delete"))
} | ${(tp.samples.pg_claim_delete ?? []).map(fmt).join(", ")} |
| Postgres: one \`DELETE … RETURNING\` (SKIP LOCKED) per 1,000 | ${fmt(med(tp.samples, "pg_delete_returning"))} | ${
  (tp.samples.pg_delete_returning ?? []).map(fmt).join(", ")
} |
| libSQL: adapter claim + settle(delete), batch 1,000 | ${fmt(med(tp.samples, "libsql_claim_delete"))} | ${
  (tp.samples.libsql_claim_delete ?? []).map(fmt).join(", ")
} |
| libSQL: one \`DELETE … RETURNING\` per 1,000 | ${fmt(med(tp.samples, "libsql_delete_returning"))} | ${
  (tp.samples.libsql_delete_returning ?? []).map(fmt).join(", ")
} |

The relay's end-to-end ceiling is the slower of the broker and the database: here the broker
(raw pipelined JetStream) in every case.

## 2. Relay throughput → JetStream

![throughput](bench/throughput.svg)

\`tick()\` until the backlog is gone, into a file-backed stream (the stream's message count is
checked after each run). Each relay run is paired with a raw 256-in-flight run made just before
it; the ratio is the median of the pairs' ratios.

${
  table(
    ["storage", "keys", "relay msg/s (median)", "relay / raw 256", "pair ratios"],
    (["pg", "libsql"] as const).flatMap((db) =>
      cfg.keys.map((k) => {
        const key = `${db}_js_${k === 0 ? "unkeyed" : `${k}keys`}`;
        return [
          db === "pg" ? "Postgres" : "libSQL",
          kl(k),
          fmt(med(tp.samples, key)),
          `**${ratio(key).toFixed(2)}**`,
          (tp.ratios[key] ?? []).map((x) => x.toFixed(2)).join(", "),
        ];
      })
    ),
    ["---", "---", "--:", "--:", "--:"],
  )
}

### CPU per message

This machine has ${cpus().length} cores, shared by the relay (this process), postgres and nats-server.
CPU time per message (median over the runs; from \`process.cpuUsage()\` and /proc for the servers):

${
  table(
    ["case", "relay process µs", "postgres µs", "nats-server µs", "total µs", "floor on 2 cores: msg/s"],
    Object.keys(tp.cpu).map((k) => {
      const c = tp.cpu[k]!;
      const self = median(c.self), pgc = median(c.pg), nt = median(c.nats);
      const total = self + pgc + nt;
      // Wall time per message can be no less than the busiest single thread (this process) or total / cores.
      const floor = 1e6 / Math.max(self, total / cpus().length);
      return [
        k === "raw_256" ? "raw js.publish, 256 in flight" : k,
        self.toFixed(1),
        pgc.toFixed(1),
        nt.toFixed(1),
        total.toFixed(1),
        fmt(floor),
      ];
    }),
    ["---", "--:", "--:", "--:", "--:", "--:"],
  )
}

## 3. Enqueue overhead

A business transaction inserting one order row and one outbox message, through \`outbox.enqueue\` and through a
hand-written INSERT of the same row (a random UUID, \`JSON.stringify\` of the payload, prepared), and the order alone
for context; one transaction at a time, ${cfg.enqBlocks} alternating blocks of ${cfg.enqPerBlock}; µs per transaction
(median of blocks) and the median over blocks of the ratio of two variants' times in the same block.

${
  table(
    ["database", "form", "order only µs", "order + hand-written µs", "order + enqueue µs", "enqueue / hand-written"],
    [
      [
        "Postgres",
        "sequential: \`await tx\\\`insert order\\\`; await outbox.enqueue(tx, m)\`",
        "pg_order",
        "pg_hand_seq",
        "pg_seq",
      ],
      [
        "Postgres",
        "pipelined: \`Promise.all([tx\\\`insert order\\\`, outbox.enqueue(tx, m)])\`",
        "pg_order",
        "pg_hand_pipe",
        "pg_pipe",
      ],
      ["Postgres", "sequential, storage \`notify: false\`", "pg_order", "pg_hand_seq", "pg_seq_nonotify"],
      ["libSQL", 'sequential in \`client.transaction("write")\`', "libsql_order", "libsql_hand_seq", "libsql_seq"],
      [
        "libSQL",
        '\`client.batch([insert order, ...outbox.statements(m)], "write")\`',
        "libsql_batch_order",
        "libsql_batch_hand",
        "libsql_batch",
      ],
    ].map((
      [db, form, o, h, e],
    ) => [
      db!,
      form!,
      ms(enq.usPerTx[o!]!),
      ms(enq.usPerTx[h!]!),
      ms(enq.usPerTx[e!]!),
      `**${enq.ratio[`${e}/${h}`]!.toFixed(2)}**`,
    ]),
    ["---", "---", "--:", "--:", "--:", "--:"],
  )
}

## 4. Latency commit → JetStream ack

![latency](bench/latency.svg)

A producer (its own outbox instance and client, as another process would be) commits one message
per transaction at 1,000 msg/s offered for ${cfg.latencySeconds} s; the relay runs \`start()\` (Postgres: LISTEN/NOTIFY;
libSQL: polling with back-off) or a cron-style \`tick()\` once per second. Latency = ack received − commit returned.

${
  table(
    ["storage", "relay", "offered / achieved msg/s", "acked", "p50 ms", "p90 ms", "p99 ms", "max ms"],
    lat.map((l: LatencyResult) => [
      l.mode.startsWith("pg") ? "Postgres" : "libSQL",
      l.mode.endsWith("start") ? "start()" : "tick() every 1 s",
      `${fmt(l.offered)} / ${fmt(l.achievedRate)}`,
      `${l.acked} / ${l.sent}`,
      ms(l.p50),
      ms(l.p90),
      `**${ms(l.p99)}**`,
      ms(l.max),
    ]),
    ["---", "---", "--:", "--:", "--:", "--:", "--:", "--:"],
  )
}

## 5. Scale (Postgres)

Backlogs written with one \`INSERT … SELECT generate_series\`, drained by \`tick()\` into a no-op publisher (only the storage shows).

${
  table([
    "backlog rows",
    "tick of 100 (median of " + cfg.scale.ticks + "), ms",
    `drain rate, first ${cfg.scale.probe.toLocaleString("en-US")} at batch 1,000, msg/s`,
  ], [
    [fmt(scale.small.backlog), ms(scale.small.tickMsMedian), fmt(scale.small.drainRate)],
    [fmt(scale.large.backlog), ms(scale.large.tickMsMedian), fmt(scale.large.drainRate)],
  ])
}

Whole ${
  cfg.scale.large.toLocaleString("en-US")
}-message backlog drained with default retention (\`publishedMs: 0\`: a row is deleted when published):
${fmt(scale.full.drainRate)} msg/s; rows left ${scale.full.rowsLeft}; table + indexes ${
  (scale.full.sizeFull / 2 ** 20).toFixed(1)
} MB full,
${(scale.full.sizeAfter / 2 ** 20).toFixed(1)} MB right after the drain (dead tuples), ${
  (scale.full.sizeVacuumed / 2 ** 20).toFixed(1)
} MB after a plain VACUUM
(what autovacuum does; the file keeps its size, the space is free for reuse), ${
  (scale.full.sizeReused / 2 ** 20).toFixed(1)
} MB after another
${cfg.scale.small.toLocaleString("en-US")} messages went through (reused, not grown).

## 6. Peer: pg-transactional-outbox

Same ~150-byte payloads, same stream, Postgres → JetStream, unkeyed (\`concurrency: 'parallel'\`),
${
  cfg.peerMessages.toLocaleString("en-US")
}-message backlog, interleaved with our relay on the same backlog size. Its polling listener with
\`nextMessagesBatchSize: 500\` (tried 100 and 500: 500 is faster), polling interval 1 ms, 20-connection pools,
poisonous-message and max-attempts protection off; its handler awaits \`js.publish\` with the message id as \`Nats-Msg-Id\`.
It marks each message processed in its own transaction, and its \`next_outbox_messages\` function scans every unprocessed row per poll.

${
  table(
    ["repeat", "raw 256 msg/s", "@x/outbox msg/s", "pg-transactional-outbox msg/s", "ours / theirs"],
    peerSamples.map((
      p,
      i,
    ) => [i + 1, fmt(rawForPeer[i]!), fmt(oursForPeer[i]!), fmt(p), `**${peerRatios[i]!.toFixed(1)}**`]),
  )
}

## 7. Edge cost (one tick)

${
  table(
    ["database", "tick", "statements", "round trips", "rows read", "what runs"],
    edge.map((e) => [
      e.db === "pg" ? "Postgres" : "libSQL",
      e.tick,
      e.statements,
      e.roundTrips,
      e.rowsRead === null ? "–" : e.rowsRead,
      e.detail,
    ]),
    ["---", "---", "--:", "--:", "--:", "---"],
  )
}

Postgres statements are counted with postgres.js's \`debug\` hook; rows read come from EXPLAIN (ANALYZE) of the claim
(and settle) replayed in a rolled-back transaction: rows returned by each scan node plus rows its filters removed.
libSQL requests are counted by wrapping the client (each \`execute\`/\`batch\` is one HTTP request to Turso); rows read
follow from the claim's plan:

\`\`\`
${edgeLite.claimPlan.join("\n")}
\`\`\`

The claim walks \`claim_dest_idx\` (a covering index over unsettled rows only, led by the destination) in \`seq\` order
within its destination and stops after \`limit\` claimable rows; the key barrier is one SEARCH of \`key_dest_idx\` per
keyed candidate. "Idle" here is an empty table: the claim reads no rows. Rows that are unsettled but not claimable
(leased, backing off, scheduled for later, or held behind their key's failed message) sit in \`claim_dest_idx\` ahead
of or among claimable ones of their destination and are read by every claim of it, idle or not: on Turso that is
billed as rows read (see "A blocked key slows every claim" in the notes).

<!-- end generated -->
`;

const notesStart = "<!-- section:notes -->";
const notesEnd = "<!-- /section:notes -->";
const old = existsSync(`${root}BENCHMARKS.md`) ? readFileSync(`${root}BENCHMARKS.md`, "utf8") : "";
const notes = old.includes(notesStart)
  ? old.slice(old.indexOf(notesStart), old.indexOf(notesEnd) + notesEnd.length)
  : `${notesStart}\n${notesEnd}`;

if (write) {
  writeFileSync(`${root}bench/throughput.svg`, throughputSvg);
  writeFileSync(`${root}bench/latency.svg`, latencySvg);
  writeFileSync(
    `${root}bench/results.json`,
    JSON.stringify(
      {
        head,
        throughput: tp,
        peer: { peerSamples, oursForPeer, rawForPeer, peerRatios },
        enqueue: enq,
        latency: lat,
        scale,
        edge,
        claimPlanLibsql: edgeLite.claimPlan,
      },
      null,
      1,
    ) + "\n",
  );
  writeFileSync(`${root}BENCHMARKS.md`, `${md}\n${notes}\n`);
  log(`wrote BENCHMARKS.md, bench/throughput.svg, bench/latency.svg, bench/results.json (${Math.round(wallS)} s)`);
} else {
  log(md);
}
console.log(JSON.stringify(head));
// postgres.js/NATS sockets are closed; make sure no stray timer keeps the process alive.
g.process?.exit?.(0);
