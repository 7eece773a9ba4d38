/**
 * One relay pass: claim a batch → publish it lane by lane → settle it in one call.
 *
 * A lane is the run of claimed messages of one key (published one after another,
 * in `seq` order) or a single unkeyed message. Lanes run in parallel up to
 * `concurrency`. When a keyed message fails and will be retried, the rest of its
 * lane is released untouched: the storage keeps them blocked behind the failed one
 * until it is published or dead, which is what keeps per-key order across retries.
 */

import { describeError, isPermanentError, OutboxStorageError, type PublishError } from "./errors.ts";
import { backoffDelay, type ResolvedOptions } from "./options.ts";
import { decodeBody } from "./payload.ts";
import type { ClaimedRow, OutboxRecord, OutboxStorage, Publisher, PublishOutcome, Settlement } from "./types.ts";

/** Options of one `tick()`. */
export interface TickOptions {
  /**
   * Time budget in ms (default 10,000). No batch is claimed and no message is
   * started after it; a message already being published is awaited. Set it below
   * your platform's limit (a Workers `scheduled()` CPU budget, a Lambda timeout).
   */
  budgetMs?: number;
  /** Most batches to claim in this tick (default: as many as the budget allows). */
  maxBatches?: number;
  /** Stops claiming and starting messages when aborted; claimed, unstarted ones are released. */
  signal?: AbortSignal;
}

/** What one `tick()` did. */
export interface TickReport {
  /** Rows claimed (leased) in this tick. */
  claimed: number;
  /** Messages the publisher accepted. */
  published: number;
  /** Messages the `filter` settled without publishing. */
  filtered: number;
  /** Failed messages scheduled for another attempt. */
  retried: number;
  /** Messages moved to `dead`. */
  dead: number;
  /** Claimed messages given back unattempted (a key's earlier message failed, stop, budget). */
  released: number;
  /** Settlements that found their lease taken by another relay (the lease had expired). */
  lost: number;
  /** Expired rows deleted by retention cleanup. */
  cleaned: number;
  /** Claim queries run. */
  batches: number;
  /** Wall time of the tick in ms. */
  durationMs: number;
}

/** State shared by the ticks of one outbox instance. */
export interface RelayContext {
  readonly storage: OutboxStorage<unknown, unknown>;
  readonly publisher: Publisher;
  readonly options: ResolvedOptions;
  /** The rows this context claims: a `publishers` name, or `""` for the one `publisher`. */
  readonly destination: string;
  /**
   * Random per outbox instance, part of every claim token: two instances sharing a
   * `relayId` (replicas of one config, a restarted process) must never settle or read
   * back each other's claims.
   */
  readonly instance: string;
  claims: number;
  lastCleanupAt: number;
  /** Running loops' hooks, called after an enqueue in this process (see startLoop). */
  readonly nudges: Set<() => void>;
}

/** Creates an empty report. */
export function emptyReport(): TickReport {
  return {
    claimed: 0,
    published: 0,
    filtered: 0,
    retried: 0,
    dead: 0,
    released: 0,
    lost: 0,
    cleaned: 0,
    batches: 0,
    durationMs: 0,
  };
}

/**
 * Runs one bounded relay pass.
 *
 * @param report Filled in as the pass goes: when it throws, the caller still has what
 *   was done before (start()'s loop reports it, so onTick counts every publish).
 * @throws When claiming or settling fails (the database is unreachable, say). Rows
 *   claimed but not settled stay leased until their lease expires, then go out again.
 */
