// The one place that picks an engine for a device: CPU and WebGPU run the onnxruntime Engine, CUDA the
// native CudaEngine. Both answer the calls in ServingEngine, which is what the worker, `generate` and the
// benchmarks use.
import type { LoadedAdapter } from "../adapters/peft.ts";
import { type CUDA_FORMULATION, CudaEngine, type CudaEngineOptions } from "./cuda/cuda-engine.ts";
import type { DecodeChoice, DecodeRow } from "./decode-row.ts";
import { Engine, type EngineOptions, type LoraFormulation, type PrefillPrompt } from "./engine.ts";
import type { ModelConfig } from "./model-config.ts";
import type { PrefixCacheStats } from "./prefix-cache.ts";

/** The calls every engine answers, with the same errors for the same misuse. */
export interface ServingEngine {
  readonly model: ModelConfig;
  /** How the engine applies many adapters in one step. */
  readonly formulation: LoraFormulation | typeof CUDA_FORMULATION;
  /**
   * Prompts prefilled together are right-padded to the longest (onnxruntime), not run ragged (CUDA): a
   * padded position costs like a real one, so callers group prompts of close lengths (prefill-batches.ts).
   */
  readonly padsPrefills: boolean;
  /**
   * A prefilled prompt's whole blocks are in the prefix cache as soon as its prefill ends (onnxruntime with
   * a prefix cache), so a prompt that shares them can wait a step and prefill only the rest. The CUDA
   * engine reuses a prompt's row only once its sequence is released.
   */
  readonly prefixReadyAfterPrefill: boolean;
  writeAdapter(slot: number, adapter: LoadedAdapter): Promise<void>;
  clearSlot(slot: number): void;
  warmUp(): Promise<void>;
  prefill(id: string, tokens: readonly number[], slot: number, allLogits?: boolean): Promise<Float32Array[]>;
  /** Prompts, or chunks of long ones (PrefillPrompt), in one call; see Engine.prefillTogether. */
  prefillTogether(prompts: readonly PrefillPrompt[]): Promise<Float32Array[]>;
  decode(tokens: ReadonlyMap<string, number>): Promise<Map<string, Float32Array>>;
  /**
   * A decode where the sequences in `choices` may come back picked or as candidates instead of their
   * logits (decode-row.ts); the others get their logits. The CUDA engine settles choices on the device,
   * the onnxruntime engine in its graph, penalties included in both.
   */
  decodePicking(
    tokens: ReadonlyMap<string, number>,
    choices: ReadonlyMap<string, DecodeChoice>,
  ): Promise<Map<string, DecodeRow>>;
  /** The logits of a sequence of the last decode, for candidates that could not settle its draw. */
  logitsOf(id: string): Float32Array;
  switchAdapter(id: string, slot: number): void;
  /**
   * Engine.park and resume: a decoding sequence leaves the batch with its cache kept aside (CUDA: in a cache
   * row beyond maxBatch), and comes back. Where park throws (CUDA without such a row free) or is absent, a
   * sequence that must leave is released and prefilled again.
   */
  park?(id: string): Promise<void>;
  resume?(id: string, slot: number): void;
  release(id: string): void;
  /** The tokens of a prompt a prefill would now take from a stored prefix; 0 without a prefix cache. */
  cachedPrefixLength(prompt: Pick<PrefillPrompt, "tokens" | "slot" | "prefixScope">): number;
  /** Per sequence, the prompt tokens a stored prefix's cache covered; 0 without a prefix cache. */
  reusedPromptTokens(ids: readonly string[]): number[];
  /** What the prefix cache holds and has spared; null where none is configured. */
  prefixCacheStats(): PrefixCacheStats | null;
  readonly running: number;
  sequenceLength(id: string): number | undefined;
  close(): Promise<void>;
}

/**
 * The engine for `options.device` (a CudaEngine for cuda: narrow with instanceof for decodeGreedy). For
 * cuda, throws CudaUnavailableError (cuda/native.ts) where the addon is not built or no GPU is visible.
 */
export async function createEngine(options: EngineOptions | CudaEngineOptions): Promise<ServingEngine> {
  return options.device === "cuda" ? await CudaEngine.create(options) : await Engine.create(options);
}
