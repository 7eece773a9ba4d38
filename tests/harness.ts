/**
 * One tiny test API over the runners we use: `bun test`, `deno test` and `node --test`.
 * Suites import `test` from here so the same file runs unchanged under each runtime.
 */

/** A test body. */
export type TestBody = () => Promise<void> | void;

/** Per-test options. */
export interface TestOptions {
  /** Timeout in ms (default 30,000). */
  timeout?: number;
}

type Register = (name: string, body: TestBody, options: TestOptions) => void;

// deno-lint-ignore no-explicit-any
const g = globalThis as any;

async function pickRunner(): Promise<Register> {
  if (g.Bun) {
    const spec = "bun:test";
    const bun = await import(spec);
    return (name, body, options) => bun.test(name, body, options.timeout ?? 30_000);
  }
  if (g.Deno) {
    return (name, body) => g.Deno.test({ name, fn: body, sanitizeOps: false, sanitizeResources: false });
  }
  const spec = "node:test";
  const node = await import(spec);
  return (name, body, options) => node.test(name, { timeout: options.timeout ?? 30_000 }, body);
}

const register = await pickRunner();

/**
 * Registers a test. Name it as a sentence: "tick() publishes nothing that was rolled back".
 */
export function test(name: string, body: TestBody, options: TestOptions = {}): void {
  register(name, body, options);
}

/** The runtime the tests run in. */
export const runtime: "bun" | "deno" | "node" = g.Bun ? "bun" : g.Deno ? "deno" : "node";
