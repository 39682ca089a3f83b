// The ONNX graph of a Llama-family decoder with multi-LoRA banks, built from the model config and the
// safetensors index. Weights stay in the safetensors files as external data (F16/BF16 ones widened to
// float32 once on disk when the graph computes in float32: widened-weights.ts); tokens are flattened to
// [T, features] so every linear is a Gemm on the HF [out, in] weight (transB), with no copy.
// Inputs and outputs are fixed by the engine contract (Graph IO).
import { realpathSync } from "node:fs";
import { isAbsolute, join, relative, sep } from "node:path";
import { CANDIDATES } from "./decode-row.ts";
import { float32ToFloat16 } from "./dtype.ts";
import { floatAttr, Graph } from "./graph.ts";
import { cachedGraphFile } from "./graph-cache.ts";
import { bankNames, segmentInputName } from "./lora-banks.ts";
import {
  headNormName,
  MODULE_KINDS,
  type ModelConfig,
  type ModuleKind,
  moduleShape,
  weightName,
} from "./model-config.ts";
import { DataType, type Dim } from "./onnx-proto.ts";
import { Q4_BLOCK, q4Names, quantizedWeights } from "./quantized-weights.ts";
import { inverseFrequencies, ropeScale } from "./rope.ts";
import type { WeightIndex } from "./safetensors.ts";
import { widenedWeights } from "./widened-weights.ts";

// Bump whenever the graph this file emits changes, so cached graphs are rebuilt.
export const GRAPH_BUILDER_VERSION = 14;

/** Most outputs (Split) or inputs (Concat) one node gets: WebGPU allows 16 storage buffers per shader. */
const FAN_OUT = 8;

/**
 * The formulations of multi-LoRA (../shared/DESIGN.md, "The forward pass"):
 * - segments (SGMV): tokens grouped by adapter, one small Gemm pair per segment — ideal FLOPs and bytes,
 *   but many small kernels; each segment's A and B rows are gathered from the bank inputs in the graph.
 * - segment views: the same segments, but the host feeds each segment's A, B and bias rows as their own
 *   inputs (views of the host banks, no copy), and each delta is added into the base output in place
 *   (ScatterND add): no bank bytes are copied, whatever the number of adapters. The choice on CPU, where
 *   a step is compute-bound; it needs the banks in host memory.
 * - masked rows: one Gemm pair over the rows of every active adapter, each token masked to its own
 *   adapter's rows — ideal bytes and a handful of kernels, FLOPs growing with tokens × active rows; the
 *   choice where a step is memory-bound and kernels are costly to launch (GPU).
 * - slot-batched: one batched product pair per module over a run of consecutive slots, the host banks'
 *   rows of those slots used in place as [slots, R, ·] operands and each slot's tokens gathered into its
 *   batch — all R rows of every slot in the run read (not only the step's adapters' ranks, nor only the
 *   slots in the step), but by two multi-threaded kernels instead of a one-thread pair per segment; the
 *   engine's choice for segment-views decode steps whose adapters fill most of the slots they span. It
 *   takes no lora bias (nor does span-masked): the engine runs segment views where a slot has one.
 * - span-masked: masked rows over a run of consecutive slots, their host bank rows used in place as plain
 *   [span_slots · R, ·] operands (no gather) and the delta accumulated into the base output by the second
 *   Gemm (its C): three multi-threaded kernels per module and nothing gathered or scattered, FLOPs growing
 *   with tokens × spanned rows; the engine's choice for segment-views decode steps over a few slots.
 */
export type LoraGraphOptions =
  | { formulation: "segments"; segments: number; slots: number; rowsPerSlot: number }
  | { formulation: "segment-views"; segments: number }
  | { formulation: "masked"; slots: number; rowsPerSlot: number }
  | { formulation: "slot-batched"; rowsPerSlot: number }
  | { formulation: "span-masked"; rowsPerSlot: number };

export interface GraphOptions {
  computeDtype: "float32" | "float16";
  maxContext: number;
  lora: LoraGraphOptions | null;
  /**
   * Also output `step_key.<l>`/`step_value.<l>` [batch, kvHeads, 1, headDim]: each row's last token's key
   * and value (the present at position seqlens_k). A host cache fetches these instead of the presents and
   * writes them into its own buffers: onnxruntime-node copies every fetched output into a new buffer.
   */
  stepRows?: boolean;
  /**
   * "q4": the projection weights (q, k, v, o, gate, up, down) and lm_head as 4-bit blocks
   * (quantized-weights.ts) through com.microsoft.MatMulNBits with int8 activations (accuracy_level 4, which
   * needs the session to prepack them); float32 graphs only.
   */
  quantize?: "q4";
}

export class GraphBuildError extends Error {
  override name = "GraphBuildError";
}

const MS = "com.microsoft";
const OPSETS = [
  { domain: "", version: 21 },
  { domain: MS, version: 1 },
];

const WEIGHT_TYPES: Readonly<Record<string, DataType>> = {
  F32: DataType.FLOAT,
  F16: DataType.FLOAT16,
  BF16: DataType.BFLOAT16,
};

