/**
 * The SQL the libSQL adapter runs. One table; `available_at` is the time a row may be
 * claimed next (the lease end while it is processing) and is NULL once the row is
 * settled (published or dead), so two partial indexes over the unsettled rows serve
 * every hot query and stay small however many settled rows retention keeps. Each row
 * is for one `destination` (`''`: the one publisher); both indexes lead with it, as a
 * relay claims one destination at a time.
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
import { inspectValues } from "../shared/row.ts";
import { BLOCKED, groupSettlements } from "../shared/settle.ts";

/** The database's clock in epoch ms; SQLite fixes 'now' for the whole statement. */
export const DB_NOW = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

/**
 * The schema version this code creates and runs on. 1: the table of 0.1 (no
 * destination); 2: a `destination` column and destination-leading claim and key
 * indexes; 3: fan-out, the id unique per destination rather than on its own. Recorded
 * in the one row of `<table>_schema`.
 */
export const SCHEMA_VERSION = 3;

/** Quoted names of the table, its indexes and its version table; `name` unquoted. */
export interface LibsqlNames {
  /** The table name as given, unquoted (for sqlite_master and PRAGMA lookups). */
  readonly name: string;
  readonly table: string;
  readonly claimIndex: string;
  readonly keyIndex: string;
  readonly settledIndex: string;
  readonly lockedIndex: string;
  readonly scheduledIndex: string;
  /** The id's unique index up to version 2. */
  readonly idIndex: string;
  /** The unique index on (id, destination) of version 3, in place of {@link idIndex}. */
  readonly idDestinationIndex: string;
  /** The one-row table holding the schema version. */
  readonly versionTable: string;
  /** Version 1's claim and key indexes, which the upgrade to version 2 drops. */
  readonly oldClaimIndex: string;
  readonly oldKeyIndex: string;
}

/** Builds the quoted names for a checked table name. */
export function libsqlNames(table: string): LibsqlNames {
  return {
    name: table,
    table: `"${table}"`,
    claimIndex: `"${table}_claim_dest_idx"`,
    keyIndex: `"${table}_key_dest_idx"`,
    settledIndex: `"${table}_settled_idx"`,
    lockedIndex: `"${table}_locked_idx"`,
    scheduledIndex: `"${table}_scheduled_idx"`,
    idIndex: `"${table}_id_unique"`,
    idDestinationIndex: `"${table}_id_dest_unique"`,
    versionTable: `"${table}_schema"`,
    oldClaimIndex: `"${table}_claim_idx"`,
    oldKeyIndex: `"${table}_key_idx"`,
  };
}

