// The engine: one base model, resident adapter banks, and the running batch's KV cache. It runs a prompt
// alone (prefill: a prompt with existing past needs batch 1 in GroupQueryAttention) and one decode run per
// step over every running sequence, each row applying its own adapter through the banks.
// Runs synchronously inside whatever thread owns it: engine-thread.ts hosts it off the event loop.
import { availableParallelism } from "node:os";
import { InferenceSession, Tensor } from "onnxruntime-node";
import type { LoadedAdapter } from "../adapters/peft.ts";
import { type BankStore, HostBankStore } from "./bank-store.ts";
import {
  CANDIDATES,
  type DecodeCandidates,
  type DecodeChoice,
  type DecodeRow,
  penaltyEntries,
  type RowPenalties,
} from "./decode-row.ts";
import {
  assertDeviceUsable,
  type ComputeDtype,
  computeDtypeFor,
  type Device,
  sessionOptions,
} from "./device.ts";
import { DeviceBankStore, DeviceKvOps } from "./device-ops.ts";
import { cachedGraphPath, type GraphOptions } from "./graph-builder.ts";
import {
  emptyKv,
  gatherKvRows,
  type KvRowSource,
  type KvShape,
  type KvTensors,
  kvCapacity,
  writeStepRows,
} from "./kv-cache.ts";
import { bankLayout, LoraBanks } from "./lora-banks.ts";
import { BASE_GRAPH, distinctSlots, type LoraFormulation, LoraSteps } from "./lora-steps.ts";
import { loadModelConfig, type ModelConfig } from "./model-config.ts";
import { PrefixCache, type PrefixCacheStats, PrefixScopes } from "./prefix-cache.ts";
import { openWeights, type WeightIndex } from "./safetensors.ts";

export interface EngineOptions {
  modelDir: string;
  device: Device;
  /** Longest sequence (prompt + generated) the engine accepts. */
  maxContext: number;
  /** Adapter slots resident on the device. */
  slots: number;
  /** Largest adapter rank a slot holds. */
  maxRank: number;
  /** Most distinct adapters in one run; graph variants exist for 1, 4, 16, 64 up to this. */
  maxAdaptersPerStep: number;
  /**
   * Most sequences running at once. The CUDA engine allocates a KV cache row for each (default 64);
   * the onnxruntime engine grows its cache as sequences join and does not need it.
   */
  maxBatch?: number;
  threads?: number;
  /**
   * CPU: give every graph variant's session its own prepacked copy of the base weights (sessionOptions):
   * faster batched steps, one more weights copy in memory per variant. Off by default.
   */
  prepackWeights?: boolean;
  /** Overrides the device's compute dtype (fp32 on CPU, fp16 on GPUs). */
  computeDtype?: ComputeDtype;
  /**
   * CPU: "q4" runs the projection weights and lm_head in 4 bits (quantized-weights.ts, MatMulNBits) with
   * int8 activations: quicker steps, results within quantization error; each variant prepacks its copy.
   */
  quantize?: "q4";
  /**
   * Keep banks and KV cache as onnxruntime outputs and update them with helper sessions, never touching
   * their bytes from JavaScript: what GPU devices need (their tensors stay on the device). Always on for
   * GPUs; settable on CPU, where it runs the same code path for tests.
   */
  deviceResidentState?: boolean;
  /**
   * Multi-LoRA formulation (graph-builder.ts). By default segment views on CPU (they feed views of host
   * banks), segments on CPU with device-resident state, masked rows on GPUs.
   */
  loraFormulation?: LoraFormulation;
  /**
   * Bytes of prompt-prefix caches to keep (prefix-cache.ts): a prompt that starts like an earlier one on
   * the same adapter prefills only the rest. 0 (the default) keeps none.
   */
  prefixCacheBytes?: number;
}

export { LORA_FORMULATIONS, type LoraFormulation } from "./lora-steps.ts";

export class EngineError extends Error {}

/** GPUs keep banks and KV cache on the device; CPU does when asked (to test that code path). */
function isResident(options: EngineOptions): boolean {
  return options.device !== "cpu" || options.deviceResidentState === true;
}

function defaultFormulation(options: EngineOptions): LoraFormulation {
  if (options.device !== "cpu") return "masked";
  return isResident(options) ? "segments" : "segment-views";
}

/** Graph outputs the host reads: the logits and the decode choices' results (graph-builder.ts). */
const HOST_OUTPUTS = [
  "logits",
  "picks",
  "candidate_ids",
  "candidate_logits",
  "candidate_log_sum_exp",
  "whole_logits",
];

interface Sequence {
  slot: number;
  /** Tokens in the KV cache. */
  length: number;
  /** It does not decode: its prompt is still being prefilled chunk by chunk, or it is parked. */
  partial: boolean;
  /** Taken out of the batch by park, its cache aside in partialKv, until resume. */
  parked?: boolean;
  /**
   * With a prefix cache, the tokens in its cache: its prompt so far while partial (stored once complete),
   * then the prompt and every decoded token (stored when it is released, so a later prompt that continues
   * the conversation reuses the answer's positions too). Empty without a prefix cache.
   */
  prompt: number[];
  /** Its prefix-cache scope (PrefixScopes.of), set once its prompt is complete, with a prefix cache. */
  prefixKey?: string;
  /** Prompt tokens a stored prefix's cache covered: not prefilled. */
  reused: number;
}

