// The Redis Streams publisher from the npm build, on Node (20, 22 and 24 through
// scripts/test.mjs) with node-redis v5 against the shared Redis (127.0.0.1:6379, or
// OUTBOX_TEST_REDIS_URL): the client choice holds on Node as on Bun and Deno.

import assert from "node:assert/strict";
import { test } from "node:test";
import { createClient, RESP_TYPES } from "redis";
import { redisStreamsPublisher } from "@x/outbox/redis";

const url = process.env.OUTBOX_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
const context = { signal: new AbortController().signal };

function record(stream, id, fields = {}) {
  return {
    id,
    seq: 1,
    topic: stream,
    key: "k",
    payload: { id },
    body: JSON.stringify({ id }),
    headers: {},
    attempts: 1,
    createdAt: new Date(),
    ...fields,
  };
}

test(`Node ${process.versions.node}: node-redis v5 adds a run in order, bytes as they are, and a repeated id once`, async () => {
  const client = await createClient({ url }).connect();
  const stream = `outbox-test-node:${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  try {
    const publisher = redisStreamsPublisher(client);
    const run = [
      record(stream, "n-1"),
      record(stream, "n-2", { payload: new Uint8Array([0, 255]), body: new Uint8Array([0, 255]) }),
      record(stream, "n-1", { attempts: 2 }), // published again, as after a crash before settling
      record(stream, "n-3"),
    ];
    const outcomes = await publisher.publishRun(run, context);
    assert.ok(outcomes.every((o) => o.ok));
    const entries = await client.sendCommand(["XRANGE", stream, "-", "+"], {
      typeMapping: { [RESP_TYPES.BLOB_STRING]: Buffer },
    });
    const fields = entries.map(([, pairs]) => {
      const map = new Map();
      for (let i = 0; i < pairs.length; i += 2) map.set(pairs[i].toString(), pairs[i + 1]);
      return map;
    });
    assert.deepEqual(fields.map((f) => f.get("id").toString()), ["n-1", "n-2", "n-3"]);
    assert.deepEqual([...fields[1].get("body")], [0, 255]);
  } finally {
    const keys = [stream];
    for await (const batch of client.scanIterator({ MATCH: `{${stream}}:outbox-id:*` })) keys.push(...batch);
    await client.del(keys);
    client.destroy();
  }
});
