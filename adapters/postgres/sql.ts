/**
 * The SQL the Postgres adapter runs. Same model as libSQL: `available_at` is when a row
 * may be claimed next (its lease end while processing) and NULL once it is settled, so
 * partial indexes over unsettled rows serve every hot query and stay small. Times are
 * epoch milliseconds (bigint). Relay clocks are not trusted: where a query is given a
 * NULL "now", it reads the database's clock instead ({@link dbNow}), and lease ends and
 * retry times are that clock plus the durations the relay asked for.
 *
 * A dead message of a key whose outbox blocks on dead messages (`retry.onDead:
 * "block"`) keeps `available_at = BLOCKED`: never due, so the claim's per-key barrier
 * holds the key's later messages back, with no index or query of its own.
 */

import type { ClaimRequest, InspectOptions, PurgeRequest, RequeueRequest, SettleRequest } from "../../src/types.ts";
import { BLOCKED, groupSettlements } from "../shared/settle.ts";
import { pgArray } from "./array.ts";

/**
 * The database's clock in epoch ms. `statement_timestamp()` is fixed for a statement,
 * so the expression is the same everywhere in it; `clock_timestamp()` moves, for use
 * once (inside the claim function, after the lock wait).
 */
export function dbNow(source: "statement_timestamp()" | "clock_timestamp()" = "statement_timestamp()"): string {
  return `(extract(epoch from ${source}) * 1000)::bigint`;
}

/** Quoted, schema-qualified names of the table, its indexes and its NOTIFY channel. */
export interface PostgresNames {
  readonly schema: string;
  readonly table: string;
  readonly qualified: string;
  readonly channel: string;
  readonly index: (suffix: string) => string;
  /** Key of the advisory locks (claim serialization, setup, cleanup): `hashtext` input. */
  readonly lockName: string;
  /** The claim function `setup()` creates (see {@link claimFunctionSql}). */
  readonly claimFunction: string;
  /** The claim function of versions before 0.2 (relay clock, lease end argument), dropped by `setup()`. */
  readonly oldClaimFunction: string;
}

/** Builds names for checked identifiers. */
export function postgresNames(schema: string, table: string): PostgresNames {
  return {
    schema: `"${schema}"`,
    table: `"${table}"`,
    qualified: `"${schema}"."${table}"`,
    // Channel names are identifiers too: at most 63 bytes.
    channel: `x_outbox_${schema}_${table}`.slice(0, 63),
    index: (suffix) => `"${objectName(table, suffix)}"`,
    lockName: `@x/outbox:${schema}.${table}`,
    // A new name for a new argument meaning (a lease length, not its end): a relay of
    // an older version calling it by the old name finds it missing and falls back to a
    // claim transaction, rather than leasing rows for decades.
    claimFunction: `"${schema}"."${objectName(table, "claim_v2")}"`,
    oldClaimFunction: `"${schema}"."${objectName(table, "claim")}"`,
  };
}

/**
 * The name of an index or function of the table: `<table>_<suffix>`, or, when that is
 * longer than an identifier may be (63 bytes), a prefix of the table name, a hash of
 * the whole name and the suffix. Postgres would truncate the long name instead, and for
 * tables of 61–63 characters the truncated index names equal each other or the table's
 * own name, so `CREATE INDEX IF NOT EXISTS` skipped them. Table names are plain ASCII
 * identifiers (checkIdentifier), so characters are bytes.
 */
export function objectName(table: string, suffix: string): string {
  const name = `${table}_${suffix}`;
  if (name.length <= 63) return name;
  let hash = 0x811c9dc5; // FNV-1a, 32 bits
  for (let i = 0; i < table.length; i++) hash = Math.imul(hash ^ table.charCodeAt(i), 0x01000193);
  const tag = (hash >>> 0).toString(16).padStart(8, "0");
  return `${table.slice(0, 63 - suffix.length - tag.length - 2)}_${tag}_${suffix}`;
}

// Advisory lock class for this library (first int of the two-int form); the second int
// is hashtext(lockName) + a small offset per purpose.
const LOCK_CLASS = 0x0b0c5;

