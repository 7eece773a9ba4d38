/**
 * @x/outbox/admin: the JSON API and the dashboard page, against real outboxes on a
 * libSQL file and on Postgres (a schema of its own, dropped after). Most tests hand
 * Request objects to the handler; one goes through a real server (Bun.serve or
 * Deno.serve on a free port). The page in a browser: tests/node/admin_browser.test.mjs.
 */

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { createClient } from "@libsql/client";
import { createAdminHandler } from "../admin/mod.ts";
import type { AdminHandlerOptions, AdminMessage, AdminOutbox } from "../admin/mod.ts";
import {
  createOutbox,
  type Outbox,
  OutboxConfigError,
  type OutboxMessage,
  type OutboxStorage,
  PublishError,
} from "../mod.ts";
import { libsqlStorage } from "../adapters/libsql/mod.ts";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../adapters/postgres/mod.ts";
import { runtime, test } from "./harness.ts";
import { tempDatabase } from "./libsql_helpers.ts";
import { openSql, uniqueSchema } from "./postgres_helpers.ts";

const ORIGIN = "http://outbox.test";
const XSS = [
  "<script>window.__xss=1</script>",
  '<img src=x onerror="window.__xss=1">',
  '"><svg onload=window.__xss=1>',
];

/** An outbox holding published, dead, pending and scheduled messages. */
interface Fixture {
  outbox: AdminOutbox;
  /** Ids by what became of them. */
  ids: { published: string[]; dead: string[]; pending: string[] };
  close(): Promise<void>;
}

async function fill<Tx, Stmt>(
  storage: OutboxStorage<Tx, Stmt>,
  write: (outbox: Outbox<Tx, Stmt>, messages: OutboxMessage[]) => Promise<unknown>,
) {
  const outbox = createOutbox({
    storage,
    // Topics under "bad." fail for good: they go dead at once, with the error kept.
    publisher: (message) => {
      if (message.topic.startsWith("bad.") || message.topic.includes("<")) {
        throw new PublishError(`broker refused ${message.topic}: ${XSS[1]}`, { permanent: true });
      }
    },
    retention: { publishedMs: 86_400_000 },
  });
  await outbox.setup();
  const send = (messages: OutboxMessage[]) => write(outbox, messages);
  const ids = { published: [] as string[], dead: [] as string[], pending: [] as string[] };
  const messages: OutboxMessage[] = [];
  for (let i = 1; i <= 3; i++) {
    messages.push({ id: `ok-${i}`, topic: "orders.created", key: `o-${i}`, payload: { id: `o-${i}` } });
    ids.published.push(`ok-${i}`);
  }
  for (let i = 1; i <= 5; i++) {
    messages.push({ id: `bad-${i}`, topic: "bad.topic", key: i % 2 ? "k-odd" : "k-even", payload: { n: i } });
    ids.dead.push(`bad-${i}`);
  }
  messages.push({
    id: "xss-1",
    topic: XSS[0]!,
    key: XSS[2]!,
    payload: { html: XSS.join(" ") },
    headers: { "x-note": XSS[1]! },
  });
  messages.push({ id: "bytes-1", topic: "bad.bytes", payload: new Uint8Array([0, 1, 2, 253, 254, 255]) });
  ids.dead.push("xss-1", "bytes-1");
  messages.push({ id: "later-1", topic: "orders.created", payload: {}, deliverAt: Date.now() + 3_600_000 });
  await send(messages);
  for (let i = 0; i < 5 && (await outbox.tick()).claimed > 0; i++);
  // Due but not relayed: the oldest pending message.
  await send([{ id: "due-1", topic: "orders.created", key: "o-9", payload: { id: "o-9" } }]);
  ids.pending.push("later-1", "due-1");
  return { outbox: outbox satisfies AdminOutbox, ids };
}

/** What fills a fixture's table: {@link fill}, or {@link fanOutFill}. */
type Filler = typeof fill;

