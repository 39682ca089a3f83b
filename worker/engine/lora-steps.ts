// Which multi-LoRA graph variant each step runs, and the LoRA inputs it is fed (graph-builder.ts has the
// formulations): the segment variant that fits the step's distinct adapters, slot-batched or span-masked
// decode steps where their slots lie close, masked rows on GPUs; with the hysteresis that keeps a count
// hovering at an edge from switching onnxruntime sessions every step.
import { Tensor } from "onnxruntime-node";
import type { ComputeDtype } from "./device.ts";
import type { LoraGraphOptions } from "./graph-builder.ts";
import type { LoraBanks } from "./lora-banks.ts";
import { MODULE_KINDS } from "./model-config.ts";

export const LORA_FORMULATIONS = ["segment-views", "segments", "masked"] as const;
export type LoraFormulation = (typeof LORA_FORMULATIONS)[number];

/** 1.0 as IEEE half-precision bits. */
const FLOAT16_ONE = 0x3c00;

/** A zeroed mask of this many values of the compute dtype, and 1.0 in it. */
function zeroMask(dtype: ComputeDtype, length: number): { values: Float32Array | Uint16Array; one: number } {
  return dtype === "float32"
    ? { values: new Float32Array(length), one: 1 }
    : { values: new Uint16Array(length), one: FLOAT16_ONE };
}

/** Graph variants by the number of adapter segments; a step uses the smallest that fits (but see below). */
const SEGMENT_BUCKETS = [1, 4, 16, 64];
/**
 * Decode steps in a row that a smaller segment variant must have sufficed for before the engine moves down
 * to it. The step after a change of onnxruntime session runs slower: on CPU, alternating variants step by
 * step cost 28–51 % a step, while running one variant larger than needed cost at most 7 %
 * (docs/BENCHMARKS.md), and a batch's distinct-adapter count often hovers at a bucket's edge.
 */
const STEPS_BEFORE_SMALLER_VARIANT = 16;
/** Session key of the base graph, and of the one masked-rows graph (which takes any number of adapters). */
export const BASE_GRAPH = 0;
const MASKED_GRAPH = -1;
/**
 * Session key of the slot-batched graph: a decode step with segment views runs the bank rows of every slot
 * from its lowest adapter's to its highest as one batched product per module when its adapters fill at
 * least half of those slots, more than MOST_SEGMENTS_BEFORE_SLOT_BATCHED distinct adapters are in it and
 * none of those slots has a lora bias (see slotBatchedStep).
 */
const SLOT_BATCHED_GRAPH = -2;
const MOST_SEGMENTS_BEFORE_SLOT_BATCHED = 4;
/**
 * Session key of the span-masked graph: a decode step with segment views whose adapters lie within
 * SPAN_MASKED_SLOTS consecutive slots, none with a lora bias, runs their rows as plain Gemm operands, each
 * token masked to its slot's rows; once on, it stays while they lie within twice as many (spanMaskedStep).
 * A prefill over one adapter runs it too (spanMaskedPrefill).
 */
const SPAN_MASKED_GRAPH = -3;
const SPAN_MASKED_SLOTS = 4;

/** The adapter slots among a step's rows' slots (0: no adapter), each once, in order of first use. */
export function distinctSlots(slots: readonly number[]): number[] {
  return [...new Set(slots.filter((s) => s !== 0))];
}

export class LoraSteps {
  /** Segment count of the variant recent steps ran (0 after a decode without adapters). */
  private segmentVariant = 0;
  /** Decode steps in a row that a smaller variant than segmentVariant would have served. */
  private smallerVariantSteps = 0;
  /** Whether decode steps run the slot-batched graph (segment views only; prefills keep segmentVariant). */
  private slotBatched = false;
  /** Decode steps in a row that segment views would have served while slotBatched. */
  private stepsWithoutSlotBatched = 0;
  /** Whether decode steps run the span-masked graph (segment views only). */
  private spanMasked = false;