/** Arguments of an advisory lock call for the table; `offset` tells the purposes apart. */
function lockArgs(n: PostgresNames, offset: 0 | 1 | 2): string {
  const key = `hashtext('${n.lockName.replace(/'/g, "''")}')`;
  return `${LOCK_CLASS}, ${offset === 0 ? key : `${key} + ${offset}`}`;
}

/** DDL statements, each idempotent. */
export function createStatements(n: PostgresNames): string[] {
  return [
    `CREATE SCHEMA IF NOT EXISTS ${n.schema}`,
    `CREATE TABLE IF NOT EXISTS ${n.qualified} (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id text NOT NULL UNIQUE,
  topic text NOT NULL,
  key text,
  payload json,
  payload_bytes bytea,
  headers json,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'published', 'dead')),
  attempts integer NOT NULL DEFAULT 0,
  available_at bigint,
  deliver_at bigint,
  locked_by text,
  last_error text,
  created_at bigint NOT NULL,
  settled_at bigint,
  CHECK ((payload IS NULL) <> (payload_bytes IS NULL))
)`,
    // Claim scan: unsettled rows in seq order; due time and key in the index (index-only).
    // Plain key columns rather than INCLUDE, so drizzle-kit can declare the same index.
    `CREATE INDEX IF NOT EXISTS ${
      n.index("claim_idx")
    } ON ${n.qualified} (seq, available_at, key) WHERE available_at IS NOT NULL`,
    // Per-key barrier: does the key have an unsettled row that is not claimable yet
    // (available_at > now) before this one? Ordered by available_at, the probe visits
    // only the key's waiting rows, not every claimable one ahead of it (which made a
    // hot key's batch quadratic).
    `CREATE INDEX IF NOT EXISTS ${
      n.index("key_idx")
    } ON ${n.qualified} (key, available_at, seq) WHERE available_at IS NOT NULL AND key IS NOT NULL`,
    // Retention cleanup and stats of settled rows.
    `CREATE INDEX IF NOT EXISTS ${
      n.index("settled_idx")
    } ON ${n.qualified} (status, settled_at) WHERE available_at IS NULL`,
    // Unsettled messages scheduled with deliverAt: stats' oldest-due age.
    `CREATE INDEX IF NOT EXISTS ${
      n.index("scheduled_idx")
    } ON ${n.qualified} (deliver_at) WHERE available_at IS NOT NULL AND deliver_at IS NOT NULL`,
    dropOldClaimFunctionsSql(n),
    claimFunctionSql(n),
  ];
}

/** Serializes concurrent setup() calls (CREATE … IF NOT EXISTS races on the catalog). */
export function setupLockSql(n: PostgresNames): string {
  return `SELECT pg_advisory_xact_lock(${lockArgs(n, 1)})`;
}

/**
 * Inserts rows given as parallel arrays: one statement, one round trip, for any count.
 * A message without deliverAt is due at its enqueue time or the database's, whichever
 * is earlier: a writer whose clock runs ahead must not hold its messages back.
 *
 * An id already in the table (committed, or written by this transaction) is reported
 * as `duplicate` with nothing inserted, instead of raising a unique violation, because
 * an error would abort the caller's whole transaction. `$10` NOTIFYs the channel; the
 * notification is delivered at commit.
 */
export function insertSql(n: PostgresNames): string {
  return `WITH input AS (
  SELECT * FROM unnest($1::text::text[], $2::text::text[], $3::text::text[], $4::text::text[], $5::text::text[], $6::text::text[], $7::text::bigint[], $8::text::bigint[], $9::text::bigint[])
    WITH ORDINALITY AS r(id, topic, key, payload, payload_bytes, headers, available_at, deliver_at, created_at, ord)
),
guard AS (
  SELECT (SELECT o.id FROM ${n.qualified} AS o WHERE o.id IN (SELECT id FROM input) LIMIT 1) AS duplicate
),
ins AS (
  INSERT INTO ${n.qualified} (id, topic, key, payload, payload_bytes, headers, available_at, deliver_at, created_at)
  SELECT r.id, r.topic, r.key, r.payload::json, decode(r.payload_bytes, 'base64'), r.headers::json,
    coalesce(r.deliver_at, least(r.available_at, ${dbNow()})), r.deliver_at, r.created_at
  FROM input AS r, guard AS g
  WHERE g.duplicate IS NULL
  ORDER BY r.ord
  ON CONFLICT (id) DO NOTHING
  RETURNING id
)
SELECT (SELECT duplicate FROM guard) AS duplicate,
  count(*)::int AS n, to_json(array_agg(id))::text AS ids,
  CASE WHEN $10::boolean AND count(*) > 0 THEN pg_notify('${n.channel}', '') END AS notified
FROM ins`;
}

