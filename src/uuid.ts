/**
 * UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits. Ids made by one
 * process are strictly increasing: within one millisecond a 12-bit counter in
 * `rand_a` is bumped, and when it overflows the timestamp borrows from the future.
 */

let lastMs = -1;
let counter = 0;
const HEX: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * Returns a new UUIDv7 string, e.g. `"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"`.
 *
 * @param now Epoch milliseconds to encode (defaults to `Date.now()`).
 * @returns The UUID in canonical lowercase form.
 */
export function uuidv7(now: number = Date.now()): string {
  let ms = Math.max(Math.floor(now), lastMs);
  if (ms === lastMs) {
    counter++;
    if (counter > 0xfff) {
      ms++;
      counter = 0;
    }
  } else {
    counter = 0;
  }
  lastMs = ms;
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  // 48-bit big-endian timestamp; Math ops because bit ops are 32-bit.
  b[0] = Math.floor(ms / 2 ** 40) & 0xff;
  b[1] = Math.floor(ms / 2 ** 32) & 0xff;
  b[2] = (ms >>> 24) & 0xff;
  b[3] = (ms >>> 16) & 0xff;
  b[4] = (ms >>> 8) & 0xff;
  b[5] = ms & 0xff;
  b[6] = 0x70 | ((counter >>> 8) & 0x0f);
  b[7] = counter & 0xff;
  b[8] = 0x80 | (b[8]! & 0x3f);
  let s = "";
  for (let i = 0; i < 16; i++) {
    s += HEX[b[i]!];
    if (i === 3 || i === 5 || i === 7 || i === 9) s += "-";
  }
  return s;
}
