/**
 * NATS fixtures: the real nats-server with JetStream at 127.0.0.1:4222, one stream per
 * test (memory storage, unique name) so runs never collide.
 */

import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";

/** Server URL of the shared test server (override with OUTBOX_TEST_NATS_URL). */
export const NATS_URL =
  (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.OUTBOX_TEST_NATS_URL ??
    "127.0.0.1:4222";

let counter = 0;

/** A unique token for stream and subject names. */
export function uniqueName(prefix = "T"): string {
  return `${prefix}${Date.now().toString(36)}${(counter++).toString(36)}${crypto.randomUUID().slice(0, 6)}`
    .toUpperCase();
}

/** A message read back from a stream. */
export interface ReadMessage {
  seq: number;
  subject: string;
  id: string | null;
  headers: Record<string, string>;
  data: Uint8Array;
}

/** Reads every message of a stream, in stream order. */
export async function readStream(jsm: JetStreamManager, stream: string): Promise<ReadMessage[]> {
  const info = await jsm.streams.info(stream);
  const out: ReadMessage[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (!m) continue;
    const headers: Record<string, string> = {};
    for (const [k, v] of m.header ?? []) headers[k] = v[0] ?? "";
    out.push({ seq: m.seq, subject: m.subject, id: m.header?.get("Nats-Msg-Id") ?? null, headers, data: m.data });
  }
  return out;
}

/** A connection, its JetStream client and manager, and a fresh stream on `<name>.>`. */
export async function natsStream(options: { duplicateWindowMs?: number } = {}) {
  const nc: NatsConnection = await connect({ servers: NATS_URL });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const name = uniqueName("S");
  const prefix = name.toLowerCase();
  await jsm.streams.add({
    name,
    subjects: [`${prefix}.>`],
    storage: "memory",
    duplicate_window: (options.duplicateWindowMs ?? 120_000) * 1_000_000,
  });
  return {
    nc,
    js,
    jsm,
    name,
    prefix,
    read: () => readStream(jsm, name),
    async close() {
      await jsm.streams.delete(name).catch(() => {});
      await nc.close();
    },
  };
}