/**
 * The one-message insert (the common enqueue): scalar parameters and a VALUES row
 * instead of ten arrays through unnest, so it plans and runs in about half the time.
 * Same results and the same contract as {@link insertSql}: ON CONFLICT DO NOTHING
 * never aborts the caller's transaction, and an id already there (or inserted by a
 * concurrent transaction that commits first) comes back as `duplicate` with nothing
 * written. Params: $1 id, $2 topic, $3 key, $4 payload, $5 base64 bytes, $6 headers,
 * $7 available_at, $8 deliver_at, $9 created_at, $10 notify.
 */
export function insertOneSql(n: PostgresNames): string {
  return `WITH ins AS (
  INSERT INTO ${n.qualified} (id, topic, key, payload, payload_bytes, headers, available_at, deliver_at, created_at)
  VALUES ($1::text, $2::text, $3::text, $4::text::json, decode($5::text, 'base64'), $6::text::json,
    coalesce($8::bigint, least($7::bigint, ${dbNow()})), $8::bigint, $9::bigint)
  ON CONFLICT (id) DO NOTHING
  RETURNING id
)
SELECT CASE WHEN count(*) = 0 THEN $1::text END AS duplicate,
  count(*)::int AS n, to_json(array_agg(id))::text AS ids,
  CASE WHEN $10::boolean AND count(*) > 0 THEN pg_notify('${n.channel}', '') END AS notified
FROM ins`;
}

/** Compensates an insert that lost a race on an id: removes the rows it did write. $1 ids. */
export function uninsertSql(n: PostgresNames): string {
  return `DELETE FROM ${n.qualified} WHERE id = ANY($1::text::text[]) AND status = 'pending'`;
}

/**
 * The claim lock, taken in shared mode: claims of this version run side by side (each
 * keeps per-key order on its own, see {@link claimSql}), and settles take it shared too.
 * It still excludes the claims of earlier builds, which take it exclusively and rely on
 * seeing every other claim committed, so relays of both can share a table during a
 * rolling upgrade.
 */
function claimLockSql(n: PostgresNames): string {
  return `SELECT pg_advisory_xact_lock_shared(${lockArgs(n, 0)})`;
}

/** The transaction-path claim's "now": the relay's `$1`, or the database's clock when NULL. */
const CLAIM_NOW = `coalesce($1::bigint, ${dbNow()})`;

/**
 * Leases claimable rows: due (pending and available, or processing with an expired
 * lease) and not behind an earlier unsettled row of the same key that is not itself
 * claimable, in seq order. claim_idx drives the scan, key_idx the barrier; the update
 * finds the chosen rows by primary key (`= ANY(ARRAY(…))`, never a join that the
 * planner may turn into a hash join over a sequential scan).
 *
 * Claims run concurrently (no exclusive lock: one serialized every claim's scan and
 * update, and at four relays it was the limit). The race that lock closed: message n of
 * a key is held by another relay's uncommitted claim (or by a late settle), so this
 * claim skips n (SKIP LOCKED) while its barrier still sees n's old, claimable version,
 * and would take n+1. `skipped` finds such rows: keyed rows this statement's snapshot
 * sees as claimable, before its last claimed row, of a key it claims, that it did not
 * get to lock (held by someone, or changed since the snapshot). A claimed row behind a
 * skipped row of its key is left alone (its row lock ends with the statement), so a
 * claim takes of each key only rows with no unsettled row before them that it does not
 * also take. It is empty unless two relays meet on a key; the one-time filter skips its
 * scan when the batch holds no keyed row.
 * Params: $1 now (NULL: the database's clock), $2 limit, $3 token, $4 lease in ms; or,
 * inside the claim function, the expressions in `p` (now, limit, token, lease end).
 */
