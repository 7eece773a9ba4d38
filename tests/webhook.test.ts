/**
 * The webhook publisher against a real local HTTP server (node:http on a free port):
 * the publisher conformance suite, Standard Webhooks signatures checked on the
 * receiving side with `verifyWebhook` (the spec's test vector, key rotation, tampering),
 * headers, answers and options.
 */

import assert from "node:assert/strict";
import { isPermanentError, type OutboxRecord, type PublishContext } from "../mod.ts";
import {
  generateWebhookSecret,
  parseRetryAfter,
  signWebhook,
  verifyWebhook,
  verifyWebhookOrThrow,
  webhookPublisher,
  WebhookVerificationError,
} from "../adapters/webhook/mod.ts";
import { publisherConformance, type StoredMessage } from "./conformance/publisher.ts";
import { test } from "./harness.ts";
import { startReceiver } from "./webhook_helpers.ts";

const decoder = new TextDecoder();
const context: PublishContext = { signal: new AbortController().signal };

publisherConformance("webhook", async () => {
  // Topics are paths; a topic no path serves answers 404, as a real endpoint would.
  const r = await startReceiver((req) =>
    req.path.startsWith("/hooks/") ? { status: 204 } : req.path.startsWith("/slow/") ? "hang" : {
      status: 404,
      body: "no route for this topic",
    }
  );
  return {
    publisher: webhookPublisher({ url: (m) => `${r.url}/${m.topic}` }),
    topic: "hooks/orders",
    unroutableTopic: "nowhere",
    dedup: false,
    async read(): Promise<StoredMessage[]> {
      return r.stored.map((s) => ({
        id: s.headers["webhook-id"] ?? null,
        subject: s.path,
        headers: s.headers,
        data: s.body,
      }));
    },
    async timingOut() {
      return webhookPublisher({ url: `${r.url}/slow/x`, timeoutMs: 150 });
    },
    close: r.close,
  };
});

let n = 0;
function record(fields: Partial<OutboxRecord> = {}): OutboxRecord {
  const payload = fields.payload ?? { n: ++n };
  return {
    id: `wh-${Date.now().toString(36)}-${n++}`,
    seq: n,
    topic: "orders.created",
    key: null,
    payload,
    body: JSON.stringify(payload),
    headers: {},
    attempts: 1,
    createdAt: new Date(),
    ...fields,
  };
}

// The test vector published with the Standard Webhooks reference libraries.
const VECTOR = {
  secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
  timestamp: 1614265330,
  body: '{"test": 2432232314}',
  signature: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
};

test("webhook: signWebhook and verifyWebhook reproduce the Standard Webhooks test vector", async () => {
  const { secret, id, timestamp, body, signature } = VECTOR;
  assert.equal(await signWebhook({ secret, id, timestamp, body }), signature);
  const headers = { "webhook-id": id, "webhook-timestamp": String(timestamp), "webhook-signature": signature };
  assert.equal(await verifyWebhook({ secret, headers, body, now: timestamp * 1000 }), true);
  assert.equal(
    await verifyWebhook({ secret, headers, body: new TextEncoder().encode(body), now: timestamp * 1000 }),
    true,
  );
  // Another scheme's entry (v1a) before it is skipped; a forged v1 entry does not spoil a good one.
  const several = { ...headers, "webhook-signature": `v1a,AAAA v1,${btoa("x".repeat(32))} ${signature}` };
  assert.equal(await verifyWebhook({ secret, headers: several, body, now: timestamp * 1000 }), true);
  // The default tolerance is 5 minutes, either way.
  assert.equal(await verifyWebhook({ secret, headers, body, now: (timestamp + 300) * 1000 }), true);
  assert.equal(await verifyWebhook({ secret, headers, body, now: (timestamp + 301) * 1000 }), false);
  assert.equal(await verifyWebhook({ secret, headers, body, now: (timestamp - 301) * 1000 }), false);
  assert.equal(
    await verifyWebhook({ secret, headers, body: VECTOR.body.replace("2", "3"), now: timestamp * 1000 }),
    false,
  );
});

