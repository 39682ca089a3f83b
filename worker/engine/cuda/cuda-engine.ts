// The engine on the native CUDA backend (native.ts): the same calls as the onnxruntime Engine, over one
// model resident on an NVIDIA GPU. Each running sequence owns a cache row of the device's KV cache
// (sequence-table.ts); prefills and decodes become ragged native steps (step-plan.ts), so prompts of any
// lengths prefill together and a decode is one row per sequence. Adapters go into resident slots as the
// parser produced them; the device applies each distinct adapter once per step (segmented, SGMV-style).
import { SingleBar } from "cli-progress";
import type { LoadedAdapter } from "../../adapters/peft.ts";
import { CANDIDATES, type DecodeChoice, type DecodeRow, penaltyEntries } from "../decode-row.ts";
import { usableCudaAddon } from "../device.ts";
import {
  checkDecodeStep,
  checkPrefillPrompts,
  EngineError,
  type EngineOptions,
  type PrefillPrompt,
} from "../engine.ts";
import { LoraBankError } from "../lora-banks.ts";
import { loadModelConfig, MODULE_KINDS, type ModelConfig, moduleShape } from "../model-config.ts";
import { PrefixCache, type PrefixCacheStats, PrefixScopes } from "../prefix-cache.ts";
import { inverseFrequencies, ropeScale } from "../rope.ts";
import { openWeights } from "../safetensors.ts";
import type {
  CudaAddon,
  CudaModelSpec,
  NativeAdapterModule,
  NativeCandidates,
  NativeCudaModel,
  NativeMemory,
  NativePenalties,
  NativeRoofline,
  NativeStep,
  NativeStepResult,
  WeightDtype,
} from "./native.ts";
import { type RunningSequence, SequenceTable } from "./sequence-table.ts";
import { planSteps, prefillRows, type StepRow } from "./step-plan.ts";
import { weightUploads } from "./weight-plan.ts";

export interface CudaEngineOptions extends EngineOptions {
  /** Replay each step shape as a captured CUDA graph (default on; off to compare). */
  cudaGraphs?: boolean;
  /** Most rows in one native step, so prompts prefill in chunks of this size (default 512, at least maxBatch). */
  stepTokens?: number;
}

/** What `Engine.formulation` reports for this engine: segmented multi-LoRA kernels on the device. */
export const CUDA_FORMULATION = "cuda-sgmv" as const;

/** Sequences resident at once when EngineOptions.maxBatch is not given: the worker's and bench's batch. */
export const DEFAULT_CACHE_ROWS = 64;
/** Rows per native step by default: prompts longer than this prefill in chunks. */
export const PREFILL_STEP_TOKENS = 512;

const WEIGHT_DTYPES: readonly string[] = ["F32", "F16", "BF16"] satisfies WeightDtype[];

/** What a run of rows asks of the device besides their argmax. */
interface RunOptions {
  /** Copy every logit row to the host. */
  returnLogits: boolean;
  /** One per row: return CANDIDATES candidates per row, their log-sum-exp at these temperatures. */
  temperatures?: Float32Array;
  /** Time the step's phases (CudaEngine.profileDecode). */
  profile?: boolean;
  /** Penalties the argmax and candidates are taken after (NativeStep.penalties). */
  penalties?: NativePenalties;
}

interface RowResults {
  logits: Float32Array[];
  argmax: number[];
  candidates: NativeCandidates | null;
  phases: Record<string, number> | null;
}

/** Calls that run steps must not overlap: each plans from the lengths the previous one left. */
export class CudaEngine {
  readonly formulation = CUDA_FORMULATION;
  readonly padsPrefills = false;
  readonly prefixReadyAfterPrefill = false;
  private readonly sequences: SequenceTable;
  /**
   * Rows of released sequences kept for their prompts' prefixes (EngineOptions.prefixCacheBytes: cache rows
   * beyond maxBatch): a new prompt that starts the same way gets a copy of the row and prefills only the
   * rest. null without rows for it.
   */
  private readonly prefixes: PrefixCache<number> | null;
  private readonly scopes = new PrefixScopes();
  private stepping = false;
  /** The sequences of the last decode, in its logit rows' order (logitsOf); none once another step ran. */
  private lastDecodeIds: string[] = [];

