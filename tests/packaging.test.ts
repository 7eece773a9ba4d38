/**
 * Packaging: one source tree published to JSR (the .ts sources, through jsr.json and
 * deno.json) and to npm (compiled dist/, through package.json). These tests fail when
 * the three manifests drift apart, when the core reaches for a runtime or a driver, or
 * when a dependency sneaks into the core.
 *
 * That the npm targets exist and import under Node 20 is proven by tests/node/, which
 * runs against the build.
 */

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "./harness.ts";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

// deno-lint-ignore no-explicit-any
type Json = any;
const readJson = (file: string): Json => JSON.parse(readFileSync(join(root, file), "utf8"));
const pkg = readJson("package.json");
const jsr = readJson("jsr.json");
const deno = readJson("deno.json");

/** Every .ts file under a folder, as root-relative paths with forward slashes. */
function tsFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(join(root, dir)).sort()) {
    const path = `${dir}/${name}`;
    if (statSync(join(root, path)).isDirectory()) out.push(...tsFiles(path));
    else if (name.endsWith(".ts")) out.push(path);
  }
  return out;
}

/** Source without comments (they hold usage examples that import the package by name). */
function stripComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\/|(^|[^:\\])\/\/.*$/gm, "$1");
}

const code = (file: string): string => stripComments(readFileSync(join(root, file), "utf8"));

