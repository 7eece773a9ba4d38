/**
 * The SQL the libSQL adapter runs. One table; `available_at` is the time a row may be
 * claimed next (the lease end while it is processing) and is NULL once the row is
 * settled (published or dead), so two partial indexes over the unsettled rows serve
 * every hot query and stay small however many settled rows retention keeps.
 *
 * Relay clocks are not trusted: a relay's "now" passed as NULL means the database's
 * clock ({@link DB_NOW}), which over HTTP (sqld, Turso) is the server's, so relays with
 * skewed clocks agree on what is due and when a lease ends. A dead message that blocks
 * its key (`retry.onDead: "block"`) keeps `available_at = BLOCKED`, never due, so the
 * claim's per-key barrier holds its key back.
 */

import type { InValue } from "@libsql/client";
import type {
  ClaimRequest,
  ClockSource,
  InspectOptions,
  PurgeRequest,
  RequeueRequest,
  SettleRequest,
} from "../../src/types.ts";
import { BLOCKED, groupSettlements } from "../shared/settle.ts";

/** The database's clock in epoch ms; SQLite fixes 'now' for the whole statement. */
export const DB_NOW = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

/** Quoted names of the table and its indexes. */
export interface LibsqlNames {
  readonly table: string;
  readonly claimIndex: string;
  readonly keyIndex: string;
  readonly settledIndex: string;
  readonly lockedIndex: string;
  readonly scheduledIndex: string;
  readonly idIndex: string;
}

/** Builds the quoted names for a checked table name. */
export function libsqlNames(table: string): LibsqlNames {
  return {
    table: `"${table}"`,
    claimIndex: `"${table}_claim_idx"`,
    keyIndex: `"${table}_key_idx"`,
    settledIndex: `"${table}_settled_idx"`,
    lockedIndex: `"${table}_locked_idx"`,
    scheduledIndex: `"${table}_scheduled_idx"`,
    idIndex: `"${table}_id_unique"`,
  };
}

/** DDL statements, each idempotent. */
export function createStatements(n: LibsqlNames): string[] {
  return [
    `CREATE TABLE IF NOT EXISTS ${n.table} (
  seq INTEGER PRIMARY KEY NOT NULL,
  id TEXT NOT NULL,
  topic TEXT NOT NULL,
  key TEXT,
  payload BLOB NOT NULL,
  headers TEXT,
  status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'published', 'dead')),
  attempts INTEGER NOT NULL DEFAULT 0,
  available_at INTEGER,
  deliver_at INTEGER,
  locked_by TEXT,
  last_error TEXT,
  created_at INTEGER NOT NULL,
  settled_at INTEGER
)`,
    // Message ids are the dedup ids end to end. A named index rather than a column
    // UNIQUE, so drizzle-kit can declare exactly the same thing.
    `CREATE UNIQUE INDEX IF NOT EXISTS ${n.idIndex} ON ${n.table} (id)`,
    // Claim scan: unsettled rows in seq order; due time and key covered.
    `CREATE INDEX IF NOT EXISTS ${n.claimIndex} ON ${n.table} (seq, available_at, key) WHERE available_at IS NOT NULL`,
    // Per-key barrier: does the key have an unsettled row that is not claimable yet
    // (available_at > now) before this one? Ordered by available_at, the probe visits
    // only the key's waiting rows, not every claimable one ahead of it (which made a
    // hot key's batch quadratic).
    `CREATE INDEX IF NOT EXISTS ${n.keyIndex} ON ${n.table} (key, available_at, seq) WHERE available_at IS NOT NULL AND key IS NOT NULL`,
    // Retention cleanup and stats of settled rows.
    `CREATE INDEX IF NOT EXISTS ${n.settledIndex} ON ${n.table} (status, settled_at) WHERE available_at IS NULL`,
    // Rows of one claim token: reading a claim back and settling it.
    `CREATE INDEX IF NOT EXISTS ${n.lockedIndex} ON ${n.table} (locked_by) WHERE locked_by IS NOT NULL`,
    // Unsettled messages scheduled with deliverAt: stats' oldest-due age (empty without deliverAt).
    `CREATE INDEX IF NOT EXISTS ${n.scheduledIndex} ON ${n.table} (deliver_at) WHERE available_at IS NOT NULL AND deliver_at IS NOT NULL`,
  ];
}