  private constructor(
    readonly options: CudaEngineOptions,
    readonly model: ModelConfig,
    readonly spec: CudaModelSpec,
    private readonly native: NativeCudaModel,
  ) {
    this.sequences = new SequenceTable(spec.cacheRows);
    this.prefixes =
      this.rowsBeyondBatch > 0
        ? new PrefixCache(this.rowsBeyondBatch * this.rowBytes, (row) => this.sequences.freeRow(row))
        : null;
  }

  /** Cache rows beyond maxBatch: stored prefixes' and parked sequences' (EngineOptions.prefixCacheBytes). */
  private get rowsBeyondBatch(): number {
    return this.spec.cacheRows - maxBatchOf(this.options);
  }

  /** Bytes of one cache row: keys and values of every layer, maxContext positions, fp16. */
  get rowBytes(): number {
    return cacheRowBytes(this.model, this.spec.maxContext);
  }

  /** Builds the native model and uploads the weights; `addon` defaults to the built one (device.ts). */
  static async create(options: CudaEngineOptions, addon?: CudaAddon): Promise<CudaEngine> {
    if (options.quantize) {
      throw new EngineError(
        `--quantize ${options.quantize} runs on --device cpu only; the CUDA engine runs fp16`,
      );
    }
    const cuda = usableCudaAddon(addon);
    const model = loadModelConfig(options.modelDir);
    const spec = modelSpec(model, options);
    const native = new cuda.CudaModel(spec);
    try {
      await uploadWeights(native, model, options.modelDir);
    } catch (error) {
      native.close();
      throw error;
    }
    return new CudaEngine(options, model, spec, native);
  }

  async writeAdapter(slot: number, adapter: LoadedAdapter): Promise<void> {
    this.checkBankSlot(slot);
    if (adapter.maxRank > this.spec.maxRank) {
      throw new LoraBankError(
        `adapter ${adapter.name} has rank ${adapter.maxRank}; this engine's slots hold at most ${this.spec.maxRank}`,
      );
    }
    this.scopes.writing(slot);
    await this.native.writeAdapter(slot, nativeModules(this.model, adapter));
    this.scopes.written(slot, adapter);
  }

  clearSlot(slot: number): void {
    this.checkBankSlot(slot);
    this.scopes.writing(slot);
    this.native.clearSlot(slot);
  }

  /**
   * Runs one base-model row in a free cache row, so the first real step does not pay for the device's
   * lazy setup (library handles, kernels). Nothing running is touched: the row's cache is rewritten by
   * whichever prefill takes it next.
   */
  async warmUp(): Promise<void> {
    const cacheRow = this.sequences.lowestFreeRow();
    if (cacheRow === undefined) return;
    const [step] = planSteps([{ token: 0, cacheRow, position: 0, slot: 0, logits: true }], 1, false);
    await this.native.step(step!.native);
  }

  /** Runs a prompt and returns the logits of its last token (or of every token when `allLogits`). */
  prefill(id: string, tokens: readonly number[], slot: number, allLogits = false): Promise<Float32Array[]> {
    return this.prefillTogether([{ id, tokens, slot, allLogits }]);
  }

