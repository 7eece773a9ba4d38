/**
 * MySQL 8 and MariaDB (10.6 or later) storage for @x/outbox, on mysql2 (`mysql2/promise`).
 *
 * - `enqueue(conn, …)` takes the connection of the caller's transaction: a mysql2/promise
 *   `Connection` or `PoolConnection` (`await pool.getConnection()`) on which the caller
 *   called `beginTransaction()`. A `Pool` is refused: it runs each statement on whichever
 *   connection is free, outside the caller's transaction. A connection with no
 *   transaction open writes in autocommit, the insert its own transaction.
 * - Claims are leases taken with `FOR UPDATE SKIP LOCKED` in short READ COMMITTED
 *   transactions on the relay's pool; claims of many relays run side by side, and per-key
 *   order holds with any number of them (see `RelayQueries` in sql.ts for the race and
 *   how it is closed). An idle poll is one plain SELECT.
 * - Rows have a destination (`""` for the one `publisher`); a claim takes one
 *   destination's rows, and a key's order holds per destination.
 * - `setup()` creates the table at schema version 2 (3 with `fanOut`), under a named
 *   lock (GET_LOCK), and records the version in `<table>_schema`.
 * - Times are epoch ms (BIGINT) on the database's clock unless `clock: "relay"`.
 *
 * @example
 * ```ts
 * import mysql from "mysql2/promise";
 * import { createOutbox } from "@x/outbox";
 * import { mysqlStorage } from "@x/outbox/mysql";
 *
 * const pool = mysql.createPool({ uri: "mysql://app@localhost/app" });
 * const outbox = createOutbox({ storage: mysqlStorage(pool), publisher: async (m) => console.log(m.topic) });
 * await outbox.setup();
 *
 * const conn = await pool.getConnection();
 * try {
 *   await conn.beginTransaction();
 *   await conn.query("INSERT INTO orders (id) VALUES (?)", ["o-1"]);
 *   await outbox.enqueue(conn, { topic: "orders.created", key: "o-1", payload: { id: "o-1" } });
 *   await conn.commit();
 * } catch (error) {
 *   await conn.rollback();
 *   throw error;
 * } finally {
 *   conn.release();
 * }
 * ```
 *
 * @module
 */

import { abortable } from "../shared/abort.ts";
import { hasMethods } from "../shared/client.ts";
import { OutboxConfigError, OutboxMessageError, OutboxStorageError } from "../../src/errors.ts";
import { checkOptions } from "../../src/rules.ts";
import { checkIdentifier, identifier } from "../shared/identifier.ts";
import { countsByTopic, num, numOrNull, outboxRow } from "../shared/row.ts";
import { cleanupSettled } from "../shared/settle.ts";
import type {
  ClaimedRow,
  ClaimRequest,
  CleanupRequest,
  NewOutboxRow,
  OutboxRow,
  OutboxStorage,
  PurgeRequest,
  RequeueRequest,
  SettleRequest,
  SetupOptions,
  SignalOptions,
  StorageStats,
} from "../../src/types.ts";
import { isDuplicate, mysqlOutboxErrors } from "./errors.ts";
import {
  createStatements,
  createTableSql,
  DEFAULT_SCHEMA_VERSION,
  existingIdSql,
  INDEXES_SQL,
  insertSql,
  LAYOUT_SQL,
  MAX_KEY_BYTES,
  mysqlNames,
  readVersionSql,
  recordVersionSql,
  relayQueries,
  SCHEMA_VERSION,
  type SelectThenApply,
  type SqlQuery,
  tableKeys,
  versionTableSql,
} from "./sql.ts";

export { SCHEMA_VERSION };

/** A statement with mysql2's per-query options (`QueryOptions`). */
export interface MysqlQueryOptions {
  sql: string;
  values?: unknown;
  rowsAsArray?: boolean;
  nestTables?: boolean;
  namedPlaceholders?: boolean;
  /** `true`: mysql2's own conversions (a function of the pool's is not used). */
  typeCast?: boolean | ((field: never, next: never) => unknown);
}

/**
 * What the adapter calls on a mysql2/promise connection or pool: `query` with an options
 * object (values are always bound through mysql2's escaping; only checked identifiers
 * are spliced into the text). mysql2 resolves with `[rows or result header, fields]`.
 */
export interface MysqlQueryable {
  query(options: MysqlQueryOptions): Promise<[unknown, unknown]>;
}

