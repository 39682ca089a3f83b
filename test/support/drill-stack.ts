// The whole service as real processes for failure drills: a nats-server and a Postgres of the drill's own
// (test/support/private-nats.ts, private-postgres.ts: the drill may stop and start them), `luminet gateway
// --with-meter` (the meter writes billing rows into that Postgres), and `luminet worker`s on the tiny
// model with its adapters in a folder blob store and a disk cache each. The database holds one priced
// base, one org with an API key, and the adapters.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, vi } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { migrate } from "../../db/migrate.ts";
import { type Db, openDb } from "../../db/open.ts";
import { createApiKey, ensureOrg } from "../../gateway/api-keys.ts";
import { architectureOf } from "../../gateway/base-loader.ts";
import { adapters, baseModels } from "../../schema/db.ts";
import { type LuminetProcess, startLuminetProcess } from "../../scripts/luminet-process.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { sha256OfFile } from "../../worker/adapters/file-hash.ts";
import { loadModelConfig } from "../../worker/engine/model-config.ts";
import { type ChatOptions, type ChatOutcome, chat } from "./drill-client.ts";
import { createPrivateNats, type PrivateNats } from "./private-nats.ts";
import { createPrivatePostgres, type PrivatePostgres } from "./private-postgres.ts";

export const DRILL_BASE = "tiny";
export const DRILL_ORG = "drill";
/** Long enough for streams that are still running when a drill strikes. */
const CONTEXT = 1024;
/** A killed worker's requests come back to the queue this soon (the default is 30 s). */
const ACK_WAIT_MS = 2000;

export interface DrillWorker {
  readonly id: string;
  readonly process: LuminetProcess;
  /** Its --disk-cache folder. */
  readonly cacheDir: string;
  /** Where its usage events wait until NATS stored them: its --usage-spool folder's namespace subfolder. */
  readonly usageSpoolDir: string;
}

export interface DrillStackOptions {
  adapters: number;
  /**
   * The NATS URL the gateway connects to; default the drill's server. A drill that partitions the gateway
   * from NATS passes a proxy's.
   */
  gatewayNatsUrl?: (nats: PrivateNats) => Promise<string>;
}

export interface DrillStack {
  readonly nats: PrivateNats;
  readonly pg: PrivatePostgres;
  /** The test's own connection to the drill's Postgres. */
  readonly db: Db;
  /** The test's own connection to the drill's NATS (heartbeats, backlogs). */
  readonly bus: Bus;
  readonly namespace: string;
  /** The folder blob store the workers fetch adapters from: <blobsDir>/adapter-<i>/. */
  readonly blobsDir: string;
  readonly key: string;
  /** Adapter names as routing sees them: "drill/a<i>". */
  readonly adapterNames: readonly string[];
  readonly gatewayUrl: string;
  readonly gateway: LuminetProcess;
  /** One chat completion through the gateway, with the drill's key unless given another. */
  send(options: ChatOptions, key?: string): Promise<ChatOutcome>;
  /** The model id of adapter i: "tiny:drill/a<i>". */
  adapterModel(i: number): string;
  readonly workers: Map<string, DrillWorker>;
  /** Starts `luminet worker --worker-id <id>` (again, after a stop: same id, disk cache and usage spool). */
  startWorker(id: string): Promise<DrillWorker>;
  /** Resolves once exactly `count` workers' heartbeats are live. */
  liveWorkers(count: number): Promise<void>;
  close(): Promise<void>;
}

async function seedDatabase(db: Db, modelDir: string, adapterDirs: readonly string[]): Promise<string> {
  await migrate(db);
  await db.insert(baseModels).values({
    name: DRILL_BASE,
    architecture: architectureOf(loadModelConfig(modelDir)),
    contextLength: CONTEXT,
    inputPriceMicrosPerMillion: 100_000,
    outputPriceMicrosPerMillion: 200_000,
  });
  await ensureOrg(db, DRILL_ORG);
  for (const [i, dir] of adapterDirs.entries()) {
    await db.insert(adapters).values({
      orgId: DRILL_ORG,
      name: `a${i}`,
      base: DRILL_BASE,
      rank: 4,
      alpha: 8,
      targetModules: ["q_proj", "v_proj"],
      bytes: 1,
      sha256: (await sha256OfFile(join(dir, "adapter_model.safetensors")))!,
      blobKey: `adapter-${i}`,
      status: "ready",
    });
  }
  return (await createApiKey(db, { orgId: DRILL_ORG, name: "drill" })).key;
}

