// The adapter tiers tied together: device slot → host RAM (parsed) → local disk (sha256-checked) → blob
// store. An adapter is its name plus the sha256 of its weights: a new version under the same name is
// another adapter. Loads are single-flight per adapter, start at queue time (prefetch), parse in a thread
// of their own, and reach a slot only through writeSlot, which the engine runs between steps.
import { sha256Hex } from "../../core/sha256.ts";
import type { AdapterRef } from "../../schema/wire.ts";
import type { ModelConfig } from "../engine/model-config.ts";
import { BlobNotFoundError, type BlobStore } from "./blob-store.ts";
import { DiskCache, Sha256MismatchError } from "./disk-cache.ts";
import type { LoadedAdapter } from "./peft.ts";
import { PeftThread } from "./peft-thread.ts";
import { RamCache } from "./ram-cache.ts";
import { NoFreeSlotError, SlotTable } from "./slots.ts";

export { NoFreeSlotError, PinLimitError } from "./slots.ts";

export type LoadTier = "ram" | "disk" | "blob";
export type EvictTier = "slot" | "ram" | "disk";
/**
 * Where an adapter is on this worker: written into a slot, parsed in RAM, on the local disk, being loaded
 * (into RAM or a slot) for an earlier request, or nowhere (the blob store has it).
 */
export type Whereabouts = "slot" | "ram" | "disk" | "loading" | "none";

export interface AdapterManagerOptions {
  model: ModelConfig;
  maxRank: number;
  slots: number;
  /** The engine's writeAdapter: the engine runs it between steps. */
  writeSlot(slot: number, adapter: LoadedAdapter): Promise<void>;
  clearSlot(slot: number): Promise<void> | void;
  ramCacheBytes: number;
  diskCacheDir: string;
  diskCacheBytes: number;
  blobs: BlobStore;
  /**
   * One observation per load, by the tier the bytes came from: "ram" times the write into a slot;
   * "disk" and "blob" time bringing the adapter into RAM, parsed (fetch, sha256 check, parse).
   */
  onLoad?(tier: LoadTier, seconds: number): void;
  /** One call per adapter evicted from a tier to make room (not for deletes). */
  onEvict?(tier: EvictTier): void;
  /** Parses adapters off the event loop; by default a PeftThread of the manager's own, closed with it. */
  parser?: Pick<PeftThread, "load" | "started">;
}

export interface AdapterTiers {
  slot: string[];
  ram: string[];
  disk: string[];
  pinned: string[];
  freeSlots: number;
}

/** An adapter could not be loaded; `reason` says why, naming the blob, file or tensor. */
export class AdapterLoadError extends Error {
  override name = "AdapterLoadError";
  constructor(
    readonly adapter: string,
    readonly sha256: string,
    readonly reason: string,
    options?: ErrorOptions,
  ) {
    super(`adapter ${adapter} (sha256 ${sha256.slice(0, 12)}…): ${reason}`, options);
  }
}

/**
 * Its blob could not be fetched (the blob store unreachable, a broken transfer): unlike a missing blob or
 * one whose bytes are not the adapter's, trying again later may succeed.
 */
export class AdapterFetchError extends AdapterLoadError {
  override name = "AdapterFetchError";
}

/** The adapter was deleted while a request waited for it. */
export class AdapterRemovedError extends AdapterLoadError {
  override name = "AdapterRemovedError";
}

function keyOf(ref: AdapterRef): string {
  return `${ref.name}@${ref.sha256}`;
}

/**
 * The adapter's disk tier entry: its blob and weights together. Not the weights alone: two adapters (of one
 * org or two) may upload the same weights with different configs (alpha, rsLoRA), and each must run with its own.
 */
function diskKeyOf(ref: AdapterRef): string {
  return sha256Hex(`${ref.blob_key}\n${ref.sha256}`);
}

/** Keys are name@sha256 and a sha256 is 64 hex digits, so the name is all before the last 65 characters. */
function nameOf(key: string): string {
  return key.slice(0, -65);
}

