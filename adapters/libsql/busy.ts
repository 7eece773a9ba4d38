/**
 * Reading libSQL driver errors and retrying around SQLITE_BUSY, shared by the libSQL
 * outbox storage, its insert statements and the inbox.
 */

import type { Client } from "@libsql/client";
import { duration, type Rule } from "../../src/rules.ts";
import { errorCode, errorText } from "../shared/errors.ts";

// Kept here for insert.ts, which reads them from this module.
export { errorCode, errorText };

/** Whether the statement ran on a transaction that was already committed or rolled back. */
export function isClosedTransaction(error: unknown): boolean {
  return errorCode(error) === "TRANSACTION_CLOSED" ||
    /transaction .*(closed|rolled back|committed)|no transaction is active/i.test(errorText(error));
}

/** Whether another connection holds the lock the statement needed. */
export function isBusy(error: unknown): boolean {
  const code = errorCode(error);
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) return true;
  const message = error instanceof Error ? error.message : "";
  return /database is locked|SQLITE_BUSY/i.test(message);
}

/** The `busyTimeoutMs` option: any number of ms ≥ 0; Infinity waits for the lock for ever. */
export const busyTimeout: Rule = duration(0, true, Infinity);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Makes a runner that retries a statement while another connection holds the write
 * lock, for up to `busyTimeoutMs`, and maps every other failure through `wrap`.
 *
 * The embedded driver leaves a statement that failed with SQLITE_BUSY open on its
 * connection, and every later COMMIT there fails with "SQL statements in progress": so
 * the client is reconnected after each busy failure. (Waiting with PRAGMA busy_timeout
 * instead would block the event loop, and with it the very transaction we wait for.)
 */
export function busyRetry(client: Client, busyTimeoutMs: number, wrap: (what: string, error: unknown) => Error) {
  return async function withBusyRetry<T>(what: string, run: () => Promise<T>): Promise<T> {
    const started = Date.now();
    let delay = 2;
    for (;;) {
      try {
        return await run();
      } catch (error) {
        if (!isBusy(error)) throw wrap(what, error);
        if (client.protocol === "file" && !client.closed) {
          try {
            client.reconnect();
          } catch {
            // The next attempt reports a broken client.
          }
        }
        if (Date.now() - started >= busyTimeoutMs) throw wrap(what, error);
        await sleep(delay * (0.5 + Math.random()));
        delay = Math.min(delay * 2, 100);
      }
    }
  };
}
