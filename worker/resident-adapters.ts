// Adapters written once into the engine's slots and kept there: the scheduler's AdapterSlots where there
// are no tiers to load from and nothing is ever evicted — `luminet generate`, the engine-alone benchmark
// and the device checks. The adapter in slot i + 1 is refs[i]; slot 0 is the base model.
import type { AdapterRef } from "../schema/wire.ts";
import type { AdapterSlots } from "./scheduler.ts";

export class ResidentAdapters implements AdapterSlots {
  readonly #slotOf = new Map<string, number>();

  constructor(private readonly refs: readonly AdapterRef[]) {
    for (const [i, ref] of refs.entries()) {
      if (this.#slotOf.has(ref.name)) throw new Error(`adapter ${ref.name} is named twice`);
      this.#slotOf.set(ref.name, i + 1);
    }
  }

  /** `count` adapters named `slot-1` … `slot-<count>`, for code that writes adapters by slot number. */
  static numbered(count: number, rank: number): ResidentAdapters {
    return new ResidentAdapters(
      Array.from({ length: count }, (_, i) => ({
        name: `slot-${i + 1}`,
        blob_key: `slot-${i + 1}`,
        sha256: (i + 1).toString(16).padStart(64, "0"),
        rank,
      })),
    );
  }

  /** The adapter in a slot; null for slot 0, the base model. */
  ref(slot: number): AdapterRef | null {
    if (slot === 0) return null;
    const ref = this.refs[slot - 1];
    if (!ref) throw new RangeError(`slot ${slot} holds no adapter (slots 1–${this.refs.length} do)`);
    return ref;
  }

  prefetch(): void {}

  async acquire(ref: AdapterRef): Promise<number> {
    const slot = this.#slotOf.get(ref.name);
    if (slot === undefined) throw new Error(`adapter ${ref.name} is not one of the resident adapters`);
    return slot;
  }

  release(): void {}
}
