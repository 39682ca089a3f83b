// The host RAM tier: parsed adapters, ready to write into a slot, under a byte budget with
// least-recently-used eviction.
import type { LoadedAdapter } from "./peft.ts";

/** Bytes an adapter's parsed matrices hold in memory (float32, whatever the file's dtype). */
export function parsedBytes(adapter: LoadedAdapter): number {
  let bytes = 0;
  for (const m of adapter.modules)
    bytes += m.a.byteLength + m.scaledBT.byteLength + (m.scaledBias?.byteLength ?? 0);
  return bytes;
}

export class RamCache {
  /** Least recently used first (Map order). */
  private readonly entries = new Map<string, { adapter: LoadedAdapter; bytes: number }>();
  private total = 0;

  constructor(
    readonly budgetBytes: number,
    private readonly onEvict?: (key: string) => void,
  ) {}

  get bytes(): number {
    return this.total;
  }

  /** The adapter under `key`, now most recently used. */
  get(key: string): LoadedAdapter | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.adapter;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /**
   * Keeps an adapter, evicting the least recently used ones to fit. One larger than the whole budget is
   * not kept (returns false): the caller still holds it for the slot it is going to.
   */
  put(key: string, adapter: LoadedAdapter): boolean {
    this.delete(key);
    const bytes = parsedBytes(adapter);
    if (bytes > this.budgetBytes) return false;
    for (const [old, entry] of this.entries) {
      if (this.total + bytes <= this.budgetBytes) break;
      this.entries.delete(old);
      this.total -= entry.bytes;
      this.onEvict?.(old);
    }
    this.entries.set(key, { adapter, bytes });
    this.total += bytes;
    return true;
  }

  delete(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    this.total -= entry.bytes;
  }

  /** Keys, most recently used first. */
  keys(): string[] {
    return [...this.entries.keys()].reverse();
  }
}
