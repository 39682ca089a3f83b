// Provisions the real services the suites run against, once per `npm test`:
//  - NATS: NATS_URL if set (the JetStream streams the run's tests created, each under its own namespace, are
//    deleted afterwards, so runs do not pile up streams on a long-lived server), else a nats-server from
//    PATH started on a free port with JetStream in a temp dir.
//  - Postgres: DATABASE_URL if set (a fresh, migrated database is created on that server for each project
//    of the run and dropped afterwards), else none — DB suites then run on PGlite only.
//  - A migrated PGlite data folder, dumped to a temp file once, which test/support/migrated-pglite.ts
//    loads for each in-memory test database instead of booting and migrating PGlite again.
// Tests read the results with `inject("natsUrl")`, `inject("postgresUrl")` and `inject("pgliteTemplate")`.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PGlite } from "@electric-sql/pglite";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import postgres from "postgres";
import type {} from "vitest";
import type { TestProject } from "vitest/node";
import { migrate } from "../../db/migrate.ts";
import { openDb } from "../../db/open.ts";

declare module "vitest" {
  export interface ProvidedContext {
    natsUrl: string;
    /** A Postgres URL for a database created for this run, or "" when DATABASE_URL is unset. */
    postgresUrl: string;
    /** The path of a migrated PGlite data folder's dump (PGlite's dumpDataDir). */
    pgliteTemplate: string;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => (typeof address === "object" && address ? resolve(address.port) : reject()));
    });
  });
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = new Socket();
      socket.once("connect", () => resolve(true)).once("error", () => resolve(false));
      socket.connect(port, "127.0.0.1");
    }).finally(() => {});
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nats-server did not answer on port ${port} within ${timeoutMs} ms`);
}

function findNatsServer(): string | undefined {
  for (const candidate of ["nats-server", "/usr/sbin/nats-server", "/usr/local/bin/nats-server"]) {
    if (spawnSync(candidate, ["--version"]).status === 0) return candidate;
  }
  return undefined;
}

let natsProcess: ChildProcess | undefined;
let natsDir: string | undefined;
let dropDatabase: (() => Promise<void>) | undefined;
let templateDir: string | undefined;
let pgliteTemplate: Promise<string> | undefined;

async function provideNats(): Promise<string> {
  if (process.env.NATS_URL) return process.env.NATS_URL;
  const binary = findNatsServer();
  if (!binary) {
    throw new Error(
      "Luminet's tests need NATS with JetStream. Set NATS_URL to a running server, or install nats-server " +
        "(Debian: `apt-get install nats-server`) so the tests can start one.",
    );
  }
  const port = await freePort();
  natsDir = mkdtempSync(join(tmpdir(), "luminet-nats-"));
  natsProcess = spawn(binary, ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", natsDir], {
    stdio: "ignore",
  });
  await waitForPort(port, 10_000);
  return `nats://127.0.0.1:${port}`;
}

async function providePostgres(): Promise<string> {
  const serverUrl = process.env.DATABASE_URL;
  if (!serverUrl) return "";
  const name = `luminet_test_${process.pid}_${Date.now()}`;
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  // Migrated here, once: test files migrate it again (a no-op then), and two of them doing the first
  // migration at the same time would both create the tables.
  const db = await openDb(url.toString());
  try {
    await migrate(db);
  } finally {
    await db.close();
  }
  dropDatabase = async () => {
    const sql = postgres(serverUrl, { max: 1, onnotice: () => {} });
    await sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await sql.end();
  };
  return url.toString();
}

/** Made once, however many projects' setups ask for it. */
function providePgliteTemplate(): Promise<string> {
  pgliteTemplate ??= (async () => {
    const db = await openDb("pglite:memory");
    try {
      await migrate(db);
      const dump = await (db as unknown as { $client: PGlite }).$client.dumpDataDir("none");
      templateDir = mkdtempSync(join(tmpdir(), "luminet-pglite-"));
      const path = join(templateDir, "migrated.tar");
      writeFileSync(path, Buffer.from(await dump.arrayBuffer()));
      return path;
    } finally {
      await db.close();
    }
  })();
  return pgliteTemplate;
}

/**
 * Deletes the streams (KV buckets included) created on the server since `since`, but for the default
 * namespace's (LUMINET_*, which a deployment or `luminet dev` on the same server uses): tests name theirs
 * after their own namespaces.
 */
async function deleteRunStreams(url: string, since: Date): Promise<void> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc);
    const created: string[] = [];
    for await (const stream of jsm.streams.list()) {
      const { name } = stream.config;
      if (new Date(stream.created) >= since && !/^(KV_)?LUMINET_/.test(name)) created.push(name);
    }
    for (const name of created) await jsm.streams.delete(name);
  } finally {
    await nc.close();
  }
}

export default async function setup(project: TestProject) {
  const started = new Date();
  project.provide("natsUrl", await provideNats());
  project.provide("postgresUrl", await providePostgres());
  project.provide("pgliteTemplate", await providePgliteTemplate());
  return async () => {
    const natsUrl = process.env.NATS_URL;
    if (natsUrl) {
      await deleteRunStreams(natsUrl, started).catch((error: Error) =>
        console.warn(`could not delete this run's NATS streams: ${error.message}`),
      );
    }
    await dropDatabase?.();
    natsProcess?.kill("SIGTERM");
    if (natsDir) rmSync(natsDir, { recursive: true, force: true });
    if (templateDir) rmSync(templateDir, { recursive: true, force: true });
  };
}
