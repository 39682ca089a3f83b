// Resident LoRA adapter banks: for every layer and target module, a bank of A rows [slots·R, in], a bank of
// scaled Bᵀ rows [slots·R, out] and a bank of scaled lora biases [slots, out] — the graph inputs
// lora_a.{l}.{kind}, lora_b.{l}.{kind}, lora_bias.{l}.{kind}. Slot s (1-based; slot 0 means "no adapter")
// owns rows (s-1)·R ..(s-1)·R + r_kind, where r_kind is that adapter's largest rank over the layers of that
// kind: a step reads exactly those rows, so ranks mix in one batch without padding to the batch's largest
// (except slot-batched and span-masked steps, which read every row of a run of slots; B rows past a rank are
// kept zero for them).
// The scale (alpha/r or alpha/√r) is already folded into B and the bias by the parser (peft.ts).
import { Tensor } from "onnxruntime-node";
import type { LoadedAdapter } from "../adapters/peft.ts";
import type { BankStore } from "./bank-store.ts";
import { MODULE_KINDS, type ModelConfig, type ModuleKind, moduleShape } from "./model-config.ts";

export interface LoraBankShape {
  slots: number;
  rowsPerSlot: number;
}

export class LoraBankError extends Error {}

export function bankNames(layer: number, kind: ModuleKind) {
  return { a: `lora_a.${layer}.${kind}`, b: `lora_b.${layer}.${kind}`, bias: `lora_bias.${layer}.${kind}` };
}

/** The graph input that takes one segment's rows of a bank (the segment-views formulation). */
export function segmentInputName(bank: string, segment: number): string {
  return `${bank}.${segment}`;
}

/** Every bank tensor the graph takes, with its shape, for a store to allocate. */
export function bankLayout(
  model: ModelConfig,
  shape: LoraBankShape,
): { name: string; rows: number; width: number }[] {
  const layout: { name: string; rows: number; width: number }[] = [];
  for (let layer = 0; layer < model.numLayers; layer++) {
    for (const kind of MODULE_KINDS) {
      const { inFeatures, outFeatures } = moduleShape(model, kind);
      const names = bankNames(layer, kind);
      layout.push({ name: names.a, rows: shape.slots * shape.rowsPerSlot, width: inFeatures });
      layout.push({ name: names.b, rows: shape.slots * shape.rowsPerSlot, width: outFeatures });
      layout.push({ name: names.bias, rows: shape.slots, width: outFeatures });
    }
  }
  return layout;
}

export class LoraBanks {
  /** ranks[slot-1][kind]: rows in use for that kind, 0 when the slot is empty or the kind untargeted. */
  private readonly ranks: Record<ModuleKind, number>[];
  /** Every bank, in one fixed order: per layer and kind, A, B and bias. */
  private readonly bankOrder: { name: string; kind: ModuleKind; bias: boolean }[] = [];
  /** Per slot, in bank order, tensors over the slot's rows (built on first use after a write). */
  private readonly views: (Tensor[] | undefined)[];
  /** Per segment, in bank order, the graph inputs that take that segment's rows. */
  private readonly segmentInputs: string[][] = [];
  /** Per slot, whether its adapter has a lora bias on any module. */
  private readonly biased: boolean[];
  /** The last run of slots a slot-batched or span-masked step was fed, with its feeds (decodes repeat it). */
  private lastSpan: {
    first: number;
    last: number;
    perSlot: boolean;
    feeds: Record<string, Tensor>;
  } | null = null;

  constructor(
    private readonly model: ModelConfig,
    readonly shape: LoraBankShape,
    private readonly store: BankStore,
  ) {
    this.ranks = Array.from({ length: shape.slots }, () => emptyRanks());
    for (let layer = 0; layer < model.numLayers; layer++) {
      for (const kind of MODULE_KINDS) {
        const names = bankNames(layer, kind);
        this.bankOrder.push(
          { name: names.a, kind, bias: false },
          { name: names.b, kind, bias: false },
          { name: names.bias, kind, bias: true },
        );
      }
    }
    this.views = new Array(shape.slots);
    this.biased = new Array(shape.slots).fill(false);
  }

