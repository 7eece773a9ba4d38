// Turso embedded replicas under Node, from dist/ (run `npm run build` first): the native
// `libsql` driver behind @libsql/client's `file:` URL with `syncUrl`, against a private
// sqld primary that requires a JWT, as Turso does (tests/sqld_helpers.mjs). The full
// scenarios run under Bun and Deno (tests/libsql_replica.test.ts).

import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createClient } from "@libsql/client";
import { createOutbox, memoryPublisher } from "@x/outbox";
import { libsqlStorage } from "@x/outbox/libsql";
import { startSqld } from "../sqld_helpers.mjs";

test("Node: enqueued through one embedded replica, relayed through another, with a JWT: published once; inspect() is stale until sync()", async () => {
  const sqld = await startSqld({ auth: true });
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-replica-"));
  const replica = (name) =>
    createClient({ url: `file:${join(dir, name)}`, syncUrl: sqld.url, authToken: sqld.authToken });
  const app = replica("app.db");
  const relayClient = replica("relay.db");
  try {
    const producer = createOutbox({ storage: libsqlStorage(app), publisher: memoryPublisher() });
    await producer.setup();
    const tx = await app.transaction("write");
    await producer.enqueue(tx, { id: "m1", topic: "t", key: "k", payload: 1 });
    await tx.commit();
    tx.close();
    const rolledBack = await app.transaction("write");
    await producer.enqueue(rolledBack, { id: "never", topic: "t", key: "k", payload: 0 });
    await rolledBack.rollback();
    rolledBack.close();
    await app.batch(producer.statements({ id: "m2", topic: "t", key: "k", payload: 2 }), "write");

    const pub = memoryPublisher();
    const relay = createOutbox({ storage: libsqlStorage(relayClient), publisher: pub });
    assert.equal((await relay.tick()).published, 2);
    assert.deepEqual(pub.messages.map((m) => m.id), ["m1", "m2"]);
    // The producer's replica still has both rows as pending, until it syncs.
    assert.deepEqual((await producer.inspect()).map((row) => row.id), ["m1", "m2"]);
    await app.sync();
    assert.deepEqual(await producer.inspect(), []);
    assert.equal((await relay.tick()).claimed, 0);
  } finally {
    app.close();
    relayClient.close();
    await sqld.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
