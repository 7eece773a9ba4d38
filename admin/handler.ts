/**
 * `createAdminHandler`: the outbox's JSON API and dashboard as one Web-standard
 * `(request: Request) => Promise<Response>`.
 */

import { isOutboxError, OutboxConfigError } from "../src/errors.ts";
import type { OutboxRow, OutboxStatus, StatusCounts } from "../src/types.ts";
import { dashboardHtml } from "./dashboard.ts";

/** Statuses a row can have, as the API accepts them in `?status=`. */
const STATUSES = ["pending", "processing", "published", "dead"] as const;

/** A row status (the core's `OutboxStatus`). */
export type AdminStatus = OutboxStatus;

/** Counts by status (the core's `StatusCounts`). */
export type AdminStatusCounts = StatusCounts;

/**
 * The part of an outbox the handler uses. Any `Outbox` from `createOutbox` fits; a
 * stand-in (another process's outbox behind an RPC, a test double) may too.
 */
export interface AdminOutbox {
  /** Counts by status, topic and destination, and the oldest due message. */
  stats(): Promise<
    AdminStatusCounts & {
      oldestPendingAt: Date | null;
      oldestPendingAgeMs: number;
      blockedKeys: number;
      topics?: Readonly<Record<string, Readonly<AdminStatusCounts>>>;
      /** Per destination (`""`: the one `publisher`'s rows); absent from outboxes before fan-out. */
      destinations?: Readonly<Record<string, Readonly<AdminStatusCounts>>>;
    }
  >;
  /** Rows in `seq` order, filtered, with `seq > after`; `destination` absent: any. */
  inspect(options: {
    status?: AdminStatus;
    topic?: string;
    key?: string;
    destination?: string;
    limit?: number;
    after?: number;
  }): Promise<readonly AdminRow[]>;
  /** Moves dead or published messages back to pending; resolves with the count. */
  requeue(options: {
    status?: "dead" | "published";
    ids?: readonly string[];
    topic?: string;
    destination?: string;
  }): Promise<number>;
  /** Deletes dead or published messages; resolves with the count. */
  purge(options: {
    status: "dead" | "published";
    olderThanMs?: number;
    ids?: readonly string[];
    topic?: string;
    destination?: string;
  }): Promise<number>;
}

/** A stored row as `outbox.inspect()` lists it (the core's `OutboxRow`). */
export type AdminRow = OutboxRow;

/** What a request asks for: `"read"` (GET routes and the page) or `"write"` (requeue, purge). */
export type AdminAccess = "read" | "write";

/** Options of {@link createAdminHandler}. */
export interface AdminHandlerOptions {
  /**
   * Path prefix the handler is mounted under, e.g. `"/admin"` (default `""`: the root).
   * The dashboard is at `{basePath}/`, the API under `{basePath}/api/`.
   */
  basePath?: string;
  /**
   * `true` (default): requeue and purge answer 403. `false` enables them, and then
   * {@link AdminHandlerOptions.authorize} is required.
   */
  readOnly?: boolean;
  /**
   * Decides who may use the handler. Called for every request the handler serves, with
   * `"read"` for the page and the GET routes and `"write"` for requeue and purge, so one
   * function can let a team read and only admins mutate. Return `true` to allow, `false`
   * to answer 401, or a `Response` to send instead (a 403, a redirect to a login page).
   * Without it, reads are open to whoever reaches the handler: mount it behind your own
   * authentication, or pass one.
   */
  authorize?: (request: Request, access: AdminAccess) => boolean | Response | Promise<boolean | Response>;
  /**
   * Origins allowed to mutate besides the request URL's own, e.g.
   * `["https://ops.example.com"]` when a TLS-terminating proxy makes the request URL
   * `http://…` while the browser sends `Origin: https://…`.
   */
  allowedOrigins?: readonly string[];
  /** Called with an error the outbox threw (the response says only "internal error"). Default: `console.error`. */
  onError?: (error: unknown, request: Request) => void;
}

/** Rows per page: `?limit=` default and maximum. */
export const ADMIN_DEFAULT_LIMIT = 50;
/** Largest `?limit=`. */
export const ADMIN_MAX_LIMIT = 500;
/** Most ids in one requeue or purge request. */
export const ADMIN_MAX_IDS = 1000;
/** Largest request body, in bytes. */
export const ADMIN_MAX_BODY_BYTES = 64 * 1024;
/** Payload text shown per message, in characters (bytes: this many base64 characters). */
export const ADMIN_PREVIEW_CHARS = 2048;