  /**
   * Runs prompts, or chunks of them (PrefillPrompt), of any lengths (steps are ragged) and returns each
   * one's last-token logits, or every token's for one with `allLogits`, prompt after prompt. A chunk continues its
   * sequence's cache row at the sequence's length. Prompts longer than a step go in native chunks.
   */
  async prefillTogether(prompts: readonly PrefillPrompt[]): Promise<Float32Array[]> {
    checkPrefillPrompts(
      prompts,
      this.sequences.all,
      this.spec.maxContext,
      (slot) => this.checkSlot(slot),
      (id, tokens) => {
        for (const token of tokens) this.checkToken(id, token);
      },
    );
    this.checkDistinctAdapters(prompts.map((p) => p.slot));
    const fresh = prompts.filter((p) => !this.sequences.get(p.id));
    const maxBatch = maxBatchOf(this.options);
    // Parked sequences hold rows beyond maxBatch (park), so the batch's own rows are counted without them.
    const inBatch = this.sequences.size - this.sequences.parked;
    if (fresh.length > maxBatch - inBatch) {
      throw new EngineError(
        `no free cache row for ${fresh.length} more sequences: ${inBatch} of ${maxBatch} are running (maxBatch)`,
      );
    }
    const admitted = prompts.map((prompt) => this.admit(prompt));
    try {
      const rows = prefillRows(
        admitted.map(({ prompt, tokens, sequence }) => ({
          cacheRow: sequence.cacheRow,
          slot: sequence.slot,
          start: sequence.length,
          tokens,
          allLogits: prompt.allLogits === true,
        })),
      );
      const { logits } = await this.runRows(rows, { returnLogits: true });
      for (const { prompt, tokens, sequence } of admitted) {
        sequence.length += tokens.length;
        sequence.partial = prompt.more === true;
        if (this.prefixes) {
          sequence.prompt.push(...tokens);
          if (!sequence.partial) sequence.prefixKey = this.scopes.of(prompt);
        }
      }
      return logits;
    } catch (error) {
      for (const { id } of fresh) this.sequences.release(id);
      throw error;
    }
  }

  /**
   * A prompt's sequence and the tokens this call prefills: a running one continues; a new one takes a free
   * row — there is one, since stored prefixes hold at most the rows beyond maxBatch — holding a device copy
   * of the stored prefix it starts with, if any, and prefills the rest.
   */
  private admit(prompt: PrefillPrompt): {
    prompt: PrefillPrompt;
    tokens: readonly number[];
    sequence: RunningSequence;
  } {
    const known = this.sequences.get(prompt.id);
    if (known) return { prompt, tokens: prompt.tokens, sequence: known };
    // Not with allLogits: the prefix's logits would not be computed.
    const hit = prompt.allLogits ? null : this.scopes.lookup(this.prefixes, prompt);
    const sequence = this.sequences.admit(prompt.id, prompt.slot, hit?.length ?? 0);
    if (!hit) return { prompt, tokens: prompt.tokens, sequence };
    this.native.copyCacheRow(hit.value, sequence.cacheRow);
    sequence.prompt.push(...prompt.tokens.slice(0, hit.length));
    this.prefixes!.countReuse(hit.length);
    return { prompt, tokens: prompt.tokens.slice(hit.length), sequence };
  }

  /**
   * One decode step over every running sequence: `tokens` gives each sequence's newest token. Returns the
   * logits of the next token per sequence, in the order given.
   */
  async decode(tokens: ReadonlyMap<string, number>): Promise<Map<string, Float32Array>> {
    const { ids, logits } = await this.runDecode(tokens, { returnLogits: true });
    return new Map(ids.map((id, i) => [id, logits[i]!]));
  }

  /** decode, but only each sequence's greedy next token comes back (argmax on the device, no logits copied). */
  async decodeGreedy(tokens: ReadonlyMap<string, number>): Promise<Map<string, number>> {
    const { ids, argmax } = await this.runDecode(tokens, { returnLogits: false });
    return new Map(ids.map((id, i) => [id, argmax[i]!]));
  }

  /**
   * decodeGreedy with the step's forward timed phase by phase on the device (NativeStepResult.phases): where
   * a step's time goes, for `luminet bench engine --device cuda`. Not replayed from a kept CUDA graph.
   */
  async profileDecode(
    tokens: ReadonlyMap<string, number>,
  ): Promise<{ next: Map<string, number>; phases: Record<string, number> }> {
    const { ids, argmax, phases } = await this.runDecode(tokens, { returnLogits: false, profile: true });
    return { next: new Map(ids.map((id, i) => [id, argmax[i]!])), phases: phases! };
  }