function claimSql(
  n: PostgresNames,
  p: readonly [string, string, string, string] = [CLAIM_NOW, "$2", "$3", `(${CLAIM_NOW} + $4::bigint)`],
): string {
  return `WITH c AS (
  SELECT c.seq, c.key FROM ${n.qualified} AS c
  WHERE c.available_at <= ${p[0]}
    AND (c.key IS NULL OR NOT EXISTS (
      SELECT 1 FROM ${n.qualified} AS b
      WHERE b.key = c.key AND b.seq < c.seq AND b.available_at > ${p[0]}
    ))
  ORDER BY c.seq
  LIMIT ${p[1]}
  FOR UPDATE SKIP LOCKED
),
skipped AS (
  SELECT s.key, min(s.seq) AS seq FROM ${n.qualified} AS s
  WHERE EXISTS (SELECT 1 FROM c WHERE c.key IS NOT NULL)
    AND s.seq < (SELECT max(c.seq) FROM c) AND s.available_at <= ${p[0]} AND s.key IS NOT NULL
    AND s.key IN (SELECT c.key FROM c WHERE c.key IS NOT NULL) AND s.seq NOT IN (SELECT c.seq FROM c)
  GROUP BY s.key
)
UPDATE ${n.qualified} AS o
SET status = 'processing', locked_by = ${p[2]}, available_at = ${p[3]}, attempts = o.attempts + 1
WHERE o.seq = ANY (ARRAY(
  SELECT c.seq FROM c LEFT JOIN skipped AS k ON k.key = c.key WHERE k.seq IS NULL OR c.seq < k.seq
))
RETURNING o.seq, o.id, o.topic, o.key, o.payload::text AS payload, encode(o.payload_bytes, 'base64') AS payload_bytes,
  o.headers::text AS headers, o.attempts, o.created_at`;
}

/** SQLSTATE the claim function raises when the session is not READ COMMITTED. */
export const NOT_READ_COMMITTED = "XO001";

/**
 * The claim as one PL/pgSQL function: the shared claim lock, then the claim, in one
 * statement and one round trip, where a transaction of its own costs three (BEGIN; lock
 * and claim; COMMIT). The claim inside still sees rows committed before the lock was
 * granted (what an earlier build's exclusive claim wrote), because PL/pgSQL takes a new
 * snapshot per statement in READ COMMITTED (one SQL statement holding both would not).
 * Under REPEATABLE READ or SERIALIZABLE (a `default_transaction_isolation` of the role,
 * database or connection) the snapshot is the transaction's first and predates the
 * lock, and a row changed since would fail the claim instead of being skipped, so the
 * function refuses with {@link NOT_READ_COMMITTED} and the adapter claims in a READ
 * COMMITTED transaction instead. "Now" is read after the lock wait, on the database's
 * clock unless the relay passes its own (`p_now`). PL/pgSQL also keeps the claim's plan
 * for the session.
 * Column names win over the output names (`#variable_conflict use_column`).
 * CREATE OR REPLACE cannot change a function's arguments or result columns: a version
 * that changes them takes a new name (and drops the old, {@link dropOldClaimFunctionsSql}).
 */
export function claimFunctionSql(n: PostgresNames): string {
  return `CREATE OR REPLACE FUNCTION ${n.claimFunction}(p_now bigint, p_limit integer, p_token text, p_lease bigint)
RETURNS TABLE (seq bigint, id text, topic text, key text, payload text, payload_bytes text, headers text, attempts integer, created_at bigint)
LANGUAGE plpgsql VOLATILE AS $outbox_claim$
#variable_conflict use_column
DECLARE
  v_now bigint;
BEGIN
  IF current_setting('transaction_isolation') <> 'read committed' THEN
    RAISE EXCEPTION 'the outbox claim needs READ COMMITTED, the session runs %', current_setting('transaction_isolation')
      USING ERRCODE = '${NOT_READ_COMMITTED}';
  END IF;
  PERFORM pg_advisory_xact_lock_shared(${lockArgs(n, 0)});
  v_now := coalesce(p_now, ${dbNow("clock_timestamp()")});
  RETURN QUERY ${claimSql(n, ["v_now", "p_limit", "p_token", "v_now + p_lease"])};
END
$outbox_claim$`;
}

