/**
 * Error classes of @x/outbox. Every error the library throws on purpose
 * extends {@link OutboxError}, so `catch (e) { if (e instanceof OutboxError) … }`
 * separates our conditions from driver failures.
 *
 * Each class is also branded with `Symbol.for`, so {@link isOutboxError} and
 * {@link isPermanentError} still work when two copies of the library are loaded
 * (an adapter bundled with its own copy of the core, say).
 *
 * @module
 */

const BRAND: unique symbol = Symbol.for("@x/outbox/error") as never;

/** The names of the error classes, as stored under the shared brand. */
export type OutboxErrorName =
  | "OutboxError"
  | "OutboxConfigError"
  | "OutboxMessageError"
  | "OutboxStorageError"
  | "PublishError";

/** Options shared by every error constructor. */
export interface OutboxErrorOptions {
  /** The underlying error, kept as `error.cause`. */
  cause?: unknown;
}

/**
 * Base class of every error thrown by @x/outbox.
 *
 * @example Separate outbox errors from the rest
 * ```ts
 * import { OutboxError } from "@x/outbox";
 * try {
 *   await outbox.enqueue(tx, message);
 * } catch (error) {
 *   if (error instanceof OutboxError) console.error(error.name, error.message);
 *   throw error;
 * }
 * ```
 */
export class OutboxError extends Error {
  /** Brand that survives duplicate copies of the library. */
  [BRAND]: OutboxErrorName;

  /**
   * @param message Sentence-case description of what was attempted and why it failed.
   * @param options `cause` for the underlying error.
   */
  constructor(message: string, options?: OutboxErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "OutboxError";
    this[BRAND] = "OutboxError";
  }
}

/**
 * Thrown by `createOutbox` and the adapter factories when an option is invalid.
 * `path` names the offending field, for example `retry.maxAttempts`.
 */
export class OutboxConfigError extends OutboxError {
  /** Dot path of the invalid option, e.g. `"retry.jitter"`; empty for the options object itself. */
  readonly path: string;

  /**
   * @param message What is wrong with the option.
   * @param path Dot path of the invalid option.
   * @param options `cause` for the underlying error.
   */
  constructor(message: string, path = "", options?: OutboxErrorOptions) {
    super(message, options);
    this.name = "OutboxConfigError";
    this[BRAND] = "OutboxConfigError";
    this.path = path;
  }
}

/**
 * Thrown by `enqueue()` and `statements()` when a message is invalid: a missing topic,
 * a payload that fails its schema, a payload that is not serializable or too large.
 * Nothing has been written when it is thrown, so the caller's transaction is untouched.
 */
export class OutboxMessageError extends OutboxError {
  /** Dot path of the invalid field, e.g. `"[2].payload.items[0].price"`. */
  readonly path: string;

  /**
   * @param message What is wrong with the message.
   * @param path Dot path of the invalid field.
   * @param options `cause` for the underlying error.
   */
  constructor(message: string, path = "", options?: OutboxErrorOptions) {
    super(message, options);
    this.name = "OutboxMessageError";
    this[BRAND] = "OutboxMessageError";
    this.path = path;
  }
}

/**
 * Thrown when the database refuses an outbox operation: a closed transaction, a lost
 * connection, a missing table. The driver's error is `cause`.
 */
export class OutboxStorageError extends OutboxError {
  /**
   * @param message What the storage was doing when it failed.
   * @param options `cause` for the driver error.
   */
  constructor(message: string, options?: OutboxErrorOptions) {
    super(message, options);
    this.name = "OutboxStorageError";
    this[BRAND] = "OutboxStorageError";
  }
}

/** Options of {@link PublishError}. */
export interface PublishErrorOptions extends OutboxErrorOptions {
  /** `true` when retrying cannot help: the message goes straight to `dead`. */
  permanent?: boolean;
  /**
   * When the broker says when to come back (an HTTP `Retry-After`): the next attempt
   * waits this many ms instead of the back-off, at most `retry.maxDelayMs`.
   */
  retryAfterMs?: number;
}

/**
 * Thrown by a publisher to say how a failure should be handled. With
 * `permanent: true` the message goes straight to `dead` without further attempts;
 * any other error (this class without `permanent`, or any other `Error`) is retried
 * with back-off until `retry.maxAttempts`.
 *
 * @example A publisher that rejects a topic for good
 * ```ts
 * import { PublishError } from "@x/outbox";
 * const publisher = async (message) => {
 *   if (message.topic.startsWith("legacy.")) {
 *     throw new PublishError(`No route for topic "${message.topic}"`, { permanent: true });
 *   }
 *   await send(message);
 * };
 * ```
 */
export class PublishError extends OutboxError {
  /** Whether the failure is final (no retry). */
  readonly permanent: boolean;
  /** How long to wait before the next attempt, when the broker said (ms). */
  readonly retryAfterMs?: number;

  /**
   * @param message Why the publish failed, in plain words; kept as the row's `lastError`.
   * @param options `permanent` and `cause`.
   */
  constructor(message: string, options?: PublishErrorOptions) {
    super(message, options);
    this.name = "PublishError";
    this[BRAND] = "PublishError";
    this.permanent = options?.permanent ?? false;
    this.retryAfterMs = options?.retryAfterMs;
  }
}

/**
 * Whether `value` is an error thrown by @x/outbox (any copy of it).
 *
 * @param value Anything caught.
 * @param name Narrow to one class by name.
 * @returns `true` for an outbox error (of that class, when `name` is given).
 */
export function isOutboxError(value: unknown, name?: OutboxErrorName): value is OutboxError {
  if (typeof value !== "object" || value === null) return false;
  const brand = (value as { [BRAND]?: unknown })[BRAND];
  if (typeof brand !== "string") return false;
  return name === undefined || brand === name;
}

/**
 * Whether a publish failure is final: a {@link PublishError} with `permanent: true`, or
 * any error object carrying `permanent: true` (so publishers need not import this library).
 *
 * @param error What the publisher threw.
 * @returns `true` when retrying cannot help.
 */
export function isPermanentError(error: unknown): boolean {
  return typeof error === "object" && error !== null &&
    (error as { permanent?: unknown }).permanent === true;
}

/** Plain-words description of anything thrown, for `lastError`. */
export function describeError(error: unknown): string {
  if (error instanceof Error) {
    const text = error.message || error.name;
    return error.name && error.name !== "Error" && !text.startsWith(error.name) ? `${error.name}: ${text}` : text;
  }
  if (typeof error === "string") return error;
  try {
    return JSON.stringify(error) ?? String(error);
  } catch {
    return String(error);
  }
}