/**
 * A prompt for prefillTogether, or one chunk of it. A long prompt may go in chunks over several calls, so
 * that no step runs more than its token budget: every chunk but the last says `more`, and the sequence
 * decodes only after its last chunk ran. A chunk continues the sequence of the same id.
 */
export interface PrefillPrompt {
  id: string;
  /** The prompt's tokens from the sequence's length on: the whole prompt, or its next chunk. */
  tokens: readonly number[];
  slot: number;
  /** More of this prompt follows in a later call. */
  more?: boolean;
  /**
   * Every token's logits come back, not only the last one's (for prompt logprobs): the prompt then starts
   * from no stored prefix, whose positions would have none.
   */
  allLogits?: boolean;
  /**
   * Prompts reuse each other's stored prefixes only within one scope (the worker passes the org), so one
   * tenant's prompts cannot be probed by another's time to first token. Default: one shared scope.
   */
  prefixScope?: string;
}

/** What the misuse checks every engine shares need of a sequence it holds. */
interface HeldSequence {
  slot: number;
  length: number;
  partial: boolean;
  parked?: boolean;
}

/**
 * Refuses what no engine prefills, in the same words on every engine: a running id or one twice in the
 * call, a parked one, an empty prompt, no room left in the context, a chunk in another slot than its prompt's. The
 * engine's own checks of a prompt's slot and tokens run where they always ran, in that order.
 */
export function checkPrefillPrompts(
  prompts: readonly PrefillPrompt[],
  running: ReadonlyMap<string, HeldSequence>,
  maxContext: number,
  checkSlot: (slot: number) => void,
  checkTokens: (id: string, tokens: readonly number[]) => void = () => {},
): void {
  const ids = new Set<string>();
  for (const { id, tokens, slot } of prompts) {
    const known = running.get(id);
    if ((known && !known.partial) || ids.has(id)) throw new EngineError(`sequence ${id} is already running`);
    if (known?.parked) throw new EngineError(`sequence ${id} is parked: resume it`);
    ids.add(id);
    if (tokens.length === 0) throw new EngineError(`sequence ${id} has an empty prompt`);
    const length = (known?.length ?? 0) + tokens.length;
    if (length >= maxContext) {
      throw new EngineError(`prompt of ${length} tokens leaves no room in a ${maxContext}-token context`);
    }
    checkSlot(slot);
    if (known && known.slot !== slot) {
      throw new EngineError(`sequence ${id} is prefilling in slot ${known.slot}, not ${slot}`);
    }
    checkTokens(id, tokens);
  }
}

/**
 * Refuses a decode step no engine runs, in the same words on every engine: a sequence it does not hold or
 * whose prompt is still prefilling, one at the end of its context (each token also through the engine's
 * `checkToken`), or a step that leaves out a sequence that decodes.
 */
export function checkDecodeStep(
  tokens: ReadonlyMap<string, number>,
  running: ReadonlyMap<string, HeldSequence>,
  maxContext: number,
  checkToken: (id: string, token: number) => void = () => {},
): void {
  for (const [id, token] of tokens) {
    const sequence = running.get(id);
    if (!sequence) throw new EngineError(`sequence ${id} is not running`);
    if (sequence.parked) throw new EngineError(`sequence ${id} is parked: resume it`);
    if (sequence.partial) throw new EngineError(`sequence ${id} is still prefilling its prompt`);
    if (sequence.length + 1 > maxContext) {
      throw new EngineError(`sequence ${id} reached the ${maxContext}-token context`);
    }
    checkToken(id, token);
  }
  const decoding = [...running].filter(([, s]) => !s.partial).map(([id]) => id);
  if (tokens.size !== decoding.length) {
    const missing = decoding.filter((id) => !tokens.has(id));
    throw new EngineError(`decode must cover every running sequence; missing ${missing.join(", ")}`);
  }
}

/**
 * Which logit rows of a run come back picked, as candidates (at a temperature each), or whole; picks and
 * candidates after their rows' penalties, if any.
 */
interface RowPlan {
  picks: number[];
  pickPenalties: (RowPenalties | undefined)[];
  candidates: number[];
  candidatePenalties: (RowPenalties | undefined)[];
  temperatures: number[];
  whole: number[];
}

/** A logit row as a run returns it: its pick or candidates, its logits, or both (kept for logitsOf). */
interface RowResult {
  settled?: number | DecodeCandidates;
  logits?: Float32Array;
}

function emptyPlan(): RowPlan {
  return {
    picks: [],
    pickPenalties: [],
    candidates: [],
    candidatePenalties: [],
    temperatures: [],
    whole: [],
  };
}

/**
 * The plan for a decode's rows from the sequences' choices, in row order: rows without a choice whole;
 * candidates whose draw may need the row, or where the candidates are the whole vocabulary, whole as well
 * (raw: the host sampler applies penalties to a whole row itself).
 */
