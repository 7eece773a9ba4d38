// The npm build under Node 20, which runs no TypeScript: this file imports the package by
// its own name (Node resolves "@x/outbox" to this package through package.json
// "exports", i.e. to dist/), as an installed user would. Run after `npm run build`:
//   node --test tests/node/

import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { createClient } from "@libsql/client";
import { createOutbox, memoryPublisher, OutboxConfigError, OutboxMessageError } from "@x/outbox";
import { libsqlStorage } from "@x/outbox/libsql";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));

test("every npm export target exists in the build and imports by the package's name", async () => {
  for (const [subpath, target] of Object.entries(pkg.exports)) {
    for (const file of [target.types, target.default]) {
      assert.ok(existsSync(join(root, file)), `${file} (for ${subpath}) exists: run npm run build`);
    }
    const specifier = subpath === "." ? pkg.name : `${pkg.name}/${subpath.slice(2)}`;
    const module = await import(specifier);
    assert.ok(Object.keys(module).length > 0, `${specifier} exports something`);
    // The import went through package.json "exports" to the compiled file.
    assert.equal(import.meta.resolve(specifier), new URL(target.default, `file://${root}/`).href);
  }
});

test("the inbox is @x/outbox/inbox, not part of @x/outbox", async () => {
  const core = await import("@x/outbox");
  const inbox = await import("@x/outbox/inbox");
  assert.equal(typeof inbox.createInbox, "function");
  assert.equal(inbox.INBOX_MAX_ID_LENGTH, 255);
  assert.equal("createInbox" in core, false);
});

test("Node 20: an outbox on a libSQL file publishes what was committed and nothing rolled back", async () => {
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-node-"));
  const client = createClient({ url: `file:${join(dir, "app.db")}` });
  try {
    const publisher = memoryPublisher();
    const outbox = createOutbox({ storage: libsqlStorage(client), publisher });
    await outbox.setup();
    await client.execute("CREATE TABLE orders (id TEXT PRIMARY KEY)");

    const tx = await client.transaction("write");
    await tx.execute({ sql: "INSERT INTO orders (id) VALUES (?)", args: ["o-1"] });
    await outbox.enqueue(tx, { topic: "orders.created", key: "o-1", payload: { id: "o-1" } });
    // A bad message throws before anything is written and leaves the transaction usable.
    await assert.rejects(() => outbox.enqueue(tx, { topic: "", payload: 1 }), OutboxMessageError);
    await tx.commit();

    const rolledBack = await client.transaction("write");
    await rolledBack.execute({ sql: "INSERT INTO orders (id) VALUES (?)", args: ["o-2"] });
    await outbox.enqueue(rolledBack, { topic: "orders.created", key: "o-2", payload: { id: "o-2" } });
    await rolledBack.rollback();

    const report = await outbox.tick();
    assert.equal(report.published, 1);
    assert.deepEqual(
      publisher.messages.map((m) => [m.topic, m.key, m.payload]),
      [["orders.created", "o-1", { id: "o-1" }]],
    );
  } finally {
    client.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("Node 20: invalid options fail at createOutbox with the typed error from the build", () => {
  assert.throws(() => createOutbox({ storage: {}, publisher: memoryPublisher(), batchSize: 0 }), OutboxConfigError);
});