/** Module specifiers of static imports, re-exports, side-effect imports and import(). */
function specifiers(source: string): string[] {
  const found = [
    ...source.matchAll(/\bfrom\s*["']([^"']+)["']/g),
    ...source.matchAll(/\bimport\s*\(?\s*["']([^"']+)["']/g),
  ];
  return found.map((m) => m[1]!);
}

/** The npm package a bare specifier names: "drizzle-orm/pg-core" → "drizzle-orm". */
function packageOf(specifier: string): string {
  const parts = specifier.split("/");
  return specifier.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
}

/** Root-relative path a relative specifier in `file` points at. */
function resolveFrom(file: string, specifier: string): string {
  return relative(root, normalize(join(root, dirname(file), specifier))).replaceAll("\\", "/");
}

// A global is a name not reached through a dot: `messaging.process.duration` is not `process.`.
const RUNTIME_GLOBALS = /(?<![.\w$])(?:Deno|Bun|process|Buffer)\s*\.|(?<![.\w$])require\s*\(|\b__dirname\b/;

/** Why `file` is not runtime-agnostic code that imports only what `allowed` accepts. */
function purityProblems(file: string, source: string, allowed: (specifier: string) => boolean): string[] {
  const problems: string[] = [];
  for (const specifier of specifiers(source)) {
    if (specifier.startsWith("node:")) problems.push(`${file} imports the Node built-in ${specifier}`);
    else if (!allowed(specifier)) problems.push(`${file} imports ${specifier}`);
  }
  const global = RUNTIME_GLOBALS.exec(source);
  if (global) problems.push(`${file} uses the runtime-specific ${global[0].trim()}`);
  return problems;
}

/**
 * Entry points beside the core and the adapters: `@x/outbox/<name>` is `<name>/mod.ts`,
 * driver-free like the core. The inbox lives here rather than in `@x/outbox` so that the
 * core bundle does not carry it.
 */
const coreSideEntries = ["inbox", "admin"];

/**
 * Tool entry points, `@x/outbox/<name>` as `<name>/mod.ts` too, but not driver-free: the
 * CLI loads drivers on demand and talks to its runtime (tests/cli.test.ts checks where).
 */
const toolEntries = ["cli"];

/**
 * Integration entry points: runtime-agnostic like the core, but built on one optional
 * peer each (`@x/outbox/otel` on `@opentelemetry/api`), which the core never imports.
 */
const integrationEntries: Record<string, string> = { otel: "@opentelemetry/api" };

const coreFiles = ["mod.ts", ...coreSideEntries.flatMap((name) => tsFiles(name)), ...tsFiles("src")];
/** Root-relative paths of the core's files: mod.ts, src/ and the core-side entries' folders. */
const CORE_PATH = new RegExp(`^(mod\\.ts|(src|${coreSideEntries.join("|")})/.+\\.ts)$`);
const isCoreImport = (file: string) => (specifier: string) =>
  (specifier.startsWith("./") || specifier.startsWith("../")) && CORE_PATH.test(resolveFrom(file, specifier));

/** Every file of this repository `file` imports, directly or not (relative specifiers only). */
function localImportGraph(file: string, seen = new Set<string>()): Set<string> {
  for (const specifier of specifiers(code(file))) {
    if (!specifier.startsWith(".")) continue;
    const target = resolveFrom(file, specifier);
    if (seen.has(target)) continue;
    seen.add(target);
    localImportGraph(target, seen);
  }
  return seen;
}

const adapterNames = readdirSync(join(root, "adapters"))
  .filter((name) => existsSync(join(root, "adapters", name, "mod.ts")))
  .sort();

test("jsr.json, deno.json and package.json export the same entry points", () => {
  assert.deepEqual(deno.exports, jsr.exports, "deno.json and jsr.json list the same exports");
  assert.deepEqual(
    Object.keys(pkg.exports).sort(),
    Object.keys(jsr.exports).sort(),
    "npm and JSR list the same subpaths",
  );
  assert.equal(jsr.name, "@x/outbox");
  assert.equal(deno.name, jsr.name);
  assert.equal(pkg.name, jsr.name);
  assert.equal(jsr.version, pkg.version, "jsr.json has the package.json version");
  assert.equal(deno.version, pkg.version, "deno.json has the package.json version");
});

test("jsr.json is a subset of deno.json: name, version, license, exports, imports and publish alike", () => {
  for (const [field, value] of Object.entries(jsr as Record<string, unknown>)) {
    assert.deepEqual(deno[field], value, `deno.json has jsr.json's "${field}"`);
  }
  for (const field of ["name", "version", "license", "exports", "imports", "publish"]) {
    assert.ok(field in jsr, `jsr.json has "${field}"`);
  }
});

test("JSR publishes every file the entry points import, README and CHANGELOG, and no tests, benches or examples", () => {
  const include: string[] = jsr.publish.include;
  const published = (path: string) =>
    include.some((entry) => entry.endsWith("/") ? path.startsWith(entry) : path === entry);
  for (const entry of include) assert.ok(existsSync(join(root, entry)), `publish.include lists ${entry}, which exists`);
  for (const source of Object.values(jsr.exports as Record<string, string>)) {
    const file = source.replace(/^\.\//, "");
    for (const imported of [file, ...localImportGraph(file)]) {
      assert.ok(published(imported), `${imported} is published: the entry point ${file} needs it`);
    }
  }
  for (const file of ["README.md", "CHANGELOG.md", "deno.json", "jsr.json"]) {
    assert.ok(published(file), `${file} is published`);
  }
  for (const entry of include) {
    assert.doesNotMatch(entry, /^(tests|bench|examples|scripts|docs|dist|node_modules)\b/, `${entry} is not published`);
  }
  assert.equal(jsr.license, pkg.license, "JSR and npm publish under the same license");
});

test("each entry point is mod.ts, <subpath>/mod.ts (inbox) or adapters/<subpath>/mod.ts, and every adapter has one", () => {
  const expected: Record<string, string> = { ".": "./mod.ts" };
  for (const name of [...coreSideEntries, ...toolEntries, ...Object.keys(integrationEntries)]) {
    expected[`./${name}`] = `./${name}/mod.ts`;
  }
  for (const name of adapterNames) expected[`./${name}`] = `./adapters/${name}/mod.ts`;
  assert.deepEqual(jsr.exports, expected, "the folder name is the subpath (STYLE.md 2)");
  for (const source of Object.values(jsr.exports as Record<string, string>)) {
    assert.ok(existsSync(join(root, source)), `${source} exists`);
    assert.match(readFileSync(join(root, source), "utf8"), /@module/, `${source} documents itself with @module`);
  }
});

test("npm exports point at the compiled twin of each JSR source, types first", () => {
  for (const [subpath, source] of Object.entries(jsr.exports as Record<string, string>)) {
    const built = source.replace(/^\.\//, "./dist/").replace(/\.ts$/, "");
    const target = pkg.exports[subpath];
    assert.deepEqual(
      target,
      { types: `${built}.d.ts`, default: `${built}.js` },
      `npm ${subpath} is the build of ${source}`,
    );
    assert.equal(Object.keys(target)[0], "types", `npm ${subpath}: "types" comes first, as TypeScript requires`);
  }
  // The build mirrors the source tree into dist/, which is what the mapping above assumes.
  const build = readFileSync(join(root, "tsconfig.build.json"), "utf8");
  assert.match(build, /"outDir":\s*"dist"/);
  assert.match(build, /"rootDir":\s*"\."/);
});

test("package.json is an ESM package for Node 20+ that ships dist/ and has no side effects", () => {
  assert.equal(pkg.type, "module");
  assert.equal(pkg.sideEffects, false);
  assert.equal(pkg.engines?.node, ">=20");
  assert.ok(pkg.files.includes("dist"), "files ships dist/");
  assert.ok(
    !pkg.files.some((f: string) => /^(tests|src|adapters|bench|examples)\b/.test(f)),
    "files ships no sources or tests",
  );
  for (const script of ["build", "check", "test", "test:bun", "test:deno", "demo", "bench"]) {
    assert.equal(typeof pkg.scripts[script], "string", `npm run ${script} exists`);
  }
});

test("the package has no dependency of its own; valibot and the drivers are optional peers, installed for the tests", () => {
  assert.deepEqual(Object.keys(pkg.dependencies ?? {}), []);
  const peers = Object.keys(pkg.peerDependencies ?? {});
  assert.ok(peers.includes("@libsql/client"));
  for (const driver of peers) {
    assert.equal(pkg.peerDependenciesMeta?.[driver]?.optional, true, `${driver} is an optional peer`);
    assert.ok(pkg.devDependencies[driver], `${driver} is a devDependency, so the tests run against it`);
  }
});

test("deno.json and jsr.json map each dependency and driver to the npm range package.json uses", () => {
  assert.deepEqual(deno.imports, jsr.imports, "deno.json and jsr.json map dependencies alike");
  const ranges: Record<string, string> = { ...pkg.devDependencies, ...pkg.dependencies };
  for (const name of [...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.peerDependencies ?? {})]) {
    assert.equal(deno.imports[name], `npm:${name}@${ranges[name]}`, `deno.json imports ${name} at ${ranges[name]}`);
  }
  for (const [specifier, target] of Object.entries(deno.imports as Record<string, string>)) {
    const m = /^npm:\/?((?:@[^/@]+\/)?[^/@]+)@([^/]+)\/?$/.exec(target);
    assert.ok(m, `deno.json maps ${specifier} to an npm: specifier (${target})`);
    assert.equal(m[1], specifier.replace(/\/$/, ""), `deno.json maps ${specifier} to the package of that name`);
    assert.equal(m[2], ranges[m[1]!], `deno.json's range for ${m[1]} matches package.json`);
  }
});

test("the core (mod.ts, inbox/, src/) imports only its own files, and uses no runtime's globals", () => {
  assert.ok(coreFiles.length > 5, "the scan sees the core's files");
  const problems = coreFiles.flatMap((file) => purityProblems(file, code(file), isCoreImport(file)));
  assert.deepEqual(problems, []);
});

test("@x/outbox does not import the inbox, which has its own entry point (@x/outbox/inbox)", () => {
  const graph = localImportGraph("mod.ts");
  assert.ok(graph.has("src/outbox.ts") && graph.has("src/relay.ts"), "the walk follows mod.ts's imports");
  assert.ok(![...graph].some((file) => file.startsWith("inbox/")), "mod.ts reaches inbox/");
  assert.ok(localImportGraph("inbox/mod.ts").has("inbox/inbox.ts"));
  const exported = code("mod.ts");
  for (const name of ["createInbox", "INBOX_MAX_ID_LENGTH", "InboxStorage"]) {
    assert.doesNotMatch(exported, new RegExp(`\\b${name}\\b`), `mod.ts exports ${name}`);
  }
});

test("integration entries (otel) import the core, their one optional peer, and no runtime's globals", () => {
  const peers = new Set(Object.keys(pkg.peerDependencies ?? {}));
  const problems: string[] = [];
  for (const [folder, peer] of Object.entries(integrationEntries)) {
    assert.ok(peers.has(peer) && pkg.peerDependenciesMeta?.[peer]?.optional, `${peer} is an optional peer`);
    for (const file of tsFiles(folder)) {
      const allowed = (specifier: string) =>
        specifier === peer || (specifier.startsWith(".") && CORE_PATH.test(resolveFrom(file, specifier)));
      problems.push(...purityProblems(file, code(file), allowed));
    }
  }
  assert.deepEqual(problems, []);
  assert.ok(![...localImportGraph("mod.ts")].some((f) => f.startsWith("otel/")), "mod.ts does not reach otel/");
});

test("adapters import the core, their own driver (an optional peer mapped in deno.json) and no runtime built-ins", () => {
  assert.ok(adapterNames.includes("libsql"));
  const peers = new Set(Object.keys(pkg.peerDependencies ?? {}));
  const problems: string[] = [];
  // adapters/shared/ holds code several adapters use: scanned too, and no entry point.
  assert.ok(!existsSync(join(root, "adapters", "shared", "mod.ts")), "adapters/shared has no mod.ts");
  for (const folder of [...adapterNames, "shared"]) {
    for (const file of tsFiles(`adapters/${folder}`)) {
      const allowed = (specifier: string) => {
        // An inbox storage implements the contract of inbox/mod.ts.
        if (specifier.startsWith(".")) return /^(src|adapters|inbox)\//.test(resolveFrom(file, specifier));
        const dep = packageOf(specifier);
        return dep === "valibot" || (peers.has(dep) && dep in deno.imports);
      };
      problems.push(...purityProblems(file, code(file), allowed));
    }
  }
  assert.deepEqual(problems, []);
});

test("the purity scan catches what it is meant to catch", () => {
  const scan = (source: string) => purityProblems("src/x.ts", source, isCoreImport("src/x.ts"));
  assert.deepEqual(
    scan(`import { a } from "./a.ts";\nexport { b } from "../mod.ts";`),
    [],
  );
  assert.equal(scan(`import * as v from "valibot";`).length, 1, "the core imports no package, valibot included");
  assert.equal(scan(`import { readFile } from "node:fs/promises";`).length, 1);
  assert.equal(scan(`import type { Client } from "@libsql/client";`).length, 1);
  assert.equal(scan(`export { libsqlStorage } from "../adapters/libsql/mod.ts";`).length, 1);
  assert.equal(scan(`const m = await import("postgres");`).length, 1);
  assert.equal(scan(`const env = Deno.env.get("X");`).length, 1);
  assert.equal(scan(`if (Bun.version) {}`).length, 1);
  assert.equal(scan(`const x = process.env.X;`).length, 1);
  assert.equal(
    scan(`const name = "messaging.process.duration";`).length,
    0,
    "a property named process is not the global",
  );
  assert.equal(scan(`const b = Buffer.from("x");`).length, 1);
  // Examples in doc comments import the package by name; they are not code.
  const documented =
    `/**\n * import { x } from "@x/outbox";\n */\nconst u = "https://a.b"; // Deno.env is not read here`;
  assert.deepEqual(purityProblems("src/x.ts", stripComments(documented), isCoreImport("src/x.ts")), []);
});
