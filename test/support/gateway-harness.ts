// A gateway on embedded services for tests: PGlite in memory (migrated), an in-process bus, the tiny
// model's tokenizer as base "tiny" (its chat template replaceable), two orgs with keys, and adapters. Tests call `app.request(...)` or
// serve it over HTTP.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { and, eq, isNull } from "drizzle-orm";
import type { Bus } from "../../bus/bus.ts";
import { InProcessBroker } from "../../bus/in-process.ts";
import type { Db } from "../../db/open.ts";
import { createApiKey, ensureOrg } from "../../gateway/api-keys.ts";
import { createApp } from "../../gateway/app.ts";
import { loadBaseModel } from "../../gateway/base-loader.ts";
import { BaseCatalog } from "../../gateway/bases.ts";
import { type GatewayDeps, type GatewayDepsInput, gatewayDeps } from "../../gateway/deps.ts";
import { adapters, type NewAdapter } from "../../schema/db.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { openMigratedPglite } from "./migrated-pglite.ts";
import { addReasoningTags } from "./reasoning-templates.ts";

export const BASE = "tiny";
/** The tiny model's context, registered small so context checks are cheap to hit. */
export const CONTEXT = 256;

export interface GatewayHarness {
  db: Db;
  broker: InProcessBroker;
  /** The gateway's handle on the bus. */
  bus: Bus;
  /** Another process's handle, for fake workers. */
  workerBus: Bus;
  deps: GatewayDeps;
  app: ReturnType<typeof createApp>;
  modelDir: string;
  keys: { acme: string; acmeAdmin: string; other: string };
  addAdapter(values: Partial<NewAdapter> & { name: string; orgId?: string }): Promise<void>;
  /** The names of the org's adapters not deleted, sorted. */
  liveAdapterNames(org?: string): Promise<string[]>;
  /** Another app on the same database and bases, with some dependencies replaced. */
  appWith(overrides: Partial<GatewayDepsInput>): ReturnType<typeof createApp>;
  close(): Promise<void>;
}

export async function createGatewayHarness(
  input: Partial<Omit<GatewayDepsInput, "db" | "bus" | "bases">> = {},
  options: { chatTemplate?: string; reasoningTags?: boolean } = {},
): Promise<GatewayHarness> {
  const modelDir = mkdtempSync(join(tmpdir(), "luminet-gateway-"));
  initTinyModel(modelDir, { shape: "tiny", adapters: 0, rank: 4, seed: 7 });
  if (options.chatTemplate !== undefined) {
    // The base's tokenizer with another chat template (a reasoning model's, say).
    const path = join(modelDir, "tokenizer_config.json");
    const config = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    writeFileSync(path, JSON.stringify({ ...config, chat_template: options.chatTemplate }));
  }
  if (options.reasoningTags) addReasoningTags(modelDir);
  const db = await openMigratedPglite();
  const bases = new BaseCatalog([
    await loadBaseModel(db, { name: BASE, dir: modelDir }, { contextLength: CONTEXT }),
  ]);
  await ensureOrg(db, "acme");
  await ensureOrg(db, "other");
  const keys = {
    acme: (await createApiKey(db, { orgId: "acme", name: "test" })).key,
    acmeAdmin: (await createApiKey(db, { orgId: "acme", name: "admin", scopes: ["admin"] })).key,
    other: (await createApiKey(db, { orgId: "other", name: "test" })).key,
  };
  const broker = new InProcessBroker({ heartbeatTtlMs: 60_000 });
  const bus = broker.connect();
  const workerBus = broker.connect();
  const deps = gatewayDeps({ db, bus, bases, ...input });
  let blobs = 0;
  return {
    db,
    broker,
    bus,
    workerBus,
    deps,
    app: createApp(deps),
    modelDir,
    keys,
    async liveAdapterNames(org = "acme") {
      const rows = await db
        .select({ name: adapters.name })
        .from(adapters)
        .where(and(eq(adapters.orgId, org), isNull(adapters.deletedAt)));
      return rows.map((r) => r.name).sort();
    },
    async addAdapter(values) {
      blobs++;
      await db.insert(adapters).values({
        orgId: "acme",
        base: BASE,
        rank: 4,
        alpha: 8,
        targetModules: ["q_proj", "v_proj"],
        bytes: 1024,
        sha256: blobs.toString(16).padStart(64, "0"),
        blobKey: `adapters/${values.name}-${blobs}`,
        status: "ready",
        ...values,
      });
    },
    appWith(overrides) {
      return createApp(gatewayDeps({ db, bus, bases, ...input, ...overrides }));
    },
    async close() {
      await bus.close();
      await workerBus.close();
      await db.close();
      rmSync(modelDir, { recursive: true, force: true });
    },
  };
}
