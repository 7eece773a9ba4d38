/**
 * `messages` takes any Standard Schema v1 validator: the same outbox behaviour with
 * valibot (the documented default) and zod, on a real storage (embedded libSQL). Checked:
 * typed enqueue (compile time: the `@ts-expect-error` lines fail type-checking if the
 * types do not flow), the schema's output is what gets stored, a bad payload is refused
 * with the path before anything is written, nested paths, async schemas refused.
 */

import assert from "node:assert/strict";
import * as v from "valibot";
import { z } from "zod";
import { createClient } from "@libsql/client";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createOutbox, memoryPublisher, OutboxConfigError, OutboxMessageError } from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { test } from "./harness.ts";

const validators = {
  valibot: {
    "price.set": v.object({ sku: v.string(), cents: v.pipe(v.string(), v.transform(Number)) }),
    "order.placed": v.object({ lines: v.array(v.object({ qty: v.pipe(v.number(), v.minValue(1)) })) }),
  },
  zod: {
    "price.set": z.object({ sku: z.string(), cents: z.string().transform(Number) }),
    "order.placed": z.object({ lines: z.array(z.object({ qty: z.number().min(1) })) }),
  },
};

for (const [name, messages] of Object.entries(validators)) {
  test(`Standard Schema (${name}): enqueue is typed and validated; the schema's output is stored; bad input writes nothing`, async () => {
    const dir = mkdtempSync(join(tmpdir(), "x-outbox-schema-"));
    const client = createClient({ url: `file:${join(dir, "db.sqlite")}` });
    try {
      const publisher = memoryPublisher();
      const outbox = createOutbox({ storage: libsqlStorage(client), publisher, messages });
      await outbox.setup();
      await outbox.enqueue(client, { topic: "price.set", payload: { sku: "a", cents: "250" } });
      if (false as boolean) {
        // @ts-expect-error an unknown topic does not type-check
        await outbox.enqueue(client, { topic: "nope", payload: {} });
        // @ts-expect-error cents is a string on input
        await outbox.enqueue(client, { topic: "price.set", payload: { sku: "a", cents: 250 } });
      }
      await assert.rejects(
        outbox.enqueue(client, { topic: "order.placed", payload: { lines: [{ qty: 1 }, { qty: 0 }] } }),
        (e: unknown) =>
          e instanceof OutboxMessageError && e.path === "payload.lines.1.qty" && Array.isArray(e.cause) &&
          /payload\.lines\.1\.qty/.test(e.message),
      );
      await assert.rejects(
        outbox.enqueue(client, [{ topic: "price.set", payload: { sku: "b", cents: "1" } }, {
          topic: "price.set",
          payload: { sku: 1, cents: "2" } as never,
        }]),
        (e: unknown) => e instanceof OutboxMessageError && e.path === "[1].payload.sku",
      );
      await assert.rejects(
        outbox.enqueue(client, { topic: "other", payload: {} } as never),
        (e: unknown) => e instanceof OutboxMessageError && e.path === "topic",
      );
      const rows = await outbox.inspect();
      assert.equal(rows.length, 1, "nothing of a refused enqueue was written");
      assert.equal(rows[0]!.body, '{"sku":"a","cents":250}', "the schema's output (a number) is stored");
      await outbox.tick();
      assert.deepEqual(publisher.messages.map((m) => m.payload), [{ sku: "a", cents: 250 }]);
    } finally {
      client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test("Standard Schema: an async schema is refused at enqueue; a non-schema is refused at createOutbox", async () => {
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-schema-"));
  const client = createClient({ url: `file:${join(dir, "db.sqlite")}` });
  try {
    const asyncSchema = z.object({ id: z.string() }).refine(async () => true);
    const outbox = createOutbox({
      storage: libsqlStorage(client),
      publisher: memoryPublisher(),
      messages: { t: asyncSchema },
    });
    await outbox.setup();
    await assert.rejects(
      outbox.enqueue(client, { topic: "t", payload: { id: "x" } }),
      (e: unknown) => e instanceof OutboxMessageError && /async/.test(e.message),
    );
    assert.equal((await outbox.inspect()).length, 0);
    assert.throws(
      () =>
        createOutbox({ storage: libsqlStorage(client), publisher: memoryPublisher(), messages: { t: {} as never } }),
      (e: unknown) => e instanceof OutboxConfigError && e.path === "messages.t",
    );
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