  constructor(
    readonly formulation: LoraFormulation,
    private readonly banks: LoraBanks,
    private readonly dtype: ComputeDtype,
  ) {}

  /** The graph keys an engine allowing this many distinct adapters a step may run, base graph first. */
  variants(maxAdaptersPerStep: number): number[] {
    if (this.formulation === "masked") return [BASE_GRAPH, MASKED_GRAPH];
    const keys = [BASE_GRAPH, ...SEGMENT_BUCKETS.filter((bucket) => bucket <= maxAdaptersPerStep)];
    if (this.slotBatchedPays(maxAdaptersPerStep, maxAdaptersPerStep)) keys.push(SLOT_BATCHED_GRAPH);
    if (this.formulation === "segment-views") keys.push(SPAN_MASKED_GRAPH);
    return keys;
  }

  /** The LoRA part of a graph key's options (null: the base graph). */
  graphOptions(key: number): LoraGraphOptions | null {
    const { slots, rowsPerSlot } = this.banks.shape;
    if (key === BASE_GRAPH) return null;
    if (key === MASKED_GRAPH) return { formulation: "masked", slots, rowsPerSlot };
    if (key === SLOT_BATCHED_GRAPH) return { formulation: "slot-batched", rowsPerSlot };
    if (key === SPAN_MASKED_GRAPH) return { formulation: "span-masked", rowsPerSlot };
    return this.formulation === "segment-views"
      ? { formulation: "segment-views", segments: key }
      : { formulation: "segments", segments: key, slots, rowsPerSlot };
  }

  /**
   * Adds the LoRA inputs for the rows' adapters (`slots`, row by row; `distinct`, the adapter slots among
   * them, each once: distinctSlots) and returns the key of the graph to run (BASE_GRAPH when no row has an
   * adapter). Each distinct adapter is one segment or one block of masked rows: its bank rows are read once
   * per step, however many rows use it; slot-batched and span-masked steps read every spanned slot's rows
   * once instead.
   */
  addFeeds(
    feeds: Record<string, Tensor>,
    slots: number[],
    distinct: number[],
    seqLen: number,
    decode: boolean,
  ): number {
    if (distinct.length === 0) {
      if (decode) {
        this.segmentVariant = 0;
        this.slotBatched = false;
        this.spanMasked = false;
      }
      return BASE_GRAPH;
    }
    if (this.formulation === "masked") {
      Object.assign(feeds, this.banks.feeds());
      this.addMaskedFeeds(feeds, distinct, slots, seqLen);
      return MASKED_GRAPH;
    }
    // Tracked on slot-batched steps too: the prefills in between run the segment variant.
    const bucket = this.segmentBucket(distinct.length, decode);
    const first = Math.min(...distinct);
    const last = Math.max(...distinct);
    if (this.banks.anyBias(distinct)) {
      // Neither graph over a run of slots takes lora biases: segment views. (A slot in the run that no row
      // uses adds nothing, whatever its adapter.)
      if (decode) {
        this.spanMasked = false;
        this.slotBatched = false;
      }
    } else if (decode ? this.spanMaskedStep(first, last) : this.spanMaskedPrefill(distinct.length)) {
      if (decode) this.slotBatched = false;
      this.addSpanMaskedFeeds(feeds, slots, seqLen, first, last);
      return SPAN_MASKED_GRAPH;
    } else if (decode && this.slotBatchedStep(distinct.length, last - first + 1)) {
      this.addSlotBatchedFeeds(feeds, slots, seqLen, first, last);
      return SLOT_BATCHED_GRAPH;
    }
    if (this.formulation === "segment-views") {
      this.addSegmentOrder(feeds, distinct, slots, seqLen, bucket);
      const perm = feeds.lora_perm!;
      feeds.lora_scatter = new Tensor("int64", perm.data as BigInt64Array, [perm.dims[0]!, 1]);
      this.banks.addSegmentFeeds(feeds, distinct, bucket);
    } else {
      Object.assign(feeds, this.banks.feeds());
      this.addSegmentFeeds(feeds, distinct, slots, seqLen, bucket);
    }
    return bucket;
  }