test("webhook: verifyWebhookOrThrow says why a request is not genuine", async () => {
  const { secret, id, timestamp, body, signature } = VECTOR;
  const now = timestamp * 1000;
  const good = new Headers({
    "webhook-id": id,
    "webhook-timestamp": String(timestamp),
    "webhook-signature": signature,
  });
  assert.deepEqual(await verifyWebhookOrThrow({ secret, headers: good, body, now }), { id, timestamp });
  const reason = async (headers: Headers, options: { now?: number; body?: string; toleranceSec?: number } = {}) => {
    try {
      await verifyWebhookOrThrow({ secret, headers, body: options.body ?? body, now: options.now ?? now, ...options });
      return "ok";
    } catch (error) {
      assert.ok(error instanceof WebhookVerificationError, String(error));
      return error.reason;
    }
  };
  const without = (name: string) => {
    const h = new Headers(good);
    h.delete(name);
    return h;
  };
  const with_ = (name: string, value: string) => {
    const h = new Headers(good);
    h.set(name, value);
    return h;
  };
  assert.equal(await reason(without("webhook-signature")), "missing-header");
  assert.equal(await reason(without("webhook-id")), "missing-header");
  assert.equal(await reason(with_("webhook-id", "a.b")), "invalid-id");
  assert.equal(await reason(with_("webhook-timestamp", "12a")), "invalid-timestamp");
  assert.equal(await reason(good, { now: now + 3_600_000 }), "too-old");
  assert.equal(await reason(good, { now: now - 3_600_000 }), "too-new");
  assert.equal(await reason(good, { now: now + 10_000, toleranceSec: 5 }), "too-old");
  assert.equal(await reason(with_("webhook-signature", "v1a,abc v2,def")), "no-signature");
  assert.equal(await reason(good, { body: body + " " }), "no-match");
  // The signed timestamp is another: the signature no longer matches.
  assert.equal(await reason(with_("webhook-timestamp", String(timestamp + 1))), "no-match");
  assert.equal(await reason(with_("webhook-id", "msg_other")), "no-match");
  // A malformed secret is the receiver's configuration, not the request: it throws.
  await assert.rejects(
    () => verifyWebhook({ secret: "not-a-secret", headers: good, body, now }),
    (e: unknown) => (e as Error).name === "OutboxConfigError" && !String(e).includes("not-a-secret"),
  );
  await assert.rejects(() => verifyWebhook({ secrets: [], headers: good, body, now }), /at least one/);
});

test("webhook: signed requests verify on the receiver, through key rotation; a tampered body or timestamp does not", async () => {
  const [oldSecret, newSecret, stranger] = [generateWebhookSecret(), generateWebhookSecret(), generateWebhookSecret()];
  assert.match(oldSecret, /^whsec_[A-Za-z0-9+/]{43}=$/);
  const r = await startReceiver();
  try {
    // During a rotation the sender signs with both; receivers know one, the other or both.
    const publisher = webhookPublisher({ url: `${r.url}/hooks`, secret: [newSecret, oldSecret] });
    const message = record({ payload: { order: "o-1" }, body: '{"order":"o-1"}' });
    await publisher.publish(message, context);
    const got = r.requests[0]!;
    assert.equal(got.method, "POST");
    assert.equal(got.headers["webhook-id"], message.id);
    assert.match(got.headers["webhook-timestamp"]!, /^\d+$/);
    assert.ok(Math.abs(Number(got.headers["webhook-timestamp"]) - Date.now() / 1000) < 5);
    const entries = got.headers["webhook-signature"]!.split(" ");
    assert.equal(entries.length, 2, "one v1 entry per secret");
    assert.ok(entries.every((e) => /^v1,[A-Za-z0-9+/]{43}=$/.test(e)));
    assert.equal(decoder.decode(got.body), '{"order":"o-1"}');
    const verify = (secret: string | string[], fields: { body?: Uint8Array; headers?: Record<string, string> } = {}) =>
      verifyWebhook({ secret, headers: { ...got.headers, ...fields.headers }, body: fields.body ?? got.body });
    assert.equal(await verify(oldSecret), true, "a receiver still on the old secret accepts");
    assert.equal(await verify(newSecret), true, "a receiver already on the new secret accepts");
    assert.equal(await verify([stranger, newSecret]), true, "a receiver with several secrets accepts");
    assert.equal(await verify(stranger), false, "another endpoint's secret does not verify");
    assert.equal(
      await verify(newSecret, { body: new TextEncoder().encode('{"order":"o-2"}') }),
      false,
      "tampered body",
    );
    const ts = String(Number(got.headers["webhook-timestamp"]) - 1);
    assert.equal(await verify(newSecret, { headers: { "webhook-timestamp": ts } }), false, "tampered timestamp");
    assert.equal(await verify(newSecret, { headers: { "webhook-id": "other" } }), false, "tampered id");

    // Without a secret: the id and the timestamp, no signature.
    await webhookPublisher({ url: `${r.url}/hooks` }).publish(record(), context);
    assert.equal(r.requests[1]!.headers["webhook-signature"], undefined);
    assert.ok(r.requests[1]!.headers["webhook-id"]);
  } finally {
    await r.close();
  }
});

