// The adapter tiers together, on the tiny model with real PEFT adapters in a folder blob store: one load
// per cold adapter however many ask, LRU slots that spare referenced and pinned adapters, the pin limit,
// corrupt disk copies refetched, failures that reach only their own callers, a restart that keeps the disk
// tier, deletes, and a slot that really holds the adapter (checked through a real Engine).
import { createHash } from "node:crypto";
import {
  cpSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Worker } from "node:worker_threads";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import type { AdapterRef } from "../../schema/wire.ts";
import { writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import {
  AdapterLoadError,
  AdapterManager,
  type AdapterManagerOptions,
  AdapterRemovedError,
  type EvictTier,
  type LoadTier,
  NoFreeSlotError,
  PinLimitError,
} from "../../worker/adapters/adapter-manager.ts";
import { type BlobStore, FolderBlobStore } from "../../worker/adapters/blob-store.ts";
import { loadPeftAdapter } from "../../worker/adapters/peft.ts";
import { PeftThread } from "../../worker/adapters/peft-thread.ts";
import { parsedBytes } from "../../worker/adapters/ram-cache.ts";
import { AdapterControls } from "../../worker/control.ts";
import { Engine } from "../../worker/engine/engine.ts";
import type { ModelConfig } from "../../worker/engine/model-config.ts";
import { sampleControl } from "../contract/wire-samples.ts";

const ADAPTERS = 24;
const MAX_RANK = 16;

let root: string;
let blobRoot: string;
let modelDir: string;
let model: ModelConfig;
/** One parsing thread for every manager: each thread takes a second to start. */
let parser: PeftThread;
const refs: AdapterRef[] = [];

function sha256Of(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** Writes an adapter into the blob folder under `key` and returns its ref. */
function addBlob(name: string, key: string, seed: number, rank = 4): AdapterRef {
  const dir = join(blobRoot, key);
  writeRandomAdapter(dir, model, { rank, seed });
  return { name, blob_key: key, sha256: sha256Of(join(dir, "adapter_model.safetensors")), rank };
}

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-adapter-manager-"));
  blobRoot = join(root, "blobs");
  const tiny = initTinyModel(join(root, "model"), { shape: "tiny", adapters: 0, rank: 4, seed: 5 });
  modelDir = tiny.dir;
  model = tiny.config;
  for (let i = 0; i < ADAPTERS; i++) refs.push(addBlob(`org/a${i}`, `org/a${i}/v1`, 100 + i));
  parser = new PeftThread(model, MAX_RANK);
});

afterAll(async () => {
  await parser.close();
  rmSync(root, { recursive: true, force: true });
});

/** The folder store, counting fetches; a fetch can be held at a gate. */
class CountingStore implements BlobStore {
  readonly fetches: string[] = [];
  gate: Promise<void> | null = null;
  private readonly inner = new FolderBlobStore(blobRoot);
  readonly location = this.inner.location;

  async fetchAdapter(key: string, dir: string): Promise<void> {
    this.fetches.push(key);
    await this.gate;
    await this.inner.fetchAdapter(key, dir);
  }

  fetchFile(key: string, path: string): Promise<number> {
    return this.inner.fetchFile(key, path);
  }
}

interface Harness {
  manager: AdapterManager;
  blobs: CountingStore;
  writes: { slot: number; name: string }[];
  cleared: number[];
  loads: LoadTier[];
  evictions: EvictTier[];
  diskDir: string;
}

const open: AdapterManager[] = [];
let disks = 0;

function harness(options: Partial<AdapterManagerOptions> = {}): Harness {
  const h: Omit<Harness, "manager"> = {
    blobs: new CountingStore(),
    writes: [],
    cleared: [],
    loads: [],
    evictions: [],
    diskDir: options.diskCacheDir ?? join(root, `disk-${disks++}`),
  };
  const manager = new AdapterManager({
    model,
    maxRank: MAX_RANK,
    slots: 4,
    writeSlot: async (slot, adapter) => {
      h.writes.push({ slot, name: adapter.name });
    },
    clearSlot: (slot) => {
      h.cleared.push(slot);
    },
    ramCacheBytes: 1e9,
    diskCacheDir: h.diskDir,
    diskCacheBytes: 1e9,
    blobs: h.blobs,
    onLoad: (tier) => h.loads.push(tier),
    onEvict: (tier) => h.evictions.push(tier),
    parser,
    ...options,
  });
  open.push(manager);
  return { ...h, manager };
}

