// An org's adapters together may hold at most the gateway's maxOrgAdapterBytes in the blob store: a create
// past it is refused with 400 adapter_storage_limit_exceeded and stores nothing, another org's adapters do
// not count, an org already at its limit is refused before its upload is read, a delete frees the room at
// once, two creates at once cannot both take the last room, and an org's own limit replaces the gateway's.
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { archiveSize, archiveStream } from "../../gateway/adapter-archive.ts";
import { adapterBytesHeld } from "../../gateway/adapter-storage-quota.ts";
import { NodeAdapterStorage } from "../../gateway/node-adapter-storage.ts";
import { setStorageLimits } from "../../gateway/orgs.ts";
import { ErrorBody } from "../../schema/api.ts";
import { writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { FolderBlobStore } from "../../worker/adapters/blob-store.ts";
import { loadModelConfig } from "../../worker/engine/model-config.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

let harness: GatewayHarness;
let root: string;
let blobsDir: string;
let storage: NodeAdapterStorage;
let files: { name: string; path: string }[];

/** A gateway whose orgs' adapters may hold `maxOrgAdapterBytes` each. */
const appWithin = (maxOrgAdapterBytes: number) =>
  harness.appWith({ adapterStorage: storage, limits: { maxOrgAdapterBytes } });

/** Uploads the PEFT folder as acme's adapter `name`; `body` replaces the archive. */
async function create(app: ReturnType<typeof appWithin>, name: string, body?: string): Promise<Response> {
  return app.request(`/v1/adapters?base=${BASE}&name=${name}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${harness.keys.acmeAdmin}`,
      "content-type": "application/x-tar",
      ...(body === undefined ? { "content-length": String(archiveSize(files)) } : {}),
    },
    body: body ?? (Readable.toWeb(archiveStream(files)) as ReadableStream<Uint8Array>),
    duplex: "half",
  } as RequestInit);
}

/** The adapters in the store's folder (each a folder holding adapter_config.json). */
function storedAdapters(dir = blobsDir): number {
  return readdirSync(dir).reduce((n, entry) => {
    const path = join(dir, entry);
    if (!statSync(path).isDirectory()) return n + (entry === "adapter_config.json" ? 1 : 0);
    return n + storedAdapters(path);
  }, 0);
}

/** The bytes of every file in the store's folder. */
function storedBytes(dir = blobsDir): number {
  return readdirSync(dir).reduce((n, entry) => {
    const path = join(dir, entry);
    return n + (statSync(path).isDirectory() ? storedBytes(path) : statSync(path).size);
  }, 0);
}

async function refusal(response: Response) {
  return { status: response.status, error: ErrorBody.parse(await response.json()).error };
}

beforeAll(async () => {
  harness = await createGatewayHarness();
  root = mkdtempSync(join(tmpdir(), "luminet-adapter-quota-"));
  blobsDir = join(root, "blobs");
  mkdirSync(blobsDir);
  storage = new NodeAdapterStorage({ blobs: new FolderBlobStore(blobsDir), maxRank: 8, maxBytes: 2 ** 20 });
  const source = join(root, "source");
  mkdirSync(source);
  writeRandomAdapter(source, loadModelConfig(harness.modelDir), { rank: 4, seed: 3 });
  files = ["adapter_config.json", "adapter_model.safetensors"].map((name) => ({
    name,
    path: join(source, name),
  }));
});

afterAll(async () => {
  await harness?.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("an org's adapter storage", () => {
  let one: number;

  it("refuses a create that would take the org's adapters past their storage, storing nothing, and counts that org's adapters only", async () => {
    const first = await create(appWithin(Number.MAX_SAFE_INTEGER), "q1");
    expect(first.status, await first.clone().text()).toBe(201);
    one = ((await first.json()) as { bytes: number }).bytes;
    // What the blob store holds of it: its config as well as its weights.
    expect(one).toBe(storedBytes());
    // Another org's adapters, however large, take none of acme's room.
    await harness.addAdapter({ orgId: "other", name: "huge", bytes: 10 ** 12 });

    const app = appWithin(2 * one + Math.floor(one / 2));
    expect((await create(app, "q2")).status).toBe(201);
    const stored = storedAdapters();
    const refused = await refusal(await create(app, "q3"));
    expect(refused).toMatchObject({
      status: 400,
      error: { type: "invalid_request_error", code: "adapter_storage_limit_exceeded", param: "file" },
    });
    expect(refused.error.message).toContain(`hold ${2 * one} bytes, this one ${one}`);
    expect(storedAdapters()).toBe(stored);
    expect(await harness.liveAdapterNames()).toEqual(["q1", "q2"]);
  });

  it("refuses an org already at its limit before reading the upload", async () => {
    const app = appWithin(await adapterBytesHeld(harness.db, "acme"));
    // Not an archive at all: read, it would be refused as malformed; the quota answers first.
    const refused = await refusal(await create(app, "q3", "not a tar"));
    expect(refused).toMatchObject({ status: 400, error: { code: "adapter_storage_limit_exceeded" } });
    expect(refused.error.message).toContain("no room is left for another");
  });

  it("frees a deleted adapter's bytes at once", async () => {
    const app = appWithin(2 * one);
    expect((await create(app, "q3")).status).toBe(400);
    const deleted = await app.request("/v1/adapters/q2", {
      method: "DELETE",
      headers: { authorization: `Bearer ${harness.keys.acmeAdmin}` },
    });
    expect(deleted.status).toBe(200);
    expect((await create(app, "q3")).status).toBe(201);
    expect(await harness.liveAdapterNames()).toEqual(["q1", "q3"]);
  });

  it("lets only one of two creates at once take the last room", async () => {
    const app = appWithin((await adapterBytesHeld(harness.db, "acme")) + one);
    const stored = storedAdapters();
    const statuses = (await Promise.all([create(app, "r1"), create(app, "r2")])).map((r) => r.status);
    expect(statuses.sort()).toEqual([201, 400]);
    expect(storedAdapters()).toBe(stored + 1);
    expect((await harness.liveAdapterNames()).filter((n) => n.startsWith("r"))).toHaveLength(1);
  });

  it("takes the org's own limit, set by the operator, over the gateway's", async () => {
    const app = appWithin(Number.MAX_SAFE_INTEGER);
    await setStorageLimits(harness.db, "acme", { adapters: await adapterBytesHeld(harness.db, "acme") });
    try {
      const refused = await refusal(await create(app, "own1"));
      expect(refused).toMatchObject({ status: 400, error: { code: "adapter_storage_limit_exceeded" } });
    } finally {
      await setStorageLimits(harness.db, "acme", { adapters: null });
    }
    expect((await create(app, "own1")).status).toBe(201);
  });
});