function planRows(choices: (DecodeChoice | undefined)[], vocab: number): RowPlan | null {
  const plan = emptyPlan();
  for (const [row, choice] of choices.entries()) {
    if (choice === undefined) {
      plan.whole.push(row);
    } else if (choice.kind === "argmax") {
      plan.picks.push(row);
      plan.pickPenalties.push(choice.penalties);
    } else {
      plan.candidates.push(row);
      plan.candidatePenalties.push(choice.penalties);
      plan.temperatures.push(choice.temperature > 0 ? choice.temperature : 1);
      if (choice.mayNeedRow || vocab <= CANDIDATES) plan.whole.push(row);
    }
  }
  // Nothing settled in the graph: every row whole, the graph's logits output as it is, without a gather.
  return plan.picks.length === 0 && plan.candidates.length === 0 ? null : plan;
}

/**
 * A row-index input. A list the plan leaves empty still names row 0, whose result is neither fetched nor
 * read: onnxruntime 1.30's TopK kills the process on zero rows, and zero-row tensors are every provider's
 * least-run path.
 */
function rowList(rows: number[]): Tensor {
  const named = rows.length > 0 ? rows : [0];
  return new Tensor("int64", BigInt64Array.from(named, BigInt), [named.length]);
}

/** The graph's decode-choice inputs for a plan (graph-builder.ts `decodeChoices`). */
function choiceFeeds(plan: RowPlan): Record<string, Tensor> {
  const temperatures = plan.temperatures.length > 0 ? plan.temperatures : [1];
  return {
    pick_rows: rowList(plan.picks),
    candidate_rows: rowList(plan.candidates),
    candidate_temperatures: new Tensor("float32", Float32Array.from(temperatures), [temperatures.length]),
    whole_rows: rowList(plan.whole),
    ...penaltyFeeds("pick", plan.pickPenalties),
    ...penaltyFeeds("candidate", plan.candidatePenalties),
  };
}

/** Each logit row of a run as the plan asked for it, from the fetched outputs. */
function readRows(
  out: InferenceSession.ReturnType,
  count: number,
  plan: RowPlan | null,
  vocab: number,
): RowResult[] {
  const rowsOf = (name: string, width: number) => {
    const data = out[name]!.data as Float32Array;
    return (i: number) => data.subarray(i * width, (i + 1) * width);
  };
  const rows: RowResult[] = Array.from({ length: count }, () => ({}));
  if (!plan) {
    const logits = rowsOf("logits", vocab);
    for (let i = 0; i < count; i++) rows[i]!.logits = logits(i);
    return rows;
  }
  if (plan.whole.length > 0) {
    const logits = rowsOf("whole_logits", vocab);
    for (const [k, i] of plan.whole.entries()) rows[i]!.logits = logits(k);
  }
  if (plan.picks.length > 0) {
    const picks = out.picks!.data as BigInt64Array;
    for (const [k, i] of plan.picks.entries()) rows[i]!.settled = Number(picks[k]!);
  }
  if (plan.candidates.length > 0) {
    const width = out.candidate_ids!.dims[1]!;
    const tokens = out.candidate_ids!.data as BigInt64Array;
    const logits = rowsOf("candidate_logits", width);
    const logSumExp = out.candidate_log_sum_exp!.data as Float32Array;
    for (const [k, i] of plan.candidates.entries()) {
      rows[i]!.settled = {
        tokens: Int32Array.from(tokens.subarray(k * width, (k + 1) * width), Number),
        logits: logits(k),
        logSumExp: logSumExp[k]!,
        vocab,
      };
    }
  }
  return rows;
}

/**
 * The graph's `<set>_penalty_*` inputs for the rows of a pick or candidates set (graph-builder.ts
 * `penalized`): each entry's [row within the set, token] and its three values. A set without entries gets
 * one that changes nothing (row 0, token 0, repetition 1, no presence or frequency): no zero-size tensor
 * reaches the graph.
 */
function penaltyFeeds(set: string, perRow: (RowPenalties | undefined)[]): Record<string, Tensor> {
  const entries = penaltyEntries(perRow) ?? {
    rows: Int32Array.of(0),
    tokens: Int32Array.of(0),
    repetition: Float64Array.of(1),
    presence: Float64Array.of(0),
    frequency: Float64Array.of(0),
  };
  const n = entries.rows.length;
  const index = new BigInt64Array(n * 2);
  for (let e = 0; e < n; e++) {
    index[2 * e] = BigInt(entries.rows[e]!);
    index[2 * e + 1] = BigInt(entries.tokens[e]!);
  }
  return {
    [`${set}_penalty_index`]: new Tensor("int64", index, [n, 2]),
    [`${set}_penalty_repetition`]: new Tensor("float64", entries.repetition, [n]),
    [`${set}_penalty_presence`]: new Tensor("float64", entries.presence, [n]),
    [`${set}_penalty_frequency`]: new Tensor("float64", entries.frequency, [n]),
  };
}