/**
 * Drops the claim function of earlier versions. Relays of those versions still running
 * find it missing and claim in a transaction instead, which stays correct.
 */
export function dropOldClaimFunctionsSql(n: PostgresNames): string {
  return `DROP FUNCTION IF EXISTS ${n.oldClaimFunction}(bigint, integer, text, bigint)`;
}

/**
 * Calls the claim function. Params: $1 now (NULL: the database's clock), $2 limit,
 * $3 token, $4 lease in ms.
 */
function claimCallSql(n: PostgresNames): string {
  return `SELECT * FROM ${n.claimFunction}($1, $2, $3, $4)`;
}

/**
 * Applies a whole batch of outcomes in one statement. Every part finds its rows by
 * primary key (`seq = ANY(array)`) and checks the lease token as a filter: driving by
 * `locked_by` (estimated at one row) gave nested loops quadratic in the batch size.
 *
 * A settle that lands after its lease ended holds the row of message n while a claim
 * runs: the claim skips n as locked while its barrier still sees n's old, expired lease.
 * The claim's `skipped` check keeps n+1 back then (see {@link claimSql}). The statement
 * also takes the claim lock in shared mode (settles and claims run side by side), which
 * keeps the claims of earlier builds, which take it exclusively and have no such check,
 * from running while a settle is written. Every part's WHERE begins with the lock, a
 * one-time filter, so no row is locked before it.
 *
 * Params: $1 token, $2 relay now, $3 delete published, $4 published seqs, $5 retry
 * seqs, $6 retry delays (ms from now), $7 retry errors, $8 dead seqs, $9 dead errors,
 * $10 released seqs, $11 use the database's clock, $12 dead keyed messages block.
 */
function settleSql(n: PostgresNames): string {
  return `WITH lock AS MATERIALIZED (
  SELECT CASE WHEN $11::boolean THEN ${dbNow()} ELSE $2::bigint END AS now
  FROM (SELECT pg_advisory_xact_lock_shared(${lockArgs(n, 0)})) AS l
),
del AS (
  DELETE FROM ${n.qualified} WHERE (SELECT now FROM lock) IS NOT NULL
    AND $3::boolean AND seq = ANY($4::text::bigint[]) AND locked_by = $1 RETURNING 1
),
pub AS (
  UPDATE ${n.qualified} SET status = 'published', available_at = NULL, locked_by = NULL, settled_at = (SELECT now FROM lock)
  WHERE (SELECT now FROM lock) IS NOT NULL AND NOT $3::boolean AND seq = ANY($4::text::bigint[]) AND locked_by = $1 RETURNING 1
),
rty AS (
  UPDATE ${n.qualified} AS o SET status = 'pending', available_at = (SELECT now FROM lock) + r.delay, last_error = r.error, locked_by = NULL
  FROM unnest($5::text::bigint[], $6::text::bigint[], $7::text::text[]) AS r(seq, delay, error)
  WHERE (SELECT now FROM lock) IS NOT NULL AND o.seq = ANY($5::text::bigint[]) AND o.seq = r.seq AND o.locked_by = $1 RETURNING 1
),
ded AS (
  UPDATE ${n.qualified} AS o SET status = 'dead', last_error = d.error, locked_by = NULL, settled_at = (SELECT now FROM lock),
    available_at = CASE WHEN $12::boolean AND o.key IS NOT NULL THEN ${BLOCKED} END
  FROM unnest($8::text::bigint[], $9::text::text[]) AS d(seq, error)
  WHERE (SELECT now FROM lock) IS NOT NULL AND o.seq = ANY($8::text::bigint[]) AND o.seq = d.seq AND o.locked_by = $1 RETURNING 1
),
rel AS (
  UPDATE ${n.qualified} SET status = 'pending', available_at = (SELECT now FROM lock), attempts = greatest(attempts - 1, 0), locked_by = NULL
  WHERE (SELECT now FROM lock) IS NOT NULL AND seq = ANY($10::text::bigint[]) AND locked_by = $1 RETURNING 1
)
SELECT ((SELECT count(*) FROM del) + (SELECT count(*) FROM pub) + (SELECT count(*) FROM rty)
  + (SELECT count(*) FROM ded) + (SELECT count(*) FROM rel))::int AS n`;
}

