/**
 * SQL identifier checks for adapter options (table, schema). Identifiers cannot be
 * bound as parameters, so they are validated here and quoted by each adapter's SQL;
 * values are always bound.
 */

import { OutboxConfigError } from "../../src/errors.ts";
import type { Rule } from "../../src/rules.ts";

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/**
 * Checks that `value` is a plain SQL identifier: a letter or underscore, then letters,
 * digits or underscores, at most 63 characters (Postgres' limit).
 *
 * @param value The identifier to check.
 * @param path The option's name, for the error.
 * @returns The identifier.
 * @throws {OutboxConfigError} When it is anything else.
 */
export function checkIdentifier(value: unknown, path: string): string {
  if (typeof value !== "string" || !IDENTIFIER.test(value)) {
    throw new OutboxConfigError(
      `${path} must be a plain SQL identifier (a letter or _, then letters, digits or _, at most 63), got ${
        JSON.stringify(value) ?? String(value)
      }`,
      path,
    );
  }
  return value;
}

/** {@link checkIdentifier} as an option rule, for `checkOptions`. */
export const identifier: Rule = (value, path) => void checkIdentifier(value, path);
