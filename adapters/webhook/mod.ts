/**
 * Webhook publisher for @x/outbox: each message is one signed HTTP `POST`, following
 * the Standard Webhooks specification (https://www.standardwebhooks.com). It uses
 * `fetch` and Web Crypto and nothing else, so it runs on Node 20+, Bun, Deno and the
 * edge (Cloudflare Workers, Vercel Edge, Deno Deploy) alike, with no dependency.
 *
 * What a receiver gets, per attempt:
 *
 * - the stored body (`message.body`): JSON text as `application/json`, bytes as
 *   `application/octet-stream`; or what the `body` option returns;
 * - `webhook-id`: the outbox message id, the same on every retry, so the receiver can
 *   drop copies (with `@x/outbox/inbox`, or any store of seen ids);
 * - `webhook-timestamp`: the attempt's time in Unix seconds (new on each retry);
 * - `webhook-signature` (with a `secret`): `v1,<base64 HMAC-SHA256>` of
 *   `${webhook-id}.${webhook-timestamp}.${body}`, one space-separated entry per secret
 *   while you rotate keys. {@link verifyWebhook} checks it on the receiving side.
 *
 * Outcomes: a 2xx answer is success. 408, 429, 5xx, network errors and timeouts are
 * transient (retried with the outbox's back-off). 3xx (redirects are not followed: update
 * the URL) and every other 4xx (400, 401, 404, 410, 413, …) are permanent: the message
 * goes `dead` at once, with the status and the start of the answer in `lastError`, and
 * `requeue()` sends it again once the receiver is fixed.
 *
 * A key's messages arrive in order: the publisher has no `publishRun`, so the relay
 * sends a key's messages one after another and holds the rest of the key while one is
 * being retried. Different keys (and unkeyed messages) go out in parallel, up to the
 * outbox's `concurrency`.
 *
 * @example Send orders to a partner, signed
 * ```ts
 * import { createOutbox } from "@x/outbox";
 * import { webhookPublisher } from "@x/outbox/webhook";
 *
 * const outbox = createOutbox({
 *   storage,
 *   publisher: webhookPublisher({
 *     url: "https://partner.example/hooks/orders",
 *     secret: process.env.WEBHOOK_SECRET, // "whsec_…"
 *   }),
 * });
 * ```
 *
 * @example Verify on the receiving side, and apply each message once with the inbox
 * ```ts
 * import { verifyWebhook } from "@x/outbox/webhook";
 *
 * const body = await request.text(); // the raw body: verify before parsing
 * if (!(await verifyWebhook({ secret: WEBHOOK_SECRET, headers: request.headers, body }))) {
 *   return new Response("bad signature", { status: 401 });
 * }
 * const tx = await client.transaction("write");
 * if (await inbox.receive(tx, request.headers.get("webhook-id")!)) applyOrder(JSON.parse(body));
 * await tx.commit();
 * return new Response(null, { status: 204 });
 * ```
 *
 * @module
 */

import { onAbort } from "../shared/abort.ts";
import { OutboxConfigError, OutboxError, PublishError } from "../../src/errors.ts";
import { checkOptions, duration, fail, MAX_TIMER_MS, type Rule } from "../../src/rules.ts";
import type { OutboxRecord, PublishContext, Publisher } from "../../src/types.ts";

/** Header values a webhook carries beside the signed ones: a record of names to values. */
export type WebhookHeaders = Readonly<Record<string, string>>;

/** Options of {@link webhookPublisher}. */
export interface WebhookPublisherOptions {
  /** Where to `POST`: one URL, or a function choosing it per message (by topic, tenant, …). */
  url: string | URL | ((message: OutboxRecord) => string | URL);
  /**
   * Signing secret(s): `whsec_` followed by the base64 of 24 to 64 random bytes (see
   * {@link generateWebhookSecret}). With several, each signs the message and the
   * `webhook-signature` header carries one `v1,<signature>` entry per secret, so the
   * receiver accepts during a rotation whichever it knows. Without a secret the request
   * carries `webhook-id` and `webhook-timestamp` but no signature.
   */
  secret?: string | readonly string[];
  /**
   * Headers sent with every request (an `authorization` token, say), or a function
   * returning them per message. They override the message's own headers and the
   * default `content-type`; `webhook-id`, `webhook-timestamp` and `webhook-signature`
   * are the publisher's and may not be set here.
   */
  headers?: WebhookHeaders | ((message: OutboxRecord) => WebhookHeaders);
  /**
   * How long one request may take, answer body included, in ms (default 15,000). The
   * claim's lease ends an attempt too, whichever comes first; both are transient.
   */
  timeoutMs?: number;
  /** The `fetch` to use (default `globalThis.fetch`): a proxy-aware one, or a stub in tests. */
  fetch?: (input: string | URL | Request, init?: RequestInit) => Promise<Response>;
  /**
   * The request body (default: the stored body, `message.body`). A string is sent as
   * UTF-8 with `content-type: application/json` unless a header says otherwise; bytes as
   * `application/octet-stream`. What is returned is exactly what is signed and sent.
   */
  body?: (message: OutboxRecord) => string | Uint8Array;
}

