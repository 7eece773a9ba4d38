/**
 * The SQL of the libSQL inbox. One row per handled message and consumer; the primary
 * key (consumer, id) is what makes a second receive of the same message a no-op, and
 * the table is WITHOUT ROWID because it is only ever reached through that key or the
 * received_at index. Times are epoch milliseconds from the consumer's clock.
 */

/** Quoted names of the inbox table and its index. */
export interface LibsqlInboxNames {
  /** The table name as it appears in SQLite's error messages (unquoted). */
  readonly bare: string;
  readonly table: string;
  readonly receivedIndex: string;
}

/** Builds the quoted names for a checked table name. */
export function libsqlInboxNames(table: string): LibsqlInboxNames {
  return { bare: table, table: `"${table}"`, receivedIndex: `"${table}_received_idx"` };
}

/** DDL statements, each idempotent. */
export function inboxCreateStatements(n: LibsqlInboxNames): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${n.table} (
  consumer TEXT NOT NULL,
  id TEXT NOT NULL,
  received_at INTEGER NOT NULL,
  PRIMARY KEY (consumer, id)
) WITHOUT ROWID`,
    // Retention cleanup: the oldest ids first.
    `CREATE INDEX IF NOT EXISTS ${n.receivedIndex} ON ${n.table} (received_at)`,
  ];
}

/**
 * Records an id unless it is there: `rowsAffected` is 1 for a new id, 0 for a
 * duplicate. ON CONFLICT names the key, so any other failure still raises.
 * ?1 consumer, ?2 id, ?3 received_at.
 */
export function inboxReceiveSql(n: LibsqlInboxNames): string {
  return `INSERT INTO ${n.table} (consumer, id, received_at) VALUES (?1, ?2, ?3) ON CONFLICT (consumer, id) DO NOTHING`;
}

/**
 * Records an id and fails with a primary-key violation when it is there: the first
 * statement of a batch that must not run twice. ?1 consumer, ?2 id, ?3 received_at.
 */
export function inboxGuardSql(n: LibsqlInboxNames): string {
  return `INSERT INTO ${n.table} (consumer, id, received_at) VALUES (?1, ?2, ?3)`;
}

/**
 * Deletes the oldest ids received before ?1, at most ?2 of them. The subquery walks
 * the received_at index; each row is then found by its primary key.
 */
export function inboxCleanupSql(n: LibsqlInboxNames): string {
  return `DELETE FROM ${n.table} WHERE (consumer, id) IN (
  SELECT consumer, id FROM ${n.table} WHERE received_at < ?1 ORDER BY received_at LIMIT ?2
)`;
}