function checkOptions(model: ModelConfig, o: GraphOptions): void {
  if (!Number.isSafeInteger(o.maxContext) || o.maxContext <= 0) {
    throw new GraphBuildError(`maxContext must be a positive integer, got ${o.maxContext}`);
  }
  // GroupQueryAttention with cos/sin caches needs head_size % 16 == 0 (ORT 1.30).
  if (model.headDim % 16 !== 0) {
    throw new GraphBuildError(`head_dim ${model.headDim} is not a multiple of 16 (GroupQueryAttention)`);
  }
  if (o.quantize === "q4") {
    if (o.computeDtype !== "float32") throw new GraphBuildError("q4 weights need a float32 graph (CPU)");
    const inputs: [string, number][] = MODULE_KINDS.map((kind) => [
      `${kind}_proj`,
      moduleShape(model, kind).inFeatures,
    ]);
    inputs.push(["lm_head", model.hiddenSize]);
    for (const [name, inFeatures] of inputs) {
      if (inFeatures % Q4_BLOCK !== 0) {
        throw new GraphBuildError(
          `q4 quantizes ${name} in blocks of ${Q4_BLOCK} inputs, but it has ${inFeatures}`,
        );
      }
    }
  }
  if (o.lora !== null) {
    const { formulation: _, ...sizes } = o.lora;
    for (const [key, v] of Object.entries(sizes)) {
      if (!Number.isSafeInteger(v) || v <= 0) {
        throw new GraphBuildError(`lora.${key} must be a positive integer, got ${v}`);
      }
    }
  }
}

class DecoderBuilder {
  readonly g = new Graph();
  private readonly compute: DataType;
  private readonly computeBytes: (f: Float32Array) => Uint8Array;
  private readonly cast = new Map<string, string>();
  private readonly external = new Set<string>();
  // Per input value: its adapter tokens split into segments (shared by q/k/v and by gate/up).
  private readonly segmentsOf = new Map<string, string[]>();
  // Per input value: its tokens gathered into slot batches [span_slots, per_slot, in] (slot-batched).
  private readonly slotRows = new Map<string, string>();
  // Segments, per kind: each segment's rank [M] and the bank row ids of all segments in order [Σ rank].
  private readonly rankCounts = new Map<ModuleKind, string>();
  private readonly rowIds = new Map<ModuleKind, string>();
  // Per adapter token (in lora_perm order): the bias bank row of its segment.
  private biasSlotOfToken = "";
  // Per counts vector split as a tree: the group sizes of each level, computed once.
  private readonly groupSizes = new Map<string, { counts: string[]; sizes: string }>();

  private readonly weightsDir: string;
  private readonly dataFolder: string;
  // F16/BF16 tensors as float32 when computing in float32 (widened-weights.ts), else null.
  private readonly widened: WeightIndex | null;
  // The projection weights in 4 bits with quantize "q4" (quantized-weights.ts), else null.
  private readonly quantized: WeightIndex | null;

  constructor(
    private readonly model: ModelConfig,
    private readonly weights: WeightIndex,
    private readonly options: GraphOptions,
    dataFolder: string | undefined,
  ) {
    // Before any cached weights are written: q4 checks the shapes it quantizes.
    checkOptions(model, options);
    this.weightsDir = realpathSync(weights.dir);
    this.dataFolder = dataFolder === undefined ? this.weightsDir : realpathSync(dataFolder);
    this.widened = options.computeDtype === "float32" ? widenedWeights(weights, this.dataFolder) : null;
    this.quantized =
      options.quantize === "q4" ? quantizedWeights(weights, quantizedNames(model), this.dataFolder) : null;
    if (options.computeDtype === "float32") {
      this.compute = DataType.FLOAT;
      this.computeBytes = (f) => new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
    } else {
      this.compute = DataType.FLOAT16;
      this.computeBytes = (f) => {
        const h = float32ToFloat16(f);
        return new Uint8Array(h.buffer, h.byteOffset, h.byteLength);
      };
    }
  }

