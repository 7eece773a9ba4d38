/**
 * Writing messages into the Postgres outbox table, shared by the postgres.js adapter
 * and the Drizzle Postgres storage (which runs the same statement through a drizzle
 * transaction).
 */

import { pgArray } from "./array.ts";
import { OutboxMessageError, OutboxStorageError } from "../../src/errors.ts";
import { bodyBytes } from "../../src/payload.ts";
import type { NewOutboxRow } from "../../src/types.ts";
import { insertOneSql, insertSql, type PostgresNames, uninsertSql } from "./sql.ts";

/** Runs one statement with bound parameters and resolves with its rows. */
export type Execute = (text: string, params: unknown[]) => PromiseLike<Record<string, unknown>[]>;

/** The insert statement and its compensation for one table. */
export interface InsertQueries {
  readonly insert: string;
  /** The same for exactly one row, with scalar parameters. */
  readonly insertOne: string;
  readonly uninsert: string;
}

/** Builds the insert statements for a table. */
export function insertQueries(n: PostgresNames): InsertQueries {
  return { insert: insertSql(n), insertOne: insertOneSql(n), uninsert: uninsertSql(n) };
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function duplicateError(id: string, count: number): OutboxMessageError {
  return new OutboxMessageError(
    `Message id ${JSON.stringify(id)} is already in the outbox; ids must be unique`,
    count === 1 ? "id" : "",
  );
}

/**
 * Inserts rows in one statement through `execute`; all or none. An id that is already
 * in the table raises `OutboxMessageError` without aborting the caller's transaction.
 */
export async function writeRows(
  q: InsertQueries,
  rows: readonly NewOutboxRow[],
  notify: boolean,
  execute: Execute,
): Promise<void> {
  const n = rows.length;
  if (n === 1) {
    const r = rows[0]!;
    const text = typeof r.body === "string";
    const [one] = await execute(q.insertOne, [
      r.id,
      r.topic,
      r.key,
      text ? r.body : null,
      text ? null : base64(bodyBytes(r.body)),
      r.headers,
      r.availableAt,
      r.deliverAt,
      r.createdAt,
      notify,
    ]);
    if (Number(one?.n) !== 1) throw duplicateError(r.id, 1);
    return;
  }
  const ids: string[] = new Array(n);
  const topics: string[] = new Array(n);
  const keys: (string | null)[] = new Array(n);
  const payloads: (string | null)[] = new Array(n);
  const bytes: (string | null)[] = new Array(n);
  const headers: (string | null)[] = new Array(n);
  const available: number[] = new Array(n);
  const deliver: (number | null)[] = new Array(n);
  const created: number[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const r = rows[i]!;
    ids[i] = r.id;
    topics[i] = r.topic;
    keys[i] = r.key;
    payloads[i] = typeof r.body === "string" ? r.body : null;
    bytes[i] = typeof r.body === "string" ? null : base64(bodyBytes(r.body));
    headers[i] = r.headers;
    available[i] = r.availableAt;
    deliver[i] = r.deliverAt;
    created[i] = r.createdAt;
  }
  const [result] = await execute(q.insert, [
    pgArray(ids),
    pgArray(topics),
    pgArray(keys),
    pgArray(payloads),
    pgArray(bytes),
    pgArray(headers),
    pgArray(available),
    pgArray(deliver),
    pgArray(created),
    notify,
  ]);
  if (result?.duplicate !== null && result?.duplicate !== undefined) {
    throw duplicateError(String(result.duplicate), n);
  }
  if (Number(result?.n) !== n) {
    // Another transaction inserted one of these ids after the check: undo ours.
    const written = typeof result?.ids === "string" ? JSON.parse(result.ids) as string[] : [];
    if (written.length > 0) await execute(q.uninsert, [pgArray(written)]);
    throw duplicateError(ids.find((id) => !written.includes(id)) ?? "", n);
  }
}

/** Maps an insert failure to the error a caller can act on. */
export function insertError(error: unknown, otherwise: (error: unknown) => Error): Error {
  if (error instanceof OutboxStorageError || error instanceof OutboxMessageError) return error;
  const e = error as { code?: unknown; cause?: { code?: unknown } };
  const code = e?.code ?? e?.cause?.code;
  if (code === "25P02") {
    return new OutboxStorageError("Could not enqueue: the transaction is aborted by an earlier error; roll it back", {
      cause: error,
    });
  }
  return otherwise(error);
}