export async function startDrillStack(postgresBin: string, options: DrillStackOptions): Promise<DrillStack> {
  const root = mkdtempSync(join(tmpdir(), "luminet-drill-"));
  const cleanups: (() => Promise<void> | void)[] = [() => rmSync(root, { recursive: true, force: true })];
  const close = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  };
  try {
    // No end-of-text token: every request generates exactly max_tokens unless something stops it.
    const tiny = initTinyModel(join(root, "model"), {
      shape: "tiny",
      adapters: options.adapters,
      rank: 4,
      seed: 11,
      endOfText: false,
    });
    const namespace = `drill_${process.pid}_${Date.now()}`;
    const nats = await createPrivateNats();
    cleanups.push(() => nats.destroy());
    await nats.start();
    const pg = await createPrivatePostgres(postgresBin);
    cleanups.push(() => pg.destroy());
    pg.start();
    const db = await openDb(pg.url);
    cleanups.push(() => db.close());
    const key = await seedDatabase(db, tiny.dir, tiny.adapterDirs);
    const bus = await connectJetStreamBus({ servers: nats.url, namespace });
    cleanups.push(() => bus.close());
    const blobsDir = join(tiny.dir, "adapters");

    const workers = new Map<string, DrillWorker>();
    cleanups.push(() => Promise.all([...workers.values()].map((w) => w.process.kill())).then(() => {}));
    const startWorker = async (id: string): Promise<DrillWorker> => {
      const cacheDir = join(root, `cache-${id}`);
      const spoolDir = join(root, `usage-spool-${id}`);
      const args = [
        "worker",
        ...["--model", tiny.dir, "--base", DRILL_BASE, "--worker-id", id, "--namespace", namespace],
        ...["--threads", "1", "--max-context", String(CONTEXT), "--ack-wait-ms", String(ACK_WAIT_MS)],
        ...["--slots", "4", "--max-adapters-per-batch", "4", "--max-rank", "4"],
        ...["--blobs", blobsDir, "--disk-cache", cacheDir, "--usage-spool", spoolDir],
      ];
      const worker = await startLuminetProcess({
        args,
        env: { NATS_URL: nats.url, LOG_LEVEL: "info" },
        ready: (entry) => entry.msg === "worker ready",
      });
      const started = { id, process: worker, cacheDir, usageSpoolDir: join(spoolDir, namespace) };
      workers.set(id, started);
      return started;
    };

    const gatewayArgs = [
      "gateway",
      ...["--port", "0", "--host", "127.0.0.1", "--model", `${DRILL_BASE}=${tiny.dir}`],
      ...["--namespace", namespace, "--blobs", blobsDir, "--with-meter"],
    ];
    const gatewayNatsUrl = options.gatewayNatsUrl ? await options.gatewayNatsUrl(nats) : nats.url;
    const gateway = await startLuminetProcess({
      args: gatewayArgs,
      env: { NATS_URL: gatewayNatsUrl, DATABASE_URL: pg.url, LOG_LEVEL: "info" },
      ready: (entry) => typeof entry.url === "string",
    });
    cleanups.push(() => gateway.kill());
    // A gateway that dies in a drill fails what the drill sends it with a bare connection reset: say why.
    let closing = false;
    cleanups.push(async () => {
      closing = true;
    });
    void gateway.exited.then((code) => {
      // A crash says why even when its exit is seen only as the drill closes (the requests it cut fail
      // the test first); a stop the drill asked for exits 0.
      if (closing && (code === 0 || code === null)) return;
      const lastLogs = gateway.logs.slice(-30).map((entry) => JSON.stringify(entry));
      process.stderr.write(
        `drill gateway exited with ${code} before the drill ended\nstderr:\n${gateway.stderr()}\nlast log lines:\n${lastLogs.join("\n")}\n`,
      );
    });

    const gatewayUrl = String(gateway.readyEntry.url);
    const adapterNames = tiny.adapterDirs.map((_, i) => `${DRILL_ORG}/a${i}`);
    return {
      nats,
      pg,
      db,
      bus,
      namespace,
      blobsDir,
      key,
      adapterNames,
      gatewayUrl,
      gateway,
      send: (options, other) => chat(gatewayUrl, other ?? key, options),
      adapterModel: (i) => `${DRILL_BASE}:${adapterNames[i]}`,
      workers,
      startWorker,
      // A killed worker's heartbeat lasts until its TTL, and a loaded machine starts a worker slowly: this
      // once took over 20 s in CI.
      liveWorkers: (count) =>
        vi.waitFor(async () => expect(await bus.liveHeartbeats(DRILL_BASE)).toHaveLength(count), {
          timeout: 40_000,
          interval: 100,
        }),
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