/**
 * Deletes up to $3 settled rows of status $1 settled before $2 (settled_idx), only if no
 * other relay is cleaning this table right now: one cleaner at a time, never a wait.
 * `= ANY (ARRAY(…))` keeps the delete on the primary key: a join with the CTE lets the
 * planner hash-join against a sequential scan of the whole table.
 */
function cleanupSql(n: PostgresNames): string {
  return `WITH lock AS (
  SELECT pg_try_advisory_xact_lock(${lockArgs(n, 2)}) AS ok
),
doomed AS (
  SELECT seq FROM ${n.qualified}
  WHERE available_at IS NULL AND status = $1 AND settled_at < $2 AND (SELECT ok FROM lock)
  ORDER BY settled_at
  LIMIT $3
  FOR UPDATE SKIP LOCKED
)
DELETE FROM ${n.qualified} WHERE seq = ANY (ARRAY(SELECT seq FROM doomed))`;
}

/**
 * Counts per status (each half from a partial index; a blocking dead row is in the
 * unsettled half), the longest-waiting due row, and the keys a dead row blocks.
 */
function statsSql(n: PostgresNames): string {
  return `SELECT
  (SELECT json_agg(json_build_array(topic, status, c)) FROM (
    SELECT topic, status, count(*) AS c FROM ${n.qualified} GROUP BY topic, status
  ) counts)::text AS counts,
  LEAST(
    (SELECT created_at FROM ${n.qualified} WHERE available_at IS NOT NULL AND deliver_at IS NULL AND status <> 'dead' ORDER BY seq LIMIT 1),
    (SELECT min(deliver_at) FROM ${n.qualified} WHERE available_at IS NOT NULL AND deliver_at IS NOT NULL AND deliver_at <= $1 AND status <> 'dead')
  ) AS since,
  (SELECT count(DISTINCT key) FROM ${n.qualified} WHERE available_at = ${BLOCKED} AND key IS NOT NULL)::int AS blocked`;
}

/**
 * Moves settled rows (and dead rows that block their key) back to pending.
 * $1 relay now, $2 status, $3 topic or NULL, $4 ids or NULL, $5 use the database's clock.
 */
function requeueSql(n: PostgresNames): string {
  return `UPDATE ${n.qualified}
SET status = 'pending', available_at = CASE WHEN $5::boolean THEN ${dbNow()} ELSE $1::bigint END, attempts = 0, locked_by = NULL, settled_at = NULL
WHERE (available_at IS NULL OR available_at = ${BLOCKED}) AND status = $2
  AND ($3::text IS NULL OR topic = $3)
  AND ($4::text::text[] IS NULL OR id = ANY($4::text::text[]))`;
}

/** Rows in seq order after $5, filtered by $1 status, $2 topic, $3 key (NULL: any); at most $4. */
function inspectSql(n: PostgresNames): string {
  return `SELECT seq, id, topic, key, status, attempts, available_at, locked_by, last_error, created_at, settled_at,
  deliver_at, payload::text AS payload, encode(payload_bytes, 'base64') AS payload_bytes, headers::text AS headers
FROM ${n.qualified}
WHERE seq > $5 AND ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR topic = $2) AND ($3::text IS NULL OR key = $3)
ORDER BY seq LIMIT $4`;
}

/**
 * Deletes up to $5 settled rows of $1 status (a dead row that blocks its key too),
 * settled before $2 (NULL: any), of $3 topic and $4 ids (NULL: any). Rows are locked
 * SKIP LOCKED, so a purge never waits on, or deadlocks with, a relay's settle.
 */
