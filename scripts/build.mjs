#!/usr/bin/env node
/**
 * The npm build: removes dist/ and compiles mod.ts, src/, inbox/ and adapters/ to ESM + .d.ts
 * with tsc (tsconfig.build.json). JSR publishes the .ts sources and needs no build.
 *
 * Usage: node scripts/build.mjs   (npm run build)
 */

import { spawnSync } from "node:child_process";
import { chmodSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
// Stale files from a renamed or deleted module would otherwise ship.
rmSync(join(root, "dist"), { recursive: true, force: true });

const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
const result = spawnSync(process.execPath, [tsc, "-p", join(root, "tsconfig.build.json")], {
  cwd: root,
  stdio: "inherit",
});
if (result.error) throw result.error;
if (result.status !== 0) {
  console.error(`build: tsc exited with ${result.status ?? result.signal}`);
  process.exit(1);
}
// tsc rewrites `./x.ts` to `./x.js` in the emitted .js but not in the .d.ts files
// (microsoft/TypeScript#61037). tsc itself copes, but other tools resolving the types
// (editors, bundlers) look for `./x.ts`, which dist/ does not have: rewrite them too.
const relativeTs = /((?:\bfrom\s*|\bimport\s*\(\s*)["'])(\.{1,2}\/[^"'\n]*?)\.ts(["'])/g;
let rewritten = 0;
for (const entry of readdirSync(join(root, "dist"), { recursive: true })) {
  const file = join(root, "dist", String(entry));
  if (!file.endsWith(".d.ts")) continue;
  const text = readFileSync(file, "utf8");
  let next = text.replace(relativeTs, (_, head, path, quote) => `${head}${path}.js${quote}`);
  // The relay handle's type names Symbol.asyncDispose: pull in its lib for npm users
  // whose `lib` lacks it (JSR bans this directive in sources; Deno has the lib anyway).
  if (next.includes("Symbol.asyncDispose")) next = `/// <reference lib="esnext.disposable" />\n${next}`;
  if (next !== text) {
    writeFileSync(file, next);
    rewritten++;
  }
}
// The npm bin: tsc keeps bin.ts's shebang; npm sets the mode on install, but a run from
// the build (`node dist/cli/bin.js` or `./dist/cli/bin.js`) should work as well.
chmodSync(join(root, "dist", "cli", "bin.js"), 0o755);
console.log(`build: dist/ written (ESM + .d.ts; .ts specifiers rewritten in ${rewritten} declaration files)`);
