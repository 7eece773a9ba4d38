/**
 * Text helpers of the CLI: durations in and out, times, aligned tables, and cleaning
 * message fields for a terminal.
 */

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Reads a duration such as `500ms`, `60s`, `5m`, `1h` or `7d` (decimals allowed: `1.5h`).
 *
 * @param text The flag's value.
 * @returns Milliseconds, or `undefined` when the text is not a duration.
 */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim());
  if (!m) return undefined;
  const ms = Math.round(Number(m[1]) * UNITS[m[2]!]!);
  return Number.isFinite(ms) && ms <= 1e14 ? ms : undefined;
}

/**
 * Writes a duration for people: `450ms`, `12s`, `3m 5s`, `2h 10m`, `3d 4h`.
 *
 * @param ms Milliseconds.
 * @returns The shortest readable form, two units at most.
 */
export function formatDuration(ms: number): string {
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  const parts: [number, string][] = [
    [Math.floor(ms / 86_400_000), "d"],
    [Math.floor(ms / 3_600_000) % 24, "h"],
    [Math.floor(ms / 60_000) % 60, "m"],
    [Math.floor(ms / 1_000) % 60, "s"],
  ];
  const first = parts.findIndex(([n]) => n > 0);
  return parts.slice(first, first + 2).filter(([n], i) => i === 0 || n > 0).map(([n, u]) => `${n}${u}`).join(" ");
}

/**
 * An epoch-ms time as UTC without milliseconds: `2026-05-02 10:11:12Z`.
 *
 * @param ms Epoch milliseconds, or `null`.
 * @returns The time, or `-` for `null`.
 */
export function formatTime(ms: number | null): string {
  if (ms === null) return "-";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

/**
 * Makes stored text safe and short for a table cell: control characters (a message's
 * topic or `lastError` may hold terminal escapes or newlines) become spaces or `?`, and
 * text longer than `max` is cut with `…`.
 *
 * @param text Any text, or `null` (shown as `-`).
 * @param max Most characters to keep.
 * @returns One line of printable text.
 */
export function cell(text: string | null, max = Infinity): string {
  if (text === null) return "-";
  // deno-lint-ignore no-control-regex
  const clean = text.replace(/[\t\n\r]+/g, " ").replace(/[\u0000-\u001f\u007f-\u009f]/g, "?");
  return clean.length > max ? `${clean.slice(0, Math.max(0, max - 1))}…` : clean;
}

/**
 * Lays rows out as columns separated by two spaces, headers first. Columns named in
 * `right` are right-aligned (numbers).
 *
 * @param headers Column titles.
 * @param rows Cells, already text.
 * @param right Indexes of right-aligned columns.
 * @returns The table, one line per row, with a trailing newline.
 */
export function table(headers: readonly string[], rows: readonly (readonly string[])[], right: readonly number[] = []) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells.map((c, i) => (right.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}
