// Node 20 has no TypeScript: this proves the npm build (dist/, package.json exports)
// works by importing the package by its own name, as an installed user would.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createClient } from "@libsql/client";
import { createOutbox, memoryPublisher, OutboxMessageError } from "@x/outbox";
import { libsqlStorage } from "@x/outbox/libsql";
import { postgresStorage } from "@x/outbox/postgres";
import { drizzlePgStorage, pgOutboxTable } from "@x/outbox/drizzle";

test("the npm build imports under Node and relays a committed message from libSQL", async () => {
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-node-"));
  const client = createClient({ url: `file:${join(dir, "app.db")}` });
  try {
    const publisher = memoryPublisher();
    const outbox = createOutbox({ storage: libsqlStorage(client), publisher });
    await outbox.setup();
    const tx = await client.transaction("write");
    await outbox.enqueue(tx, { id: "node-1", topic: "orders.created", key: "o-1", payload: { id: "o-1" } });
    await assert.rejects(() => outbox.enqueue(tx, { topic: "", payload: 1 }), OutboxMessageError);
    await tx.commit();
    const report = await outbox.tick();
    assert.equal(report.published, 1);
    assert.deepEqual(publisher.messages.map((m) => [m.id, m.payload]), [["node-1", { id: "o-1" }]]);
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("every adapter entry point loads from the npm build", () => {
  assert.equal(typeof postgresStorage, "function");
  assert.equal(typeof drizzlePgStorage, "function");
  assert.equal(typeof pgOutboxTable(), "object");
});