async function libsqlFixture(filler: Filler = fill): Promise<Fixture> {
  const { url, dir } = tempDatabase();
  const client = createClient({ url });
  const filled = await filler(libsqlStorage(client), (outbox, messages) => outbox.enqueue(client, messages));
  return {
    ...filled,
    close: () => {
      client.close();
      rmSync(dir, { recursive: true, force: true });
      return Promise.resolve();
    },
  };
}

async function postgresFixture(filler: Filler = fill): Promise<Fixture> {
  const schema = uniqueSchema("admin");
  const sql = openSql();
  const close = async () => {
    await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await sql.end({ timeout: 1 });
  };
  try {
    const filled = await filler(
      postgresStorage(sql as unknown as PostgresSql, { schema }),
      (outbox, messages) => sql.begin((tx) => outbox.enqueue(tx as unknown as PostgresTx, messages)),
    );
    return { ...filled, close };
  } catch (error) {
    await close().catch(() => {});
    throw error;
  }
}

const storages: [string, () => Promise<Fixture>][] = [["libsql", () => libsqlFixture()], [
  "postgres",
  () => postgresFixture(),
]];

/**
 * A fan-out outbox on a table the one-publisher fixture filled first (its rows keep the
 * default destination `""`): nats publishes everything, hooks takes the orders and
 * hostile topics and refuses them for good.
 */
async function fanOutFill<Tx, Stmt>(
  storage: OutboxStorage<Tx, Stmt>,
  write: (outbox: Outbox<Tx, Stmt>, messages: OutboxMessage[]) => Promise<unknown>,
) {
  const filled = await fill(storage, write);
  const outbox = createOutbox({
    storage,
    publishers: {
      nats: () => {},
      hooks: (message) => {
        throw new PublishError(`hooks refused ${message.topic}: ${XSS[0]}`, { permanent: true });
      },
    },
    route: (m) => (m.topic.startsWith("orders.") || m.topic.includes("<") ? ["nats", "hooks"] : ["nats"]),
    retention: { publishedMs: 86_400_000 },
  });
  await outbox.setup();
  await write(outbox, [
    { id: "fan-1", topic: "orders.shipped", key: "o-1", payload: { n: 1 } },
    { id: "fan-2", topic: "orders.shipped", key: "o-2", payload: { n: 2 } },
    { id: "fan-3", topic: "emails.send", payload: { n: 3 } },
    { id: "fan-xss", topic: XSS[0]!, key: XSS[2]!, payload: { html: XSS[1] } },
  ]);
  for (let i = 0; i < 5 && (await outbox.tick()).claimed > 0; i++);
  return { ...filled, outbox: outbox satisfies AdminOutbox };
}

const fanOutStorages: [string, () => Promise<Fixture>][] = [
  ["libsql", () => libsqlFixture(fanOutFill)],
  ["postgres", () => postgresFixture(fanOutFill)],
];

const counts = (pending: number, processing: number, published: number, dead: number) => ({
  pending,
  processing,
  published,
  dead,
});

/** Runs `body` with a fresh fixture and a handler on it. */
async function withAdmin(
  make: () => Promise<Fixture>,
  options: AdminHandlerOptions,
  body: (admin: Client, fixture: Fixture) => Promise<void>,
) {
  const fixture = await make();
  try {
    await body(client(createAdminHandler(fixture.outbox, options)), fixture);
  } finally {
    await fixture.close();
  }
}