/** The webhook publisher: a {@link Publisher} that also says where a message goes. */
export interface WebhookPublisher extends Publisher {
  /** The URL a message is posted to. */
  urlOf(message: OutboxRecord): URL;
}

/**
 * A transient failure with the receiver's `Retry-After`, in ms: the relay schedules the
 * next attempt then instead of its back-off, at most `retry.maxDelayMs` later.
 */
export interface RetryAfterError extends PublishError {
  /** How long the receiver asked the sender to wait, in ms (0 for a date in the past). */
  readonly retryAfterMs?: number;
}

/** Names the publisher sets itself: the Standard Webhooks headers. */
const RESERVED = new Set(["webhook-id", "webhook-timestamp", "webhook-signature"]);
/** How much of an error answer's body goes into `lastError`. */
const EXCERPT_BYTES = 200;
/**
 * How much of a 2xx answer's body is read before the stream is cancelled. Reading a
 * small body to its end lets `fetch` reuse the connection; cancelling a large one
 * bounds the work on an answer nobody reads.
 */
const DRAIN_BYTES = 64 * 1024;
/** Smallest and largest HMAC key the spec allows (192 and 512 bits). */
const MIN_KEY_BYTES = 24;
const MAX_KEY_BYTES = 64;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ------------------------------------------------------------------ secrets, signing

/** Standard base64 (the spec's encoding) of bytes, without Buffer: btoa exists everywhere. */
function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]!);
  return btoa(binary);
}

/** Bytes of standard base64, or null when it is not base64. */
function fromBase64(text: string): Uint8Array | null {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 === 1) return null;
  try {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  } catch {
    return null;
  }
}

/** The HMAC key bytes of a `whsec_` secret; throws OutboxConfigError naming `path`. */
function keyBytes(secret: unknown, path: string): Uint8Array {
  // The message never includes the secret itself: config errors end up in logs.
  if (typeof secret !== "string" || !secret.startsWith("whsec_")) {
    fail(`${path} must be a Standard Webhooks secret: "whsec_" followed by base64 (see generateWebhookSecret())`, path);
  }
  const bytes = fromBase64(secret.slice("whsec_".length));
  if (bytes === null) fail(`${path} is not valid base64 after "whsec_"`, path);
  if (bytes.length < MIN_KEY_BYTES || bytes.length > MAX_KEY_BYTES) {
    fail(
      `${path} must hold ${MIN_KEY_BYTES} to ${MAX_KEY_BYTES} bytes of key (the spec's 192 to 512 bits), got ${bytes.length}`,
      path,
    );
  }
  return bytes;
}

/** One or several secrets as a list of key bytes. */
function keyList(secret: unknown, path: string): Uint8Array[] {
  if (Array.isArray(secret)) {
    if (secret.length === 0) fail(`${path} must list at least one secret`, path);
    return secret.map((s, i) => keyBytes(s, `${path}[${i}]`));
  }
  return [keyBytes(secret, path)];
}

function importKey(bytes: Uint8Array): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", bytes as Uint8Array<ArrayBuffer>, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
}

/** The signed content: `${id}.${timestamp}.` followed by the body's exact bytes. */
function signedContent(id: string, timestamp: string, body: Uint8Array): Uint8Array<ArrayBuffer> {
  const head = encoder.encode(`${id}.${timestamp}.`);
  const content = new Uint8Array(head.length + body.length);
  content.set(head);
  content.set(body, head.length);
  return content;
}

async function hmac(key: CryptoKey, content: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, content));
}