test("webhook: bytes go as application/octet-stream and are signed as sent; a body function's output is what is signed", async () => {
  const secret = generateWebhookSecret();
  const r = await startReceiver();
  try {
    const bytes = new Uint8Array([0, 1, 2, 255, 46]);
    await webhookPublisher({ url: r.url, secret }).publish(record({ payload: bytes, body: bytes }), context);
    const raw = r.requests[0]!;
    assert.equal(raw.headers["content-type"], "application/octet-stream");
    assert.deepEqual([...raw.body], [...bytes]);
    assert.equal(await verifyWebhook({ secret, headers: raw.headers, body: raw.body }), true);

    const envelope = webhookPublisher({
      url: r.url,
      secret,
      body: (m) => JSON.stringify({ type: m.topic, data: m.payload, note: "é ✓" }),
    });
    await envelope.publish(record({ payload: { a: 1 } }), context);
    const wrapped = r.requests[1]!;
    assert.equal(wrapped.headers["content-type"], "application/json");
    assert.deepEqual(JSON.parse(decoder.decode(wrapped.body)), { type: "orders.created", data: { a: 1 }, note: "é ✓" });
    assert.equal(await verifyWebhook({ secret, headers: wrapped.headers, body: decoder.decode(wrapped.body) }), true);
  } finally {
    await r.close();
  }
});

