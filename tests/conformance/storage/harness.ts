/**
 * What the storage conformance suite's sections share: the harness an adapter's test
 * file provides, a clock the tests move by hand, a recording publisher, and `it`/`make`
 * bound to one adapter's name and harness factory.
 */

import { createOutbox, type Outbox, type OutboxOptions, type OutboxRecord, type OutboxStorage } from "../../../mod.ts";
import { test } from "../../harness.ts";

/** What a storage adapter's test file provides to the suite. */
export interface StorageHarness<Tx> {
  /** A storage on a fresh, set-up table. */
  readonly storage: OutboxStorage<Tx, unknown>;
  /** Another storage on the same table over its own connection: another relay process. */
  connect(): Promise<OutboxStorage<Tx, unknown>>;
  /** Runs `fn` in a transaction and commits (rolls back and rethrows if it throws). */
  commit<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /** Runs `fn` in a transaction and rolls it back. */
  rollback(fn: (tx: Tx) => Promise<void>): Promise<void>;
  /** Writes a business row (an order) in `tx`. */
  insertOrder(tx: Tx, id: string): Promise<void>;
  /** Counts committed business rows. */
  orderCount(): Promise<number>;
  /**
   * A transaction handle that has already been committed, when the driver lets an
   * adapter tell it from a live one (libSQL does; postgres.js does not: a stale handle
   * runs statements in autocommit, indistinguishable in SQL from a live transaction).
   */
  closedTransaction?(): Promise<Tx>;
  /** Closes connections and removes what the harness created. */
  close(): Promise<void>;
}

/** Makes a fresh harness per test. */
export type HarnessFactory<Tx> = () => Promise<StorageHarness<Tx>>;

/** A clock the tests move by hand. */
export class Clock {
  value = Date.UTC(2030, 0, 1);
  readonly now = () => this.value;
  advance(ms: number) {
    this.value += ms;
  }
}

/** Publishes into a shared log, optionally failing through `fail`. */
export function recorder(fail?: (m: OutboxRecord, call: number) => unknown) {
  const log: OutboxRecord[] = [];
  let calls = 0;
  return {
    log,
    async publish(message: OutboxRecord) {
      const error = fail?.(message, calls++);
      if (error) throw error;
      log.push(message);
    },
  };
}

/** The ids of `records`, in their order. */
export function ids(records: readonly OutboxRecord[]): string[] {
  return records.map((r) => r.id);
}

type TestOutboxOptions<Tx> = OutboxOptions<Tx, unknown, Record<never, never>>;

/** The helpers each section of the suite registers its tests with, bound to one adapter. */
export interface StorageSuite<Tx> {
  /**
   * Registers the test "<adapter>: <title>": `body` gets a fresh harness, closed after it.
   * The timeout defaults to 30 s.
   */
  it(title: string, body: (h: StorageHarness<Tx>) => Promise<void>, timeout?: number): void;
  /**
   * An outbox on the harness's storage and `clock`, with a fixed retry policy (5 attempts,
   * 1 s doubling to 8 s, no jitter) and errors silenced; `extra` overrides any option.
   */
  make(
    h: StorageHarness<Tx>,
    clock: Clock,
    publisher: TestOutboxOptions<Tx>["publisher"],
    extra?: Partial<TestOutboxOptions<Tx>>,
  ): Outbox<Tx, unknown>;
}

/**
 * The helpers for one adapter's run of the suite.
 *
 * @param name Adapter name used as the test-name prefix.
 * @param factory Makes a fresh harness per test.
 */
export function storageSuite<Tx>(name: string, factory: HarnessFactory<Tx>): StorageSuite<Tx> {
  return {
    it: (title, body, timeout) =>
      test(`${name}: ${title}`, async () => {
        const h = await factory();
        try {
          await body(h);
        } finally {
          await h.close();
        }
      }, { timeout: timeout ?? 30_000 }),
    make: (h, clock, publisher, extra = {}) =>
      createOutbox<Tx, unknown>({
        storage: h.storage,
        publisher,
        now: clock.now,
        retry: { maxAttempts: 5, baseDelayMs: 1_000, maxDelayMs: 8_000, jitter: 0 },
        onError: () => {},
        ...extra,
      }),
  };
}

/**
 * Runs `body` on a fresh storage made by `factory` (a set-up table and a commit), then
 * closes it: for tests outside the suite that need "some outbox storage", e.g. a
 * publisher's end-to-end run from each database.
 */
export async function onFreshStorage<Tx>(
  factory: HarnessFactory<Tx>,
  body: (
    storage: OutboxStorage<Tx, unknown>,
    commit: (fn: (tx: Tx) => Promise<unknown>) => Promise<unknown>,
  ) => Promise<void>,
): Promise<void> {
  const h = await factory();
  try {
    await body(h.storage, (fn) => h.commit(fn));
  } finally {
    await h.close();
  }
}
