// The native CUDA backend's JavaScript surface: a Node-API addon (worker/engine/cuda/native/, built by
// `npm run build:cuda` where nvcc is found) that holds one model on an NVIDIA GPU and runs ragged steps
// over it. This file types the addon and loads it with an error that says what is missing.
import { existsSync } from "node:fs";
// Not named createRequire: the GPU bundle's banner (../shared/device/prepare.sh) declares that name.
import { createRequire as requireFrom } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { PenaltyEntries } from "../decode-row.ts";

/** Where `npm run build:cuda` writes the addon. LUMINET_CUDA_ADDON overrides it (the GPU bundle does). */
export const CUDA_ADDON_PATH = join(
  dirname(dirname(dirname(dirname(fileURLToPath(import.meta.url))))),
  "build",
  "luminet-cuda.node",
);

/**
 * The same backend built for the CPU emulator (`npm run build:cuda -- --emulate`): its kernels run on the host,
 * for tests on machines without a GPU. Load it by pointing LUMINET_CUDA_ADDON at it.
 */
export const CUDA_EMULATED_ADDON_PATH = join(dirname(CUDA_ADDON_PATH), "luminet-cuda-emulated.node");

export class CudaUnavailableError extends Error {}

export type WeightDtype = "F32" | "F16" | "BF16";

/** What the native model is built for. Every size is fixed at construction; memory is allocated once. */
export interface CudaModelSpec {
  layers: number;
  hidden: number;
  intermediate: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  rmsNormEps: number;
  /** Qwen2: q, k and v projections carry a bias (weight "layers.{l}.qkv_bias"). */
  qkvBias: boolean;
  /** Qwen3: each q and k head is RMS-normalized before rotary (weights "layers.{l}.q_norm", "k_norm"). */
  qkNorm: boolean;
  /** lm_head reuses the embedding (no "lm_head" weight is uploaded). */
  tieWordEmbeddings: boolean;
  /** Rotary inverse frequencies, headDim/2 of them (rope.ts). */
  invFreq: Float32Array;
  /** What cos and sin are multiplied by (YaRN's attention factor; 1 otherwise): the softmax scale takes its square. */
  ropeScale: number;
  /** Positions each cache row holds. */
  maxContext: number;
  /** Sequences whose KV cache is resident at once (cache rows 0..cacheRows-1). */
  cacheRows: number;
  /** Most tokens (rows) in one step: a decode batch or a prefill chunk. */
  maxStepTokens: number;
  /** Adapter slots 1..slots; slot 0 means no adapter. */
  slots: number;
  /** Largest rank a slot holds. */
  maxRank: number;
  /** Replay each step shape's launches as a captured CUDA graph. */
  cudaGraphs: boolean;
  /** CUDA device ordinal. */
  device: number;
}

/** One adapter module as the PEFT parser produces it (peft.ts): A [rank, in], scale·Bᵀ [rank, out], scale·bias [out]. */
export interface NativeAdapterModule {
  layer: number;
  /** Index in MODULE_KINDS: q, k, v, o, gate, up, down. */
  kind: number;
  rank: number;
  a: Float32Array;
  scaledBT: Float32Array;
  scaledBias: Float32Array | null;
}

/**
 * One step: row i is token tokens[i] at position positions[i] of the sequence in cache row cacheRows[i],
 * under adapter slot slots[i]. Its key and value are written at that position before attention, which
 * covers positions 0..positions[i]: a prefill chunk is rows of one cache row at consecutive positions, a
 * decode batch one row per sequence, and both may mix in one step.
 */
export interface NativeStep {
  tokens: Int32Array;
  cacheRows: Int32Array;
  positions: Int32Array;
  slots: Int32Array;
  /** The rows whose next-token logits are wanted, in the order the results list them. */
  logitRows: Int32Array;
  /** Copy the logits to the host (else only the argmax comes back). */
  returnLogits: boolean;
  /** Return each logit row's `candidates` largest logits (0..256; absent or 0: none). */
  candidates?: number;
  /** With candidates: each logit row's temperature for the log-sum-exp (≤ 0 counts as 1). */
  temperatures?: Float32Array;
  /** Time the forward's phases on the device (NativeStepResult.phases); for benchmarks, not for serving. */
  profile?: boolean;
  /**
   * Penalties applied, before the argmax and the candidates, to a copy of the logit rows (logits and
   * logitsOf stay raw): one entry per (logit row, token) — RowPenalties (decode-row.ts) with each entry's
   * row, an index into logitRows; entries grouped by row, rows ascending, no token twice in a row.
   */
  penalties?: NativePenalties;
}

