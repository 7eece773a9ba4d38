#!/usr/bin/env node
/**
 * Packaging checks, for .ci/run and before a release (plain Node, no TypeScript needed):
 *
 *   1. JSR: `deno publish --dry-run` (no slow types, every file resolvable);
 *   2. npm: `npm pack` (its prepack runs the build), then on that tarball
 *      - publint (exports, files, types conditions; errors and warnings fail),
 *      - @arethetypeswrong/cli, profile esm-only (the package ships ESM only, by design),
 *        with no @types fetched;
 *   3. size budget: what an application imports from dist/mod.js (`@x/outbox`, no
 *      driver: createOutbox, the errors, uuidv7; not the in-memory test doubles) bundled
 *      with esbuild, minified, gzipped; more than BUDGET_BYTES fails, and so does any
 *      package in it (the core imports none: message schemas come from the user,
 *      through Standard Schema). The whole entry's size is printed beside it.
 *
 * Prints each check's outcome and the core bundle size; exits non-zero when any fails.
 *
 * Usage: node scripts/package-check.mjs [--skip jsr,publint,attw,size]
 */

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { gzipSync } from "node:zlib";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
/**
 * 9 kB min+gzip for the core entry point: 8 kB until fan-out (a relay context per
 * destination, routing at enqueue) took it to 8.4 kB; trimming the rest would have
 * meant shorter error messages, which are worth more than the bytes.
 */
const BUDGET_BYTES = 9 * 1024;
/** The exports the budget covers: everything `@x/outbox` has but the in-memory test doubles. */
const APP_EXPORTS = [
  "createOutbox",
  "OutboxError",
  "OutboxConfigError",
  "OutboxMessageError",
  "OutboxStorageError",
  "PublishError",
  "isOutboxError",
  "isPermanentError",
  "uuidv7",
];
/** Each external command is stopped after this long. */
const COMMAND_TIMEOUT_MS = 90_000;

const skipArg = process.argv.indexOf("--skip");
const skip = new Set(skipArg >= 0 ? (process.argv[skipArg + 1] ?? "").split(",") : []);

/** A binary from node_modules/.bin: nothing is fetched on the fly. */
function localBin(name) {
  const file = join(root, "node_modules", ".bin", name);
  if (!existsSync(file)) throw new Error(`${name} is not installed in node_modules (run npm install, or npm ci)`);
  return file;
}

/** Runs a command with output captured; resolves with its exit code and output. */
function run(command, args, options = {}) {
  return new Promise((resolve) => {
    const env = { ...process.env, NO_COLOR: "1", ...options.env };
    const child = spawn(command, args, { cwd: options.cwd ?? root, env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (chunk) => (output += chunk));
    child.stderr.on("data", (chunk) => (output += chunk));
    const timer = setTimeout(() => {
      output += `\n(stopped after ${COMMAND_TIMEOUT_MS} ms)\n`;
      child.kill("SIGKILL");
    }, COMMAND_TIMEOUT_MS);
    child.on("error", (error) => (output += `\n${error.message}\n`));
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, output });
    });
  });
}

const indent = (text) => text.trimEnd().split("\n").map((line) => `    ${line}`).join("\n");
const results = [];

async function check(name, fn) {
  if (skip.has(name)) {
    console.log(`- ${name}: skipped`);
    return;
  }
  const started = performance.now();
  try {
    const detail = await fn();
    const ms = (performance.now() - started).toFixed(0);
    console.log(`✓ ${name} (${ms} ms)${detail ? `: ${detail}` : ""}`);
    results.push({ name, ok: true });
  } catch (error) {
    console.log(`✗ ${name}: ${error.message}`);
    results.push({ name, ok: false });
  }
}

