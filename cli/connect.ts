/**
 * From `--url` to a storage: the driver the URL's scheme calls for, loaded on demand,
 * one probe query so an unreachable database is reported as such, and a way to close.
 */

import type { OutboxStorage } from "../src/types.ts";
import { libsqlSchemaVersion, libsqlStorage, SCHEMA_VERSION as LIBSQL_SCHEMA_VERSION } from "../adapters/libsql/mod.ts";
import { type MysqlPool, mysqlStorage, SCHEMA_VERSION as MYSQL_SCHEMA_VERSION } from "../adapters/mysql/mod.ts";
import { checkIdentifier } from "../adapters/shared/identifier.ts";
import {
  type PostgresSql,
  postgresStorage,
  SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION,
} from "../adapters/postgres/mod.ts";
import { CliError } from "./args.ts";
import type { CliIo, DriverName } from "./io.ts";
import { importDriver } from "./io.ts";
import { fileExists } from "./runtime.ts";

/** Where the outbox table is, as given on the command line. */
export interface Target {
  readonly url: string;
  readonly authToken?: string;
  readonly schema?: string;
  readonly table?: string;
}

/** An open connection to the outbox's database. */
export interface Connection {
  readonly kind: "postgres" | "mysql" | "libsql";
  readonly storage: OutboxStorage<unknown, unknown>;
  /** The URL without its password, for output. */
  readonly where: string;
  /** `schema.table` (Postgres), `database.table` (MySQL) or `table` (libSQL), for output. */
  readonly table: string;
  /** The Postgres schema, or the MySQL database (the URL's path); none on libSQL. */
  readonly schemaName: string | undefined;
  readonly tableName: string;
  /** Runs SQL with bound parameters (`$1` on Postgres, `?` on MySQL and libSQL); for `doctor`. */
  query(text: string, params?: readonly unknown[]): Promise<Record<string, unknown>[]>;
  /**
   * The table's schema version as the adapter reads it (the recorded one, else what the
   * layout shows), or `null` when there is no table.
   */
  schemaVersion(): Promise<number | null>;
  /** The newest schema version this @x/outbox knows (the adapter's `SCHEMA_VERSION`). */
  readonly latestSchemaVersion: number;
  close(): Promise<void>;
}

/**
 * The URL with any password replaced by `***`: the one before the host (up to the last
 * `@` of the authority, as URL parsers read it) and a `password=` parameter.
 */