/** Values bound per inserted row: id, topic, key, payload, headers, deliver_at, enqueue time, deliver_at, created_at. */
export const INSERT_COLUMNS = 9;

/**
 * A multi-row insert for `count` rows. A message without deliverAt is due at the
 * enqueue time or the database's, whichever is earlier: a writer whose clock runs ahead
 * must not hold its messages back on the database's clock.
 */
export function insertSql(n: LibsqlNames, count: number): string {
  const row = `(?, ?, ?, ?, ?, 'pending', 0, COALESCE(?, MIN(?, ${DB_NOW})), ?, ?)`;
  return `INSERT INTO ${n.table} (id, topic, key, payload, headers, status, attempts, available_at, deliver_at, created_at) VALUES ${
    Array(count).fill(row).join(", ")
  }`;
}

/**
 * Leases claimable rows: due (pending and available, or processing with an expired
 * lease) and not behind an earlier unsettled row of the same key that is not itself
 * claimable. Taking them in seq order means a batch holds a prefix of each key's run.
 * Uses claimIndex for the scan and keyIndex for the barrier.
 * Params, in the Postgres claim's order: ?1 now (NULL: the database's clock), ?2 limit,
 * ?3 token, ?4 lease in ms.
 *
 * No RETURNING: the embedded driver leaves a RETURNING statement open inside a batch
 * ("cannot commit transaction - SQL statements in progress"), so the claimed rows are
 * read back by token (claimedSql) in the same write batch, which is just as atomic.
 */
function claimSql(n: LibsqlNames): string {
  return `UPDATE ${n.table}
SET status = 'processing', locked_by = ?3, available_at = COALESCE(?1, ${DB_NOW}) + ?4, attempts = attempts + 1
WHERE seq IN (
  SELECT c.seq FROM ${n.table} AS c
  WHERE c.available_at <= COALESCE(?1, ${DB_NOW})
    AND (c.key IS NULL OR NOT EXISTS (
      SELECT 1 FROM ${n.table} AS b
      WHERE b.key = c.key AND b.seq < c.seq AND b.available_at > COALESCE(?1, ${DB_NOW})
    ))
  ORDER BY c.seq
  LIMIT ?2
)`;
}

/**
 * Reads back the rows leased to one claim token (lockedIndex) as one JSON text, a row
 * per array in seq order: `[seq, id, topic, key, headers, attempts, created_at, text,
 * hex]`, where a BLOB payload (which JSON cannot hold) is in `hex` and `text` is NULL,
 * and any other value is text (a number written into the column by hand reaches the
 * publisher as its JSON text, never as a number).
 * Over HTTP the client would decode every value of every row into an object and give
 * each row two properties per column, the largest CPU cost of a claim on the edge; one
 * text value is parsed natively. Param: ?1 token.
 */
function claimedSql(n: LibsqlNames): string {
  return `SELECT json_group_array(json_array(seq, id, topic, key, headers, attempts, created_at,
  CASE typeof(payload) WHEN 'blob' THEN NULL ELSE CAST(payload AS TEXT) END, CASE typeof(payload) WHEN 'blob' THEN hex(payload) END)) AS claimed
FROM (SELECT * FROM ${n.table} WHERE locked_by = ?1 ORDER BY seq)`;
}

/**
 * Settlement statements; `?` lists are JSON arrays expanded by json_each. ?1 token,
 * ?2 the list, ?3 now (NULL: the database's clock); a retry's list holds delays in ms
 * from now; ?4 in `dead`: keyed dead messages block their key.
 */
