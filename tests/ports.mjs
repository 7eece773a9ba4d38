// Free loopback ports for the servers a test starts itself (nats-server, sqld, redis-server).
import { readFileSync } from "node:fs";
import { createServer } from "node:net";

/**
 * The lowest port of the kernel's ephemeral range, from which outgoing connections take
 * their local ports (Linux's default where /proc cannot be read).
 *
 * @returns {number}
 */
function ephemeralLow() {
  try {
    const low = Number(readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    if (low > 0) return low;
  } catch {
    // Not Linux, or no /proc: the default.
  }
  return 32768;
}

/**
 * Whether a server can listen on `port` (0: any), and the port it got.
 *
 * @param {number} port
 * @returns {Promise<number | null>}
 */
function probe(port) {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(null));
    server.listen(port, "127.0.0.1", () => {
      const address = server.address();
      const got = typeof address === "object" && address ? address.port : null;
      server.close(() => resolve(got));
    });
  });
}

const LOWEST = 10_000;

/**
 * A port that was free on 127.0.0.1 a moment ago, for a server started next.
 *
 * Chosen below the ephemeral range, not with listen(0): a port listen(0) gives is in that
 * range, and between the probe's close and the server's bind any outgoing connection
 * (a cluster route, a client of another test) may take it as its local port; the server
 * then fails to bind. A 3-node nats-server cluster start hit this once in four runs of
 * the Bun suite with one core kept busy.
 *
 * @returns {Promise<number>}
 */
export async function freePort() {
  const low = ephemeralLow();
  if (low - LOWEST >= 1_000) {
    for (let i = 0; i < 100; i++) {
      const port = LOWEST + Math.floor(Math.random() * (low - LOWEST));
      if ((await probe(port)) === port) return port;
    }
  }
  const port = await probe(0);
  if (port === null) throw new Error("No free port on 127.0.0.1");
  return port;
}