  /**
   * ServingEngine.decodePicking. Rows with a choice are settled on the device: argmax rows get the device's
   * pick, candidates rows their CANDIDATES largest logits and log-sum-exp (for the host to draw from), both
   * after the row's penalties, applied on the device to a copy of its logits. Rows without a choice (a draw
   * over the whole vocabulary, a top_k beyond the candidates) get their raw logits, copied one row at a time
   * (128 KB for a 32k vocabulary) — unless they are most of the step, when one copy of every row (8 MB for
   * 64) is cheaper than many small ones.
   */
  async decodePicking(
    tokens: ReadonlyMap<string, number>,
    choices: ReadonlyMap<string, DecodeChoice>,
  ): Promise<Map<string, DecodeRow>> {
    const ids = [...tokens.keys()];
    const whole = ids.filter((id) => !choices.has(id)).length;
    // Whole rows are raw: a penalized sequence's sampler applies its penalties to them itself.
    if (2 * whole > ids.length) return await this.decode(tokens);
    const penalties = penaltyEntries(ids.map((id) => choices.get(id)?.penalties));
    if (!penalties && ids.every((id) => choices.get(id)?.kind === "argmax"))
      return await this.decodeGreedy(tokens);
    const sampling = ids.some((id) => choices.get(id)?.kind === "candidates");
    // Argmax and whole rows need no candidates: temperature 0 marks them.
    const temperatures = sampling
      ? Float32Array.from(ids, (id) => {
          const choice = choices.get(id);
          return choice?.kind === "candidates" ? choice.temperature : 0;
        })
      : undefined;
    const { argmax, candidates } = await this.runDecode(tokens, {
      returnLogits: false,
      ...(temperatures ? { temperatures } : {}),
      ...(penalties ? { penalties } : {}),
    });
    const c = CANDIDATES;
    const rows = new Map<string, DecodeRow>();
    ids.forEach((id, i) => {
      const choice = choices.get(id);
      if (!choice) rows.set(id, this.native.logitsOf(i));
      else if (choice.kind === "argmax") rows.set(id, argmax[i]!);
      else {
        rows.set(id, {
          tokens: candidates!.tokens.slice(i * c, (i + 1) * c),
          logits: candidates!.logits.slice(i * c, (i + 1) * c),
          logSumExp: candidates!.logSumExp[i]!,
          vocab: this.spec.vocab,
        });
      }
    });
    return rows;
  }

  /**
   * The full logits of a sequence in the last decode (if no prefill ran since), for a draw its candidates
   * could not settle.
   */
  logitsOf(id: string): Float32Array {
    const row = this.lastDecodeIds.indexOf(id);
    if (row < 0) throw new EngineError(`sequence ${id} was not in the last decode`);
    return this.native.logitsOf(row);
  }

  /**
   * Points a running sequence at another slot for its next steps. Its cache keeps what earlier tokens
   * computed under the old adapter: benchmarks use this to share one prefill between runs.
   */
  switchAdapter(id: string, slot: number): void {
    const sequence = this.sequences.get(id);
    if (!sequence) throw new EngineError(`sequence ${id} is not running`);
    this.checkSlot(slot);
    sequence.slot = slot;
  }

  /**
   * Takes a decoding sequence out of the batch with its cache row kept as it is, so that a scheduler can
   * give its place to another without losing its work; it takes no part in steps until resume. Its row is
   * one of those beyond maxBatch, which otherwise hold stored prefixes (the least recently used of them give
   * theirs up): where none is left — no prefix cache rows, or every one parked — it throws, and the
   * scheduler releases the sequence to prefill it again.
   */
  async park(id: string): Promise<void> {
    const sequence = this.sequences.get(id);
    if (!sequence || sequence.partial) throw new EngineError(`sequence ${id} is not decoding`);
    const parked = this.sequences.parked;
    if (parked >= this.rowsBeyondBatch) {
      throw new EngineError(
        `no cache row to park sequence ${id} in: ${this.rowsBeyondBatch} rows beyond maxBatch (prefixCacheBytes), ${parked} parked`,
      );
    }
    sequence.parked = true;
    sequence.partial = true;
    this.fitPrefixesToFreeRows();
  }

  /**
   * Puts a parked sequence back: it decodes again from the next step, in `slot` (its adapter's slot now,
   * which may differ from the one it left), as if it had never left.
   */
  resume(id: string, slot: number): void {
    const sequence = this.sequences.get(id);
    if (!sequence?.parked) throw new EngineError(`sequence ${id} is not parked`);
    this.checkSlot(slot);
    sequence.slot = slot;
    sequence.parked = false;
    sequence.partial = false;
    this.fitPrefixesToFreeRows();
  }

