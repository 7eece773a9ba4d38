/**
 * setup(): idempotent, and safe to run from several connections at once.
 */

import assert from "node:assert/strict";
import { memoryPublisher } from "../../../mod.ts";
import { Clock, ids, type StorageSuite } from "./harness.ts";

/** Registers the setup() tests of the storage conformance suite. */
export function setupTests<Tx>({ it, make }: StorageSuite<Tx>): void {
  it("setup() is idempotent and safe to run from several connections at once", async (h) => {
    const others = [h.storage, await h.connect(), await h.connect()];
    await Promise.all(others.map((s) => s.setup()));
    await h.storage.setup();
    const clock = new Clock();
    const pub = memoryPublisher();
    const outbox = make(h, clock, pub);
    await h.commit((tx) => outbox.enqueue(tx, { id: "s", topic: "t", payload: 1 }));
    await outbox.tick();
    assert.deepEqual(ids(pub.messages), ["s"]);
  });
}