/** The body as bytes: a string is sent, and signed, as its UTF-8 encoding. */
function bodyBytes(body: string | Uint8Array | ArrayBuffer): Uint8Array {
  if (typeof body === "string") return encoder.encode(body);
  return body instanceof Uint8Array ? body : new Uint8Array(body);
}

/**
 * Signs a webhook as Standard Webhooks does: the `webhook-signature` header's value,
 * `v1,<base64 HMAC-SHA256>` of `${id}.${timestamp}.${body}` per secret, space-separated.
 * The publisher does this itself; use it to sign a request of your own or in a test.
 *
 * @param options The id, the timestamp in Unix seconds, the exact body and the secret(s).
 * @returns The header value, e.g. `v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=`.
 * @throws {OutboxConfigError} When a secret is not a `whsec_` secret of 24 to 64 bytes.
 *
 * @example
 * ```ts
 * const signature = await signWebhook({ id: "msg_1", timestamp: 1614265330, body: '{"a":1}', secret });
 * ```
 */
export async function signWebhook(options: {
  id: string;
  timestamp: number | string;
  body: string | Uint8Array | ArrayBuffer;
  secret: string | readonly string[];
}): Promise<string> {
  const keys = await Promise.all(keyList(options.secret, "secret").map(importKey));
  const content = signedContent(options.id, String(options.timestamp), bodyBytes(options.body));
  const signatures = await Promise.all(keys.map((key) => hmac(key, content)));
  return signatures.map((s) => `v1,${toBase64(s)}`).join(" ");
}

/**
 * A new random signing secret: `whsec_` and the base64 of 32 random bytes (Web Crypto).
 * Give it to the receiver once, out of band, and keep it with your other secrets.
 *
 * @returns A `whsec_…` secret.
 *
 * @example
 * ```ts
 * console.log(generateWebhookSecret()); // whsec_3q2+7w…
 * ```
 */
export function generateWebhookSecret(): string {
  return `whsec_${toBase64(crypto.getRandomValues(new Uint8Array(32)))}`;
}

// ------------------------------------------------------------------ publishing

/** The URL as errors show it: without the query and credentials, which may hold tokens. */
function shown(url: URL): string {
  return `${url.origin}${url.pathname}`;
}

function errorText(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // Node's fetch says "fetch failed" and puts the reason (ECONNREFUSED, …) in `cause`.
  const cause = (error as { cause?: unknown }).cause;
  const inner = cause instanceof Error ? cause.message || (cause as { code?: string }).code : undefined;
  return inner && inner !== error.message ? `${error.message}: ${inner}` : error.message;
}

/**
 * Parses `Retry-After`: a number of seconds, or an HTTP date (RFC 9110 §10.2.3).
 *
 * @param value The header's value, or null.
 * @param now The current time in epoch ms.
 * @returns The wait in ms (0 for a date already past), or undefined when absent or invalid.
 */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // Date.parse reads the IMF-fixdate (and the obsolete forms) every runtime sends; a
  // bare number was handled above, so anything it takes here is a date.
  const at = /[a-z]/i.test(text) ? Date.parse(text) : NaN;
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Reads up to `limit` bytes of a body and cancels the rest. */
async function readSome(response: Response, limit: number): Promise<Uint8Array> {
  const body = response.body;
  if (!body) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } finally {
    // Always settle the stream: an unread body holds the connection (and, in workerd,
    // draws a warning) until it is collected.
    await reader.cancel().catch(() => {});
  }
  const out = new Uint8Array(Math.min(size, limit));
  let at = 0;
  for (const chunk of chunks) {
    if (at >= out.length) break;
    const part = chunk.subarray(0, out.length - at);
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** The start of an error answer's body, on one line, for `lastError`. */
async function excerptOf(response: Response): Promise<string> {
  const bytes = await readSome(response, EXCERPT_BYTES).catch(() => new Uint8Array(0));
  const text = decoder.decode(bytes).replace(/\s+/g, " ").trim();
  return text.length === 0 ? "" : `: ${JSON.stringify(text.length >= EXCERPT_BYTES ? `${text}…` : text)}`;
}

/** Whether an HTTP status is worth retrying: 408, 429 and 5xx (and anything else odd, below 200). */
function transientStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500 || status < 200;
}

