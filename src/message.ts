/**
 * Turns what callers pass to `enqueue` into validated, encoded rows. Everything is
 * checked before anything is written, so a bad message leaves the caller's
 * transaction exactly as it was.
 */

import { OutboxMessageError } from "./errors.ts";
import { encodePayload } from "./payload.ts";
import type { MessageSchemas } from "./options.ts";
import type { NewOutboxRow } from "./types.ts";
import { uuidv7 } from "./uuid.ts";

const MESSAGE_FIELDS = new Set(["id", "topic", "key", "payload", "headers", "deliverAt"]);
// Printable, no whitespace: topics become broker subjects.
// deno-lint-ignore no-control-regex
const TOPIC = /^[^\s\x00-\x1f\x7f]{1,255}$/;
// HTTP/NATS header field names are tokens.
const HEADER_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/;
const MAX_ID = 255;
const MAX_KEY = 1024;
// NUL cannot be stored in Postgres text; a lone surrogate is not valid UTF-8, so the
// drivers store it as U+FFFD: another topic, key or id than the one enqueued.
// (A regex rather than String#isWellFormed: that is ES2024, the core targets ES2022.)
// deno-lint-ignore no-control-regex
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
// The range of a Date in epoch ms; within 2^53, so it fits every storage's 64-bit integer.
const MAX_TIME = 8.64e15;

function fail(message: string, path: string): never {
  throw new OutboxMessageError(message, path);
}

