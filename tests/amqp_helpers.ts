/**
 * RabbitMQ fixtures: the real broker at 127.0.0.1:5672 (guest/guest), one exchange and
 * one queue bound to it per test (unique names), so runs never collide; what the queue
 * holds is read back with `basic.get`.
 */

import { type ChannelModel, type ConfirmChannel, connect } from "amqplib";
import { spawn, spawnSync } from "node:child_process";
import type { StoredMessage } from "./conformance/publisher.ts";

/** Broker URL of the shared test server (override with OUTBOX_TEST_AMQP_URL). */
export const AMQP_URL = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env
  .OUTBOX_TEST_AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";

let counter = 0;

/** A unique token for exchange, queue and connection names. */
export function uniqueName(prefix = "t"): string {
  return `${prefix}${Date.now().toString(36)}${(counter++).toString(36)}${crypto.randomUUID().slice(0, 6)}`;
}

/** A message read back from a queue, with what RabbitMQ says about it. */
export interface QueuedMessage extends StoredMessage {
  /** Whether the broker flagged it as delivered before (never, with `get` and no-ack). */
  readonly redelivered: boolean;
  readonly contentType: string | undefined;
  readonly type: string | undefined;
  readonly persistent: boolean;
  readonly timestamp: number | undefined;
}

/**
 * Opens a connection named `name` (RabbitMQ shows it as the `connection_name` client
 * property, which is how a fault test finds it to close it).
 */
export async function openConnection(name = uniqueName("outbox-test-")): Promise<ChannelModel> {
  const connection = await connect(AMQP_URL, { clientProperties: { connection_name: name } });
  // A connection closed under a test (rabbitmqctl close_connection) emits "error";
  // unhandled, that would throw. The channels' failures are what the tests check.
  connection.on("error", () => {});
  return connection;
}

/**
 * A connection with a confirm channel, a topic exchange and a queue bound to
 * `<prefix>.#`: messages to topic `<prefix>.anything` are stored; others are unroutable.
 * The queue is not durable unless `durable` is set.
 */
export async function amqpQueue(options: { durable?: boolean } = {}) {
  const connection = await openConnection();
  const admin = await connection.createChannel();
  const channel: ConfirmChannel = await connection.createConfirmChannel();
  const prefix = uniqueName("x");
  const exchange = `${prefix}.ex`;
  const queue = `${prefix}.q`;
  await admin.assertExchange(exchange, "topic", { durable: false, autoDelete: false });
  // Durable: persistent messages are written to disk before the confirm, as in production.
  await admin.assertQueue(queue, { durable: options.durable ?? false, autoDelete: false });
  await admin.bindQueue(queue, exchange, `${prefix}.#`);
  const stored: QueuedMessage[] = [];
  let reader: Awaited<ReturnType<ChannelModel["createChannel"]>> | null = null;
  return {
    connection,
    channel,
    exchange,
    queue,
    prefix,
    /** Everything the queue held so far, in queue order (read once, kept here). */
    async read(): Promise<QueuedMessage[]> {
      // A channel of its own: a test may have closed the publishing connection's.
      reader ??= await connection.createChannel();
      for (;;) {
        const m = await reader.get(queue, { noAck: true });
        if (m === false) break;
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(m.properties.headers ?? {})) headers[k] = String(v);
        stored.push({
          id: m.properties.messageId ?? null,
          subject: m.fields.routingKey,
          headers,
          data: new Uint8Array(m.content),
          redelivered: m.fields.redelivered,
          contentType: m.properties.contentType,
          type: m.properties.type,
          persistent: m.properties.deliveryMode === 2,
          timestamp: m.properties.timestamp,
        });
      }
      return stored;
    },
    async close(): Promise<void> {
      try {
        const cleanup = await connection.createChannel();
        await cleanup.deleteQueue(queue);
        await cleanup.deleteExchange(exchange);
      } finally {
        await connection.close().catch(() => {});
      }
    },
  };
}

/**
 * The pids of the connections whose `connection_name` client property is
 * `connectionName`: what `rabbitmqctl close_connection` takes (it wants the connection
 * process's pid, such as `<rabbit@host.1796144679.2601.0>`, not its display name).
 */
export function connectionsNamed(connectionName: string): string[] {
  const out = spawnSync("rabbitmqctl", ["list_connections", "pid", "client_properties", "-q", "--no-table-headers"], {
    encoding: "utf8",
  });
  if (out.status !== 0) throw new Error(`rabbitmqctl list_connections failed: ${out.stderr}`);
  // One line per connection: the pid, a tab, then the properties as Erlang terms.
  return out.stdout.split("\n")
    .filter((line) => line.includes(`{"connection_name","${connectionName}"}`))
    .map((line) => line.split("\t")[0]!);
}

/**
 * Closes a connection from the broker's side, as an operator or a failing node would,
 * without blocking the event loop (the relay keeps running meanwhile).
 *
 * @param pid A pid from {@link connectionsNamed}.
 */
export function closeConnection(pid: string, reason = "closed by an outbox test"): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("rabbitmqctl", ["close_connection", pid, reason], { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout!.on("data", (d) => (output += d));
    child.stderr!.on("data", (d) => (output += d));
    child.once("error", reject);
    child.once(
      "close",
      (code) => code === 0 ? resolve() : reject(new Error(`rabbitmqctl close_connection: ${output}`)),
    );
  });
}
