/**
 * The `outbox` command line: set up, inspect and repair an outbox table on Postgres,
 * MySQL or MariaDB, a libSQL file, or libSQL over HTTP (sqld, Turso).
 *
 * ```sh
 * npx @x/outbox status --url postgres://localhost/app       # npm bin
 * npx @x/outbox doctor --url mysql://app@localhost:3306/app # the database is the path
 * bunx @x/outbox list --status dead --url file:app.db
 * deno run -A jsr:@x/outbox/cli doctor --url libsql://db.turso.io --auth-token "$TOKEN"
 * ```
 *
 * Commands: `setup`, `status`, `list`, `requeue`, `purge`, `doctor`; `outbox <command>
 * --help` describes each. Exit codes: 0 ok, 1 failure (a failed check, a database
 * error), 2 usage (an unknown command or flag, a bad value, no `--url`). Drivers are
 * the package's optional peers, loaded only when a URL needs them.
 *
 * @example Run the CLI from code (tests, scripts)
 * ```ts
 * import { main } from "@x/outbox/cli";
 *
 * let out = "";
 * const code = await main(["status", "--url", "file:app.db", "--json"], {
 *   stdout: (text) => (out += text),
 *   stderr: (text) => console.error(text),
 *   env: {},
 * });
 * if (code === 0) console.log(JSON.parse(out).pending);
 * ```
 *
 * @module
 */

import { OutboxConfigError, OutboxError, OutboxMessageError } from "../src/errors.ts";
import { CliError, parseFlags } from "./args.ts";
import { type Command, ROW_COMMANDS } from "./commands.ts";
import { oneLine } from "./connect.ts";
import { doctor } from "./doctor.ts";
import type { CliIo } from "./io.ts";
import { runAsProgram, runtimeIo } from "./runtime.ts";
import { VERSION } from "./version.ts";

export type { CliIo, DriverName } from "./io.ts";
export { VERSION } from "./version.ts";

const COMMANDS: Readonly<Record<string, Command>> = { ...ROW_COMMANDS, doctor };

function mainHelp(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((name) => name.length));
  return [
    `outbox ${VERSION}: operate a @x/outbox table`,
    "",
    "Usage: outbox <command> [flags]",
    "",
    "Commands:",
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    "",
    "Connection (every command):",
    "  --url URL           postgres://…, mysql://user@host:3306/db (or mariadb://), file:…,",
    "                      libsql://… or https://… (or OUTBOX_URL)",
    "  --auth-token TOKEN  for libsql:// and https:// (or OUTBOX_AUTH_TOKEN)",
    "  --schema NAME       Postgres schema (default public); MySQL: the database in the URL",
    "  --table NAME        outbox table (default outbox)",
    "  --json              one JSON document on stdout",
    "",
    "Exit codes: 0 ok, 1 failure, 2 usage. `outbox <command> --help` for more.",
    "",
  ].join("\n");
}

function commandHelp(name: string, c: Command): string {
  const flags = Object.entries(c.flags).map(([flag, spec]) => [`--${flag}${spec.value ? ` ${spec.value}` : ""}`, spec]);
  const width = Math.max(...flags.map(([f]) => (f as string).length));
  return [
    `outbox ${name}: ${c.summary}`,
    "",
    `Usage: outbox ${name} ${c.usage}`,
    "",
    c.details,
    "",
    "Flags:",
    ...flags.map(([f, spec]) => `  ${(f as string).padEnd(width)}  ${(spec as { help: string }).help}`),
    "",
  ].join("\n");
}

/** The one line a failure prints: our own errors as they are, a missing table with the command that creates it. */
function describe(error: unknown): { message: string; code: 1 | 2 } {
  if (error instanceof CliError) return { message: error.message, code: error.exitCode };
  // A bad --table or --schema is refused by the storage factory: a usage error.
  if (error instanceof OutboxConfigError || error instanceof OutboxMessageError) {
    return { message: oneLine(error), code: 2 };
  }
  // The library's advice names its API; on the command line the same step is `outbox setup`.
  const message = oneLine(error).replace(/run outbox\.setup\(\)/, "run `outbox setup`");
  return { message: error instanceof OutboxError || error instanceof Error ? message : String(error), code: 1 };
}

/**
 * Runs the `outbox` command line.
 *
 * @param argv The arguments after the program name, e.g. `["status", "--url", "file:app.db"]`.
 * @param io Output, environment and driver loading (default: the running process's).
 * @returns The exit code: 0 ok, 1 failure, 2 usage.
 */
export async function main(argv: string[], io: CliIo = runtimeIo()): Promise<number> {
  const [name, ...rest] = argv;
  try {
    if (name === undefined) throw new CliError("no command given; see `outbox --help`", 2);
    if (name === "--help" || name === "-h" || name === "help") {
      io.stdout(mainHelp());
      return 0;
    }
    if (name === "--version" || name === "-V") {
      io.stdout(`${VERSION}\n`);
      return 0;
    }
    const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
    if (!command) {
      throw new CliError(
        `${name.startsWith("-") ? "expected a command before" : "unknown command"} ${
          JSON.stringify(name)
        }; see \`outbox --help\``,
        2,
      );
    }
    const flags = parseFlags(rest, command.flags, name);
    if (flags.help) {
      io.stdout(commandHelp(name, command));
      return 0;
    }
    return await command.run(flags, io);
  } catch (error) {
    const { message, code } = describe(error);
    io.stderr(`outbox: ${message}\n`);
    return code;
  }
}

// `deno run -A jsr:@x/outbox/cli …` and `bun cli/mod.ts …` run this file; Node runs bin.ts.
if ((import.meta as ImportMeta & { main?: boolean }).main) await runAsProgram(main);