/**
 * Runs a statement with the options the adapter reads its results by, whatever the
 * pool's own (`rowsAsArray`, `nestTables`, `namedPlaceholders` or a `typeCast` function
 * would change what rows look like or how `?` binds).
 */
function exec(db: MysqlQueryable, sql: string, values?: unknown): Promise<[unknown, unknown]> {
  return db.query({ sql, values, rowsAsArray: false, nestTables: false, namedPlaceholders: false, typeCast: true });
}

/** A mysql2/promise `Connection` or `PoolConnection`: what `enqueue` writes through. */
export interface MysqlConnection extends MysqlQueryable {
  beginTransaction(): Promise<void>;
  commit(): Promise<void>;
  rollback(): Promise<void>;
}

/** A connection the pool lends (mysql2/promise `PoolConnection`). */
export interface MysqlPoolConnection extends MysqlConnection {
  release(): void;
}

/** A mysql2/promise `Pool` (`mysql.createPool(…)` from `mysql2/promise`): the relay's own statements. */
export interface MysqlPool extends MysqlQueryable {
  getConnection(): Promise<MysqlPoolConnection>;
}

/**
 * What `enqueue` accepts: a mysql2/promise `Connection` or `PoolConnection`, normally with
 * a transaction open (`await conn.beginTransaction()`). Not a `Pool`, not a callback-style
 * mysql2 connection (use its `.promise()`).
 */
export type MysqlTx = MysqlConnection;

/** Options of {@link mysqlStorage}. */
export interface MysqlStorageOptions {
  /** Table name, a plain identifier (default `"outbox"`), in the connection's database. */
  table?: string;
}

/** The MySQL / MariaDB storage. */
export interface MysqlStorage extends OutboxStorage<MysqlTx, never> {
  /** The table name. */
  readonly table: string;
  /** The DDL `setup()` runs on a fresh table (schema version 2), for hand-written migrations. */
  readonly schemaSql: readonly string[];
  /**
   * The table's schema version: the one `setup()` recorded in `<table>_schema`, or what
   * its layout shows when that is more; `null` when the table does not exist.
   */
  schemaVersion(options?: SignalOptions): Promise<number | null>;
}

/**
 * Returns the DDL of a fresh table (the table with its indexes, the version table and
 * its row), for teams that write their own migrations.
 *
 * @param options `table` (default `"outbox"`), and `fanOut`: schema version 3, a row
 *   per destination for one message id (default: version 2).
 * @returns SQL statements, each idempotent.
 */
export function mysqlSchema(options: { table?: string; fanOut?: boolean } = {}): string[] {
  return createStatements(mysqlNames(checkIdentifier(options.table ?? "outbox", "table")), {
    fanOut: options.fanOut === true,
  });
}

/** A result header of an INSERT/UPDATE/DELETE. */
interface ResultHeader {
  affectedRows?: number;
  serverStatus?: number;
}

type Row = Record<string, unknown>;

/** SERVER_STATUS_IN_TRANS: the connection has a transaction open. */
const IN_TRANSACTION = 1;

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A VARBINARY (a Buffer from mysql2) or text column as a string. */
function text(value: unknown): string {
  return typeof value === "string" ? value : ArrayBuffer.isView(value) ? decoder.decode(value) : String(value);
}

function textOrNull(value: unknown): string | null {
  return value === null || value === undefined ? null : text(value);
}

