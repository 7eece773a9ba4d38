/**
 * @x/outbox: a transactional outbox for TypeScript. Write business rows and the
 * messages they cause in one transaction; a relay publishes the messages afterwards,
 * at least once if the transaction committed and never if it rolled back, in order
 * per key, safely with many relays at once.
 *
 * Storage adapters live in `@x/outbox/libsql`, `@x/outbox/postgres` and
 * `@x/outbox/drizzle`, the JetStream publisher in `@x/outbox/nats`, the consumer-side
 * inbox in `@x/outbox/inbox`; this entry point imports no driver.
 *
 * @example
 * ```ts
 * import { createOutbox, memoryPublisher } from "@x/outbox";
 * import { libsqlStorage } from "@x/outbox/libsql";
 * import { createClient } from "@libsql/client";
 *
 * const client = createClient({ url: "file:app.db" });
 * const outbox = createOutbox({ storage: libsqlStorage(client), publisher: memoryPublisher() });
 * await outbox.setup();
 * await outbox.enqueue(client, { topic: "orders.created", key: "o-1", payload: { id: "o-1" } });
 * const report = await outbox.tick();
 * ```
 *
 * @module
 */

export { createOutbox } from "./src/outbox.ts";
export type { EnqueueMessage, Outbox, OutboxStats, PurgeOptions, RequeueOptions } from "./src/outbox.ts";
export type {
  MessageSchemas,
  OutboxErrorContext,
  OutboxOptions,
  RetentionOptions,
  RetryOptions,
} from "./src/options.ts";
export type { TickOptions, TickReport } from "./src/relay.ts";
export type { StandardSchemaV1 } from "./src/standard_schema.ts";
export type { RelayHandle, StartOptions } from "./src/loop.ts";
export type {
  ClaimedRow,
  ClaimRequest,
  CleanupRequest,
  ClockSource,
  InspectOptions,
  Instrumentation,
  NewOutboxRow,
  OutboxMessage,
  OutboxRecord,
  OutboxRow,
  OutboxStatus,
  OutboxStorage,
  PublishContext,
  Publisher,
  PublishFunction,
  PublishOutcome,
  PurgeRequest,
  RequeueRequest,
  Settlement,
  SettleRequest,
  SetupOptions,
  SignalOptions,
  StatusCounts,
  StorageStats,
} from "./src/types.ts";
export {
  isOutboxError,
  isPermanentError,
  OutboxConfigError,
  OutboxError,
  OutboxMessageError,
  OutboxStorageError,
  PublishError,
} from "./src/errors.ts";
export type { OutboxErrorName, OutboxErrorOptions, PublishErrorOptions } from "./src/errors.ts";
export { memoryPublisher } from "./src/memory_publisher.ts";
export { memoryStorage } from "./src/memory_storage.ts";
export type { MemoryStorage, MemoryTransaction } from "./src/memory_storage.ts";
export type { MemoryPublisher, MemoryPublisherOptions } from "./src/memory_publisher.ts";
export { uuidv7 } from "./src/uuid.ts";
