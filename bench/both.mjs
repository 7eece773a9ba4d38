#!/usr/bin/env node
/**
 * Runs one bench script under Node, then under Bun, one after the other, and prints
 * one markdown table and a JSON last line with `targets_met` over both:
 *
 *   node bench/both.mjs relay-cpu.ts [--runtimes node,bun] [the script's flags]
 *   node bench/both.mjs latency-enqueue.ts [--runtimes node,bun] [the script's flags]
 *
 * Node 20 runs no TypeScript: the script is bundled with esbuild (packages left
 * external) to node_modules/.cache/x-outbox-bench/<name>.mjs and run with this `node`.
 * Bun runs the .ts file as it is. A child's stdout is a markdown table, optionally more
 * text after a blank line, then one JSON line with `runtime_id` and `targets_met`; its
 * progress goes to stderr, passed through.
 */

import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const [script, ...argv] = process.argv.slice(2);
if (!script?.endsWith(".ts")) {
  console.error("usage: node bench/both.mjs <script.ts in bench/> [--runtimes node,bun] [flags]");
  process.exit(2);
}
const ri = argv.indexOf("--runtimes");
const runtimes = (ri >= 0 ? argv[ri + 1] : "node,bun").split(",");
const passOn = ri >= 0 ? [...argv.slice(0, ri), ...argv.slice(ri + 2)] : argv;

const source = join(root, "bench", script);
const bundle = join(root, "node_modules/.cache/x-outbox-bench", script.replace(/\.ts$/, ".mjs"));
if (runtimes.includes("node")) {
  mkdirSync(dirname(bundle), { recursive: true });
  await build({
    entryPoints: [source],
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
  bun: [join(root, "node_modules/.bin/bun"), [source, ...passOn]],
};
const results = [];
const started = performance.now();
for (const r of runtimes) {
  if (!commands[r]) throw new Error(`unknown runtime ${r} (node, bun)`);
  console.error(`== ${r} ==`);
  results.push(await run(...commands[r]));
}

// One table: the children's rows under one header; then whatever else each child printed.
const parts = results.map((r) => {
  const [table, ...rest] = r.text.split("\n\n");
  return { rows: table.split("\n"), rest: rest.join("\n\n") };
});
console.log([...parts[0].rows.slice(0, 2), ...parts.flatMap((p) => p.rows.slice(2))].join("\n"));
parts.forEach((p, i) => p.rest && console.log(`\n${results[i].json.runtime}: ${p.rest.trim()}`));

const targets = Object.keys(results[0].json.targets_met);
const targets_met = Object.fromEntries(
  targets.map((t) => {
    const vs = results.map((r) => r.json.targets_met[t]).filter((v) => v !== null);
    return [t, vs.length === 0 ? null : vs.every(Boolean)];
  }),
);
console.log(
  JSON.stringify({
    bench: script.replace(/\.ts$/, ""),
    command: `node bench/both.mjs ${process.argv.slice(2).join(" ")}`.trim(),
    date: new Date().toISOString(),
    wall_s: Math.round((performance.now() - started) / 100) / 10,
    runtimes: Object.fromEntries(results.map((r) => [r.json.runtime_id, r.json])),
    targets_met,
  }),
);
