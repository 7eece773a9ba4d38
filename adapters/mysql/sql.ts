/**
 * The SQL the MySQL / MariaDB adapter runs. Same model as the Postgres and libSQL
 * adapters: `available_at` is when a row may be claimed next (its lease end while it is
 * processing) and NULL once it is settled; times are epoch milliseconds (BIGINT). Relay
 * clocks are not trusted: a NULL "now" means the database's clock ({@link DB_NOW}).
 *
 * MySQL has no partial indexes. The generated column `settled` (`available_at IS
 * NULL`, stored) stands in for Postgres' `WHERE available_at IS NOT NULL`: the claim
 * index leads with `(destination, settled)`, so a claim seeks straight to the unsettled
 * rows instead of walking the dead and published rows that retention keeps at the head
 * of the table.
 *
 * `id` and `key` are VARBINARY: compared byte for byte, with no case folding and no
 * PAD SPACE (under a `_bin` collation of MariaDB, `'a' = 'a '`, which would make two ids
 * one). Values are bound as parameters (mysql2 escapes them); only checked identifiers
 * are spliced into the text.
 */

import type {
  ClaimRequest,
  InspectOptions,
  NewOutboxRow,
  PurgeRequest,
  RequeueRequest,
  SettleRequest,
} from "../../src/types.ts";
import { BLOCKED, groupSettlements } from "../shared/settle.ts";

/**
 * The database's clock in epoch ms, fixed for a statement. UTC_TIMESTAMP and
 * TIMESTAMPDIFF ignore the session's time_zone, where UNIX_TIMESTAMP(NOW(3)) would
 * convert through it (and be off by an hour in a DST fold).
 */
export const DB_NOW = "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000)";

/**
 * The newest schema version this code knows. A MySQL table starts at version 2 (there
 * was no MySQL adapter at version 1): a `destination` column and destination-leading
 * claim and key indexes, `id` unique on its own. Version 3 (`setup({ fanOut: true })`):
 * the unique index on `id` becomes one on `(id, destination)`.
 */
export const SCHEMA_VERSION = 3;

/** The version `setup()` creates without `fanOut`. */
export const DEFAULT_SCHEMA_VERSION = 2;

/** Longest `key` in UTF-8 bytes: the claim and key indexes must fit InnoDB's 3,072-byte limit. */
export const MAX_KEY_BYTES = 2048;

/** Quoted names of the table, its indexes and its version table. */
export interface MysqlNames {
  /** The table name as given, unquoted (for information_schema). */
  readonly name: string;
  readonly table: string;
  /** Unquoted index names (information_schema, duplicate-key messages). */
  readonly idIndex: string;
  readonly idDestinationIndex: string;
  readonly claimIndex: string;
  /** Waiting rows (unsettled, not due) per destination: the per-key barrier. */
  readonly waitIndex: string;
  readonly settledIndex: string;
  readonly scheduledIndex: string;
  /** The one-row version table, unquoted and quoted. */
  readonly versionName: string;
  readonly versionTable: string;
  /** The GET_LOCK name that serializes `setup()` (at most 64 characters). */
  readonly setupLock: string;
}

/** FNV-1a of a string, as 8 hex digits. */
function hash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, "0");
}

/**
 * `<table>_<suffix>`, or, past MySQL's 64-character identifier limit, a prefix of the
 * table name, a hash of the whole name and the suffix. Table names are checked ASCII
 * identifiers (at most 63), so characters are bytes.
 */
export function objectName(table: string, suffix: string): string {
  const name = `${table}_${suffix}`;
  if (name.length <= 64) return name;
  return `${table.slice(0, 64 - suffix.length - 10)}_${hash(table)}_${suffix}`;
}

/** Builds names for a checked table name. */
export function mysqlNames(table: string): MysqlNames {
  const versionName = objectName(table, "schema");
  return {
    name: table,
    table: `\`${table}\``,
    idIndex: objectName(table, "id_unique"),
    idDestinationIndex: objectName(table, "id_dest_unique"),
    claimIndex: objectName(table, "claim_dest_idx"),
    waitIndex: objectName(table, "wait_dest_idx"),
    settledIndex: objectName(table, "settled_idx"),
    scheduledIndex: objectName(table, "scheduled_idx"),
    versionName,
    versionTable: `\`${versionName}\``,
    setupLock: `x_outbox_setup:${table.slice(0, 40)}:${hash(table)}`,
  };
}

