/**
 * Shared pieces of the Redis tests: a client on the shared server (127.0.0.1:6379, or
 * OUTBOX_TEST_REDIS_URL), unique stream names, and reading a stream back as entries.
 */

import { Buffer } from "node:buffer";
import { createClient, RESP_TYPES } from "redis";

/** The shared Redis server of the tests. */
export const REDIS_URL: string = (globalThis as { process?: { env: Record<string, string | undefined> } }).process
  ?.env.OUTBOX_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

/** A connected node-redis client. */
export type Redis = ReturnType<typeof createClient>;

/** Opens a client; `errors` collects the client's "error" events (a restart emits some). */
export async function openRedis(url = REDIS_URL, errors: unknown[] = []): Promise<Redis> {
  const client = createClient({
    url,
    // Reconnect quickly and forever: the fault test restarts the server.
    socket: { reconnectStrategy: (retries: number) => Math.min(20 * (retries + 1), 200) },
  });
  client.on("error", (e: unknown) => errors.push(e));
  await client.connect();
  return client;
}

/** A stream name no other test uses. */
export function uniqueStream(prefix = "outbox-test"): string {
  return `${prefix}:${Date.now().toString(36)}-${crypto.randomUUID().slice(0, 8)}`;
}

/** One stream entry as the publisher wrote it. */
export interface RedisEntry {
  /** The entry id Redis gave it (`1700000000000-0`). */
  readonly entryId: string;
  /** The outbox id (field `id`). */
  readonly id: string | null;
  /** Field `topic`. */
  readonly subject: string;
  /** Field `key`, or `null` when the message had none. */
  readonly key: string | null;
  /** Field `headers` parsed, `{}` when absent. */
  readonly headers: Record<string, string>;
  /** Field `body`, as bytes. */
  readonly data: Uint8Array;
}

/** Every entry of `stream`, in stream order (XRANGE - +), bodies as bytes. */
export async function readEntries(client: Redis, stream: string): Promise<RedisEntry[]> {
  // sendCommand() takes its type mapping as an option (withTypeMapping() covers the typed commands).
  const raw = await client.sendCommand(["XRANGE", stream, "-", "+"], {
    typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer },
  }) as [Buffer, Buffer[]][];
  return raw.map(([entryId, pairs]) => {
    const fields = new Map<string, Buffer>();
    for (let i = 0; i + 1 < pairs.length; i += 2) fields.set(pairs[i]!.toString(), pairs[i + 1]!);
    const text = (name: string) => fields.get(name)?.toString() ?? null;
    const body = fields.get("body") ?? Buffer.alloc(0);
    return {
      entryId: entryId.toString(),
      id: text("id"),
      subject: text("topic") ?? "",
      key: text("key"),
      headers: JSON.parse(text("headers") ?? "{}"),
      data: new Uint8Array(body.buffer, body.byteOffset, body.byteLength),
    };
  });
}

/** Deletes the streams and every dedup key the publisher made for them. */
export async function dropStreams(client: Redis, streams: readonly string[]): Promise<void> {
  for (const stream of streams) {
    const keys: string[] = [stream];
    for await (const batch of client.scanIterator({ MATCH: `{${stream}}:outbox-id:*`, COUNT: 1_000 })) {
      keys.push(...batch);
    }
    for (let i = 0; i < keys.length; i += 500) await client.del(keys.slice(i, i + 500));
  }
}