const settleSql = {
  deletePublished: (n: LibsqlNames) =>
    `DELETE FROM ${n.table} WHERE locked_by = ?1 AND seq IN (SELECT value FROM json_each(?2))`,
  keepPublished: (n: LibsqlNames) =>
    `UPDATE ${n.table} SET status = 'published', available_at = NULL, locked_by = NULL, settled_at = COALESCE(?3, ${DB_NOW})
WHERE locked_by = ?1 AND seq IN (SELECT value FROM json_each(?2))`,
  retry: (n: LibsqlNames) =>
    `UPDATE ${n.table} SET status = 'pending', available_at = COALESCE(?3, ${DB_NOW}) + j.delay, last_error = j.error, locked_by = NULL
FROM (SELECT json_extract(value, '$[0]') AS seq, json_extract(value, '$[1]') AS delay, json_extract(value, '$[2]') AS error FROM json_each(?2)) AS j
WHERE ${n.table}.seq = j.seq AND ${n.table}.locked_by = ?1`,
  dead: (n: LibsqlNames) =>
    `UPDATE ${n.table} SET status = 'dead', last_error = j.error, locked_by = NULL, settled_at = COALESCE(?3, ${DB_NOW}),
  available_at = CASE WHEN ?4 AND ${n.table}.key IS NOT NULL THEN ${BLOCKED} END
FROM (SELECT json_extract(value, '$[0]') AS seq, json_extract(value, '$[1]') AS error FROM json_each(?2)) AS j
WHERE ${n.table}.seq = j.seq AND ${n.table}.locked_by = ?1`,
  release: (n: LibsqlNames) =>
    `UPDATE ${n.table} SET status = 'pending', available_at = COALESCE(?3, ${DB_NOW}), attempts = MAX(attempts - 1, 0), locked_by = NULL
WHERE locked_by = ?1 AND seq IN (SELECT value FROM json_each(?2))`,
};

/**
 * Deletes up to ?3 expired rows: published rows settled before ?1, then dead rows
 * settled before ?2 (NULL: keep them), through settledIndex. One statement, so one
 * request over HTTP rather than one per status.
 */
function cleanupSql(n: LibsqlNames): string {
  const expired = (status: string, before: string) =>
    `SELECT seq FROM (SELECT seq FROM ${n.table} WHERE available_at IS NULL AND status = '${status}' AND settled_at < ${before} LIMIT ?3)`;
  return `DELETE FROM ${n.table} WHERE seq IN (${expired("published", "?1")} UNION ALL ${
    expired("dead", "?2")
  } LIMIT ?3)`;
}

/**
 * Counts per topic and status (a scan of the table: stats are not a hot path); the
 * longest-waiting due row; the keys dead rows block.
 */
function statsSql(n: LibsqlNames): string[] {
  return [
    `SELECT topic, status, count(*) AS n FROM ${n.table} GROUP BY topic, status`,
    // When the longest-waiting due message became due: the oldest unscheduled row by
    // seq (claimIndex), or the earliest scheduled row whose deliverAt has passed
    // (scheduledIndex). Messages scheduled for later do not count as waiting.
    `SELECT MIN(since) AS since FROM (
  SELECT since FROM (SELECT created_at AS since FROM ${n.table} WHERE available_at IS NOT NULL AND deliver_at IS NULL AND status <> 'dead' ORDER BY seq LIMIT 1)
  UNION ALL
  SELECT MIN(deliver_at) AS since FROM ${n.table} WHERE available_at IS NOT NULL AND deliver_at IS NOT NULL AND deliver_at <= ?1 AND status <> 'dead'
)`,
    `SELECT count(DISTINCT key) AS n FROM ${n.table} WHERE available_at = ${BLOCKED} AND key IS NOT NULL`,
  ];
}

/**
 * Moves settled rows (and dead rows that block their key) back to pending. ?1 now
 * (NULL: the database's clock), ?2 status, ?3 topic or NULL, ?4 JSON id list or NULL.
 */
function requeueSql(n: LibsqlNames): string {
  return `UPDATE ${n.table} SET status = 'pending', available_at = COALESCE(?1, ${DB_NOW}), attempts = 0, locked_by = NULL, settled_at = NULL
WHERE (available_at IS NULL OR available_at = ${BLOCKED}) AND status = ?2
  AND (?3 IS NULL OR topic = ?3)
  AND (?4 IS NULL OR id IN (SELECT value FROM json_each(?4)))`;
}

/** Rows in seq order after ?5, filtered by ?1 status, ?2 topic, ?3 key (NULL: any); at most ?4. */
function inspectSql(n: LibsqlNames): string {
  return `SELECT seq, id, topic, key, status, attempts, available_at, locked_by, last_error, created_at, settled_at,
  deliver_at, payload, headers
FROM ${n.table}
WHERE seq > ?5 AND (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR topic = ?2) AND (?3 IS NULL OR key = ?3)
ORDER BY seq LIMIT ?4`;
}

/**
 * Deletes up to ?5 settled rows of ?1 status (a dead row that blocks its key too),
 * settled before ?2 (NULL: any), of ?3 topic and ?4 ids (JSON list; NULL: any).
 */
