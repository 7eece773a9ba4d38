/**
 * An in-process outbox storage for unit tests: the claim, lease and settle rules of the
 * SQL storages over a Map, with explicit transactions.
 */

import { OutboxConfigError, OutboxMessageError, OutboxStorageError } from "./errors.ts";
import type { ClaimedRow, NewOutboxRow, OutboxStatus, OutboxStorage, PurgeRequest, RequeueRequest } from "./types.ts";

/** A transaction of a {@link MemoryStorage}: pass it to `outbox.enqueue(tx, …)`. */
export interface MemoryTransaction {
  /** True until the transaction's function has settled (committed or discarded). */
  readonly active: boolean;
}

/** The storage {@link memoryStorage} returns: an `OutboxStorage` with transactions. */
export interface MemoryStorage extends OutboxStorage<MemoryTransaction> {
  /**
   * Runs `fn` in a transaction: what it enqueues becomes visible (claimable) when `fn`
   * resolves, and is discarded when it throws (the error is rethrown).
   *
   * @example
   * await storage.transaction((tx) => outbox.enqueue(tx, { topic: "t", payload: 1 }));
   */
  transaction<T>(fn: (tx: MemoryTransaction) => T | Promise<T>): Promise<T>;
}

/** A stored row: an `OutboxRow` with every field present, mutable. */
interface Row {
  seq: number;
  id: string;
  topic: string;
  key: string | null;
  status: OutboxStatus;
  attempts: number;
  availableAt: number | null;
  lockedBy: string | null;
  lastError: string | null;
  createdAt: number;
  settledAt: number | null;
  destination: string;
  deliverAt: number | null;
  body: string | Uint8Array;
  headers: string | null;
}

// A dead row that blocks its key (retry.onDead "block") is never due: the barrier holds.
const BLOCKED = Number.MAX_SAFE_INTEGER;

/** Whether a row is settled (or a dead row holding its key), as requeue and purge need. */
const settled = (r: Row) => r.availableAt === null || r.availableAt === BLOCKED;

/**
 * "Now" of a request: the relay's with `clock: "relay"` (a test clock), else this
 * process's (`Date.now()`), as an embedded database reads its own clock. The request's
 * other times are then lengths from its `now`.
 */
const clockOf = (r: { now: number; clock?: string }) => r.clock === "relay" ? r.now : Date.now();

/**
 * Creates an in-memory storage: the same claim, lease, retry, per-key order, fan-out and
 * retention rules as the SQL storages (it passes the storage conformance suite), in this
 * process only, on the relay's clock. For unit tests of code that enqueues; nothing
 * survives the process.
 *
 * @returns The storage, with `transaction(fn)`.
 *
 * @example A unit test of a service that enqueues
 * ```ts
 * import { createOutbox, memoryPublisher, memoryStorage } from "@x/outbox";
 *
 * const storage = memoryStorage();
 * const publisher = memoryPublisher();
 * const outbox = createOutbox({ storage, publisher });
 * await storage.transaction((tx) => outbox.enqueue(tx, { topic: "orders.created", payload: { id: "o-1" } }));
 * await outbox.tick();
 * // publisher.messages[0].topic === "orders.created"
 * ```
 */
