/**
 * @x/outbox/inbox: the consumer's half of effectively-once delivery. The outbox and the
 * broker deliver each message at least once; an inbox records which message ids a
 * consumer has handled, in the consumer's own transaction, so a redelivered copy is
 * recognised and its effects are not applied twice.
 *
 * This entry point owns the contract ({@link InboxStorage}) and {@link createInbox};
 * the storages are `libsqlInbox` in `@x/outbox/libsql` and `postgresInbox` in
 * `@x/outbox/postgres`. It imports no driver, and `@x/outbox` does not import it, so
 * an application that only sends pays nothing for it.
 *
 * @example Apply each message once, with libSQL
 * ```ts
 * import { createInbox } from "@x/outbox/inbox";
 * import { libsqlInbox } from "@x/outbox/libsql";
 * import { createClient } from "@libsql/client";
 *
 * const client = createClient({ url: "file:app.db" });
 * const inbox = createInbox({ storage: libsqlInbox(client), consumer: "billing" });
 * await inbox.setup();
 * const messageId = "0190a6c2-7c1e-7000-8000-000000000001"; // Nats-Msg-Id on JetStream
 * const tx = await client.transaction("write");
 * if (await inbox.receive(tx, messageId)) { // false: a copy, already applied
 *   await tx.execute("UPDATE accounts SET balance = balance + 10 WHERE id = 'alice'");
 * }
 * await tx.commit();
 * ```
 *
 * @module
 */

export { createInbox, INBOX_MAX_ID_LENGTH } from "./inbox.ts";
export type {
  Inbox,
  InboxCleanupOptions,
  InboxCleanupRequest,
  InboxEntry,
  InboxOptions,
  InboxRetentionOptions,
  InboxStorage,
  ReceiveOptions,
} from "./inbox.ts";