const MAX_FILTER_CHARS = 1024;

/** Headers on every response: nothing is cached, sniffed, framed or sent on as a referrer. */
const COMMON_HEADERS: Record<string, string> = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

/** A request the handler refuses, with the status and the reason it sends back. */
class Refusal {
  constructor(readonly status: number, readonly reason: string, readonly headers: Record<string, string> = {}) {}
}

function json(status: number, value: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(value), {
    status,
    headers: {
      ...COMMON_HEADERS,
      "content-type": "application/json; charset=utf-8",
      // A JSON answer opened as a page runs nothing and loads nothing.
      "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
      ...headers,
    },
  });
}

function refuse(status: number, reason: string, headers?: Record<string, string>): never {
  throw new Refusal(status, reason, headers);
}

function iso(ms: number | null | undefined): string | null {
  return ms === null || ms === undefined || !Number.isFinite(ms) ? null : new Date(ms).toISOString();
}

function normalizeBasePath(basePath: unknown): string {
  if (basePath === undefined) return "";
  if (typeof basePath !== "string" || (basePath !== "" && !basePath.startsWith("/")) || /[?#\s]/.test(basePath)) {
    throw new OutboxConfigError(
      `basePath must be "" or a path starting with "/", got ${JSON.stringify(basePath)}`,
      "basePath",
    );
  }
  return basePath.replace(/\/+$/, "");
}

// ------------------------------------------------------------------ rows

/** How a payload is shown: text (JSON as stored) or bytes, cut to a preview. */
export interface AdminPayloadPreview {
  /** `"text"`: JSON text as stored; `"bytes"`: a `Uint8Array` payload, as base64. */
  encoding: "text" | "base64";
  /** Size of the whole payload in bytes. */
  size: number;
  /** The first {@link ADMIN_PREVIEW_CHARS} characters (text) or bytes' base64. */
  preview: string;
  /** Whether `preview` is cut short. */
  truncated: boolean;
}

/** A message as `GET {basePath}/api/messages` lists it. */
export interface AdminMessage {
  seq: number;
  id: string;
  /**
   * The row's destination: a `publishers` name, or `""` for the one `publisher` (with
   * fan-out a message has a row per destination, all with its `id`).
   */
  destination: string;
  topic: string;
  key: string | null;
  status: AdminStatus;
  attempts: number;
  lastError: string | null;
  lockedBy: string | null;
  createdAt: string | null;
  settledAt: string | null;
  availableAt: string | null;
  deliverAt: string | null;
  /** Headers given at enqueue; a string when the stored text is not a JSON object. */
  headers: Record<string, string> | string | null;
  payload: AdminPayloadPreview | null;
}

const encoder = new TextEncoder();

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function previewOf(body: string | Uint8Array | undefined): AdminPayloadPreview | null {
  if (body === undefined) return null;
  if (typeof body === "string") {
    let preview = body.slice(0, ADMIN_PREVIEW_CHARS);
    // Never end on half a surrogate pair.
    if (preview.length < body.length && /[\uD800-\uDBFF]$/.test(preview)) preview = preview.slice(0, -1);
    return { encoding: "text", size: encoder.encode(body).length, preview, truncated: preview.length < body.length };
  }
  const shown = body.subarray(0, (ADMIN_PREVIEW_CHARS / 4) * 3);
  return { encoding: "base64", size: body.length, preview: base64(shown), truncated: shown.length < body.length };
}

function headersOf(text: string | null | undefined): Record<string, string> | string | null {
  if (text === null || text === undefined) return null;
  try {
    const value = JSON.parse(text);
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return value;
  } catch {
    // Shown as stored.
  }
  return text;
}

function messageOf(row: AdminRow): AdminMessage {
  return {
    seq: row.seq,
    id: row.id,
    destination: row.destination ?? "",
    topic: row.topic,
    key: row.key,
    status: row.status,
    attempts: row.attempts,
    lastError: row.lastError,
    lockedBy: row.lockedBy,
    createdAt: iso(row.createdAt),
    settledAt: iso(row.settledAt),
    availableAt: iso(row.availableAt),
    deliverAt: iso(row.deliverAt),
    headers: headersOf(row.headers),
    payload: previewOf(row.body),
  };
}

// ---------------------------------------------------------------- inputs

function filterText(name: string, value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || value.length === 0 || value.length > MAX_FILTER_CHARS) {
    refuse(400, `${name} must be a non-empty string of at most ${MAX_FILTER_CHARS} characters`);
  }
  return value;
}