interface Client {
  (path: string, init?: RequestInit): Promise<Response>;
  get(path: string): Promise<{ status: number; body: Json }>;
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<{ status: number; body: Json }>;
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** Calls the handler as a same-origin browser would. */
function client(handler: (request: Request) => Promise<Response>): Client {
  const call = (path: string, init?: RequestInit) => handler(new Request(ORIGIN + path, init));
  const read = async (response: Response) => ({ status: response.status, body: await response.json() });
  return Object.assign(call, {
    get: async (path: string) => read(await call(path)),
    post: async (path: string, body: unknown, headers: Record<string, string> = {}) =>
      read(
        await call(path, {
          method: "POST",
          headers: { "content-type": "application/json", origin: ORIGIN, "sec-fetch-site": "same-origin", ...headers },
          body: typeof body === "string" ? body : JSON.stringify(body),
        }),
      ),
  });
}

const allow = () => true;
const writable: AdminHandlerOptions = { basePath: "/admin", readOnly: false, authorize: allow };

for (const [name, make] of storages) {
  test(`admin ${name}: GET api/outbox answers counts by status and topic, the oldest due age and readOnly`, async () => {
    await withAdmin(make, { basePath: "/admin" }, async (admin, { ids }) => {
      const response = await admin("/admin/api/outbox");
      assert.equal(response.status, 200);
      assert.match(response.headers.get("content-type")!, /^application\/json/);
      assert.equal(response.headers.get("cache-control"), "no-store");
      assert.equal(response.headers.get("x-content-type-options"), "nosniff");
      assert.equal(response.headers.get("referrer-policy"), "no-referrer");
      const stats = await response.json();
      assert.equal(stats.pending, ids.pending.length);
      assert.equal(stats.processing, 0);
      assert.equal(stats.published, ids.published.length);
      assert.equal(stats.dead, ids.dead.length);
      assert.equal(stats.readOnly, true);
      assert.equal(typeof stats.oldestPendingAt, "string", "due-1 waits");
      assert.ok(stats.oldestPendingAgeMs >= 0);
      assert.deepEqual(stats.topics["orders.created"], { pending: 2, processing: 0, published: 3, dead: 0 });
      assert.deepEqual(stats.topics["bad.topic"], { pending: 0, processing: 0, published: 0, dead: 5 });
      assert.equal(stats.topics[XSS[0]!].dead, 1, "a topic is a key of the JSON, as it is");
      assert.deepEqual(stats.destinations, { "": counts(2, 0, 3, 7) }, "one publisher: the default destination");
    });
  });

  test(`admin ${name}: GET api/messages pages through dead messages with the next cursor`, async () => {
    await withAdmin(make, { basePath: "/admin" }, async (admin, { ids }) => {
      const seen: AdminMessage[] = [];
      let after: number | null = null;
      let pages = 0;
      do {
        const { status, body } = await admin.get(
          `/admin/api/messages?status=dead&limit=3${after ? `&after=${after}` : ""}`,
        );
        assert.equal(status, 200);
        assert.ok(body.messages.length <= 3);
        seen.push(...body.messages);
        after = body.next;
        pages++;
        if (after !== null) assert.equal(after, body.messages.at(-1).seq, "next is the last row's seq");
      } while (after !== null && pages < 10);
      assert.equal(pages, 3, "7 dead messages in pages of 3");
      assert.deepEqual(seen.map((m) => m.id), ids.dead, "every dead message once, in enqueue order");
      assert.ok(seen.every((m, i) => i === 0 || m.seq > seen[i - 1]!.seq));
      const bad = seen[0]!;
      assert.equal(bad.status, "dead");
      assert.equal(bad.destination, "");
      assert.equal(bad.topic, "bad.topic");
      assert.equal(bad.attempts, 1);
      assert.match(bad.lastError!, /broker refused bad\.topic/);
      assert.match(bad.createdAt!, /^\d{4}-\d\d-\d\dT/);
      assert.match(bad.settledAt!, /^\d{4}-\d\d-\d\dT/);
      assert.deepEqual(bad.payload, { encoding: "text", size: 7, preview: '{"n":1}', truncated: false });

      const exact = await admin.get("/admin/api/messages?status=dead&limit=7");
      assert.equal(exact.body.messages.length, 7);
      assert.equal(exact.body.next, null, "no empty last page when the rows fit exactly");
      const defaults = await admin.get("/admin/api/messages");
      assert.equal(defaults.body.messages.length, 12, "no filter: every row (default limit 50)");
    });
  });

  test(`admin ${name}: GET api/messages filters by status, topic and key`, async () => {
    await withAdmin(make, { basePath: "/admin" }, async (admin, { ids }) => {
      const ofQuery = async (query: string) =>
        (await admin.get(`/admin/api/messages?${query}`)).body.messages.map((m: AdminMessage) => m.id);
      assert.deepEqual(await ofQuery("status=published"), ids.published);
      assert.deepEqual(await ofQuery("status=pending"), ids.pending);
      assert.deepEqual(await ofQuery("topic=bad.topic&key=k-odd"), ["bad-1", "bad-3", "bad-5"]);
      assert.deepEqual(await ofQuery(`topic=${encodeURIComponent(XSS[0]!)}`), ["xss-1"]);
      assert.deepEqual(await ofQuery("topic=nothing.here"), []);
      const [later] = (await admin.get("/admin/api/messages?status=pending&limit=1")).body.messages;
      assert.equal(later.id, "later-1");
      assert.ok(Date.parse(later.deliverAt) > Date.now(), "a scheduled message shows its deliverAt");
    });
  });

  test(`admin ${name}: hostile topics, keys, payloads, headers and errors come back as JSON data, unchanged`, async () => {
    await withAdmin(make, { basePath: "/admin" }, async (admin) => {
      const { body } = await admin.get(`/admin/api/messages?topic=${encodeURIComponent(XSS[0]!)}`);
      const [m] = body.messages;
      assert.equal(m.topic, XSS[0]);
      assert.equal(m.key, XSS[2]);
      assert.deepEqual(m.headers, { "x-note": XSS[1] });
      assert.equal(JSON.parse(m.payload.preview).html, XSS.join(" "));
      assert.ok(m.lastError.includes(XSS[0]!) && m.lastError.includes(XSS[1]!));
      const bytes = (await admin.get("/admin/api/messages?topic=bad.bytes")).body.messages[0];
      assert.deepEqual(bytes.payload, { encoding: "base64", size: 6, preview: "AAEC/f7/", truncated: false });
    });
  });

  test(`admin ${name}: requeue and purge answer their counts and change the outbox`, async () => {
    await withAdmin(make, writable, async (admin, { outbox }) => {
      let r = await admin.post("/admin/api/requeue", { ids: ["bad-1", "ok-1", "no-such-id"] });
      assert.deepEqual(r, { status: 200, body: { requeued: 1 } }, "only the dead one of the ids (status dead)");
      assert.equal((await outbox.stats()).dead, 6);
      r = await admin.post("/admin/api/requeue", { status: "published", ids: ["ok-1"] });
      assert.deepEqual(r.body, { requeued: 1 });
      r = await admin.post("/admin/api/purge", {
        status: "dead",
        topic: "bad.topic",
        ids: ["bad-2", "bad-3", "xss-1"],
      });
      assert.deepEqual(r.body, { purged: 2 }, "ids and topic both apply");
      r = await admin.post("/admin/api/purge", { status: "published", olderThanMs: 3_600_000 });
      assert.deepEqual(r.body, { purged: 0 }, "nothing published an hour ago");
      r = await admin.post("/admin/api/purge", { status: "published" });
      assert.deepEqual(r.body, { purged: 2 });
      r = await admin.post("/admin/api/requeue", { topic: "bad.topic" });
      assert.deepEqual(r.body, { requeued: 2 }, "bad-4, bad-5: status defaults to dead");
      r = await admin.post("/admin/api/purge", { status: "dead" });
      assert.deepEqual(r.body, { purged: 2 }, "all dead: xss-1 and bytes-1");
      const stats = await outbox.stats();
      assert.deepEqual([stats.pending, stats.published, stats.dead], [2 + 1 + 1 + 2, 0, 0]);
    });
  });
}

for (const [name, make] of fanOutStorages) {
  test(`admin ${name}: fan-out: api/outbox counts per destination, api/messages filters by destination`, async () => {
    await withAdmin(make, { basePath: "/admin" }, async (admin) => {
      const { body: stats } = await admin.get("/admin/api/outbox");
      assert.deepEqual(stats.destinations, {
        "": counts(2, 0, 3, 7),
        nats: counts(0, 0, 4, 0),
        hooks: counts(0, 0, 0, 3),
      });
      assert.deepEqual([stats.pending, stats.published, stats.dead], [2, 7, 10], "counts are rows");
      const of = async (query: string) =>
        (await admin.get(`/admin/api/messages?${query}`)).body.messages.map((m: AdminMessage) =>
          `${m.id}@${m.destination}`
        );
      assert.deepEqual(await of("destination=hooks"), ["fan-1@hooks", "fan-2@hooks", "fan-xss@hooks"]);
      assert.deepEqual(await of("destination=nats&status=published&key=o-2"), ["fan-2@nats"]);
      assert.deepEqual(await of("destination=nowhere"), []);
      const byDefault = await of("destination=");
      assert.equal(byDefault.length, 12, "destination= (empty): the one publisher's rows only");
      assert.ok(byDefault.every((m: string) => m.endsWith("@")), byDefault.join(" "));
      const any = await of("topic=orders.shipped");
      assert.deepEqual(any, ["fan-1@nats", "fan-1@hooks", "fan-2@nats", "fan-2@hooks"], "no destination: any");
      const [hostile] = (await admin.get(`/admin/api/messages?destination=hooks&key=${encodeURIComponent(XSS[2]!)}`))
        .body.messages;
      assert.equal(hostile.topic, XSS[0], "a hostile topic of a destination's row comes back as it is");
      assert.ok(hostile.lastError.includes(XSS[0]!));
      const refused = await admin.get("/admin/api/messages?destination=(default)");
      assert.equal(refused.status, 400);
      assert.match(refused.body.error, /destination must be a name .*or empty for the default destination/);
    });
  });

  test(`admin ${name}: fan-out: requeue and purge take a destination in their body`, async () => {
    await withAdmin(make, writable, async (admin, { outbox }) => {
      const stats = async () => (await outbox.stats()).destinations;
      let r = await admin.post("/admin/api/requeue", { status: "published", ids: ["fan-1"], destination: "nats" });
      assert.deepEqual(r.body, { requeued: 1 }, "fan-1's nats row, not its hooks row");
      assert.deepEqual((await stats())!.nats, counts(1, 0, 3, 0));
      assert.deepEqual((await stats())!.hooks, counts(0, 0, 0, 3));
      r = await admin.post("/admin/api/requeue", { ids: ["fan-2"], destination: "hooks" });
      assert.deepEqual(r.body, { requeued: 1 });
      r = await admin.post("/admin/api/purge", { status: "dead", destination: "" });
      assert.deepEqual(r.body, { purged: 7 }, 'destination "": the one publisher\'s dead rows');
      assert.deepEqual((await stats())!.hooks, counts(1, 0, 0, 2), "hooks' dead rows stay");
      r = await admin.post("/admin/api/purge", { status: "dead", destination: "nats" });
      assert.deepEqual(r.body, { purged: 0 });
      r = await admin.post("/admin/api/purge", { status: "dead", destination: "hooks", topic: XSS[0] });
      assert.deepEqual(r.body, { purged: 1 });
      r = await admin.post("/admin/api/requeue", { status: "dead" });
      assert.deepEqual(r.body, { requeued: 1 }, "no destination: any (fan-1's hooks row)");
      assert.deepEqual(await stats(), {
        "": counts(2, 0, 3, 0),
        nats: counts(1, 0, 3, 0),
        hooks: counts(2, 0, 0, 0),
      });
    });
  });
}

test("admin: read-only by default: requeue and purge answer 403 with a reason, and change nothing", async () => {
  await withAdmin(() => libsqlFixture(), {}, async (admin, { outbox }) => {
    for (const path of ["/api/requeue", "/api/purge"]) {
      const r = await admin.post(path, { status: "dead" });
      assert.equal(r.status, 403);
      assert.match(r.body.error, /read-only/);
    }
    assert.equal((await outbox.stats()).dead, 7);
    assert.throws(
      () => createAdminHandler(outbox, { readOnly: false }),
      (e: unknown) => e instanceof OutboxConfigError && e.path === "authorize" && /authorize/.test(e.message),
    );
    assert.throws(() => createAdminHandler(outbox, { basePath: "admin" }), OutboxConfigError);
  });
});

test("admin: authorize sees each request with its access; false is 401, a Response is sent as is", async () => {
  const calls: string[] = [];
  await withAdmin(() => libsqlFixture(), {
    basePath: "/ops/outbox",
    readOnly: false,
    authorize(request, access) {
      calls.push(`${access} ${new URL(request.url).pathname}`);
      const token = request.headers.get("authorization");
      if (token === "Bearer reader") return access === "read" ? true : new Response("no", { status: 403 });
      return Promise.resolve(token === "Bearer admin");
    },
  }, async (admin, { outbox }) => {
    assert.equal((await admin.get("/ops/outbox/api/outbox")).status, 401);
    assert.deepEqual((await admin.get("/ops/outbox/api/messages")).body, { error: "Not authorized" });
    assert.equal((await admin("/ops/outbox/")).status, 401, "the page too");
    const reader = { authorization: "Bearer reader" };
    assert.equal((await admin("/ops/outbox/api/outbox", { headers: reader })).status, 200);
    const refused = await admin("/ops/outbox/api/requeue", {
      method: "POST",
      headers: { ...reader, "content-type": "application/json", origin: ORIGIN },
      body: "{}",
    });
    assert.equal(refused.status, 403);
    assert.equal(await refused.text(), "no");
    assert.equal((await admin.post("/ops/outbox/api/requeue", {})).status, 401);
    const ok = await admin.post("/ops/outbox/api/requeue", { ids: ["bad-1"] }, { authorization: "Bearer admin" });
    assert.deepEqual(ok, { status: 200, body: { requeued: 1 } });
    assert.equal((await outbox.stats()).dead, 6);
    assert.deepEqual(calls.slice(0, 4), [
      "read /ops/outbox/api/outbox",
      "read /ops/outbox/api/messages",
      "read /ops/outbox/",
      "read /ops/outbox/api/outbox",
    ]);
    assert.equal(calls[4], "write /ops/outbox/api/requeue");
  });
});

test("admin: cross-site requests cannot mutate: foreign Origin or Sec-Fetch-Site 403, non-JSON 415", async () => {
  await withAdmin(
    () => libsqlFixture(),
    { ...writable, allowedOrigins: ["https://ops.example"] },
    async (admin, { outbox }) => {
      const evil = await admin.post("/admin/api/purge", { status: "dead" }, { origin: "https://evil.example" });
      assert.equal(evil.status, 403);
      assert.match(evil.body.error, /Origin/);
      const nullOrigin = await admin.post("/admin/api/purge", { status: "dead" }, { origin: "null" });
      assert.equal(nullOrigin.status, 403, "a sandboxed frame's Origin: null");
      const crossSite = await admin.post("/admin/api/purge", { status: "dead" }, { "sec-fetch-site": "cross-site" });
      assert.equal(crossSite.status, 403);
      for (const type of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""]) {
        const r = await admin.post("/admin/api/purge", JSON.stringify({ status: "dead" }), { "content-type": type });
        assert.equal(r.status, 415, `content-type ${JSON.stringify(type)}`);
      }
      assert.equal((await outbox.stats()).dead, 7, "nothing was purged");
      const proxied = await admin.post("/admin/api/requeue", { ids: ["bad-1"] }, { origin: "https://ops.example" });
      assert.deepEqual(proxied.body, { requeued: 1 }, "an allowed origin (a TLS proxy in front)");
      const noOrigin = await admin("/admin/api/requeue", {
        method: "POST",
        headers: { "content-type": "application/json; charset=utf-8" },
        body: JSON.stringify({ ids: ["bad-2"] }),
      });
      assert.equal(noOrigin.status, 200, "curl sends no Origin");
    },
  );
});

