/**
 * Command-line parsing: each command declares its flags, and anything else is a usage
 * error (exit 2) rather than a flag silently ignored.
 */

/** A mistake in how the CLI was called or in what it was asked: one line on stderr, then exit 1 or 2. */
export class CliError extends Error {
  /** The exit code: 2 for a usage error, 1 for a failure. */
  readonly exitCode: 1 | 2;
  /**
   * @param message One line, without the `outbox:` prefix.
   * @param exitCode 2 (usage) or 1 (failure).
   */
  constructor(message: string, exitCode: 1 | 2) {
    super(message);
    this.name = "CliError";
    this.exitCode = exitCode;
  }
}

/** How a flag takes its value. */
export type FlagKind = "string" | "boolean" | "list";

/** One flag of a command. */
export interface FlagSpec {
  readonly kind: FlagKind;
  /** The value's placeholder in help, e.g. `URL`. */
  readonly value?: string;
  readonly help: string;
}

/** Parsed flags: strings, `true` for booleans, arrays for repeatable flags. */
export type Flags = Record<string, string | true | string[]>;

/**
 * Reads `--name value`, `--name=value`, boolean `--name` and `-h`; a repeatable flag
 * collects its values. Positional arguments are refused: every command takes flags only.
 *
 * @param argv Arguments after the command name.
 * @param specs The command's flags.
 * @param command The command name, for messages.
 * @returns The flags given.
 * @throws {CliError} With exit code 2 on an unknown flag, a missing value or a flag given twice.
 */
export function parseFlags(argv: readonly string[], specs: Readonly<Record<string, FlagSpec>>, command: string): Flags {
  const flags: Flags = {};
  const seeHelp = `(see \`outbox ${command} --help\`)`;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h") {
      flags.help = true;
      continue;
    }
    if (!arg.startsWith("--") || arg === "--") {
      throw new CliError(`${command} takes no argument ${JSON.stringify(arg)} ${seeHelp}`, 2);
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const spec = specs[name];
    if (!spec) throw new CliError(`unknown flag --${name} for ${command} ${seeHelp}`, 2);
    let value: string | true;
    if (spec.kind === "boolean") {
      if (eq !== -1) throw new CliError(`--${name} takes no value`, 2);
      value = true;
    } else if (eq !== -1) {
      value = arg.slice(eq + 1);
    } else {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith("--")) throw new CliError(`--${name} needs a value ${seeHelp}`, 2);
      value = next;
      i++;
    }
    if (spec.kind === "list") {
      const list = flags[name];
      flags[name] = [...(Array.isArray(list) ? list : []), value as string];
    } else {
      if (name in flags) throw new CliError(`--${name} is given twice`, 2);
      flags[name] = value;
    }
  }
  return flags;
}

/** A string flag's value, or `undefined`. */
export function stringFlag(flags: Flags, name: string): string | undefined {
  const v = flags[name];
  return typeof v === "string" ? v : undefined;
}

/** A repeatable flag's values, or `undefined` when it was not given. */
export function listFlag(flags: Flags, name: string): string[] | undefined {
  const v = flags[name];
  return Array.isArray(v) ? v : undefined;
}

/**
 * A whole number flag within bounds.
 *
 * @throws {CliError} With exit code 2 when the value is not such a number.
 */
export function intFlag(flags: Flags, name: string, min: number, max: number): number | undefined {
  const text = stringFlag(flags, name);
  if (text === undefined) return undefined;
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) {
    throw new CliError(`--${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(text)}`, 2);
  }
  return n;
}

/**
 * A status flag restricted to `allowed`.
 *
 * @throws {CliError} With exit code 2 for any other value.
 */
export function choiceFlag<T extends string>(flags: Flags, name: string, allowed: readonly T[]): T | undefined {
  const text = stringFlag(flags, name);
  if (text === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(text)) {
    throw new CliError(
      `--${name} must be ${allowed.join(", ").replace(/, ([^,]*)$/, " or $1")}, got ${JSON.stringify(text)}`,
      2,
    );
  }
  return text as T;
}

/** A destination name as `createOutbox({ publishers })` accepts it. */
const DESTINATION = /^[A-Za-z0-9_.-]{1,64}$/;

/** How tables show the destination `""` (the one `publisher`'s); never a valid name, so never ambiguous. */
export const DEFAULT_DESTINATION_LABEL = "(default)";

/**
 * A destination flag: `undefined` when not given (any destination), `""` for the default
 * destination (the one `publisher`'s rows), given as `--destination ''`,
 * `--destination=` or `--destination '(default)'` (as `status` shows it), else a name.
 *
 * @throws {CliError} With exit code 2 for a value that cannot be a destination name.
 */
export function destinationFlag(flags: Flags, name: string): string | undefined {
  const text = stringFlag(flags, name);
  if (text === undefined) return undefined;
  if (text === "" || text === DEFAULT_DESTINATION_LABEL) return "";
  if (!DESTINATION.test(text)) {
    throw new CliError(
      `--${name} must be a destination name (1 to 64 of A-Z a-z 0-9 _ . -) or '' for the default, got ${
        JSON.stringify(text.slice(0, 80))
      }`,
      2,
    );
  }
  return text;
}