export class Engine {
  readonly model: ModelConfig;
  readonly dtype: ComputeDtype;
  readonly banks: LoraBanks;
  readonly formulation: LoraFormulation;
  private readonly lora: LoraSteps;
  readonly padsPrefills = true;
  get prefixReadyAfterPrefill(): boolean {
    return this.prefixes !== null;
  }
  private readonly weights: WeightIndex;
  private readonly sessions = new Map<number, Promise<InferenceSession>>();
  private readonly sequences = new Map<string, Sequence>();
  /** Prefilled sequences waiting to join the batch cache at the next decode: their row of a prefill's presents. */
  private readonly joining = new Map<string, { tensors: KvTensors; row: number }>();
  /** The caches of sequences whose prompts are still prefilling chunk by chunk, or parked; batch 1 each. */
  private readonly partialKv = new Map<string, KvTensors>();
  /** Caches of earlier prompts' prefixes, batch 1 each; null when EngineOptions.prefixCacheBytes is 0. */
  private readonly prefixes: PrefixCache<KvTensors> | null;
  private readonly scopes = new PrefixScopes();
  /** Prefill outputs still referenced by joiners; freed once the batch cache has absorbed them. */
  private readonly prefillsToFree = new Set<KvTensors>();
  /**
   * Released sequences whose rows the prefix cache is to keep (prompt and answer): copied at the next
   * prefill or decode, before the batch cache changes (a device cache's copy is asynchronous; release is not).
   */
  private released: { key: string; tokens: number[]; source: Omit<KvRowSource, "length"> }[] = [];
  /** The last run's graph variant (lora-steps.ts: a segment count, or BASE_GRAPH, ...). */
  private lastGraph = BASE_GRAPH;
  /** Whole rows the last decode sent along with candidates (logitsOf), by sequence. */
  private readonly keptRows = new Map<string, Float32Array>();
  private batchIds: string[] = [];
  private batchKv: KvTensors;
  private readonly kvShape: KvShape;
  private readonly deviceOps: DeviceKvOps | null;

  private constructor(
    readonly options: EngineOptions,
    store: BankStore,
    deviceOps: DeviceKvOps | null,
  ) {
    this.model = loadModelConfig(options.modelDir);
    this.weights = openWeights(options.modelDir);
    this.dtype = options.computeDtype ?? computeDtypeFor(options.device);
    this.formulation = options.loraFormulation ?? defaultFormulation(options);
    this.banks = new LoraBanks(this.model, { slots: options.slots, rowsPerSlot: options.maxRank }, store);
    this.lora = new LoraSteps(this.formulation, this.banks, this.dtype);
    this.kvShape = {
      layers: this.model.numLayers,
      kvHeads: this.model.numKvHeads,
      headDim: this.model.headDim,
      dtype: this.dtype,
    };
    this.batchKv = emptyKv(this.kvShape, 0);
    this.deviceOps = deviceOps;
    const prefixBytes = options.prefixCacheBytes ?? 0;
    this.prefixes = prefixBytes > 0 ? new PrefixCache(prefixBytes, (kv) => this.disposeKv(kv)) : null;
  }

  static async create(options: EngineOptions): Promise<Engine> {
    if (options.device === "cuda") {
      throw new EngineError("--device cuda runs on the native CUDA engine: create it with createEngine()");
    }
    await assertDeviceUsable(options.device);
    const model = loadModelConfig(options.modelDir);
    const dtype = options.computeDtype ?? computeDtypeFor(options.device);
    if (options.quantize && (options.device !== "cpu" || dtype !== "float32")) {
      throw new EngineError(`--quantize ${options.quantize} runs on --device cpu (float32 graphs) only`);
    }
    const layout = bankLayout(model, { slots: options.slots, rowsPerSlot: options.maxRank });
    const resident = isResident(options);
    if (resident && options.loraFormulation === "segment-views") {
      throw new EngineError(
        "segment views feed views of banks in host memory; with device-resident state use segments or masked",
      );
    }
    if (!resident) return new Engine(options, new HostBankStore(layout, dtype), null);
    const ops = await DeviceKvOps.create(options.device, dtype);
    const store = await DeviceBankStore.create(options.device, layout, dtype);
    return new Engine(options, store, ops);
  }

  async writeAdapter(slot: number, adapter: LoadedAdapter): Promise<void> {
    this.scopes.writing(slot);
    await this.banks.write(slot, adapter);
    this.scopes.written(slot, adapter);
  }

  clearSlot(slot: number): void {
    this.scopes.writing(slot);
    this.banks.clear(slot);
  }

  /** Compiles (or loads from the graph cache) every graph variant this engine may run. */
  async warmUp(): Promise<void> {
    for (const key of this.lora.variants(this.options.maxAdaptersPerStep)) await this.session(key);
  }

  /**
   * Runs a prompt alone and returns the logits of its last token (or of every token when `allLogits`).
   * The sequence joins the batch at the next decode.
   */
  async prefill(
    id: string,
    tokens: readonly number[],
    slot: number,
    allLogits = false,
  ): Promise<Float32Array[]> {
    return this.prefillTogether([{ id, tokens, slot, allLogits }]);
  }