function statusError(response: Response, url: URL, excerpt: string): PublishError {
  const { status } = response;
  const line = `${status}${response.statusText ? ` ${response.statusText}` : ""}`;
  if (transientStatus(status)) {
    const retryAfterMs = parseRetryAfter(response.headers.get("retry-after"));
    return new PublishError(
      `Webhook ${shown(url)} answered ${line}${excerpt} (transient${
        retryAfterMs === undefined ? "" : `, Retry-After ${Math.ceil(retryAfterMs / 1000)} s`
      })`,
      { retryAfterMs },
    );
  }
  if (status >= 300 && status < 400) {
    const location = response.headers.get("location");
    return new PublishError(
      `Webhook ${shown(url)} answered ${line}${location ? ` to ${JSON.stringify(location)}` : ""}: ` +
        `redirects are not followed (Standard Webhooks); update the URL, then requeue()`,
      { permanent: true },
    );
  }
  const hint = status === 410 ? " (410 Gone: the receiver wants no more webhooks at this URL)" : "";
  return new PublishError(`Webhook ${shown(url)} refused the message with ${line}${excerpt}${hint}`, {
    permanent: true,
  });
}

const OPTION_RULES: Record<string, Rule> = {
  url: (x, path) => {
    if (typeof x === "function") return;
    if (!(typeof x === "string" || x instanceof URL)) fail(`${path} must be a URL string, a URL or a function`, path);
    checkUrl(String(x), path);
  },
  secret: (x, path) => void keyList(x, path),
  headers: (x, path) => {
    if (typeof x === "function") return;
    if (typeof x !== "object" || x === null || Array.isArray(x)) fail(`${path} must be an object or a function`, path);
    for (const [name, value] of Object.entries(x)) {
      if (typeof value !== "string") fail(`${path}.${name} must be a string`, `${path}.${name}`);
      if (RESERVED.has(name.toLowerCase())) {
        fail(`${path}.${name} is set by the publisher (Standard Webhooks) and cannot be overridden`, `${path}.${name}`);
      }
    }
    try {
      new Headers(x as Record<string, string>);
    } catch (error) {
      fail(`${path} holds an invalid header name or value: ${errorText(error)}`, path);
    }
  },
  // Timers fire at once past MAX_TIMER_MS.
  timeoutMs: duration(1, false, MAX_TIMER_MS),
  fetch: (x, path) => {
    if (typeof x !== "function") fail(`${path} must be a function like fetch`, path);
  },
  body: (x, path) => {
    if (typeof x !== "function") fail(`${path} must be a function (message) => string | Uint8Array`, path);
  },
};

function checkUrl(text: string, path: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    fail(`${path} must be an absolute URL, got ${JSON.stringify(text)}`, path);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    fail(`${path} must be an http: or https: URL, got ${JSON.stringify(url.protocol)}`, path);
  }
  return url;
}

/**
 * Creates a webhook publisher: one signed `POST` per message (see the module docs for
 * the request, the headers and how each answer is handled).
 *
 * Headers, from lowest to highest precedence: the default `content-type` (from the
 * body's type), the message's own headers (`enqueue({ headers })`, a `traceparent` from
 * `@x/outbox/otel`), then `options.headers`. The three `webhook-*` headers always come
 * from the publisher: the option refuses them, and a message header of that name is
 * ignored.
 *
 * A signed message's id must not contain `.`: the spec joins id, timestamp and body
 * with dots, so a dot in the id would let one signed request pass for another. The
 * default ids (UUIDv7) have none; a message enqueued with such an id goes `dead`.
 *
 * @param options The URL, secret(s), headers, timeout, fetch and body.
 * @returns The publisher to pass to `createOutbox`.
 * @throws {OutboxConfigError} When an option is invalid (a malformed URL or secret, a
 *   header the publisher owns).
 *
 * @example Route by topic, with an auth header and a shorter timeout
 * ```ts
 * const publisher = webhookPublisher({
 *   url: (m) => `https://hooks.example/${m.topic.replaceAll(".", "/")}`,
 *   secret: [newSecret, oldSecret], // both sign while receivers move to the new one
 *   headers: { authorization: `Bearer ${token}` },
 *   timeoutMs: 5_000,
 * });
 * ```
 */
