/**
 * examples/deno-cron under Deno: the handler Deno.cron calls publishes what was committed,
 * and Deno.cron accepts the schedule. Deno only (the example uses Deno.cron); under Bun
 * or Node this file registers nothing.
 */

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { memoryPublisher, type Publisher, type TickReport } from "../mod.ts";
import { runtime, test } from "./harness.ts";

/** What the test uses of examples/deno-cron/main.ts. */
interface DenoCronExample {
  RELAY_SCHEDULE: string;
  createRelay(options: { url: string; publisher?: Publisher; budgetMs?: number }): Promise<CronRelay>;
  placeOrder(relay: CronRelay, total: number): Promise<string>;
}
interface CronRelay {
  client: { close(): void };
  relayHandler(): Promise<TickReport>;
}

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

if (runtime === "deno") {
  test("deno-cron example: the cron handler publishes committed orders once, in one tick", async () => {
    // A computed specifier: tsc (Node types, no Deno namespace) must not follow it; Deno
    // type-checks the example when it loads it.
    const specifier = "../examples/deno-cron/main.ts";
    const { createRelay, placeOrder, RELAY_SCHEDULE } = await import(specifier) as DenoCronExample;
    const dir = mkdtempSync(join(tmpdir(), "x-outbox-deno-cron-"));
    const publisher = memoryPublisher();
    const relay = await createRelay({ url: `file:${join(dir, "cron.db")}`, publisher, budgetMs: 5_000 });
    try {
      const a = await placeOrder(relay, 10);
      const b = await placeOrder(relay, 20);
      const first = await relay.relayHandler();
      assert(first.published === 2, `published ${first.published}, expected 2`);
      // Each order is its own key: no order between their events.
      assert(publisher.messages.map((m) => m.key).sort().join() === [a, b].sort().join(), "both events, once each");
      const idle = await relay.relayHandler();
      assert(idle.claimed === 0 && publisher.messages.length === 2, "an idle run publishes nothing again");
      assert(RELAY_SCHEDULE === "* * * * *", "schedule");
    } finally {
      relay.client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("deno-cron example: Deno.cron registers the handler (npx deno run -A --unstable-cron)", async () => {
    // deno test runs with --unstable-cron only when asked; without it Deno.cron is absent.
    // deno-lint-ignore no-explicit-any
    const cron = (globalThis as any).Deno.cron as undefined | ((...args: unknown[]) => Promise<void>);
    if (typeof cron !== "function") return;
    const controller = new AbortController();
    const registered = cron("outbox relay test", "* * * * *", { signal: controller.signal }, () => {});
    controller.abort();
    await registered;
  });
}
