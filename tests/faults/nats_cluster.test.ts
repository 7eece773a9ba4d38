/**
 * Fault: a 3-node JetStream cluster loses its stream leader, then a follower, while a
 * relay (`outbox.start()`) publishes keyed messages to an R3 stream, from Postgres and
 * from libSQL.
 *
 * The plan keeps the stream able to regain quorum: SIGKILL the stream leader (2 of 3
 * left: the survivors elect a new leader), start it again and wait until it has caught
 * up as a follower, then SIGKILL a follower (2 of 3 left, the leader stays). Killing a
 * second server before the first is back would leave 1 of 3, which has no quorum and
 * can never elect a leader until a server returns.
 *
 * During the election publishes get "no responders" (only the stream leader listens on
 * the stream's subjects) or time out; they must be retried, never sent to `dead`. The
 * test checks, by reading the stream back: every committed message is in it exactly
 * once (by Nats-Msg-Id), each key's messages are in enqueue order, nothing is dead. It
 * prints the recovery time of each kill: from the SIGKILL until a publish started after
 * it is acked.
 */

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { jetstream, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import {
  createOutbox,
  type OutboxRecord,
  type OutboxStorage,
  type PublishContext,
  type Publisher,
  type PublishOutcome,
} from "../../mod.ts";
import { libsqlStorage } from "../../adapters/libsql/mod.ts";
import { type PostgresSql, postgresStorage, type PostgresTx } from "../../adapters/postgres/mod.ts";
import { ensureStream, type JetStreamPublisher, jetstreamPublisher } from "../../adapters/nats/mod.ts";
import { test } from "../harness.ts";
import { openClient, tempDatabase } from "../libsql_helpers.ts";
import { type ReadMessage, readStream, uniqueName } from "../nats_helpers.ts";
import { openSql, uniqueSchema } from "../postgres_helpers.ts";
import { checkStream, Ledger, type NatsCluster, startNatsCluster, until } from "./helpers.ts";

/** Messages per run, over this many keys. */
const TOTAL = 4_000;
const KEYS = 32;
/** The writer commits this many messages per transaction, one transaction per `WRITE_EVERY_MS`. */
const WRITE_BATCH = 20;
const WRITE_EVERY_MS = 15;

/** One publish attempt as the relay saw it. */
interface Attempt {
  readonly startedAt: number;
  readonly endedAt: number;
  /** `null` when acked; else the publisher's error message. */
  readonly error: string | null;
}

/**
 * Wraps the JetStream publisher to record every attempt: when it started (the run's
 * start, which is no later than the message's send), when it ended, and how it failed.
 */
function recording(inner: JetStreamPublisher): Publisher & { readonly attempts: Attempt[] } {
  const attempts: Attempt[] = [];
  const note = (startedAt: number, outcome: PublishOutcome) =>
    attempts.push({
      startedAt,
      endedAt: Date.now(),
      error: outcome.ok ? null : String((outcome.error as Error)?.message ?? outcome.error),
    });
  return {
    attempts,
    async publish(message: OutboxRecord, context: PublishContext) {
      const startedAt = Date.now();
      try {
        await inner.publish(message, context);
        note(startedAt, { ok: true });
      } catch (error) {
        note(startedAt, { ok: false, error });
        throw error;
      }
    },
    async publishRun(messages: readonly OutboxRecord[], context: PublishContext) {
      const startedAt = Date.now();
      const outcomes = await inner.publishRun!(messages, context);
      for (const outcome of outcomes) note(startedAt, outcome);
      return outcomes;
    },
    check: (options) => inner.check!(options),
  };
}

/** Failed attempts by kind. */
interface Failures {
  readonly noResponders: number;
  readonly timeouts: number;
  readonly other: number;
}

/**
 * After a kill at `killAt`: when the first publish started after it was acked (the
 * recovery), and the attempts that failed in between; `null` until such an ack.
 */
function summarize(attempts: readonly Attempt[], killAt: number): { recoveredAt: number; failures: Failures } | null {
  const first = attempts.filter((a) => a.error === null && a.startedAt >= killAt).reduce<number | null>(
    (m, a) => (m === null || a.endedAt < m ? a.endedAt : m),
    null,
  );
  if (first === null) return null;
  const failed = attempts.filter((a) => a.error !== null && a.endedAt >= killAt && a.endedAt <= first);
  return {
    recoveredAt: first,
    failures: {
      noResponders: failed.filter((a) => /no responders/.test(a.error!)).length,
      timeouts: failed.filter((a) => /timeout/.test(a.error!)).length,
      other: failed.filter((a) => !/no responders|timeout/.test(a.error!)).length,
    },
  };
}

async function streamLeader(jsm: JetStreamManager, stream: string): Promise<string | undefined> {
  return (await jsm.streams.info(stream)).cluster?.leader;
}

/** Whether the stream has a leader and `followers` current replicas (besides the leader). */
async function streamHealthy(
  jsm: JetStreamManager,
  stream: string,
  followers: number,
  including?: string,
): Promise<boolean> {
  const cluster = (await jsm.streams.info(stream)).cluster;
  const replicas = cluster?.replicas ?? [];
  const current = replicas.filter((r) => r.current && !r.offline);
  return cluster?.leader !== undefined && current.length === followers &&
    (including === undefined || current.some((r) => r.name === including));
}

/**
 * One run: a 3-node cluster, an R3 stream, a relay from `storage`, a writer committing
 * TOTAL messages while the test kills the stream leader, restarts it, then kills a
 * follower. Returns what it measured, after checking the invariants.
 */
async function clusterRun<Tx>(
  label: string,
  storage: OutboxStorage<Tx, unknown>,
  enqueue: (write: (tx: Tx) => Promise<unknown>) => Promise<unknown>,
): Promise<void> {
  let cluster: NatsCluster | null = null;
  let nc: NatsConnection | null = null;
  const stopWriting = new AbortController();
  let writer: Promise<void> = Promise.resolve();
  let relay: { stop(): Promise<void> } | null = null;
  try {
    cluster = await startNatsCluster(3);
    const servers = cluster.urls;
    nc = await connect({ servers, maxReconnectAttempts: -1, reconnectTimeWait: 50, pingInterval: 1_000 });
    const conn = nc;
    // The manager's API check needs a JetStream meta leader: retried until one is elected.
    const ready: { jsm?: JetStreamManager } = {};
    const startedAt = Date.now();
    await until("a JetStream meta leader", async () => {
      ready.jsm = await jetstreamManager(conn, { timeout: 1_000 });
      return true;
    }, 30_000);
    const manager = ready.jsm!;
    const name = uniqueName("CL");
    const subject = name.toLowerCase();

    const warnings: string[] = [];
    const errors: unknown[] = [];
    const publisher = recording(jetstreamPublisher(jetstream(conn), { timeoutMs: 1_000 }));
    const outbox = createOutbox({
      storage,
      publisher,
      batchSize: 100,
      leaseMs: 5_000, // far above a publish's 1 s timeout, so a batch never outlives its lease
      // The default retry policy (10 attempts, 1 s doubling to 60 s): what users run must
      // outlast an election (4–9 s) with nothing dead.
      onError: (e) => errors.push(e),
      onWarning: (w) => warnings.push(w),
    });
    await outbox.setup();
    // R3 on file storage, with a dedup window of twice the retry horizon (at least 2 min).
    await until("the R3 stream to be created", async () => {
      await ensureStream(manager, {
        name,
        subjects: [`${subject}.>`],
        outbox,
        num_replicas: 3,
        storage: "file" as never,
      });
      return true;
    }, 30_000);
    await until("the stream to have a leader and two current followers", () => streamHealthy(manager, name, 2), 30_000);
    const readyMs = Date.now() - startedAt;

    const ledger = new Ledger();
    let allowed = 0;
    let written = 0;
    writer = (async () => {
      while (written < TOTAL && !stopWriting.signal.aborted) {
        if (written >= allowed) {
          await new Promise((r) => setTimeout(r, 5));
          continue;
        }
        const from = written;
        const batch = Array.from({ length: Math.min(WRITE_BATCH, allowed - from) }, (_, i) => {
          const n = from + i;
          return { id: `${name}-${n}`, topic: `${subject}.orders`, key: `k${n % KEYS}`, payload: { n } };
        });
        await enqueue((tx) => outbox.enqueue(tx, batch));
        ledger.commit(batch);
        written += batch.length;
        await new Promise((r) => setTimeout(r, WRITE_EVERY_MS));
      }
    })();
    // A message sent to dead fails the run at once, with its reason, rather than as a timeout later.
    let dead = 0;
    const handle = outbox.start({ minIdleMs: 5, maxIdleMs: 50, onTick: (report) => void (dead += report.dead) });
    relay = handle;
    const acked = () => publisher.attempts.filter((a) => a.error === null).length;
    const waitFor = async (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 15_000) => {
      await until(what, async () => dead > 0 || await check(), timeoutMs);
      if (dead > 0) {
        const row = (await outbox.inspect({ limit: TOTAL })).find((r) => r.status === "dead");
        assert.fail(`${label}: ${dead} message(s) went dead while waiting for ${what}; lastError: ${row?.lastError}`);
      }
    };

    // 1. Publishes flowing, then SIGKILL the stream leader while the writer keeps writing.
    allowed = 1_000;
    await waitFor("500 messages acked", () => acked() >= 500);
    allowed = 2_000;
    const oldLeader = (await streamLeader(manager, name))!;
    const clientOnAtLeaderKill = conn.info?.server_name;
    await cluster.kill(oldLeader);
    // Measured from the process's exit: a publish started between the signal and the exit
    // may still be acked by the dying leader.
    const leaderKillAt = Date.now();
    let newLeader = "";
    await waitFor("a new stream leader", async () => {
      const leader = await streamLeader(manager, name);
      if (leader === undefined || leader === oldLeader) return false;
      newLeader = leader;
      return true;
    }, 30_000);
    const leaderElectedMs = Date.now() - leaderKillAt;
    await waitFor(
      "a publish started after the leader kill to be acked",
      () => summarize(publisher.attempts, leaderKillAt) !== null,
      30_000,
    );
    const leaderKill = summarize(publisher.attempts, leaderKillAt)!;

    // 2. The old leader comes back and catches up as a follower: 3 of 3 again.
    await cluster.restart(oldLeader);
    await waitFor(
      `${oldLeader} to rejoin as a current follower`,
      () => streamHealthy(manager, name, 2, oldLeader),
      30_000,
    );

    // 3. SIGKILL a follower: 2 of 3 keep quorum, the leader stays.
    allowed = 3_000;
    await waitFor("2,500 messages acked", () => acked() >= 2_500, 30_000);
    const leader = (await streamLeader(manager, name))!;
    const follower = cluster.servers.find((s) => s.name !== leader && s.process !== null)!.name;
    const clientOnAtFollowerKill = conn.info?.server_name;
    await cluster.kill(follower);
    const followerKillAt = Date.now();
    await waitFor(
      "a publish started after the follower kill to be acked",
      () => summarize(publisher.attempts, followerKillAt) !== null,
      30_000,
    );
    const followerKill = summarize(publisher.attempts, followerKillAt)!;
    const leaderAfterFollowerKill = await streamLeader(manager, name);

    // 4. The rest of the messages, then everything settled.
    allowed = TOTAL;
    await writer;
    await waitFor("every message settled", async () => {
      const st = await outbox.stats();
      return st.pending + st.processing === 0;
    }, 30_000);
    await handle.stop();
    relay = null;

    const stats = await outbox.stats();
    assert.equal(stats.dead, 0, `${label}: nothing went dead (${stats.dead} dead)`);
    // Reading the stream is a JetStream API call too: a cluster that just lost a server
    // may answer "temporarily unavailable" for a moment, as it did to the publishes.
    let stored: ReadMessage[] = [];
    await until(`${label}: the stream to be readable`, async () => {
      stored = await readStream(manager, name);
      return true;
    }, 30_000);
    assert.equal(ledger.committed.length, TOTAL);
    assert.equal(
      stored.length,
      TOTAL,
      `${label}: the stream holds every committed message once (${stored.length} stored)`,
    );
    checkStream(stored, ledger, `${label} cluster`);
    assert.ok(
      leaderKill.failures.noResponders + leaderKill.failures.timeouts + leaderKill.failures.other > 0,
      `${label}: the leader kill made publishes fail (else the test did not exercise an election)`,
    );
    assert.deepEqual(errors, [], `${label}: failed publishes are outcomes, not relay errors`);
    assert.deepEqual(
      warnings.filter((w) => !/dropped the publish as a duplicate/.test(w)),
      [],
      `${label}: no configuration warnings`,
    );

    const f = (x: Failures) => `${x.noResponders} no responders, ${x.timeouts} timeouts, ${x.other} other`;
    const retried = publisher.attempts.filter((a) => a.error !== null).length;
    console.log(
      `[faults] nats cluster (${label}): ${TOTAL} messages, ${KEYS} keys, R3 stream on 3 servers (ready in ${readyMs} ms); ` +
        `leader ${oldLeader} SIGKILLed (client on ${clientOnAtLeaderKill}): new leader ${newLeader} after ${leaderElectedMs} ms, ` +
        `publishes acked again after ${leaderKill.recoveredAt - leaderKillAt} ms (${
          f(leaderKill.failures)
        } meanwhile); ` +
        `follower ${follower} SIGKILLed (client on ${clientOnAtFollowerKill}, leader then ${leaderAfterFollowerKill}): publishes acked again after ${
          followerKill.recoveredAt - followerKillAt
        } ms ` +
        `(${f(followerKill.failures)}); ${retried} failed attempts in all, 0 dead, 0 stored twice, key order held` +
        (warnings.length > 0 ? `; ${warnings.length} duplicate-drop warning(s)` : ""),
    );
  } finally {
    stopWriting.abort();
    await writer.catch(() => {});
    if (relay) await relay.stop();
    if (nc) await nc.close().catch(() => {});
    if (cluster) await cluster.stop();
  }
}

test(
  "faults: a JetStream cluster loses its stream leader, then a follower, mid-run (relay from Postgres): nothing dead, every message once, key order held",
  async () => {
    const sql = openSql(4);
    const schema = uniqueSchema("nclu");
    try {
      await sql.unsafe(`CREATE SCHEMA "${schema}"`);
      await clusterRun(
        "postgres",
        postgresStorage(sql as unknown as PostgresSql, { schema, table: "cluster_outbox" }),
        (write) => sql.begin((tx) => write(tx as unknown as PostgresTx)),
      );
    } finally {
      await sql.unsafe(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
      await sql.end({ timeout: 1 });
    }
  },
  { timeout: 90_000 },
);

test(
  "faults: a JetStream cluster loses its stream leader, then a follower, mid-run (relay from libSQL): nothing dead, every message once, key order held",
  async () => {
    const { url, dir } = tempDatabase();
    const client = await openClient(url);
    try {
      await clusterRun("libsql", libsqlStorage(client, { table: "cluster_outbox" }), (write) => write(client));
    } finally {
      client.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
  { timeout: 90_000 },
);