test("webhook: header precedence is content-type default < message headers < options.headers; webhook-* are the publisher's", async () => {
  const r = await startReceiver();
  try {
    const publisher = webhookPublisher({
      url: r.url,
      headers: { authorization: "Bearer t", "x-env": "prod" },
    });
    await publisher.publish(
      record({
        id: "hdr-1",
        headers: {
          "content-type": "application/cloudevents+json",
          "x-env": "from-message",
          traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
          "Webhook-Id": "forged",
        },
      }),
      context,
    );
    const h = r.requests[0]!.headers;
    assert.equal(h["content-type"], "application/cloudevents+json", "the message's content-type beats the default");
    assert.equal(h["x-env"], "prod", "options.headers beat the message's");
    assert.equal(h["authorization"], "Bearer t");
    assert.equal(h["traceparent"], "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert.equal(h["webhook-id"], "hdr-1", "a message header cannot replace webhook-id");

    // Per-message headers from a function.
    const perMessage = webhookPublisher({ url: r.url, headers: (m) => ({ "x-topic": m.topic }) });
    await perMessage.publish(record(), context);
    assert.equal(r.requests[1]!.headers["x-topic"], "orders.created");
  } finally {
    await r.close();
  }
});

test("webhook: answers are classified: 2xx ok, 408/429/5xx transient, 3xx and other 4xx permanent with status and excerpt", async () => {
  const answers: Record<string, { status: number; headers?: Record<string, string>; body?: string }> = {
    "/200": { status: 200, body: "ok" },
    "/202": { status: 202 },
    "/301": { status: 301, headers: { location: "https://elsewhere.example/hooks" } },
    "/400": { status: 400, body: '{"error":"missing field total"}' },
    "/401": { status: 401, body: "bad token" },
    "/408": { status: 408 },
    "/410": { status: 410, body: "gone" },
    "/413": { status: 413, body: "x".repeat(5_000) },
    "/429": { status: 429, headers: { "retry-after": "7" }, body: "slow down" },
    "/500": { status: 500, body: "boom" },
    "/503": { status: 503, headers: { "retry-after": "Wed, 21 Oct 2065 07:28:00 GMT" } },
  };
  const r = await startReceiver((req) => answers[req.path.split("?")[0]!] ?? { status: 404 });
  try {
    const publisher = webhookPublisher({ url: (m) => `${r.url}/${m.topic}?token=secret-token` });
    const outcome = async (status: string) => {
      try {
        await publisher.publish(record({ topic: status }), context);
        return "ok";
      } catch (error) {
        return error as Error & { permanent?: boolean; retryAfterMs?: number };
      }
    };
    assert.equal(await outcome("200"), "ok");
    assert.equal(await outcome("202"), "ok");
    for (const status of ["408", "429", "500", "503"]) {
      const e = await outcome(status);
      assert.ok(e !== "ok" && !isPermanentError(e), `${status} is transient`);
      assert.match(e.message, new RegExp(`answered ${status}`));
      assert.match(e.message, /transient/);
    }
    for (const status of ["301", "400", "401", "410", "413"]) {
      const e = await outcome(status);
      assert.ok(e !== "ok" && isPermanentError(e), `${status} is permanent`);
      assert.match(e.message, new RegExp(status));
    }
    const e400 = await outcome("400") as Error;
    assert.match(e400.message, /refused the message with 400 Bad Request: "\{\\"error\\":\\"missing field total\\"\}"/);
    assert.doesNotMatch(e400.message, /secret-token/, "the query (which may hold a token) stays out of lastError");
    assert.match((await outcome("410") as Error).message, /410 Gone.*no more webhooks/);
    assert.match(
      (await outcome("301") as Error).message,
      /301 Moved Permanently to "https:\/\/elsewhere\.example\/hooks": redirects are not followed/,
    );
    assert.ok((await outcome("413") as Error).message.length < 400, "only an excerpt of a long answer is kept");
    const e429 = await outcome("429") as { retryAfterMs?: number; message: string };
    assert.equal(e429.retryAfterMs, 7_000);
    assert.match(e429.message, /"slow down" \(transient, Retry-After 7 s\)/);
    const e503 = await outcome("503") as { retryAfterMs?: number };
    assert.ok(e503.retryAfterMs! > 1_000_000_000, "an HTTP date is turned into ms from now");
    assert.equal((await outcome("500") as { retryAfterMs?: number }).retryAfterMs, undefined);
  } finally {
    await r.close();
  }
});

test("webhook: an unreachable receiver is transient; bad options and bad messages are named", async () => {
  const r = await startReceiver();
  const url = r.url;
  await r.close();
  await assert.rejects(
    () => webhookPublisher({ url: `${url}/gone` }).publish(record(), context),
    (e: unknown) => !isPermanentError(e) && /unreachable.*transient/.test(String(e)),
  );
  const config = (options: unknown, path: RegExp) =>
    assert.throws(
      () => webhookPublisher(options as never),
      (e: unknown) => (e as Error).name === "OutboxConfigError" && path.test((e as { path: string }).path),
    );
  config({}, /^url$/);
  config({ url: "not a url" }, /^url$/);
  config({ url: "ftp://x.example/" }, /^url$/);
  config({ url, secret: "whsec_short" }, /^secret$/);
  config({ url, secret: "plain-password-123456789012345678" }, /^secret$/);
  config({ url, secret: [generateWebhookSecret(), "whsec_!!"] }, /^secret\[1\]$/);
  config({ url, headers: { "webhook-signature": "x" } }, /^headers\.webhook-signature$/);
  config({ url, headers: { "bad name": "x" } }, /^headers$/);
  config({ url, timeoutMs: 0 }, /^timeoutMs$/);
  config({ url, retries: 3 }, /^retries$/);

  const signed = webhookPublisher({ url: "http://127.0.0.1:9/", secret: generateWebhookSecret() });
  await assert.rejects(
    () => signed.publish(record({ id: "a.b" }), context),
    (e: unknown) => isPermanentError(e) && /contains "\."/.test(String(e)),
  );
  const badUrl = webhookPublisher({ url: () => "nope" });
  await assert.rejects(() => badUrl.publish(record(), context), (e: unknown) => isPermanentError(e));
  const badHeader = webhookPublisher({ url: "http://127.0.0.1:9/" });
  await assert.rejects(
    () => badHeader.publish(record({ headers: { "x-bad": "line\nbreak" } }), context),
    (e: unknown) => isPermanentError(e) && /header/.test(String(e)),
  );
});

test("webhook: parseRetryAfter reads seconds and HTTP dates, and ignores the rest", () => {
  const now = Date.parse("2025-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("120", now), 120_000);
  assert.equal(parseRetryAfter(" 0 ", now), 0);
  assert.equal(parseRetryAfter("Wed, 01 Jan 2025 00:00:30 GMT", now), 30_000);
  assert.equal(parseRetryAfter("Tue, 31 Dec 2024 00:00:00 GMT", now), 0, "a past date means now");
  assert.equal(parseRetryAfter(null, now), undefined);
  assert.equal(parseRetryAfter("-5", now), undefined);
  assert.equal(parseRetryAfter("1.5", now), undefined);
  assert.equal(parseRetryAfter("soon", now), undefined);
});

test("webhook: the fetch option is used, and each request carries an abort signal", async () => {
  const seen: { url: string; init: RequestInit }[] = [];
  const publisher = webhookPublisher({
    url: "https://hooks.example/in",
    fetch: async (input, init) => {
      seen.push({ url: String(input), init: init! });
      return new Response(null, { status: 204 });
    },
  });
  await publisher.publish(record(), context);
  assert.equal(seen[0]!.url, "https://hooks.example/in");
  assert.equal(seen[0]!.init.method, "POST");
  assert.equal(seen[0]!.init.redirect, "manual");
  assert.ok(seen[0]!.init.signal instanceof AbortSignal);
  assert.equal(publisher.urlOf(record()).href, "https://hooks.example/in");
});