afterEach(async () => {
  for (const manager of open.splice(0)) await manager.close();
});

async function use(manager: AdapterManager, ref: AdapterRef): Promise<number> {
  const slot = await manager.acquire(ref);
  manager.release(ref);
  return slot;
}

const names = (...indices: number[]) => indices.map((i) => refs[i]!.name);

describe("AdapterManager", () => {
  it("loads a cold adapter once for ten concurrent acquires and a prefetch", async () => {
    const h = harness();
    let open!: () => void;
    h.blobs.gate = new Promise((resolve) => {
      open = resolve;
    });
    h.manager.prefetch(refs[0]!);
    const acquires = Array.from({ length: 10 }, () => h.manager.acquire(refs[0]!));
    await vi.waitFor(() => expect(h.blobs.fetches).toHaveLength(1));
    open();
    const slots = await Promise.all(acquires);
    expect(new Set(slots)).toEqual(new Set([1]));
    expect(h.blobs.fetches).toEqual([refs[0]!.blob_key]);
    expect(h.writes).toEqual([{ slot: 1, name: refs[0]!.name }]);
    expect(h.loads).toEqual(["blob", "ram"]);
    expect(h.manager.isResident(refs[0]!)).toBe(true);
    // Ten references: nine releases leave it referenced, so it is not evictable.
    for (let i = 0; i < 9; i++) h.manager.release(refs[0]!);
    const busy = harness({ slots: 1 });
    await busy.manager.acquire(refs[0]!);
    await expect(busy.manager.acquire(refs[1]!)).rejects.toThrow(NoFreeSlotError);
  });

  it("says where an adapter is: nowhere, loading, in a slot, in RAM once evicted, on disk for a new process", async () => {
    const h = harness({ slots: 1 });
    expect(h.manager.whereIs(refs[0]!)).toBe("none");
    let open!: () => void;
    h.blobs.gate = new Promise((resolve) => {
      open = resolve;
    });
    const acquiring = h.manager.acquire(refs[0]!);
    expect(h.manager.whereIs(refs[0]!)).toBe("loading");
    open();
    await acquiring;
    expect(h.manager.whereIs(refs[0]!)).toBe("slot");
    h.manager.release(refs[0]!);
    await use(h.manager, refs[1]!);
    expect([h.manager.whereIs(refs[0]!), h.manager.whereIs(refs[1]!)]).toEqual(["ram", "slot"]);
    await h.manager.close();
    const next = harness({ diskCacheDir: h.diskDir });
    expect(next.manager.whereIs(refs[0]!)).toBe("disk");
  });

  it("starts the load at prefetch, so the acquire finds the adapter in RAM", async () => {
    const h = harness();
    h.manager.prefetch(refs[0]!);
    await vi.waitFor(() => expect(h.manager.tiers().ram).toEqual(names(0)));
    expect(h.manager.tiers().slot).toEqual([]);
    expect(h.manager.tiers().disk).toEqual(names(0));
    await h.manager.acquire(refs[0]!);
    expect(h.blobs.fetches).toHaveLength(1);
    expect(h.loads).toEqual(["blob", "ram"]);
  });

  it("evicts the least recently used slot", async () => {
    const h = harness({ slots: 3 });
    for (const i of [0, 1, 2, 0]) await use(h.manager, refs[i]!);
    const slotOfB = h.writes.find((w) => w.name === refs[1]!.name)!.slot;
    expect(await use(h.manager, refs[3]!)).toBe(slotOfB);
    expect(h.manager.tiers().slot).toEqual(names(3, 0, 2));
    expect(h.evictions).toEqual(["slot"]);
    expect(h.manager.isResident(refs[1]!)).toBe(false);
    // Evicted from its slot, it is still in RAM: coming back costs a write, no fetch.
    await use(h.manager, refs[1]!);
    expect(h.blobs.fetches).toHaveLength(4);
  });

  it("never evicts a slot a running sequence holds, and refuses when every slot is held", async () => {
    const h = harness({ slots: 2 });
    await h.manager.acquire(refs[0]!);
    await use(h.manager, refs[1]!);
    await h.manager.acquire(refs[2]!);
    expect(h.manager.tiers().slot).toEqual(names(2, 0));
    const refused = h.manager.acquire(refs[3]!);
    await expect(refused).rejects.toThrow(NoFreeSlotError);
    await expect(h.manager.acquire(refs[3]!)).rejects.toThrow(/all 2 slots are in use/);
    h.manager.release(refs[2]!);
    await h.manager.acquire(refs[3]!);
    expect(h.manager.tiers().slot).toEqual(names(3, 0));
  });

  it("keeps pinned adapters through eviction pressure and refuses the 17th pin", async () => {
    const h = harness({ slots: 18 });
    for (let i = 0; i < 16; i++) await h.manager.pin(refs[i]!);
    const refused = h.manager.pin(refs[16]!);
    await expect(refused).rejects.toThrow(PinLimitError);
    await expect(h.manager.pin(refs[16]!)).rejects.toThrow(/the limit is 16 per base/);
    for (let round = 0; round < 2; round++)
      for (let i = 16; i < ADAPTERS; i++) await use(h.manager, refs[i]!);
    for (let i = 0; i < 16; i++) expect(h.manager.isResident(refs[i]!)).toBe(true);
    for (let i = 0; i < 16; i++) expect(h.writes.filter((w) => w.name === refs[i]!.name)).toHaveLength(1);
    expect(h.manager.tiers().pinned).toHaveLength(16);
    expect(h.manager.tiers().slot).toHaveLength(18);
    h.manager.unpin(refs[0]!.name);
    for (let i = 16; i < ADAPTERS; i++) await use(h.manager, refs[i]!);
    expect(h.manager.isResident(refs[0]!)).toBe(false);
    expect(h.manager.tiers().pinned).toHaveLength(15);
  });

  it("makes a pin wait for a slot while every slot is held, and moves a pin to a new version", async () => {
    const h = harness({ slots: 2 });
    await h.manager.acquire(refs[0]!);
    await h.manager.acquire(refs[1]!);
    let pinned = false;
    const pin = h.manager.pin(refs[2]!).then(() => {
      pinned = true;
    });
    await vi.waitFor(() => expect(h.manager.tiers().ram).toContain(refs[2]!.name));
    expect(pinned).toBe(false);
    h.manager.release(refs[0]!);
    await pin;
    expect(h.manager.isResident(refs[2]!)).toBe(true);

    const v2 = { ...refs[3]!, name: refs[2]!.name };
    h.manager.release(refs[1]!);
    await h.manager.pin(v2);
    expect(h.manager.tiers().pinned).toEqual([refs[2]!.name]);
    expect(h.manager.isResident(v2)).toBe(true);
    expect(h.manager.isResident(refs[2]!)).toBe(true);
    // The old version lost its pin: pressure evicts it, never the new one.
    await use(h.manager, refs[4]!);
    expect(h.manager.isResident(refs[2]!)).toBe(false);
    expect(h.manager.isResident(v2)).toBe(true);
  });

  it("gives a waiting pin the slot another adapter's unpin frees, and fails it when the adapter is deleted", async () => {
    const h = harness({ slots: 4 });
    await h.manager.pin(refs[0]!);
    await h.manager.pin(refs[1]!);
    await h.manager.acquire(refs[2]!);
    await h.manager.acquire(refs[3]!);
    const waiting = h.manager.pin(refs[4]!);
    await vi.waitFor(() => expect(h.manager.tiers().ram).toContain(refs[4]!.name));
    h.manager.unpin(refs[0]!.name);
    await waiting;
    expect(h.manager.tiers().slot).toEqual(names(4, 3, 2, 1));
    expect(h.manager.tiers().pinned).toEqual(names(1, 4));

    const doomed = h.manager.pin(refs[5]!).catch((error: unknown) => error);
    await vi.waitFor(() => expect(h.manager.tiers().ram).toContain(refs[5]!.name));
    await h.manager.remove(refs[5]!.name);
    expect(await doomed).toBeInstanceOf(AdapterRemovedError);
    expect(h.manager.tiers().pinned).toEqual(names(1, 4));
  });

  it.each([
    ["flipped bits that still parse", (path: string) => flipLastFloat(path)],
    ["a truncated file", (path: string) => truncateSync(path, 100)],
  ])("detects a corrupt disk copy (%s) by its sha256 and fetches it again", async (_, corrupt) => {
    const first = harness();
    await use(first.manager, refs[0]!);
    await first.manager.close();
    // The disk tier's one entry.
    const [entry] = readdirSync(first.diskDir);
    const weights = join(first.diskDir, entry!, "adapter_model.safetensors");
    corrupt(weights);
    expect(sha256Of(weights)).not.toBe(refs[0]!.sha256);

    const h = harness({ diskCacheDir: first.diskDir });
    expect(h.manager.tiers().disk).toEqual(names(0));
    await h.manager.acquire(refs[0]!);
    expect(h.blobs.fetches).toEqual([refs[0]!.blob_key]);
    expect(h.loads).toEqual(["blob", "ram"]);
    expect(sha256Of(weights)).toBe(refs[0]!.sha256);
  });

  it("runs an adapter with its own config where another adapter with the same weights filled the disk tier first", async () => {
    // Another org uploads refs[0]'s weights with lora_alpha 16 (scale 4 at rank 4, where refs[0] has 1).
    const key = "other/x/v1";
    cpSync(join(blobRoot, refs[0]!.blob_key), join(blobRoot, key), { recursive: true });
    const config = join(blobRoot, key, "adapter_config.json");
    writeFileSync(config, JSON.stringify({ ...JSON.parse(readFileSync(config, "utf8")), lora_alpha: 16 }));
    const other: AdapterRef = { ...refs[0]!, name: "other/x", blob_key: key };
    const scales: Record<string, number> = {};
    const first = harness({ slots: 1 });
    await use(first.manager, refs[0]!);
    await first.manager.close();
    // A fresh process on the same disk tier: refs[0] is on disk, the other adapter is not.
    const h = harness({
      diskCacheDir: first.diskDir,
      slots: 2,
      writeSlot: async (_slot, adapter) => {
        scales[adapter.name] = adapter.modules[0]!.scale;
      },
    });
    await use(h.manager, other);
    await use(h.manager, refs[0]!);
    expect(scales).toEqual({ [refs[0]!.name]: 1, "other/x": 4 });
    expect(h.blobs.fetches).toEqual([key]);
    // Deleting one leaves the other's disk entry.
    await h.manager.remove("other/x");
    expect(h.manager.tiers().disk).toEqual([refs[0]!.name]);
  });

  it("keeps the disk tier within its byte budget, least recently used out first", async () => {
    const fileBytes = statSync(join(blobRoot, refs[0]!.blob_key, "adapter_model.safetensors")).size;
    const h = harness({ diskCacheBytes: Math.floor(fileBytes * 2.5), slots: 2 });
    for (const i of [0, 1, 2]) await use(h.manager, refs[i]!);
    expect(h.manager.tiers().disk).toEqual(names(2, 1));
    expect(h.evictions).toContain("disk");
  });

  it("keeps the RAM tier within its byte budget, least recently used out first", async () => {
    const bytes = parsedBytes(loadPeftAdapter(join(blobRoot, refs[0]!.blob_key), model, { maxRank: 16 }));
    const h = harness({ ramCacheBytes: Math.floor(bytes * 2.5), slots: 4 });
    for (const i of [0, 1, 2]) await use(h.manager, refs[i]!);
    expect(h.manager.tiers().ram).toEqual(names(2, 1));
    expect(h.manager.tiers().slot).toEqual(names(2, 1, 0));
    expect(h.evictions).toEqual(["ram"]);
  });

  describe("a failed load fails only its own callers, with the reason, and a later acquire retries", () => {
    it("when the blob is missing", async () => {
      const staging = join(root, "staging-late");
      writeRandomAdapter(staging, model, { rank: 4, seed: 900 });
      const late: AdapterRef = {
        name: "org/late",
        blob_key: "org/late/v1",
        sha256: sha256Of(join(staging, "adapter_model.safetensors")),
        rank: 4,
      };
      const h = harness();
      const [a, b, other] = await Promise.allSettled([
        h.manager.acquire(late),
        h.manager.acquire(late),
        h.manager.acquire(refs[0]!),
      ]);
      for (const result of [a, b]) {
        expect(result.status).toBe("rejected");
        const error = (result as PromiseRejectedResult).reason;
        expect(error).toBeInstanceOf(AdapterLoadError);
        expect(error.message).toMatch(
          /^adapter org\/late \(sha256 [0-9a-f]{12}…\): blob org\/late\/v1 not found in /,
        );
      }
      expect(other.status).toBe("fulfilled");
      expect(h.blobs.fetches.filter((k) => k === late.blob_key)).toHaveLength(1);
      expect(h.manager.tiers().freeSlots).toBe(3);

      cpSync(staging, join(blobRoot, late.blob_key), { recursive: true });
      await h.manager.acquire(late);
      expect(h.blobs.fetches.filter((k) => k === late.blob_key)).toHaveLength(2);
      expect(h.manager.isResident(late)).toBe(true);
    });

    it("when the blob's sha256 is not the one asked for", async () => {
      const h = harness();
      const wrong = { ...refs[1]!, sha256: "0".repeat(64) };
      const failed = h.manager.acquire(wrong);
      await expect(failed).rejects.toThrow(
        `blob ${refs[1]!.blob_key} in ${blobRoot}: adapter_model.safetensors has sha256 ${refs[1]!.sha256}, expected ${"0".repeat(64)}`,
      );
      expect(h.manager.tiers()).toMatchObject({ slot: [], ram: [], disk: [], freeSlots: 4 });
      await h.manager.acquire(refs[1]!);
    });

    it("when the adapter is not a valid PEFT adapter for this model", async () => {
      const bad = addBlob("org/too-big", "org/too-big/v1", 901, 32);
      const h = harness();
      const results = await Promise.allSettled([
        h.manager.acquire(bad),
        h.manager.acquire(bad),
        h.manager.acquire(refs[2]!),
      ]);
      for (const result of results.slice(0, 2)) {
        expect((result as PromiseRejectedResult).reason.message).toMatch(
          /^adapter org\/too-big \(sha256 .*\): base_model\.model\.model\.layers\.0\.self_attn\.q_proj: rank 32 exceeds the maximum rank 16/,
        );
      }
      expect(results[2]!.status).toBe("fulfilled");
      expect(h.manager.tiers().disk).toEqual(names(2));
      await expect(h.manager.acquire(bad)).rejects.toThrow(AdapterLoadError);
      expect(h.blobs.fetches.filter((k) => k === bad.blob_key)).toHaveLength(2);
    });

    it("when writing the slot fails", async () => {
      let failures = 1;
      const h = harness({
        writeSlot: async () => {
          if (failures-- > 0) throw new Error("device lost");
        },
      });
      const results = await Promise.allSettled([h.manager.acquire(refs[0]!), h.manager.acquire(refs[0]!)]);
      for (const result of results) {
        expect((result as PromiseRejectedResult).reason.message).toMatch(
          /writing it into slot 1 failed: device lost$/,
        );
      }
      expect(h.cleared).toEqual([1]);
      expect(h.manager.tiers().freeSlots).toBe(4);
      expect(await h.manager.acquire(refs[0]!)).toBe(1);
      expect(h.blobs.fetches).toHaveLength(1);
    });
  });

  it("tries a pin whose blob could not be fetched again until it lands, but not a missing blob, nor a pin since undone", async () => {
    const h = harness();
    let failures = 2;
    const fetchOnce = h.blobs.fetchAdapter.bind(h.blobs);
    h.blobs.fetchAdapter = async (key, dir) => {
      if (key === refs[2]!.blob_key && failures-- > 0) {
        h.blobs.fetches.push(key);
        throw Object.assign(new Error("connect ECONNREFUSED 10.0.0.9:443"), { code: "ECONNREFUSED" });
      }
      await fetchOnce(key, dir);
    };
    const controls = new AdapterControls(
      {
        pin: (ref) => h.manager.pin(ref),
        unpin: (name) => h.manager.unpin(name),
        remove: (name) => h.manager.remove(name),
        prefetch: (ref) => h.manager.prefetch(ref),
        stageNew: () => {},
        warm: () => [],
        failAdapter: () => {},
      },
      // Long enough for the unpin below to come before the retry.
      { firstMs: 300, maxMs: 300 },
    );
    const pin = ({ name, ...blob }: AdapterRef, pinned = true) =>
      sampleControl({ kind: "pin", adapter: name, pinned, blob });
    try {
      // Unreachable twice, then fetched: pinned on the third try.
      controls.apply(pin(refs[2]!));
      await vi.waitFor(() => expect(h.manager.tiers().pinned).toEqual([refs[2]!.name]), { timeout: 5_000 });
      expect(h.manager.isResident(refs[2]!)).toBe(true);
      expect(h.blobs.fetches.filter((k) => k === refs[2]!.blob_key)).toHaveLength(3);

      // A blob that is not there is refused once, not fetched again and again.
      const missing: AdapterRef = {
        name: "org/missing",
        blob_key: "org/missing/v1",
        sha256: "1".repeat(64),
        rank: 4,
      };
      controls.apply(pin(missing));
      await vi.waitFor(() => expect(h.blobs.fetches).toContain(missing.blob_key));
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(h.blobs.fetches.filter((k) => k === missing.blob_key)).toHaveLength(1);

      // Unreachable, then unpinned before the retry: no retry follows.
      failures = 1;
      await h.manager.remove(refs[2]!.name);
      const before = h.blobs.fetches.length;
      controls.apply(pin(refs[2]!));
      await vi.waitFor(() => expect(h.blobs.fetches.length).toBe(before + 1));
      controls.apply(pin(refs[2]!, false));
      await new Promise((resolve) => setTimeout(resolve, 700));
      expect(h.blobs.fetches.length).toBe(before + 1);
      expect(h.manager.tiers().pinned).toEqual([]);
    } finally {
      controls.stop();
    }
  });

  it("finds its disk tier again after a restart and loads from it without fetching", async () => {
    const first = harness({ parser: undefined });
    for (const i of [0, 1]) await use(first.manager, refs[i]!);
    await first.manager.close();
    const h = harness({ diskCacheDir: first.diskDir, parser: undefined });
    expect(h.manager.tiers()).toMatchObject({ slot: [], ram: [], disk: names(1, 0) });
    await h.manager.acquire(refs[0]!);
    expect(h.blobs.fetches).toEqual([]);
    expect(h.loads).toEqual(["disk", "ram"]);
  });

  it("deletes an adapter from every tier, waiting for the last running sequence to leave its slot", async () => {
    const h = harness();
    await use(h.manager, refs[0]!);
    await h.manager.acquire(refs[1]!);
    await h.manager.remove(refs[0]!.name);
    await h.manager.remove(refs[1]!.name);
    expect(h.manager.tiers()).toMatchObject({ slot: names(1), ram: [], disk: [], freeSlots: 3 });
    expect(h.cleared).toEqual([1]);
    await expect(h.manager.acquire(refs[1]!)).rejects.toThrow(AdapterRemovedError);
    h.manager.release(refs[1]!);
    await vi.waitFor(() => expect(h.cleared).toEqual([1, 2]));
    expect(h.manager.tiers()).toMatchObject({ slot: [], freeSlots: 4 });
  });

  it("fails the callers of a load in flight when the adapter is deleted", async () => {
    const h = harness();
    let open!: () => void;
    h.blobs.gate = new Promise((resolve) => {
      open = resolve;
    });
    const acquire = h.manager.acquire(refs[0]!);
    await vi.waitFor(() => expect(h.blobs.fetches).toHaveLength(1));
    await h.manager.remove(refs[0]!.name);
    open();
    await expect(acquire).rejects.toThrow(AdapterRemovedError);
    expect(h.manager.tiers()).toMatchObject({ slot: [], ram: [], disk: [] });
  });

  it("starts a fresh parsing thread when the one it had died, so later loads still work", async () => {
    const own = new PeftThread(model, MAX_RANK);
    try {
      const h = harness({ parser: own });
      await use(h.manager, refs[0]!);
      await (own as unknown as { current: { worker: Worker } }).current.worker.terminate();
      await use(h.manager, refs[1]!);
      expect(h.manager.tiers().ram).toEqual(names(1, 0));
    } finally {
      await own.close();
    }
  });

  it("writes into the slot exactly the adapter a fresh engine computes with", async () => {
    const engineOptions = {
      modelDir,
      device: "cpu" as const,
      maxContext: 32,
      slots: 2,
      maxRank: MAX_RANK,
      maxAdaptersPerStep: 4,
      threads: 1,
    };
    const engine = await Engine.create(engineOptions);
    const fresh = await Engine.create(engineOptions);
    try {
      const h = harness({
        slots: 2,
        writeSlot: (slot, adapter) => engine.writeAdapter(slot, adapter),
        clearSlot: (slot) => engine.clearSlot(slot),
      });
      await use(h.manager, refs[0]!);
      const slot = await h.manager.acquire(refs[5]!);
      await fresh.writeAdapter(1, loadPeftAdapter(join(blobRoot, refs[5]!.blob_key), model, { maxRank: 16 }));
      const prompt = [1, 7, 42, 99, 3];
      const [viaManager] = await engine.prefill("a", prompt, slot);
      const [direct] = await fresh.prefill("a", prompt, 1);
      const [base] = await fresh.prefill("b", prompt, 0);
      expect(viaManager).toEqual(direct);
      expect(maxDiff(direct!, base!)).toBeGreaterThan(1e-3);
    } finally {
      await engine.close();
      await fresh.close();
    }
  });
});

/** Changes the lowest mantissa byte of the file's last float: still finite, so the file still parses. */
function flipLastFloat(path: string): void {
  const bytes = readFileSync(path);
  bytes[bytes.length - 4]! ^= 1;
  writeFileSync(path, bytes);
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}
