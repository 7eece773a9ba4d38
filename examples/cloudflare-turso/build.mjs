// Bundles the Worker the way wrangler does (esbuild, the "workerd" export condition, so
// postgres.js picks its cloudflare:sockets build), for miniflare and the test:
//   node examples/cloudflare-turso/build.mjs [outfile]   (default: .tmp/worker/worker.js)
// "@x/outbox" resolves to this repository's npm build (dist/) through package.json
// "exports", as it would from node_modules in your project: run `npm run build` first.

import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));

/**
 * Bundles src/worker.ts into one ES module.
 *
 * @param {string} outfile Where to write the bundle.
 * @returns {Promise<{ outfile: string, bytes: number }>}
 */
export async function bundleWorker(outfile) {
  const result = await esbuild.build({
    entryPoints: [join(here, "src", "worker.ts")],
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "es2022",
    conditions: ["workerd", "worker", "browser"],
    mainFields: ["module", "main"],
    external: ["cloudflare:*", "node:*"],
    outfile,
    metafile: true,
    logLevel: "warning",
  });
  return { outfile, bytes: result.metafile.outputs[Object.keys(result.metafile.outputs)[0]].bytes };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = resolve(process.argv[2] ?? join(here, "..", "..", ".tmp", "worker", "worker.js"));
  const { bytes } = await bundleWorker(out);
  console.log(`${out} (${(bytes / 1024).toFixed(1)} kB)`);
}
