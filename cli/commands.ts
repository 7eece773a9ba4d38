/**
 * The commands that work on the outbox's rows: setup, status, list, requeue, purge.
 * Each opens the database, does one thing through the library's own API (the same
 * queries a relay runs), prints a table or one JSON document, and closes.
 */

import { OutboxConfigError } from "../src/errors.ts";
import { createOutbox, type Outbox } from "../src/outbox.ts";
import type { OutboxRow, OutboxStatus, StatusCounts } from "../src/types.ts";
import {
  choiceFlag,
  CliError,
  DEFAULT_DESTINATION_LABEL,
  destinationFlag,
  type Flags,
  type FlagSpec,
  intFlag,
  listFlag,
  stringFlag,
} from "./args.ts";
import { connect, type Connection, oneLine } from "./connect.ts";
import { cell, formatDuration, formatTime, parseDuration, table } from "./format.ts";
import type { CliIo } from "./io.ts";

/** A command: its help and what it does. */
export interface Command {
  /** One line for `outbox --help`. */
  readonly summary: string;
  /** The usage line after `outbox <name>`. */
  readonly usage: string;
  /** More lines for `outbox <name> --help`. */
  readonly details: string;
  readonly flags: Readonly<Record<string, FlagSpec>>;
  /** Runs with the parsed flags; resolves with the exit code. */
  run(flags: Flags, io: CliIo): Promise<number>;
}

/** Flags every command takes. */
export const CONNECTION_FLAGS: Readonly<Record<string, FlagSpec>> = {
  url: {
    kind: "string",
    value: "URL",
    help: "postgres://…, mysql://… (mariadb://…), file:…, libsql://… or https://… (default: $OUTBOX_URL)",
  },
  "auth-token": {
    kind: "string",
    value: "TOKEN",
    help: "token for libsql:// and https:// (default: $OUTBOX_AUTH_TOKEN)",
  },
  schema: {
    kind: "string",
    value: "NAME",
    help: "Postgres schema (default public); on MySQL the URL's path names the database",
  },
  table: { kind: "string", value: "NAME", help: "outbox table (default outbox)" },
  json: { kind: "boolean", help: "print one JSON document instead of a table" },
  help: { kind: "boolean", help: "show this help" },
};

type AnyOutbox = Outbox<unknown, unknown>;

/**
 * Opens the database named by `--url`/`OUTBOX_URL`, runs `body` with an outbox on it
 * (its publisher refuses: the CLI never publishes), and closes the connection.
 */
export async function withOutbox<T>(
  flags: Flags,
  io: CliIo,
  options: { create: boolean },
  body: (outbox: AnyOutbox, connection: Connection) => Promise<T>,
): Promise<T> {
  const connection = await openTarget(flags, io, options);
  try {
    const outbox = createOutbox({
      storage: connection.storage,
      publisher: () => {
        throw new Error("the outbox CLI does not publish");
      },
    });
    return await body(outbox, connection);
  } finally {
    await connection.close();
  }
}

/** Reads the connection flags (and their environment variables) and connects. */
export async function openTarget(flags: Flags, io: CliIo, options: { create: boolean }): Promise<Connection> {
  const url = stringFlag(flags, "url") ?? nonEmpty(io.env.OUTBOX_URL);
  if (url === undefined) throw new CliError("--url is required (or set OUTBOX_URL)", 2);
  return await connect(
    {
      url,
      authToken: stringFlag(flags, "auth-token") ?? nonEmpty(io.env.OUTBOX_AUTH_TOKEN),
      schema: stringFlag(flags, "schema"),
      table: stringFlag(flags, "table"),
    },
    io,
    options,
  );
}

const nonEmpty = (value: string | undefined) => (value === undefined || value === "" ? undefined : value);

/** Epoch ms as ISO text for JSON, or `null` (also for the "blocked" sentinel, beyond a Date's range). */
function iso(ms: number | null): string | null {
  return ms === null || !(Math.abs(ms) <= 8.64e15) ? null : new Date(ms).toISOString();
}

