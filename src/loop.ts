/**
 * The relay loop behind `outbox.start()`: tick, and when a tick finds nothing, sleep
 * with a doubling back-off until a wake-up (storage LISTEN/NOTIFY) or the next poll.
 * Polling is always on; wake-ups only shorten the wait.
 */

import { retryHorizonMs } from "./options.ts";
import type { RelayContext, TickReport } from "./relay.ts";
import { emptyReport, runTick } from "./relay.ts";

/** Options of `outbox.start()`. */
export interface StartOptions {
  /** Stops the loop when aborted, like `relay.stop()`. */
  signal?: AbortSignal;
  /** First idle wait after an empty tick, in ms (default 50). */
  minIdleMs?: number;
  /** Longest idle wait: the polling interval of an idle relay (default 1,000 ms). */
  maxIdleMs?: number;
  /**
   * Called after every tick that did something, for metrics and logs; also after a tick
   * that failed part-way, with what it did before the error (the error goes to `onError`).
   */
  onTick?: (report: TickReport) => void;
}

/** A running relay loop. */
export interface RelayHandle {
  /**
   * Stops the loop. The batch in flight finishes (messages being published are awaited,
   * the rest are released) and is settled before the promise resolves.
   */
  stop(): Promise<void>;
  /** Resolves when the loop has stopped. Never rejects: tick errors go to `onError`. */
  readonly done: Promise<void>;
  /** Whether the loop is still running. */
  readonly running: boolean;
  /** `stop()`, so `await using relay = outbox.start()` stops the loop when the scope ends. */
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Starts the loop: one per relay context (a destination), sharing the stop signal,
 * the wake-ups and the handle.
 */
export function startLoop(ctxs: readonly RelayContext[], options: StartOptions = {}): RelayHandle {
  const minIdle = Math.max(1, options.minIdleMs ?? 50);
  const maxIdle = Math.max(minIdle, options.maxIdleMs ?? 1_000);
  const { storage, options: o, nudges } = ctxs[0]!;
  const stopper = new AbortController();
  const stopSignal = stopper.signal;
  const onAbort = () => stopper.abort();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) stopper.abort();

  // Each loop's wake-up: `nudged` says an enqueue in this process caused it.
  const wakers = new Set<(nudged: boolean) => void>();
  const wake = () => wakers.forEach((w) => w(false));
  stopSignal.addEventListener("abort", wake, { once: true });

  // An enqueue in this process will most likely commit within milliseconds, but when is
  // unknown: poll 1 ms later, then back off from 1 ms rather than from minIdle, so a
  // commit a few ms away is found within about as long again. (A hint, like NOTIFY.)
  let nudgeTimer: ReturnType<typeof setTimeout> | undefined;
  const nudge = () => {
    if (nudgeTimer !== undefined || stopSignal.aborted) return;
    nudgeTimer = setTimeout(() => {
      nudgeTimer = undefined;
      wakers.forEach((w) => w(true));
    }, 1);
  };
  nudges.add(nudge);

  // Whether wake-ups arrive (LISTEN is up): then a commit during a tick is known by
  // `woken`, and an extra claim "just in case" after a partial batch is not needed.
  let listening = false;
  if (storage.listen) {
    Promise.resolve().then(() => storage.listen!(wake, stopSignal)).then(
      () => {
        listening = !stopSignal.aborted;
      },
      (error) => o.onError(error, { phase: "listen" }),
    );
  }

  const loop = async (ctx: RelayContext) => {
    const { publisher } = ctx;
    if (publisher.check) {
      Promise.resolve()
        .then(() => publisher.check!({ retryHorizonMs: retryHorizonMs(o), warn: o.onWarning }))
        .catch((error) => o.onError(error, { phase: "check" }));
    }
    let wakeUp: (() => void) | null = null;
    let woken = false;
    let nudged = false;
    const waker = (n: boolean) => {
      woken = true;
      nudged ||= n;
      wakeUp?.();
    };
    wakers.add(waker);
    const sleep = (ms: number) =>
      new Promise<void>((resolve) => {
        if (woken || stopSignal.aborted) return resolve();
        const timer = setTimeout(done, ms);
        function done() {
          clearTimeout(timer);
          wakeUp = null;
          resolve();
        }
        wakeUp = done;
      });
    let idle = minIdle;
    let failures = 0;
    while (!stopSignal.aborted) {
      woken = false;
      const report = emptyReport();
      let failed = false;
      try {
        await runTick(ctx, { maxBatches: 16, signal: stopSignal, budgetMs: Infinity }, report);
        failures = 0;
      } catch (error) {
        o.onError(error, { phase: "tick" });
        failed = true;
      }
      // A failed tick still reports the batches it got through (a later claim failed,
      // say), so onTick counts every message published.
      if ((report.claimed > 0 || report.cleaned > 0) && options.onTick) {
        // A throwing (or rejecting) hook is reported, never the end of the loop.
        Promise.resolve(report).then(options.onTick).catch((error) => o.onError(error, { phase: "onTick" }));
      }
      if (failed) {
        failures++;
        // Back off on a failing database, up to the idle cap or 5 s, whichever is larger.
        await sleep(Math.min(Math.max(maxIdle, 5_000), minIdle * 2 ** Math.min(failures, 16)));
        continue;
      }
      if (report.claimed >= o.batchSize) {
        idle = minIdle;
        continue;
      }
      if (report.claimed > 0 && report.released === 0) {
        // A partial batch means we are caught up; look once more right away for
        // messages that committed meanwhile, then idle. With wake-ups, `woken` already
        // says whether anything committed meanwhile; the short idle wait still polls.
        idle = minIdle;
        if (!listening || woken) continue;
      }
      await sleep(woken ? 0 : idle);
      idle = nudged ? 1 : woken ? minIdle : Math.min(maxIdle, idle * 2);
      nudged = false;
    }
  };
  let running = true;
  // `done` never rejects: whatever escapes a loop (a defect) is reported, and the
  // handle still ends in a stopped state.
  const done = Promise.all(ctxs.map((ctx) => loop(ctx).catch((error) => o.onError(error, { phase: "tick" }))))
    .then(() => {
      running = false;
      stopper.abort();
      nudges.delete(nudge);
      clearTimeout(nudgeTimer);
      options.signal?.removeEventListener("abort", onAbort);
    });

  const stop = () => {
    stopper.abort();
    return done;
  };
  return {
    stop,
    // A runtime without the symbol (Node < 20.4) gets a harmless string key.
    [Symbol.asyncDispose ?? "asyncDispose"]: stop,
    done,
    get running() {
      return running;
    },
  } as RelayHandle;
}