/** The statements of a layout, each idempotent (`IF NOT EXISTS`, `IF EXISTS`). */
const ddl = {
  // `destination` last: ALTER TABLE appends it there on an upgraded table, so a fresh
  // table and an upgraded one have the same columns in the same order.
  table: (n: LibsqlNames) =>
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
  settled_at INTEGER,
  destination TEXT NOT NULL DEFAULT ''
)`,
  // The upgrade from version 1: instant in SQLite (only the schema text changes; old
  // rows read the default). SQLite has no ADD COLUMN IF NOT EXISTS: setup() checks
  // PRAGMA table_info first.
  addDestination: (n: LibsqlNames) => `ALTER TABLE ${n.table} ADD COLUMN destination TEXT NOT NULL DEFAULT ''`,
  // Message ids are the dedup ids end to end. A named index rather than a column
  // UNIQUE, so drizzle-kit can declare exactly the same thing, and version 3 can swap it.
  idUnique: (n: LibsqlNames) => `CREATE UNIQUE INDEX IF NOT EXISTS ${n.idIndex} ON ${n.table} (id)`,
  // Fan-out: a row per destination with the message's id. An id already in the table
  // for another destination is refused by the insert itself (insertSql, checked).
  idDestinationUnique: (n: LibsqlNames) =>
    `CREATE UNIQUE INDEX IF NOT EXISTS ${n.idDestinationIndex} ON ${n.table} (id, destination)`,
  // Claim scan: one destination's unsettled rows in seq order; due time and key covered.
  claim: (n: LibsqlNames) =>
    `CREATE INDEX IF NOT EXISTS ${n.claimIndex} ON ${n.table} (destination, seq, available_at, key) WHERE available_at IS NOT NULL`,
  // Per-key barrier: does the key have an unsettled row for the destination that is
  // not claimable yet (available_at > now) before this one? Ordered by available_at,
  // the probe visits only the key's waiting rows, not every claimable one ahead of it
  // (which made a hot key's batch quadratic).
  key: (n: LibsqlNames) =>
    `CREATE INDEX IF NOT EXISTS ${n.keyIndex} ON ${n.table} (destination, key, available_at, seq) WHERE available_at IS NOT NULL AND key IS NOT NULL`,
  // Retention cleanup and stats of settled rows.
  settled: (n: LibsqlNames) =>
    `CREATE INDEX IF NOT EXISTS ${n.settledIndex} ON ${n.table} (status, settled_at) WHERE available_at IS NULL`,
  // Rows of one claim token: reading a claim back and settling it.
  locked: (n: LibsqlNames) =>
    `CREATE INDEX IF NOT EXISTS ${n.lockedIndex} ON ${n.table} (locked_by) WHERE locked_by IS NOT NULL`,
  // Unsettled messages scheduled with deliverAt: stats' oldest-due age (empty without deliverAt).
  scheduled: (n: LibsqlNames) =>
    `CREATE INDEX IF NOT EXISTS ${n.scheduledIndex} ON ${n.table} (deliver_at) WHERE available_at IS NOT NULL AND deliver_at IS NOT NULL`,
  versionTable: (n: LibsqlNames) =>
    `CREATE TABLE IF NOT EXISTS ${n.versionTable} (version INTEGER NOT NULL, upgraded_at INTEGER NOT NULL)`,
};

/** The layout's version: 2, or 3 with fan-out. */
function layoutVersion(fanOut: boolean): number {
  return fanOut ? 3 : 2;
}

/**
 * The DDL of a fresh table at schema version 2 (3 with `fanOut`), each statement
 * idempotent: the table, its indexes (and the drop of version 1's), and the version
 * table with its one row. For hand-written migrations of a new database; an existing
 * table is upgraded by setup() ({@link upgradeStatements}).
 */
export function createStatements(n: LibsqlNames, options: { fanOut?: boolean } = {}): string[] {
  const fanOut = options.fanOut === true;
  return [
    ddl.table(n),
    fanOut ? ddl.idDestinationUnique(n) : ddl.idUnique(n),
    ddl.claim(n),
    ddl.key(n),
    ddl.settled(n),
    ddl.locked(n),
    ddl.scheduled(n),
    // Version 1's indexes, replaced by the destination ones: also when a version 1
    // process's setup() put them back during a rolling upgrade, as every insert would
    // keep paying for them.
    `DROP INDEX IF EXISTS ${n.oldClaimIndex}`,
    `DROP INDEX IF EXISTS ${n.oldKeyIndex}`,
    ddl.versionTable(n),
    `INSERT INTO ${n.versionTable} (version, upgraded_at) SELECT ${
      layoutVersion(fanOut)
    }, ${DB_NOW} WHERE NOT EXISTS (SELECT 1 FROM ${n.versionTable})`,
  ];
}

/** What setup() finds before it writes (see {@link layoutQueries}). */
export interface LayoutState {
  /** Whether the outbox table exists. */
  readonly table: boolean;
  /** Whether it has the destination column (version 2 and later). */
  readonly destination: boolean;
  /** Names (unquoted) of its indexes. */
  readonly indexes: ReadonlySet<string>;
  /** The version in the version table, or null when it has none (or there is no version table). */
  readonly recorded: number | null;
}

/**
 * The statements that read a table's layout, one read batch: its indexes, its
 * columns, and whether the version table exists (`{ name, type }` rows of
 * sqlite_master). The version itself is read by {@link versionSql} once the version
 * table is known to exist: a statement naming a missing table fails.
 */
export function layoutQueries(n: LibsqlNames): [LibsqlQuery, LibsqlQuery] {
  return [
    {
      sql:
        "SELECT name, type FROM sqlite_master WHERE (tbl_name = ?1 AND type IN ('table', 'index')) OR (name = ?2 AND type = 'table')",
      args: [n.name, `${n.name}_schema`],
    },
    { sql: "SELECT name FROM pragma_table_info(?1)", args: [n.name] },
  ];
}

/** Reads the recorded version (NULL for an empty version table). */
export function versionSql(n: LibsqlNames): string {
  return `SELECT max(version) AS version FROM ${n.versionTable}`;
}

/**
 * A table's schema version: the recorded one, or what its layout shows if that is
 * more (a table made or migrated by hand or by drizzle-kit records nothing, or keeps
 * an older record): 3 with the (id, destination) unique index, 2 with the destination
 * column, 1 without; 0 when there is no table. Never less than the record, so a
 * version newer than this code is still seen.
 */
export function currentVersion(n: LibsqlNames, state: LayoutState): number {
  const layout = !state.table ? 0 : state.indexes.has(unquote(n.idDestinationIndex)) ? 3 : state.destination ? 2 : 1;
  return Math.max(state.recorded ?? 0, layout);
}

function unquote(name: string): string {
  return name.slice(1, -1);
}

/**
 * The write batch that brings a table from `state` to `target` (2 or 3), or `[]` when
 * it is there already with every index in place. Runs in one write transaction;
 * every step is idempotent but ADD COLUMN, which runs only when the read found the
 * column missing. The batch first checks that the recorded version is still the one
 * read: when another setup() got there in between, the check fails the batch, nothing
 * of it is written, and setup() reads again.
 */
export function upgradeStatements(n: LibsqlNames, state: LayoutState, target: number): LibsqlQuery[] {
  const ids = target >= 3 ? [n.idDestinationIndex] : [n.idIndex];
  const wanted = [n.claimIndex, n.keyIndex, n.settledIndex, n.lockedIndex, n.scheduledIndex, ...ids].map(unquote);
  const unwanted = [n.oldClaimIndex, n.oldKeyIndex, ...(target >= 3 ? [n.idIndex] : [])].map(unquote);
  const done = state.table && state.destination && state.recorded === target &&
    wanted.every((i) => state.indexes.has(i)) && !unwanted.some((i) => state.indexes.has(i));
  if (done) return [];
  const q = (sql: string): LibsqlQuery => ({ sql, args: [] });
  return [
    q(ddl.versionTable(n)),
    {
      // abs() of the smallest integer is SQLite's documented "integer overflow" error:
      // the one way a plain statement can fail on a condition.
      sql: `SELECT CASE WHEN (SELECT max(version) FROM ${n.versionTable}) IS NOT ?1 THEN abs(-9223372036854775808) END`,
      args: [state.recorded],
    },
    q(state.table && !state.destination ? ddl.addDestination(n) : ddl.table(n)),
    // Version 1's indexes lead with seq and key: they cannot serve a claim of one
    // destination. A relay of version 1 still running claims (slower) without them.
    q(`DROP INDEX IF EXISTS ${n.oldClaimIndex}`),
    q(`DROP INDEX IF EXISTS ${n.oldKeyIndex}`),
    ...[ddl.claim, ddl.key, ddl.settled, ddl.locked, ddl.scheduled].map((s) => q(s(n))),
    ...(target >= 3
      ? [q(ddl.idDestinationUnique(n)), q(`DROP INDEX IF EXISTS ${n.idIndex}`)]
      // Never the id's own unique index on a table of version 3: that would undo fan-out.
      : [q(ddl.idUnique(n))]),
    ...(state.recorded === target ? [] : [
      q(`DELETE FROM ${n.versionTable}`),
      { sql: `INSERT INTO ${n.versionTable} (version, upgraded_at) VALUES (?1, ${DB_NOW})`, args: [target] },
    ]),
  ];
}

/**
 * Values bound per inserted row of the one publisher: id, topic, key, payload,
 * headers, deliver_at, enqueue time, deliver_at, created_at (destination is the
 * column's default). A checked row binds its id once more, first, and its destination
 * after headers.
 */
export const INSERT_COLUMNS = 9;

/**
 * A multi-row insert for `count` rows. A message without deliverAt is due at the
 * enqueue time or the database's, whichever is earlier: a writer whose clock runs ahead
 * must not hold its messages back on the database's clock.
 *
 * Rows of the one publisher (destination `''`) leave `destination` to its default: the
 * hot path binds and parses no more than before destinations. `checked` (rows of named
 * destinations, fan-out) binds it, and checks the id: once fan-out is on, the table's
 * unique index is on (id, destination) and does not see the same id for another
 * destination, which is still a duplicate message. A checked row's id becomes NULL,
 * failing NOT NULL on `id`, when a row with that id is already in the table (a seek in
 * the id's unique index, whichever version). SQLite evaluates an INSERT's VALUES that
 * read the table it writes before it inserts any row (its Halloween guard), so the
 * rows of one message in one statement do not see each other; rows of one message
 * must not be split between statements (insertStatements keeps them together).
 * Unchecked rows pay nothing for this; on a fan-out table their id is unique among
 * the one publisher's rows only (an outbox with `publishers` and one without sharing
 * a table would have to share an id for that to matter).
 */
export function insertSql(n: LibsqlNames, count: number, checked = false): string {
  const due = `COALESCE(?, MIN(?, ${DB_NOW}))`;
  const [columns, row] = checked
    ? [
      "id, topic, key, payload, headers, destination",
      `(CASE WHEN EXISTS (SELECT 1 FROM ${n.table} WHERE id = ?) THEN NULL ELSE ? END, ?, ?, ?, ?, ?, 'pending', 0, ${due}, ?, ?)`,
    ]
    : ["id, topic, key, payload, headers", `(?, ?, ?, ?, ?, 'pending', 0, ${due}, ?, ?)`];
  return `INSERT INTO ${n.table} (${columns}, status, attempts, available_at, deliver_at, created_at) VALUES ${
    Array(count).fill(row).join(", ")
  }`;
}

/**
 * Leases one destination's claimable rows: due (pending and available, or processing
 * with an expired lease) and not behind an earlier unsettled row of the same key and
 * destination that is not itself claimable. Taking them in seq order means a batch
 * holds a prefix of each key's run. Uses claimIndex for the scan (a range of its
 * leading destination, in seq order) and keyIndex for the barrier.
 * Params, in the Postgres claim's order: ?1 now (NULL: the database's clock), ?2 limit,
 * ?3 token, ?4 lease in ms, ?5 destination.
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
  WHERE c.destination = ?5 AND c.available_at <= COALESCE(?1, ${DB_NOW})
    AND (c.key IS NULL OR NOT EXISTS (
      SELECT 1 FROM ${n.table} AS b
      WHERE b.destination = c.destination AND b.key = c.key AND b.seq < c.seq AND b.available_at > COALESCE(?1, ${DB_NOW})
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
 * Counts per destination, topic and status (a scan of the table: stats are not a hot
 * path); the longest-waiting due row; the keys dead rows block.
 */
function statsSql(n: LibsqlNames): string[] {
  return [
    `SELECT destination, topic, status, count(*) AS n FROM ${n.table} GROUP BY destination, topic, status`,
    // When the longest-waiting due message became due: the oldest unscheduled row by
    // seq of each destination (claimIndex, whose order is seq within a destination;
    // the recursive CTE steps from one destination to the next through the index, a
    // seek each, rather than reading every unsettled row), or the earliest scheduled
    // row whose deliverAt has passed (scheduledIndex). Messages scheduled for later do
    // not count as waiting.
    `WITH RECURSIVE d(destination) AS (
  SELECT min(destination) FROM ${n.table} WHERE available_at IS NOT NULL
  UNION ALL
  SELECT (SELECT min(destination) FROM ${n.table} WHERE available_at IS NOT NULL AND destination > d.destination)
  FROM d WHERE d.destination IS NOT NULL
)
SELECT MIN(since) AS since FROM (
  SELECT (SELECT created_at FROM ${n.table}
    WHERE destination = d.destination AND available_at IS NOT NULL AND deliver_at IS NULL AND status <> 'dead'
    ORDER BY seq LIMIT 1) AS since
  FROM d WHERE d.destination IS NOT NULL
  UNION ALL
  SELECT MIN(deliver_at) AS since FROM ${n.table} WHERE available_at IS NOT NULL AND deliver_at IS NOT NULL AND deliver_at <= ?1 AND status <> 'dead'
)`,
    // A key blocked for two destinations holds back two runs: counted per destination.
    `SELECT count(*) AS n FROM (SELECT DISTINCT destination, key FROM ${n.table} WHERE available_at = ${BLOCKED} AND key IS NOT NULL)`,
  ];
}

/**
 * Moves settled rows (and dead rows that block their key) back to pending. ?1 now
 * (NULL: the database's clock), ?2 status, ?3 topic, ?4 JSON id list, ?5 destination
 * (NULL: any).
 */
function requeueSql(n: LibsqlNames): string {
  return `UPDATE ${n.table} SET status = 'pending', available_at = COALESCE(?1, ${DB_NOW}), attempts = 0, locked_by = NULL, settled_at = NULL