export function webhookPublisher(options: WebhookPublisherOptions): WebhookPublisher {
  checkOptions("webhookPublisher", options, OPTION_RULES);
  if (options.url === undefined) throw new OutboxConfigError("webhookPublisher needs a url", "url");
  const timeoutMs = options.timeoutMs ?? 15_000;
  const doFetch = options.fetch ?? ((input, init) => fetch(input, init));
  const fixedUrl = typeof options.url === "function" ? null : new URL(String(options.url));
  const urlFn = typeof options.url === "function" ? options.url : null;
  const extra = options.headers;
  const keyBytesList = options.secret === undefined ? [] : keyList(options.secret, "secret");
  // Imported once, on first use: importKey is async, and the factory is not.
  let keys: Promise<CryptoKey[]> | null = null;

  function urlOf(message: OutboxRecord): URL {
    if (fixedUrl) return fixedUrl;
    let chosen: string | URL;
    try {
      chosen = urlFn!(message);
    } catch (error) {
      throw new PublishError(`The url function failed for message ${message.id}: ${errorText(error)}`, {
        permanent: true,
        cause: error,
      });
    }
    try {
      return checkUrl(String(chosen), "url");
    } catch (error) {
      // The same message gets the same URL on every attempt: retrying cannot help.
      throw new PublishError(`The url function gave no usable URL for message ${message.id}: ${errorText(error)}`, {
        permanent: true,
        cause: error,
      });
    }
  }

  function requestHeaders(message: OutboxRecord, body: string | Uint8Array): Headers {
    const headers = new Headers();
    headers.set("content-type", typeof body === "string" ? "application/json" : "application/octet-stream");
    try {
      for (const [name, value] of Object.entries(message.headers)) {
        if (!RESERVED.has(name.toLowerCase())) headers.set(name, value);
      }
      const own = typeof extra === "function" ? extra(message) : extra;
      for (const [name, value] of Object.entries(own ?? {})) {
        if (!RESERVED.has(name.toLowerCase())) headers.set(name, value);
      }
    } catch (error) {
      // An invalid header name or value fails the same way on every attempt.
      throw new PublishError(`Message ${message.id} has a header fetch cannot send: ${errorText(error)}`, {
        permanent: true,
        cause: error,
      });
    }
    headers.set("webhook-id", message.id);
    return headers;
  }

  async function publish(message: OutboxRecord, context: PublishContext): Promise<void> {
    const url = urlOf(message);
    const body = options.body ? options.body(message) : message.body;
    const bytes = bodyBytes(body);
    const headers = requestHeaders(message, body);
    const timestamp = String(Math.floor(Date.now() / 1000));
    headers.set("webhook-timestamp", timestamp);
    if (keyBytesList.length > 0) {
      if (message.id.includes(".")) {
        throw new PublishError(
          `Message id ${JSON.stringify(message.id)} contains ".", which Standard Webhooks signatures do not allow ` +
            `(id, timestamp and body are joined with dots); enqueue it with an id without dots`,
          { permanent: true },
        );
      }
      keys ??= Promise.all(keyBytesList.map(importKey));
      const content = signedContent(message.id, timestamp, bytes);
      const signatures = await Promise.all((await keys).map((key) => hmac(key, content)));
      headers.set("webhook-signature", signatures.map((s) => `v1,${toBase64(s)}`).join(" "));
    }
    if (context.signal.aborted) {
      throw new PublishError(`Webhook ${shown(url)} not called: the claim's lease is ending (timeout, transient)`, {
        cause: context.signal.reason,
      });
    }

    // One controller per request, aborted by the lease or by the timeout, whichever is
    // first; the timer is cleared when the request ends (AbortSignal.timeout's is not).
    const controller = new AbortController();
    let abortedBy: "lease" | "timeout" | null = null;
    // One listener per lease signal however many requests share it (shared/abort.ts).
    const unfollow = onAbort(context.signal, () => controller.abort(context.signal.reason));
    const timer = setTimeout(() => {
      abortedBy ??= "timeout";
      controller.abort(new Error(`No answer within ${timeoutMs} ms`));
    }, timeoutMs);
    const why = () =>
      abortedBy === "timeout"
        ? `no complete answer within ${timeoutMs} ms (timeout, transient)`
        : `the claim's lease is ending (timeout, transient)`;
    try {
      let response: Response;
      try {
        response = await doFetch(url, {
          method: "POST",
          headers,
          body: bytes as Uint8Array<ArrayBuffer>,
          signal: controller.signal,
          // The spec: a redirect is a failure; the sender updates the URL instead.
          redirect: "manual",
        });
      } catch (error) {
        if (controller.signal.aborted) {
          throw new PublishError(`Webhook ${shown(url)} aborted: ${why()}`, { cause: error });
        }
        throw new PublishError(`Webhook ${shown(url)} unreachable: ${errorText(error)} (transient)`, { cause: error });
      }
      if (response.status >= 200 && response.status < 300) {
        // Accepted: the answer's body is not needed, but it is read (to a limit) so the
        // connection can be reused; a failure reading it does not undo the 2xx.
        await readSome(response, DRAIN_BYTES).catch(() => {});
        return;
      }
      throw statusError(response, url, await excerptOf(response));
    } finally {
      clearTimeout(timer);
      unfollow();
    }
  }

  return {
    urlOf,
    publish,
  } satisfies WebhookPublisher;
}