/** A LONGBLOB as a plain Uint8Array over the same memory. */
function bytes(value: unknown): Uint8Array {
  const view = value as ArrayBufferView;
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/** The stored payload: JSON text, or bytes. */
function bodyOf(row: Row): string | Uint8Array {
  return row.payload !== null && row.payload !== undefined ? text(row.payload) : bytes(row.payload_bytes);
}

function isPool(value: unknown): boolean {
  return hasMethods(value, "getConnection");
}

/** A mysql2/promise connection: promise methods, and the core connection it wraps. */
function isPromiseConnection(value: unknown): value is MysqlConnection {
  return hasMethods(value, "query", "beginTransaction", "commit", "rollback") &&
    typeof (value as { connection?: unknown }).connection === "object" && !isPool(value);
}

/** Checks what `enqueue` was given; see {@link MysqlTx}. */
function checkTx(tx: unknown): asserts tx is MysqlConnection {
  if (isPool(tx)) {
    throw new OutboxConfigError(
      "enqueue needs the connection of your transaction, not a pool: a pool runs each statement on any free " +
        "connection, outside your transaction. Use `const conn = await pool.getConnection(); " +
        "await conn.beginTransaction(); await outbox.enqueue(conn, …); await conn.commit()`",
      "tx",
    );
  }
  if (!isPromiseConnection(tx)) {
    const callbackStyle = hasMethods(tx, "query", "promise");
    throw new OutboxConfigError(
      callbackStyle
        ? "enqueue needs a mysql2/promise connection; this one is callback-style: pass `conn.promise()`"
        : "enqueue needs a mysql2/promise Connection or PoolConnection (with beginTransaction() called) " +
          "as its first argument",
      "tx",
    );
  }
}

/** Most bytes of SQL per INSERT statement: well under max_allowed_packet (16 MiB on MariaDB, 64 MiB on MySQL 8). */
const CHUNK_BYTES = 4 * 1024 * 1024;

/** Rows split into statements of at most {@link CHUNK_BYTES} of SQL (roughly: bytes go as hex). */
function chunks(rows: readonly NewOutboxRow[]): NewOutboxRow[][] {
  const out: NewOutboxRow[][] = [];
  let current: NewOutboxRow[] = [];
  let size = 0;
  for (const row of rows) {
    const body = typeof row.body === "string" ? row.body.length * 2 : row.body.byteLength * 2;
    const rowSize = 200 + body + (row.headers?.length ?? 0) * 2 + row.id.length * 3 + (row.key?.length ?? 0) * 3;
    if (current.length > 0 && size + rowSize > CHUNK_BYTES) {
      out.push(current);
      current = [];
      size = 0;
    }
    current.push(row);
    size += rowSize;
  }
  if (current.length > 0) out.push(current);
  return out;
}

/** Whether rows hold one id for two destinations: a fan-out message. */
function fansOut(rows: readonly NewOutboxRow[]): string | undefined {
  const seen = new Map<string, string>();
  for (const r of rows) {
    const destination = r.destination ?? "";
    const other = seen.get(r.id);
    if (other !== undefined && other !== destination) return r.id;
    seen.set(r.id, destination);
  }
  return undefined;
}

function duplicateError(id: string | undefined, count: number, cause?: unknown): OutboxMessageError {
  return new OutboxMessageError(
    `Message id${id === undefined ? "" : ` ${JSON.stringify(id)}`} is already in the outbox; ids must be unique`,
    count === 1 ? "id" : "",
    cause === undefined ? undefined : { cause },
  );
}

/**
 * Creates a MySQL / MariaDB storage on a mysql2/promise pool.
 *
 * @param pool The relay's pool: `mysql.createPool(…)` from `mysql2/promise`. Its
 *   connections need the utf8mb4 character set (mysql2's default).
 * @param options `table`.
 * @returns The storage to pass to `createOutbox`.
 * @throws {OutboxConfigError} When `pool` is not a mysql2/promise pool or `table` is not a plain identifier.
 */
export function mysqlStorage(pool: MysqlPool, options: MysqlStorageOptions = {}): MysqlStorage {
  if (!hasMethods(pool, "query", "getConnection")) {
    throw new OutboxConfigError(
      'mysqlStorage needs a mysql2/promise Pool: mysql.createPool(…) from "mysql2/promise"',
      "pool",
    );
  }
  checkOptions("mysqlStorage", options, { table: identifier });
  const table = options.table ?? "outbox";
  const n = mysqlNames(table);
  const schemaSql = createStatements(n);
  const q = relayQueries(n);
  const wrap = mysqlOutboxErrors(n.table);

  async function run<T = Row[]>(what: string, query: SqlQuery, signal?: AbortSignal): Promise<T> {
    try {
      // On abort the call rejects at once; the statement runs to its end on the server.
      const [result] = await abortable(signal, () => exec(pool, query.sql, query.values));
      return result as T;
    } catch (error) {
      if (signal?.aborted && error === signal.reason) throw error;
      throw wrap(what, error);
    }
  }

  /**
   * Selects the seqs, then changes those rows by primary key, in steps of 1,000 (see
   * SelectThenApply in sql.ts); resolves with the count changed.
   */
  async function selectThenApply(what: string, change: SelectThenApply, signal?: AbortSignal): Promise<number> {
    const rows = await run<Row[]>(what, change.select, signal);
    let count = 0;
    for (let i = 0; i < rows.length; i += 1_000) {
      const seqs = rows.slice(i, i + 1_000).map((row) => num(row.seq));
      count += (await run<ResultHeader>(what, change.apply(seqs), signal)).affectedRows ?? 0;
    }
    return count;
  }

  /** Runs `fn` on a connection of the pool, then gives it back. */
  async function withConnection<T>(fn: (conn: MysqlPoolConnection) => Promise<T>): Promise<T> {
    const conn = await pool.getConnection();
    try {
      return await fn(conn);
    } finally {
      conn.release();
    }
  }

  /**
   * The locked rows a claim may keep: a keyed row only if no unsettled row of its key
   * and destination comes before it that the claim does not hold (step 3 of the claim,
   * see RelayQueries in sql.ts). Rows are in seq order.
   */
  async function keepInOrder(conn: MysqlQueryable, request: ClaimRequest, locked: Row[]): Promise<Row[]> {
    const keyed = locked.filter((row) => row.key !== null);
    if (keyed.length === 0) return locked;
    const mine = locked.map((row) => num(row.seq));
    const keys = [...new Set(keyed.map((row) => text(row.key)))];
    const check = q.skipped(request, keys, mine, Math.max(...mine));
    const [skipped] = await exec(conn, check.sql, check.values);
    if ((skipped as Row[]).length === 0) return locked;
    const first = new Map((skipped as Row[]).map((row) => [text(row.key), num(row.seq)]));
    return locked.filter((row) => {
      const before = row.key === null ? undefined : first.get(text(row.key));
      return before === undefined || num(row.seq) < before;
    });
  }

  /** The schema version of the table, 0 when there is none. */
  async function readVersion(db: MysqlQueryable): Promise<number> {
    const [rows] = await exec(db, LAYOUT_SQL, [
      n.name,
      n.versionName,
      n.name,
      n.idIndex,
      n.name,
      n.idDestinationIndex,
    ]);
    const layout = (rows as Row[])[0] ?? {};
    if (num(layout.has_table) === 0) return 0;
    const shown = num(layout.has_id_dest) > 0 && num(layout.has_id) === 0 ? 3 : 2;
    if (num(layout.has_version) === 0) return shown;
    const [recorded] = await exec(db, readVersionSql(n));
    return Math.max(shown, num((recorded as Row[])[0]?.version ?? 0));
  }

  async function setupTable(conn: MysqlQueryable, fanOut: boolean, signal?: AbortSignal): Promise<void> {
    const found = await readVersion(conn);
    if (found > SCHEMA_VERSION) {
      throw new OutboxConfigError(
        `MySQL table ${n.table}: schema version ${found} is newer than this @x/outbox (${SCHEMA_VERSION}); ` +
          "upgrade the package",
      );
    }
    // Never down: a version 3 table stays at 3 when asked for the default.
    const target = Math.max(found, fanOut ? SCHEMA_VERSION : DEFAULT_SCHEMA_VERSION);
    const steps: string[] = [];
    if (found === 0) {
      steps.push(createTableSql(n, { fanOut: target === SCHEMA_VERSION }));
    } else {
      // An existing table: add every key it lacks (the fan-out id key of 2 → 3, or one
      // dropped by hand, as Postgres' and libSQL's setup() recreate a missing index),
      // and at version 3 drop the key on id alone; one ALTER, an online DDL in InnoDB.
      const [rows] = await exec(conn, INDEXES_SQL, [n.name]);
      const have = new Set((rows as Row[]).map((row) => text(row.name)));
      const fanOut = target === SCHEMA_VERSION;
      const parts = tableKeys(n, { fanOut }).filter(([name]) => !have.has(name)).map(([, key]) => `ADD ${key}`);
      if (fanOut && have.has(n.idIndex)) parts.push(`DROP INDEX \`${n.idIndex}\``);
      if (parts.length > 0) steps.push(`ALTER TABLE ${n.table} ${parts.join(", ")}`);
    }
    steps.push(versionTableSql(n), recordVersionSql(n, target));
    // MySQL commits DDL at once (no transactional DDL): every step is idempotent, and
    // the version is recorded last, so a setup() cut short is finished by the next one.
    for (const step of steps) {
      signal?.throwIfAborted();
      await exec(conn, step);
    }
  }

  return {
    name: "mysql",
    table,
    schemaSql,

    async setup(setupOptions: SetupOptions = {}) {
      const signal = setupOptions.signal;
      try {
        await abortable(signal, () =>
          withConnection(async (conn) => {
            // A named lock serializes concurrent setups (CREATE TABLE IF NOT EXISTS and
            // ALTER race on the data dictionary): the later ones find nothing left to do.
            const [locked] = await exec(conn, "SELECT GET_LOCK(?, 60) AS ok", [n.setupLock]);
            if (num((locked as Row[])[0]?.ok) !== 1) {
              throw new OutboxStorageError(`Could not set up MySQL table ${n.table}: another setup() held its lock`);
            }
            try {
              await setupTable(conn, setupOptions.fanOut === true, signal);
            } finally {
              await exec(conn, "SELECT RELEASE_LOCK(?)", [n.setupLock]).catch(() => {});
            }
          }));
      } catch (error) {
        if (signal?.aborted && error === signal.reason) throw error;
        if (error instanceof OutboxConfigError) throw error;
        throw wrap("create the outbox table", error);
      }
    },

    async insert(tx, rows) {
      checkTx(tx);
      if (rows.length === 0) return;
      for (let i = 0; i < rows.length; i++) {
        const key = rows[i]!.key;
        // A key of up to 1,024 characters can take 3,072 UTF-8 bytes; the indexes that
        // keep key order hold 2,048 (InnoDB's limit is 3,072 bytes per index).
        if (key !== null && encoder.encode(key).byteLength > MAX_KEY_BYTES) {
          throw new OutboxMessageError(
            `Message key is longer than the MySQL adapter's ${MAX_KEY_BYTES} UTF-8 bytes`,
            rows.length === 1 ? "key" : `[${i}].key`,
          );
        }
      }
      const statements = chunks(rows).map((chunk) => insertSql(n, chunk));
      try {
        if (rows.some((r) => r.destination)) {
          // A named destination (fan-out): the table's unique index may be on (id,
          // destination), which lets the same id through for another destination. A
          // plain read, no locks (a locking read's gap locks would deadlock writers).
          const [found] = await exec(tx, existingIdSql(n), [[...new Set(rows.map((r) => r.id))]]);
          const hit = (found as Row[])[0];
          if (hit) throw duplicateError(text(hit.id), rows.length);
        }
        if (statements.length === 1) {
          await exec(tx, statements[0]!.sql, statements[0]!.values);
          return;
        }
        // Several statements: a savepoint makes them all or none. Its OK packet tells
        // whether a transaction is open; in autocommit, open one of our own.
        const [mark] = await exec(tx, "SAVEPOINT x_outbox_enqueue");
        const own = ((mark as ResultHeader).serverStatus! & IN_TRANSACTION) === 0;
        if (own) await exec(tx, "START TRANSACTION");
        try {
          for (const s of statements) await exec(tx, s.sql, s.values);
          await exec(tx, own ? "COMMIT" : "RELEASE SAVEPOINT x_outbox_enqueue");
        } catch (error) {
          await exec(tx, own ? "ROLLBACK" : "ROLLBACK TO SAVEPOINT x_outbox_enqueue").catch(() => {});
          throw error;
        }
      } catch (error) {
        throw insertError(error, rows);
      }
    },

    async claim(request: ClaimRequest): Promise<ClaimedRow[]> {
      // Twice the batch: a claim racing others for the same rows still finds enough.
      const window = Math.max(request.limit * 2, 20);
      let found = await run<Row[]>("claim messages", q.candidates(request, 0, window));
      if (found.length === 0) return [];
      let conn: MysqlPoolConnection | undefined;
      try {
        conn = await pool.getConnection();
        // The next transaction only; the pool's connections keep their own default.
        await exec(conn, "SET TRANSACTION ISOLATION LEVEL READ COMMITTED");
        await exec(conn, "START TRANSACTION");
        try {
          // Every row locked so far, and those of them the key check keeps.
          let locked: Row[] = [];
          let rows: Row[] = [];
          for (;;) {
            const seqs = found.map((row) => num(row.seq));
            const lock = q.lock(request, seqs, request.limit - rows.length);
            const [more] = await exec(conn, lock.sql, lock.values);
            locked = locked.concat(more as Row[]);
            rows = await keepInOrder(conn, request, locked);
            // Other claims hold some candidates, or rows behind theirs were dropped: look
            // past them, as Postgres' SKIP LOCKED scan goes on (see RelayQueries in sql.ts).
            if (rows.length >= request.limit || found.length < window) break;
            const next = q.candidates(request, seqs[seqs.length - 1]!, window);
            found = (await exec(conn, next.sql, next.values))[0] as Row[];
            if (found.length === 0) break;
          }
          if (rows.length > 0) {
            const lease = q.lease(request, rows.map((row) => num(row.seq)));
            await exec(conn, lease.sql, lease.values);
          }
          await exec(conn, "COMMIT");
          return rows.map((row) => ({
            seq: num(row.seq),
            id: text(row.id),
            topic: text(row.topic),
            key: textOrNull(row.key),
            body: bodyOf(row),
            headers: textOrNull(row.headers),
            attempts: num(row.attempts) + 1,
            createdAt: num(row.created_at),
          }));
        } catch (error) {
          await exec(conn, "ROLLBACK").catch(() => {});
          throw error;
        }
      } catch (error) {
        throw wrap("claim messages", error);
      } finally {
        conn?.release();
      }
    },

    async settle(request: SettleRequest): Promise<number> {
      let count = 0;
      for (const statement of q.settle(request)) {
        count += (await run<ResultHeader>("settle messages", statement)).affectedRows ?? 0;
      }
      return count;
    },

    async cleanup(request: CleanupRequest): Promise<number> {
      return await cleanupSettled(
        request,
        (status, before, limit) => selectThenApply("clean up settled messages", q.cleanup(status, before, limit)),
      );
    },

    async stats(now: number, statsOptions = {}): Promise<StorageStats> {
      const signal = statsOptions.signal;
      const groups = await run<Row[]>("read outbox stats", q.counts(), signal);
      const [row] = await run<Row[]>("read outbox stats", q.oldest(now), signal);
      const since = numOrNull(row?.since);
      return {
        ...countsByTopic(groups.map((g) => [text(g.topic), text(g.status), g.n] as const)),
        destinations: countsByTopic(groups.map((g) => [text(g.destination), text(g.status), g.n] as const)).topics,
        oldestPendingAt: since === null || since >= Number.MAX_SAFE_INTEGER ? null : since,
        blockedKeys: num(row?.blocked ?? 0),
      };
    },

    async requeue(request: RequeueRequest): Promise<number> {
      return await selectThenApply("requeue messages", q.requeue(request), request.signal);
    },

    async inspect(inspectOptions = {}): Promise<OutboxRow[]> {
      const rows = await run<Row[]>("list messages", q.inspect(inspectOptions), inspectOptions.signal);
      return rows.map((row) => ({
        ...outboxRow({
          ...row,
          id: text(row.id),
          key: textOrNull(row.key),
          payload: bodyOf(row),
        }),
        destination: text(row.destination),
      }));
    },

    async purge(request: PurgeRequest): Promise<number> {
      return await selectThenApply("purge messages", q.purge(request), request.signal);
    },

    async schemaVersion(versionOptions: SignalOptions = {}): Promise<number | null> {
      try {
        const version = await abortable(versionOptions.signal, () => readVersion(pool));
        return version === 0 ? null : version;
      } catch (error) {
        if (versionOptions.signal?.aborted && error === versionOptions.signal.reason) throw error;
        throw wrap("read the schema version", error);
      }
    },
  };

  /**
   * Maps an insert failure to the error a caller can act on. ER_DUP_ENTRY names the
   * index: the one on `id` alone (schema version 2) failing for a fan-out message's
   * rows means the table is not ready for fan-out; otherwise the id was used before.
   * A failed statement leaves the caller's transaction open (InnoDB rolls back the
   * statement), except a deadlock, which rolls back all of it.
   */
  function insertError(error: unknown, rows: readonly NewOutboxRow[]): Error {
    if (
      error instanceof OutboxStorageError || error instanceof OutboxMessageError ||
      error instanceof OutboxConfigError
    ) return error;
    if (isDuplicate(error)) {
      const message = error instanceof Error ? error.message : String(error);
      const fanOut = fansOut(rows);
      if (fanOut !== undefined && new RegExp(`for key '(?:[^']*\\.)?${n.idIndex}'`).test(message)) {
        return new OutboxConfigError(
          `Could not enqueue message ${JSON.stringify(fanOut)} for several destinations: MySQL table ${n.table} ` +
            "allows one row per message id (schema version 2). Run setup() of an outbox with publishers, " +
            "or `outbox setup --fan-out`, to upgrade the table to schema version 3",
          "",
          { cause: error },
        );
      }
      const one = rows.every((r) => r.id === rows[0]!.id);
      const entry = /Duplicate entry '(.*)' for key/s.exec(message)?.[1];
      const id = one ? rows[0]!.id : rows.find((r) => r.id === entry || entry?.startsWith(`${r.id}-`))?.id;
      return duplicateError(id, one ? 1 : rows.length, error);
    }
    return wrap("enqueue", error);
  }
}