test("admin: bad query parameters and bodies answer 400 with a reason; big bodies 413", async () => {
  await withAdmin(() => libsqlFixture(), writable, async (admin) => {
    for (
      const query of [
        "limit=0",
        "limit=501",
        "limit=abc",
        "limit=1.5",
        "after=-1",
        "after=x",
        "status=gone",
        "topic=",
        "limit=1&limit=2",
        "sort=seq",
        "destination=a%20b",
        "destination=(default)",
        `destination=${"x".repeat(65)}`,
        `destination=${encodeURIComponent(XSS[0]!)}`,
        "destination=a&destination=b",
      ]
    ) {
      const r = await admin.get(`/admin/api/messages?${query}`);
      assert.equal(r.status, 400, query);
      assert.equal(typeof r.body.error, "string", query);
    }
    assert.equal((await admin.get("/admin/api/messages?limit=500&after=0")).status, 200);
    const bodies: unknown[] = [
      "not json",
      "[1]",
      "null",
      { status: "pending" },
      { ids: "bad-1" },
      { ids: [] },
      { ids: [1] },
      { ids: Array.from({ length: 1001 }, (_, i) => `id-${i}`) },
      { topic: 5 },
      { unknown: true },
      { destination: 5 },
      { destination: null },
      { destination: "a b" },
      { destination: "x".repeat(65) },
    ];
    for (const body of bodies) {
      const r = await admin.post("/admin/api/requeue", body);
      assert.equal(r.status, 400, JSON.stringify(body).slice(0, 60));
      assert.equal(typeof r.body.error, "string");
    }
    for (
      const body of [
        {},
        { status: "dead", olderThanMs: -1 },
        { status: "dead", olderThanMs: "1d" },
        { status: "dead", destination: "(default)" },
      ]
    ) {
      assert.equal((await admin.post("/admin/api/purge", body)).status, 400, JSON.stringify(body));
    }
    const thousand = await admin.post("/admin/api/requeue", { ids: Array.from({ length: 1000 }, (_, i) => `i${i}`) });
    assert.deepEqual(thousand.body, { requeued: 0 }, "1000 ids is within the limit");
    const big = await admin.post("/admin/api/requeue", { ids: ["x".repeat(70_000)] });
    assert.equal(big.status, 413);
  });
});