  /**
   * The segment variant for a run over this many distinct adapters: the smallest that fits, except that it
   * does not go below the variant recent steps ran until a smaller one has sufficed for
   * STEPS_BEFORE_SMALLER_VARIANT decode steps in a row (a prefill takes the current variant and neither
   * counts nor moves it down).
   */
  private segmentBucket(adapters: number, decode: boolean): number {
    const fits = SEGMENT_BUCKETS.find((b) => b >= adapters)!;
    if (fits >= this.segmentVariant) {
      this.segmentVariant = fits;
      this.smallerVariantSteps = 0;
    } else if (decode && ++this.smallerVariantSteps >= STEPS_BEFORE_SMALLER_VARIANT) {
      this.segmentVariant = fits;
      this.smallerVariantSteps = 0;
    }
    return this.segmentVariant;
  }

  /**
   * Whether a decode step over this many distinct adapters, spanning this many slots from the lowest to the
   * highest, runs slot-batched. It reads every spanned slot's rows (all of maxRank) in two multi-threaded
   * kernels per module, where segment views read only the step's adapters' rows but in a one-thread kernel
   * pair per segment: on CPU a decode step pays once its adapters fill at least half the slots they span
   * and are more than a few (bench-1b, 2 threads: U = 64 of 64 slots 0.71–0.74 → 0.80–0.85 of base-only;
   * 32 of 64, 16 of 16 and 16 spanning 16 of 64 faster; 16 spread over 64 slower; docs/BENCHMARKS.md).
   * Prefills cannot use it (each would be padded to every slot) and run the segment variant in between.
   * It stops only after segment views have sufficed for STEPS_BEFORE_SMALLER_VARIANT decode steps in a
   * row, as the segment variants move down. (While sessions still spun after a run, each switch between a
   * prefill's session and this one cost ~15 % of a step and slot-batched decodes waited for 16 decode steps
   * without a prefill; since force_spinning_stop, starting at once serves 5 % more tokens/s end to end,
   * docs/BENCHMARKS.md.)
   */
  private slotBatchedStep(adapters: number, spannedSlots: number): boolean {
    if (this.slotBatchedPays(adapters, spannedSlots)) {
      this.slotBatched = true;
      this.stepsWithoutSlotBatched = 0;
    } else if (this.slotBatched && ++this.stepsWithoutSlotBatched >= STEPS_BEFORE_SMALLER_VARIANT) {
      this.slotBatched = false;
      this.stepsWithoutSlotBatched = 0;
    }
    return this.slotBatched;
  }

  /**
   * Whether a decode step whose adapters lie in slots first..last runs span-masked: every token against every
   * spanned slot's rows in one multi-threaded Gemm pair per module, the second accumulating into the base
   * output (its C), where segment views run a one-thread Gemm pair per segment and gather and scatter the
   * rows around them. Its FLOPs grow with the spanned rows, so it starts over at most SPAN_MASKED_SLOTS
   * slots and stops past twice as many (a count hovering at the edge does not switch sessions every step).
   * bench-1b, 2 threads, onnxruntime's own per-node profile: the LoRA kernels of a U = 1 or U = 4 step took
   * ~3 ms less than with segment views (docs/BENCHMARKS.md).
   */
  private spanMaskedStep(first: number, last: number): boolean {
    const most = this.spanMasked ? 2 * SPAN_MASKED_SLOTS : SPAN_MASKED_SLOTS;
    this.spanMasked = this.formulation === "segment-views" && last - first + 1 <= most;
    return this.spanMasked;
  }

