/**
 * The warning a deduplicating publisher gives when the broker drops a message's first
 * attempt as a duplicate: that is a replay (a requeue of published messages, an id
 * enqueued again) the broker will not deliver, while the outbox counts it published.
 * Shared by the JetStream and Redis Streams publishers.
 */

import type { OutboxRecord } from "../../src/types.ts";

/** At most one warning per this many ms; each counts the drops since the one before. */
const INTERVAL_MS = 10_000;

/**
 * Makes a throttled reporter of dropped duplicates. `warn` is set by the publisher's
 * `check()` (no warning before it); `explain(what, stream)` words the warning, with
 * `what` either "message <id>" or "<n> messages (the last <id>)".
 */
export function duplicateWarner(explain: (what: string, stream: string) => string): {
  warn: ((message: string) => void) | null;
  dropped(message: OutboxRecord, stream: string): void;
} {
  let count = 0;
  let warnedAt = -Infinity;
  return {
    warn: null,
    dropped(message, stream) {
      if (this.warn === null) return;
      count++;
      const now = Date.now();
      if (now - warnedAt < INTERVAL_MS) return;
      const what = count === 1 ? `message ${message.id}` : `${count} messages (the last ${message.id})`;
      count = 0;
      warnedAt = now;
      this.warn(explain(what, stream));
    },
  };
}
