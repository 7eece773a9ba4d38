/**
 * Payload encoding: JSON text for values, bytes as they are. The walk rejects what
 * `JSON.stringify` would silently drop or mangle (functions, `undefined` in arrays,
 * `NaN`, `Map`, class instances) and what it would throw on (BigInt, cycles), and
 * names the path of the first offending value.
 */

import { OutboxMessageError } from "./errors.ts";

const encoder = new TextEncoder();

function kindOf(value: unknown): string {
  if (value === null) return "null";
  if (typeof value !== "object") return typeof value;
  const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === "string" && name ? `a ${name}` : "an object";
}

function joinPath(base: string, key: string | number): string {
  if (typeof key === "number") return `${base}[${key}]`;
  return /^[A-Za-z_$][\w$]*$/.test(key) ? `${base}.${key}` : `${base}[${JSON.stringify(key)}]`;
}

function checkJson(value: unknown, path: string, seen: Set<object>): void {
  switch (typeof value) {
    case "string":
    case "boolean":
      return;
    case "number":
      if (!Number.isFinite(value)) {
        throw new OutboxMessageError(`Payload value at ${path} is ${value}, which JSON cannot represent`, path);
      }
      return;
    case "bigint":
      throw new OutboxMessageError(
        `Payload value at ${path} is a BigInt (${value}n), which JSON cannot represent; convert it to a string`,
        path,
      );
    case "undefined":
    case "function":
    case "symbol":
      throw new OutboxMessageError(
        `Payload value at ${path} is ${
          typeof value === "undefined" ? "undefined" : `a ${typeof value}`
        }, which JSON cannot represent`,
        path,
      );
  }
  if (value === null) return;
  const object = value as object;
  if (seen.has(object)) {
    throw new OutboxMessageError(
      `Payload value at ${path} refers back to itself (a cycle), which JSON cannot represent`,
      path,
    );
  }
  if (typeof (object as { toJSON?: unknown }).toJSON === "function") {
    // Dates and other values that define their own JSON form.
    checkJson((object as { toJSON(): unknown }).toJSON(), path, seen);
    return;
  }
  seen.add(object);
  if (Array.isArray(object)) {
    for (let i = 0; i < object.length; i++) checkJson(object[i], joinPath(path, i), seen);
  } else {
    const proto = Object.getPrototypeOf(object);
    if (proto !== Object.prototype && proto !== null) {
      throw new OutboxMessageError(
        `Payload value at ${path} is ${kindOf(object)}, which JSON would not keep; use a plain object or array`,
        path,
      );
    }
    for (const key of Object.keys(object)) {
      const item = (object as Record<string, unknown>)[key];
      if (item === undefined) continue; // JSON omits undefined properties, as users expect
      checkJson(item, joinPath(path, key), seen);
    }
  }
  seen.delete(object);
}

/**
 * Encodes a payload for storage.
 *
 * @param payload A JSON-serializable value or a `Uint8Array`.
 * @param maxBytes Size limit of the encoded payload.
 * @param path Field path used in error messages.
 * @returns JSON text, or the bytes.
 * @throws {OutboxMessageError} When the payload is not serializable or too large.
 */
export function encodePayload(payload: unknown, maxBytes: number, path: string): string | Uint8Array {
  if (payload instanceof Uint8Array) {
    if (payload.byteLength > maxBytes) {
      throw new OutboxMessageError(
        `Payload at ${path} is ${payload.byteLength} bytes, over the limit of ${maxBytes} bytes (maxPayloadBytes)`,
        path,
      );
    }
    return payload;
  }
  checkJson(payload, path, new Set());
  const text = JSON.stringify(payload);
  // Cheap bound first: UTF-8 needs at most 3 bytes per UTF-16 unit.
  const size = text.length * 3 <= maxBytes ? text.length : encoder.encode(text).byteLength;
  if (size > maxBytes) {
    throw new OutboxMessageError(
      `Payload at ${path} is ${size} bytes as JSON, over the limit of ${maxBytes} bytes (maxPayloadBytes)`,
      path,
    );
  }
  return text;
}

/** Decodes a stored body back into the payload value. */
export function decodeBody(body: string | Uint8Array): unknown {
  return typeof body === "string" ? JSON.parse(body) : body;
}

/** UTF-8 bytes of a body (JSON text is encoded). */
export function bodyBytes(body: string | Uint8Array): Uint8Array {
  return typeof body === "string" ? encoder.encode(body) : body;
}