test("admin: unknown paths answer 404 JSON, wrong methods 405 with Allow", async () => {
  await withAdmin(() => libsqlFixture(), { basePath: "/admin/" }, async (admin) => {
    for (const path of ["/admin/api/nope", "/admin/api", "/admin/api/outbox/", "/adminx", "/", "/other/api/outbox"]) {
      const r = await admin.get(path);
      assert.deepEqual(r, { status: 404, body: { error: "Not found" } }, path);
    }
    const post = await admin("/admin/api/outbox", { method: "POST" });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET, HEAD");
    const get = await admin("/admin/api/purge");
    assert.equal(get.status, 405);
    assert.equal(get.headers.get("allow"), "POST");
    assert.equal((await admin("/admin/", { method: "DELETE" })).status, 405);
    const head = await admin("/admin/api/outbox", { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), "");
  });
});

test("admin: an outbox error answers 500 with a safe message and reaches onError", async () => {
  const errors: unknown[] = [];
  const failing: AdminOutbox = {
    stats: () => Promise.reject(new Error("connection to 10.0.0.5 failed: password authentication failed")),
    inspect: () => Promise.reject(new Error("boom")),
    requeue: () => Promise.resolve(0),
    purge: () => Promise.resolve(0),
  };
  const admin = client(createAdminHandler(failing, { onError: (error) => errors.push(error) }));
  for (const path of ["/api/outbox", "/api/messages"]) {
    const r = await admin(path);
    assert.equal(r.status, 500);
    const text = await r.text();
    assert.doesNotMatch(text, /10\.0\.0\.5|password|boom|\bat \S+:\d+/);
    assert.match(JSON.parse(text).error, /Internal error/);
  }
  assert.equal(errors.length, 2);
});