  /**
   * Removes a finished or cancelled sequence and frees its cache row — or, with a prefix cache and at least
   * one whole block of prompt and decoded tokens, keeps the row as those tokens' stored prefix (its later
   * positions are never read from there).
   */
  release(id: string): void {
    const sequence = this.sequences.get(id);
    if (sequence?.parked) {
      sequence.parked = false;
      this.fitPrefixesToFreeRows();
    }
    const scope = sequence?.prefixKey;
    const length = scope === undefined ? 0 : (this.prefixes?.worthStoring(scope, sequence!.prompt, 0) ?? 0);
    if (length === 0) {
      this.sequences.release(id);
      return;
    }
    const row = this.sequences.detach(id);
    this.prefixes!.store(scope!, sequence!.prompt.slice(0, length), row, this.rowBytes);
  }

  /** Stored prefixes may hold every row beyond maxBatch that no parked sequence holds; the oldest give way. */
  private fitPrefixesToFreeRows(): void {
    this.prefixes?.limit((this.rowsBeyondBatch - this.sequences.parked) * this.rowBytes);
  }

  /** The stored prefixes (a cache row each), and the prompt tokens they spared; null without a prefix cache. */
  prefixCacheStats(): PrefixCacheStats | null {
    return this.prefixes?.stats() ?? null;
  }

  /** The tokens of this prompt a prefill would now copy from a stored prefix's row (0 without one). */
  cachedPrefixLength(prompt: Pick<PrefillPrompt, "tokens" | "slot" | "prefixScope">): number {
    return this.scopes.lookup(this.prefixes, prompt)?.length ?? 0;
  }

  reusedPromptTokens(ids: readonly string[]): number[] {
    return ids.map((id) => this.sequences.get(id)?.reused ?? 0);
  }

  get running(): number {
    return this.sequences.size;
  }

  sequenceLength(id: string): number | undefined {
    return this.sequences.get(id)?.length;
  }

  /** Device memory by use (weights, KV cache, adapter slots, scratch) and what is left free. */
  memory(): NativeMemory {
    return this.native.memory();
  }

  /** The device's peak fp16 GEMM rate and copy bandwidth, timed by the addon (the benchmark's roofline). */
  roofline(sizes: { gemmSize: number; copyBytes: number; repeats: number }): Promise<NativeRoofline> {
    return this.native.roofline(sizes);
  }

  deviceName(): string {
    return this.native.deviceName();
  }

  async close(): Promise<void> {
    this.native.close();
  }

  /**
   * Every running sequence's newest token at position = its length; each length then grows by one. With
   * `temperatures` (one per row), the step also returns CANDIDATES candidates per row.
   */
  private async runDecode(
    tokens: ReadonlyMap<string, number>,
    options: RunOptions,
  ): Promise<RowResults & { ids: string[] }> {
    checkDecodeStep(tokens, this.sequences.all, this.spec.maxContext, (id, token) =>
      this.checkToken(id, token),
    );
    const rows: StepRow[] = [];
    const sequences: RunningSequence[] = [];
    for (const [id, token] of tokens) {
      const sequence = this.sequences.get(id)!;
      sequences.push(sequence);
      rows.push({
        token,
        cacheRow: sequence.cacheRow,
        position: sequence.length,
        slot: sequence.slot,
        logits: true,
      });
    }
    this.checkDistinctAdapters(rows.map((r) => r.slot));
    const result = await this.runRows(rows, options);
    for (const [i, sequence] of sequences.entries()) {
      sequence.length += 1;
      // Its answer is filed with its prompt when it is released: a prompt that continues it reuses both.
      if (sequence.prefixKey !== undefined) sequence.prompt.push(rows[i]!.token);
    }
    const ids = [...tokens.keys()];
    this.lastDecodeIds = ids;
    return { ids, ...result };
  }