  // The checkpoint tensor as an external initializer, shape-checked: in its own dtype, or widened to
  // float32 when the graph computes in float32.
  private rawWeight(name: string, shape: readonly number[]): { value: string; type: DataType } {
    if (!this.weights.has(name)) throw new GraphBuildError(`no tensor ${name} in ${this.weights.dir}`);
    const info = this.weights.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
      throw new GraphBuildError(
        `tensor ${name} has shape [${info.shape.join(", ")}], expected [${shape.join(", ")}]`,
      );
    }
    const type = WEIGHT_TYPES[info.dtype];
    if (type === undefined) {
      throw new GraphBuildError(`tensor ${name} has dtype ${info.dtype}; weights must be F32, F16 or BF16`);
    }
    const wide = this.widened?.has(name) ? this.widened.info(name) : null;
    const source = wide ?? info;
    const file = wide ? wide.file : join(this.weightsDir, info.relativeFile);
    this.externalInitializer(name, wide ? DataType.FLOAT : type, shape, file, source);
    return { value: name, type: wide ? DataType.FLOAT : type };
  }

  // A tensor stored in a file of the graph's folder (once per name).
  private externalInitializer(
    name: string,
    dataType: DataType,
    dims: readonly number[],
    file: string,
    bytes: { offset: number; byteLength: number },
  ): void {
    if (this.external.has(name)) return;
    this.external.add(name);
    this.g.initializer({
      name,
      dataType,
      dims,
      external: { location: this.location(file), offset: bytes.offset, length: bytes.byteLength },
    });
  }

  // x [T, in] times the 4-bit weight [out, in] `name` (quantized-weights.ts) through MatMulNBits, with int8
  // activations (accuracy_level 4: the kernel MLAS runs once the session has prepacked the blocks).
  private q4Product(
    x: string,
    name: string,
    outFeatures: number,
    inFeatures: number,
    output?: string,
  ): string {
    const quantized = this.quantized!;
    const names = q4Names(name);
    const blocks = inFeatures / Q4_BLOCK;
    const packed = quantized.info(names.packed);
    const scales = quantized.info(names.scales);
    this.externalInitializer(
      names.packed,
      DataType.UINT8,
      [outFeatures, blocks, Q4_BLOCK / 2],
      packed.file,
      packed,
    );
    this.externalInitializer(names.scales, DataType.FLOAT, [outFeatures * blocks], scales.file, scales);
    const attrs = { K: inFeatures, N: outFeatures, bits: 4, block_size: Q4_BLOCK, accuracy_level: 4 };
    return this.g.op("MatMulNBits", [x, names.packed, names.scales], attrs, output, MS);
  }

  // ORT resolves locations against the .onnx file's folder (or the session's external-initializers
  // folder) and refuses any that leave it once symlinks are resolved.
  private location(file: string): string {
    const location = relative(this.dataFolder, file);
    if (location.startsWith("..") || isAbsolute(location)) {
      throw new GraphBuildError(`weight file ${file} lies outside the graph's folder ${this.dataFolder}`);
    }
    return location.split(sep).join("/");
  }

  // The weight in the compute dtype; a Cast on an initializer is folded once at session load.
  private weight(name: string, shape: readonly number[]): string {
    const known = this.cast.get(name);
    if (known !== undefined) return known;
    const raw = this.rawWeight(name, shape);
    const value =
      raw.type === this.compute ? raw.value : this.g.op("Cast", [raw.value], { to: this.compute });
    this.cast.set(name, value);
    return value;
  }

  private floatConst(key: string, dims: readonly number[], data: Float32Array): string {
    return this.g.constRaw(
      `${this.options.computeDtype}:${key}`,
      this.compute,
      dims,
      this.computeBytes(data),
    );
  }

  build(): Uint8Array {
    const m = this.model;
    const g = this.g;
    const { hiddenSize: H, vocabSize: V, headDim: D, numKvHeads: KV } = m;

    const inputIds = g.input("input_ids", DataType.INT64, ["batch", "sequence"]);
    const seqlensK = g.input("seqlens_k", DataType.INT32, ["batch"]);
    const totalLen = g.input("total_sequence_length", DataType.INT32, []);
    const logitsRows = g.input("logits_rows", DataType.INT64, ["rows"]);
    if (this.options.lora?.formulation === "segments") {
      const lora = this.options.lora;
      this.g.named("lora/", () => this.loraInputs(lora));
    }
    if (this.options.lora?.formulation === "segment-views") this.segmentViewInputs(this.options.lora);
    if (this.options.lora?.formulation === "masked") this.maskedInputs();
    if (this.options.lora?.formulation === "slot-batched") this.slotBatchedInputs();
    if (this.options.lora?.formulation === "span-masked") this.spanMaskedInputs();

    const [cosCache, sinCache] = this.ropeCaches();
    const bsShape = g.op("Concat", [g.op("Shape", [inputIds]), g.constInt64([-1])], { axis: 0 });
    const tokensShape = g.constInt64([-1, m.numHeads * D]);

    const ids = g.shaped(g.op("Reshape", [inputIds, g.constInt64([-1])]), DataType.INT64, ["tokens"]);
    const embed = this.rawWeight("model.embed_tokens.weight", [V, H]);
    let hidden = g.op("Gather", [embed.value, ids], { axis: 0 });
    if (embed.type !== this.compute) hidden = g.op("Cast", [hidden], { to: this.compute });

    let normed = g.op(
      "SimplifiedLayerNormalization",
      [hidden, this.weight("model.layers.0.input_layernorm.weight", [H])],
      { axis: -1, epsilon: floatAttr(m.rmsNormEps) },
    );
    const stepIndex = this.options.stepRows ? this.stepRowIndex(seqlensK) : null;
    for (let l = 0; l < m.numLayers; l++) {
      g.input(`past_key.${l}`, this.compute, ["batch", KV, "past_sequence", D]);
      g.input(`past_value.${l}`, this.compute, ["batch", KV, "past_sequence", D]);
      const toBsh = (kind: ModuleKind, rows: string): string =>
        g.shaped(g.op("Reshape", [rows, bsShape]), this.compute, [
          "batch",
          "sequence",
          moduleShape(m, kind).outFeatures,
        ]);
      const q = toBsh("q", this.headNormed(l, "q", this.linear(l, "q", normed)));
      const k = toBsh("k", this.headNormed(l, "k", this.linear(l, "k", normed)));
      const v = toBsh("v", this.linear(l, "v", normed));
      const [attn] = g.node(
        "GroupQueryAttention",
        [q, k, v, `past_key.${l}`, `past_value.${l}`, seqlensK, totalLen, cosCache, sinCache],
        { num_heads: m.numHeads, kv_num_heads: KV, do_rotary: 1, rotary_interleaved: 0 },
        { domain: MS, outputs: [g.fresh("attn"), `present_key.${l}`, `present_value.${l}`] },
      );
      g.output(`present_key.${l}`, this.compute, ["batch", KV, "present_sequence", D]);
      g.output(`present_value.${l}`, this.compute, ["batch", KV, "present_sequence", D]);
      if (stepIndex) {
        for (const kind of ["key", "value"]) {
          g.op("GatherElements", [`present_${kind}.${l}`, stepIndex], { axis: 2 }, `step_${kind}.${l}`);
          g.output(`step_${kind}.${l}`, this.compute, ["batch", KV, 1, D]);
        }
      }
      const attnRows = g.shaped(g.op("Reshape", [attn!, tokensShape]), this.compute, [
        "tokens",
        m.numHeads * D,
      ]);
      const o = this.linear(l, "o", attnRows);
      const [postNormed, , , residual] = this.skipNorm(
        o,
        hidden,
        `model.layers.${l}.post_attention_layernorm.weight`,
      );
      const gate = this.linear(l, "gate", postNormed!);
      const up = this.linear(l, "up", postNormed!);
      const act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up]);
      const down = this.linear(l, "down", act);
      const nextNorm =
        l + 1 < m.numLayers ? `model.layers.${l + 1}.input_layernorm.weight` : "model.norm.weight";
      [normed, , , hidden] = this.skipNorm(down, residual!, nextNorm) as [string, string, string, string];
    }

    const rows = g.op("Gather", [normed, logitsRows], { axis: 0 });
    const head = lmHeadName(m);
    if (this.quantized) {
      this.q4Product(rows, head, V, H, "logits");
    } else if (this.compute === DataType.FLOAT) {
      g.op("Gemm", [rows, this.weight(head, [V, H])], { transB: 1 }, "logits");
    } else {
      const logits = g.op("Gemm", [rows, this.weight(head, [V, H])], { transB: 1 });
      g.op("Cast", [logits], { to: DataType.FLOAT }, "logits");
    }
    g.output("logits", DataType.FLOAT, ["rows", V]);
    this.decodeChoices("logits");
    return g.encode(OPSETS, { "luminet.graph_builder_version": String(GRAPH_BUILDER_VERSION) });
  }

  /**
   * What a step may return instead of whole logit rows (decode-row.ts), each over the logit rows it names:
   * `picks` the argmax of the rows in `pick_rows`; `candidate_ids`/`candidate_logits` the CANDIDATES largest
   * logits of the rows in `candidate_rows` (largest first, ties lower id first) and `candidate_log_sum_exp`
   * log Σ exp(logit / T) at each one's `candidate_temperatures`, both after each row's penalties (penalized);
   * `whole_logits` the rows in `whole_rows`, raw.
   * onnxruntime runs every node of a graph whatever is fetched, so the row lists keep unused work to a row.
   */
  private decodeChoices(logits: string): void {
    const g = this.g;
    const V = this.model.vocabSize;
    const rowsOf = (input: string, output?: string) =>
      g.op("Gather", [logits, g.input(input, DataType.INT64, [input])], { axis: 0 }, output);
    const picked = this.penalized(rowsOf("pick_rows"), "pick");
    g.op("ArgMax", [picked], { axis: 1, keepdims: 0 }, "picks");
    g.output("picks", DataType.INT64, ["pick_rows"]);

    const candidates = this.penalized(rowsOf("candidate_rows"), "candidate");
    const count = Math.min(CANDIDATES, V);
    g.node(
      "TopK",
      [candidates, g.constInt64([count])],
      { axis: 1, largest: 1, sorted: 1 },
      { outputs: ["candidate_logits", "candidate_ids"] },
    );
    g.output("candidate_logits", DataType.FLOAT, ["candidate_rows", count]);
    g.output("candidate_ids", DataType.INT64, ["candidate_rows", count]);
    const temperatures = g.input("candidate_temperatures", DataType.FLOAT, ["candidate_rows"]);
    const scaled = g.op("Div", [candidates, g.op("Unsqueeze", [temperatures, g.constInt64([1])])]);
    g.op("ReduceLogSumExp", [scaled, g.constInt64([1])], { keepdims: 0 }, "candidate_log_sum_exp");
    g.output("candidate_log_sum_exp", DataType.FLOAT, ["candidate_rows"]);

    rowsOf("whole_rows", "whole_logits");
    g.output("whole_logits", DataType.FLOAT, ["whole_rows", V]);
  }

  /**
   * `rows` with the penalties of `<set>_penalty_*` applied (RowPenalties, decode-row.ts): per entry its
   * [row within the set, token], repetition, presence and frequency. In doubles, rounded to float32 where
   * PenaltyList.applyTo rounds (after the repetition step, then after both subtractions), so a pick or a
   * draw from candidates is the one the host would make from the penalized row.
   */
  private penalized(rows: string, set: string): string {
    const g = this.g;
    const entries = `${set}_penalties`;
    const index = g.input(`${set}_penalty_index`, DataType.INT64, [entries, 2]);
    const [repetition, presence, frequency] = ["repetition", "presence", "frequency"].map((name) =>
      g.input(`${set}_penalty_${name}`, DataType.DOUBLE, [entries]),
    );
    const asDouble = (x: string) => g.op("Cast", [x], { to: DataType.DOUBLE });
    const asFloat = (x: string) => g.op("Cast", [x], { to: DataType.FLOAT });
    const raw = asDouble(g.op("GatherND", [rows, index]));
    const zero = g.constRaw("double 0", DataType.DOUBLE, [], new Uint8Array(8));
    const repeated = asFloat(
      g.op("Where", [
        g.op("Greater", [raw, zero]),
        g.op("Div", [raw, repetition!]),
        g.op("Mul", [raw, repetition!]),
      ]),
    );
    const adjusted = g.op("Sub", [g.op("Sub", [asDouble(repeated), presence!]), frequency!]);
    return g.op("ScatterND", [rows, index, asFloat(adjusted)]);
  }

  /** GatherElements indices [batch, kvHeads, 1, headDim] picking each row's position seqlens_k. */
  private stepRowIndex(seqlensK: string): string {
    const g = this.g;
    const positions = g.op("Cast", [seqlensK], { to: DataType.INT64 });
    const column = g.op("Reshape", [positions, g.constInt64([-1, 1, 1, 1])]);
    return g.op("Expand", [column, g.constInt64([1, this.model.numKvHeads, 1, this.model.headDim])]);
  }

  // cos/sin [maxContext, headDim/2] computed from constants only, so ORT folds them once at session load
  // and the .onnx file stays small.
  private ropeCaches(): [string, string] {
    const g = this.g;
    const f32 = (key: string, dims: readonly number[], v: Float32Array): string =>
      g.constRaw(`f32:${key}`, DataType.FLOAT, dims, new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
    const inv = inverseFrequencies(this.model);
    const positions = g.op("Range", [
      f32("0", [], Float32Array.of(0)),
      f32(`${this.options.maxContext}`, [], Float32Array.of(this.options.maxContext)),
      f32("1", [], Float32Array.of(1)),
    ]);
    const angles = g.op("Mul", [
      g.op("Unsqueeze", [positions, g.constInt64([1])]),
      f32("inv_freq", [inv.length], inv),
    ]);
    const inCompute = (x: string): string =>
      this.compute === DataType.FLOAT ? x : g.op("Cast", [x], { to: this.compute });
    // YaRN scales cos and sin (so q and k, so each attention logit by its square).
    const scale = ropeScale(this.model);
    const scaled = (x: string): string =>
      scale === 1 ? x : g.op("Mul", [x, f32(`rope_scale ${scale}`, [], Float32Array.of(scale))]);
    return [inCompute(scaled(g.op("Cos", [angles]))), inCompute(scaled(g.op("Sin", [angles])))];
  }

  /**
   * Qwen3's q_norm / k_norm: each head of the projected rows RMS-normalized over head_dim with its weight,
   * before GroupQueryAttention rotates it. Other architectures get the rows back as they are.
   */
  private headNormed(l: number, kind: "q" | "k", rows: string): string {
    const m = this.model;
    if (!m.qkNorm) return rows;
    const g = this.g;
    const heads = kind === "q" ? m.numHeads : m.numKvHeads;
    const perHead = g.op("Reshape", [rows, g.constInt64([-1, heads, m.headDim])]);
    const normed = g.op(
      "SimplifiedLayerNormalization",
      [perHead, this.weight(headNormName(l, kind), [m.headDim])],
      { axis: -1, epsilon: floatAttr(m.rmsNormEps) },
    );
    return g.op("Reshape", [normed, g.constInt64([-1, heads * m.headDim])]);
  }

  // Residual add fused with RMSNorm: returns [normed, "", "", x + skip].
  private skipNorm(x: string, skip: string, weight: string): string[] {
    const g = this.g;
    return g.node(
      "SkipSimplifiedLayerNormalization",
      [x, skip, this.weight(weight, [this.model.hiddenSize])],
      { epsilon: floatAttr(this.model.rmsNormEps) },
      { domain: MS, outputs: [g.fresh("normed"), "", "", g.fresh("residual")] },
    );
  }

  private linear(l: number, kind: ModuleKind, x: string): string {
    const { inFeatures, outFeatures } = moduleShape(this.model, kind);
    const name = weightName(l, kind);
    const bias =
      this.model.qkvBias && (kind === "q" || kind === "k" || kind === "v")
        ? this.weight(name.replace(/\.weight$/, ".bias"), [outFeatures])
        : null;
    let base: string;
    if (this.quantized) {
      base = this.q4Product(x, name, outFeatures, inFeatures);
      if (bias) base = this.g.op("Add", [base, bias]);
    } else {
      const w = this.weight(name, [outFeatures, inFeatures]);
      base = this.g.op("Gemm", bias ? [x, w, bias] : [x, w], { transB: 1 });
    }
    const lora = this.options.lora;
    if (lora === null) return base;
    return this.g.named("lora/", () => {
      if (lora.formulation === "segment-views") return this.addViewDeltas(l, kind, x, base);
      if (lora.formulation === "slot-batched") return this.addSlotBatchedDeltas(l, kind, x, base);
      if (lora.formulation === "span-masked") return this.addSpanMaskedDeltas(l, kind, x, base);
      const delta =
        lora.formulation === "segments" ? this.loraDelta(l, kind, x) : this.maskedDelta(l, kind, x);
      return this.g.op("Add", [base, delta]);
    });
  }

  // Masked rows: the bank rows of the step's active adapters per kind, each token's mask over them
  // (1 on its own adapter's rows), and the active adapters' bias rows with each token's one-hot choice.
  private maskedInputs(): void {
    const g = this.g;
    for (const kind of MODULE_KINDS) {
      g.input(`lora_row_ids.${kind}`, DataType.INT64, [`rows_${kind}`]);
      g.input(`lora_mask.${kind}`, this.compute, ["tokens", `rows_${kind}`]);
    }
    g.input("lora_bias_slots", DataType.INT64, ["adapters"]);
    g.input("lora_onehot", this.compute, ["tokens", "adapters"]);
  }

  // Span-masked: each token's mask over the run's rows (1 on all R rows of its own slot), shared by every
  // layer and kind.
  private spanMaskedInputs(): void {
    this.g.input("lora_span_mask", this.compute, ["tokens", "span_rows"]);
  }

  // base + ((x · A_rowsᵀ) ⊙ mask) · B_rows over the run's rows as they lie in the banks, the base output as
  // the second Gemm's C. No lora bias, as slot-batched. A rows past a slot's rank may hold an earlier
  // adapter's values; its B rows there are zero, which cancels them.
  private addSpanMaskedDeltas(l: number, kind: ModuleKind, x: string, base: string): string {
    const g = this.g;
    const { a, b } = this.bankInputs(l, kind);
    const masked = g.op("Mul", [g.op("Gemm", [x, a], { transB: 1 }), "lora_span_mask"]);
    return g.op("Gemm", [masked, b, base]);
  }

  // One module's A and B bank inputs: every slot's rows, or only those of the step's run of slots, as
  // [span_rows, ·] (span-masked) or as batched operands [span_slots, R, ·] (slot-batched).
  private bankInputs(l: number, kind: ModuleKind): { a: string; b: string } {
    const lora = this.options.lora!;
    const rows: Dim[] =
      "slots" in lora
        ? [lora.slots * lora.rowsPerSlot]
        : lora.formulation === "slot-batched"
          ? ["span_slots", lora.rowsPerSlot]
          : ["span_rows"];
    const { inFeatures, outFeatures } = moduleShape(this.model, kind);
    const names = bankNames(l, kind);
    return {
      a: this.g.input(names.a, this.compute, [...rows, inFeatures]),
      b: this.g.input(names.b, this.compute, [...rows, outFeatures]),
    };
  }

  // One module's bias bank input, every slot's row (segments, masked rows; the run-of-slots graphs take none).
  private biasBankInput(l: number, kind: ModuleKind): string {
    const { slots } = this.options.lora as { slots: number };
    const { outFeatures } = moduleShape(this.model, kind);
    return this.g.input(bankNames(l, kind).bias, this.compute, [slots, outFeatures]);
  }

  // ((x · A_rowsᵀ) ⊙ mask) · B_rows + onehot · bias_rows: each active adapter's rows are read once.
  private maskedDelta(l: number, kind: ModuleKind, x: string): string {
    const g = this.g;
    const { a, b } = this.bankInputs(l, kind);
    const bias = this.biasBankInput(l, kind);
    const rows = `lora_row_ids.${kind}`;
    const down = g.op("Gemm", [x, g.op("Gather", [a, rows], { axis: 0 })], { transB: 1 });
    const masked = g.op("Mul", [down, `lora_mask.${kind}`]);
    const up = g.op("MatMul", [masked, g.op("Gather", [b, rows], { axis: 0 })]);
    const biases = g.op("MatMul", ["lora_onehot", g.op("Gather", [bias, "lora_bias_slots"], { axis: 0 })]);
    return g.op("Add", [up, biases]);
  }

  // Inputs shared by all layers, and what every layer reuses: per kind each segment's rank and the bank
  // row ids of all active rows; per adapter token its bias row. A handful of int64 nodes, run once a step.
  private loraInputs(lora: { segments: number }): void {
    const g = this.g;
    g.input("lora_perm", DataType.INT64, ["adapter_tokens"]);
    const counts = g.input("lora_counts", DataType.INT64, [lora.segments]);
    g.input("lora_unsort", DataType.INT64, ["tokens"]);
    const column = (input: string, c: number): string =>
      g.op("Gather", [input, g.constInt64([c], [])], { axis: 1 });
    for (const kind of MODULE_KINDS) {
      const rows = g.input(`lora_rows.${kind}`, DataType.INT64, [lora.segments, 2]);
      const starts = column(rows, 0);
      const rank = g.op("Sub", [column(rows, 1), starts]);
      this.rankCounts.set(kind, rank);
      this.rowIds.set(kind, this.raggedRange(starts, rank, `lora_rank_${kind}_all`));
    }
    const biasStarts = column(g.input("lora_bias_rows", DataType.INT64, [lora.segments, 2]), 0);
    const { segment } = this.positions(counts, "adapter_tokens");
    this.biasSlotOfToken = g.shaped(g.op("Gather", [biasStarts, segment], { axis: 0 }), DataType.INT64, [
      "adapter_tokens",
    ]);
  }

  // For counts [M], the positions 0..Σcounts-1 laid out segment after segment, each position's segment,
  // and each segment's first position. Empty segments own no position.
  private positions(counts: string, label: string): { position: string; segment: string; first: string } {
    const g = this.g;
    const zero = g.constInt64([0], []);
    const one = g.constInt64([1], []);
    const ends = g.op("CumSum", [counts, zero]);
    const total = g.op("ReduceSum", [counts], { keepdims: 0 });
    const position = g.shaped(g.op("Range", [zero, total, one]), DataType.INT64, [label]);
    const passed = g.op("GreaterOrEqual", [
      g.op("Unsqueeze", [position, g.constInt64([1])]),
      g.op("Unsqueeze", [ends, g.constInt64([0])]),
    ]);
    const segment = g.op("ReduceSum", [g.op("Cast", [passed], { to: DataType.INT64 }), g.constInt64([1])], {
      keepdims: 0,
    });
    return {
      position,
      segment: g.shaped(segment, DataType.INT64, [label]),
      first: g.op("Sub", [ends, counts]),
    };
  }

  // Concatenation of Range(starts[i], starts[i] + counts[i]) over the segments.
  private raggedRange(starts: string, counts: string, label: string): string {
    const g = this.g;
    const { position, segment, first } = this.positions(counts, label);
    const offset = g.op("Gather", [g.op("Sub", [starts, first]), segment], { axis: 0 });
    return g.shaped(g.op("Add", [position, offset]), DataType.INT64, [label]);
  }

  // Slot-batched: per slot of the step's run the tokens it serves, padded to the step's most per slot
  // (lora_slot_tokens [span_slots, per_slot], any token where padding), where each adapter token's delta
  // lies in the slots' output (lora_slot_back) and its row in the step's output (lora_scatter). The bank
  // inputs hold only the run's rows: [span_slots, R, ·].
  private slotBatchedInputs(): void {
    const g = this.g;
    g.input("lora_slot_tokens", DataType.INT64, ["span_slots", "per_slot"]);
    g.input("lora_slot_back", DataType.INT64, ["adapter_tokens"]);
    g.input("lora_scatter", DataType.INT64, ["adapter_tokens", 1]);
  }

  // base + x · Aᵀ · B for every slot of the run at once: the banks' rows used in place as batched operands
  // [span_slots, R, in] and [span_slots, R, out] (two multi-threaded kernels per module, no bank bytes
  // copied), each slot's tokens gathered into its batch; rows past an adapter's rank are zero in its B rows.
  // No lora bias: the engine runs this graph only for runs of slots without one.
  private addSlotBatchedDeltas(l: number, kind: ModuleKind, x: string, base: string): string {
    const g = this.g;
    const { outFeatures } = moduleShape(this.model, kind);
    const { a, b } = this.bankInputs(l, kind);
    let xs = this.slotRows.get(x);
    if (xs === undefined) {
      xs = g.op("Gather", [x, "lora_slot_tokens"], { axis: 0 });
      this.slotRows.set(x, xs);
    }
    const down = g.op("FusedMatMul", [xs, a], { transB: 1 }, undefined, MS);
    const up = g.op("MatMul", [down, b]);
    const flat = g.op("Reshape", [up, g.constInt64([-1, outFeatures])]);
    const back = g.op("Gather", [flat, "lora_slot_back"], { axis: 0 });
    return g.op("ScatterND", [base, "lora_scatter", back], { reduction: "add" });
  }

  // Segment views: the adapter tokens in segment order, each segment's size, and where each adapter
  // token's row lies in the step's output ([adapter_tokens, 1], for ScatterND).
  private segmentViewInputs(lora: { segments: number }): void {
    const g = this.g;
    g.input("lora_perm", DataType.INT64, ["adapter_tokens"]);
    g.input("lora_counts", DataType.INT64, [lora.segments]);
    g.input("lora_scatter", DataType.INT64, ["adapter_tokens", 1]);
  }

  // base + x_i · A_iᵀ · B_i + bias_i for each segment's tokens, A_i, B_i and bias_i fed as inputs; the
  // deltas are added into the base output's rows in place.
  private addViewDeltas(l: number, kind: ModuleKind, x: string, base: string): string {
    const g = this.g;
    const { inFeatures, outFeatures } = moduleShape(this.model, kind);
    const names = bankNames(l, kind);
    const parts = this.segments(x, inFeatures).map((seg, i) => {
      const rank = this.rowsLabel(`lora_rank_${kind}`, i, i + 1);
      const a = g.input(segmentInputName(names.a, i), this.compute, [rank, inFeatures]);
      const b = g.input(segmentInputName(names.b, i), this.compute, [rank, outFeatures]);
      const bias = g.input(segmentInputName(names.bias, i), this.compute, [1, outFeatures]);
      const down = g.op("Gemm", [seg, a], { transB: 1 });
      const value = g.shaped(g.op("Gemm", [down, b, bias]), this.compute, [
        this.rowsLabel("lora_tokens", i, i + 1),
        outFeatures,
      ]);
      return { value, from: i, to: i + 1 };
    });
    return g.op("ScatterND", [base, "lora_scatter", this.concatRows(parts, outFeatures)], {
      reduction: "add",
    });
  }

  private segments(x: string, inFeatures: number): string[] {
    const known = this.segmentsOf.get(x);
    if (known !== undefined) return known;
    const gathered = this.g.op("Gather", [x, "lora_perm"], { axis: 0 });
    const segs = this.splitRows(gathered, "lora_counts", inFeatures, "lora_tokens");
    this.segmentsOf.set(x, segs);
    return segs;
  }

  // The symbolic row count of rows [first, last) of a split or joined block: the same name for the same
  // count in every layer and module (see Graph.shaped).
  private rowsLabel(prefix: string, first: number, last: number): string {
    return last - first === 1 ? `${prefix}_${first}` : `${prefix}_${first}_to_${last - 1}`;
  }

  // WebGPU binds every input and output of a kernel as a storage buffer, at most 16 per shader: a Split
  // into 16 segments fails there. Split in a tree of at most FAN_OUT outputs per node instead (the group
  // sizes are sums of counts, int64 work computed once per counts vector).
  private splitRows(rows: string, counts: string, features: number, prefix: string): string[] {
    const parts = (this.options.lora as { segments: number }).segments;
    // One segment holds every row: a Split would only copy them.
    if (parts === 1) return [this.g.shaped(rows, this.compute, [this.rowsLabel(prefix, 0, 1), features])];
    return this.splitTree(rows, counts, 0, parts, features, prefix);
  }

  private splitTree(
    rows: string,
    counts: string,
    first: number,
    parts: number,
    features: number,
    prefix: string,
  ): string[] {
    const g = this.g;
    const shape = (value: string, from: number, n: number): string =>
      g.shaped(value, this.compute, [this.rowsLabel(prefix, from, from + n), features]);
    if (parts <= FAN_OUT) {
      const outs = g.node("Split", [rows, counts], { axis: 0 }, { outputs: parts });
      return outs.map((v, i) => shape(v, first + i, 1));
    }
    const groupSize = Math.ceil(parts / FAN_OUT);
    const groups = Math.ceil(parts / groupSize);
    const size = (i: number): number => Math.min(parts, (i + 1) * groupSize) - i * groupSize;
    let tree = this.groupSizes.get(counts);
    if (tree === undefined) {
      const groupCounts = Array.from({ length: groups }, (_, i) =>
        g.op("Slice", [counts, g.constInt64([i * groupSize]), g.constInt64([i * groupSize + size(i)])]),
      );
      const sizes = g.op(
        "Concat",
        groupCounts.map((c) => g.op("ReduceSum", [c], { keepdims: 1 })),
        { axis: 0 },
      );
      tree = { counts: groupCounts, sizes };
      this.groupSizes.set(counts, tree);
    }
    const { counts: groupCounts, sizes } = tree;
    const outer = g.node("Split", [rows, sizes], { axis: 0 }, { outputs: groups });
    return outer.flatMap((group, i) =>
      this.splitTree(
        shape(group, first + i * groupSize, size(i)),
        groupCounts[i]!,
        first + i * groupSize,
        size(i),
        features,
        prefix,
      ),
    );
  }

  // The same storage-buffer limit for Concat: join at most FAN_OUT inputs per node. Each part holds the
  // rows of segments [from, to).
  private concatRows(parts: { value: string; from: number; to: number }[], features: number): string {
    if (parts.length === 1) return parts[0]!.value;
    const chunks: { value: string; from: number; to: number }[] = [];
    for (let i = 0; i < parts.length; i += FAN_OUT) {
      const chunk = parts.slice(i, i + FAN_OUT);
      const from = chunk[0]!.from;
      const to = chunk[chunk.length - 1]!.to;
      const value =
        chunk.length === 1
          ? chunk[0]!.value
          : this.g.shaped(
              this.g.op(
                "Concat",
                chunk.map((c) => c.value),
                { axis: 0 },
              ),
              this.compute,
              [this.rowsLabel("lora_tokens", from, to), features],
            );
      chunks.push({ value, from, to });
    }
    return this.concatRows(chunks, features);
  }

  // x_i · A_iᵀ · B_i per segment, with each active adapter's A and B rows gathered once and split by rank,
  // plus each token's bias row; then back to token order, tokens without an adapter picking a zero row.
  private loraDelta(l: number, kind: ModuleKind, x: string): string {
    const g = this.g;
    const { inFeatures, outFeatures } = moduleShape(this.model, kind);
    const { a, b } = this.bankInputs(l, kind);
    const bias = this.biasBankInput(l, kind);
    const rowIds = this.rowIds.get(kind)!;
    const rank = this.rankCounts.get(kind)!;
    const gather = (bank: string, ids: string): string => g.op("Gather", [bank, ids], { axis: 0 });
    const prefix = `lora_rank_${kind}`;
    const aParts = this.splitRows(gather(a, rowIds), rank, inFeatures, prefix);
    const bParts = this.splitRows(gather(b, rowIds), rank, outFeatures, prefix);
    const parts = this.segments(x, inFeatures).map((seg, i) => ({
      value: g.op("MatMul", [g.op("Gemm", [seg, aParts[i]!], { transB: 1 }), bParts[i]!]),
      from: i,
      to: i + 1,
    }));
    const delta = g.shaped(
      g.op("Add", [this.concatRows(parts, outFeatures), gather(bias, this.biasSlotOfToken)]),
      this.compute,
      ["adapter_tokens", outFeatures],
    );
    const zero = this.floatConst(`zero_row:${outFeatures}`, [1, outFeatures], new Float32Array(outFeatures));
    const stacked = g.op("Concat", [delta, zero], { axis: 0 });
    return g.op("Gather", [stacked, "lora_unsort"], { axis: 0 });
  }
}