export function memoryStorage(): MemoryStorage {
  const rows = new Map<number, Row>(); // seq order: seqs are assigned at commit, increasing
  const open = new WeakMap<MemoryTransaction, NewOutboxRow[]>();
  const wakers = new Set<() => void>();
  let seq = 0;

  const matching = (
    f: { status?: OutboxStatus; topic?: string; key?: string; destination?: string; ids?: readonly string[] },
  ) =>
    [...rows.values()].filter((r) =>
      (f.status === undefined || r.status === f.status) && (f.topic === undefined || r.topic === f.topic) &&
      (f.key === undefined || r.key === f.key) && (f.destination === undefined || r.destination === f.destination) &&
      (f.ids === undefined || f.ids.includes(r.id))
    );
  const settledMatching = (r: RequeueRequest | PurgeRequest) => {
    r.signal?.throwIfAborted();
    return matching(r).filter(settled);
  };

  return {
    name: "memory",
    async transaction(fn) {
      let active = true;
      const tx: MemoryTransaction = {
        get active() {
          return active;
        },
      };
      const pending: NewOutboxRow[] = [];
      open.set(tx, pending);
      try {
        const result = await fn(tx);
        for (const r of pending) {
          rows.set(++seq, {
            seq,
            id: r.id,
            topic: r.topic,
            key: r.key,
            status: "pending",
            attempts: 0,
            // Due at the enqueue time or now, whichever is earlier (a writer's clock may run ahead).
            availableAt: r.deliverAt ?? Math.min(r.availableAt, Date.now()),
            lockedBy: null,
            lastError: null,
            createdAt: r.createdAt,
            settledAt: null,
            destination: r.destination ?? "",
            deliverAt: r.deliverAt,
            body: r.body,
            headers: r.headers,
          });
        }
        if (pending.length > 0) wakers.forEach((wake) => wake());
        return result;
      } finally {
        active = false;
        open.delete(tx);
      }
    },
    async setup(o) {
      o?.signal?.throwIfAborted();
    },
    async insert(tx, list) {
      const pending = open.get(tx);
      if (!pending) {
        throw tx && typeof tx === "object" && "active" in tx
          ? new OutboxStorageError("Could not enqueue: the transaction is already closed (committed or rolled back)")
          : new OutboxConfigError("memoryStorage enqueues in a transaction of storage.transaction(fn)", "tx");
      }
      // All or nothing: check every row before writing any.
      for (const r of list) {
        const destination = r.destination ?? "";
        const taken = [...rows.values()].some((o) => o.id === r.id) ||
          pending.some((o) => o.id === r.id && (o.destination ?? "") === destination) ||
          list.some((o) => o !== r && o.id === r.id && (o.destination ?? "") === destination);
        if (taken) {
          throw new OutboxMessageError(
            `Message id ${JSON.stringify(r.id)} is already in the outbox; ids must be unique`,
            list.length === 1 ? "id" : "",
          );
        }
      }
      // Bytes are copied: the caller may reuse its buffer after enqueue.
      for (const r of list) pending.push(typeof r.body === "string" ? r : { ...r, body: r.body.slice() });
    },
    async claim(request) {
      const { token, limit, destination = "" } = request;
      const now = clockOf(request);
      const lockedUntil = now + request.lockedUntil - request.now;
      const claimed: ClaimedRow[] = [];
      // Keys with an earlier unsettled row that is not due: their later rows wait.
      const held = new Set<string>();
      for (const r of rows.values()) {
        if (claimed.length >= limit) break;
        if (r.destination !== destination || r.availableAt === null) continue;
        const due = r.availableAt <= now;
        if (r.key !== null && (held.has(r.key) || !due)) {
          held.add(r.key);
          continue;
        }
        if (!due) continue;
        r.status = "processing";
        r.lockedBy = token;
        r.availableAt = lockedUntil;
        r.attempts++;
        const { seq, id, topic, key, body, headers, attempts, createdAt } = r;
        claimed.push({ seq, id, topic, key, body, headers, attempts, createdAt });
      }
      return claimed;
    },
    async settle(request) {
      const { token, settlements, deletePublished, onDead } = request;
      const now = clockOf(request);
      let matched = 0;
      for (const s of settlements) {
        const r = rows.get(s.seq);
        if (!r || r.lockedBy !== token) continue;
        matched++;
        r.lockedBy = null;
        if (s.outcome === "published" && deletePublished) rows.delete(s.seq);
        else if (s.outcome === "published" || s.outcome === "dead") {
          r.status = s.outcome;
          r.settledAt = now;
          r.availableAt = s.outcome === "dead" && onDead === "block" && r.key !== null ? BLOCKED : null;
          if (s.outcome === "dead") r.lastError = s.error;
        } else {
          r.status = "pending";
          if (s.outcome === "retry") {
            r.availableAt = now + s.availableAt - request.now;
            r.lastError = s.error;
          } else {
            r.availableAt = now;
            r.attempts = Math.max(0, r.attempts - 1);
          }
        }
      }
      return matched;
    },
    async cleanup({ publishedBefore, deadBefore, limit }) {
      let deleted = 0;
      for (const [status, before] of [["published", publishedBefore], ["dead", deadBefore]] as const) {
        for (const r of rows.values()) {
          if (deleted >= limit || before === null) break;
          if (r.status === status && r.availableAt === null && r.settledAt! < before && rows.delete(r.seq)) deleted++;
        }
      }
      return deleted;
    },
    async stats(now, o) {
      o?.signal?.throwIfAborted();
      type Counts = Record<OutboxStatus, number>;
      const zero = (): Counts => ({ pending: 0, processing: 0, published: 0, dead: 0 });
      const totals = zero();
      const topics: Record<string, Counts> = {};
      const destinations: Record<string, Counts> = {};
      const blocked = new Set<string>();
      let oldestPendingAt: number | null = null;
      for (const r of rows.values()) {
        totals[r.status]++;
        (topics[r.topic] ??= zero())[r.status]++;
        (destinations[r.destination] ??= zero())[r.status]++;
        if (r.availableAt === BLOCKED) blocked.add(`${r.destination}\0${r.key}`);
        const since = r.deliverAt ?? r.createdAt;
        if (r.availableAt !== null && r.status !== "dead" && since <= now) {
          oldestPendingAt = Math.min(oldestPendingAt ?? since, since);
        }
      }
      return { ...totals, oldestPendingAt, blockedKeys: blocked.size, topics, destinations };
    },
    async requeue(request) {
      const found = settledMatching(request);
      for (const r of found) {
        Object.assign(r, {
          status: "pending",
          availableAt: clockOf(request),
          attempts: 0,
          lockedBy: null,
          settledAt: null,
        });
      }
      return found.length;
    },
    async purge(request) {
      const found = settledMatching(request)
        .filter((r) => request.before === null || r.settledAt! < request.before)
        .slice(0, request.limit);
      for (const r of found) rows.delete(r.seq);
      return found.length;
    },
    async inspect(options = {}) {
      options.signal?.throwIfAborted();
      const after = options.after ?? 0;
      return matching(options).filter((r) => r.seq > after).slice(0, options.limit ?? Infinity).map((r) => ({ ...r }));
    },
    async listen(onWake, signal) {
      wakers.add(onWake);
      signal.addEventListener("abort", () => wakers.delete(onWake), { once: true });
    },
  };
}