const work = mkdtempSync(join(tmpdir(), "x-outbox-package-check-"));
try {
  await check("jsr", async () => {
    const { code, output } = await run(localBin("deno"), ["publish", "--dry-run", "--allow-dirty"]);
    if (code !== 0 || !/Dry run complete/.test(output)) {
      throw new Error(`deno publish --dry-run failed (exit ${code})\n${indent(output)}`);
    }
    return "deno publish --dry-run: no slow types";
  });

  // One tarball, exactly what `npm publish` would upload; publint and attw read it.
  let tarball;
  const needsPack = ["publint", "attw", "size"].some((name) => !skip.has(name));
  if (needsPack) {
    await check("pack", async () => {
      const npm = process.platform === "win32" ? "npm.cmd" : "npm";
      const { code, output } = await run(npm, ["pack", "--json", "--pack-destination", work]);
      const json = output.slice(output.indexOf("["), output.lastIndexOf("]") + 1);
      if (code !== 0 || !json) throw new Error(`npm pack failed (exit ${code})\n${indent(output)}`);
      const [info] = JSON.parse(json);
      tarball = join(work, info.filename);
      return `${info.filename}, ${info.entryCount} files, ${(info.size / 1024).toFixed(1)} kB packed`;
    });
  }

  await check("publint", async () => {
    if (!tarball) throw new Error("no tarball (npm pack failed)");
    const { publint } = await import("publint");
    const { formatMessage } = await import("publint/utils");
    const bytes = readFileSync(tarball);
    const buffer = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    const { messages, pkg } = await publint({ pack: { tarball: buffer }, level: "suggestion", strict: true });
    const lines = messages.map((m) => `${m.type}: ${formatMessage(m, pkg) ?? m.code}`);
    // Suggestions are printed; errors and warnings fail the check.
    const failing = messages.filter((m) => m.type === "error" || m.type === "warning");
    if (failing.length > 0) throw new Error(`${failing.length} problem(s)\n${indent(lines.join("\n"))}`);
    return messages.length === 0 ? "no messages" : `no errors or warnings\n${indent(lines.join("\n"))}`;
  });

  await check("attw", async () => {
    if (!tarball) throw new Error("no tarball (npm pack failed)");
    const { code, output } = await run(localBin("attw"), [
      tarball,
      "--profile",
      "esm-only",
      "--no-definitely-typed",
      "--format",
      "table",
      "--no-emoji",
      "--no-color",
    ]);
    if (code !== 0) throw new Error(`@arethetypeswrong/cli found problems (exit ${code})\n${indent(output)}`);
    return `types resolve for every entry point (node16 ESM, bundler)\n${indent(output)}`;
  });

  await check("size", async () => {
    const esbuild = await import("esbuild");
    const bundle = async (contents) => {
      const result = await esbuild.build({
        stdin: { contents, resolveDir: root, sourcefile: "entry.js" },
        bundle: true,
        minify: true,
        format: "esm",
        platform: "neutral",
        target: "es2022",
        write: false,
        metafile: true,
        logLevel: "silent",
      });
      const code = result.outputFiles[0].contents;
      const packages = Object.keys(result.metafile.inputs).filter((file) => /node_modules\//.test(file));
      if (packages.length > 0) throw new Error(`the core bundle pulls in ${packages.join(", ")}`);
      return { min: code.byteLength, gzipped: gzipSync(code, { level: 9 }).byteLength };
    };
    // What an application that enqueues and relays imports; the in-memory test doubles
    // (memoryStorage, memoryPublisher) are left out, as a bundler leaves them out of it.
    const mod = JSON.stringify(join(root, "dist", "mod.js"));
    const doubles = ["memoryStorage", "memoryPublisher"];
    const exported = Object.keys(await import(pathToFileURL(join(root, "dist", "mod.js")).href));
    const uncounted = exported.filter((name) => !APP_EXPORTS.includes(name) && !doubles.includes(name));
    if (uncounted.length > 0) throw new Error(`APP_EXPORTS misses ${uncounted.join(", ")}: add them to the budget`);
    const app = await bundle(`export { ${APP_EXPORTS.join(", ")} } from ${mod};`);
    const all = await bundle(`export * from ${mod};`);
    const kb = (n) => `${(n / 1024).toFixed(2)} kB`;
    const line = `core bundle (createOutbox, errors, uuidv7; no dependency): ${kb(app.min)} min, ` +
      `${kb(app.gzipped)} min+gzip (${app.gzipped} bytes; budget ${BUDGET_BYTES} bytes); ` +
      `the whole entry with the test doubles: ${kb(all.gzipped)} min+gzip (${all.gzipped} bytes)`;
    if (app.gzipped > BUDGET_BYTES) throw new Error(`over budget: ${line}`);
    return line;
  });
} finally {
  rmSync(work, { recursive: true, force: true });
}

const failed = results.filter((result) => !result.ok);
console.log(
  failed.length === 0
    ? `package-check: ${results.length} checks passed`
    : `package-check: ${failed.length} of ${results.length} checks failed (${failed.map((r) => r.name).join(", ")})`,
);
process.exit(failed.length === 0 ? 0 : 1);