/** Options of {@link createStatements}. */
export interface DdlOptions {
  /** Schema version 3: one message id may have a row per destination. */
  readonly fanOut?: boolean;
}

/**
 * The table's keys but the primary one, as `[name, definition]`: what CREATE TABLE
 * declares, and what setup() adds back to an existing table when one is missing.
 */
export function tableKeys(n: MysqlNames, options: DdlOptions = {}): [string, string][] {
  return [
    options.fanOut === true
      // Fan-out: a row per destination under one id; also serves lookups by id.
      ? [n.idDestinationIndex, `UNIQUE KEY \`${n.idDestinationIndex}\` (id, destination)`]
      : [n.idIndex, `UNIQUE KEY \`${n.idIndex}\` (id)`],
    [n.claimIndex, `KEY \`${n.claimIndex}\` (destination, settled, seq, available_at, \`key\`)`],
    [n.waitIndex, `KEY \`${n.waitIndex}\` (destination, settled, available_at, \`key\`, seq)`],
    [n.settledIndex, `KEY \`${n.settledIndex}\` (status, settled_at)`],
    [n.scheduledIndex, `KEY \`${n.scheduledIndex}\` (settled, deliver_at)`],
  ];
}

/** The names of a table's indexes. Params: the table name. */
export const INDEXES_SQL =
  "SELECT DISTINCT index_name AS name FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ?";

/**
 * The CREATE TABLE of a fresh table at schema version 2 (3 with `fanOut`), indexes
 * inline (MySQL 8 has no CREATE INDEX IF NOT EXISTS).
 */
export function createTableSql(n: MysqlNames, options: DdlOptions = {}): string {
  return `CREATE TABLE IF NOT EXISTS ${n.table} (
  seq BIGINT NOT NULL AUTO_INCREMENT,
  id VARBINARY(1024) NOT NULL,
  topic VARCHAR(255) NOT NULL,
  \`key\` VARBINARY(${MAX_KEY_BYTES}) NULL,
  payload LONGTEXT NULL,
  payload_bytes LONGBLOB NULL,
  headers LONGTEXT NULL,
  status VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT 'pending',
  attempts INT NOT NULL DEFAULT 0,
  available_at BIGINT NULL,
  deliver_at BIGINT NULL,
  locked_by VARCHAR(255) NULL,
  last_error LONGTEXT NULL,
  created_at BIGINT NOT NULL,
  settled_at BIGINT NULL,
  destination VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  settled TINYINT GENERATED ALWAYS AS (available_at IS NULL) STORED,
  PRIMARY KEY (seq),
  ${tableKeys(n, options).map(([, key]) => key).join(",\n  ")},
  CONSTRAINT \`${objectName(n.name, "status_check")}\` CHECK (status IN ('pending', 'processing', 'published', 'dead')),
  CONSTRAINT \`${objectName(n.name, "payload_check")}\` CHECK ((payload IS NULL) <> (payload_bytes IS NULL))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`;
}

/** The version table: one row (`one` = 1). */
export function versionTableSql(n: MysqlNames): string {
  return `CREATE TABLE IF NOT EXISTS ${n.versionTable} (
  one TINYINT NOT NULL DEFAULT 1 PRIMARY KEY,
  version INT NOT NULL,
  upgraded_at BIGINT NOT NULL,
  CONSTRAINT \`${objectName(n.name, "schema_one")}\` CHECK (one = 1)
) ENGINE=InnoDB`;
}

/**
 * Records `version` unless a later one is recorded (setup() never downgrades). The
 * assignments run left to right, so `upgraded_at` is decided before `version` changes.
 */