/** Every layer's projection weights: what q4 quantizes. */
function lmHeadName(model: ModelConfig): string {
  return model.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
}

/** What q4 quantizes: every layer's projection weights and lm_head (the embedding gather keeps its own). */
function quantizedNames(model: ModelConfig): string[] {
  const projections = Array.from({ length: model.numLayers }, (_, l) =>
    MODULE_KINDS.map((kind) => weightName(l, kind)),
  );
  return [...projections.flat(), lmHeadName(model)];
}

/**
 * The graph as ModelProto bytes. External data locations are relative to `dataFolder` (default: the
 * weights' folder): put the .onnx there, or create the session from bytes with
 * `extra.session.model_external_initializers_file_folder_path` set to it.
 */
export function buildGraph(
  model: ModelConfig,
  weights: WeightIndex,
  options: GraphOptions,
  dataFolder?: string,
): Uint8Array {
  return new DecoderBuilder(model, weights, options, dataFolder).build();
}

/**
 * Builds the graph once per (model, weight files, options, builder version) and returns its path; the
 * widened weights it references are rewritten if they were deleted since.
 */
export function cachedGraphPath(
  modelDir: string,
  model: ModelConfig,
  weights: WeightIndex,
  options: GraphOptions,
): string {
  return cachedGraphFile(
    modelDir,
    weights,
    { version: GRAPH_BUILDER_VERSION, model, options },
    (folder) => buildGraph(model, weights, options, folder),
    (folder) => {
      if (options.computeDtype === "float32") widenedWeights(weights, folder);
      if (options.quantize === "q4") quantizedWeights(weights, quantizedNames(model), folder);
    },
  );
}
