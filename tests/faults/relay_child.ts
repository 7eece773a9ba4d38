/**
 * A relay process for the SIGKILL test (tests/faults/sigkill.test.ts): relays one
 * Postgres schema into JetStream and prints one JSON line per event on stdout, so the
 * parent can kill it in the middle of a batch. Not a test file.
 *
 * Environment: FAULT_PG_URL, FAULT_SCHEMA, FAULT_NATS, FAULT_LEASE_MS, FAULT_BATCH, FAULT_RELAY_ID.
 */

import postgres from "postgres";
import { jetstream } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { createOutbox, type OutboxRecord, type PublishContext } from "../../mod.ts";
import { type PostgresSql, postgresStorage } from "../../adapters/postgres/mod.ts";
import { jetstreamPublisher } from "../../adapters/nats/mod.ts";

const env = (name: string): string => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const say = (event: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(event)}\n`);

const sql = postgres(env("FAULT_PG_URL"), { max: 2, onnotice: () => {} });
const nc = await connect({ servers: env("FAULT_NATS") });
const inner = jetstreamPublisher(jetstream(nc));
const outbox = createOutbox({
  storage: postgresStorage(sql as unknown as PostgresSql, { schema: env("FAULT_SCHEMA") }),
  // One message at a time with a short pause, so a batch takes long enough to be
  // killed in the middle of it.
  publisher: {
    async publish(message: OutboxRecord, context: PublishContext) {
      await inner.publish(message, context);
      say({ published: message.id, key: message.key });
      await new Promise((r) => setTimeout(r, 2));
    },
  },
  batchSize: Number(env("FAULT_BATCH")),
  leaseMs: Number(env("FAULT_LEASE_MS")),
  concurrency: 4,
  relayId: env("FAULT_RELAY_ID"),
  onError: (error, context) => say({ error: String(error), phase: context.phase }),
});
say({ ready: true, pid: process.pid });
outbox.start({ minIdleMs: 5, maxIdleMs: 50, onTick: (r) => say({ tick: r }) });