WHERE (available_at IS NULL OR available_at = ${BLOCKED}) AND status = ?2
  AND (?3 IS NULL OR topic = ?3)
  AND (?4 IS NULL OR id IN (SELECT value FROM json_each(?4)))
  AND (?5 IS NULL OR destination = ?5)`;
}

/**
 * Rows in seq order after ?5, filtered by ?1 status, ?2 topic, ?3 key, ?6 destination
 * (NULL: any); at most ?4.
 */
function inspectSql(n: LibsqlNames): string {
  return `SELECT seq, id, topic, key, status, attempts, available_at, locked_by, last_error, created_at, settled_at,
  deliver_at, payload, headers, destination
FROM ${n.table}
WHERE seq > ?5 AND (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR topic = ?2) AND (?3 IS NULL OR key = ?3)
  AND (?6 IS NULL OR destination = ?6)
ORDER BY seq LIMIT ?4`;
}

/**
 * Deletes up to ?5 settled rows of ?1 status (a dead row that blocks its key too),
 * settled before ?2 (NULL: any), of ?3 topic, ?4 ids (JSON list) and ?6 destination
 * (NULL: any).
 */
function purgeSql(n: LibsqlNames): string {
  return `DELETE FROM ${n.table} WHERE seq IN (
  SELECT seq FROM ${n.table}
  WHERE status = ?1 AND (available_at IS NULL OR available_at = ${BLOCKED})
    AND (?2 IS NULL OR settled_at < ?2) AND (?3 IS NULL OR topic = ?3)
    AND (?4 IS NULL OR id IN (SELECT value FROM json_each(?4)))
    AND (?6 IS NULL OR destination = ?6)
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
  /** The claim of the request's destination, then the read-back of the claimed rows: one write batch. */
  claim(request: ClaimRequest): [LibsqlQuery, LibsqlQuery];
  /** One statement per outcome present in the batch (none for an empty one): one write batch. */
  settle(request: SettleRequest): LibsqlQuery[];
  /** Deletes up to `limit` published and dead rows settled before their times (null: keep). */
  cleanup(publishedBefore: number | null, deadBefore: number | null, limit: number): LibsqlQuery;
  /** Counts per destination, topic and status, the oldest due row, the blocked keys: one read batch. */
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
      { sql: text.claim, args: [relayNow(r), r.limit, r.token, r.lockedUntil - r.now, r.destination ?? ""] },
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
      args: [relayNow(r), r.status, r.topic ?? null, r.ids ? JSON.stringify(r.ids) : null, r.destination ?? null],
    }),
    inspect: (o) => ({ sql: text.inspect, args: inspectValues(o) }),
    purge: (r) => ({
      sql: text.purge,
      args: [
        r.status,
        r.before,
        r.topic ?? null,
        r.ids ? JSON.stringify(r.ids) : null,
        r.limit,
        r.destination ?? null,
      ],
    }),
  };
}
