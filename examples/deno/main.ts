// Deno: deno run -A main.ts   (in your project: deno add jsr:@x/outbox npm:@libsql/client)
import { createClient } from "@libsql/client";
import { createOutbox } from "@x/outbox";
import { libsqlStorage } from "@x/outbox/libsql";

const client = createClient({ url: "file:example.db" });
const outbox = createOutbox({
  storage: libsqlStorage(client),
  // A publisher is any (async) function of the message; here it only prints.
  publisher: (message) => console.log("published", message.topic, message.key, message.payload),
});
await outbox.setup();
await client.execute("CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, total REAL NOT NULL)");

// The order and its event commit together, or not at all.
const id = `o-${Date.now()}`;
const tx = await client.transaction("write");
try {
  await tx.execute({ sql: "INSERT INTO orders (id, total) VALUES (?, ?)", args: [id, 25] });
  await outbox.enqueue(tx, { topic: "orders.created", key: id, payload: { id, total: 25 } });
  await tx.commit();
} finally {
  tx.close();
}

// One relay pass: claim, publish, settle. In production: Deno.cron, or outbox.start().
const report = await outbox.tick();
console.log(`tick: claimed ${report.claimed}, published ${report.published} in ${report.durationMs} ms`);
client.close();
