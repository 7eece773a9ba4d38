/**
 * Cancellation of a storage call by an `AbortSignal`, shared by the adapters: the call
 * rejects with the signal's reason (an `AbortError` by default, as `fetch` does), before
 * any SQL when the signal is already aborted, or as soon as it aborts.
 */

/**
 * Runs `start()` unless `signal` is aborted, and settles with it or with the signal's
 * reason, whichever comes first. On abort, `cancel` may ask the driver to stop the
 * statement (postgres.js `query.cancel()`); without it the statement runs to its end
 * in the background and its outcome is dropped.
 */
export async function abortable<T>(
  signal: AbortSignal | undefined,
  start: () => PromiseLike<T>,
  cancel?: (pending: PromiseLike<T>) => void,
): Promise<T> {
  if (!signal) return await start();
  signal.throwIfAborted();
  const pending = start();
  let stopWaiting = () => {};
  const aborted = new Promise<never>((_, reject) => {
    stopWaiting = onAbort(signal, () => {
      cancel?.(pending);
      reject(signal.reason);
    });
  });
  try {
    return await Promise.race([pending, aborted]);
  } finally {
    stopWaiting();
    // A statement cancelled or outrun by the abort rejects later: that is expected.
    Promise.resolve(pending).catch(() => {});
  }
}

const watchers = new WeakMap<AbortSignal, Set<() => void>>();

/**
 * Calls `fn` once when `signal` aborts, through ONE listener per signal however many
 * callers wait on it: the relay hands one lease signal to every publish and run of a
 * batch, and a listener each would pass Node's limit of 10 (MaxListenersExceededWarning).
 * Returns the way to stop waiting; call it when the work is done.
 */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  let set = watchers.get(signal);
  if (!set) {
    const callbacks = set = new Set();
    watchers.set(signal, callbacks);
    signal.addEventListener("abort", () => {
      for (const callback of [...callbacks]) callback();
      callbacks.clear();
    }, { once: true });
  }
  set.add(fn);
  return () => void set.delete(fn);
}
