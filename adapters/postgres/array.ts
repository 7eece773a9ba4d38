/**
 * Postgres array literals, built here rather than by the driver: postgres.js encodes a
 * JS array correctly only when it has fetched the server's array types, and clients
 * made with `fetch_types: false` (common on Workers) would send `a,b` instead of `{a,b}`.
 * The SQL binds each literal as text and casts it (`$1::text::bigint[]`).
 */

/** Encodes values as a Postgres array literal: `{1,2}`, `{"a","b\"c",NULL}`. */
export function pgArray(values: readonly (string | number | null)[]): string {
  let out = "{";
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ",";
    const v = values[i];
    if (v === null || v === undefined) out += "NULL";
    else if (typeof v === "number") out += String(v);
    else out += `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
  }
  return out + "}";
}
