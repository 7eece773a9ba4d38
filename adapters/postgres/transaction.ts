/**
 * Transactions the adapter opens itself (setup, enqueue without a caller transaction,
 * the claim on a table without the claim function), shielded from a postgres.js 3.4
 * defect.
 *
 * When the connection of a `sql.begin()` dies (pg_terminate_backend, a PostgreSQL
 * restart, a network reset), postgres.js rejects the transaction at once, but if the
 * callback then settles, it still sends ROLLBACK or COMMIT on the closed socket. That
 * write throws from a `setImmediate` (`TypeError: Cannot read properties of null
 * (reading 'write')` at `nextWrite`, connection.js): nobody can catch it and it kills
 * the host process; it also leaves the connection unable to send its next startup
 * message (the next query on it waits out `connect_timeout`). Upstream:
 * porsager/postgres#1066, #1154, #1208.
 *
 * So when a query fails because the connection is gone, the callback never settles:
 * postgres.js has nothing to send, and `begin()` still rejects with its own
 * CONNECTION_CLOSED (it races the callback against the connection's close). The
 * pending callback holds only this transaction's closure and is collected with it.
 * Every other error settles normally, so postgres.js rolls back on a live connection.
 */

/** Error codes that mean the connection is gone (postgres.js codes and socket errors). */
const GONE = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_DESTROYED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "57P01", // admin_shutdown: pg_terminate_backend, smart/fast shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
]);

/** True when `error` means the transaction's connection is closed or closing. */
export function connectionGone(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { code, severity } = error as { code?: unknown; severity?: unknown };
  // FATAL and PANIC end the session: the server closes the connection after sending them.
  return (typeof code === "string" && GONE.has(code)) || severity === "FATAL" || severity === "PANIC";
}

const NEVER: Promise<never> = new Promise<never>(() => {});

/** What {@link transaction} needs of a postgres.js `sql`. */
export interface BeginsTransactions<Tx> {
  begin<T>(cb: (tx: Tx) => T | Promise<T>): Promise<unknown>;
}

/** A postgres.js `sql` whose `begin` also takes what follows BEGIN (`sql.begin(mode, cb)`). */
export interface BeginsTransactionsInMode<Tx> {
  begin<T>(mode: string, cb: (tx: Tx) => T | Promise<T>): Promise<unknown>;
}

/**
 * Settles as `work` does, except when it fails because the connection is gone: then it
 * never settles. For the body of a postgres.js transaction callback (also drizzle's
 * `db.transaction`, which wraps `sql.begin`); see the module comment.
 */
export async function unlessGone<T>(work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    if (connectionGone(error)) return NEVER;
    throw error;
  }
}

/**
 * Runs `fn` in `sql.begin()`; see the module comment for why a callback whose
 * connection died never settles.
 *
 * @param mode What follows BEGIN, e.g. `"isolation level read committed"`.
 */
export async function transaction<Tx, T>(sql: BeginsTransactions<Tx>, fn: (tx: Tx) => Promise<T>): Promise<T>;
export async function transaction<Tx, T>(
  sql: BeginsTransactionsInMode<Tx>,
  fn: (tx: Tx) => Promise<T>,
  mode: string,
): Promise<T>;
export async function transaction<Tx, T>(
  sql: BeginsTransactions<Tx> | BeginsTransactionsInMode<Tx>,
  fn: (tx: Tx) => Promise<T>,
  mode?: string,
): Promise<T> {
  const body = (tx: Tx) => unlessGone(fn(tx));
  return await (mode === undefined
    ? (sql as BeginsTransactions<Tx>).begin(body)
    : (sql as BeginsTransactionsInMode<Tx>).begin(mode, body)) as T;
}
