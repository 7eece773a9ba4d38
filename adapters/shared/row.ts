/**
 * Reading outbox rows back from a driver, shared by the storage adapters: drivers
 * return integers as numbers, bigints or strings (postgres.js int8) and NULL as null.
 */

import type { InspectOptions, OutboxRow, OutboxStatus, StatusCounts } from "../../src/types.ts";

/** A column as a number (number, bigint or numeric string). */
export function num(value: unknown): number {
  return Number(value);
}

/** A nullable column as a number or null. */
export function numOrNull(value: unknown): number | null {
  return value === null || value === undefined ? null : Number(value);
}

/** A nullable column as a string or null. */
export function str(value: unknown): string | null {
  return value === null || value === undefined ? null : String(value);
}

/** Bytes from base64 text (Postgres `encode(…, 'base64')`). */
export function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** A stored payload: JSON text, or bytes (a driver's ArrayBuffer or view, or Postgres base64 in `payload_bytes`). */
function bodyOf(row: Record<string, unknown>): string | Uint8Array {
  const p = row.payload;
  if (typeof p === "string") return p;
  if (p instanceof ArrayBuffer) return new Uint8Array(p);
  if (ArrayBuffer.isView(p)) return new Uint8Array(p.buffer, p.byteOffset, p.byteLength);
  return fromBase64(String(row.payload_bytes ?? ""));
}

/** Maps a row of the adapters' inspect query (same column names everywhere) to an {@link OutboxRow}. */
export function outboxRow(row: Record<string, unknown>): OutboxRow {
  return {
    seq: num(row.seq),
    id: String(row.id),
    topic: String(row.topic),
    key: str(row.key),
    status: String(row.status) as OutboxStatus,
    attempts: num(row.attempts),
    availableAt: numOrNull(row.available_at),
    lockedBy: str(row.locked_by),
    lastError: str(row.last_error),
    createdAt: num(row.created_at),
    settledAt: numOrNull(row.settled_at),
    deliverAt: numOrNull(row.deliver_at),
    body: bodyOf(row),
    headers: str(row.headers),
  };
}

const STATUSES: readonly OutboxStatus[] = ["pending", "processing", "published", "dead"];

/** Totals and per-topic counts from `[topic, status, count]` groups. */
export function countsByTopic(
  groups: readonly (readonly [string, string, unknown])[],
): StatusCounts & { topics: Record<string, StatusCounts> } {
  const zero = (): Record<OutboxStatus, number> => ({ pending: 0, processing: 0, published: 0, dead: 0 });
  const total = zero();
  const topics: Record<string, Record<OutboxStatus, number>> = {};
  for (const [topic, status, count] of groups) {
    if (!STATUSES.includes(status as OutboxStatus)) continue;
    const n = num(count);
    total[status as OutboxStatus] += n;
    (topics[topic] ??= zero())[status as OutboxStatus] += n;
  }
  return { ...total, topics };
}

/**
 * The values of an inspect query, in the order both SQL adapters number their
 * placeholders: status, topic, key (NULL: any), limit, after (a `seq`), destination
 * (NULL: any).
 */
export function inspectValues(o: InspectOptions): (string | number | null)[] {
  return [o.status ?? null, o.topic ?? null, o.key ?? null, o.limit ?? 1_000_000, o.after ?? 0, o.destination ?? null];
}