test("admin: the dashboard is one self-contained page under a strict nonce CSP, at basePath and basePath/", async () => {
  await withAdmin(() => libsqlFixture(), { basePath: "/admin" }, async (admin) => {
    for (const path of ["/admin", "/admin/"]) {
      const response = await admin(path);
      assert.equal(response.status, 200);
      assert.match(response.headers.get("content-type")!, /^text\/html; charset=utf-8/);
      const csp = response.headers.get("content-security-policy")!;
      const nonce = /script-src 'nonce-([A-Za-z0-9+/=]+)'/.exec(csp)?.[1];
      assert.ok(nonce, csp);
      for (
        const directive of [
          "default-src 'none'",
          `style-src 'nonce-${nonce}'`,
          "connect-src 'self'",
          "base-uri 'none'",
          "form-action 'none'",
          "frame-ancestors 'none'",
        ]
      ) {
        assert.ok(csp.includes(directive), directive);
      }
      assert.doesNotMatch(csp, /unsafe/);
      assert.equal(response.headers.get("x-content-type-options"), "nosniff");
      assert.equal(response.headers.get("referrer-policy"), "no-referrer");
      const html = await response.text();
      assert.equal(html.match(/<script/g)?.length, 1, "one script");
      assert.ok(html.includes(`<script nonce="${nonce}">`));
      assert.ok(html.includes(`<style nonce="${nonce}">`));
      assert.doesNotMatch(html, /innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/);
      assert.doesNotMatch(html, /https?:\/\//, "nothing from elsewhere");
    }
    const nonces = await Promise.all(
      [1, 2].map(async () =>
        /'nonce-([^']+)'/.exec((await admin("/admin/")).headers.get("content-security-policy")!)?.[1]
      ),
    );
    assert.notEqual(nonces[0], nonces[1], "a fresh nonce per response");
  });
});

