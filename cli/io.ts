/**
 * What the CLI needs from its surroundings, so `main` runs the same in a process and in
 * a test: where output goes, the environment, and how drivers are loaded.
 */

/**
 * The modules the CLI loads on demand, from its optional peer dependencies: a package,
 * or one of its subpaths (`mysql2/promise`).
 */
export type DriverName =
  | "postgres"
  | "mysql2/promise"
  | "@libsql/client"
  | "@nats-io/transport-node"
  | "@nats-io/jetstream";

/** Input and output of one CLI run. */
export interface CliIo {
  /** Writes to standard output (text carries its own newlines). */
  stdout(text: string): void;
  /** Writes to standard error. */
  stderr(text: string): void;
  /** Environment variables: `OUTBOX_URL`, `OUTBOX_AUTH_TOKEN`. */
  env: Readonly<Record<string, string | undefined>>;
  /** Loads a driver (default: a dynamic `import()` of the package). Tests simulate a missing one. */
  loadDriver?: (name: DriverName) => Promise<unknown>;
}

/**
 * Imports a driver module. Each specifier is a literal, so Deno and JSR see it in the
 * module graph and map it through the import map; none is loaded before it is needed.
 *
 * @param name The package or subpath.
 * @returns The module.
 */
export function importDriver(name: DriverName): Promise<unknown> {
  switch (name) {
    case "postgres":
      return import("postgres");
    case "mysql2/promise":
      return import("mysql2/promise");
    case "@libsql/client":
      return import("@libsql/client");
    case "@nats-io/transport-node":
      return import("@nats-io/transport-node");
    case "@nats-io/jetstream":
      return import("@nats-io/jetstream");
  }
}