  /**
   * Whether a prefill over this many distinct adapters runs span-masked: over one adapter it multiplies
   * each token by that adapter's rows only, as segment views do, without gathering and scattering the
   * tokens around them, and on the session decodes over a few slots run. bench-1b, 2 threads, a 256-token
   * prompt, onnxruntime's profile: LoRA kernels 18 ms against 28 ms with segment views (docs/BENCHMARKS.md).
   * Over more adapters each token would meet every spanned slot's rows: segment views.
   */
  private spanMaskedPrefill(adapters: number): boolean {
    return this.formulation === "segment-views" && adapters === 1;
  }

  private slotBatchedPays(adapters: number, spannedSlots: number): boolean {
    return (
      this.formulation === "segment-views" &&
      adapters > MOST_SEGMENTS_BEFORE_SLOT_BATCHED &&
      2 * adapters >= spannedSlots
    );
  }

  /**
   * Slot-batched feeds for slots first..last: the slots' bank rows as batched operands, each slot's tokens
   * padded to the step's most per slot
   * (lora_slot_tokens [slots, most], padding naming token 0, whose deltas are never read back), where each
   * adapter token's delta lies in the slots' output (lora_slot_back) and its row in the step's output
   * (lora_scatter).
   */
  private addSlotBatchedFeeds(
    feeds: Record<string, Tensor>,
    slots: number[],
    seqLen: number,
    first: number,
    last: number,
  ): void {
    Object.assign(feeds, this.banks.spanFeeds(first, last, true));
    const span = last - first + 1;
    const perSlot: number[][] = Array.from({ length: span }, () => []);
    slots.forEach((slot, b) => {
      if (slot === 0) return;
      for (let i = 0; i < seqLen; i++) perSlot[slot - first]!.push(b * seqLen + i);
    });
    const most = Math.max(...perSlot.map((tokens) => tokens.length));
    const slotTokens = new BigInt64Array(span * most);
    const back: bigint[] = [];
    const scatter: bigint[] = [];
    perSlot.forEach((tokens, s) => {
      tokens.forEach((token, j) => {
        slotTokens[s * most + j] = BigInt(token);
        back.push(BigInt(s * most + j));
        scatter.push(BigInt(token));
      });
    });
    feeds.lora_slot_tokens = new Tensor("int64", slotTokens, [span, most]);
    feeds.lora_slot_back = new Tensor("int64", BigInt64Array.from(back), [back.length]);
    feeds.lora_scatter = new Tensor("int64", BigInt64Array.from(scatter), [scatter.length, 1]);
  }

  /**
   * Span-masked feeds for slots first..last: the slots' bank rows, and each token's mask over them (all R
   * rows of its slot; B rows past a rank are zero); a row without adapter is all zeros.
   */
  private addSpanMaskedFeeds(
    feeds: Record<string, Tensor>,
    slots: number[],
    seqLen: number,
    first: number,
    last: number,
  ): void {
    Object.assign(feeds, this.banks.spanFeeds(first, last, false));
    const span = last - first + 1;
    const R = this.banks.shape.rowsPerSlot;
    const tokens = slots.length * seqLen;
    const { values: mask, one } = zeroMask(this.dtype, tokens * span * R);
    slots.forEach((slot, b) => {
      if (slot === 0) return;
      const s = slot - first;
      for (let t = b * seqLen; t < (b + 1) * seqLen; t++) {
        mask.fill(one, (t * span + s) * R, (t * span + s + 1) * R);
      }
    });
    feeds.lora_span_mask = new Tensor(this.dtype, mask, [tokens, span * R]);
  }

  /**
   * The step's segments in a variant of `bucket` segments: lora_perm (adapter tokens, segment after
   * segment) and lora_counts (tokens per segment, zero past the distinct adapters).
   */
  private addSegmentOrder(
    feeds: Record<string, Tensor>,
    distinct: number[],
    slots: number[],
    seqLen: number,
    bucket: number,
  ): void {
    const perm: number[] = [];
    const counts = new BigInt64Array(bucket);
    distinct.forEach((slot, segment) => {
      slots.forEach((s, b) => {
        if (s !== slot) return;
        for (let i = 0; i < seqLen; i++) perm.push(b * seqLen + i);
        counts[segment]! += BigInt(seqLen);
      });
    });
    feeds.lora_perm = new Tensor("int64", BigInt64Array.from(perm, BigInt), [perm.length]);
    feeds.lora_counts = new Tensor("int64", counts, [bucket]);
  }

