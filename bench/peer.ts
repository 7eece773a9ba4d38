/**
 * The peer: `pg-transactional-outbox` (npm, polling listener) relaying the same backlog
 * of ~150-byte JSON messages into the same JetStream stream. Its own table and
 * `next_outbox_messages` function come from its `DatabaseSetup` helpers (in a bench
 * schema); its handler does `js.publish` with the message id as `Nats-Msg-Id`.
 *
 * Settings: `nextMessagesBatchSize` (how many messages it keeps in flight; its batch
 * size strategy ramps up from 1 over the first polls), polling interval 1 ms, pools of
 * 20 connections for listener and handler, poisonous-message and max-attempts
 * protection off (their cheapest mode). Unkeyed messages are `concurrency: 'parallel'`
 * (no segment order); keyed ones use `segment = key`, `concurrency: 'sequential'`.
 *
 * @module
 */

import type { JetStreamClient } from "@nats-io/jetstream";
import { DatabaseSetup, initializePollingMessageListener } from "pg-transactional-outbox";
import { log, payload, PG_URL, sleep } from "./lib.ts";
import type postgres from "postgres";

// deno-lint-ignore no-explicit-any
const silent: any = new Proxy({}, {
  get: (_t, p) => (p === "child" ? () => silent : p === "level" ? "silent" : () => {}),
});

export async function peerSetup(sql: postgres.Sql, schema: string) {
  const c = {
    outboxOrInbox: "outbox" as const,
    database: "test",
    schema,
    table: "outbox",
    listenerRole: "postgres",
    nextMessagesSchema: schema,
    nextMessagesName: "next_outbox_messages",
  };
  await sql.unsafe(DatabaseSetup.dropAndCreateTable(c));
  await sql.unsafe(DatabaseSetup.createPollingFunction(c));
  // Its index script drops unqualified names first (in the search path): skip those lines.
  const indexes = DatabaseSetup.setupPollingIndexes(c).split("\n").filter((l) => !l.startsWith("DROP INDEX")).join(
    "\n",
  );
  await sql.unsafe(indexes);
}

export async function peerFill(sql: postgres.Sql, schema: string, messages: number, keys: number, topic: string) {
  await sql.unsafe(`TRUNCATE "${schema}".outbox`);
  for (let s = 0; s < messages; s += 1_000) {
    const n = Math.min(1_000, messages - s);
    const ids = Array.from({ length: n }, () => crypto.randomUUID());
    const segs = Array.from({ length: n }, (_, j) => (keys === 0 ? null : `key-${(s + j) % keys}`));
    const bodies = Array.from({ length: n }, (_, j) => JSON.stringify(payload(s + j)));
    await sql.unsafe(
      `INSERT INTO "${schema}".outbox (id, aggregate_type, aggregate_id, message_type, segment, concurrency, payload, created_at)
       SELECT i::uuid, 'order', i, $4, s, $5, p::jsonb, clock_timestamp() FROM unnest($1::text[], $2::text[], $3::text[]) AS t(i, s, p)`,
      [ids, segs, bodies, topic, keys === 0 ? "parallel" : "sequential"],
    );
  }
  await sql.unsafe(`VACUUM ANALYZE "${schema}".outbox`);
}

/** Drains the peer's backlog into JetStream; msg/s. */
export async function peerRate(
  sql: postgres.Sql,
  schema: string,
  js: JetStreamClient,
  subject: string,
  messages: number,
  batchSize: number,
  timeoutMs = 120_000,
): Promise<number> {
  const url = new URL(PG_URL);
  const db = {
    host: url.hostname,
    port: Number(url.port || 5432),
    user: decodeURIComponent(url.username || "postgres"),
    password: decodeURIComponent(url.password),
    database: url.pathname.slice(1),
    max: 20,
  };
  let handled = 0;
  const started = performance.now();
  const [shutdown] = initializePollingMessageListener(
    {
      outboxOrInbox: "outbox",
      dbListenerConfig: db,
      dbHandlerConfig: db,
      settings: {
        dbSchema: schema,
        dbTable: "outbox",
        enableMaxAttemptsProtection: false,
        enablePoisonousMessageProtection: false,
        nextMessagesFunctionSchema: schema,
        nextMessagesFunctionName: "next_outbox_messages",
        nextMessagesBatchSize: batchSize,
        nextMessagesPollingIntervalInMs: 1,
        messageCleanupIntervalInMs: 0,
      },
    } as never,
    {
      handle: async (message: { id: string; messageType: string; payload: unknown }) => {
        await js.publish(message.messageType, JSON.stringify(message.payload), { msgID: message.id });
        handled++;
      },
    } as never,
    silent,
  );
  try {
    // Done when every row is marked processed (the handler's success is recorded after it returns).
    for (;;) {
      await sleep(handled < messages ? 20 : 5);
      if (handled >= messages) {
        const [{ n }] = await sql.unsafe(
          `SELECT count(*)::int AS n FROM "${schema}".outbox WHERE processed_at IS NULL`,
        ) as [{ n: number }];
        if (n === 0) break;
      }
      if (performance.now() - started > timeoutMs) {
        log(`  peer: timed out after ${handled} of ${messages}`);
        return handled / ((performance.now() - started) / 1000);
      }
    }
    return messages / ((performance.now() - started) / 1000);
  } finally {
    await shutdown();
    void subject;
  }
}