// ------------------------------------------------------------------ verifying

/** Options of {@link verifyWebhook}. */
export interface VerifyWebhookOptions {
  /** The endpoint's secret (`whsec_…`), or several while you rotate. Give this or `secrets`. */
  secret?: string | readonly string[];
  /** Several secrets (as `secret` with a list): a signature by any of them is accepted. */
  secrets?: readonly string[];
  /**
   * The request's headers: a `Headers` (fetch, Deno, Bun, Workers) or a plain object
   * (`node:http`'s `request.headers`); names are matched case-insensitively.
   */
  headers: Headers | Readonly<Record<string, string | readonly string[] | undefined>>;
  /** The raw body exactly as received: verify before parsing (JSON re-encoded differs). */
  body: string | Uint8Array | ArrayBuffer;
  /** How far `webhook-timestamp` may be from now, either way, in seconds (default 300). */
  toleranceSec?: number;
  /** The current time (default `Date.now()`), as epoch ms or a Date. */
  now?: number | Date;
}

/** What {@link verifyWebhookOrThrow} returns for a genuine webhook. */
export interface VerifiedWebhook {
  /** `webhook-id`: the outbox message id, the key to deduplicate by (e.g. `inbox.receive`). */
  readonly id: string;
  /** `webhook-timestamp`, in Unix seconds. */
  readonly timestamp: number;
}

/** Why a webhook failed verification: a code to branch on, with a sentence in `message`. */
export type WebhookVerificationReason =
  | "missing-header"
  | "invalid-id"
  | "invalid-timestamp"
  | "too-old"
  | "too-new"
  | "no-signature"
  | "no-match";

/** Thrown by {@link verifyWebhookOrThrow} for a request that is not a genuine, recent webhook. */
export class WebhookVerificationError extends OutboxError {
  /** Why, as a code. */
  readonly reason: WebhookVerificationReason;

  /**
   * @param reason Why, as a code.
   * @param message Why, in plain words.
   */
  constructor(reason: WebhookVerificationReason, message: string) {
    super(message);
    // The brand stays "OutboxError": isOutboxError() is true, and the class is told by name.
    this.name = "WebhookVerificationError";
    this.reason = reason;
  }
}

function header(headers: VerifyWebhookOptions["headers"], name: string): string | null {
  if (typeof (headers as Headers).get === "function") return (headers as Headers).get(name);
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() !== name || value === undefined) continue;
    return typeof value === "string" ? value : value.join(", ");
  }
  return null;
}

/** Compares two byte strings in time that depends on their length only, not their content. */
function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/**
 * Verifies a Standard Webhooks request and says why when it is not genuine: the three
 * headers present, `webhook-timestamp` within `toleranceSec` of now (either way, which
 * stops a captured request from being replayed later), and one `v1` entry of
 * `webhook-signature` equal, compared in constant time, to the HMAC-SHA256 of the body
 * under one of the secrets. Entries of other schemes (`v1a`) are skipped.
 *
 * A valid signature does not make a request new: the sender retries with the same
 * `webhook-id`, so deduplicate by it, e.g. with `@x/outbox/inbox` in the same
 * transaction as the message's effects.
 *
 * @param options Secret(s), the request's headers and raw body, tolerance, clock.
 * @returns The webhook's id and timestamp.
 * @throws {WebhookVerificationError} When the request is not a genuine, recent webhook.
 * @throws {OutboxConfigError} When a secret is malformed: your configuration, not the request.
 *
 * @example
 * ```ts
 * try {
 *   const { id } = await verifyWebhookOrThrow({ secret, headers: request.headers, body: rawBody });
 * } catch (error) {
 *   if (error instanceof WebhookVerificationError) return new Response(error.reason, { status: 401 });
 *   throw error;
 * }
 * ```
 */
