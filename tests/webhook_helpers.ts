/**
 * A real local webhook receiver for the webhook publisher's tests: a `node:http` server
 * on a free port (Node, Bun and Deno all have it) that records every request, answers as
 * the test says, and can deduplicate by `webhook-id` as a real receiver would.
 */

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

/** One request as the receiver got it. */
export interface ReceivedRequest {
  readonly method: string;
  readonly path: string;
  /** Header names in lower case. */
  readonly headers: Record<string, string>;
  /** The raw body. */
  readonly body: Uint8Array;
  /** 0-based arrival number. */
  readonly n: number;
}

/**
 * How to answer a request: a status (with headers and body), or `"hang"` (never answer).
 * `store: true` with a failing status stores the message and then fails the answer, as a
 * receiver that applied it but whose 2xx was lost would (the sender retries it).
 */
export type Answer = { status: number; headers?: Record<string, string>; body?: string; store?: boolean } | "hang";

/** Decides each answer. */
export type Responder = (request: ReceivedRequest) => Answer | Promise<Answer>;

export interface Receiver {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** Every request, in arrival order, whatever the answer. */
  readonly requests: ReceivedRequest[];
  /** Requests answered 2xx, in arrival order (with `dedup`: only the first of each id). */
  readonly stored: ReceivedRequest[];
  /** Stored (answered 2xx, or `store: true`) per `webhook-id`, duplicates included. */
  readonly deliveries: Map<string, number>;
  /** Requests whose connection closed before they were answered (the sender gave up). */
  readonly aborted: () => number;
  /** Waits until `n` requests have arrived (resolves at once if they have). */
  arrived(n: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts a receiver.
 *
 * @param respond How to answer (default 204 for all).
 * @param options `dedup`: store each `webhook-id` once and answer 2xx to its copies.
 */
export async function startReceiver(
  respond: Responder = () => ({ status: 204 }),
  options: { dedup?: boolean } = {},
): Promise<Receiver> {
  const requests: ReceivedRequest[] = [];
  const stored: ReceivedRequest[] = [];
  const deliveries = new Map<string, number>();
  const seen = new Set<string>();
  const sockets = new Set<Socket>();
  const waiters: { n: number; resolve: () => void }[] = [];
  let aborted = 0;

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Uint8Array[] = [];
    req.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    req.on("end", async () => {
      const size = chunks.reduce((s, c) => s + c.byteLength, 0);
      const body = new Uint8Array(size);
      let at = 0;
      for (const c of chunks) {
        body.set(c, at);
        at += c.byteLength;
      }
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) {
        if (v !== undefined) headers[k.toLowerCase()] = Array.isArray(v) ? v.join(", ") : v;
      }
      const request: ReceivedRequest = {
        method: req.method ?? "",
        path: req.url ?? "",
        headers,
        body,
        n: requests.length,
      };
      requests.push(request);
      for (const w of waiters.filter((w) => requests.length >= w.n)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
      res.on("close", () => {
        if (!res.writableFinished) aborted++;
      });
      const answer = await respond(request);
      if (answer === "hang") return;
      if ((answer.status >= 200 && answer.status < 300) || answer.store) {
        const id = headers["webhook-id"] ?? "";
        deliveries.set(id, (deliveries.get(id) ?? 0) + 1);
        if (!options.dedup || !seen.has(id)) stored.push(request);
        seen.add(id);
      }
      res.writeHead(answer.status, answer.headers ?? {});
      res.end(answer.body ?? "");
    });
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    stored,
    deliveries,
    aborted: () => aborted,
    arrived(n) {
      if (requests.length >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    async close() {
      // Hanging requests keep their sockets open: end them, or close() waits for ever.
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