/** Prints a JSON document on one line. */
function printJson(io: CliIo, value: unknown): void {
  io.stdout(`${JSON.stringify(value)}\n`);
}

/** A duration flag, or `undefined`. */
function durationFlag(flags: Flags, name: string): number | undefined {
  const text = stringFlag(flags, name);
  if (text === undefined) return undefined;
  const ms = parseDuration(text);
  if (ms === undefined) {
    throw new CliError(`--${name} must be a duration such as 500ms, 60s, 5m, 1h or 7d, got ${JSON.stringify(text)}`, 2);
  }
  return ms;
}

const STATUSES: readonly OutboxStatus[] = ["pending", "processing", "published", "dead"];
const SETTLED = ["dead", "published"] as const;

/** The schema version `setup()` makes without fan-out: a destination column, one row per message id. */
export const SETUP_SCHEMA_VERSION = 2;

/** The schema version an outbox with `publishers` needs (a row per destination). */
export const FAN_OUT_SCHEMA_VERSION = 3;

/** The `--destination` flag of list, requeue and purge. */
const DESTINATION_FLAG: FlagSpec = {
  kind: "string",
  value: "NAME",
  help: "only this destination (a publishers name; '' or '(default)' for the one publisher's rows)",
};

/** A destination for a table cell: `""` (the one `publisher`'s) as `(default)`. */
function destinationCell(destination: string | undefined): string {
  return destination === undefined || destination === "" ? DEFAULT_DESTINATION_LABEL : cell(destination, 64);
}