function purgeSql(n: LibsqlNames): string {
  return `DELETE FROM ${n.table} WHERE seq IN (
  SELECT seq FROM ${n.table}
  WHERE status = ?1 AND (available_at IS NULL OR available_at = ${BLOCKED})
    AND (?2 IS NULL OR settled_at < ?2) AND (?3 IS NULL OR topic = ?3)
    AND (?4 IS NULL OR id IN (SELECT value FROM json_each(?4)))
  ORDER BY seq LIMIT ?5
)`;
}

/** The relay's "now" when its clock decides, else NULL: the database's clock. */
function relayNow(request: { now: number; clock?: ClockSource }): number | null {
  return request.clock === "relay" ? request.now : null;
}

/** A statement with its arguments, built together (a libSQL `InStatement`). */
export interface LibsqlQuery {
  readonly sql: string;
  readonly args: InValue[];
}

/** The relay's statements on one table: each builder returns its text with its arguments. */
export interface RelayQueries {
  /** The claim, then the read-back of the claimed rows: one write batch. */
  claim(request: ClaimRequest): [LibsqlQuery, LibsqlQuery];
  /** One statement per outcome present in the batch (none for an empty one): one write batch. */
  settle(request: SettleRequest): LibsqlQuery[];
  /** Deletes up to `limit` published and dead rows settled before their times (null: keep). */
  cleanup(publishedBefore: number | null, deadBefore: number | null, limit: number): LibsqlQuery;
  /** Counts per status, the oldest due row, the blocked keys: one read batch. */
  stats(now: number): LibsqlQuery[];
  /** Moves matching settled rows back to pending. */
  requeue(request: RequeueRequest): LibsqlQuery;
  /** Rows in seq order, filtered and paged. */
  inspect(options: InspectOptions): LibsqlQuery;
  /** Deletes up to `limit` matching settled rows. */
  purge(request: PurgeRequest): LibsqlQuery;
}

/**
 * Builds the relay's statements for a table. The texts are made once; each call pairs
 * them with their arguments, in the order their placeholders number them.
 */
export function relayQueries(n: LibsqlNames): RelayQueries {
  const text = {
    claim: claimSql(n),
    claimed: claimedSql(n),
    cleanup: cleanupSql(n),
    stats: statsSql(n),
    requeue: requeueSql(n),
    inspect: inspectSql(n),
    purge: purgeSql(n),
    deletePublished: settleSql.deletePublished(n),
    keepPublished: settleSql.keepPublished(n),
    retry: settleSql.retry(n),
    dead: settleSql.dead(n),
    release: settleSql.release(n),
  };
  return {
    claim: (r) => [
      { sql: text.claim, args: [relayNow(r), r.limit, r.token, r.lockedUntil - r.now] },
      { sql: text.claimed, args: [r.token] },
    ],
    settle(r) {
      const { published, retry, dead, release } = groupSettlements(r);
      const t = r.token;
      const now = relayNow(r);
      const statements: LibsqlQuery[] = [];
      if (published.length) {
        statements.push(
          r.deletePublished
            ? { sql: text.deletePublished, args: [t, JSON.stringify(published)] }
            : { sql: text.keepPublished, args: [t, JSON.stringify(published), now] },
        );
      }
      if (retry.length) statements.push({ sql: text.retry, args: [t, JSON.stringify(retry), now] });
      if (dead.length) {
        statements.push({ sql: text.dead, args: [t, JSON.stringify(dead), now, r.onDead === "block" ? 1 : 0] });
      }
      if (release.length) statements.push({ sql: text.release, args: [t, JSON.stringify(release), now] });
      return statements;
    },
    cleanup: (publishedBefore, deadBefore, limit) => ({
      sql: text.cleanup,
      args: [publishedBefore, deadBefore, limit],
    }),
    stats: (
      now,
    ) => [{ sql: text.stats[0]!, args: [] }, { sql: text.stats[1]!, args: [now] }, { sql: text.stats[2]!, args: [] }],
    requeue: (r) => ({
      sql: text.requeue,
      args: [relayNow(r), r.status, r.topic ?? null, r.ids ? JSON.stringify(r.ids) : null],
    }),
    inspect: (o) => ({
      sql: text.inspect,
      args: [o.status ?? null, o.topic ?? null, o.key ?? null, o.limit ?? 1_000_000, o.after ?? 0],
    }),
    purge: (r) => ({
      sql: text.purge,
      args: [r.status, r.before, r.topic ?? null, r.ids ? JSON.stringify(r.ids) : null, r.limit],
    }),
  };
}