export async function runTick(
  ctx: RelayContext,
  options: TickOptions = {},
  report: TickReport = emptyReport(),
): Promise<TickReport> {
  const { options: o, storage } = ctx;
  const started = o.now();
  const budget = options.budgetMs ?? 10_000;
  const deadline = started + budget;
  const maxBatches = options.maxBatches ?? Infinity;

  if (started - ctx.lastCleanupAt >= o.retention.intervalMs) {
    ctx.lastCleanupAt = started;
    report.cleaned += await runCleanup(ctx, started);
    // A full batch means more expired rows wait: stay due, so every tick deletes one
    // more bounded batch until retention has caught up.
    if (report.cleaned >= o.retention.batchSize) ctx.lastCleanupAt = -Infinity;
  }

  const claimNext = () => {
    const now = o.now();
    const token = `${o.relayId}:${ctx.instance}:${++ctx.claims}`;
    const lockedUntil = now + o.leaseMs;
    report.batches++;
    return bounded(
      storage.claim({ token, now, lockedUntil, limit: o.batchSize, clock: o.clock, destination: ctx.destination }),
      o.leaseMs,
      "claim",
    )
      .then((rows) => ({ rows, token, lockedUntil }));
  };
  // Settlements still being written while the next batch is published; awaited (and
  // their errors thrown) before the tick returns.
  const settling: Promise<void>[] = [];
  let settleError: { error: unknown } | null = null;
  const settle = (token: string, settlements: Settlement[]) =>
    bounded(
      storage.settle({
        token,
        now: o.now(),
        settlements,
        deletePublished: o.retention.publishedMs === 0,
        clock: o.clock,
        onDead: o.retry.onDead,
      }),
      o.leaseMs,
      "settle",
    ).then(
      (matched) => {
        report.lost += settlements.length - matched;
      },
      (error) => {
        settleError ??= { error };
      },
    );
  const canClaim = () =>
    report.batches < maxBatches && !options.signal?.aborted && (report.batches === 0 || o.now() < deadline);

  try {
    let batch = canClaim() ? await claimNext() : null;
    while (batch) {
      const { rows, token, lockedUntil } = batch;
      report.claimed += rows.length;
      if (rows.length === 0) break;
      const full = rows.length >= o.batchSize;
      // Claim the next batch while this one is being published, so the broker and the
      // database work at the same time. Only after a full batch (more is waiting) of
      // messages whose keys do not repeat: a later message of a key in this batch is
      // held back by the claim's per-key barrier until this batch is settled, so
      // claiming ahead would only scan rows it cannot take. (Claiming ahead is safe
      // either way: this batch's rows are leased, and the barrier keeps per-key order.)
      const ahead = full && canClaim() && keysDistinct(rows) ? claimNext() : null;
      // A little before the lease ends, publishes in flight are abandoned: past it,
      // another relay may own the rows. The budget only stops new publishes.
      const leaseEnd = lockedUntil - Math.min(1_000, o.leaseMs / 10);
      let settlements: Settlement[];
      try {
        settlements = await publishBatch(ctx, rows, Math.min(deadline, leaseEnd), leaseEnd, options.signal);
        count(report, settlements);
      } catch (error) {
        // Rows claimed ahead stay leased until their lease expires, like any claim
        // a tick could not settle.
        ahead?.catch(() => {});
        throw error;
      }
      if (ahead) {
        settling.push(settle(token, settlements));
        batch = await ahead;
      } else {
        await settle(token, settlements);
        if (settleError) break;
        batch = full && canClaim() ? await claimNext() : null;
      }
      if (settleError) {
        // Give the rows claimed ahead back untouched, then report the failure.
        if (batch && batch.rows.length > 0) {
          report.claimed += batch.rows.length;
          report.released += batch.rows.length;
          settling.push(settle(batch.token, batch.rows.map((r) => ({ seq: r.seq, outcome: "release" as const }))));
        }
        break;
      }
    }
  } finally {
    await Promise.all(settling);
    report.durationMs = o.now() - started;
  }
  if (settleError) throw (settleError as { error: unknown }).error;
  return report;
}

/** Whether no key occurs twice among the batch's keyed rows. */
function keysDistinct(rows: readonly ClaimedRow[]): boolean {
  const seen = new Set<string>();
  for (const row of rows) {
    if (row.key === null) continue;
    if (seen.has(row.key)) return false;
    seen.add(row.key);
  }
  return true;
}