  /**
   * Runs prompts, or chunks of them (PrefillPrompt), and returns each one's last-token logits, or every
   * token's for one with `allLogits`, prompt after prompt. New prompts run as one batch: GroupQueryAttention takes
   * any batch for a first prompt, right-padded to the longest: each row attends to its own length
   * (seqlens_k), rotary positions start at 0 in every row, and a padded position's output and cache entry
   * are never read (the cache keeps each row's own length). A chunk that continues a sequence runs alone
   * on that sequence's cache, since GroupQueryAttention takes a prompt with existing past only in batch 1.
   */
  async prefillTogether(prompts: readonly PrefillPrompt[]): Promise<Float32Array[]> {
    checkPrefillPrompts(prompts, this.sequences, this.options.maxContext, (slot) => this.checkSlot(slot));
    await this.storeReleased();
    const logits = new Map<string, Float32Array[]>();
    // A prompt that starts like an earlier one continues from that prefix's cache (not when every
    // token's logits are wanted: the prefix's would not be computed).
    const rest = new Map<string, PrefillPrompt>();
    const seeded: string[] = [];
    try {
      for (const prompt of prompts) {
        const reused =
          this.sequences.has(prompt.id) || prompt.allLogits ? 0 : await this.seedFromPrefix(prompt);
        if (reused > 0) seeded.push(prompt.id);
        rest.set(prompt.id, reused > 0 ? { ...prompt, tokens: prompt.tokens.slice(reused) } : prompt);
      }
      const fresh = prompts.filter((p) => !this.sequences.has(p.id));
      if (fresh.length > 0) await this.prefillFresh(fresh, logits);
      for (const prompt of prompts) {
        if (!logits.has(prompt.id)) logits.set(prompt.id, await this.prefillChunk(rest.get(prompt.id)!));
      }
    } catch (error) {
      // As if they had not been sent: a prompt seeded from a prefix was not running before this call.
      for (const id of seeded) this.release(id);
      throw error;
    }
    return prompts.flatMap((p) => logits.get(p.id)!);
  }

  /**
   * Starts a new prompt's sequence from the longest cached prefix it shares with an earlier prompt on the
   * same adapter, as a sequence whose next chunk is the rest; returns the tokens reused (0: none).
   */
  private async seedFromPrefix(prompt: PrefillPrompt): Promise<number> {
    const hit = this.scopes.lookup(this.prefixes, prompt);
    if (!hit) return 0;
    const kv = await this.ownRow({ tensors: hit.value, row: 0, length: hit.length });
    this.sequences.set(prompt.id, {
      slot: prompt.slot,
      length: hit.length,
      partial: true,
      prompt: prompt.tokens.slice(0, hit.length),
      reused: hit.length,
    });
    this.partialKv.set(prompt.id, kv);
    this.prefixes!.countReuse(hit.length);
    return hit.length;
  }

  /** The tokens of this prompt a prefill would now take from a stored prefix (0 without one). */
  cachedPrefixLength(prompt: Pick<PrefillPrompt, "tokens" | "slot" | "prefixScope">): number {
    return this.scopes.lookup(this.prefixes, prompt)?.length ?? 0;
  }

  /** Per sequence, the prompt tokens a stored prefix's cache covered (0 for an unknown id). */
  reusedPromptTokens(ids: readonly string[]): number[] {
    return ids.map((id) => this.sequences.get(id)?.reused ?? 0);
  }

  /** The prefix cache's entries and bytes, and the prompt tokens it spared; null when it is off. */
  prefixCacheStats(): PrefixCacheStats | null {
    return this.prefixes?.stats() ?? null;
  }

  /**
   * Keeps a copy of a row's whole blocks (of `tokens`, the tokens in it) under `scope`, for later prompts
   * that start the same way; nothing without a prefix cache or a scope.
   */
  private async storePrefix(
    scope: string | undefined,
    tokens: readonly number[],
    source: Omit<KvRowSource, "length">,
  ): Promise<void> {
    if (!this.prefixes || scope === undefined) return;
    const bytesPerToken = this.kvBytesPerToken;
    const length = this.prefixes.worthStoring(scope, tokens, bytesPerToken);
    if (length === 0) return;
    const kv = await this.ownRow({ ...source, length });
    this.prefixes.store(scope, tokens.slice(0, length), kv, length * bytesPerToken);
  }

  /** Bytes of one position's keys and values over every layer. */
  private get kvBytesPerToken(): number {
    const { layers, kvHeads, headDim, dtype } = this.kvShape;
    return 2 * layers * kvHeads * headDim * (dtype === "float32" ? 4 : 2);
  }

  /** Where a decoding sequence's cache row is: its prefill's row while it joins, else its batch row. */
  private rowOf(id: string): Omit<KvRowSource, "length"> {
    return this.joining.get(id) ?? { tensors: this.batchKv, row: this.batchIds.indexOf(id) };
  }

  /** Notes a decoding sequence being released, for storeReleased to keep its rows (prompt and answer). */
  private rememberSequence(id: string): void {
    const sequence = this.sequences.get(id);
    if (!this.prefixes || !sequence?.prefixKey || sequence.partial) return;
    this.released.push({ key: sequence.prefixKey, tokens: sequence.prompt, source: this.rowOf(id) });
  }

  /** Stores released sequences' whole blocks in the prefix cache, for prompts that continue them. */
  private async storeReleased(): Promise<void> {
    const released = this.released;
    this.released = [];
    for (const { key, tokens, source } of released) await this.storePrefix(key, tokens, source);
  }