export function recordVersionSql(n: MysqlNames, version: number): string {
  return `INSERT INTO ${n.versionTable} (one, version, upgraded_at) VALUES (1, ${version}, ${DB_NOW})
ON DUPLICATE KEY UPDATE upgraded_at = IF(version < VALUES(version), VALUES(upgraded_at), upgraded_at),
  version = GREATEST(version, VALUES(version))`;
}

/**
 * The DDL of a fresh table (schema version 2, 3 with `fanOut`) and its version record,
 * for hand-written migrations. Each statement is idempotent.
 */
export function createStatements(n: MysqlNames, options: DdlOptions = {}): string[] {
  const version = options.fanOut === true ? SCHEMA_VERSION : DEFAULT_SCHEMA_VERSION;
  return [createTableSql(n, options), versionTableSql(n), recordVersionSql(n, version)];
}

/**
 * What setup() needs to know of the table: whether it and its version table exist,
 * and which of the id indexes it has. Params: table, version table, id index, id +
 * destination index.
 */
export const LAYOUT_SQL = `SELECT
  (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?) AS has_table,
  (SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = ?) AS has_version,
  (SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?) AS has_id,
  (SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?) AS has_id_dest`;

/** The recorded version (NULL for an empty version table). */
export function readVersionSql(n: MysqlNames): string {
  return `SELECT MAX(version) AS version FROM ${n.versionTable}`;
}

/**
 * A multi-row insert: one statement, so all of its rows or none (InnoDB rolls back a
 * failed statement, not the transaction). A message without deliverAt is due at its
 * enqueue time or the database's, whichever is earlier: a writer whose clock runs
 * ahead must not hold its messages back. `id` and `key` are bound as strings: the
 * server stores their utf8mb4 bytes (the connection's character set) in the VARBINARY
 * columns. A bytes payload is spliced in as a hex literal ({@link hexLiteral}).
 */
export function insertSql(n: MysqlNames, rows: readonly NewOutboxRow[]): SqlQuery {
  const tuples: string[] = new Array(rows.length);
  const values: unknown[] = [];
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    const json = typeof r.body === "string";
    tuples[i] = `(?, ?, ?, ${
      json ? "?, NULL" : `NULL, ${hexLiteral(r.body as Uint8Array)}`
    }, ?, COALESCE(?, LEAST(?, ${DB_NOW})), ?, ?, ?)`;
    values.push(r.id, r.topic, r.key);
    if (json) values.push(r.body);
    values.push(r.headers, r.deliverAt, r.availableAt, r.deliverAt, r.createdAt, r.destination ?? "");
  }
  return {
    sql:
      `INSERT INTO ${n.table} (id, topic, \`key\`, payload, payload_bytes, headers, available_at, deliver_at, created_at, destination) VALUES ${
        tuples.join(", ")
      }`,
    values,
  };
}

/** Finds an id of `ids` already in the table, for any destination (the fan-out check). Params: the ids. */
export function existingIdSql(n: MysqlNames): string {
  return `SELECT id FROM ${n.table} WHERE id IN (?) LIMIT 1`;
}

/** A statement with its values, built together. */
export interface SqlQuery {
  readonly sql: string;
  readonly values: unknown[];
}

/** `COALESCE(?, DB_NOW)`: the relay's now when its clock decides, else the database's. */
const NOW = `COALESCE(?, ${DB_NOW})`;

/** The relay's "now" when its clock decides, else NULL: the database's clock. */
function relayNow(request: { now: number; clock?: "storage" | "relay" }): number | null {
  return request.clock === "relay" ? request.now : null;
}

/** `IN (…)` of a non-empty list, or a condition that matches nothing. */
function inList(column: string, list: readonly unknown[]): [string, unknown[]] {
  return list.length === 0 ? ["FALSE", []] : [`${column} IN (?)`, [list]];
}

/** The filters an operator gives requeue and purge: topic, ids, destination (absent: any). */
function operatorFilter(r: RequeueRequest | PurgeRequest): [string, unknown[]] {
  const [ids, idValues] = r.ids ? inList("id", r.ids) : ["TRUE", []];
  return [
    `(? IS NULL OR topic = ?) AND ${ids} AND (? IS NULL OR destination = ?)`,
    [r.topic ?? null, r.topic ?? null, ...idValues, r.destination ?? null, r.destination ?? null],
  ];
}

