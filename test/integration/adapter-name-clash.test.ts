// An org's adapter names and aliases never coincide, on PGlite and (when DATABASE_URL is set) real Postgres,
// where creates at once really race: a create whose name is a live alias of the org is refused with 409
// alias_exists, one whose alias is a live adapter's name with 409 adapter_exists, each storing nothing; a
// deleted adapter or alias frees its name, and other orgs' do not count. Of two creates at once, one naming
// an adapter X and one giving the alias X, exactly one wins. A clash already in a database (made before
// this check) resolves to the adapter named exactly.
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { and, eq, isNull } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { InProcessBroker } from "../../bus/in-process.ts";
import { migrate } from "../../db/migrate.ts";
import { type Db, openDb } from "../../db/open.ts";
import { createAdapter } from "../../gateway/adapter-admin.ts";
import { archiveStream } from "../../gateway/adapter-archive.ts";
import type { StagedAdapter } from "../../gateway/adapter-storage.ts";
import { createApiKey, ensureOrg } from "../../gateway/api-keys.ts";
import { createApp } from "../../gateway/app.ts";
import { loadBaseModel } from "../../gateway/base-loader.ts";
import { BaseCatalog } from "../../gateway/bases.ts";
import { type GatewayDeps, gatewayDeps } from "../../gateway/deps.ts";
import { parseModelId } from "../../gateway/model-id.ts";
import { NodeAdapterStorage } from "../../gateway/node-adapter-storage.ts";
import { ErrorBody } from "../../schema/api.ts";
import { adapters } from "../../schema/db.ts";
import { writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { FolderBlobStore } from "../../worker/adapters/blob-store.ts";
import { loadModelConfig } from "../../worker/engine/model-config.ts";

const postgresUrl = inject("postgresUrl");
const databases: Array<[string, string]> = [
  ["PGlite", "pglite:memory"],
  ...(postgresUrl ? [["Postgres", postgresUrl] as [string, string]] : []),
];

/** Pairs of creates sent at once in the race. */
const PAIRS = 8;

describe.each(databases)("adapter names and aliases (%s)", (_label, url) => {
  let root: string;
  let blobsDir: string;
  let db: Db;
  let bus: Bus;
  let deps: GatewayDeps;
  let app: ReturnType<typeof createApp>;
  let base: string;
  let files: { name: string; path: string }[];
  const org = `o-${randomUUID().slice(0, 12)}`;
  const otherOrg = `${org}-b`;
  const keys: Record<string, string> = {};

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), "luminet-name-clash-"));
    const modelDir = join(root, "model");
    initTinyModel(modelDir, { shape: "tiny", adapters: 0, rank: 4, seed: 7 });
    db = await openDb(url);
    await migrate(db);
    base = `clash-${randomUUID().slice(0, 8)}`;
    const bases = new BaseCatalog([
      await loadBaseModel(db, { name: base, dir: modelDir }, { contextLength: 256 }),
    ]);
    for (const id of [org, otherOrg]) {
      await ensureOrg(db, id);
      keys[id] = (await createApiKey(db, { orgId: id, name: "admin", scopes: ["admin"] })).key;
    }
    bus = new InProcessBroker({ heartbeatTtlMs: 60_000 }).connect();
    blobsDir = join(root, "blobs");
    mkdirSync(blobsDir);
    const adapterStorage = new NodeAdapterStorage({
      blobs: new FolderBlobStore(blobsDir),
      maxRank: 8,
      maxBytes: 2 ** 20,
    });
    deps = gatewayDeps({ db, bus, bases, adapterStorage });
    app = createApp(deps);
    const source = join(root, "source");
    mkdirSync(source);
    writeRandomAdapter(source, loadModelConfig(modelDir), { rank: 4, seed: 3 });
    files = ["adapter_config.json", "adapter_model.safetensors"].map((name) => ({
      name,
      path: join(source, name),
    }));
  });

  afterAll(async () => {
    await bus?.close();
    await db?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  /** Uploads the PEFT folder as the org's adapter `name`, under `alias` if given. */
  async function create(name: string, alias?: string, as = org): Promise<Response> {
    const query = new URLSearchParams({ base, name, ...(alias === undefined ? {} : { alias }) });
    return app.request(`/v1/adapters?${query}`, {
      method: "POST",
      headers: { authorization: `Bearer ${keys[as]}`, "content-type": "application/x-tar" },
      body: Readable.toWeb(archiveStream(files)) as ReadableStream<Uint8Array>,
      duplex: "half",
    } as RequestInit);
  }

  async function created(name: string, alias?: string, as = org): Promise<void> {
    const response = await create(name, alias, as);
    expect(response.status, await response.text()).toBe(201);
  }

  async function remove(name: string): Promise<void> {
    const response = await app.request(`/v1/adapters/${name}?force=true`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${keys[org]}` },
    });
    expect(response.status, await response.text()).toBe(200);
  }

  async function refusal(response: Response) {
    return { status: response.status, error: ErrorBody.parse(await response.json()).error };
  }

  const storedBlobs = () => readdirSync(join(blobsDir, "adapters", org)).length;

  async function liveNames(): Promise<string[]> {
    const rows = await db
      .select({ name: adapters.name })
      .from(adapters)
      .where(and(eq(adapters.orgId, org), isNull(adapters.deletedAt)));
    return rows.map((r) => r.name).sort();
  }

  it("refuses a name that is a live alias of the org with 409 alias_exists, naming the alias's versions and storing nothing", async () => {
    await created("up1", "al");
    await created("up2", `${org}/al`);
    const stored = storedBlobs();
    const refused = await refusal(await create(`${org}/al`));
    expect(refused).toMatchObject({
      status: 409,
      error: { type: "invalid_request_error", code: "alias_exists", param: "name" },
    });
    expect(refused.error.message).toBe(
      `${org}/al is already an alias (of ${org}/up1, ${org}/up2); an adapter cannot take an alias's name, since its model id would then never reach the alias's versions. Choose another name.`,
    );
    expect(storedBlobs()).toBe(stored);
    expect(await liveNames()).toEqual(["up1", "up2"]);
  });

  it("refuses an alias that is a live adapter's name with 409 adapter_exists on alias, storing nothing", async () => {
    const stored = storedBlobs();
    const refused = await refusal(await create("up3", "up1"));
    expect(refused).toMatchObject({
      status: 409,
      error: { type: "invalid_request_error", code: "adapter_exists", param: "alias" },
    });
    expect(refused.error.message).toBe(
      `An adapter named ${org}/up1 already exists, so it cannot be an alias: its model id runs that adapter, never the alias's versions. Choose another alias.`,
    );
    expect(storedBlobs()).toBe(stored);
    expect(await liveNames()).toEqual(["up1", "up2"]);
  });

  it("frees a name once its adapter is deleted and an alias once its versions are, and counts only the org's own", async () => {
    await remove("up1");
    await created("up4", "up1");
    await remove("up2");
    // Both versions of the alias al are gone, so al is free.
    await created("al");
    // Another org's names and aliases are its own: up1 is an alias here, al an adapter.
    await created("up1", undefined, otherOrg);
    await created("v1", "al", otherOrg);
    expect(await liveNames()).toEqual(["al", "up4"]);
  });

  it("lets exactly one of two creates at once win where one's name is the other's alias", async () => {
    const staged = (): StagedAdapter => ({
      rank: 4,
      alpha: 4,
      targetModules: ["q_proj"],
      bytes: 1,
      sha256: "0".repeat(64),
      commit: async () => {},
      discard: async () => {},
    });
    const input = (name: string, alias: string | null) => ({
      org,
      name,
      base,
      alias,
      staged: staged(),
      source: null,
    });
    const outcomes = await Promise.allSettled(
      Array.from({ length: PAIRS }, (_, i) => [
        createAdapter(deps, input(`x${i}`, null)),
        createAdapter(deps, input(`x${i}-v1`, `x${i}`)),
      ]).flat(),
    );
    for (let i = 0; i < PAIRS; i++) {
      const pair = outcomes.slice(2 * i, 2 * i + 2);
      expect(
        pair.filter((o) => o.status === "fulfilled"),
        `pair ${i}`,
      ).toHaveLength(1);
      const [lost] = pair.filter((o) => o.status === "rejected");
      expect((lost as PromiseRejectedResult).reason).toMatchObject({ status: 409 });
    }
    const live = await db
      .select({ name: adapters.name, alias: adapters.alias })
      .from(adapters)
      .where(and(eq(adapters.orgId, org), isNull(adapters.deletedAt)));
    const aliases = new Set(live.map((r) => r.alias));
    expect(live.filter((r) => aliases.has(r.name))).toEqual([]);
  });

  it("resolves a clash made before this check to the adapter named exactly", async () => {
    const row = (name: string, alias: string | null) => ({
      orgId: org,
      name,
      base,
      alias,
      rank: 4,
      alpha: 4,
      targetModules: ["q_proj"],
      bytes: 1,
      sha256: "0".repeat(64),
      blobKey: `adapters/${org}/${name}`,
      status: "ready" as const,
    });
    await db.insert(adapters).values([row("old", null), row("old-v2", "old")]);
    const model = `${base}:${org}/old`;
    const caller = { keyId: "k", orgId: org, prefix: "lk_test", scopes: [] };
    for (let i = 0; i < 20; i++) {
      const ref = await deps.adapters.resolve(db, caller, parseModelId(model), model);
      expect(ref?.name).toBe(`${org}/old`);
    }
  });
});