export type NativePenalties = PenaltyEntries;

/** A step's candidates: per logit row, its largest logits, largest first (ties: lower id first; NaN = -inf). */
export interface NativeCandidates {
  /** [logit rows, candidates] token ids. */
  tokens: Int32Array;
  /** [logit rows, candidates] their logits. */
  logits: Float32Array;
  /** Per logit row, log Σ exp(logit / temperature) over the whole vocabulary. */
  logSumExp: Float32Array;
}

export interface NativeStepResult {
  /** Greedy next token of each logit row, computed on the device. */
  argmax: Int32Array;
  /** [logitRows.length, vocab] when returnLogits, else null. */
  logits: Float32Array | null;
  /** When the step asked for candidates, else null. */
  candidates: NativeCandidates | null;
  /**
   * When the step was profiled: device milliseconds per phase of the forward ("qkv gemm", "attention",
   * "lora", ...; a phase of every layer summed over the layers), in the order of the forward; else null.
   */
  phases: Record<string, number> | null;
}

export interface NativeMemory {
  weightsBytes: number;
  kvCacheBytes: number;
  adapterBankBytes: number;
  scratchBytes: number;
  freeBytes: number;
  totalBytes: number;
}

/** Peak rates measured on the device: an fp16 GEMM with fp32 output (the engine's kind) and a device copy. */
export interface NativeRoofline {
  flopsPerSecond: number;
  bytesPerSecond: number;
}

export interface NativeCudaModel {
  /**
   * Uploads part of a named weight, converted to fp16 on the device, starting at element `offset`.
   * Names: embed [vocab, hidden], lm_head, final_norm, and per layer l: layers.{l}.attn_norm,
   * layers.{l}.qkv [q+k+v rows, hidden], layers.{l}.qkv_bias, layers.{l}.o, layers.{l}.mlp_norm,
   * layers.{l}.gate_up [gate rows then up rows, hidden], layers.{l}.down.
   */
  setWeight(name: string, data: Uint8Array, dtype: WeightDtype, offset: number): void;
  /** Fills a slot with an adapter's modules (untargeted ones get rank 0) off the compute stream. */
  writeAdapter(slot: number, modules: NativeAdapterModule[]): Promise<void>;
  /** Empties a slot: every module rank 0. */
  clearSlot(slot: number): void;
  /** Copies a KV cache row (keys and values, every position) into another, in order with the steps. */
  copyCacheRow(from: number, to: number): void;
  step(step: NativeStep): Promise<NativeStepResult>;
  memory(): NativeMemory;
  /** The logits of logit row `row` of the last step (kept on the device until the next step). */
  logitsOf(row: number): Float32Array;
  /** Times `repeats` GEMMs of gemmSize³ and copies of copyBytes (each read and written) after a warm-up. */
  roofline(sizes: { gemmSize: number; copyBytes: number; repeats: number }): Promise<NativeRoofline>;
  deviceName(): string;
  close(): void;
}

export interface CudaAddon {
  CudaModel: new (spec: CudaModelSpec) => NativeCudaModel;
  /** CUDA devices visible to this process (0 where the driver finds none). */
  deviceCount(): number;
}

let addon: CudaAddon | null = null;

/** Loads the addon, or throws a CudaUnavailableError that says how to get it. */
export function loadCudaAddon(): CudaAddon {
  if (addon) return addon;
  const path = resolve(process.env.LUMINET_CUDA_ADDON ?? CUDA_ADDON_PATH);
  if (!existsSync(path)) {
    throw new CudaUnavailableError(
      `the CUDA backend is not built (no ${path}): run \`npm run build:cuda\` on a host with nvcc (CUDA 12 or 13)`,
    );
  }
  try {
    addon = requireFrom(import.meta.url)(path) as CudaAddon;
  } catch (error) {
    throw new CudaUnavailableError(
      `the CUDA backend at ${path} does not load: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  return addon;
}
