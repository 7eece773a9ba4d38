/**
 * The storage side of settle and cleanup, shared by the SQL storages: a batch's
 * settlements sorted into one list per outcome (each settled by one statement), and
 * retention cleanup as bounded deletes, published rows first.
 */

import type { CleanupRequest, SettleRequest } from "../../src/types.ts";

/**
 * `available_at` of a dead message that blocks its key (`retry.onDead: "block"`): later
 * than any clock reading, so the claim's per-key barrier holds the key's later messages.
 */
export const BLOCKED = 9_007_199_254_740_991; // Number.MAX_SAFE_INTEGER

/** A settle request's settlements, one list per outcome, each in the request's order. */
export interface SettlementGroups {
  /** Seqs of the published messages. */
  readonly published: number[];
  /** `[seq, delay, error]` per message to retry: due `delay` ms (≥ 0) after the request's `now`. */
  readonly retry: [seq: number, delayMs: number, error: string][];
  /** `[seq, error]` per message that goes dead. */
  readonly dead: [seq: number, error: string][];
  /** Seqs whose lease is given back without an attempt. */
  readonly release: number[];
}

/**
 * Sorts a settle request's settlements by outcome. Retry times become delays from the
 * request's `now`, so that the storage can add them to whichever clock decides (its
 * own, or the relay's).
 *
 * @param request What settle was asked to do.
 * @returns One list per outcome.
 */
export function groupSettlements(request: SettleRequest): SettlementGroups {
  const groups: SettlementGroups = { published: [], retry: [], dead: [], release: [] };
  for (const s of request.settlements) {
    switch (s.outcome) {
      case "published":
        groups.published.push(s.seq);
        break;
      case "retry":
        groups.retry.push([s.seq, Math.max(0, s.availableAt - request.now), s.error]);
        break;
      case "dead":
        groups.dead.push([s.seq, s.error]);
        break;
      case "release":
        groups.release.push(s.seq);
        break;
    }
  }
  return groups;
}

/**
 * Deletes expired rows in bounded steps: `published` rows settled before
 * `publishedBefore`, then `dead` rows settled before `deadBefore`, at most
 * `request.limit` in all.
 *
 * @param request What cleanup was asked to do.
 * @param deleteSettled Deletes at most `limit` rows of `status` settled before `before`; resolves with the count.
 * @returns How many rows were deleted.
 */
export async function cleanupSettled(
  request: CleanupRequest,
  deleteSettled: (status: "published" | "dead", before: number, limit: number) => Promise<number>,
): Promise<number> {
  let deleted = 0;
  const steps: ["published" | "dead", number | null][] = [["published", request.publishedBefore], [
    "dead",
    request.deadBefore,
  ]];
  for (const [status, before] of steps) {
    const remaining = request.limit - deleted;
    if (remaining <= 0) break;
    if (before !== null) deleted += await deleteSettled(status, before, remaining);
  }
  return deleted;
}
