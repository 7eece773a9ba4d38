/**
 * Writing messages into the Postgres outbox table, shared by the postgres.js adapter
 * and the Drizzle Postgres storage (which runs the same statement through a drizzle
 * transaction).
 */

import { pgArray } from "./array.ts";
import { OutboxConfigError, OutboxMessageError, OutboxStorageError } from "../../src/errors.ts";
import { bodyBytes } from "../../src/payload.ts";
import type { NewOutboxRow } from "../../src/types.ts";
import { idUniqueSql, insertOneCheckedSql, insertOneSql, insertSql, type PostgresNames, uninsertSql } from "./sql.ts";

/** Runs one statement with bound parameters and resolves with its rows. */
export type Execute = (text: string, params: unknown[]) => PromiseLike<Record<string, unknown>[]>;

/** The insert statement and its compensation for one table. */
export interface InsertQueries {
  readonly insert: string;
  /** The same for exactly one row of the one publisher (destination `""`), with scalar parameters. */
  readonly insertOne: string;
  /** The same for exactly one row of a named destination. */
  readonly insertOneChecked: string;
  readonly uninsert: string;
  /** Whether `id` alone is unique (schema version 1 or 2: no fan-out rows). */
  readonly idUnique: string;
  /** The table as messages show it. */
  readonly table: string;
}

/** Builds the insert statements for a table. */
export function insertQueries(n: PostgresNames): InsertQueries {
  return {
    insert: insertSql(n),
    insertOne: insertOneSql(n),
    insertOneChecked: insertOneCheckedSql(n),
    uninsert: uninsertSql(n),
    idUnique: idUniqueSql(n),
    table: n.qualified,
  };
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

/** The id of a row with a sibling for another destination in `rows` (fan-out), if any. */
function fanOutId(rows: readonly NewOutboxRow[]): string | undefined {
  const first = new Map<string, string>();
  for (const r of rows) {
    const destination = r.destination ?? "";
    const seen = first.get(r.id);
    if (seen === undefined) first.set(r.id, destination);
    else if (seen !== destination) return r.id;
  }
  return undefined;
}

/**
 * Inserts rows in one statement through `execute`; all or none. An id that is already
 * in the table (for any destination) raises `OutboxMessageError`, and fan-out rows (one
 * id, several destinations) into a table whose `id` alone is unique raise
 * `OutboxConfigError`; neither aborts the caller's transaction.
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
    const params: unknown[] = [
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
    ];
    if (r.destination) params.push(r.destination);
    const [one] = await execute(r.destination ? q.insertOneChecked : q.insertOne, params);
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
  const destinations: string[] = new Array(n);
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
    destinations[i] = r.destination ?? "";
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
    pgArray(destinations),
  ]);
  if (result?.duplicate !== null && result?.duplicate !== undefined) {
    throw duplicateError(String(result.duplicate), n);
  }
  if (Number(result?.n) !== n) {
    // A row conflicted with another: one of this insert's own (fan-out rows on a table
    // where id alone is unique), or one a concurrent transaction inserted after the
    // check. Undo what was written, then tell which.
    const seqs = typeof result?.seqs === "string" ? JSON.parse(result.seqs) as number[] : [];
    const undone = seqs.length > 0 ? await execute(q.uninsert, [pgArray(seqs)]) : [];
    const fanOut = fanOutId(rows);
    if (fanOut !== undefined) {
      const [table] = await execute(q.idUnique, []);
      if (table?.id_unique === true) {
        throw new OutboxConfigError(
          `Could not enqueue message ${JSON.stringify(fanOut)} for several destinations: Postgres table ${q.table} ` +
            "allows one row per message id (schema version 2 or older). Run setup() of an outbox with publishers, " +
            "or `outbox setup --fan-out`, to upgrade the table to schema version 3",
        );
      }
    }
    const written = new Set(undone.map((row) => `${row.destination}\0${row.id}`));
    throw duplicateError(rows.find((r) => !written.has(`${r.destination ?? ""}\0${r.id}`))?.id ?? "", n);
  }
}

/** Maps an insert failure to the error a caller can act on. */
export function insertError(error: unknown, otherwise: (error: unknown) => Error): Error {
  if (
    error instanceof OutboxStorageError || error instanceof OutboxMessageError || error instanceof OutboxConfigError
  ) return error;
  const e = error as { code?: unknown; cause?: { code?: unknown } };
  const code = e?.code ?? e?.cause?.code;
  if (code === "25P02") {
    return new OutboxStorageError("Could not enqueue: the transaction is aborted by an earlier error; roll it back", {
      cause: error,
    });
  }
  return otherwise(error);
}
