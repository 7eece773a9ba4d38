/**
 * Packaging checks: the JSR/Deno and npm export maps list the same entry points, and
 * the core stays runtime-agnostic with valibot as its only dependency.
 */

import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "./harness.ts";

const root = join(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "..");
const json = (file: string) => JSON.parse(readFileSync(join(root, file), "utf8"));

test("jsr.json, deno.json and package.json export the same entry points, and each target exists", () => {
  const jsr = json("jsr.json");
  const deno = json("deno.json");
  const pkg = json("package.json");
  assert.deepEqual(deno.exports, jsr.exports, "deno.json and jsr.json exports match");
  assert.deepEqual(Object.keys(pkg.exports).sort(), Object.keys(jsr.exports).sort(), "npm and JSR list the same subpaths");
  for (const [subpath, source] of Object.entries(jsr.exports as Record<string, string>)) {
    assert.ok(existsSync(join(root, source)), `${source} exists`);
    const built = source.replace(/^\.\//, "./dist/").replace(/\.ts$/, "");
    assert.deepEqual(pkg.exports[subpath], { types: `${built}.d.ts`, default: `${built}.js` }, `npm ${subpath} points at the build of ${source}`);
  }
  assert.equal(jsr.name, pkg.name);
  assert.equal(jsr.version, pkg.version);
  assert.equal(deno.version, pkg.version);
  assert.deepEqual(deno.imports, jsr.imports, "deno.json and jsr.json map dependencies alike");
});

test("the core imports no runtime, driver or Node built-in: only valibot and its own files", () => {
  const files = ["mod.ts", ...readdirSync(join(root, "src")).filter((f) => f.endsWith(".ts")).map((f) => `src/${f}`)];
  for (const file of files) {
    // Comments hold usage examples that import the package: look at code only.
    const code = readFileSync(join(root, file), "utf8").replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, "");
    const specifiers = [...code.matchAll(/(?:from|import)\s*\(?\s*["']([^"']+)["']/g)].map((m) => m[1]!);
    for (const specifier of specifiers) {
      assert.ok(specifier === "valibot" || specifier.startsWith("./") || specifier.startsWith("../src/"), `${file} imports ${specifier}`);
    }
    assert.doesNotMatch(code, /\b(Deno|Bun|process|Buffer|require)\s*[.(]/, `${file} uses a runtime-specific global`);
  }
});

test("the core depends on valibot alone; drivers are optional peer dependencies", () => {
  const pkg = json("package.json");
  assert.deepEqual(Object.keys(pkg.dependencies), ["valibot"]);
  for (const driver of Object.keys(pkg.peerDependencies)) {
    assert.equal(pkg.peerDependenciesMeta[driver]?.optional, true, `${driver} is optional`);
  }
  assert.equal(pkg.type, "module");
});

test("every adapter folder is an entry point under its own name", () => {
  const pkg = json("package.json");
  for (const dir of readdirSync(join(root, "adapters"))) {
    assert.ok(pkg.exports[`./${dir}`], `@x/outbox/${dir} is exported`);
    assert.ok(existsSync(join(root, "adapters", dir, "mod.ts")), `adapters/${dir}/mod.ts exists`);
  }
});
