/**
 * UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits. Ids made by one
 * process are strictly increasing: within one millisecond a 12-bit counter in
 * `rand_a` is bumped, and when it overflows the timestamp borrows from the future.
 */

let lastMs = -1;
let counter = 0;

/**
 * Returns a new UUIDv7 string, e.g. `"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"`.
 *
 * @param now Epoch milliseconds to encode (defaults to `Date.now()`).
 * @returns The UUID in canonical lowercase form.
 */
export function uuidv7(now: number = Date.now()): string {
  let ms = Math.max(Math.floor(now), lastMs);
  if (ms !== lastMs) counter = 0;
  else if (++counter > 0xfff) {
    ms++;
    counter = 0;
  }
  lastMs = ms;
  const t = ms.toString(16).padStart(12, "0");
  // A v4 UUID's last 17 characters: the RFC 9562 variant (8–b) and 62 random bits, as v7 wants.
  return `${t.slice(0, 8)}-${t.slice(8)}-7${counter.toString(16).padStart(3, "0")}-${crypto.randomUUID().slice(19)}`;
}