async function runCleanup(ctx: RelayContext, now: number): Promise<number> {
  const { retention } = ctx.options;
  const keepPublished = retention.publishedMs === Infinity;
  const keepDead = retention.deadMs === Infinity;
  if (keepPublished && keepDead) return 0;
  try {
    return await ctx.storage.cleanup({
      now,
      publishedBefore: keepPublished ? null : now - retention.publishedMs,
      deadBefore: keepDead ? null : now - retention.deadMs,
      limit: retention.batchSize,
    });
  } catch (error) {
    // Cleanup is housekeeping: a failure must not stop delivery.
    ctx.options.onError(error, { phase: "cleanup" });
    return 0;
  }
}

function toRecord(row: ClaimedRow): OutboxRecord {
  // Publishers send `body`; the payload is parsed only if something reads it (a filter,
  // a function publisher), which saves a JSON.parse per message on the hot path.
  // JSON.parse never returns undefined, so undefined means "not parsed yet".
  let payload: unknown;
  return {
    id: row.id,
    seq: row.seq,
    topic: row.topic,
    key: row.key,
    get payload() {
      return payload === undefined ? (payload = decodeBody(row.body)) : payload;
    },
    body: row.body,
    headers: row.headers ? JSON.parse(row.headers) as Record<string, string> : {},
    attempts: row.attempts,
    createdAt: new Date(row.createdAt),
  };
}

/** A settlement as the relay records it; `filtered`: the filter settled it unpublished. */
type Outcome = Settlement & { readonly filtered?: true };

/** The report's count of each outcome. */
const COUNTED = { published: "published", retry: "retried", dead: "dead", release: "released" } as const;

/** Adds a batch's outcomes to the report: counted once, from what will be settled. */
function count(report: TickReport, outcomes: readonly Outcome[]): void {
  for (const o of outcomes) report[o.filtered ? "filtered" : COUNTED[o.outcome]]++;
}

/** A batch's lease as the lanes see it. */
interface Lease {
  /** Handed to the publisher; aborted a little before the lease ends. */
  readonly context: { readonly signal: AbortSignal };
  /** Rejects with the signal's reason when it aborts; never resolves. */
  readonly ended: Promise<never>;
}

/** What every lane of one batch shares. */
interface Batch {
  readonly ctx: RelayContext;
  readonly lease: Lease;
  /** Outcomes in the order they were decided. */
  readonly out: Outcome[];
  /** True once no further message may start (stop signal, time budget). */
  readonly stopped: () => boolean;
}

/**
 * Splits a batch into lanes, in `seq` order: a key's run, or an unkeyed message. With a
 * pipelining publisher, the unkeyed messages and every key's lone message form one run:
 * no order binds them, and one run is one burst on the wire instead of many.
 */
function lanesOf(rows: readonly ClaimedRow[], pipelined: boolean): ClaimedRow[][] {
  const lanes: ClaimedRow[][] = [];
  const byKey = new Map<string, ClaimedRow[]>();
  // Claims may return rows in any order (Postgres RETURNING does); sorting sorted rows is linear.
  const sorted = [...rows].sort((a, b) => a.seq - b.seq);
  for (const row of sorted) {
    if (row.key === null) {
      if (!pipelined) lanes.push([row]);
      continue;
    }
    let lane = byKey.get(row.key);
    if (!lane) {
      lane = [];
      byKey.set(row.key, lane);
      lanes.push(lane);
    }
    lane.push(row);
  }
  if (!pipelined) return lanes;
  const runs = lanes.filter((lane) => lane[1]);
  const unordered = sorted.filter((row) => row.key === null || !byKey.get(row.key)![1]);
  if (unordered[0]) runs.push(unordered);
  return runs;
}

