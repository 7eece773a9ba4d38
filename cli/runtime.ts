/**
 * The only runtime-specific code of the CLI: arguments, environment, output and exit on
 * Deno, Bun and Node, and whether a file exists. Reached through `globalThis`, typed
 * here by the few members used, so the rest of the CLI (and the build, which sees no
 * runtime's types) stays Web-standard.
 */

import type { CliIo } from "./io.ts";

interface NodeStream {
  write(text: string, done?: (error?: Error | null) => void): boolean;
  on(event: "error", listener: (error: Error) => void): unknown;
}

interface NodeProcess {
  argv: string[];
  env: Record<string, string | undefined>;
  stdout: NodeStream;
  stderr: NodeStream;
  exit(code: number): never;
}

interface DenoNamespace {
  args: string[];
  env: { get(name: string): string | undefined };
  stdout: { writeSync(data: Uint8Array): number };
  stderr: { writeSync(data: Uint8Array): number };
  exit(code: number): never;
}

const g = globalThis as { Deno?: DenoNamespace; process?: NodeProcess };

/** The environment variables the CLI reads. */
const ENV_NAMES = ["OUTBOX_URL", "OUTBOX_AUTH_TOKEN", "NO_COLOR"] as const;

/** Writes all of `text` to a Deno stream (writeSync may write part of it). */
function writeAllSync(stream: { writeSync(data: Uint8Array): number }, text: string): void {
  let data = new TextEncoder().encode(text);
  while (data.length > 0) data = data.subarray(stream.writeSync(data));
}

/**
 * The running process's output and environment: stdout, stderr and the
 * variables the CLI reads, on Deno (its own API) or Node and Bun (`process`).
 *
 * @returns The io for `main` of cli/mod.ts.
 */
export function runtimeIo(): CliIo {
  const deno = g.Deno;
  if (deno) {
    const env: Record<string, string | undefined> = {};
    for (const name of ENV_NAMES) {
      try {
        env[name] = deno.env.get(name);
      } catch {
        // Without --allow-env the variable is simply not read.
      }
    }
    return {
      stdout: (text) => writeAllSync(deno.stdout, text),
      stderr: (text) => writeAllSync(deno.stderr, text),
      env,
    };
  }
  const proc = g.process;
  if (!proc) throw new Error("outbox: run the CLI with Deno, Bun or Node");
  return {
    stdout: (text) => void proc.stdout.write(text),
    stderr: (text) => void proc.stderr.write(text),
    env: proc.env,
  };
}

/**
 * Runs `main` as the program: the runtime's arguments and io, then exit with the code
 * it returns. Exiting explicitly (once the output is flushed) keeps a health check from
 * hanging on a handle a driver left open.
 *
 * @param main The CLI's entry (`main` of cli/mod.ts).
 */
export async function runAsProgram(main: (argv: string[], io: CliIo) => Promise<number>): Promise<never> {
  const deno = g.Deno;
  if (deno) return deno.exit(await main(deno.args, runtimeIo()));
  const proc = g.process;
  if (!proc) throw new Error("outbox: run the CLI with Deno, Bun or Node");
  // A closed pipe (`outbox list | head`) is not an error worth a stack trace.
  proc.stdout.on("error", () => proc.exit(0));
  const code = await main(proc.argv.slice(2), runtimeIo());
  // The write callbacks run once everything written before them is flushed.
  await new Promise<void>((resolve) => proc.stdout.write("", () => resolve()));
  await new Promise<void>((resolve) => proc.stderr.write("", () => resolve()));
  return proc.exit(code);
}

/**
 * Whether a file exists, through `node:fs` (Deno and Bun have it too).
 *
 * @param path A file path.
 * @returns `true` when something exists at the path.
 */
export async function fileExists(path: string): Promise<boolean> {
  // @ts-ignore: the build type-checks without Node's types; Deno, Bun and Node all have node:fs.
  const fs = await import("node:fs") as { existsSync(path: string): boolean };
  return fs.existsSync(path);
}