export async function verifyWebhookOrThrow(options: VerifyWebhookOptions): Promise<VerifiedWebhook> {
  const secrets = options.secrets ?? options.secret;
  if (secrets === undefined) throw new OutboxConfigError("verifyWebhook needs a secret (or secrets)", "secret");
  const raw = keyList(secrets, options.secrets ? "secrets" : "secret");
  const tolerance = options.toleranceSec ?? 300;
  if (!(tolerance >= 0)) throw new OutboxConfigError("toleranceSec must be a number of seconds ≥ 0", "toleranceSec");

  const id = header(options.headers, "webhook-id");
  const timestampText = header(options.headers, "webhook-timestamp");
  const signature = header(options.headers, "webhook-signature");
  if (id === null || timestampText === null || signature === null) {
    const missing = [["webhook-id", id], ["webhook-timestamp", timestampText], ["webhook-signature", signature]]
      .filter(([, v]) => v === null).map(([n]) => n).join(", ");
    throw new WebhookVerificationError("missing-header", `The request lacks ${missing}`);
  }
  if (id.length === 0 || id.includes(".")) {
    throw new WebhookVerificationError("invalid-id", "webhook-id is empty or contains a dot");
  }
  if (!/^\d{1,15}$/.test(timestampText.trim())) {
    throw new WebhookVerificationError("invalid-timestamp", "webhook-timestamp is not a Unix time in seconds");
  }
  const timestamp = Number(timestampText.trim());
  const now = Math.floor(Number(options.now ?? Date.now()) / 1000);
  if (timestamp < now - tolerance) {
    throw new WebhookVerificationError(
      "too-old",
      `webhook-timestamp is ${now - timestamp} s old (tolerance ${tolerance} s)`,
    );
  }
  if (timestamp > now + tolerance) {
    throw new WebhookVerificationError(
      "too-new",
      `webhook-timestamp is ${timestamp - now} s in the future (tolerance ${tolerance} s)`,
    );
  }
  const candidates: Uint8Array[] = [];
  for (const entry of signature.split(" ")) {
    const comma = entry.indexOf(",");
    if (comma < 0 || entry.slice(0, comma) !== "v1") continue;
    const bytes = fromBase64(entry.slice(comma + 1));
    if (bytes) candidates.push(bytes);
  }
  if (candidates.length === 0) {
    throw new WebhookVerificationError("no-signature", "webhook-signature holds no v1 signature");
  }
  // The timestamp as sent is what was signed (a leading zero would change the HMAC).
  const content = signedContent(id, timestampText, bodyBytes(options.body));
  let match = false;
  for (const bytes of raw) {
    const expected = await hmac(await importKey(bytes), content);
    // Every candidate is compared, match or not: how long this takes says nothing about
    // which entry (or how much of it) was right.
    for (const candidate of candidates) match = equalBytes(expected, candidate) || match;
  }
  if (!match) throw new WebhookVerificationError("no-match", "No signature matches the body under the given secret(s)");
  return { id, timestamp };
}

/**
 * Whether a request is a genuine, recent Standard Webhooks webhook: the boolean form of
 * {@link verifyWebhookOrThrow}, which also says why not. Answer `false` with 401 and
 * do nothing else; on `true`, deduplicate by `webhook-id` (the sender retries).
 *
 * @param options Secret(s), the request's headers and raw body, tolerance, clock.
 * @returns `true` when a signature matches and the timestamp is within tolerance.
 * @throws {OutboxConfigError} When a secret is malformed (a bad request never throws).
 *
 * @example With node:http
 * ```ts
 * const body = Buffer.concat(chunks); // the raw bytes
 * const ok = await verifyWebhook({ secret: process.env.WEBHOOK_SECRET!, headers: req.headers, body });
 * res.writeHead(ok ? 204 : 401).end();
 * ```
 */
export async function verifyWebhook(options: VerifyWebhookOptions): Promise<boolean> {
  try {
    await verifyWebhookOrThrow(options);
    return true;
  } catch (error) {
    if (error instanceof WebhookVerificationError) return false;
    throw error;
  }
}
