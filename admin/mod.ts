/**
 * @x/outbox/admin: an embeddable admin API and dashboard for an outbox, as one
 * Web-standard `(request: Request) => Promise<Response>`. It mounts in `Deno.serve`,
 * `Bun.serve`, a Cloudflare Worker, Hono, or node:http (a few lines, in
 * docs/operations.md), needs no framework or build step, and loads nothing from a CDN.
 *
 * Read-only by default. With `readOnly: false` it can requeue and purge dead (or kept
 * published) messages, for requests your `authorize(request, access)` accepts, from the
 * same origin only. This entry point imports no driver, and `@x/outbox` does not import
 * it.
 *
 * @example Read-only dashboard under /admin, in Bun
 * ```ts
 * import { createAdminHandler } from "@x/outbox/admin";
 *
 * const admin = createAdminHandler(outbox, { basePath: "/admin" });
 * Bun.serve({
 *   fetch(request) {
 *     const { pathname } = new URL(request.url);
 *     return pathname.startsWith("/admin") ? admin(request) : new Response("Not found", { status: 404 });
 *   },
 * });
 * ```
 *
 * @example Requeue and purge for operators holding a token
 * ```ts
 * import { createAdminHandler } from "@x/outbox/admin";
 *
 * const admin = createAdminHandler(outbox, {
 *   basePath: "/admin",
 *   readOnly: false,
 *   authorize: (request) => request.headers.get("authorization") === `Bearer ${token}`,
 * });
 * ```
 *
 * @module
 */

export {
  ADMIN_DEFAULT_LIMIT,
  ADMIN_MAX_BODY_BYTES,
  ADMIN_MAX_IDS,
  ADMIN_MAX_LIMIT,
  ADMIN_PREVIEW_CHARS,
  createAdminHandler,
} from "./handler.ts";
export type {
  AdminAccess,
  AdminHandlerOptions,
  AdminMessage,
  AdminOutbox,
  AdminPayloadPreview,
  AdminRow,
  AdminStatus,
  AdminStatusCounts,
} from "./handler.ts";