/** Entries sorted by key, for stable tables. */
function sorted<T>(record: Readonly<Record<string, T>>): [string, T][] {
  return Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

// ------------------------------------------------------------------------ setup

const setup: Command = {
  summary: "create the outbox table, or upgrade it in place, and record its schema version (idempotent)",
  usage: "[--url URL] [--schema NAME] [--table NAME] [--fan-out] [--json]",
  details: [
    "Runs outbox.setup(): safe to run on every deploy. A file: database is created if missing.",
    "A table of an older version is upgraded in place (schema version 2); setup never",
    `downgrades. --fan-out readies the table for createOutbox({ publishers }) (version ${FAN_OUT_SCHEMA_VERSION}:`,
    "a row per destination for one message id). Upgrade every process first: writers of",
    "@x/outbox 0.1 cannot insert into such a table.",
  ].join("\n"),
  flags: {
    ...CONNECTION_FLAGS,
    "fan-out": {
      kind: "boolean",
      help:
        `also ready the table for publishers (schema version ${FAN_OUT_SCHEMA_VERSION}); what setup() of such an outbox does`,
    },
  },
  run: (flags, io) =>
    withOutbox(flags, io, { create: true }, async (outbox, c) => {
      try {
        // The storage's own setup: an outbox with one publisher would not ask for fanOut.
        if (flags["fan-out"] === true) await c.storage.setup({ fanOut: true });
        else await outbox.setup();
      } catch (error) {
        // A table newer than this code: a failure to act on (upgrade), not a usage error.
        if (error instanceof OutboxConfigError) throw new CliError(oneLine(error), 1);
        throw error;
      }
      const version = await c.schemaVersion();
      const fanOut = version !== null && version >= FAN_OUT_SCHEMA_VERSION;
      const reached = `schema version ${version}${fanOut ? " (fan-out)" : ""}`;
      if (flags.json) printJson(io, { ok: true, table: c.table, schemaVersion: version, fanOut });
      else io.stdout(`outbox table ${c.table} is set up at ${c.where}: ${reached}\n`);
      return 0;
    }),
};

// ----------------------------------------------------------------------- status

const status: Command = {
  summary: "counts by status, topic and destination, oldest pending age; --max-age for health checks",
  usage: "[--url URL] [--max-age DURATION] [--json]",
  details: [
    "With --max-age, exits 1 when the oldest due message has waited longer (a stalled",
    "relay or a failing broker): use it as a container health check, e.g.",
    "  outbox status --max-age 60s",
    "With fan-out (createOutbox({ publishers })), a table of counts per destination follows;",
    `${DEFAULT_DESTINATION_LABEL} is the one publisher's (in --json: the key "").`,
  ].join("\n"),
  flags: {
    ...CONNECTION_FLAGS,
    "max-age": { kind: "string", value: "DURATION", help: "exit 1 if the oldest pending message is older (60s, 5m)" },
  },
  run(flags, io) {
    const maxAgeMs = durationFlag(flags, "max-age");
    return withOutbox(flags, io, { create: false }, async (outbox, c) => {
      const s = await outbox.stats();
      const healthy = maxAgeMs === undefined || s.oldestPendingAgeMs <= maxAgeMs;
      if (flags.json) {
        printJson(io, {
          table: c.table,
          pending: s.pending,
          processing: s.processing,
          published: s.published,
          dead: s.dead,
          oldestPendingAt: s.oldestPendingAt?.toISOString() ?? null,
          oldestPendingAgeMs: s.oldestPendingAgeMs,
          blockedKeys: s.blockedKeys,
          topics: s.topics,
          destinations: s.destinations,
          maxAgeMs: maxAgeMs ?? null,
          healthy,
        });
      } else {
        const oldest = s.oldestPendingAt === null
          ? "-"
          : `${formatDuration(s.oldestPendingAgeMs)} (since ${formatTime(s.oldestPendingAt.getTime())})`;
        const lines = [
          `outbox ${c.table} at ${c.where}`,
          "",
          table(["STATUS", "COUNT"], STATUSES.map((st) => [st, String(s[st])]), [1]).trimEnd(),
          "",
          `oldest pending  ${oldest}`,
          `blocked keys    ${s.blockedKeys}`,
        ];
        if (maxAgeMs !== undefined) {
          lines.push(`max age         ${healthy ? "ok" : "FAIL"} (${formatDuration(maxAgeMs)})`);
        }
        const counts = (title: string, entries: [string, StatusCounts][]) => {
          const rows = entries.map(([name, n]) => [name, ...STATUSES.map((st) => String(n[st]))]);
          lines.push("", table([title, ...STATUSES.map((st) => st.toUpperCase())], rows, [1, 2, 3, 4]).trimEnd());
        };
        const topics = sorted(s.topics);
        if (topics.length > 0) counts("TOPIC", topics.map(([t, n]) => [cell(t, 60), n]));
        // Only an outbox that fans out has more than the one publisher's rows: without
        // it the table would repeat the status counts.
        const destinations = sorted(s.destinations ?? {});
        if (destinations.some(([d]) => d !== "")) {
          counts("DESTINATION", destinations.map(([d, n]) => [destinationCell(d), n]));
        }
        io.stdout(lines.join("\n") + "\n");
      }
      if (!healthy) {
        io.stderr(
          `outbox: the oldest pending message has waited ${
            formatDuration(s.oldestPendingAgeMs)
          }, longer than --max-age ${formatDuration(maxAgeMs!)}\n`,
        );
        return 1;
      }
      return 0;
    });
  },
};

// ------------------------------------------------------------------------- list

/** A payload for a table cell: the JSON text, or the size and first bytes in hex. */
function payloadPreview(body: string | Uint8Array | undefined, max: number): string {
  if (body === undefined) return "-";
  if (typeof body === "string") return cell(body, max);
  const hex = [...body.subarray(0, 16)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return cell(`<${body.length} bytes> ${hex}${body.length > 16 ? "…" : ""}`, max);
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** Stored JSON text parsed for a JSON document (kept as text if it does not parse). */
function parsed(text: string | null): unknown {
  if (text === null) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function rowJson(row: OutboxRow, withPayload: boolean): Record<string, unknown> {
  const out: Record<string, unknown> = {
    seq: row.seq,
    id: row.id,
    destination: row.destination ?? "",
    topic: row.topic,
    key: row.key,
    status: row.status,
    attempts: row.attempts,
    createdAt: iso(row.createdAt),
    availableAt: iso(row.availableAt),
    deliverAt: iso(row.deliverAt ?? null),
    settledAt: iso(row.settledAt),
    lockedBy: row.lockedBy,
    lastError: row.lastError,
  };
  if (withPayload) {
    // A storage written before inspect() returned bodies leaves them out: null.
    const body = row.body;
    out.payload = typeof body === "string" ? parsed(body) : null;
    out.payloadBase64 = body instanceof Uint8Array ? base64(body) : null;
    out.headers = parsed(row.headers ?? null);
  }
  return out;
}

const list: Command = {
  summary: "list messages, filtered and paged, oldest first",
  usage:
    "[--url URL] [--status S] [--topic T] [--key K] [--destination NAME] [--limit N] [--after SEQ] [--payload] [--json]",
  details: [
    "Pages by seq: pass the last row's SEQ as --after for the next page.",
    "With fan-out a message has a row per destination, all with its id; a DESTINATION",
    `column shows which (${DEFAULT_DESTINATION_LABEL}: the one publisher's).`,
  ].join("\n"),
  flags: {
    ...CONNECTION_FLAGS,
    status: { kind: "string", value: "S", help: "pending, processing, published or dead" },
    topic: { kind: "string", value: "T", help: "only this topic" },
    key: { kind: "string", value: "K", help: "only this key" },
    destination: DESTINATION_FLAG,
    limit: { kind: "string", value: "N", help: "rows to show, 1 to 1000 (default 20)" },
    after: { kind: "string", value: "SEQ", help: "only rows after this seq (paging)" },
    payload: { kind: "boolean", help: "show payloads (a preview in the table; whole in --json)" },
  },
  run(flags, io) {
    const options = {
      status: choiceFlag(flags, "status", STATUSES),
      topic: stringFlag(flags, "topic"),
      key: stringFlag(flags, "key"),
      destination: destinationFlag(flags, "destination"),
      limit: intFlag(flags, "limit", 1, 1000) ?? 20,
      after: intFlag(flags, "after", 0, Number.MAX_SAFE_INTEGER),
    };
    const withPayload = flags.payload === true;
    return withOutbox(flags, io, { create: false }, async (outbox) => {
      const rows = await outbox.inspect(options);
      const next = rows.length === options.limit ? rows[rows.length - 1]!.seq : null;
      if (flags.json) {
        printJson(io, { messages: rows.map((r) => rowJson(r, withPayload)), next });
        return 0;
      }
      if (rows.length === 0) {
        io.stdout("no messages\n");
        return 0;
      }
      // A destination column only when some row has one: a single publisher's rows are all "".
      const withDestination = rows.some((r) => !!r.destination);
      const headers = ["SEQ", "ID", ...(withDestination ? ["DESTINATION"] : []), "TOPIC", "KEY", "STATUS", "ATTEMPTS"];
      headers.push("CREATED", "LAST ERROR");
      const cells = rows.map((r) => {
        const line = [
          String(r.seq),
          cell(r.id, 40),
          ...(withDestination ? [destinationCell(r.destination)] : []),
          cell(r.topic, 40),
          cell(r.key, 24),
          r.status,
          String(r.attempts),
          formatTime(r.createdAt),
          cell(r.lastError, 80),
        ];
        if (withPayload) line.push(payloadPreview(r.body, 60));
        return line;
      });
      if (withPayload) headers.push("PAYLOAD");
      io.stdout(table(headers, cells, [0, withDestination ? 6 : 5]));
      if (next !== null) io.stdout(`(first ${rows.length}; next page: --after ${next})\n`);
      return 0;
    });
  },
};

// ---------------------------------------------------------------------- requeue

const requeue: Command = {
  summary: "move dead (or kept published) messages back to pending",
  usage: "--status dead|published [--topic T] [--destination NAME] [--id ID …] [--url URL]",
  details: [
    "Requeued messages start over with 0 attempts and are published by the next relay tick.",
    "With fan-out, --id matches the message's row for every destination: add --destination",
    "to requeue only the one that failed.",
  ].join("\n"),
  flags: {
    ...CONNECTION_FLAGS,
    status: { kind: "string", value: "S", help: "dead (default) or published" },
    topic: { kind: "string", value: "T", help: "only this topic" },
    destination: DESTINATION_FLAG,
    id: { kind: "list", value: "ID", help: "only this message id (repeat for more)" },
  },
  run(flags, io) {
    const st = choiceFlag(flags, "status", SETTLED) ?? "dead";
    const options = {
      status: st,
      topic: stringFlag(flags, "topic"),
      destination: destinationFlag(flags, "destination"),
      ids: listFlag(flags, "id"),
    };
    return withOutbox(flags, io, { create: false }, async (outbox) => {
      const n = await outbox.requeue(options);
      if (flags.json) printJson(io, { requeued: n });
      else io.stdout(`requeued ${n} ${st} message${n === 1 ? "" : "s"}\n`);
      return 0;
    });
  },
};

// ------------------------------------------------------------------------ purge

/** How many rows a purge would delete: the status count, or a walk over the matching rows. */
async function countPurgeable(
  outbox: AnyOutbox,
  o: { status: "dead" | "published"; topic?: string; destination?: string; ids?: string[]; olderThanMs?: number },
): Promise<number> {
  if (o.topic === undefined && o.ids === undefined && o.olderThanMs === undefined) {
    const s = await outbox.stats();
    if (o.destination === undefined) return s[o.status];
    return s.destinations[o.destination]?.[o.status] ?? 0;
  }
  const ids = o.ids && new Set(o.ids);
  const before = o.olderThanMs === undefined ? Infinity : Date.now() - o.olderThanMs;
  let count = 0;
  for (let after: number | undefined = undefined;;) {
    const rows = await outbox.inspect({
      status: o.status,
      topic: o.topic,
      destination: o.destination,
      limit: 1000,
      after,
    });
    for (const r of rows) {
      if ((!ids || ids.has(r.id)) && (r.settledAt ?? r.createdAt) < before) count++;
    }
    if (rows.length < 1000) return count;
    after = rows[rows.length - 1]!.seq;
  }
}

const purge: Command = {
  summary: "delete dead or published messages for good (asks for --yes)",
  usage:
    "--status dead|published [--older-than DURATION] [--topic T] [--destination NAME] [--id ID …] --yes [--url URL]",
  details: [
    "Without --yes, prints how many messages would go and exits 2. --older-than counts from when a message was settled.",
    "With fan-out, --id matches the message's row for every destination; --destination narrows it.",
  ].join("\n"),
  flags: {
    ...CONNECTION_FLAGS,
    status: { kind: "string", value: "S", help: "dead or published (required)" },
    "older-than": { kind: "string", value: "DURATION", help: "only messages settled longer ago (7d, 12h)" },
    topic: { kind: "string", value: "T", help: "only this topic" },
    destination: DESTINATION_FLAG,
    id: { kind: "list", value: "ID", help: "only this message id (repeat for more)" },
    yes: { kind: "boolean", help: "really delete" },
  },
  run(flags, io) {
    const st = choiceFlag(flags, "status", SETTLED);
    if (st === undefined) throw new CliError("purge needs --status dead or --status published", 2);
    const options = {
      status: st,
      olderThanMs: durationFlag(flags, "older-than"),
      topic: stringFlag(flags, "topic"),
      destination: destinationFlag(flags, "destination"),
      ids: listFlag(flags, "id"),
    };
    return withOutbox(flags, io, { create: false }, async (outbox) => {
      const plural = (n: number) => `${n} ${st} message${n === 1 ? "" : "s"}`;
      if (flags.yes !== true) {
        const n = await countPurgeable(outbox, options);
        if (flags.json) printJson(io, { wouldPurge: n });
        else io.stdout(`would purge ${plural(n)}\n`);
        io.stderr("outbox: purge deletes messages for good; add --yes to do it\n");
        return 2;
      }
      const n = await outbox.purge(options);
      if (flags.json) printJson(io, { purged: n });
      else io.stdout(`purged ${plural(n)}\n`);
      return 0;
    });
  },
};

/** The commands that work on rows, by name (doctor lives in doctor.ts). */
export const ROW_COMMANDS: Readonly<Record<string, Command>> = { setup, status, list, requeue, purge };