export function redact(url: string): string {
  return url
    .replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@?#]*:)[^/?#]*@/i, "$1***@")
    .replace(/([?&]password=)[^&#]*/gi, "$1***");
}

/**
 * Loads a driver, or says in one line which package to install.
 *
 * @throws {CliError} With exit code 1 when the package cannot be loaded.
 */
export async function loadDriver<T>(io: CliIo, name: DriverName, purpose: string): Promise<T> {
  try {
    return await (io.loadDriver ?? importDriver)(name) as T;
  } catch {
    // A subpath (`mysql2/promise`) comes with its package.
    const pkg = name.split("/").slice(0, name.startsWith("@") ? 2 : 1).join("/");
    throw new CliError(`install ${pkg} to use ${purpose} (npm install ${pkg})`, 1);
  }
}

/** The path of a `file:` URL: `file:app.db` → `app.db`, `file:///srv/app.db` → `/srv/app.db`. */
function filePath(url: string): string {
  let rest = url.slice("file:".length).split("?")[0]!;
  if (rest.startsWith("//")) rest = rest.slice(2);
  return decodeURIComponent(rest);
}

/**
 * The message of anything thrown, on one line. A driver's error with an empty message
 * (Node's AggregateError when every address of a host refuses) says what its parts say,
 * or its code.
 */
export function oneLine(error: unknown): string {
  let text = error instanceof Error ? error.message : String(error);
  if (text.trim() === "" && error instanceof Error) {
    const { errors, code } = error as Error & { errors?: unknown; code?: unknown };
    const parts = Array.isArray(errors) ? errors.map((e) => (e instanceof Error ? e.message : String(e))) : [];
    text = [...new Set(parts.filter((p) => p.trim() !== ""))].join("; ") ||
      (typeof code === "string" ? code : error.name);
  }
  return text.replace(/\s*\n\s*/g, " ").trim();
}

type PostgresFactory = (url: string, options: Record<string, unknown>) => PostgresSql & {
  end(options?: { timeout?: number }): Promise<void>;
};

/** What the CLI uses of mysql2/promise: a pool (the storage's, and `query` for doctor) it can end. */
interface MysqlModule {
  createPool(options: Record<string, unknown>): MysqlPool & { end(): Promise<void> };
}

/**
 * The database a `mysql://` URL names (its path), decoded.
 *
 * @throws {CliError} Exit 2 when the URL does not parse or names no database.
 */
function mysqlDatabase(url: string, where: string, scheme: string): string {
  let database: string;
  try {
    database = decodeURIComponent(new URL(url).pathname.replace(/^\//, ""));
  } catch {
    // Not the parser's message: some runtimes quote the whole URL, password and all.
    throw new CliError(`--url ${JSON.stringify(where)} is not a valid ${scheme}:// URL`, 2);
  }
  if (database === "") {
    throw new CliError(
      `--url ${JSON.stringify(where)} names no database; add it as the path: ${scheme}://user@host:3306/app`,
      2,
    );
  }
  return database;
}

interface LibsqlModule {
  createClient(config: { url: string; authToken?: string }): {
    execute(statement: { sql: string; args: unknown[] } | string): Promise<{ rows: Record<string, unknown>[] }>;
    close(): void;
  };
}

/**
 * Opens the database `--url` names and checks that it answers.
 *
 * @param target URL, token, schema and table.
 * @param io Where drivers come from.
 * @param options `create`: a `file:` database may be created (setup); otherwise a
 *   missing file is an error rather than a new empty database.
 * @returns The open connection; close it.
 * @throws {CliError} Exit 2 for a URL or option that cannot work, 1 when the database cannot be reached.
 */
export async function connect(target: Target, io: CliIo, options: { create: boolean }): Promise<Connection> {
  const { url } = target;
  const where = redact(url);
  // Before any file or network access: a bad name is a usage error whatever the database.
  for (const name of ["schema", "table"] as const) {
    if (target[name] !== undefined) checkIdentifier(target[name], `--${name}`);
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === "postgres" || scheme === "postgresql") {
    if (target.authToken !== undefined) throw new CliError("--auth-token is for libsql:// and http(s):// URLs", 2);
    const postgres = (await loadDriver<{ default: PostgresFactory }>(io, "postgres", "a postgres:// URL")).default;
    let sql: ReturnType<PostgresFactory>;
    try {
      sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10, idle_timeout: 1 });
    } catch (error) {
      throw new CliError(`--url is not a valid Postgres URL: ${oneLine(error)}`, 2);
    }
    const close = () => sql.end({ timeout: 1 }).catch(() => {});
    try {
      const storage = postgresStorage(sql, { schema: target.schema, table: target.table, notify: false });
      await sql.unsafe("SELECT 1").then(() => {}, (error: unknown) => {
        throw new CliError(`cannot connect to ${where}: ${oneLine(error)}`, 1);
      });
      return {
        kind: "postgres",
        storage: storage as OutboxStorage<unknown, unknown>,
        where,
        table: `${storage.schema}.${storage.table}`,
        schemaName: storage.schema,
        tableName: storage.table,
        query: async (text, params = []) => await sql.unsafe(text, [...params]),
        schemaVersion: () => storage.schemaVersion(),
        latestSchemaVersion: POSTGRES_SCHEMA_VERSION,
        close,
      };
    } catch (error) {
      await close();
      throw error;
    }
  }
  if (scheme === "mysql" || scheme === "mariadb") {
    if (target.authToken !== undefined) throw new CliError("--auth-token is for libsql:// and http(s):// URLs", 2);
    if (target.schema !== undefined) {
      throw new CliError(
        `--schema is for postgres:// URLs; on ${scheme}:// the database is the URL's path (${scheme}://user@host:3306/app)`,
        2,
      );
    }
    const database = mysqlDatabase(url, where, scheme);
    const driver = await loadDriver<MysqlModule & { default?: MysqlModule }>(
      io,
      "mysql2/promise",
      `a ${scheme}:// URL`,
    );
    const mysql = typeof driver.createPool === "function" ? driver : driver.default!;
    let pool: ReturnType<MysqlModule["createPool"]>;
    try {
      // The URL's own parameters (ssl, socketPath, charset …) apply; these are the CLI's.
      // It runs one statement at a time: two connections at most (no idle reaper, whose
      // timer would run until end()), and a server that does not answer is given up after 10 s.
      pool = mysql.createPool({ uri: url, connectionLimit: 2, connectTimeout: 10_000 });
    } catch (error) {
      throw new CliError(`--url is not a valid MySQL URL: ${oneLine(error)}`, 2);
    }
    const close = () => pool.end().catch(() => {});
    try {
      const storage = mysqlStorage(pool, { table: target.table });
      await pool.query({ sql: "SELECT 1" }).catch((error: unknown) => {
        throw new CliError(`cannot connect to ${where}: ${oneLine(error)}`, 1);
      });
      return {
        kind: "mysql",
        storage: storage as unknown as OutboxStorage<unknown, unknown>,
        where,
        table: `${database}.${storage.table}`,
        schemaName: database,
        tableName: storage.table,
        query: async (text, params = []) => {
          // Plain rows whatever the URL's options: the same per-query settings the storage uses.
          const [rows] = await pool.query({
            sql: text,
            values: [...params],
            rowsAsArray: false,
            nestTables: false,
            namedPlaceholders: false,
            typeCast: true,
          });
          return (rows as Record<string, unknown>[]).map((row) => ({ ...row }));
        },
        schemaVersion: () => storage.schemaVersion(),
        latestSchemaVersion: MYSQL_SCHEMA_VERSION,
        close,
      };
    } catch (error) {
      await close();
      throw error;
    }
  }
  const remote = scheme === "libsql" || scheme === "http" || scheme === "https" || scheme === "ws" ||
    scheme === "wss";
  if (scheme === "file" || remote) {
    if (target.schema !== undefined) throw new CliError("--schema is for postgres:// URLs", 2);
    if (scheme === "file" && target.authToken !== undefined) {
      throw new CliError("--auth-token is for libsql:// and http(s):// URLs, not file:", 2);
    }
    if (scheme === "file" && !options.create && !(await fileExists(filePath(url)))) {
      throw new CliError(`no database file at ${filePath(url)} (check --url; \`outbox setup\` creates one)`, 1);
    }
    const libsql = await loadDriver<LibsqlModule>(io, "@libsql/client", `a ${scheme}: URL`);
    let client: ReturnType<LibsqlModule["createClient"]>;
    try {
      client = libsql.createClient({ url, authToken: target.authToken });
    } catch (error) {
      throw new CliError(`--url is not a valid libSQL URL: ${oneLine(error)}`, 2);
    }
    const close = async () => client.close();
    try {
      const storage = libsqlStorage(client as never, { table: target.table });
      await client.execute("SELECT 1").catch((error: unknown) => {
        const text = oneLine(error);
        const hint = remote && /\b401\b|unauthori[sz]ed|auth/i.test(text)
          ? target.authToken === undefined ? "; pass --auth-token or set OUTBOX_AUTH_TOKEN" : "; check --auth-token"
          : "";
        throw new CliError(`cannot connect to ${where}: ${text}${hint}`, 1);
      });
      return {
        kind: "libsql",
        storage: storage as unknown as OutboxStorage<unknown, unknown>,
        where,
        table: storage.table,
        schemaName: undefined,
        tableName: storage.table,
        query: async (text, params = []) => (await client.execute({ sql: text, args: [...params] })).rows,
        schemaVersion: () => libsqlSchemaVersion(client as never, { table: storage.table }),
        latestSchemaVersion: LIBSQL_SCHEMA_VERSION,
        close,
      };
    } catch (error) {
      await close();
      throw error;
    }
  }
  throw new CliError(
    scheme === undefined
      ? `--url ${JSON.stringify(where)} has no scheme; use postgres://, mysql://, file:, libsql:// or https://`
      : `--url scheme ${scheme}: is not supported; use postgres://, mysql://, mariadb://, file:, libsql:// or https://`,
    2,
  );
}