test(`admin over a real ${runtime === "bun" ? "Bun.serve" : "Deno.serve"}: the page, the API and a requeue`, async () => {
  if (runtime === "node") return;
  const fixture = await libsqlFixture();
  const admin = createAdminHandler(fixture.outbox, {
    basePath: "/admin",
    readOnly: false,
    authorize: (request) => request.headers.get("cookie") === "outbox_admin=yes",
  });
  // deno-lint-ignore no-explicit-any
  const g = globalThis as any;
  let url: string;
  let stop: () => Promise<void>;
  if (runtime === "bun") {
    const server = g.Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: admin });
    url = `http://127.0.0.1:${server.port}`;
    stop = async () => void (await server.stop(true));
  } else {
    const server = g.Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, admin);
    url = `http://127.0.0.1:${server.addr.port}`;
    stop = () => server.shutdown();
  }
  try {
    const cookie = { cookie: "outbox_admin=yes" };
    const page = await fetch(`${url}/admin`, { headers: cookie });
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<title>Outbox<\/title>/);
    const stats = await (await fetch(`${url}/admin/api/outbox`, { headers: cookie })).json();
    assert.equal(stats.dead, 7);
    assert.equal(stats.readOnly, false);
    const denied = await fetch(`${url}/admin/api/outbox`);
    assert.equal(denied.status, 401);
    await denied.body?.cancel();
    const requeue = await fetch(`${url}/admin/api/requeue`, {
      method: "POST",
      headers: { ...cookie, "content-type": "application/json", origin: url },
      body: JSON.stringify({ ids: ["bad-2"] }),
    });
    assert.deepEqual(await requeue.json(), { requeued: 1 });
    const foreign = await fetch(`${url}/admin/api/purge`, {
      method: "POST",
      headers: { ...cookie, "content-type": "application/json", origin: "http://localhost:1" },
      body: JSON.stringify({ status: "dead" }),
    });
    assert.equal(foreign.status, 403);
    await foreign.body?.cancel();
    const missing = await fetch(`${url}/elsewhere`, { headers: cookie });
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    assert.equal((await fixture.outbox.stats()).dead, 6);
  } finally {
    await stop();
    await fixture.close();
  }
});