function unique(names: string[]): string[] {
  return [...new Set(names)];
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export class AdapterManager {
  private readonly table: SlotTable;
  private readonly ram: RamCache;
  private readonly disk: DiskCache;
  private readonly parser: Pick<PeftThread, "load" | "started">;
  private readonly ownParser: PeftThread | null;
  /** In-flight loads into RAM, by key. */
  private readonly loads = new Map<string, Promise<LoadedAdapter>>();
  /** In-flight writes into a slot, by key. */
  private readonly writes = new Map<string, Promise<void>>();
  /** In-flight pins, by key. */
  private readonly pinning = new Map<string, Promise<void>>();
  /** Deletes per adapter name: a load that sees the count change under it is discarded. */
  private readonly removals = new Map<string, number>();
  /** Slots of deleted adapters still used by running sequences: emptied at their last release. */
  private readonly doomed = new Set<string>();
  /** Pins waiting for a slot: woken whenever a slot's last user leaves. */
  private slotWaiters: (() => void)[] = [];

  constructor(private readonly options: AdapterManagerOptions) {
    this.table = new SlotTable(options.slots);
    this.ram = new RamCache(options.ramCacheBytes, () => options.onEvict?.("ram"));
    this.disk = new DiskCache({
      dir: options.diskCacheDir,
      budgetBytes: options.diskCacheBytes,
      onEvict: () => options.onEvict?.("disk"),
    });
    this.ownParser = options.parser ? null : new PeftThread(options.model, options.maxRank);
    this.parser = options.parser ?? this.ownParser!;
  }

  /** Resolves once the parsing thread runs (loads wait for it anyway; benchmarks wait up front). */
  started(): Promise<void> {
    return this.parser.started();
  }

  /** Starts bringing the adapter into RAM now, so it is close by when its request is scheduled. */
  prefetch(ref: AdapterRef): void {
    const key = keyOf(ref);
    if (this.table.has(key) || this.ram.has(key)) return;
    // A failure is not kept: the request's acquire loads again and receives the reason itself.
    this.toRam(ref).catch(() => {});
  }

  /** Where the adapter is on this worker now (for the arrivals metric). */
  whereIs(ref: AdapterRef): Whereabouts {
    const key = keyOf(ref);
    if (this.table.isReady(key)) return "slot";
    if (this.table.has(key) || this.loads.has(key)) return "loading";
    if (this.ram.has(key)) return "ram";
    return this.disk.has(diskKeyOf(ref)) ? "disk" : "none";
  }

  /**
   * Makes the adapter resident in a slot and takes one reference to it; returns the slot. Rejects with
   * AdapterLoadError (the reason inside) when it cannot be loaded, NoFreeSlotError when every slot is used
   * by running sequences or pinned (try again next step).
   */
  async acquire(ref: AdapterRef): Promise<number> {
    const key = keyOf(ref);
    if (this.table.has(key)) return this.join(ref);
    const removals = this.removals.get(ref.name) ?? 0;
    const adapter = await this.toRam(ref);
    // Others waiting on the same load resumed first; the first of them claimed the slot.
    if (this.table.has(key)) return this.join(ref);
    if ((this.removals.get(ref.name) ?? 0) !== removals) {
      throw new AdapterRemovedError(ref.name, ref.sha256, "it was deleted while loading");
    }
    const { slot, evicted } = this.table.claim(key);
    if (evicted !== undefined) this.options.onEvict?.("slot");
    const write = this.write(ref, slot, adapter).finally(() => this.writes.delete(key));
    this.writes.set(key, write);
    await write;
    this.refuseIfDeleted(ref);
    return slot;
  }

  /** Gives back one reference taken by acquire. */
  release(ref: AdapterRef): void {
    const key = keyOf(ref);
    if (!this.table.has(key)) return;
    if (this.table.unref(key) > 0) return;
    // The table already lists the slot as empty; clearing the banks is hygiene the next write repeats.
    if (this.doomed.has(key)) this.empty(key).catch(() => {});
    this.wakeSlotWaiters();
  }

  /** True when the adapter is written into a slot and usable by the next step. */
  isResident(ref: AdapterRef): boolean {
    return this.table.isReady(keyOf(ref));
  }

  /**
   * Loads the adapter into a slot and keeps it there until unpinned. A new version of a pinned name
   * takes over its pin. Throws PinLimitError past 16 pins (or when the pin would take the last unpinned
   * slot), AdapterLoadError when it cannot be loaded. While every slot is busy it waits for one.
   */
  async pin(ref: AdapterRef): Promise<void> {
    const key = keyOf(ref);
    const previous = this.table.pinnedKeys().find((k) => nameOf(k) === ref.name && k !== key);
    if (previous !== undefined) this.table.unpin(previous);
    try {
      this.table.pin(key);
    } catch (error) {
      if (previous !== undefined) this.table.pin(previous);
      throw error;
    }
    let pinning = this.pinning.get(key);
    if (!pinning) {
      pinning = this.loadPinned(ref).finally(() => this.pinning.delete(key));
      this.pinning.set(key, pinning);
    }
    await pinning;
  }

  /** Lets every version of the adapter be evicted again; it stays resident until it is. */
  unpin(name: string): void {
    for (const key of this.table.pinnedKeys()) if (nameOf(key) === name) this.table.unpin(key);
    // Its slot may be the one a waiting pin needs; a waiting pin of its own stops waiting.
    this.wakeSlotWaiters();
  }

  /**
   * Deletes every version of the adapter from every tier. Slots that running sequences still use are
   * emptied at their last release; loads in flight fail with AdapterRemovedError.
   */
  async remove(name: string): Promise<void> {
    this.removals.set(name, (this.removals.get(name) ?? 0) + 1);
    this.unpin(name);
    const cleared: (Promise<void> | void)[] = [];
    for (const key of this.table.keys()) {
      if (nameOf(key) !== name) continue;
      if (this.table.refs(key) === 0) cleared.push(this.empty(key));
      else this.doomed.add(key);
    }
    for (const key of this.ram.keys()) if (nameOf(key) === name) this.ram.delete(key);
    // Its disk entries are its own (keyed by its blob); a load in flight discards its entry when it ends.
    const onDisk = this.disk.list().filter((entry) => entry.name === name);
    await Promise.all([...cleared, ...onDisk.map((entry) => this.disk.discard(entry.key))]);
    this.wakeSlotWaiters();
  }

  /** What each tier holds, by adapter name, for heartbeats. freeSlots counts empty slots. */
  tiers(): AdapterTiers {
    return {
      slot: unique(this.table.readyKeys().map(nameOf)),
      ram: unique(this.ram.keys().map(nameOf)),
      disk: unique(this.disk.list().map((e) => e.name)),
      pinned: unique(this.table.pinnedKeys().map(nameOf)),
      freeSlots: this.table.free,
    };
  }

  /** Stops the parsing thread it started; loads still in flight fail. */
  async close(): Promise<void> {
    await this.ownParser?.close();
  }

  /** Takes a reference to a slot that is resident or being written. */
  private async join(ref: AdapterRef): Promise<number> {
    const key = keyOf(ref);
    if (this.doomed.has(key)) throw new AdapterRemovedError(ref.name, ref.sha256, "it was deleted");
    const slot = this.table.ref(key);
    // A failed write drops the entry, and with it this reference.
    await this.writes.get(key);
    this.refuseIfDeleted(ref);
    return slot;
  }

  /** After waiting on a write: a delete that came meanwhile takes the reference back. */
  private refuseIfDeleted(ref: AdapterRef): void {
    if (!this.doomed.has(keyOf(ref))) return;
    this.release(ref);
    throw new AdapterRemovedError(ref.name, ref.sha256, "it was deleted while loading");
  }

  private async write(ref: AdapterRef, slot: number, adapter: LoadedAdapter): Promise<void> {
    const key = keyOf(ref);
    const started = performance.now();
    try {
      await this.options.writeSlot(slot, adapter);
    } catch (error) {
      this.table.drop(key);
      await Promise.resolve(this.options.clearSlot(slot)).catch(() => {});
      this.wakeSlotWaiters();
      throw new AdapterLoadError(
        ref.name,
        ref.sha256,
        `writing it into slot ${slot} failed: ${message(error)}`,
        { cause: error },
      );
    }
    this.table.markReady(key);
    this.options.onLoad?.("ram", (performance.now() - started) / 1000);
  }

  private async empty(key: string): Promise<void> {
    this.doomed.delete(key);
    const slot = this.table.drop(key);
    if (slot !== undefined) await this.options.clearSlot(slot);
  }

  private async loadPinned(ref: AdapterRef): Promise<void> {
    const key = keyOf(ref);
    const removals = this.removals.get(ref.name) ?? 0;
    for (;;) {
      if ((this.removals.get(ref.name) ?? 0) !== removals) {
        throw new AdapterRemovedError(ref.name, ref.sha256, "it was deleted before it could be pinned");
      }
      if (!this.table.isPinned(key)) return;
      try {
        await this.acquire(ref);
        this.release(ref);
        return;
      } catch (error) {
        if (!(error instanceof NoFreeSlotError)) {
          this.table.unpin(key);
          throw error;
        }
      }
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    }
  }

  private wakeSlotWaiters(): void {
    const waiters = this.slotWaiters;
    this.slotWaiters = [];
    for (const wake of waiters) wake();
  }

  /** The parsed adapter: from RAM, else one shared load from disk or the blob store. */
  private toRam(ref: AdapterRef): Promise<LoadedAdapter> {
    const key = keyOf(ref);
    const cached = this.ram.get(key);
    if (cached) return Promise.resolve(cached);
    let load = this.loads.get(key);
    if (!load) {
      load = this.load(ref).finally(() => this.loads.delete(key));
      this.loads.set(key, load);
    }
    return load;
  }

  private async load(ref: AdapterRef): Promise<LoadedAdapter> {
    const started = performance.now();
    const removals = this.removals.get(ref.name) ?? 0;
    let adapter = await this.readDisk(ref);
    const tier: LoadTier = adapter ? "disk" : "blob";
    adapter ??= await this.readBlob(ref);
    if ((this.removals.get(ref.name) ?? 0) !== removals) {
      await this.disk.discard(diskKeyOf(ref));
      throw new AdapterRemovedError(ref.name, ref.sha256, "it was deleted while loading");
    }
    this.ram.put(keyOf(ref), adapter);
    this.options.onLoad?.(tier, (performance.now() - started) / 1000);
    return adapter;
  }

  /**
   * The adapter parsed from the disk tier; undefined when the disk does not hold it or its copy turned
   * out corrupt (then discarded, for the blob store to fill again).
   */
  private async readDisk(ref: AdapterRef): Promise<LoadedAdapter | undefined> {
    const diskKey = diskKeyOf(ref);
    const dir = this.disk.open(diskKey);
    if (!dir) return undefined;
    try {
      const adapter = await this.parser.load(dir, ref.name);
      if (adapter.sha256 === ref.sha256) return adapter;
    } catch (error) {
      // An unreadable copy is corrupt; a readable one that the parser refuses is a bad adapter. The
      // config is not covered by the sha256: drop the copy either way, so a fixed blob is fetched again.
      if (await this.disk.verify(diskKey)) {
        await this.disk.discard(diskKey);
        throw new AdapterLoadError(ref.name, ref.sha256, message(error), { cause: error });
      }
    } finally {
      this.disk.release(diskKey);
    }
    await this.disk.discard(diskKey);
    return undefined;
  }

  private async readBlob(ref: AdapterRef): Promise<LoadedAdapter> {
    const { blobs } = this.options;
    const diskKey = diskKeyOf(ref);
    let dir: string;
    try {
      dir = await this.disk.fill(diskKey, ref, (tmp) => blobs.fetchAdapter(ref.blob_key, tmp));
    } catch (error) {
      if (error instanceof BlobNotFoundError) {
        const reason = `blob ${ref.blob_key} not found in ${blobs.location} (${error.message})`;
        throw new AdapterLoadError(ref.name, ref.sha256, reason, { cause: error });
      }
      if (error instanceof Sha256MismatchError) {
        const reason = `blob ${ref.blob_key} in ${blobs.location}: ${error.message}`;
        throw new AdapterLoadError(ref.name, ref.sha256, reason, { cause: error });
      }
      const reason = `fetching blob ${ref.blob_key} from ${blobs.location} failed: ${message(error)}`;
      throw new AdapterFetchError(ref.name, ref.sha256, reason, { cause: error });
    }
    try {
      const adapter = await this.parser.load(dir, ref.name);
      if (adapter.sha256 !== ref.sha256) {
        throw new Error(`its weights changed on disk while being parsed (now sha256 ${adapter.sha256})`);
      }
      return adapter;
    } catch (error) {
      await this.disk.discard(diskKey);
      throw new AdapterLoadError(ref.name, ref.sha256, message(error), { cause: error });
    } finally {
      this.disk.release(diskKey);
    }
  }
}
