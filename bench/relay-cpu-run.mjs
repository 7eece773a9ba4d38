#!/usr/bin/env node
/**
 * `npm run bench:cpu`: bench/relay-cpu.ts under Node, then under Bun, one after the
 * other; prints one markdown table and a JSON last line with `targets_met` over both.
 *
 *   node bench/relay-cpu-run.mjs [--messages 20000] [--repeats 3] [--only pg|libsql]
 *                                [--keys 0,16,10000] [--no-async-traces] [--runtimes node,bun]
 *
 * Node 20 runs no TypeScript: the bench is bundled with esbuild (packages left external)
 * to node_modules/.cache/x-outbox-bench/relay-cpu.mjs and run with this `node`. Bun runs
 * the .ts file as it is. Each child's progress goes to stderr; its stdout (table, JSON)
 * is collected here.
 */

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const argv = process.argv.slice(2);
const ri = argv.indexOf("--runtimes");
const runtimes = (ri >= 0 ? argv[ri + 1] : "node,bun").split(",");
const passOn = ri >= 0 ? [...argv.slice(0, ri), ...argv.slice(ri + 2)] : argv;

const bundle = join(root, "node_modules/.cache/x-outbox-bench/relay-cpu.mjs");
if (runtimes.includes("node")) {
  mkdirSync(dirname(bundle), { recursive: true });
  await build({
    entryPoints: [join(root, "bench/relay-cpu.ts")],
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    outfile: bundle,
    logLevel: "warning",
  });
}

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: root, stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`${cmd} ${args.join(" ")} exited with ${code}\n${out}`));
      const lines = out.trim().split("\n");
      resolve({ text: lines.slice(0, -1).join("\n"), json: JSON.parse(lines.at(-1)) });
    });
  });
}

const commands = {
  node: [process.execPath, [bundle, ...passOn]],
  bun: [join(root, "node_modules/.bin/bun"), [join(root, "bench/relay-cpu.ts"), ...passOn]],
};
const results = [];
const started = performance.now();
for (const r of runtimes) {
  if (!commands[r]) throw new Error(`unknown runtime ${r} (node, bun)`);
  console.error(`== ${r} ==`);
  results.push(await run(...commands[r]));
}

// One table: the children's rows under one header; then each child's warnings.
const tables = results.map((r) => r.text.split("\n\nProcess warnings:")[0].split("\n"));
console.log([...tables[0].slice(0, 2), ...tables.flatMap((t) => t.slice(2))].join("\n"));
for (const r of results) {
  if (r.json.warnings.length === 0) continue;
  console.log(`\nProcess warnings, ${r.json.runtime}:`);
  for (const w of r.json.warnings) console.log(`- ${w.phase}: ${w.count} × ${w.name}: ${w.message}`);
}

const targets = Object.keys(results[0].json.targets_met);
const targets_met = Object.fromEntries(
  targets.map((t) => {
    const vs = results.map((r) => r.json.targets_met[t]).filter((v) => v !== null);
    return [t, vs.length === 0 ? null : vs.every(Boolean)];
  }),
);
console.log(
  JSON.stringify({
    bench: "relay-cpu",
    command: `node bench/relay-cpu-run.mjs ${argv.join(" ")}`.trim(),
    date: new Date().toISOString(),
    wall_s: Math.round((performance.now() - started) / 100) / 10,
    runtimes: Object.fromEntries(results.map((r) => [r.json.runtime_id, r.json])),
    targets_met,
  }),
);
