/**
 * Reading outbox rows back from a driver, shared by the storage adapters: drivers
 * return integers as numbers, bigints or strings (postgres.js int8) and NULL as null.
 */

import type { OutboxRow, OutboxStatus } from "../../src/types.ts";

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
  };
}