/** Publishes a claimed batch lane by lane, up to `concurrency` lanes at once. */
async function publishBatch(
  ctx: RelayContext,
  rows: readonly ClaimedRow[],
  stopAt: number,
  leaseEnd: number,
  signal: AbortSignal | undefined,
): Promise<Outcome[]> {
  const o = ctx.options;
  const pipelined = typeof ctx.publisher.publishRun === "function";
  const lanes = lanesOf(rows, pipelined);
  // Publishes in flight are told to give up when the lease is about to end.
  const leaseAbort = new AbortController();
  const timer = setTimeout(
    () => leaseAbort.abort(new Error("The claim's lease ended before the publish finished")),
    Math.max(0, leaseEnd - o.now()),
  );
  // One abort listener for the whole batch, not one per publish: hundreds of listeners
  // on one signal are a leak warning on Node, and each costs an add and a remove.
  const lease: Lease = {
    context: { signal: leaseAbort.signal },
    ended: new Promise<never>((_, reject) => {
      leaseAbort.signal.addEventListener("abort", () => reject(leaseAbort.signal.reason), { once: true });
    }),
  };
  lease.ended.catch(() => {});
  const batch: Batch = { ctx, lease, out: [], stopped: () => signal?.aborted === true || o.now() >= stopAt };
  try {
    let next = 0;
    const worker = async () => {
      while (next < lanes.length) {
        const lane = lanes[next++]!;
        await (pipelined ? runPipelinedLane(batch, lane) : runLane(batch, lane));
      }
    };
    await Promise.all(Array.from({ length: Math.min(o.concurrency, lanes.length) }, worker));
  } finally {
    clearTimeout(timer);
  }
  return batch.out;
}

/** Publishes a lane one message at a time; a failure that holds its key releases the rest. */
async function runLane(batch: Batch, lane: readonly ClaimedRow[]): Promise<void> {
  for (let i = 0; i < lane.length; i++) {
    const row = lane[i]!;
    if (batch.stopped()) return releaseRest(batch, lane, i);
    const outcome = await attempt(batch, row);
    batch.out.push(outcome);
    if (holdsKey(batch.ctx, row, outcome)) return releaseRest(batch, lane, i + 1);
  }
}

/** Hands a lane to `publishRun` in one go, then records each message's outcome. */
async function runPipelinedLane(batch: Batch, lane: readonly ClaimedRow[]): Promise<void> {
  const { ctx, out } = batch;
  if (batch.stopped()) return releaseRest(batch, lane, 0);
  // A key's run; the unordered run mixes keys (and nulls), so its first and last differ.
  const ordered = lane[0]!.key !== null && lane[0]!.key === lane[lane.length - 1]!.key;
  const sending: { row: ClaimedRow; record: OutboxRecord }[] = [];
  for (const row of lane) {
    // Without a filter there is nothing to await per message.
    const prepared = ctx.options.filter ? await prepare(batch, row) : check(ctx, row);
    if ("settlement" in prepared) out.push(prepared.settlement);
    else sending.push({ row, record: prepared.record });
  }
  if (sending.length === 0) return;
  let outcomes: readonly PublishOutcome[];
  try {
    outcomes = await untilLeaseEnds(
      ctx.publisher.publishRun!(sending.map((s) => s.record), batch.lease.context),
      batch.lease,
    );
  } catch (error) {
    outcomes = sending.map(() => ({ ok: false, error }));
  }
  let blocked = false;
  for (let i = 0; i < sending.length; i++) {
    const { row } = sending[i]!;
    const outcome = outcomes[i] ??
      { ok: false, error: new Error("The publisher reported no outcome for this message") };
    if (outcome.ok) {
      // Accepted by the broker, even after an earlier failure of its key: it is there
      // already, and sending it again would only be dropped as a duplicate.
      out.push({ seq: row.seq, outcome: "published" });
    } else if (blocked) {
      out.push({ seq: row.seq, outcome: "release" });
    } else {
      const settlement = failure(ctx, row, outcome.error);
      out.push(settlement);
      if (ordered && holdsKey(ctx, row, settlement)) blocked = true;
    }
  }
}

/**
 * Whether a keyed message's outcome holds back the rest of its key: a retry always, a
 * dead message when `retry.onDead` is `"block"`. (A lone message has no rest.)
 */
function holdsKey(ctx: RelayContext, row: ClaimedRow, outcome: Settlement): boolean {
  return outcome.outcome === "retry" ||
    (outcome.outcome === "dead" && row.key !== null && ctx.options.retry.onDead === "block");
}

/** Gives the lane's messages from `from` on back unattempted. */
function releaseRest(batch: Batch, lane: readonly ClaimedRow[], from: number): void {
  for (let i = from; i < lane.length; i++) batch.out.push({ seq: lane[i]!.seq, outcome: "release" });
}

