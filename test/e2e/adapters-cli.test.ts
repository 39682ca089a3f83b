// `luminet adapters` against a gateway served over HTTP (PGlite, the in-process bus, a blob folder): every
// command as the product page writes it, and each refusal — malformed safetensors, a file for another base,
// an oversized rank, a duplicate name, the size cap, a 17th pin, deleting what is in use, a key without the
// admin scope — exits 1 with the API's message and leaves no row, no blob and no change behind.
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Subscription } from "../../bus/bus.ts";
import { registerAdapters } from "../../cli/commands/adapters.ts";
import { type ServedApp, serveApp } from "../../gateway/node.ts";
import { NodeAdapterStorage } from "../../gateway/node-adapter-storage.ts";
import { AdapterList, AdapterObject } from "../../schema/adapter-api.ts";
import { adapters } from "../../schema/db.ts";
import type { AdapterControl } from "../../schema/wire.ts";
import { writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { FolderBlobStore } from "../../worker/adapters/blob-store.ts";
import { loadModelConfig, type ModelConfig } from "../../worker/engine/model-config.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { idleHeartbeat } from "../support/heartbeats.ts";
import { type CommandRun, luminetInProcess, spawnLuminet } from "../support/luminet-command.ts";

const MAX_RANK = 8;
const MAX_BYTES = 256 * 1024;

let harness: GatewayHarness;
let served: ServedApp;
let root: string;
let blobsDir: string;
let model: ModelConfig;
let controlSubscription: Subscription;
const controls: AdapterControl[] = [];

let spawnNext = 2;

/** The first commands run the real binary; the rest run in this process (see luminet-command.ts). */
function luminet(args: string[], key = harness.keys.acmeAdmin): Promise<CommandRun> {
  const command = ["adapters", ...args, "--gateway", served.url];
  const env = { LUMINET_API_KEY: key, LUMINET_GATEWAY: "" };
  if (spawnNext > 0) {
    spawnNext--;
    return spawnLuminet(command, env);
  }
  return luminetInProcess(registerAdapters, command, env);
}

function adapterDir(name: string, shape: ModelConfig, rank: number, seed: number): string {
  const dir = join(root, "sources", name);
  mkdirSync(dir, { recursive: true });
  writeRandomAdapter(dir, shape, { rank, seed, targetModules: ["q", "v"] });
  return dir;
}

function blobFiles(): string[] {
  return readdirSync(blobsDir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));
}

/** Runs a refused command and checks that nothing was stored. */
async function refused(args: string[], message: RegExp, key?: string): Promise<void> {
  const rowsBefore = await harness.liveAdapterNames();
  const blobsBefore = blobFiles();
  const run = await luminet(args, key);
  expect(run.code, run.stdout).toBe(1);
  expect(run.stderr).toMatch(message);
  expect(await harness.liveAdapterNames()).toEqual(rowsBefore);
  expect(blobFiles()).toEqual(blobsBefore);
}

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "luminet-adapters-cli-"));
  blobsDir = join(root, "blobs");
  mkdirSync(blobsDir);
  const scratchDir = join(root, "scratch");
  mkdirSync(scratchDir);
  harness = await createGatewayHarness({
    adapterStorage: new NodeAdapterStorage({
      blobs: new FolderBlobStore(blobsDir),
      maxRank: MAX_RANK,
      maxBytes: MAX_BYTES,
      scratchDir,
    }),
  });
  model = loadModelConfig(harness.modelDir);
  served = await serveApp(harness.app, 0, "127.0.0.1");
  controlSubscription = await harness.workerBus.onControl(BASE, (event) => controls.push(event));
});

afterAll(async () => {
  await controlSubscription?.close();
  await served?.close();
  await harness?.close();
  rmSync(root, { recursive: true, force: true });
});

