/**
 * The SQL of the Postgres inbox. One row per handled message and consumer; the primary
 * key (consumer, id) makes a second receive of a message a no-op through
 * `ON CONFLICT DO NOTHING`, which, unlike a unique violation, leaves the caller's
 * transaction usable. Times are epoch milliseconds (bigint) from the consumer's clock.
 */

import type { PostgresNames } from "./sql.ts";

/** DDL statements, each idempotent. */
export function inboxCreateStatements(n: PostgresNames): string[] {
  return [
    `CREATE SCHEMA IF NOT EXISTS ${n.schema}`,
    `CREATE TABLE IF NOT EXISTS ${n.qualified} (
  consumer text NOT NULL,
  id text NOT NULL,
  received_at bigint NOT NULL,
  PRIMARY KEY (consumer, id)
)`,
    // Retention cleanup: the oldest ids first.
    `CREATE INDEX IF NOT EXISTS ${n.index("received_idx")} ON ${n.qualified} (received_at)`,
  ];
}

/**
 * Records an id unless it is there; returns one row for a new id, none for a duplicate.
 * A concurrent transaction that inserted the same key and has not committed yet makes
 * this statement wait on the primary-key index: it then returns a row if that
 * transaction rolled back, none if it committed (under READ COMMITTED; REPEATABLE READ
 * and SERIALIZABLE raise a serialization failure instead, to be retried).
 * $1 consumer, $2 id, $3 received_at.
 */
export function inboxReceiveSql(n: PostgresNames): string {
  return `INSERT INTO ${n.qualified} (consumer, id, received_at) VALUES ($1, $2, $3)
ON CONFLICT (consumer, id) DO NOTHING
RETURNING true AS fresh`;
}

/**
 * Deletes the oldest ids received before $1, at most $2 of them: an index scan of
 * `<table>_received_idx` picks them (concurrent cleanups skip each other's rows) and a
 * TID scan deletes them. (`(consumer, id) IN (…)` let the planner hash-join against a
 * sequential scan of the whole table.) Rows are never updated, so a locked row's ctid
 * is stable.
 */
export function inboxCleanupSql(n: PostgresNames): string {
  return `DELETE FROM ${n.qualified} WHERE ctid = ANY (ARRAY(
  SELECT ctid FROM ${n.qualified}
  WHERE received_at < $1
  ORDER BY received_at
  LIMIT $2
  FOR UPDATE SKIP LOCKED
))`;
}
