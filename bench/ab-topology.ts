/**
 * A/B of the production-topology changes on Postgres: the relay as users run it
 * (`start()`, default options) draining a committed backlog into a memory publisher, at
 * this checkout and at another one given as the first argument (a git worktree), run
 * alternately in child processes. Reports msg/s and the relay process's CPU µs per message.
 *
 *   npx bun bench/ab-topology.ts /tmp/before [rounds=3] [messages=20000] [keys=16]
 *
 * @module
 */

const [other, rounds = "3", messages = "20000", keys = "16"] = process.argv.slice(2);
if (!other) throw new Error("usage: bun bench/ab-topology.ts <other checkout> [rounds] [messages] [keys]");

const child = `
const [root, totalArg, keysArg] = process.argv.slice(-3);
const { createOutbox } = await import(root + "/mod.ts");
const { postgresStorage } = await import(root + "/adapters/postgres/mod.ts");
const postgres = (await import("postgres")).default;
const sql = postgres("postgres://postgres@127.0.0.1:5432/test", { max: 4, onnotice: () => {} });
const schema = "ab_" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
const total = Number(totalArg), keys = Number(keysArg);
let seen = 0;
const done = Promise.withResolvers();
const outbox = createOutbox({ storage: postgresStorage(sql, { schema }), publisher: () => { if (++seen === total) done.resolve(); } });
await outbox.setup();
for (let i = 0; i < total; i += 1000) {
  await outbox.enqueue(sql, Array.from({ length: 1000 }, (_, j) => ({ topic: "t", key: keys ? "k" + ((i + j) % keys) : null, payload: { n: i + j, pad: "x".repeat(100) } })));
}
const cpu0 = process.cpuUsage(); const t0 = performance.now();
const relay = outbox.start();
await done.promise;
const ms = performance.now() - t0; const cpu = process.cpuUsage(cpu0);
await relay.stop();
await sql.unsafe('DROP SCHEMA "' + schema + '" CASCADE');
await sql.end();
console.log(JSON.stringify({ rate: total / ms * 1000, cpuUs: (cpu.user + cpu.system) / total }));
`;

const results: Record<string, { rate: number; cpuUs: number }[]> = { here: [], other: [] };
for (let r = 0; r < Number(rounds); r++) {
  for (const [name, root] of [["here", process.cwd()], ["other", other]] as const) {
    const proc = Bun.spawnSync(["bun", "-e", child, root, messages, keys], { cwd: process.cwd() });
    if (proc.exitCode !== 0) throw new Error(new TextDecoder().decode(proc.stderr));
    results[name]!.push(JSON.parse(new TextDecoder().decode(proc.stdout).trim().split("\n").pop()!));
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [name, runs] of Object.entries(results)) {
  console.log(
    `${name.padEnd(5)} ${runs.map((r) => r.rate.toFixed(0)).join(", ")} msg/s (median ${
      median(runs.map((r) => r.rate)).toFixed(0)
    }); relay CPU ${runs.map((r) => r.cpuUs.toFixed(1)).join(", ")} µs/msg`,
  );
}