describe("luminet adapters", () => {
  it("create uploads a PEFT folder, validated, into the blob store", async () => {
    const run = await luminet([
      "create",
      "--base",
      BASE,
      "--name",
      "acme/customer-acme-v2",
      "--source",
      adapterDir("v2", model, 4, 1),
      "--alias",
      "acme/customer-acme",
      "--json",
    ]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const created = AdapterObject.parse(JSON.parse(run.stdout));
    expect(created).toMatchObject({
      id: "acme/customer-acme-v2",
      model: `${BASE}:acme/customer-acme-v2`,
      alias: "customer-acme",
      rank: 4,
      target_modules: ["q_proj", "v_proj"],
      status: "ready",
    });
    expect(created.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(
      blobFiles()
        .map((f) => f.split("/").at(-1))
        .sort(),
    ).toEqual(["adapter_config.json", "adapter_model.safetensors"]);
    expect(readdirSync(join(root, "scratch"))).toEqual([]);
  });

  it("create takes a single .safetensors with its config from flags", async () => {
    const dir = adapterDir("v3", model, 2, 2);
    const run = await luminet([
      "create",
      "--base",
      BASE,
      "--name",
      "acme/customer-acme-v3",
      "--source",
      join(dir, "adapter_model.safetensors"),
      "--alias",
      "acme/customer-acme",
      "--rank",
      "2",
      "--alpha",
      "4",
      "--target-modules",
      "q_proj,v_proj",
    ]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/created acme\/customer-acme-v3 on tiny: rank 2, q_proj,v_proj/);
    const [row] = await harness.db.select().from(adapters).where(eq(adapters.name, "customer-acme-v3"));
    expect(row).toMatchObject({ rank: 2, alpha: 4, alias: "customer-acme", status: "ready" });
  });

  it("create refuses a malformed safetensors, a file for another base, a rank over the cap, a duplicate name and a file over the size cap, storing nothing", async () => {
    const garbage = join(root, "garbage.safetensors");
    writeFileSync(garbage, Buffer.from("not a safetensors file at all"));
    const flags = ["--rank", "4", "--alpha", "8", "--target-modules", "q_proj"];
    await refused(
      ["create", "--base", BASE, "--name", "bad", "--source", garbage, ...flags],
      /Invalid adapter: .*(header|safetensors)/,
    );
    const wider = { ...model, hiddenSize: model.hiddenSize * 2 };
    await refused(
      ["create", "--base", BASE, "--name", "other-base", "--source", adapterDir("other", wider, 4, 3)],
      /Invalid adapter: tensor base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight has shape \[4, 128\], expected \[4, 64\]/,
    );
    await refused(
      ["create", "--base", BASE, "--name", "big-rank", "--source", adapterDir("r16", model, 16, 4)],
      /rank 16 exceeds the maximum rank 8/,
    );
    await refused(
      ["create", "--base", BASE, "--name", "customer-acme-v2", "--source", adapterDir("dup", model, 4, 5)],
      /An adapter named acme\/customer-acme-v2 already exists/,
    );
    const huge = join(root, "huge.safetensors");
    writeFileSync(huge, Buffer.alloc(MAX_BYTES + 1));
    await refused(
      ["create", "--base", BASE, "--name", "huge", "--source", huge, ...flags],
      new RegExp(`larger than the cap of ${MAX_BYTES} bytes`),
    );
    await refused(
      ["create", "--base", "no-such-base", "--name", "x", "--source", adapterDir("x", model, 4, 6)],
      /Unknown base model 'no-such-base'/,
    );
    expect(readdirSync(join(root, "scratch"))).toEqual([]);
  });

  it("list prints a table, or the API's JSON with --json", async () => {
    const table = await luminet(["list"]);
    expect(table.code).toBe(0);
    const lines = table.stdout.trim().split("\n");
    expect(lines[0]).toMatch(/^NAME\s+BASE\s+ALIAS\s+WEIGHT\s+PINNED\s+RANK/);
    expect(lines.slice(1).map((l) => l.split(/\s+/)[0])).toEqual([
      "acme/customer-acme-v2",
      "acme/customer-acme-v3",
    ]);
    const json = AdapterList.parse(JSON.parse((await luminet(["list", "--json"])).stdout));
    expect(json.data.map((a) => [a.name, a.traffic_weight, a.pinned])).toEqual([
      ["customer-acme-v2", 100, false],
      ["customer-acme-v3", 100, false],
    ]);
  });

  it("set-traffic sets a version's weight within its alias; an adapter without an alias is refused", async () => {
    const run = await luminet(["set-traffic", "acme/customer-acme-v3", "--weight", "10"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/acme\/customer-acme-v3: traffic weight 10 within acme\/customer-acme/);
    const [row] = await harness.db.select().from(adapters).where(eq(adapters.name, "customer-acme-v3"));
    expect(row?.trafficWeight).toBe(10);
    await harness.addAdapter({ name: "solo" });
    await refused(["set-traffic", "acme/solo", "--weight", "50"], /has no alias/);
    await refused(["set-traffic", "acme/customer-acme-v3", "--weight", "101"], /from 0 to 100/);
    // Only decimal digits: Number() would read "" and " " as 0, "0x10" as 16 and "1e1" as 10.
    for (const weight of ["", " ", "0x10", "1e1", "1.5", "abc"]) {
      await refused(
        ["set-traffic", "acme/customer-acme-v3", "--weight", weight],
        new RegExp(`--weight: expected an integer from 0 to 100, got ${weight}\n`),
      );
    }
    const [after] = await harness.db.select().from(adapters).where(eq(adapters.name, "customer-acme-v3"));
    expect(after?.trafficWeight).toBe(10);
  });

  it("set-pinned pins and --off unpins, each reaching the base's control stream", async () => {
    const pin = await luminet(["set-pinned", "acme/customer-acme-v2"]);
    expect(pin.code).toBe(0);
    expect(pin.stdout).toMatch(/pinned on tiny/);
    const off = await luminet(["set-pinned", "acme/customer-acme-v2", "--off", "--json"]);
    expect(AdapterObject.parse(JSON.parse(off.stdout)).pinned).toBe(false);
    const mine = controls.filter((c) => c.adapter === "acme/customer-acme-v2");
    // The create that uploaded it came first: its worker loaded it ahead of its first request.
    expect(mine.map((c) => [c.kind, c.pinned])).toEqual([
      ["create", false],
      ["pin", true],
      ["unpin", false],
    ]);
    expect(mine[1]?.blob?.rank).toBe(4);
  });

  it("the 17th pin of a base is refused and changes nothing", async () => {
    for (let i = 0; i < 16; i++) await harness.addAdapter({ name: `pinned-${i}`, pinned: true });
    const before = controls.length;
    await refused(["set-pinned", "acme/customer-acme-v2"], /already has 16 pinned adapters/);
    expect(controls.length).toBe(before);
    const [row] = await harness.db.select().from(adapters).where(eq(adapters.name, "customer-acme-v2"));
    expect(row?.pinned).toBe(false);
    await harness.db.delete(adapters).where(eq(adapters.pinned, true));
  });

  it("a pin is refused where a live worker of the base has too few slots to hold it and one for the rest", async () => {
    await harness.workerBus.putHeartbeat(idleHeartbeat("small", { base: BASE, slots: 4, at: Date.now() }));
    try {
      for (let i = 0; i < 3; i++) await harness.addAdapter({ name: `pinned-${i}`, pinned: true });
      await refused(
        ["set-pinned", "acme/customer-acme-v2"],
        /already has 3 pinned adapters, the most its workers hold: a worker with 4 slots pins 3/,
      );
      const [row] = await harness.db.select().from(adapters).where(eq(adapters.name, "customer-acme-v2"));
      expect(row?.pinned).toBe(false);
    } finally {
      await harness.workerBus.removeHeartbeat(BASE, "small");
      await harness.db.delete(adapters).where(eq(adapters.pinned, true));
    }
  });

  it("delete refuses what is in use, then soft-deletes, tells the workers and removes the blob", async () => {
    await luminet(["set-pinned", "acme/customer-acme-v3"]);
    await refused(["delete", "acme/customer-acme-v3"], /is pinned; unpin it first/);
    await luminet(["set-pinned", "acme/customer-acme-v3", "--off"]);
    await refused(["delete", "acme/customer-acme-v3"], /carries 10 of alias acme\/customer-acme's traffic/);
    await luminet(["set-traffic", "acme/customer-acme-v3", "--weight", "0"]);
    const blobsBefore = blobFiles().length;
    const run = await luminet(["delete", "acme/customer-acme-v3"]);
    expect(run.code).toBe(0);
    expect(run.stdout).toBe("deleted acme/customer-acme-v3\n");
    expect(await harness.liveAdapterNames()).not.toContain("customer-acme-v3");
    expect(blobFiles().length).toBe(blobsBefore - 2);
    expect(controls.at(-1)).toMatchObject({ kind: "delete", adapter: "acme/customer-acme-v3", blob: null });
    const [row] = await harness.db.select().from(adapters).where(eq(adapters.name, "customer-acme-v3"));
    expect(row).toMatchObject({ status: "deleted" });
    await refused(["delete", "acme/customer-acme-v3"], /No adapter named acme\/customer-acme-v3/);
  });

  it("refuses keys without the admin scope and another org's names", async () => {
    await refused(["list"], /needs an API key with the "admin" scope/, harness.keys.acme);
    await refused(["set-pinned", "other/customer-acme-v2"], /belongs to org 'acme' and cannot manage/);
    await refused(["list"], /no API key/, "");
  });
});