  /** Runs rows as native steps, in order; the logit rows' results come back in row order. */
  private async runRows(rows: StepRow[], options: RunOptions): Promise<RowResults> {
    const { returnLogits, temperatures, penalties, profile = false } = options;
    if (this.stepping) {
      throw new EngineError(
        "a step is already running on this engine: await each call (EngineThread serializes them)",
      );
    }
    this.stepping = true;
    // The device keeps the logits of its last step only: after this one, no earlier decode's.
    this.lastDecodeIds = [];
    const logits: Float32Array[] = [];
    const argmax: number[] = [];
    let candidates: NativeCandidates | null = null;
    let phases: Record<string, number> | null = null;
    const vocab = this.spec.vocab;
    try {
      const steps = planSteps(rows, this.spec.maxStepTokens, returnLogits);
      // A decode is one step (cache rows never exceed a step's rows): the candidates are that step's.
      if ((temperatures || penalties || profile) && steps.length !== 1)
        throw new EngineError("candidates, penalties and profiles belong to a single-step decode");
      for (const { native: step, wanted } of steps) {
        const result = await this.native.step({
          ...step,
          ...(temperatures ? { candidates: Math.min(CANDIDATES, vocab), temperatures } : {}),
          ...(penalties ? { penalties } : {}),
          ...(profile ? { profile } : {}),
        });
        candidates = result.candidates;
        phases = result.phases;
        checkResult(step, result, vocab);
        argmax.push(...result.argmax.subarray(0, wanted));
        if (result.logits) {
          for (let i = 0; i < wanted; i++) logits.push(result.logits.subarray(i * vocab, (i + 1) * vocab));
        }
      }
    } finally {
      this.stepping = false;
    }
    return { logits, argmax, candidates, phases };
  }

  private checkToken(id: string, token: number): void {
    if (!Number.isInteger(token) || token < 0 || token >= this.spec.vocab) {
      throw new EngineError(`sequence ${id}: token ${token} is outside the vocabulary of ${this.spec.vocab}`);
    }
  }

  private checkDistinctAdapters(slots: readonly number[]): void {
    const distinct = new Set(slots.filter((s) => s !== 0)).size;
    if (distinct > this.options.maxAdaptersPerStep) {
      throw new EngineError(
        `${distinct} distinct adapters in one step; this engine allows ${this.options.maxAdaptersPerStep}`,
      );
    }
  }

  /** A sequence's slot: 0 (no adapter) or 1..slots. */
  private checkSlot(slot: number): void {
    if (slot !== 0 && (!Number.isInteger(slot) || slot < 1 || slot > this.spec.slots)) {
      throw new EngineError(`slot ${slot} is out of range 0..${this.spec.slots}`);
    }
  }

  /** A slot written or cleared: 1..slots, with the adapter banks' error (lora-banks.ts). */
  private checkBankSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 1 || slot > this.spec.slots) {
      throw new LoraBankError(`slot ${slot} is out of range 1..${this.spec.slots}`);
    }
  }
}

/** Sequences running at once: a cache row each. */
function maxBatchOf(options: EngineOptions): number {
  return options.maxBatch ?? DEFAULT_CACHE_ROWS;
}

/** Bytes of one native KV cache row: keys and values of every layer at maxContext positions, fp16. */
export function cacheRowBytes(model: ModelConfig, maxContext: number): number {
  return 2 * model.numLayers * model.numKvHeads * maxContext * model.headDim * 2;
}

/** Cache rows kept for stored prefixes: as many as prefixCacheBytes holds, at most maxBatch. */
function prefixRows(model: ModelConfig, options: EngineOptions): number {
  const rows = Math.floor((options.prefixCacheBytes ?? 0) / cacheRowBytes(model, options.maxContext));
  return Math.min(rows, maxBatchOf(options));
}

