// `luminet dev`: gateway, worker and meter in one process on embedded defaults — PGlite under the home
// folder (./.luminet or LUMINET_HOME), the in-process bus, a local blob folder, the CPU engine, and a tiny
// model generated on first run with 8 demo adapters owned by the demo org. `--nats` and `--database-url`
// switch to the real services. The demo key is LUMINET_DEV_API_KEY, or one generated on first run and kept
// in <home>/dev-api-key (a local development secret, like the rest of the folder). A demo adapter deleted
// stays deleted across starts, and on the in-process bus each start pins again what the database says is
// pinned.
import { cpSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { and, eq, isNotNull, isNull, ne } from "drizzle-orm";
import { register } from "prom-client";
import type { Bus } from "../bus/bus.ts";
import { InProcessBroker } from "../bus/in-process.ts";
import { connectJetStreamBus } from "../bus/jetstream.ts";
import { logger } from "../core/logger.ts";
import { migrate } from "../db/migrate.ts";
import { type Db, openDb } from "../db/open.ts";
import { type Meter, startMeter } from "../meter/meter.ts";
import { meterMetricsOnGatewayRegistry } from "../meter/metrics.ts";
import { adapters, apiKeys } from "../schema/db.ts";
import { WIRE_VERSION } from "../schema/wire.ts";
import { initTinyModel } from "../scripts/tiny-model.ts";
import { FolderBlobStore, openBlobStore } from "../worker/adapters/blob-store.ts";
import { sha256OfFile } from "../worker/adapters/disk-cache.ts";
import { parseDevice } from "../worker/engine/device.ts";
import { LuminetWorker } from "../worker/main.ts";
import { WorkerMetrics } from "../worker/metrics.ts";
import { wireAdapterName } from "./adapter-resolver.ts";
import { AdapterSources } from "./adapter-sources.ts";
import { createApiKey, ensureOrg, generateApiKey, hashApiKey } from "./api-keys.ts";
import { loadBaseModel } from "./base-loader.ts";
import { BaseCatalog } from "./bases.ts";
import { createNodeApp, serveApp, startBatchRunner, startWebhookSender } from "./node.ts";
import { NodeAdapterStorage } from "./node-adapter-storage.ts";

export const DEV_BASE = "tiny";
export const DEV_ORG = "demo";
export const DEV_ADAPTERS = 8;
const DEV_RANK = 8;
const DEV_CONTEXT = 2048;
/** The name of the demo key in the demo org: the keys `luminet dev` made and replaces. */
const DEV_KEY_NAME = "dev";

export interface DevStackOptions {
  home: string;
  port: number;
  hostname?: string;
  /** A NATS server instead of the in-process bus. */
  natsUrl?: string;
  /** A database instead of PGlite under the home folder. */
  databaseUrl?: string;
  /** The demo key to use instead of the generated one. */
  apiKey?: string;
  /** URL prefixes admins may create adapters from (the gateway's --adapter-sources); none by default. */
  adapterSources?: readonly string[];
}

export interface DevStack {
  url: string;
  apiKey: string;
  /** The model ids of the demo adapters not deleted. */
  models: string[];
  /** Resolves, with why, once the worker's engine thread ended on its own (the worker has drained): the stack cannot serve. */
  engineLost: Promise<Error>;
  close(): Promise<void>;
}

/** The tiny model and its demo adapters, made once. */
function ensureModel(home: string): string {
  const modelDir = join(home, "model");
  if (!existsSync(join(modelDir, "config.json"))) {
    logger.info({ modelDir }, "generating the tiny demo model");
    initTinyModel(modelDir, { shape: "tiny", adapters: DEV_ADAPTERS, rank: DEV_RANK, seed: 1 });
  }
  return modelDir;
}

/**
 * Registers the demo adapters on first start, each with its weights in the blob folder, and answers the
 * model ids of those live now. A demo adapter deleted since stays deleted: no row, no blob written back.
 */
async function registerDemoAdapters(db: Db, modelDir: string, blobsDir: string): Promise<string[]> {
  const models: string[] = [];
  for (let i = 0; i < DEV_ADAPTERS; i++) {
    const name = `adapter-${i}`;
    const blobKey = `${DEV_ORG}/${name}`;
    const rows = await db
      .select({ blobKey: adapters.blobKey, deletedAt: adapters.deletedAt })
      .from(adapters)
      .where(and(eq(adapters.orgId, DEV_ORG), eq(adapters.name, name)));
    const live = rows.find((row) => row.deletedAt === null);
    // Deleted since it was registered.
    if (!live && rows.length > 0) continue;
    const target = join(blobsDir, blobKey);
    const weights = join(target, "adapter_model.safetensors");
    // An adapter uploaded under a deleted demo adapter's name has its own blob.
    if ((!live || live.blobKey === blobKey) && !existsSync(weights)) {
      mkdirSync(target, { recursive: true });
      cpSync(join(modelDir, "adapters", name), target, { recursive: true });
    }
    if (!live) {
      const sha256 = await sha256OfFile(weights);
      const config = join(target, "adapter_config.json");
      await db.insert(adapters).values({
        orgId: DEV_ORG,
        name,
        base: DEV_BASE,
        rank: DEV_RANK,
        // As its config says, which is what the worker runs it with.
        alpha: (JSON.parse(readFileSync(config, "utf8")) as { lora_alpha: number }).lora_alpha,
        targetModules: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        bytes: statSync(weights).size + statSync(config).size,
        sha256: sha256!,
        blobKey,
        status: "ready",
      });
    }
    models.push(`${DEV_BASE}:${DEV_ORG}/${name}`);
  }
  return models;
}

/**
 * Publishes a pin for every adapter the database says is pinned. The in-process bus keeps control events in
 * memory only, so a restarted stack's worker would otherwise pin none of them while the API, and its pin
 * limit, still count them; JetStream keeps them, and its workers replay them when they start.
 */
async function publishPins(db: Db, bus: Bus): Promise<void> {
  const pinned = await db
    .select()
    .from(adapters)
    .where(and(eq(adapters.pinned, true), isNull(adapters.deletedAt), isNotNull(adapters.sha256)))
    .orderBy(adapters.createdAt, adapters.id);
  for (const row of pinned) {
    await bus.publishControl({
      v: WIRE_VERSION,
      kind: "pin",
      base: row.base,
      adapter: wireAdapterName(row.orgId, row.name),
      pinned: true,
      blob: { blob_key: row.blobKey, sha256: row.sha256!, rank: row.rank },
      at: Date.now(),
    });
  }
}

/**
 * The demo org's admin key: LUMINET_DEV_API_KEY's (`fromEnv`), else the one the home folder keeps, else a
 * new one. It is the demo key: one set in its place, the key it replaces stops working, and the folder keeps
 * the one in use, so a later start without the variable prints the key that works.
 */
export async function useDevApiKey(db: Db, home: string, fromEnv: string | undefined): Promise<string> {
  const file = join(home, "dev-api-key");
  const key = fromEnv ?? (existsSync(file) ? readFileSync(file, "utf8").trim() : generateApiKey());
  writeFileSync(file, `${key}\n`, { mode: 0o600 });
  const hash = await hashApiKey(key);
  const [known] = await db.select().from(apiKeys).where(eq(apiKeys.keyHash, hash));
  if (!known) await createApiKey(db, { orgId: DEV_ORG, name: DEV_KEY_NAME, scopes: ["admin"], key });
  else if (known.revokedAt) await db.update(apiKeys).set({ revokedAt: null }).where(eq(apiKeys.id, known.id));
  await db
    .update(apiKeys)
    .set({ revokedAt: new Date() })
    .where(
      and(
        eq(apiKeys.orgId, DEV_ORG),
        eq(apiKeys.name, DEV_KEY_NAME),
        isNull(apiKeys.revokedAt),
        ne(apiKeys.keyHash, hash),
      ),
    );
  return key;
}

export async function startDevStack(options: DevStackOptions): Promise<DevStack> {
  const home = resolve(options.home);
  mkdirSync(home, { recursive: true });
  const modelDir = ensureModel(home);
  const blobsDir = join(home, "blobs");
  const db = await openDb(options.databaseUrl ?? `pglite:${join(home, "db")}`);
  const closers: (() => Promise<void>)[] = [() => db.close()];
  const close = async () => {
    for (const stop of closers.splice(0).reverse()) await stop();
  };
  try {
    await migrate(db);
    const base = await loadBaseModel(db, { name: DEV_BASE, dir: modelDir }, { contextLength: DEV_CONTEXT });
    await ensureOrg(db, DEV_ORG, "Demo");
    const apiKey = await useDevApiKey(db, home, options.apiKey);
    const models = await registerDemoAdapters(db, modelDir, blobsDir);

    const broker = options.natsUrl ? undefined : new InProcessBroker();
    const connect = async (name: string): Promise<Bus> => {
      const bus = broker
        ? broker.connect()
        : await connectJetStreamBus({ servers: options.natsUrl!, connectionName: `luminet-dev ${name}` });
      closers.push(() => bus.close());
      return bus;
    };
    const workerBus = await connect("worker");
    if (broker) await publishPins(db, workerBus);
    const worker = await LuminetWorker.start({
      bus: workerBus,
      base: DEV_BASE,
      workerId: "dev",
      modelDir,
      device: parseDevice("cpu"),
      slots: DEV_ADAPTERS,
      maxAdaptersPerBatch: DEV_ADAPTERS,
      maxRank: DEV_RANK,
      maxBatch: 16,
      maxContext: DEV_CONTEXT,
      stepTokens: 1024,
      ramCacheBytes: 256 * 2 ** 20,
      prefixCacheBytes: 256 * 2 ** 20,
      diskCacheDir: join(home, "adapter-cache"),
      diskCacheBytes: 2 ** 30,
      usageSpoolDir: join(home, "usage-spool"),
      blobs: openBlobStore(blobsDir),
      ackWaitMs: 30_000,
      // On the gateway's /metrics, beside its own series.
      metrics: new WorkerMetrics(register),
    });
    closers.push(() => worker.drain());
    const meterBus = await connect("meter");
    const meter: Meter = await startMeter({
      bus: meterBus,
      db,
      logger,
      metrics: meterMetricsOnGatewayRegistry(),
    });
    closers.push(() => meter.stop());
    const gatewayBus = await connect("gateway");
    const adapterStorage = new NodeAdapterStorage({
      blobs: new FolderBlobStore(blobsDir),
      sources: new AdapterSources(options.adapterSources ?? []),
      maxRank: DEV_RANK,
      maxBytes: 2 ** 30,
    });
    const { app, deps } = createNodeApp({
      db,
      bus: gatewayBus,
      bases: new BaseCatalog([base]),
      adapterStorage,
      // A development stack's webhooks go to the developer's own machine.
      allowPrivateWebhooks: true,
    });
    const served = await serveApp(app, options.port, options.hostname);
    closers.push(() => served.close());
    const runner = startBatchRunner(app, deps);
    if (runner) closers.push(() => runner.stop());
    const sender = startWebhookSender(deps);
    closers.push(() => sender.stop());
    return { url: served.url, apiKey, models, engineLost: worker.engineLost, close };
  } catch (error) {
    await close();
    throw error;
  }
}
