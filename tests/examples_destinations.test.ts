/**
 * examples/redis, examples/rabbitmq, examples/webhook and examples/fan-out, run for real as child
 * processes of the runtime under test (`bun file` under bun test, `deno run -A file`
 * under deno test), against the shared Redis (127.0.0.1:6379) and RabbitMQ
 * (127.0.0.1:5672) with names of their own. Each example exits by itself once every
 * order has its shipment; the test reads its output and checks the broker afterwards
 * (the example cleans up). Under Node this file registers nothing (Node 20 cannot run
 * the examples' TypeScript).
 */

import { spawn } from "node:child_process";
import { join } from "node:path";
import { connect } from "amqplib";
import { runtime, test } from "./harness.ts";
import { AMQP_URL, uniqueName } from "./amqp_helpers.ts";
import { openRedis, REDIS_URL, uniqueStream } from "./redis_helpers.ts";

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

const root = join(import.meta.dirname ?? ".", "..");

/** Runs an example to its end in this runtime; resolves with its exit code and output. */
function runExample(file: string, env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const args = runtime === "deno" ? ["run", "-A", file] : [file];
  const child = spawn(process.execPath, args, {
    cwd: root,
    env: { ...process.env, ...env, NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => output += chunk);
  child.stderr.on("data", (chunk: Buffer) => output += chunk);
  return new Promise((resolve, reject) => {
    // A bound, not a synchronisation: the examples finish in about a second.
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${file} did not exit within 60 s:\n${output}`));
    }, 60_000);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/** The lines of `output` matching `pattern`. */
const lines = (output: string, pattern: RegExp) => output.split("\n").filter((line) => pattern.test(line));

/** Checks the story every example tells: five orders, each applied once, one copy recognised. */
function assertOnce(name: string, result: { code: number | null; output: string }) {
  const { code, output } = result;
  try {
    assert(code === 0, `${name} exited with ${code}`);
    const created = lines(output, /shipment created/).map((line) => /\bo-\d+\b/.exec(line)?.[0]).sort();
    assert(created.join() === "o-1,o-2,o-3,o-4,o-5", `one shipment per order: ${created}`);
    const copies = lines(output, /already applied/);
    assert(copies.length === 1 && copies[0]!.includes("o-2"), `o-2's copy recognised once: ${copies.length}`);
    assert(
      output.includes("5 shipments from 5 orders, 1 copy recognised by the inbox"),
      "the summary counts 5 and 1",
    );
    assert(output.includes("every order shipped exactly once ✓"), "the example's own check passed");
  } catch (error) {
    console.error(output);
    throw error;
  }
}

if (runtime === "bun" || runtime === "deno") {
  test(`redis example (${runtime}): outbox → Redis stream → consumer group, each entry applied once`, async () => {
    const stream = uniqueStream("example-test");
    const result = await runExample("examples/redis/main.ts", {
      REDIS_URL,
      STREAM: stream,
      GROUP: "shipping-test",
    });
    assertOnce("examples/redis", result);
    assert(result.output.includes("the stream still holds 5 entries"), "the requeued copy added no entry");
    assert(lines(result.output, /XACK without applying/).length === 1, "the pending entry read on restart");
    const redis = await openRedis();
    try {
      assert((await redis.exists(stream)) === 0, "the example deleted its stream");
      const left = [];
      for await (const keys of redis.scanIterator({ MATCH: `{${stream}}:*`, COUNT: 1_000 })) left.push(...keys);
      assert(left.length === 0, `the example deleted its dedup keys: ${left.length} left`);
    } finally {
      await redis.del(stream);
      redis.destroy();
    }
  }, { timeout: 90_000 });

  test(
    `rabbitmq example (${runtime}): outbox → confirm channel → queue → consumer, each message applied once`,
    async () => {
      const name = uniqueName("example-test.");
      const exchange = `${name}.orders`;
      const queue = `${name}.shipping`;
      const result = await runExample("examples/rabbitmq/main.ts", { AMQP_URL, EXCHANGE: exchange, QUEUE: queue });
      assertOnce("examples/rabbitmq", result);
      assert(
        /invoices\.created went dead after 1 attempt: .*unroutable \(312 NO_ROUTE\)/.test(result.output),
        "the unroutable event went dead, saying why",
      );
      assert(result.output.includes("0 messages left in the queue"), "the queue was drained");
      // The example deleted its queue and exchange: checking them closes a channel with 404.
      const connection = await connect(AMQP_URL);
      connection.on("error", () => {});
      try {
        for (const check of ["queue", "exchange"] as const) {
          const channel = await connection.createChannel();
          channel.on("error", () => {});
          const found = await (check === "queue" ? channel.checkQueue(queue) : channel.checkExchange(exchange)).then(
            () => true,
            () => false,
          );
          if (found) {
            await (check === "queue" ? channel.deleteQueue(queue) : channel.deleteExchange(exchange));
            await channel.close();
          }
          assert(!found, `the example deleted its ${check}`);
        }
      } finally {
        await connection.close();
      }
    },
    { timeout: 90_000 },
  );

  test(
    `webhook example (${runtime}): outbox → signed POSTs → verified receiver, each webhook-id applied once`,
    async () => {
      const result = await runExample("examples/webhook/main.ts", { PORT: "0" });
      assertOnce("examples/webhook", result);
      assert(result.output.includes("a request signed with another secret: 401"), "the forged request is refused");
      assert(lines(result.output, /answered 503/).length === 1, "o-2's first answer was a 503");
      assert(result.output.includes("outbox: 0 pending, 0 dead"), "the sender settled everything as published");
    },
    { timeout: 90_000 },
  );

  test(
    `fan-out example (${runtime}): a row per destination; the partner's outage delays only the partner`,
    async () => {
      const result = await runExample("examples/fan-out/main.ts", { ORDERS: "6", DOWN: "4" });
      try {
        assert(result.code === 0, `examples/fan-out exited with ${result.code}`);
        assert(result.output.includes("6 orders committed: 13 outbox rows"), "a row per routed destination");
        assert(lines(result.output, /partner: down, 503/).length === 4, "the partner failed four times");
        assert(/analytics has all 7 events while \d+ wait for the partner/.test(result.output), "analytics went on");
        assert(lines(result.output, /partner: o-\d/).length === 6, "the partner got each order once");
        assert(result.output.includes("in order per customer: true"), "in order per customer");
        assert(result.output.includes("✓"), "the example's own check passed");
      } catch (error) {
        console.error(result.output);
        throw error;
      }
    },
    { timeout: 90_000 },
  );
}
