// The slot table: which adapter each device slot (1..N) holds, per-slot reference counts (the sequences and
// loads using it) and pins. A referenced or pinned slot is never evicted. Pins are by adapter key and may be
// taken before the adapter has a slot.
//
// Eviction is LFU with dynamic aging (as in caching proxies): an adapter's priority is its use count plus
// the table's age when it was last used, the lowest goes (the least recently used among equals), and the
// age becomes the evicted priority, so counts of adapters no longer used fade. Under the skewed popularity
// of many-adapter traffic it keeps the hot set better than LRU, which a run of one-off adapters flushes
// (`luminet bench fleet`, docs/BENCHMARKS.md: 76 % of requests found their adapter in a slot vs 71 % with LRU).
export const MAX_PINS = 16;
/** Use counts of evicted adapters are remembered for this many times the slot count. */
const EVICTED_USES_KEPT = 8;

export class NoFreeSlotError extends Error {
  override name = "NoFreeSlotError";
}

export class PinLimitError extends Error {
  override name = "PinLimitError";
}

interface SlotEntry {
  key: string;
  slot: number;
  refs: number;
  /** References taken since it got its slot. */
  uses: number;
  /** Eviction order, lowest first: the table's age when last used plus its uses (LFU with dynamic aging). */
  priority: number;
  /** False while the adapter is still being written into the slot. */
  ready: boolean;
}

export class SlotTable {
  /** Least recently used first (Map order): the tie-break between equal priorities. */
  private readonly entries = new Map<string, SlotEntry>();
  private readonly pinned = new Set<string>();
  /** Empty slots, lowest first. */
  private readonly empty: number[];
  /** The priority of the last adapter evicted: newcomers start from it, so old counts fade. */
  private age = 0;
  /** Uses of recently evicted adapters, oldest first: one that comes back resumes its count. */
  private readonly evictedUses = new Map<string, number>();

  constructor(
    readonly count: number,
    readonly maxPins = MAX_PINS,
  ) {
    if (!Number.isInteger(count) || count < 1) throw new RangeError(`slot count must be ≥ 1, got ${count}`);
    this.empty = Array.from({ length: count }, (_, i) => i + 1);
  }

  /** Slots holding nothing. */
  get free(): number {
    return this.empty.length;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  slotOf(key: string): number | undefined {
    return this.entries.get(key)?.slot;
  }

  isReady(key: string): boolean {
    return this.entries.get(key)?.ready === true;
  }

  refs(key: string): number {
    return this.entries.get(key)?.refs ?? 0;
  }

  /**
   * Gives `key` a slot to be written, with one reference for the caller: an empty slot, else the one of
   * lowest priority that is ready, unreferenced and unpinned, whose key is returned as `evicted`.
   */
  claim(key: string): { slot: number; evicted: string | undefined } {
    if (this.entries.has(key)) throw new Error(`adapter ${key} already has slot ${this.slotOf(key)}`);
    let slot = this.empty.shift();
    let evicted: string | undefined;
    if (slot === undefined) {
      let victim: SlotEntry | undefined;
      for (const e of this.entries.values()) {
        if (!e.ready || e.refs > 0 || this.pinned.has(e.key)) continue;
        if (!victim || e.priority < victim.priority) victim = e;
      }
      if (!victim) {
        throw new NoFreeSlotError(
          `no slot for adapter ${key}: all ${this.count} slots are in use by running sequences or pinned`,
        );
      }
      this.entries.delete(victim.key);
      this.age = victim.priority;
      this.evictedUses.set(victim.key, victim.uses);
      if (this.evictedUses.size > EVICTED_USES_KEPT * this.count) {
        this.evictedUses.delete(this.evictedUses.keys().next().value!);
      }
      slot = victim.slot;
      evicted = victim.key;
    }
    const uses = (this.evictedUses.get(key) ?? 0) + 1;
    this.evictedUses.delete(key);
    this.entries.set(key, { key, slot, refs: 1, ready: false, uses, priority: this.age + uses });
    return { slot, evicted };
  }

  /** The adapter is written: steps may use it. */
  markReady(key: string): void {
    this.entry(key).ready = true;
  }

  /** One more user of the adapter's slot: one more use, and it becomes the most recently used. */
  ref(key: string): number {
    const entry = this.entry(key);
    entry.refs++;
    entry.uses++;
    entry.priority = this.age + entry.uses;
    this.entries.delete(key);
    this.entries.set(key, entry);
    return entry.slot;
  }

  /** One user fewer; returns the references left. */
  unref(key: string): number {
    const entry = this.entry(key);
    if (entry.refs === 0) throw new Error(`adapter ${key} is released more often than acquired`);
    entry.refs--;
    return entry.refs;
  }

  /** Empties the adapter's slot at once, references or not (a failed write, a deleted adapter). */
  drop(key: string): number | undefined {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.entries.delete(key);
    this.empty.push(entry.slot);
    this.empty.sort((a, b) => a - b);
    return entry.slot;
  }

  /**
   * Keeps the adapter from eviction once it has a slot. Refuses the pin past maxPins, and one that would
   * pin every slot: unpinned adapters need at least one slot to run in.
   */
  pin(key: string): void {
    if (this.pinned.has(key)) return;
    if (this.pinned.size >= this.maxPins) {
      throw new PinLimitError(
        `cannot pin adapter ${key}: ${this.pinned.size} adapters are pinned, the limit is ${this.maxPins} per base; unpin one first`,
      );
    }
    if (this.pinned.size + 1 >= this.count) {
      throw new PinLimitError(
        `cannot pin adapter ${key}: this worker has ${this.count} slots and ${this.pinned.size} are pinned; one slot must stay unpinned (start workers with more --slots)`,
      );
    }
    this.pinned.add(key);
  }

  unpin(key: string): void {
    this.pinned.delete(key);
  }

  isPinned(key: string): boolean {
    return this.pinned.has(key);
  }

  pinnedKeys(): string[] {
    return [...this.pinned];
  }

  /** Keys whose slot is written and usable, most recently used first. */
  readyKeys(): string[] {
    return [...this.entries.values()]
      .filter((e) => e.ready)
      .reverse()
      .map((e) => e.key);
  }

  /** Every key holding a slot, written or not. */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  private entry(key: string): SlotEntry {
    const entry = this.entries.get(key);
    if (!entry) throw new Error(`adapter ${key} has no slot`);
    return entry;
  }
}
