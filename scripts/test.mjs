// Runs every suite the README promises: the build, then the tests under Bun, under
// Deno (the same files: the core is runtime-agnostic) and the npm build under Node.
// Prints one total as the last line: "N passed, N failed[, N skipped]".
import { spawn } from "node:child_process";

const runs = [
  { name: "build", cmd: "npx", args: ["tsc", "-p", "tsconfig.build.json"], count: null },
  { name: "bun", cmd: "npx", args: ["bun", "test", "tests/"], count: countBun },
  { name: "deno", cmd: "npx", args: ["deno", "test", "-A", "tests/"], count: countDeno },
  { name: "node", cmd: "node", args: ["--test", "tests/node/"], count: countNode },
];

function strip(text) {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

function countBun(out) {
  const pass = /^\s*(\d+) pass$/m.exec(out);
  const fail = /^\s*(\d+) fail$/m.exec(out);
  const skip = /^\s*(\d+) skip$/m.exec(out);
  return pass && fail ? { passed: +pass[1], failed: +fail[1], skipped: skip ? +skip[1] : 0 } : null;
}

function countDeno(out) {
  const m = /(?:ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed(?: \(\d+ steps?\))?(?: \| (\d+) ignored)?/.exec(out);
  return m ? { passed: +m[1], failed: +m[2], skipped: m[3] ? +m[3] : 0 } : null;
}

function countNode(out) {
  const pass = /^# pass (\d+)$/m.exec(out);
  const fail = /^# fail (\d+)$/m.exec(out);
  const skip = /^# skipped (\d+)$/m.exec(out);
  return pass && fail ? { passed: +pass[1], failed: +fail[1], skipped: skip ? +skip[1] : 0 } : null;
}

function run({ cmd, args }) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" } });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
      process.stdout.write(d);
    });
    child.stderr.on("data", (d) => {
      out += d;
      process.stderr.write(d);
    });
    child.on("close", (code) => resolve({ code, out: strip(out) }));
  });
}

const totals = { passed: 0, failed: 0, skipped: 0 };
const summary = [];
let broken = false;
for (const r of runs) {
  console.log(`\n=== ${r.name}: ${r.cmd} ${r.args.join(" ")}`);
  const { code, out } = await run(r);
  if (!r.count) {
    if (code !== 0) {
      summary.push(`${r.name}: failed (exit ${code})`);
      totals.failed++;
      broken = true;
    }
    continue;
  }
  const counts = r.count(out);
  if (!counts) {
    summary.push(`${r.name}: no test summary found (exit ${code})`);
    totals.failed++;
    broken = true;
    continue;
  }
  summary.push(`${r.name}: ${counts.passed} passed, ${counts.failed} failed${counts.skipped ? `, ${counts.skipped} skipped` : ""} (exit ${code})`);
  totals.passed += counts.passed;
  totals.failed += counts.failed;
  totals.skipped += counts.skipped;
  if (code !== 0 && counts.failed === 0) {
    totals.failed++;
    broken = true;
  }
}
console.log("\n=== summary");
for (const line of summary) console.log(line);
if (totals.passed === 0) broken = true;
console.log(`${totals.passed} passed, ${totals.failed} failed${totals.skipped ? `, ${totals.skipped} skipped` : ""}`);
process.exit(broken || totals.failed > 0 ? 1 : 0);
