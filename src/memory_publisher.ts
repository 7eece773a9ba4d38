/**
 * An in-memory publisher for tests, demos and local development.
 */

import type { OutboxRecord, PublishContext, Publisher } from "./types.ts";

/** A publisher that keeps what it was sent, in order. */
export interface MemoryPublisher extends Publisher {
  /** Every message accepted so far, in publish order (duplicates included). */
  readonly messages: OutboxRecord[];
  /** Accepted messages of one topic. */
  byTopic(topic: string): OutboxRecord[];
  /** Forgets everything accepted so far. */
  clear(): void;
}

/** Options of {@link memoryPublisher}. */
export interface MemoryPublisherOptions {
  /**
   * Called before a message is accepted; throw to fail the publish (fault injection
   * in tests). A message whose hook throws is not recorded.
   */
  onPublish?: (message: OutboxRecord, context: PublishContext) => void | Promise<void>;
}

/**
 * Creates a publisher that records messages in memory.
 *
 * @param options `onPublish` hook to inspect messages or inject failures.
 * @returns The publisher, with `messages` to read back.
 *
 * @example Collect what the relay sends
 * ```ts
 * import { createOutbox, memoryPublisher } from "@x/outbox";
 * const publisher = memoryPublisher();
 * const outbox = createOutbox({ storage, publisher });
 * await outbox.tick();
 * console.log(publisher.messages.map((m) => m.topic));
 * ```
 */
export function memoryPublisher(options: MemoryPublisherOptions = {}): MemoryPublisher {
  const messages: OutboxRecord[] = [];
  return {
    messages,
    async publish(message, context) {
      if (options.onPublish) await options.onPublish(message, context);
      messages.push(message);
    },
    byTopic(topic) {
      return messages.filter((m) => m.topic === topic);
    },
    clear() {
      messages.length = 0;
    },
  };
}