/**
 * A change of the rows a filter finds, in two statements: a plain SELECT of their seqs
 * (no locks), then the UPDATE or DELETE by primary key, which checks the filter again
 * on each row's latest version. A locking range scan of a secondary index (one DELETE
 * … WHERE status = … ORDER BY settled_at LIMIT …) locks the first entry past its range
 * too, under READ COMMITTED as well on MariaDB: there an unsettled row's entry in
 * settled_idx, which a claim's lease UPDATE rewrites, while the scan waited on the
 * claim's row lock: a deadlock, seen with retention cleanup running beside claims.
 */
export interface SelectThenApply {
  readonly select: SqlQuery;
  apply(seqs: readonly number[]): SqlQuery;
}

/**
 * The relay's statements on one table; each builder returns its text with its values.
 *
 * Why a claim takes four steps (see mod.ts's `claim`), and why the barrier is checked
 * twice. The race Postgres' `skipped` CTE closes exists on InnoDB too, and is wider:
 * message n of a key is held by another relay's uncommitted claim (or by a late
 * settle), so this claim's `FOR UPDATE SKIP LOCKED` skips n while its per-key barrier,
 * a consistent read, still sees n's last committed version (pending and due, or an
 * expired lease) and lets n+1 through. Reproduced on MariaDB 10.11 before this design.
 *
 * 1. `candidates`: a plain SELECT (no lock; MariaDB applies `FOR
 *    UPDATE` to the tables of a subquery too, so a barrier inside the locking read
 *    would lock, or with SKIP LOCKED skip, the key's other rows). It finds claimable
 *    rows with the barrier, so one blocked key never fills a batch with rows that step
 *    3 would drop. An empty result ends the claim with no transaction at all.
 * 2. `lock`, in a READ COMMITTED transaction: `FOR UPDATE SKIP
 *    LOCKED` by primary key, rechecking that each row is still due. When other claims
 *    hold some candidates, steps 1 and 2 repeat past the last candidate until the
 *    batch is full or no candidate is left, as Postgres' SKIP LOCKED scan goes on past
 *    locked rows: concurrent claims each get a batch, not one of them. READ COMMITTED
 *    because under REPEATABLE READ a locking scan takes gap locks, which would block
 *    the writers' inserts at the end of the table until the claim commits.
 * 3. `skipped`: a fresh consistent read (READ COMMITTED: a new
 *    snapshot per statement) of each claimed key's unsettled rows before the claimed
 *    ones. A claimed row is kept only if no unsettled row of its key and destination
 *    comes before it that this claim does not hold. Whatever held n (another claim, a
 *    settle) n is unsettled in every committed version until it is published or its
 *    outcome commits, so n+1 stays back; a settle that committed `published` meanwhile
 *    lets it go, rightly. The rows dropped stay locked until the commit, untouched.
 * 4. `lease`, then COMMIT.
 *
 * A named lock (GET_LOCK) serializing claims would not close the late-settle half of
 * the race unless settles took it too, and it has no shared mode: every claim and
 * settle of every relay would queue on it.
 */
export interface RelayQueries {
  /**
   * The claim's first step, a plain (non-locking) read outside any transaction: the
   * claimable rows' seqs in seq order, with the per-key barrier. See {@link RelayQueries}.
   */
  candidates(request: ClaimRequest, after: number, limit: number): SqlQuery;
  /** Locks up to `limit` of the candidates still due and unlocked, in seq order, with their columns. */
  lock(request: ClaimRequest, seqs: readonly number[], limit: number): SqlQuery;
  /** Per key: the first unsettled row before `maxSeq` that the claim does not hold. */
  skipped(request: ClaimRequest, keys: readonly string[], mine: readonly number[], maxSeq: number): SqlQuery;
  /** Leases the rows the claim keeps. */
  lease(request: ClaimRequest, seqs: readonly number[]): SqlQuery;
  /** One statement per outcome present in the batch. */
  settle(request: SettleRequest): SqlQuery[];
  /** Deletes up to `limit` rows of `status` settled before `before`. */
  cleanup(status: "published" | "dead", before: number, limit: number): SelectThenApply;
  /** Counts per destination, topic and status. */
  counts(): SqlQuery;
  /** Since when the longest-waiting due row has waited, and how many keys dead rows block. */
  oldest(now: number): SqlQuery;
  /** Moves matching settled rows back to pending. */
  requeue(request: RequeueRequest): SelectThenApply;
  /** Rows in seq order, filtered and paged. */
  inspect(options: InspectOptions): SqlQuery;
  /** Deletes up to `limit` matching settled rows. */
  purge(request: PurgeRequest): SelectThenApply;
}