  private addSegmentFeeds(
    feeds: Record<string, Tensor>,
    distinct: number[],
    slots: number[],
    seqLen: number,
    bucket: number,
  ): void {
    this.addSegmentOrder(feeds, distinct, slots, seqLen, bucket);
    const perm = feeds.lora_perm!.data as BigInt64Array;
    const unsort = new BigInt64Array(slots.length * seqLen).fill(BigInt(perm.length));
    for (const [position, t] of perm.entries()) unsort[Number(t)] = BigInt(position);
    feeds.lora_unsort = new Tensor("int64", unsort, [unsort.length]);
    const biasRows = new BigInt64Array(bucket * 2);
    distinct.forEach((slot, segment) => {
      biasRows[segment * 2] = BigInt(slot - 1);
      biasRows[segment * 2 + 1] = BigInt(slot);
    });
    feeds.lora_bias_rows = new Tensor("int64", biasRows, [bucket, 2]);
    for (const kind of MODULE_KINDS) {
      const rows = new BigInt64Array(bucket * 2);
      distinct.forEach((slot, segment) => {
        const [start, end] = this.banks.rows(slot, kind);
        rows[segment * 2] = BigInt(start);
        rows[segment * 2 + 1] = BigInt(end);
      });
      feeds[`lora_rows.${kind}`] = new Tensor("int64", rows, [bucket, 2]);
    }
  }

  private addMaskedFeeds(
    feeds: Record<string, Tensor>,
    distinct: number[],
    slots: number[],
    seqLen: number,
  ): void {
    const tokens = slots.length * seqLen;
    const adapterOf = new Map(distinct.map((slot, i) => [slot, i]));
    const { values: onehot, one } = zeroMask(this.dtype, tokens * distinct.length);
    slots.forEach((slot, b) => {
      if (slot === 0) return;
      for (let i = 0; i < seqLen; i++)
        onehot[(b * seqLen + i) * distinct.length + adapterOf.get(slot)!] = one;
    });
    feeds.lora_onehot = new Tensor(this.dtype, onehot, [tokens, distinct.length]);
    feeds.lora_bias_slots = new Tensor(
      "int64",
      BigInt64Array.from(distinct, (s) => BigInt(s - 1)),
      [distinct.length],
    );
    for (const kind of MODULE_KINDS) {
      const ranges = distinct.map((slot) => this.banks.rows(slot, kind));
      const rowIds = ranges.flatMap(([start, end]) =>
        Array.from({ length: end - start }, (_, r) => start + r),
      );
      // A kind no active adapter targets still gets one row, masked out, so no tensor is empty.
      const width = Math.max(1, rowIds.length);
      const { values: mask } = zeroMask(this.dtype, tokens * width);
      const offsets = new Map<number, [number, number]>();
      let offset = 0;
      distinct.forEach((slot, i) => {
        const [start, end] = ranges[i]!;
        offsets.set(slot, [offset, offset + end - start]);
        offset += end - start;
      });
      slots.forEach((slot, b) => {
        if (slot === 0) return;
        const [from, to] = offsets.get(slot)!;
        for (let i = 0; i < seqLen; i++)
          mask.fill(one, (b * seqLen + i) * width + from, (b * seqLen + i) * width + to);
      });
      feeds[`lora_row_ids.${kind}`] = new Tensor(
        "int64",
        BigInt64Array.from(rowIds.length ? rowIds : [0], BigInt),
        [width],
      );
      feeds[`lora_mask.${kind}`] = new Tensor(this.dtype, mask, [tokens, width]);
    }
  }
}