  /** New prompts in one run; each joins the batch at the next decode, or waits for its next chunk. */
  private async prefillFresh(
    prompts: readonly PrefillPrompt[],
    logits: Map<string, Float32Array[]>,
  ): Promise<void> {
    const n = Math.max(...prompts.map((p) => p.tokens.length));
    const rowsOf = ({ tokens, allLogits }: PrefillPrompt, b: number) =>
      allLogits ? tokens.map((_, i) => b * n + i) : [b * n + tokens.length - 1];
    const { rows, kv: presents } = await this.run({
      tokens: prompts.map((p) => p.tokens),
      pastLengths: prompts.map(() => 0),
      past: emptyKv(this.kvShape, prompts.length),
      slots: prompts.map((p) => p.slot),
      logitsRows: prompts.flatMap((p, b) => rowsOf(p, b)),
      plan: null,
      decode: false,
      kv: "presents",
    });
    let at = 0;
    for (const [row, prompt] of prompts.entries()) {
      const { id, slot, tokens, more } = prompt;
      const count = rowsOf(prompt, row).length;
      logits.set(
        id,
        rows.slice(at, at + count).map((r) => r.logits!),
      );
      at += count;
      const partial = more === true;
      const prefixKey = this.prefixes && !partial ? this.scopes.of(prompt) : undefined;
      this.sequences.set(id, {
        slot,
        length: tokens.length,
        partial,
        prompt: this.prefixes ? tokens.slice() : [],
        ...(prefixKey !== undefined ? { prefixKey } : {}),
        reused: 0,
      });
      if (!partial) {
        this.joining.set(id, { tensors: presents, row });
        await this.storePrefix(prefixKey, tokens, { tensors: presents, row });
      }
      // A prompt alone in its run owns the presents as they are; in a batch, its row is copied out.
      else if (prompts.length === 1) this.partialKv.set(id, presents);
      else this.partialKv.set(id, await this.ownRow({ tensors: presents, row, length: tokens.length }));
    }
    if (prompts.some((p) => p.more !== true)) this.prefillsToFree.add(presents);
    else if (prompts.length > 1) this.disposeKv(presents);
  }

  /** The next chunk of a sequence whose prompt is still prefilling, on its own cache. */
  private async prefillChunk(prompt: PrefillPrompt): Promise<Float32Array[]> {
    const sequence = this.sequences.get(prompt.id)!;
    const past = this.partialKv.get(prompt.id)!;
    const { tokens } = prompt;
    const { rows, kv: presents } = await this.run({
      tokens: [tokens],
      pastLengths: [sequence.length],
      past,
      slots: [prompt.slot],
      logitsRows: prompt.allLogits ? tokens.map((_, i) => i) : [tokens.length - 1],
      plan: null,
      decode: false,
      kv: "presents",
    });
    this.disposeKv(past);
    sequence.length += tokens.length;
    sequence.prompt.push(...tokens);
    if (prompt.more === true) this.partialKv.set(prompt.id, presents);
    else {
      this.partialKv.delete(prompt.id);
      sequence.partial = false;
      this.joining.set(prompt.id, { tensors: presents, row: 0 });
      this.prefillsToFree.add(presents);
      if (this.prefixes) sequence.prefixKey = this.scopes.of(prompt);
      await this.storePrefix(sequence.prefixKey, sequence.prompt, { tensors: presents, row: 0 });
    }
    return rows.map((r) => r.logits!);
  }

  /** One sequence's cache rows copied out of a batch's, in a cache of its own. */
  private ownRow(source: KvRowSource): Promise<KvTensors> | KvTensors {
    return this.deviceOps
      ? this.deviceOps.gather(this.kvShape, [source])
      : gatherKvRows(this.kvShape, [source]);
  }

  /**
   * One decode step over every running sequence: `tokens` gives each sequence's newest token. Returns the
   * logits of the next token per sequence, in the order given.
   */
  async decode(tokens: ReadonlyMap<string, number>): Promise<Map<string, Float32Array>> {
    return (await this.decodePicking(tokens, new Map())) as Map<string, Float32Array>;
  }

  /**
   * ServingEngine.decodePicking. The graph settles the choices, after each row's penalties: argmax rows
   * come back as their pick, candidates rows as their largest logits and log-sum-exp, so the host neither
   * copies nor scans their 32k-wide rows. Rows without a choice get their logits.
   */
  async decodePicking(
    tokens: ReadonlyMap<string, number>,
    choices: ReadonlyMap<string, DecodeChoice>,
  ): Promise<Map<string, DecodeRow>> {
    this.keptRows.clear();
    checkDecodeStep(tokens, this.sequences, this.options.maxContext);
    // Covering every decoding sequence, an empty step means none decodes.
    if (tokens.size === 0) return new Map();
    await this.storeReleased();
    await this.settleBatch();
    const ids = this.batchIds;
    const sequences = ids.map((id) => this.sequences.get(id)!);
    const hostCache = this.deviceOps === null;
    const plan = planRows(
      ids.map((id) => choices.get(id)),
      this.model.vocabSize,
    );
    const { rows, kv } = await this.run({
      tokens: ids.map((id) => [tokens.get(id)!]),
      pastLengths: sequences.map((s) => s.length),
      past: this.batchKv,
      slots: sequences.map((s) => s.slot),
      logitsRows: ids.map((_, i) => i),
      plan,
      decode: true,
      kv: hostCache ? "step" : "presents",
    });
    if (hostCache) {
      writeStepRows(
        this.kvShape,
        this.batchKv,
        kv,
        sequences.map((s) => s.length),
      );
    } else {
      this.disposeKv(this.batchKv);
      this.batchKv = kv;
    }
    for (const [i, s] of sequences.entries()) {
      s.length += 1;
      if (s.prefixKey !== undefined) s.prompt.push(tokens.get(ids[i]!)!);
    }
    const out = new Map<string, DecodeRow>();
    for (const [i, id] of ids.entries()) {
      const row = rows[i]!;
      out.set(id, row.settled ?? row.logits!);
      // A copy: the rows returned may share one buffer, which an engine thread hands over (transfers) to
      // its caller, leaving views of it here detached.
      if (row.settled !== undefined && row.logits) this.keptRows.set(id, row.logits.slice());
    }
    return out;
  }