function quote(value: unknown): string {
  // JSON.stringify escapes lone surrogates and control characters, so they show.
  if (typeof value === "string") return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}…` : value);
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? "an invalid Date" : `Date ${value.toISOString()}`;
  return value === null ? "null" : typeof value === "object" ? "an object" : `${typeof value} ${String(value)}`;
}

/** An id or key: a non-empty string of at most `max` characters that every storage keeps as it is. */
function storableString(value: unknown, field: "id" | "key", max: number, at: (field: string) => string): string {
  if (typeof value !== "string" || value.length === 0 || value.length > max) {
    fail(`Message ${field} must be a non-empty string of at most ${max} characters, got ${quote(value)}`, at(field));
  }
  if (UNSTORABLE.test(value)) {
    fail(`Message ${field} ${quote(value)} must not contain NUL or unpaired surrogate characters`, at(field));
  }
  return value;
}

/** Settings `prepareMessages` needs from the outbox. */
export interface PrepareSettings {
  readonly schemas: MessageSchemas | undefined;
  readonly maxPayloadBytes: number;
  readonly now: number;
}

/**
 * Validates and encodes messages.
 *
 * @param input One message or an array of them.
 * @param settings Schemas, size limit and clock.
 * @returns Rows for `OutboxStorage.insert`.
 * @throws {OutboxMessageError} On the first invalid message, naming its path.
 */
export function prepareMessages(input: unknown, settings: PrepareSettings): NewOutboxRow[] {
  const list = Array.isArray(input) ? input : [input];
  const many = Array.isArray(input);
  const rows: NewOutboxRow[] = new Array(list.length);
  const ids = new Set<string>();
  for (let i = 0; i < list.length; i++) {
    const row = prepareOne(list[i], many ? `[${i}]` : "", settings);
    if (ids.has(row.id)) {
      fail(`Message id ${quote(row.id)} appears twice in one enqueue`, `${many ? `[${i}]` : ""}.id`.replace(/^\./, ""));
    }
    ids.add(row.id);
    rows[i] = row;
  }
  return rows;
}

function prepareOne(message: unknown, base: string, settings: PrepareSettings): NewOutboxRow {
  const at = (field: string) => (base ? `${base}.${field}` : field);
  if (typeof message !== "object" || message === null || Array.isArray(message)) {
    fail(`Message${base ? ` ${base}` : ""} must be an object with topic and payload, got ${quote(message)}`, base);
  }
  const m = message as Record<string, unknown>;
  for (const field of Object.keys(m)) {
    if (!MESSAGE_FIELDS.has(field)) {
      fail(
        `Message has an unknown field ${JSON.stringify(field)}; expected id, topic, key, payload, headers, deliverAt`,
        at(field),
      );
    }
  }

  const topic = m.topic;
  if (topic === undefined || topic === null || topic === "") {
    fail('Message needs a topic, e.g. "orders.created"', at("topic"));
  }
  if (typeof topic !== "string") fail(`Message topic must be a string, got ${quote(topic)}`, at("topic"));
  if (!TOPIC.test(topic) || UNSTORABLE.test(topic)) {
    fail(
      `Message topic ${quote(topic)} must be 1–255 printable characters without spaces or unpaired surrogates`,
      at("topic"),
    );
  }

  const id = m.id === undefined ? uuidv7(settings.now) : storableString(m.id, "id", MAX_ID, at);
  const key = m.key === undefined || m.key === null ? null : storableString(m.key, "key", MAX_KEY, at);

  let headers: string | null = null;
  if (m.headers !== undefined && m.headers !== null) {
    const h = m.headers;
    if (typeof h !== "object" || Array.isArray(h)) {
      fail(`Message headers must be an object of strings, got ${quote(h)}`, at("headers"));
    }
    const entries = Object.entries(h as Record<string, unknown>);
    for (const [name, value] of entries) {
      if (!HEADER_NAME.test(name)) {
        fail(
          `Header name ${quote(name)} must be a token (letters, digits, and !#$%&'*+-.^_\`|~)`,
          at(`headers.${name}`),
        );
      }
      if (typeof value !== "string") {
        fail(`Header ${quote(name)} must have a string value, got ${quote(value)}`, at(`headers.${name}`));
      }
      if (/[\r\n\0]/.test(value) || UNSTORABLE.test(value)) {
        fail(
          `Header ${quote(name)} value ${quote(value)} must not contain line breaks, NUL or unpaired surrogates`,
          at(`headers.${name}`),
        );
      }
    }
    if (entries.length > 0) headers = JSON.stringify(Object.fromEntries(entries));
  }

  let deliverAt: number | null = null;
  if (m.deliverAt !== undefined && m.deliverAt !== null) {
    const d = m.deliverAt;
    const t = d instanceof Date ? d.getTime() : typeof d === "number" ? d : NaN;
    // A Date beyond its range is already NaN; a number beyond it would reach the
    // database and fail there (out of range for bigint), aborting the caller's transaction.
    if (!(Math.abs(t) <= MAX_TIME)) {
      fail(
        `Message deliverAt must be a valid Date or epoch milliseconds within ±8.64e15 (the range of a Date), got ${
          quote(d)
        }`,
        at("deliverAt"),
      );
    }
    // A time already passed is no schedule: the message is due at once.
    if (Math.round(t) > settings.now) deliverAt = Math.round(t);
  }

  let payload = m.payload;
  if (!("payload" in m)) fail("Message needs a payload (use null for none)", at("payload"));
  if (settings.schemas) {
    const schema = settings.schemas[topic];
    if (!schema) {
      fail(
        `Message topic ${quote(topic)} has no schema in the outbox's messages option; known topics: ${
          Object.keys(settings.schemas).join(", ")
        }`,
        at("topic"),
      );
    }
    const result = schema["~standard"].validate(payload);
    if (result instanceof Promise) {
      fail(`The schema of ${quote(topic)} is async; enqueue needs a synchronous one`, at("payload"));
    }
    if (result.issues) {
      const issue = result.issues[0]!;
      const sub = issue.path?.map((p) => String(typeof p === "object" ? p.key : p)).join(".");
      const path = at(sub ? `payload.${sub}` : "payload");
      throw new OutboxMessageError(`Payload of ${quote(topic)} is invalid at ${path}: ${issue.message}`, path, {
        cause: result.issues,
      });
    }
    payload = result.value;
  }
  const body = encodePayload(payload, settings.maxPayloadBytes, at("payload"));
  return { id, topic, key, body, headers, availableAt: deliverAt ?? settings.now, deliverAt, createdAt: settings.now };
}
