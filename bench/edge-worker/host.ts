/**
 * Serves the edge bench's Worker (worker.ts) over node:http in Node or Bun, for the
 * proxy figures of bench/edge-cpu.mjs: the same fetch handler, the same
 * `@libsql/client/web`, in a runtime whose CPU is read from /proc the same way.
 *
 *   DB_URL=http://127.0.0.1:<port> DB_TOKEN=<jwt> node host.mjs | bun host.ts
 *
 * Prints `{"port": N}` on stdout once it listens.
 *
 * @module
 */

import { createServer } from "node:http";
import process from "node:process";
import worker, { type Env } from "./worker.ts";

const env: Env = { DB_URL: process.env.DB_URL!, DB_TOKEN: process.env.DB_TOKEN! };

const server = createServer(async (req, res) => {
  try {
    const response = await worker.fetch(new Request(`http://host${req.url}`), env);
    res.writeHead(response.status, { "content-type": "application/json" }).end(await response.text());
  } catch (error) {
    res.writeHead(500).end(String(error));
  }
});
server.listen(0, "127.0.0.1", () => {
  const address = server.address();
  console.log(JSON.stringify({ port: typeof address === "object" && address ? address.port : 0 }));
});