/** Checks a claimed row before publishing: dead (attempts, decoding) or a record to send. */
function check(ctx: RelayContext, row: ClaimedRow): { settlement: Settlement } | { record: OutboxRecord } {
  if (row.attempts > ctx.options.retry.maxAttempts) {
    // Earlier claims ended without a result (crashed relay, expired lease): a message
    // that keeps killing its relay must not loop forever.
    return {
      settlement: {
        seq: row.seq,
        outcome: "dead",
        error: `Gave up after ${
          attempts(row.attempts - 1)
        }; the last ended without a result (relay stopped or lease expired)`,
      },
    };
  }
  try {
    return { record: toRecord(row) };
  } catch (error) {
    return {
      settlement: {
        seq: row.seq,
        outcome: "dead",
        error: `Stored message could not be decoded: ${describeError(error)}`,
      },
    };
  }
}

/** {@link check}, then the `filter`: dead, filtered, or a record to send. */
async function prepare(batch: Batch, row: ClaimedRow): Promise<{ settlement: Outcome } | { record: OutboxRecord }> {
  const { ctx } = batch;
  const filter = ctx.options.filter;
  const checked = check(ctx, row);
  if ("settlement" in checked || !filter) return checked;
  const record = checked.record;
  let keep: boolean;
  try {
    // Bounded by the lease like a publish: past it, another relay may own the row.
    keep = await untilLeaseEnds(Promise.resolve().then(() => filter(record)), batch.lease);
  } catch (error) {
    return { settlement: failure(ctx, row, error) };
  }
  return keep ? { record } : { settlement: { seq: row.seq, outcome: "published", filtered: true } };
}

const attempts = (n: number): string => `${n} attempt${n === 1 ? "" : "s"}`;

/** Classifies a failed attempt: permanent or out of attempts → dead, else retry with back-off. */
function failure(ctx: RelayContext, row: ClaimedRow, error: unknown): Settlement {
  const o = ctx.options;
  const message = describeError(error);
  if (isPermanentError(error)) return { seq: row.seq, outcome: "dead", error: message };
  if (row.attempts >= o.retry.maxAttempts) {
    return {
      seq: row.seq,
      outcome: "dead",
      error: `Gave up after ${attempts(row.attempts)}; the last failed with: ${message}`,
    };
  }
  // A broker's own "come back in" (Retry-After; any error may carry it) replaces the back-off, within its cap.
  const after = (error as PublishError | null)?.retryAfterMs!;
  const delay = after >= 0 ? Math.min(after, o.retry.maxDelayMs) : backoffDelay(o.retry, row.attempts);
  return { seq: row.seq, outcome: "retry", availableAt: o.now() + delay, error: message };
}

/** Prepares and publishes one message. */
async function attempt(batch: Batch, row: ClaimedRow): Promise<Outcome> {
  const prepared = await prepare(batch, row);
  if ("settlement" in prepared) return prepared.settlement;
  try {
    await untilLeaseEnds(batch.ctx.publisher.publish(prepared.record, batch.lease.context), batch.lease);
    return { seq: row.seq, outcome: "published" };
  } catch (error) {
    return failure(batch.ctx, row, error);
  }
}

/**
 * Settles with `work`, or rejects once the lease ends: a publisher (or filter) that
 * ignores its signal must not hold the tick, and the other lanes' settlement, past it.
 */
function untilLeaseEnds<T>(work: Promise<T>, lease: Lease): Promise<T> {
  // Once the lease has ended, `ended` is rejected and wins the race (`work` is then
  // still handled by the race, so its own rejection is never unhandled).
  return Promise.race([work, lease.ended]);
}

/**
 * Rejects when a storage call has not settled within `ms`. A driver that loses a query
 * (a connection killed under it) would otherwise stall the tick, and with it the relay
 * loop, for good; by then the lease has ended and the rows are free for the next claim.
 */
function bounded<T>(work: Promise<T>, ms: number, what: "claim" | "settle"): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      work.catch(() => {});
      reject(
        new OutboxStorageError(
          `The storage's ${what} took over ${ms} ms (leaseMs); its rows return when their lease ends`,
        ),
      );
    }, ms);
    work.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