function purgeSql(n: PostgresNames): string {
  return `DELETE FROM ${n.qualified} WHERE seq = ANY (ARRAY(
  SELECT seq FROM ${n.qualified}
  WHERE status = $1 AND (available_at IS NULL OR available_at = ${BLOCKED})
    AND ($2::bigint IS NULL OR settled_at < $2) AND ($3::text IS NULL OR topic = $3)
    AND ($4::text::text[] IS NULL OR id = ANY($4::text::text[]))
  ORDER BY seq LIMIT $5 FOR UPDATE SKIP LOCKED
))`;
}

/** A statement with its parameters, built together (pg-boss's `SqlQuery`). */
export interface SqlQuery {
  readonly text: string;
  readonly values: unknown[];
}

/** The relay's statements on one table: each builder returns its text with its values. */
export interface RelayQueries {
  /** The claim lock, for the claim transaction (no values). */
  claimLock(): SqlQuery;
  /** The claim statement, for the claim transaction after {@link RelayQueries.claimLock}. */
  claim(request: ClaimRequest): SqlQuery;
  /** The claim function's call: lock and claim in one round trip. */
  claimCall(request: ClaimRequest): SqlQuery;
  /** Every settlement of a batch in one statement. */
  settle(request: SettleRequest): SqlQuery;
  /** Deletes up to `limit` rows of `status` settled before `before`. */
  cleanup(status: "published" | "dead", before: number, limit: number): SqlQuery;
  /** Counts per status, the oldest due row, the blocked keys. */
  stats(now: number): SqlQuery;
  /** Moves matching settled rows back to pending. */
  requeue(request: RequeueRequest): SqlQuery;
  /** Rows in seq order, filtered and paged. */
  inspect(options: InspectOptions): SqlQuery;
  /** Deletes up to `limit` matching settled rows. */
  purge(request: PurgeRequest): SqlQuery;
}

/**
 * Builds the relay's statements for a table. The texts are made once; each call pairs
 * one with its values, in the order its placeholders number them.
 */
export function relayQueries(n: PostgresNames): RelayQueries {
  const text = {
    claimLock: claimLockSql(n),
    claim: claimSql(n),
    claimCall: claimCallSql(n),
    settle: settleSql(n),
    cleanup: cleanupSql(n),
    stats: statsSql(n),
    requeue: requeueSql(n),
    inspect: inspectSql(n),
    purge: purgeSql(n),
  };
  // $1 now (NULL: the database's clock), $2 limit, $3 token, $4 lease in ms.
  const claimValues = (
    r: ClaimRequest,
  ) => [r.clock === "relay" ? r.now : null, r.limit, r.token, r.lockedUntil - r.now];
  return {
    claimLock: () => ({ text: text.claimLock, values: [] }),
    claim: (r) => ({ text: text.claim, values: claimValues(r) }),
    claimCall: (r) => ({ text: text.claimCall, values: claimValues(r) }),
    settle(r) {
      const { published, retry, dead, release } = groupSettlements(r);
      return {
        text: text.settle,
        values: [
          r.token,
          r.now,
          r.deletePublished,
          pgArray(published),
          pgArray(retry.map(([seq]) => seq)),
          pgArray(retry.map(([, delayMs]) => delayMs)),
          pgArray(retry.map(([, , error]) => error)),
          pgArray(dead.map(([seq]) => seq)),
          pgArray(dead.map(([, error]) => error)),
          pgArray(release),
          r.clock !== "relay",
          r.onDead === "block",
        ],
      };
    },
    cleanup: (status, before, limit) => ({ text: text.cleanup, values: [status, before, limit] }),
    stats: (now) => ({ text: text.stats, values: [now] }),
    requeue: (r) => ({
      text: text.requeue,
      values: [r.now, r.status, r.topic ?? null, r.ids ? pgArray(r.ids) : null, r.clock !== "relay"],
    }),
    inspect: (o) => ({
      text: text.inspect,
      values: [o.status ?? null, o.topic ?? null, o.key ?? null, o.limit ?? 1_000_000, o.after ?? 0],
    }),
    purge: (r) => ({
      text: text.purge,
      values: [r.status, r.before, r.topic ?? null, r.ids ? pgArray(r.ids) : null, r.limit],
    }),
  };
}
