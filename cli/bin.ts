#!/usr/bin/env node
/**
 * The npm `outbox` bin (`npx @x/outbox …`): runs the CLI in Node. Built to
 * dist/cli/bin.js with its shebang kept; Deno and Bun run cli/mod.ts directly.
 *
 * @module
 */

import { main } from "./mod.ts";
import { runAsProgram } from "./runtime.ts";

await runAsProgram(main);