/** Builds the relay's statements for a table. */
export function relayQueries(n: MysqlNames): RelayQueries {
  const t = n.table;
  // The per-key barrier reads the destination's waiting rows (wait_dest_idx: in flight,
  // backing off, scheduled, blocked), never the key's whole run: MariaDB probes a
  // correlated subquery on the table by `ref` only (no range on available_at), so each
  // probe read every unsettled row of its key (20,000 rows over 16 keys took seconds).
  // First an uncorrelated NOT IN of the waiting keys' CRC32, which MariaDB materializes
  // once with an index: a key with nothing waiting passes at a lookup. Only a key that
  // has waiting rows (or shares a CRC32 with one) goes on to the exact check against the
  // first waiting seq per key, a derived table materialized once. As a LEFT JOIN the
  // derived table was joined through a join buffer, which lost the seq order and sorted
  // the whole backlog; as subqueries `c` streams in seq order and stops at the LIMIT.
  const candidates = `SELECT c.seq FROM ${t} AS c
WHERE c.destination = ? AND c.settled = 0 AND c.seq > ? AND c.available_at <= ${NOW}
  AND (c.\`key\` IS NULL OR CRC32(c.\`key\`) NOT IN (
    SELECT CRC32(\`key\`) FROM ${t}
    WHERE destination = ? AND settled = 0 AND available_at > ${NOW} AND \`key\` IS NOT NULL
  ) OR NOT EXISTS (
    SELECT 1 FROM (
      SELECT \`key\`, MIN(seq) AS seq FROM ${t}
      WHERE destination = ? AND settled = 0 AND available_at > ${NOW} AND \`key\` IS NOT NULL
      GROUP BY \`key\`
    ) AS w
    WHERE w.\`key\` = c.\`key\` AND w.seq < c.seq
  ))
ORDER BY c.seq
LIMIT ?`;
  // Every statement that changes rows by their seqs names the primary key. Left to
  // itself the optimizer scans the whole table (DELETE) or the whole primary key
  // (UPDATE) once the list covers a large share of a small table, as a drained outbox
  // is, and locks every row it reads: a settle then waited on the row after its
  // batch, which the next claim held, while that claim's lease waited on a row of the
  // settle's batch: a deadlock between one relay's settle and its own claim-ahead.
  // Single-table DELETE takes no index hint on MariaDB; the multi-table form does.
  const pk = `${t} FORCE INDEX (PRIMARY)`;
  const deleteByPk = `DELETE ${t} FROM ${pk}`;
  // Through the primary key only: a locking read through a secondary index leaves
  // locks on its entries, even of rows SKIP LOCKED passed over, and another claim's
  // lease UPDATE, which rewrites those entries, then waits on it: two claims deadlocked.
  const lock = `SELECT seq, id, topic, \`key\`, payload, payload_bytes, headers, attempts, created_at
FROM ${pk}
WHERE seq IN (?) AND destination = ? AND settled = 0 AND available_at <= ${NOW}
ORDER BY seq
LIMIT ?
FOR UPDATE SKIP LOCKED`;
  const skipped = `SELECT \`key\`, MIN(seq) AS seq FROM ${t}
WHERE destination = ? AND \`key\` IN (?) AND settled = 0 AND seq < ? AND seq NOT IN (?)
GROUP BY \`key\``;
  const lease =
    `UPDATE ${pk} SET status = 'processing', locked_by = ?, available_at = ${NOW} + ?, attempts = attempts + 1
WHERE seq IN (?)`;

  // Settlements find their rows by primary key and check the lease token.
  const settleNow = (r: SettleRequest) => relayNow(r);
  const caseOf = (pairs: readonly (readonly [number, unknown])[]): [string, unknown[]] => [
    `CASE seq ${pairs.map(() => "WHEN ? THEN ?").join(" ")} END`,
    pairs.flat(),
  ];

  return {
    candidates: (r, after, limit) => ({
      sql: candidates,
      values: [
        r.destination ?? "",
        after,
        relayNow(r),
        r.destination ?? "",
        relayNow(r),
        r.destination ?? "",
        relayNow(r),
        limit,
      ],
    }),
    lock: (r, seqs, limit) => ({ sql: lock, values: [seqs, r.destination ?? "", relayNow(r), limit] }),
    skipped: (r, keys, mine, maxSeq) => ({
      sql: skipped,
      values: [r.destination ?? "", keys, maxSeq, mine],
    }),
    lease: (r, seqs) => ({ sql: lease, values: [r.token, relayNow(r), r.lockedUntil - r.now, seqs] }),
    settle(r) {
      const { published, retry, dead, release } = groupSettlements(r);
      const now = settleNow(r);
      const out: SqlQuery[] = [];
      if (published.length) {
        out.push(
          r.deletePublished
            ? { sql: `${deleteByPk} WHERE seq IN (?) AND locked_by = ?`, values: [published, r.token] }
            : {
              sql: `UPDATE ${pk} SET status = 'published', available_at = NULL, locked_by = NULL, settled_at = ${NOW}
WHERE seq IN (?) AND locked_by = ?`,
              values: [now, published, r.token],
            },
        );
      }
      if (retry.length) {
        const [delays, delayValues] = caseOf(retry.map(([seq, delay]) => [seq, delay]));
        const [errors, errorValues] = caseOf(retry.map(([seq, , error]) => [seq, error]));
        out.push({
          sql: `UPDATE ${pk} SET status = 'pending', available_at = ${NOW} + ${delays}, last_error = ${errors},
  locked_by = NULL
WHERE seq IN (?) AND locked_by = ?`,
          values: [now, ...delayValues, ...errorValues, retry.map(([seq]) => seq), r.token],
        });
      }
      if (dead.length) {
        const [errors, errorValues] = caseOf(dead);
        out.push({
          // available_at last: MySQL assigns left to right, and the others do not read it.
          sql: `UPDATE ${pk} SET status = 'dead', last_error = ${errors}, locked_by = NULL, settled_at = ${NOW},
  available_at = CASE WHEN ? AND \`key\` IS NOT NULL THEN ${BLOCKED} END
WHERE seq IN (?) AND locked_by = ?`,
          values: [...errorValues, now, r.onDead === "block", dead.map(([seq]) => seq), r.token],
        });
      }
      if (release.length) {
        out.push({
          sql: `UPDATE ${pk} SET status = 'pending', available_at = ${NOW}, attempts = GREATEST(attempts - 1, 0),
  locked_by = NULL
WHERE seq IN (?) AND locked_by = ?`,
          values: [now, release, r.token],
        });
      }
      return out;
    },
    cleanup: (status, before, limit) => {
      const where = "status = ? AND settled_at < ? AND available_at IS NULL";
      return {
        // settled_idx: a range of (status, settled_at), oldest first.
        select: {
          sql: `SELECT seq FROM ${t} WHERE ${where} ORDER BY settled_at LIMIT ?`,
          values: [status, before, limit],
        },
        apply: (seqs) => ({ sql: `${deleteByPk} WHERE seq IN (?) AND ${where}`, values: [seqs, status, before] }),
      };
    },
    counts: () => ({
      sql: `SELECT destination, topic, status, COUNT(*) AS n FROM ${t} GROUP BY destination, topic, status`,
      values: [],
    }),
    oldest: (now) => ({
      // Index ranges only, whatever the table's size (stats() backs health checks): per
      // destination (DISTINCT is a loose scan of claim_dest_idx), the first unsettled,
      // unscheduled, not dead row in seq order stands for the oldest, as on Postgres,
      // and the blocked keys come from wait_dest_idx's BLOCKED range. A MIN(created_at)
      // over the unsettled rows read every row of a 1M-row table (1.1 s).
      sql: `SELECT LEAST(
    COALESCE(MIN(g.since), ${BLOCKED}),
    COALESCE((SELECT MIN(deliver_at) FROM ${t} WHERE settled = 0 AND deliver_at IS NOT NULL AND deliver_at <= ? AND status <> 'dead'), ${BLOCKED})
  ) AS since,
  COALESCE(SUM(g.blocked), 0) AS blocked
FROM (
  SELECT
    (SELECT o.created_at FROM ${t} AS o FORCE INDEX (\`${n.claimIndex}\`)
      WHERE o.destination = d.destination AND o.settled = 0 AND o.deliver_at IS NULL AND o.status <> 'dead'
      ORDER BY o.seq LIMIT 1) AS since,
    (SELECT COUNT(DISTINCT k.\`key\`) FROM ${t} AS k FORCE INDEX (\`${n.waitIndex}\`)
      WHERE k.destination = d.destination AND k.settled = 0 AND k.available_at = ${BLOCKED} AND k.\`key\` IS NOT NULL) AS blocked
  FROM (SELECT DISTINCT destination FROM ${t}) AS d
) AS g`,
      values: [now],
    }),
    requeue(r) {
      const [filter, filterValues] = operatorFilter(r);
      const where = `(available_at IS NULL OR available_at = ${BLOCKED}) AND status = ?
  AND ${filter}`;
      const values = [r.status, ...filterValues];
      return {
        select: { sql: `SELECT seq FROM ${t} WHERE ${where} ORDER BY seq`, values },
        apply: (seqs) => ({
          sql: `UPDATE ${pk}
SET status = 'pending', available_at = ${NOW}, attempts = 0, locked_by = NULL, settled_at = NULL
WHERE seq IN (?) AND ${where}`,
          values: [relayNow(r), seqs, ...values],
        }),
      };
    },
    inspect(o) {
      const key = o.key ?? null;
      return {
        sql:
          `SELECT seq, id, topic, \`key\`, status, attempts, available_at, locked_by, last_error, created_at, settled_at,
  deliver_at, payload, payload_bytes, headers, destination
FROM ${t}
WHERE seq > ? AND (? IS NULL OR status = ?) AND (? IS NULL OR topic = ?) AND (? IS NULL OR \`key\` = ?)
  AND (? IS NULL OR destination = ?)
ORDER BY seq LIMIT ?`,
        values: [
          o.after ?? 0,
          o.status ?? null,
          o.status ?? null,
          o.topic ?? null,
          o.topic ?? null,
          key,
          key,
          o.destination ?? null,
          o.destination ?? null,
          o.limit ?? 1_000_000,
        ],
      };
    },
    purge(r) {
      const [filter, filterValues] = operatorFilter(r);
      const where = `status = ? AND (available_at IS NULL OR available_at = ${BLOCKED})
  AND (? IS NULL OR settled_at < ?) AND ${filter}`;
      const values = [r.status, r.before, r.before, ...filterValues];
      return {
        select: { sql: `SELECT seq FROM ${t} WHERE ${where} ORDER BY seq LIMIT ?`, values: [...values, r.limit] },
        apply: (seqs) => ({ sql: `${deleteByPk} WHERE seq IN (?) AND ${where}`, values: [seqs, ...values] }),
      };
    },
  };
}

/**
 * Bytes as a hex literal (`X'…'`), spliced into the statement text: only hex digits, so
 * safe, and the same bytes on the wire as mysql2's own escaping of a Buffer, with no
 * Buffer needed (the adapter runs on Web APIs; mysql2 releases before 3.15 escape a
 * plain Uint8Array as an object).
 */
export function hexLiteral(bytes: Uint8Array): string {
  let hex = "";
  for (let i = 0; i < bytes.length; i++) hex += HEX[bytes[i]!];
  return `X'${hex}'`;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
