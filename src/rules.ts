/**
 * Option rules: small checks that throw {@link OutboxConfigError} naming the option's
 * path. One kit for `createOutbox` (options.ts), `createInbox` and every adapter
 * factory, so an option is checked, and its error worded, the same way everywhere.
 *
 * Hand-written rather than valibot schemas: valibot's schema builders would be most of
 * the core bundle's size. A rule the core does not use is left out of its bundle.
 */

import { OutboxConfigError } from "./errors.ts";

/** Checks one option's value (never `undefined`); throws OutboxConfigError naming `path`. */
export type Rule = (value: unknown, path: string) => void;

/** The error a failed check throws: OutboxConfigError, or OutboxMessageError for per-call arguments. */
export type OptionErrorClass = new (message: string, path: string) => Error;

/**
 * Throws OutboxConfigError.
 *
 * @param message What is wrong, naming the option.
 * @param path Dot path of the option.
 */
export function fail(message: string, path: string): never {
  throw new OutboxConfigError(message, path);
}

/**
 * An integer from `min` to `max`.
 *
 * @param min Smallest allowed value.
 * @param max Largest allowed value.
 */
export function int(min: number, max: number): Rule {
  return (x, path) => {
    if (!Number.isInteger(x) || (x as number) < min || (x as number) > max) {
      fail(`${path} must be an integer between ${min} and ${max}, got ${String(x)}`, path);
    }
  };
}

/**
 * Longest delay `setTimeout` honours (a signed 32-bit int, about 24.8 days): Node, Bun
 * and Deno fire a timer with a longer delay at once.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * Longest finite delay or retention period: added to or taken from an epoch-ms time, it
 * keeps the result within a Date's range and a 64-bit column (Postgres bigint).
 */
export const MAX_SPAN_MS = 1e14;

/**
 * A duration in ms, from `min` to `max`, or Infinity where allowed.
 *
 * @param min Shortest allowed duration.
 * @param allowInfinity Whether `Infinity` (for ever, never) is allowed.
 * @param max Longest finite duration: MAX_SPAN_MS (default) for times that are stored,
 *   MAX_TIMER_MS for a timer's delay, Infinity for no limit.
 */
export function duration(min: number, allowInfinity = false, max: number = MAX_SPAN_MS): Rule {
  return (x, path) => {
    const got = typeof x === "number" ? String(x) : typeof x === "string" ? JSON.stringify(x) : typeof x;
    if (!((allowInfinity && x === Infinity) || (Number.isFinite(x) && (x as number) >= min))) {
      fail(
        `${path} must be a number of milliseconds ≥ ${min}${allowInfinity ? " (or Infinity)" : ""}, got ${got}`,
        path,
      );
    }
    if (x !== Infinity && (x as number) > max) {
      // Timers fire at once past MAX_TIMER_MS; times past MAX_SPAN_MS are not storable.
      fail(
        `${path} must be at most ${max} ms (${max === MAX_TIMER_MS ? "a timer's limit" : "storable"}), got ${got}`,
        path,
      );
    }
  };
}

/** A function (a hook, a clock). */
export const fn: Rule = (x, path) => {
  if (typeof x !== "function") fail(`${path} must be a function`, path);
};

/** Any value: an option that is checked where it is used, or that needs no check. */
export const unchecked: Rule = () => {};

/** A boolean. */
export const bool: Rule = (x, path) => {
  if (typeof x !== "boolean") fail(`${path} must be a boolean, got ${JSON.stringify(x)}`, path);
};

/**
 * One of a few strings.
 *
 * @param values The allowed strings.
 */
export function oneOf(...values: string[]): Rule {
  return (x, path) => {
    if (!values.includes(x as string)) {
      fail(`${path} must be one of ${values.join(", ")}, got ${JSON.stringify(x)}`, path);
    }
  };
}

/** Whether `x` is a non-null object (an options object, a group). */
export const isObject = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null;

/**
 * Checks the options an object holds, in the order of `rules` (so the first invalid one
 * is reported), then rejects keys `rules` does not know. An option may be left out or
 * `undefined` unless it is `required`.
 *
 * @param input The options object.
 * @param rules A rule per known option.
 * @param prefix Put before each key in paths, e.g. `"retry."`.
 * @param unknown The message for an unknown key (given JSON-quoted).
 * @param required Options that must be given.
 */
export function checkEntries(
  input: Record<string, unknown>,
  rules: Record<string, Rule>,
  prefix: string,
  unknown: (key: string) => string,
  required: readonly string[] = [],
): void {
  for (const key in rules) {
    const value = input[key];
    const path = prefix + key;
    if (value !== undefined) rules[key]!(value, path);
    else if (required.includes(key)) fail(`${path} is required`, path);
  }
  for (const key in input) if (!Object.hasOwn(rules, key)) fail(unknown(JSON.stringify(key)), prefix + key);
}

/**
 * A nested options object (`retry`, `retention`).
 *
 * @param rules A rule per known option of the group.
 */
export function group(rules: Record<string, Rule>): Rule {
  return (x, path) => {
    if (!isObject(x)) fail(`${path} must be an object`, path);
    checkEntries(x, rules, `${path}.`, (key) => `${path} has an unknown option ${key}`);
  };
}

/**
 * Checks the options object of a factory or a call (`postgresStorage(sql, options)`,
 * `inbox.cleanup(options)`): an object, with no key `rules` does not know (a misspelt
 * option is named before any value is judged), each given option passing its rule.
 * Absent and `undefined` options are left to the caller's defaults.
 *
 * @param owner The function the options are for, as messages name it: `"libsqlStorage"`.
 * @param input The options as passed.
 * @param rules A rule per known option, in the order they are checked.
 * @param ErrorClass What the object and key checks throw (default OutboxConfigError;
 *   the rules throw their own).
 * @throws {OutboxConfigError} Naming the option (`"options"` for the object itself).
 *
 * @example
 * ```ts
 * checkOptions("libsqlStorage", options, { table: identifier, busyTimeoutMs: duration(0, true, Infinity) });
 * ```
 */
export function checkOptions(
  owner: string,
  input: unknown,
  rules: Record<string, Rule>,
  ErrorClass: OptionErrorClass = OutboxConfigError,
): void {
  if (!isObject(input)) throw new ErrorClass(`${owner} options must be an object`, "options");
  const unknown = (key: string) => `Unknown option ${key} passed to ${owner}`;
  for (const key of Object.keys(input)) {
    if (!Object.hasOwn(rules, key)) throw new ErrorClass(unknown(JSON.stringify(key)), key);
  }
  checkEntries(input, rules, "", unknown);
}