/** A destination name as `createOutbox({ publishers })` accepts it. */
const DESTINATION = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * A destination filter: `undefined` (absent: any destination), `""` (the default
 * destination, the one `publisher`'s rows) or a name. Names cannot hold markup or
 * spaces, and the empty value cannot be a name, so the two never mix.
 */
function destinationParam(value: unknown): string | undefined {
  if (value === undefined || value === "") return value;
  if (typeof value !== "string" || !DESTINATION.test(value)) {
    refuse(
      400,
      "destination must be a name of 1 to 64 letters, digits and _ . -, or empty for the default destination",
    );
  }
  return value;
}

function integerParam(name: string, text: string, min: number, max: number): number {
  if (!/^\d{1,16}$/.test(text) || Number(text) < min || Number(text) > max) {
    refuse(400, `${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(text.slice(0, 40))}`);
  }
  return Number(text);
}

const MESSAGE_PARAMS = new Set(["status", "topic", "key", "destination", "limit", "after"]);

function messagesQuery(url: URL) {
  const names = new Set<string>();
  url.searchParams.forEach((_, name) => names.add(name));
  for (const name of names) {
    if (!MESSAGE_PARAMS.has(name)) refuse(400, `Unknown query parameter ${JSON.stringify(name.slice(0, 40))}`);
    if (url.searchParams.getAll(name).length > 1) refuse(400, `Query parameter ${name} is given more than once`);
  }
  const get = (name: string) => url.searchParams.get(name) ?? undefined;
  const status = get("status");
  if (status !== undefined && !(STATUSES as readonly string[]).includes(status)) {
    refuse(400, `status must be one of ${STATUSES.join(", ")}`);
  }
  const limitText = get("limit");
  const afterText = get("after");
  return {
    status: status as AdminStatus | undefined,
    topic: filterText("topic", get("topic")),
    key: filterText("key", get("key")),
    destination: destinationParam(get("destination")),
    limit: limitText === undefined ? ADMIN_DEFAULT_LIMIT : integerParam("limit", limitText, 1, ADMIN_MAX_LIMIT),
    after: afterText === undefined ? undefined : integerParam("after", afterText, 0, Number.MAX_SAFE_INTEGER),
  };
}

async function readBody(request: Request): Promise<Record<string, unknown>> {
  const type = request.headers.get("content-type") ?? "";
  // A cross-site form can send only urlencoded, multipart or text/plain bodies; JSON
  // needs a CORS preflight, which this handler never answers.
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    refuse(415, "Send the request body as JSON (Content-Type: application/json)");
  }
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > ADMIN_MAX_BODY_BYTES) {
    refuse(413, `The request body must be at most ${ADMIN_MAX_BODY_BYTES} bytes`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (request.body) {
    const reader = request.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > ADMIN_MAX_BODY_BYTES) {
        await reader.cancel().catch(() => {});
        refuse(413, `The request body must be at most ${ADMIN_MAX_BODY_BYTES} bytes`);
      }
      chunks.push(value);
    }
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    refuse(400, "The request body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    refuse(400, "The request body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

function onlyFields(body: Record<string, unknown>, allowed: readonly string[]): void {
  for (const name of Object.keys(body)) {
    if (!allowed.includes(name)) refuse(400, `Unknown field ${JSON.stringify(name.slice(0, 40))}`);
  }
}

function settledStatus(value: unknown, fallback?: "dead"): "dead" | "published" {
  if (value === undefined && fallback) return fallback;
  if (value !== "dead" && value !== "published") refuse(400, 'status must be "dead" or "published"');
  return value;
}

function idList(value: unknown): string[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length === 0 || value.length > ADMIN_MAX_IDS) {
    refuse(400, `ids must be an array of 1 to ${ADMIN_MAX_IDS} message ids`);
  }
  for (const id of value) {
    if (typeof id !== "string" || id.length === 0 || id.length > MAX_FILTER_CHARS) {
      refuse(400, "ids must hold non-empty strings");
    }
  }
  return value as string[];
}

// ------------------------------------------------------------- the handler

/**
 * Creates the admin handler: a JSON API over `outbox.stats()`, `inspect()`, `requeue()`
 * and `purge()`, and a dashboard page that uses it. It uses Web-standard `Request` and
 * `Response` only, so it mounts in `Deno.serve`, `Bun.serve`, a Cloudflare Worker, Hono
 * (`app.all("/admin/*", (c) => admin(c.req.raw))`) or node:http (see docs/operations.md).
 *
 * Routes, under `basePath`:
 * - `GET /` (and `basePath` itself): the dashboard (self-contained HTML, strict CSP).
 * - `GET /api/outbox`: stats, per-topic and per-destination counts, and `readOnly`.
 * - `GET /api/messages?status=&topic=&key=&destination=&limit=&after=`: rows in `seq`
 *   order with a payload preview; `next` is the `after` of the following page, or `null`.
 *   `destination` absent: any; `destination=` (empty): the default destination (`""`,
 *   the one `publisher`'s rows); else a `publishers` name.
 * - `POST /api/requeue` `{ ids?, status?, topic?, destination? }` → `{ requeued }`.
 * - `POST /api/purge` `{ status, ids?, topic?, destination?, olderThanMs? }` → `{ purged }`.
 *   In a body, `destination` absent is any destination and `""` the default one.
 *
 * Security: read-only unless `readOnly: false`, which requires `authorize`. Mutations
 * need `Content-Type: application/json`, and are refused when `Origin` is another site's
 * or `Sec-Fetch-Site` says `cross-site`. Every message field reaches the page as text.
 *
 * @param outbox The outbox to show (or anything with its `stats`, `inspect`, `requeue`, `purge`).
 * @param options Mount path, read-only switch and authorization.
 * @returns The request handler; it answers 404 for paths outside `basePath`.
 * @throws {OutboxConfigError} When `readOnly` is `false` without an `authorize` function,
 *   or an option has the wrong type.
 *
 * @example Read-only under /admin in Deno
 * ```ts
 * import { createAdminHandler } from "@x/outbox/admin";
 *
 * const admin = createAdminHandler(outbox, { basePath: "/admin" });
 * Deno.serve((request) => {
 *   if (new URL(request.url).pathname.startsWith("/admin")) return admin(request);
 *   return app(request);
 * });
 * ```
 */
export function createAdminHandler(
  outbox: AdminOutbox,
  options: AdminHandlerOptions = {},
): (request: Request) => Promise<Response> {
  if (typeof outbox !== "object" || outbox === null || typeof outbox.stats !== "function") {
    throw new OutboxConfigError("createAdminHandler needs an outbox (from createOutbox)", "outbox");
  }
  const basePath = normalizeBasePath(options.basePath);
  const readOnly = options.readOnly ?? true;
  if (typeof readOnly !== "boolean") throw new OutboxConfigError("readOnly must be a boolean", "readOnly");
  const authorize = options.authorize;
  if (authorize !== undefined && typeof authorize !== "function") {
    throw new OutboxConfigError("authorize must be a function (request, access) => boolean", "authorize");
  }
  if (!readOnly && !authorize) {
    throw new OutboxConfigError(
      "readOnly: false lets requests requeue and purge messages: pass authorize(request, access) to decide who may",
      "authorize",
    );
  }
  const allowedOrigins = new Set(options.allowedOrigins ?? []);
  const onError = options.onError ?? ((error: unknown) => console.error("@x/outbox/admin:", error));

  type Route = {
    methods: readonly string[];
    access: AdminAccess;
    run: (request: Request, url: URL) => Promise<Response>;
  };

  const routes: Record<string, Route> = {
    "/": { methods: ["GET", "HEAD"], access: "read", run: () => Promise.resolve(page()) },
    "/api/outbox": {
      methods: ["GET", "HEAD"],
      access: "read",
      async run() {
        const s = await outbox.stats();
        return json(200, {
          pending: s.pending,
          processing: s.processing,
          published: s.published,
          dead: s.dead,
          oldestPendingAt: s.oldestPendingAt ? s.oldestPendingAt.toISOString() : null,
          oldestPendingAgeMs: s.oldestPendingAgeMs,
          blockedKeys: s.blockedKeys,
          topics: s.topics ?? {},
          destinations: s.destinations ?? {},
          readOnly,
          limits: { maxLimit: ADMIN_MAX_LIMIT, maxIds: ADMIN_MAX_IDS },
        });
      },
    },
    "/api/messages": {
      methods: ["GET", "HEAD"],
      access: "read",
      async run(_request, url) {
        const query = messagesQuery(url);
        // One row more than asked tells whether another page follows.
        const rows = await outbox.inspect({ ...query, limit: query.limit + 1 });
        const page = rows.slice(0, query.limit);
        const last = page[page.length - 1];
        return json(200, {
          messages: page.map(messageOf),
          next: rows.length > query.limit && last ? last.seq : null,
        });
      },
    },
    "/api/requeue": {
      methods: ["POST"],
      access: "write",
      async run(request) {
        const body = await readBody(request);
        onlyFields(body, ["ids", "status", "topic", "destination"]);
        const requeued = await outbox.requeue({
          status: settledStatus(body.status, "dead"),
          ids: idList(body.ids),
          topic: filterText("topic", body.topic),
          destination: destinationParam(body.destination),
        });
        return json(200, { requeued });
      },
    },
    "/api/purge": {
      methods: ["POST"],
      access: "write",
      async run(request) {
        const body = await readBody(request);
        onlyFields(body, ["ids", "status", "topic", "destination", "olderThanMs"]);
        const age = body.olderThanMs;
        if (age !== undefined && !(typeof age === "number" && Number.isSafeInteger(age) && age >= 0)) {
          refuse(400, "olderThanMs must be a non-negative integer (milliseconds)");
        }
        const purged = await outbox.purge({
          status: settledStatus(body.status),
          ids: idList(body.ids),
          topic: filterText("topic", body.topic),
          destination: destinationParam(body.destination),
          olderThanMs: age as number | undefined,
        });
        return json(200, { purged });
      },
    },
  };

  /** Cross-site requests cannot mutate: a browser sends `Origin` and `Sec-Fetch-Site` on them. */
  function checkSameOrigin(request: Request, url: URL): void {
    if (request.headers.get("sec-fetch-site") === "cross-site") {
      refuse(403, "Cross-site requests cannot change the outbox");
    }
    const origin = request.headers.get("origin");
    if (origin !== null && origin !== url.origin && !allowedOrigins.has(origin)) {
      refuse(403, "The request's Origin is not this server's: cross-origin requests cannot change the outbox");
    }
  }

  async function checkAuthorized(request: Request, access: AdminAccess): Promise<Response | null> {
    if (!authorize) return null;
    const verdict = await authorize(request, access);
    if (verdict instanceof Response) return verdict;
    if (verdict === true) return null;
    return json(401, { error: "Not authorized" });
  }

  return async function adminHandler(request: Request): Promise<Response> {
    let url: URL;
    try {
      url = new URL(request.url);
    } catch {
      return json(400, { error: "The request URL is not valid" });
    }
    const path = url.pathname;
    const sub = path === basePath ? "/" : path.startsWith(basePath + "/") ? path.slice(basePath.length) : null;
    const route = sub === null ? undefined : routes[sub];
    try {
      if (!route) refuse(404, "Not found");
      if (!route.methods.includes(request.method)) {
        refuse(405, `Method ${request.method} is not allowed here`, { allow: route.methods.join(", ") });
      }
      if (route.access === "write") {
        if (readOnly) refuse(403, "The admin handler is read-only (createAdminHandler readOnly: true)");
        checkSameOrigin(request, url);
      }
      const denied = await checkAuthorized(request, route.access);
      if (denied) return denied;
      const response = await route.run(request, url);
      return request.method === "HEAD" ? new Response(null, response) : response;
    } catch (error) {
      if (error instanceof Refusal) return json(error.status, { error: error.reason }, error.headers);
      // The outbox's own checks on input the handler let through: the caller's mistake.
      if (isOutboxError(error, "OutboxMessageError")) {
        return json(400, { error: (error as Error).message });
      }
      try {
        onError(error, request);
      } catch {
        // A failing logger must not turn a 500 into a crash.
      }
      return json(500, { error: "Internal error: the outbox failed to answer (see the server log)" });
    }
  };

  function page(): Response {
    const nonce = base64(crypto.getRandomValues(new Uint8Array(18)));
    return new Response(dashboardHtml(nonce), {
      status: 200,
      headers: {
        ...COMMON_HEADERS,
        "content-type": "text/html; charset=utf-8",
        "content-security-policy": [
          "default-src 'none'",
          `script-src 'nonce-${nonce}'`,
          `style-src 'nonce-${nonce}'`,
          "connect-src 'self'",
          "img-src 'self' data:",
          "base-uri 'none'",
          "form-action 'none'",
          "frame-ancestors 'none'",
        ].join("; "),
      },
    });
  }
}