/** The native model's sizes for this model and these engine options. */
export function modelSpec(model: ModelConfig, options: CudaEngineOptions): CudaModelSpec {
  const maxBatch = maxBatchOf(options);
  const stepTokens = options.stepTokens ?? PREFILL_STEP_TOKENS;
  for (const [name, value] of [
    ["maxContext", options.maxContext],
    ["maxBatch", maxBatch],
    ["stepTokens", stepTokens],
    ["slots", options.slots],
    ["maxRank", options.maxRank],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new EngineError(`${name} must be a positive integer, got ${value}`);
    }
  }
  return {
    layers: model.numLayers,
    hidden: model.hiddenSize,
    intermediate: model.intermediateSize,
    heads: model.numHeads,
    kvHeads: model.numKvHeads,
    headDim: model.headDim,
    vocab: model.vocabSize,
    rmsNormEps: model.rmsNormEps,
    qkvBias: model.qkvBias,
    qkNorm: model.qkNorm,
    tieWordEmbeddings: model.tieWordEmbeddings,
    invFreq: inverseFrequencies(model),
    ropeScale: ropeScale(model),
    maxContext: options.maxContext,
    cacheRows: maxBatch + prefixRows(model, options),
    maxStepTokens: Math.max(maxBatch, stepTokens),
    slots: options.slots,
    maxRank: options.maxRank,
    cudaGraphs: options.cudaGraphs ?? true,
    device: 0,
  };
}

/** The adapter's modules as the native slot write takes them, their sizes checked against the model. */
export function nativeModules(model: ModelConfig, adapter: LoadedAdapter): NativeAdapterModule[] {
  return adapter.modules.map((m) => {
    const { inFeatures, outFeatures } = moduleShape(model, m.kind);
    if (
      m.layer < 0 ||
      m.layer >= model.numLayers ||
      m.a.length !== m.rank * inFeatures ||
      m.scaledBT.length !== m.rank * outFeatures ||
      (m.scaledBias !== null && m.scaledBias.length !== outFeatures)
    ) {
      throw new LoraBankError(
        `adapter ${adapter.name}: module ${m.kind} of layer ${m.layer} does not fit this model's [${outFeatures}, ${inFeatures}] ${m.kind} projection`,
      );
    }
    return {
      layer: m.layer,
      kind: MODULE_KINDS.indexOf(m.kind),
      rank: m.rank,
      a: m.a,
      scaledBT: m.scaledBT,
      scaledBias: m.scaledBias,
    };
  });
}

/** Reads every checkpoint tensor the native weights need and uploads its raw bytes, one tensor at a time. */
async function uploadWeights(native: NativeCudaModel, model: ModelConfig, modelDir: string): Promise<void> {
  const weights = openWeights(modelDir);
  const uploads = weightUploads(model);
  const total = uploads.reduce((sum, u) => sum + weights.info(u.source).byteLength, 0);
  const bar = new SingleBar({
    format: "cuda weights [{bar}] {percentage}% {value}/{total} MB",
    stream: process.stderr,
  });
  const showBar = process.stderr.isTTY === true;
  if (showBar) bar.start(Math.ceil(total / 2 ** 20), 0);
  let done = 0;
  try {
    for (const upload of uploads) {
      const info = weights.info(upload.source);
      const elements = info.shape.reduce((a, d) => a * d, 1);
      if (!WEIGHT_DTYPES.includes(info.dtype)) {
        throw new EngineError(
          `${upload.source} is ${info.dtype}; the CUDA engine takes F32, F16 or BF16 weights`,
        );
      }
      if (elements !== upload.elements) {
        throw new EngineError(
          `${upload.source} has ${elements} values [${info.shape.join(", ")}]; config.json implies ${upload.elements}`,
        );
      }
      native.setWeight(
        upload.target,
        weights.readRaw(upload.source),
        info.dtype as WeightDtype,
        upload.offset,
      );
      done += info.byteLength;
      if (showBar) bar.update(Math.floor(done / 2 ** 20));
      // Let the event loop breathe between tensors: a 16-layer model is a couple of GB.
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    if (showBar) bar.stop();
  }
}

/** Guards against a native result that does not match its step (a size mismatch would misassign rows). */
function checkResult(step: NativeStep, result: NativeStepResult, vocab: number): void {
  const rows = step.logitRows.length;
  if (result.argmax.length !== rows) {
    throw new EngineError(
      `native step returned ${result.argmax.length} argmax values for ${rows} logit rows`,
    );
  }
  if (step.returnLogits && result.logits?.length !== rows * vocab) {
    throw new EngineError(
      `native step returned ${result.logits?.length ?? "no"} logits for ${rows} rows of ${vocab}`,
    );
  }
}