  /**
   * ServingEngine.logitsOf: the logits of a candidates row of the last decode whose draw may reach past its
   * candidates (DecodeChoice.mayNeedRow); the step sent them along, since onnxruntime keeps nothing after a run.
   */
  logitsOf(id: string): Float32Array {
    const row = this.keptRows.get(id);
    if (!row) throw new EngineError(`sequence ${id}: the last decode kept no logits for it`);
    return row;
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
   * Takes a decoding sequence out of the batch, its cache copied aside (host or device memory, one row of its
   * length), so that a scheduler can give its place to another without losing its work: it leaves the batch
   * at the next decode and takes no part in decodes until resume.
   */
  async park(id: string): Promise<void> {
    const sequence = this.sequences.get(id);
    if (!sequence || sequence.partial) throw new EngineError(`sequence ${id} is not decoding`);
    this.partialKv.set(id, await this.ownRow({ ...this.rowOf(id), length: sequence.length }));
    // A joiner's prefill tensors are freed with the batch's next rebuild (prefillsToFree) as before.
    this.joining.delete(id);
    sequence.partial = true;
    sequence.parked = true;
  }

  /**
   * Puts a parked sequence back: it joins the batch at the next decode, in `slot` (its adapter's slot now,
   * which may differ from the one it left), and goes on as if it had never left.
   */
  resume(id: string, slot: number): void {
    const sequence = this.sequences.get(id);
    if (!sequence?.parked) throw new EngineError(`sequence ${id} is not parked`);
    this.checkSlot(slot);
    const kv = this.partialKv.get(id)!;
    this.partialKv.delete(id);
    this.joining.set(id, { tensors: kv, row: 0 });
    this.prefillsToFree.add(kv);
    sequence.slot = slot;
    sequence.partial = false;
    sequence.parked = false;
  }

  /**
   * Removes a finished or cancelled sequence; its cache rows leave the batch at the next decode. With a
   * prefix cache its whole blocks — prompt and decoded tokens — are stored at the next prefill or decode.
   */
  release(id: string): void {
    this.rememberSequence(id);
    this.sequences.delete(id);
    this.joining.delete(id);
    const partial = this.partialKv.get(id);
    if (partial) this.disposeKv(partial);
    this.partialKv.delete(id);
  }

  get running(): number {
    return this.sequences.size;
  }

  /**
   * The graph variant the last run used: its segment count, 0 for the base graph, -1 for masked rows, -2
   * for slot-batched, -3 for span-masked.
   */
  get graphVariant(): number {
    return this.lastGraph;
  }

  sequenceLength(id: string): number | undefined {
    return this.sequences.get(id)?.length;
  }

  async close(): Promise<void> {
    for (const session of this.sessions.values()) await (await session).release();
    this.sessions.clear();
    // Device-resident caches are GPU buffers: give them back rather than wait for the collector.
    this.prefixes?.clear();
    this.released = [];
    for (const kv of this.partialKv.values()) this.disposeKv(kv);
    this.partialKv.clear();
  }

  /**
   * Brings the batch cache in line with the running sequences: drops released rows, adds joiners, and
   * gives a host cache room for this step's token.
   */
  private async settleBatch(): Promise<void> {
    // A row stays if its sequence still runs and is the same one: an id released and used again since
    // (joining now, or prefilling its prompt in chunks) has a new cache.
    const stays = (id: string) => {
      const sequence = this.sequences.get(id);
      return sequence !== undefined && !sequence.partial && !this.joining.has(id);
    };
    const kept = this.batchIds.filter(stays);
    const longest = Math.max(
      0,
      ...[...this.sequences.values()].filter((s) => !s.partial).map((s) => s.length),
    );
    const roomy = this.deviceOps !== null || longest < (this.batchKv.keys[0]?.dims[2] ?? 0);
    if (
      roomy &&
      kept.length === this.batchIds.length &&
      this.joining.size === 0 &&
      this.prefillsToFree.size === 0
    )
      return;
    const sources: KvRowSource[] = [];
    this.batchIds.forEach((id, row) => {
      if (stays(id)) {
        sources.push({ tensors: this.batchKv, row, length: this.sequences.get(id)!.length });
      }
    });
    const joiners = [...this.joining];
    for (const [id, { tensors, row }] of joiners)
      sources.push({ tensors, row, length: this.sequences.get(id)!.length });
    const rebuilt = this.deviceOps
      ? await this.deviceOps.gather(this.kvShape, sources)
      : gatherKvRows(this.kvShape, sources, kvCapacity(longest + 1, this.options.maxContext));
    this.disposeKv(this.batchKv);
    for (const prefilled of this.prefillsToFree) this.disposeKv(prefilled);
    this.prefillsToFree.clear();
    this.batchKv = rebuilt;
    this.batchIds = [...kept, ...joiners.map(([id]) => id)];
    this.joining.clear();
  }

  private async run(step: {
    /** Each row's tokens; rows shorter than the longest are right-padded (prefills only). */
    tokens: (readonly number[])[];
    pastLengths: number[];
    past: KvTensors;
    slots: number[];
    logitsRows: number[];
    /** How each logit row comes back; null: every row's logits. */
    plan: RowPlan | null;
    /** A decode step (one token per sequence) rather than a prefill. */
    decode: boolean;
    /** Which cache outputs to fetch: the whole presents, or each row's new key and value (graph step rows). */
    kv: "presents" | "step";
  }): Promise<{ rows: RowResult[]; kv: KvTensors }> {
    const batch = step.tokens.length;
    const seqLen = Math.max(...step.tokens.map((row) => row.length));
    // Padding is token 0: its positions are masked out of every real row's attention.
    const ids = new BigInt64Array(batch * seqLen);
    for (const [b, row] of step.tokens.entries())
      for (const [s, t] of row.entries()) ids[b * seqLen + s] = BigInt(t);
    const totals = step.pastLengths.map((p, b) => p + step.tokens[b]!.length);
    const plan = step.plan ?? emptyPlan();
    const feeds: Record<string, Tensor> = {
      input_ids: new Tensor("int64", ids, [batch, seqLen]),
      seqlens_k: new Tensor(
        "int32",
        Int32Array.from(totals, (t) => t - 1),
        [batch],
      ),
      total_sequence_length: new Tensor("int32", Int32Array.of(Math.max(...totals)), []),
      logits_rows: rowList(step.logitsRows),
      ...choiceFeeds(plan),
    };
    for (let l = 0; l < this.model.numLayers; l++) {
      feeds[`past_key.${l}`] = step.past.keys[l]!;
      feeds[`past_value.${l}`] = step.past.values[l]!;
    }
    const adapters = distinctSlots(step.slots);
    if (adapters.length > this.options.maxAdaptersPerStep) {
      throw new EngineError(
        `${adapters.length} distinct adapters in one step; this engine allows ${this.options.maxAdaptersPerStep}`,
      );
    }
    this.lastGraph = this.lora.addFeeds(feeds, step.slots, adapters, seqLen, step.decode);
    const session = await this.session(this.lastGraph);
    const prefix = step.kv === "presents" ? "present" : "step";
    const layers = Array.from({ length: this.model.numLayers }, (_, l) => l);
    const keyNames = layers.map((l) => `${prefix}_key.${l}`);
    const valueNames = layers.map((l) => `${prefix}_value.${l}`);
    // Only what the plan uses: every fetched output is copied into a new buffer.
    const fetches = step.plan
      ? [
          ...(plan.picks.length > 0 ? ["picks"] : []),
          ...(plan.candidates.length > 0
            ? ["candidate_ids", "candidate_logits", "candidate_log_sum_exp"]
            : []),
          ...(plan.whole.length > 0 ? ["whole_logits"] : []),
        ]
      : ["logits"];
    const out = await session.run(feeds, [...fetches, ...keyNames, ...valueNames]);
    return {
      rows: readRows(out, step.logitsRows.length, step.plan, this.model.vocabSize),
      kv: { keys: keyNames.map((n) => out[n]!), values: valueNames.map((n) => out[n]!) },
    };
  }

  /** A graph variant's session, by its key (lora-steps.ts). */
  private session(key: number): Promise<InferenceSession> {
    let session = this.sessions.get(key);
    if (!session) {
      const graph: GraphOptions = {
        computeDtype: this.dtype,
        maxContext: this.options.maxContext,
        ...(this.deviceOps ? {} : { stepRows: true }),
        ...(this.options.quantize ? { quantize: this.options.quantize } : {}),
        lora: this.lora.graphOptions(key),
      };
      const path = cachedGraphPath(this.options.modelDir, this.model, this.weights, graph);
      const options = sessionOptions(
        this.options.device,
        this.options.threads ?? availableParallelism(),
        // MatMulNBits runs its int8 kernels only on blocks the session prepacked; what it packs is a
        // fraction of the float32 weights, and q4 leaves no float32 Gemm weight to pack.
        this.options.prepackWeights === true || this.options.quantize === "q4",
      );
      if (this.deviceOps) {
        options.preferredOutputLocation = Object.fromEntries([
          ...HOST_OUTPUTS.map((name) => [name, "cpu"]),
          ...Array.from({ length: this.model.numLayers }, (_, l) => [
            [`present_key.${l}`, this.deviceOps!.location],
            [`present_value.${l}`, this.deviceOps!.location],
          ]).flat(),
        ]);
      }
      session = InferenceSession.create(path, options);
      this.sessions.set(key, session);
    }
    return session;
  }

  private disposeKv(kv: KvTensors): void {
    if (!this.deviceOps) return;
    for (const t of [...kv.keys, ...kv.values]) t.dispose();
  }

  private checkSlot(slot: number): void {
    if (slot !== 0 && (slot < 1 || slot > this.options.slots)) {
      throw new EngineError(`slot ${slot} is out of range 0..${this.options.slots}`);
    }
  }
}