  /** Writes an adapter into a slot. Only the rows the adapter uses are written. */
  async write(slot: number, adapter: LoadedAdapter): Promise<void> {
    this.checkSlot(slot);
    if (adapter.maxRank > this.shape.rowsPerSlot) {
      throw new LoraBankError(
        `adapter ${adapter.name} has rank ${adapter.maxRank}; this engine's slots hold at most ${this.shape.rowsPerSlot}`,
      );
    }
    const ranks = emptyRanks();
    for (const module of adapter.modules) ranks[module.kind] = Math.max(ranks[module.kind], module.rank);
    const byPlace = new Map(adapter.modules.map((m) => [`${m.layer}.${m.kind}`, m]));
    const firstRow = (slot - 1) * this.shape.rowsPerSlot;

    for (let layer = 0; layer < this.model.numLayers; layer++) {
      for (const kind of MODULE_KINDS) {
        const { inFeatures, outFeatures } = moduleShape(this.model, kind);
        const names = bankNames(layer, kind);
        const module = byPlace.get(`${layer}.${kind}`);
        await this.store.writeRows(
          names.bias,
          slot - 1,
          1,
          module?.scaledBias ?? new Float32Array(outFeatures),
        );
        const rank = ranks[kind];
        // The adapter's rows are copied as they are (parsing already scaled and transposed B).
        const written = module?.rank ?? 0;
        if (module) {
          await this.store.writeRows(names.a, firstRow, written, module.a);
          await this.store.writeRows(names.b, firstRow, written, module.scaledBT);
        }
        // Rows past this module's own rank (rank_pattern, or a layer the adapter skips) are zero: A's up to
        // the kind's rank, which segments read; B's up to the slot's end, which slot-batched steps read (a
        // zero B row cancels whatever an earlier adapter left in that row of A).
        if (written < rank) {
          const zeros = rank - written;
          await this.store.writeRows(
            names.a,
            firstRow + written,
            zeros,
            new Float32Array(zeros * inFeatures),
          );
        }
        const rowsPerSlot = this.shape.rowsPerSlot;
        if (written < rowsPerSlot) {
          const zeros = rowsPerSlot - written;
          await this.store.writeRows(
            names.b,
            firstRow + written,
            zeros,
            new Float32Array(zeros * outFeatures),
          );
        }
      }
    }
    this.ranks[slot - 1] = ranks;
    this.biased[slot - 1] = adapter.modules.some((m) => m.scaledBias !== null);
    this.views[slot - 1] = undefined;
  }

  /** Marks a slot empty. Its rows are left as they are: no step reads them until the next write. */
  clear(slot: number): void {
    this.checkSlot(slot);
    this.ranks[slot - 1] = emptyRanks();
    this.biased[slot - 1] = false;
    this.views[slot - 1] = undefined;
  }

  /** Whether any of these slots' adapters has a lora bias. */
  anyBias(slots: readonly number[]): boolean {
    return slots.some((slot) => this.biased[slot - 1]);
  }

  /** The bank rows [start, end) that a step reads for this slot's adapter on modules of this kind. */
  rows(slot: number, kind: ModuleKind): [number, number] {
    this.checkSlot(slot);
    const start = (slot - 1) * this.shape.rowsPerSlot;
    return [start, start + this.ranks[slot - 1]![kind]];
  }

  /** Bytes of bank data one step reads for this slot's adapter (each distinct adapter is read once). */
  bytesRead(slot: number, bytesPerValue: number): number {
    this.checkSlot(slot);
    let values = 0;
    for (const kind of MODULE_KINDS) {
      const { inFeatures, outFeatures } = moduleShape(this.model, kind);
      values +=
        this.model.numLayers * (this.ranks[slot - 1]![kind] * (inFeatures + outFeatures) + outFeatures);
    }
    return values * bytesPerValue;
  }

  feeds(): Record<string, Tensor> {
    return this.store.tensors();
  }

  /**
   * Adds the segment-views feeds: for segment i and every bank, the rows of slot `slots[i]` as input
   * `<bank>.i`, without a copy. Segments past the given slots repeat the first one; they hold no tokens.
   * Names and tensors are cached: at 64 segments a step feeds thousands of them.
   */
  addSegmentFeeds(feeds: Record<string, Tensor>, slots: readonly number[], segments: number): void {
    for (let i = 0; i < segments; i++) {
      this.segmentInputs[i] ??= this.bankOrder.map((bank) => segmentInputName(bank.name, i));
      const names = this.segmentInputs[i]!;
      const views = this.slotViews(slots[i] ?? slots[0]!);
      for (let j = 0; j < names.length; j++) feeds[names[j]!] = views[j]!;
    }
  }

  /**
   * The feeds of a slot-batched or span-masked step over slots first..last: every A and B bank's rows of
   * those slots, all R rows of each, as views (no copy; later writes show through), shaped [slots · R,
   * width], or [slots, R, width] with `perSlot` (the batched operands of slot-batched steps). Those graphs
   * take no lora bias.
   */
  spanFeeds(first: number, last: number, perSlot: boolean): Record<string, Tensor> {
    this.checkSlot(first);
    this.checkSlot(last);
    const known = this.lastSpan;
    if (known?.first === first && known.last === last && known.perSlot === perSlot) return known.feeds;
    const R = this.shape.rowsPerSlot;
    const span = last - first + 1;
    const feeds: Record<string, Tensor> = {};
    for (const { name, bias } of this.bankOrder) {
      if (bias) continue;
      const view = this.store.rowsView(name, (first - 1) * R, span * R);
      feeds[name] = perSlot ? new Tensor(view.type, view.data, [span, R, view.dims[1]!]) : view;
    }
    this.lastSpan = { first, last, perSlot, feeds };
    return feeds;
  }

  private slotViews(slot: number): Tensor[] {
    this.checkSlot(slot);
    const known = this.views[slot - 1];
    if (known) return known;
    const views = this.bankOrder.map(({ name, kind, bias }) => {
      if (bias) return this.store.rowsView(name, slot - 1, 1);
      const [start, end] = this.rows(slot, kind);
      return this.store.rowsView(name, start, end - start);
    });
    this.views[slot - 1] = views;
    return views;
  }

  private checkSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 1 || slot > this.shape.slots) {
      throw new LoraBankError(`slot ${slot} is out of range 1..${this.shape.slots}`);
    }
  }
}

function emptyRanks(): Record<ModuleKind, number> {
  return { q: 0, k: 0, v: 0, o: 0, gate: 0, up: 0, down: 0 };
}
