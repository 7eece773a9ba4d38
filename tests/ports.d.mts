// Types of tests/ports.mjs, for the TypeScript tests.

/** A port that was free on 127.0.0.1 a moment ago, below the ephemeral range when there is room. */
export function freePort(): Promise<number>;
