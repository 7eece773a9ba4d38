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
 *
 * Each row is for one destination (`""`: the outbox's one `publisher`). A claim takes
 * one destination's rows, and the per-key barrier looks only at that destination, so
 * the hot indexes lead with `destination`. See {@link createStatements} for the schema
 * versions and {@link upgradeStatements} for how an older table is brought up to date.
 */

import type { ClaimRequest, InspectOptions, PurgeRequest, RequeueRequest, SettleRequest } from "../../src/types.ts";
import { inspectValues } from "../shared/row.ts";
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
  /** The claim function `setup()` creates (see {@link claimFunctionSql}), with a destination argument. */
  readonly claimFunction: string;
  /**
   * The claim function of schema version 1 (`<table>_claim_v2`, no destination argument),
   * kept for relays of that version and redefined to claim only destination `""` rows.
   */
  readonly v1ClaimFunction: string;
  /** The claim function of versions before 0.2 (relay clock, lease end argument), dropped by `setup()`. */
  readonly oldClaimFunction: string;
  /** The table that records the schema version (`<table>_schema`, one row). */
  readonly versionTable: string;
  /** The table as a SQL string literal, for `::regclass` and `to_regclass()`. */
  readonly literal: string;
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
    // A new name for a new argument list (CREATE OR REPLACE cannot change one): the
    // destination. claim_v2 (lease length instead of lease end, schema version 1) stays
    // for relays of that version; claim (lease end) is dropped, so a relay older than 0.2
    // falls back to a claim transaction rather than leasing rows for decades.
    claimFunction: `"${schema}"."${objectName(table, "claim_v3")}"`,
    v1ClaimFunction: `"${schema}"."${objectName(table, "claim_v2")}"`,
    oldClaimFunction: `"${schema}"."${objectName(table, "claim")}"`,
    versionTable: `"${schema}"."${objectName(table, "schema")}"`,
    // Identifiers are checked (no quotes in them), so this literal needs no escaping.
    literal: `'"${schema}"."${table}"'`,
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

/**
 * The newest schema version this code knows. Version 1: the table of 0.1 (no
 * `destination`, claim index on `seq`). Version 2 (`setup()`'s default): a `destination`
 * column, destination-leading claim and key indexes, the claim function
 * `<table>_claim_v3`; relays and writers of version 1 keep working on it. Version 3
 * (`setup({ fanOut: true })`): the unique index on `id` becomes one on
 * `(id, destination)`, so a message has a row per destination; writers of version 1
 * (`ON CONFLICT (id)`) fail on it.
 */
export const SCHEMA_VERSION = 3;

/** The version `setup()` creates or upgrades to without `fanOut`. */
export const DEFAULT_SCHEMA_VERSION = 2;

/** Options of {@link createStatements}. */
export interface DdlOptions {
  /** Schema version 3: one message id may have a row per destination. */
  readonly fanOut?: boolean;
}

/**
 * DDL of a fresh table at schema version 2 (3 with `fanOut`), each statement idempotent;
 * the last one records the version (never lowering it). On a table of an older version
 * `setup()` runs {@link upgradeStatements} first.
 */
export function createStatements(n: PostgresNames, options: DdlOptions = {}): string[] {
  const fanOut = options.fanOut === true;
  return [
    `CREATE SCHEMA IF NOT EXISTS ${n.schema}`,
    // destination last: where ALTER TABLE … ADD COLUMN puts it on an upgraded table.
    `CREATE TABLE IF NOT EXISTS ${n.qualified} (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id text NOT NULL${fanOut ? "" : " UNIQUE"},
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
  destination text NOT NULL DEFAULT '',
  CHECK ((payload IS NULL) <> (payload_bytes IS NULL))
)`,
    // Fan-out: a row per destination, one message id. It also serves lookups by id.
    ...(fanOut
      ? [`CREATE UNIQUE INDEX IF NOT EXISTS ${n.index("id_dest_key")} ON ${n.qualified} (id, destination)`]
      : []),
    // Claim scan: one destination's unsettled rows in seq order; due time and key in the
    // index (index-only). Plain key columns rather than INCLUDE, so drizzle-kit can
    // declare the same index.
    `CREATE INDEX IF NOT EXISTS ${
      n.index("claim_dest_idx")
    } ON ${n.qualified} (destination, seq, available_at, key) WHERE available_at IS NOT NULL`,
    // Per-key barrier: does the key have an unsettled row for this destination that is
    // not claimable yet (available_at > now) before this one? Ordered by available_at,
    // the probe visits only the key's waiting rows, not every claimable one ahead of it
    // (which made a hot key's batch quadratic).
    `CREATE INDEX IF NOT EXISTS ${
      n.index("key_dest_idx")
    } ON ${n.qualified} (destination, key, available_at, seq) WHERE available_at IS NOT NULL AND key IS NOT NULL`,
    // Retention cleanup and stats of settled rows.
    `CREATE INDEX IF NOT EXISTS ${
      n.index("settled_idx")
    } ON ${n.qualified} (status, settled_at) WHERE available_at IS NULL`,
    // Unsettled messages scheduled with deliverAt: stats' oldest-due age.
    `CREATE INDEX IF NOT EXISTS ${
      n.index("scheduled_idx")
    } ON ${n.qualified} (deliver_at) WHERE available_at IS NOT NULL AND deliver_at IS NOT NULL`,
    // The version 1 indexes, replaced by the two above. Also when a version 1 process's
    // setup() put them back during a rolling upgrade: every insert would keep paying for
    // them. A missing index costs nothing here (no lock is taken).
    `DROP INDEX IF EXISTS ${n.schema}.${n.index("claim_idx")}`,
    `DROP INDEX IF EXISTS ${n.schema}.${n.index("key_idx")}`,
    dropOldClaimFunctionsSql(n),
    claimFunctionSql(n),
    v1ClaimFunctionSql(n),
    `CREATE TABLE IF NOT EXISTS ${n.versionTable} (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  version integer NOT NULL,
  upgraded_at bigint NOT NULL
)`,
    recordVersionSql(n, fanOut ? SCHEMA_VERSION : DEFAULT_SCHEMA_VERSION),
  ];
}

/**
 * Records `version` unless the table already records a later one: `setup()` never
 * downgrades, and running it again changes nothing.
 */
function recordVersionSql(n: PostgresNames, version: number): string {
  return `INSERT INTO ${n.versionTable} AS v (version, upgraded_at) VALUES (${version}, ${dbNow()})
ON CONFLICT (one) DO UPDATE SET version = excluded.version, upgraded_at = excluded.upgraded_at
WHERE v.version < excluded.version`;
}

/**
 * What {@link createStatements} cannot do with `IF NOT EXISTS` on a table of version
 * `from` (1 or 2) going to version `to`, run before them in the same transaction:
 * version 2 adds `destination` in place (instant since Postgres 11: a default, no
 * rewrite) and samples it for the planner; version 3 drops the unique constraint on
 * `id` alone (its name is usually `<table>_id_key`, but Postgres truncates long names,
 * so it is looked up), which {@link createStatements}' unique index on
 * `(id, destination)` replaces.
 */
export function upgradeStatements(n: PostgresNames, from: number, to: number): string[] {
  const steps: string[] = [];
  if (from === 1) {
    steps.push(
      `ALTER TABLE ${n.qualified} ADD COLUMN IF NOT EXISTS destination text NOT NULL DEFAULT ''`,
      // Statistics for the new column now, not at the next autovacuum (which, on a big
      // table, may be far off): the claim's plans estimate rows per destination.
      `ANALYZE ${n.qualified} (destination)`,
    );
  }
  if (from >= 1 && from < 3 && to >= 3) {
    steps.push(`DO $outbox_upgrade$
DECLARE
  c name;
BEGIN
  FOR c IN SELECT conname FROM pg_constraint
    WHERE conrelid = ${n.literal}::regclass AND contype = 'u'
      AND conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = ${n.literal}::regclass AND attname = 'id')]
  LOOP
    EXECUTE format('ALTER TABLE ${n.qualified} DROP CONSTRAINT %I', c);
  END LOOP;
END
$outbox_upgrade$`);
  }
  return steps;
}

/**
 * Reads what `setup()` needs to know of an existing table: whether it exists, whether
 * the version table does, and, for a table without one (version 1, or made by
 * drizzle-kit or by hand), its layout: a `destination` column, and a unique index on
 * `id` alone. Params: none.
 */
export function inspectSchemaSql(n: PostgresNames): string {
  return `SELECT to_regclass(${n.literal}) IS NOT NULL AS has_table,
  to_regclass('${n.versionTable}') IS NOT NULL AS has_version,
  EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(${n.literal}) AND attname = 'destination' AND NOT attisdropped) AS has_destination,
  ${idUniqueExpr(n)} AS id_unique`;
}

/** True when a unique index on `id` alone (not partial) holds: one row per message id. */
function idUniqueExpr(n: PostgresNames): string {
  return `EXISTS (SELECT 1 FROM pg_index AS i WHERE i.indrelid = to_regclass(${n.literal}) AND i.indisunique
    AND i.indnkeyatts = 1 AND i.indpred IS NULL
    AND i.indkey[0] = (SELECT attnum FROM pg_attribute WHERE attrelid = i.indrelid AND attname = 'id'))`;
}

/** Whether `id` alone is unique (a table below version 3), for an insert that wrote fewer rows than asked. */
export function idUniqueSql(n: PostgresNames): string {
  return `SELECT ${idUniqueExpr(n)} AS id_unique`;
}

/** The recorded schema version (NULL when the row is missing). Params: none. */
export function readVersionSql(n: PostgresNames): string {
  return `SELECT max(version) AS version FROM ${n.versionTable}`;
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
 * An id already in the table (committed, or written by this transaction; for any
 * destination) is reported as `duplicate` with nothing inserted, instead of raising a
 * unique violation, because an error would abort the caller's whole transaction. The
 * target-less `ON CONFLICT DO NOTHING` lets whichever unique index the table has
 * arbitrate: `id` alone (versions 1 and 2) or `(id, destination)` (version 3). `seqs`
 * lists what was written, for the undo when fewer rows were. `$10` NOTIFYs the channel;
 * the notification is delivered at commit. `$11` destinations.
 */
export function insertSql(n: PostgresNames): string {
  return `WITH input AS (
  SELECT * FROM unnest($1::text::text[], $2::text::text[], $3::text::text[], $4::text::text[], $5::text::text[], $6::text::text[], $7::text::bigint[], $8::text::bigint[], $9::text::bigint[], $11::text::text[])
    WITH ORDINALITY AS r(id, topic, key, payload, payload_bytes, headers, available_at, deliver_at, created_at, destination, ord)
),
guard AS (
  SELECT (SELECT o.id FROM ${n.qualified} AS o WHERE o.id IN (SELECT id FROM input) LIMIT 1) AS duplicate
),
ins AS (
  INSERT INTO ${n.qualified} (id, topic, key, payload, payload_bytes, headers, available_at, deliver_at, created_at, destination)
  SELECT r.id, r.topic, r.key, r.payload::json, decode(r.payload_bytes, 'base64'), r.headers::json,
    coalesce(r.deliver_at, least(r.available_at, ${dbNow()})), r.deliver_at, r.created_at, r.destination
  FROM input AS r, guard AS g
  WHERE g.duplicate IS NULL
  ORDER BY r.ord
  ON CONFLICT DO NOTHING
  RETURNING seq
)
SELECT (SELECT duplicate FROM guard) AS duplicate,
  count(*)::int AS n, to_json(array_agg(seq))::text AS seqs,
  CASE WHEN $10::boolean AND count(*) > 0 THEN pg_notify('${n.channel}', '') END AS notified
FROM ins`;
}

/**
 * The one-message insert of the one publisher (destination `""`, the column's default;
 * the common enqueue): scalar parameters and a VALUES row instead of ten arrays through
 * unnest, so it plans and runs in about half the time. Same contract as
 * {@link insertSql}: ON CONFLICT DO NOTHING never aborts the caller's transaction, and
 * an id already there (or inserted by a concurrent transaction that commits first)
 * comes back as `n = 0` with nothing written. It does not look for the id among other
 * destinations' rows: on a fan-out table (version 3) the one publisher's ids are unique
 * among its own rows, which matters only if an outbox with `publishers` and one without
 * share a table and an id (libSQL draws the same line).
 * Params: $1 id, $2 topic, $3 key, $4 payload, $5 base64 bytes, $6 headers,
 * $7 available_at, $8 deliver_at, $9 created_at, $10 notify.
 */
export function insertOneSql(n: PostgresNames): string {
  return `WITH ins AS (
  INSERT INTO ${n.qualified} (id, topic, key, payload, payload_bytes, headers, available_at, deliver_at, created_at)
  VALUES ($1::text, $2::text, $3::text, $4::text::json, decode($5::text, 'base64'), $6::text::json,
    coalesce($8::bigint, least($7::bigint, ${dbNow()})), $8::bigint, $9::bigint)
  ON CONFLICT DO NOTHING
  RETURNING 1
)
SELECT count(*)::int AS n,
  CASE WHEN $10::boolean AND count(*) > 0 THEN pg_notify('${n.channel}', '') END AS notified
FROM ins`;
}

/**
 * {@link insertOneSql} for a named destination (an outbox with `publishers` routing the
 * message to one destination): it binds the destination, and refuses an id that another
 * destination's row already has, which the unique index on `(id, destination)` of a
 * fan-out table lets through. The check probes the unique index the insert probes
 * next. Params: as {@link insertOneSql}'s, and $11 destination.
 */
export function insertOneCheckedSql(n: PostgresNames): string {
  return `WITH ins AS (
  INSERT INTO ${n.qualified} (id, topic, key, payload, payload_bytes, headers, available_at, deliver_at, created_at, destination)
  SELECT $1::text, $2::text, $3::text, $4::text::json, decode($5::text, 'base64'), $6::text::json,
    coalesce($8::bigint, least($7::bigint, ${dbNow()})), $8::bigint, $9::bigint, $11::text
  WHERE NOT EXISTS (SELECT 1 FROM ${n.qualified} WHERE id = $1::text)
  ON CONFLICT DO NOTHING
  RETURNING 1
)
SELECT count(*)::int AS n,
  CASE WHEN $10::boolean AND count(*) > 0 THEN pg_notify('${n.channel}', '') END AS notified
FROM ins`;
}

/**
 * Compensates an insert that wrote fewer rows than asked: removes the rows it did
 * write, by seq (with fan-out an id alone may name another transaction's rows), and
 * says which they were. $1 seqs.
 */
export function uninsertSql(n: PostgresNames): string {
  return `DELETE FROM ${n.qualified} WHERE seq = ANY($1::text::bigint[]) RETURNING id, destination`;
}

/**
 * The claim lock, taken in shared mode: claims of this version run side by side (each
 * keeps per-key order on its own, see {@link claimSql}), and settles take it shared too.
 * It still excludes the claims of earlier builds, which take it exclusively and rely on
 * seeing every other claim committed, so relays of both can share a table during a
 * rolling upgrade. It also turns sorts off for the claim transaction
 * ({@link CLAIM_SETTINGS}).
 */
function claimLockSql(n: PostgresNames): string {
  return `SELECT pg_advisory_xact_lock_shared(${lockArgs(n, 0)}), set_config('enable_sort', 'off', true)`;
}

/**
 * Planner settings of the claim. With a destination equality leading claim_dest_idx, a
 * low row estimate (a table not analyzed yet, a column just added, a destination that
 * was rare when it was) made the planner fetch every due row of the destination through
 * a bitmap scan, run the key barrier on each, and sort them, rather than walk the index
 * in seq order and stop at the limit: linear in the backlog, about ten times slower on
 * 5,000 rows. Nothing else in the claim needs a sort (its aggregate and joins hash).
 */
const CLAIM_SETTINGS = "SET enable_sort = off";

/** The transaction-path claim's "now": the relay's `$1`, or the database's clock when NULL. */
const CLAIM_NOW = `coalesce($1::bigint, ${dbNow()})`;

/**
 * Leases claimable rows of one destination: due (pending and available, or processing
 * with an expired lease) and not behind an earlier unsettled row of the same key and
 * destination that is not itself claimable, in seq order. claim_dest_idx drives the
 * scan (equality on destination, then seq order), key_dest_idx the barrier; the update
 * finds the chosen rows by primary key (`= ANY(ARRAY(…))`, never a join that the planner
 * may turn into a hash join over a sequential scan).
 *
 * Claims run concurrently (no exclusive lock: one serialized every claim's scan and
 * update, and at four relays it was the limit). The race that lock closed: message n of
 * a key is held by another relay's uncommitted claim (or by a late settle), so this
 * claim skips n (SKIP LOCKED) while its barrier still sees n's old, claimable version,
 * and would take n+1. `skipped` finds such rows: keyed rows of the destination this
 * statement's snapshot sees as claimable, before its last claimed row, of a key it
 * claims, that it did not get to lock (held by someone, or changed since the snapshot).
 * A claimed row behind a skipped row of its key is left alone (its row lock ends with
 * the statement), so a claim takes of each key only rows with no unsettled row before
 * them that it does not also take. It is empty unless two relays meet on a key; the
 * one-time filter skips its scan when the batch holds no keyed row. MATERIALIZED: it
 * runs once; inlined into the join, a low row estimate for `c` made it a nested loop
 * that ran it again for every claimed row.
 * Params: $1 now (NULL: the database's clock), $2 limit, $3 token, $4 lease in ms,
 * $5 destination; or, inside the claim function, the expressions in `p` (now, limit,
 * token, lease end, destination).
 */
function claimSql(
  n: PostgresNames,
  p: readonly [string, string, string, string, string] = [
    CLAIM_NOW,
    "$2",
    "$3",
    `(${CLAIM_NOW} + $4::bigint)`,
    "$5::text",
  ],
): string {
  return `WITH c AS (
  SELECT c.seq, c.key FROM ${n.qualified} AS c
  WHERE c.destination = ${p[4]} AND c.available_at <= ${p[0]}
    AND (c.key IS NULL OR NOT EXISTS (
      SELECT 1 FROM ${n.qualified} AS b
      WHERE b.destination = ${p[4]} AND b.key = c.key AND b.seq < c.seq AND b.available_at > ${p[0]}
    ))
  ORDER BY c.seq
  LIMIT ${p[1]}
  FOR UPDATE SKIP LOCKED
),
skipped AS MATERIALIZED (
  SELECT s.key, min(s.seq) AS seq FROM ${n.qualified} AS s
  WHERE EXISTS (SELECT 1 FROM c WHERE c.key IS NOT NULL) AND s.destination = ${p[4]}
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
 * for the session. The planner runs with {@link CLAIM_SETTINGS}.
 * Column names win over the output names (`#variable_conflict use_column`).
 * CREATE OR REPLACE cannot change a function's arguments or result columns: a version
 * that changes them takes a new name (and drops the old, {@link dropOldClaimFunctionsSql},
 * or redefines it, {@link v1ClaimFunctionSql}).
 */
export function claimFunctionSql(n: PostgresNames): string {
  return `CREATE OR REPLACE FUNCTION ${n.claimFunction}(p_now bigint, p_limit integer, p_token text, p_lease bigint, p_destination text)
RETURNS TABLE (seq bigint, id text, topic text, key text, payload text, payload_bytes text, headers text, attempts integer, created_at bigint)
LANGUAGE plpgsql VOLATILE ${CLAIM_SETTINGS} AS $outbox_claim$
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
  RETURN QUERY ${claimSql(n, ["v_now", "p_limit", "p_token", "v_now + p_lease", "p_destination"])};
END
$outbox_claim$`;
}

/**
 * The claim function of schema version 1 (same name and signature, so CREATE OR
 * REPLACE), now claiming only destination `""` rows: a relay of that version still
 * running during an upgrade never takes another destination's row. Not dropped, so
 * those relays keep claiming in one round trip.
 */
export function v1ClaimFunctionSql(n: PostgresNames): string {
  return `CREATE OR REPLACE FUNCTION ${n.v1ClaimFunction}(p_now bigint, p_limit integer, p_token text, p_lease bigint)
RETURNS TABLE (seq bigint, id text, topic text, key text, payload text, payload_bytes text, headers text, attempts integer, created_at bigint)
LANGUAGE sql VOLATILE AS $outbox_claim$
SELECT * FROM ${n.claimFunction}(p_now, p_limit, p_token, p_lease, '')
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
 * $3 token, $4 lease in ms, $5 destination.
 */
function claimCallSql(n: PostgresNames): string {
  return `SELECT * FROM ${n.claimFunction}($1, $2, $3, $4, $5)`;
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
 * Counts per destination, topic and status; since when the longest-waiting due row has
 * waited; and the keys a dead row blocks, per destination. The oldest unscheduled row is
 * looked up per destination on claim_dest_idx: `d` skips through the index from one
 * destination to the next (a loose index scan) and keeps each one's first unsettled
 * seq; each lookup then reads on from there. Row comparisons and `ORDER BY destination,
 * seq` rather than `destination = …`: with an equality, the planner may take the primary
 * key for the seq order, which walks every settled row that retention keeps at the head
 * of the table. $1 now.
 */
function statsSql(n: PostgresNames): string {
  return `SELECT
  (SELECT json_agg(json_build_array(destination, topic, status, c)) FROM (
    SELECT destination, topic, status, count(*) AS c FROM ${n.qualified} GROUP BY destination, topic, status
  ) counts)::text AS counts,
  LEAST(
    (WITH RECURSIVE d AS (
      (SELECT destination, seq FROM ${n.qualified} WHERE available_at IS NOT NULL ORDER BY destination, seq LIMIT 1)
      UNION ALL
      SELECT x.destination, x.seq FROM d, LATERAL (
        SELECT o.destination, o.seq FROM ${n.qualified} AS o
        WHERE o.available_at IS NOT NULL AND o.destination > d.destination ORDER BY o.destination, o.seq LIMIT 1
      ) AS x
    )
    SELECT min(x.created_at) FROM d, LATERAL (
      SELECT o.destination, o.created_at FROM ${n.qualified} AS o
      WHERE o.available_at IS NOT NULL AND (o.destination, o.seq) >= (d.destination, d.seq)
        AND o.deliver_at IS NULL AND o.status <> 'dead'
      ORDER BY o.destination, o.seq LIMIT 1
    ) AS x WHERE x.destination = d.destination),
    (SELECT min(deliver_at) FROM ${n.qualified} WHERE available_at IS NOT NULL AND deliver_at IS NOT NULL AND deliver_at <= $1 AND status <> 'dead')
  ) AS since,
  (SELECT count(*) FROM (
    SELECT DISTINCT destination, key FROM ${n.qualified} WHERE available_at = ${BLOCKED} AND key IS NOT NULL
  ) AS b)::int AS blocked`;
}

/**
 * Moves settled rows (and dead rows that block their key) back to pending.
 * $1 relay now, $2 status, $3 topic or NULL, $4 ids or NULL, $5 use the database's clock,
 * $6 destination or NULL.
 */
function requeueSql(n: PostgresNames): string {
  return `UPDATE ${n.qualified}
SET status = 'pending', available_at = CASE WHEN $5::boolean THEN ${dbNow()} ELSE $1::bigint END, attempts = 0, locked_by = NULL, settled_at = NULL
WHERE (available_at IS NULL OR available_at = ${BLOCKED}) AND status = $2
  AND ($3::text IS NULL OR topic = $3)
  AND ($4::text::text[] IS NULL OR id = ANY($4::text::text[]))
  AND ($6::text IS NULL OR destination = $6)`;
}

/**
 * Rows in seq order after $5, filtered by $1 status, $2 topic, $3 key, $6 destination
 * (NULL: any); at most $4.
 */
function inspectSql(n: PostgresNames): string {
  return `SELECT seq, id, topic, key, status, attempts, available_at, locked_by, last_error, created_at, settled_at,
  deliver_at, payload::text AS payload, encode(payload_bytes, 'base64') AS payload_bytes, headers::text AS headers, destination
FROM ${n.qualified}
WHERE seq > $5 AND ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR topic = $2) AND ($3::text IS NULL OR key = $3)
  AND ($6::text IS NULL OR destination = $6)
ORDER BY seq LIMIT $4`;
}

/**
 * Deletes up to $5 settled rows of $1 status (a dead row that blocks its key too),
 * settled before $2 (NULL: any), of $3 topic, $4 ids and $6 destination (NULL: any).
 * Rows are locked SKIP LOCKED, so a purge never waits on, or deadlocks with, a relay's
 * settle.
 */
function purgeSql(n: PostgresNames): string {
  return `DELETE FROM ${n.qualified} WHERE seq = ANY (ARRAY(
  SELECT seq FROM ${n.qualified}
  WHERE status = $1 AND (available_at IS NULL OR available_at = ${BLOCKED})
    AND ($2::bigint IS NULL OR settled_at < $2) AND ($3::text IS NULL OR topic = $3)
    AND ($4::text::text[] IS NULL OR id = ANY($4::text::text[])) AND ($6::text IS NULL OR destination = $6)
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
  /** Counts per destination, topic and status, the oldest due row, the blocked keys. */
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
  // $1 now (NULL: the database's clock), $2 limit, $3 token, $4 lease in ms, $5 destination.
  const claimValues = (
    r: ClaimRequest,
  ) => [r.clock === "relay" ? r.now : null, r.limit, r.token, r.lockedUntil - r.now, r.destination ?? ""];
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
      values: [
        r.now,
        r.status,
        r.topic ?? null,
        r.ids ? pgArray(r.ids) : null,
        r.clock !== "relay",
        r.destination ?? null,
      ],
    }),
    inspect: (o) => ({ text: text.inspect, values: inspectValues(o) }),
    purge: (r) => ({
      text: text.purge,
      values: [r.status, r.before, r.topic ?? null, r.ids ? pgArray(r.ids) : null, r.limit, r.destination ?? null],
    }),
  };
}
