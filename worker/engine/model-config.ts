// The base model's shape, parsed from a Hugging Face config.json (Llama, Mistral, Qwen2, Qwen3), and the
// names and shapes of the linear modules that LoRA adapters target.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

export type ModuleKind = "q" | "k" | "v" | "o" | "gate" | "up" | "down";
export const MODULE_KINDS: readonly ModuleKind[] = ["q", "k", "v", "o", "gate", "up", "down"];

export type RopeScaling =
  | {
      type: "llama3";
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositions: number;
    }
  | { type: "linear"; factor: number }
  | {
      /** YaRN, as transformers 5 computes it (rope.ts); the factor and attention factor already resolved. */
      type: "yarn";
      factor: number;
      originalMaxPositions: number;
      betaFast: number;
      betaSlow: number;
      /** cos and sin are scaled by it, so attention logits by its square. */
      attentionFactor: number;
      truncate: boolean;
    };

/** Where a model's own context (ModelConfig.maxPositions) comes from, as messages name it. */
export const MODEL_CONTEXT = "the model's own context (max_position_embeddings, or Mistral's sliding_window)";

export interface ModelConfig {
  architecture: "llama" | "mistral" | "qwen2" | "qwen3";
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  maxPositions: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  tieWordEmbeddings: boolean;
  qkvBias: boolean;
  /** Qwen3: each query and key head is RMS-normalized (q_norm, k_norm weights of head_dim) before rotary. */
  qkNorm: boolean;
  dtype: "F32" | "F16" | "BF16";
  bosTokenId: number | null;
  eosTokenIds: number[];
}

export class ModelConfigError extends Error {
  override name = "ModelConfigError";
}

type Architecture = ModelConfig["architecture"];

/** Each architecture's transformers class, as config.json's `architectures` names it. */
export const ARCHITECTURE_CLASSES: Record<Architecture, string> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
};
const ARCHITECTURES: Record<string, Architecture> = Object.fromEntries(
  Object.entries(ARCHITECTURE_CLASSES).map(([arch, name]) => [name, arch as Architecture]),
);

/** The architecture of a transformers class name ("Qwen3ForCausalLM"), if the engine runs it. */
export function architectureOfClass(name: string): Architecture | undefined {
  return Object.hasOwn(ARCHITECTURES, name) ? ARCHITECTURES[name] : undefined;
}

// transformers' own defaults for max_position_embeddings when a config leaves it out.
const DEFAULT_MAX_POSITIONS: Record<Architecture, number> = {
  llama: 2048,
  mistral: 4096 * 32,
  qwen2: 32768,
  qwen3: 32768,
};
const DTYPES: Record<string, ModelConfig["dtype"]> = { float32: "F32", float16: "F16", bfloat16: "BF16" };

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

function positiveInt(c: Record<string, unknown>, key: string, fallback?: number): number {
  const v = c[key] ?? fallback;
  if (v === undefined) throw new ModelConfigError(`config.json: ${key} is missing`);
  if (!Number.isSafeInteger(v) || (v as number) <= 0) {
    throw new ModelConfigError(`config.json: ${key} must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v as number;
}

function positiveNumber(obj: Record<string, unknown>, key: string, where: string, fallback?: number): number {
  const v = obj[key] ?? fallback;
  if (v === undefined) throw new ModelConfigError(`config.json: ${where}${key} is missing`);
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new ModelConfigError(
      `config.json: ${where}${key} must be a positive number, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function tokenIds(v: unknown, key: string, file: string): number[] {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const id of list) {
    if (!Number.isSafeInteger(id) || id < 0) {
      throw new ModelConfigError(
        `${file}: ${key} must be a token id or a list of them, got ${JSON.stringify(v)}`,
      );
    }
  }
  return list as number[];
}

function architectureOf(c: Record<string, unknown>): Architecture {
  const archs = c.architectures;
  if (Array.isArray(archs) && archs.length > 0) {
    const name = archs[0];
    const arch = typeof name === "string" ? architectureOfClass(name) : undefined;
    if (!arch) {
      throw new ModelConfigError(
        `config.json: unsupported architecture ${JSON.stringify(name)} (supported: ${Object.keys(ARCHITECTURES).join(", ")})`,
      );
    }
    return arch;
  }
  const type = c.model_type;
  // A config's model_type is the architecture's own name.
  const arch =
    typeof type === "string" && Object.hasOwn(ARCHITECTURE_CLASSES, type)
      ? (type as Architecture)
      : undefined;
  if (!arch) {
    throw new ModelConfigError(
      `config.json: unsupported model_type ${JSON.stringify(type)} (supported: ${Object.keys(ARCHITECTURE_CLASSES).join(", ")})`,
    );
  }
  return arch;
}

/** YaRN's scale of cos and sin for a context stretched by `scale` (transformers' get_mscale). */
function yarnScale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

function optionalNumber(obj: Record<string, unknown>, key: string, where: string): number | undefined {
  return obj[key] == null ? undefined : positiveNumber(obj, key, where);
}

/**
 * YaRN's parameters as transformers 5 resolves them: with original_max_position_embeddings given, the
 * factor is max_position_embeddings over it (DeepSeek-V3's convention), not `factor`; the attention
 * factor defaults to 0.1·ln(factor) + 1 (or DeepSeek's mscale ratio).
 */
function parseYarn(v: Record<string, unknown>, key: string, maxPositions: number): RopeScaling {
  const where = `${key}.`;
  const original = optionalNumber(v, "original_max_position_embeddings", where);
  const factor = original === undefined ? positiveNumber(v, "factor", where) : maxPositions / original;
  const mscale = optionalNumber(v, "mscale", where);
  const mscaleAllDim = optionalNumber(v, "mscale_all_dim", where);
  const attentionFactor =
    optionalNumber(v, "attention_factor", where) ??
    (mscale && mscaleAllDim
      ? yarnScale(factor, mscale) / yarnScale(factor, mscaleAllDim)
      : yarnScale(factor));
  const truncate = v.truncate ?? true;
  if (typeof truncate !== "boolean")
    throw new ModelConfigError(`config.json: ${where}truncate must be a boolean`);
  return {
    type: "yarn",
    factor,
    originalMaxPositions: original ?? maxPositions,
    betaFast: optionalNumber(v, "beta_fast", where) ?? 32,
    betaSlow: optionalNumber(v, "beta_slow", where) ?? 1,
    attentionFactor,
    truncate,
  };
}

function parseRopeScaling(v: unknown, key: string, maxPositions: number): RopeScaling | null {
  if (v === undefined || v === null) return null;
  if (!isObject(v)) throw new ModelConfigError(`config.json: ${key} must be an object or null`);
  const type = v.rope_type ?? v.type;
  switch (type) {
    case "default":
      return null;
    case "linear":
      return { type: "linear", factor: positiveNumber(v, "factor", `${key}.`) };
    case "llama3":
      return {
        type: "llama3",
        factor: positiveNumber(v, "factor", `${key}.`),
        lowFreqFactor: positiveNumber(v, "low_freq_factor", `${key}.`),
        highFreqFactor: positiveNumber(v, "high_freq_factor", `${key}.`),
        originalMaxPositions: positiveNumber(v, "original_max_position_embeddings", `${key}.`),
      };
    case "yarn":
      return parseYarn(v, key, maxPositions);
    default:
      throw new ModelConfigError(
        `config.json: unsupported ${key} type ${JSON.stringify(type)} (supported: llama3, linear, yarn)`,
      );
  }
}

/**
 * How many positions the model attends over. Mistral's `sliding_window` (v0.1: 4096) makes each token attend
 * only that far back; within the window that is full attention, which is what the engine computes, so the
 * model's context is capped at its window rather than computing something else past it.
 */
function contextWithin(c: Record<string, unknown>, architecture: Architecture, positions: number): number {
  if (architecture !== "mistral" || c.sliding_window == null) return positions;
  return Math.min(positions, positiveInt(c, "sliding_window"));
}

export function parseModelConfig(json: unknown): ModelConfig {
  if (!isObject(json)) throw new ModelConfigError("config.json: not a JSON object");
  const c = json;
  const architecture = architectureOf(c);
  const hiddenSize = positiveInt(c, "hidden_size");
  const numHeads = positiveInt(c, "num_attention_heads");
  const numKvHeads = positiveInt(c, "num_key_value_heads", numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw new ModelConfigError(
      `config.json: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`,
    );
  }
  if (c.head_dim == null && hiddenSize % numHeads !== 0) {
    throw new ModelConfigError(
      `config.json: hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads} and head_dim is not given`,
    );
  }
  const headDim = positiveInt(c, "head_dim", hiddenSize / numHeads);
  const act = c.hidden_act ?? "silu";
  if (act !== "silu")
    throw new ModelConfigError(`config.json: hidden_act ${JSON.stringify(act)} is not supported (silu)`);
  if (c.attention_bias === true && architecture !== "qwen2") {
    throw new ModelConfigError("config.json: attention_bias = true is not supported");
  }
  if (c.mlp_bias === true) throw new ModelConfigError("config.json: mlp_bias = true is not supported");
  if ((architecture === "qwen2" || architecture === "qwen3") && c.use_sliding_window === true) {
    throw new ModelConfigError("config.json: use_sliding_window = true is not supported");
  }
  const torchDtype = c.torch_dtype ?? c.dtype ?? "float32";
  const dtype = typeof torchDtype === "string" ? DTYPES[torchDtype] : undefined;
  if (!dtype) {
    throw new ModelConfigError(
      `config.json: torch_dtype ${JSON.stringify(torchDtype)} is not supported (float32, float16, bfloat16)`,
    );
  }
  const tie = c.tie_word_embeddings ?? false;
  if (typeof tie !== "boolean")
    throw new ModelConfigError("config.json: tie_word_embeddings must be a boolean");
  const bos = tokenIds(c.bos_token_id, "bos_token_id", "config.json");
  // transformers 5 moves rope_theta and the scaling into one rope_parameters object.
  const ropeParameters = isObject(c.rope_parameters) ? c.rope_parameters : null;
  const ropeTheta =
    c.rope_theta === undefined && ropeParameters
      ? positiveNumber(ropeParameters, "rope_theta", "rope_parameters.", 10000)
      : positiveNumber(c, "rope_theta", "", 10000);
  const positions = positiveInt(c, "max_position_embeddings", DEFAULT_MAX_POSITIONS[architecture]);
  const ropeScaling =
    c.rope_scaling == null && ropeParameters
      ? parseRopeScaling(ropeParameters, "rope_parameters", positions)
      : parseRopeScaling(c.rope_scaling, "rope_scaling", positions);
  return {
    architecture,
    hiddenSize,
    intermediateSize: positiveInt(c, "intermediate_size"),
    numLayers: positiveInt(c, "num_hidden_layers"),
    numHeads,
    numKvHeads,
    headDim,
    vocabSize: positiveInt(c, "vocab_size"),
    maxPositions: contextWithin(c, architecture, positions),
    rmsNormEps: positiveNumber(c, "rms_norm_eps", "", 1e-6),
    ropeTheta,
    ropeScaling,
    tieWordEmbeddings: tie,
    qkvBias: architecture === "qwen2",
    qkNorm: architecture === "qwen3",
    dtype,
    bosTokenId: bos[0] ?? null,
    eosTokenIds: tokenIds(c.eos_token_id, "eos_token_id", "config.json"),
  };
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new ModelConfigError(`${path}: ${(err as Error).message}`);
  }
}

/** Reads DIR/config.json; eos ids from generation_config.json are added to the config's own. */
export function loadModelConfig(dir: string): ModelConfig {
  const configPath = join(dir, "config.json");
  if (!existsSync(configPath)) throw new ModelConfigError(`${dir}: no config.json`);
  const json = readJson(configPath);
  let cfg: ModelConfig;
  try {
    cfg = parseModelConfig(json);
  } catch (err) {
    if (err instanceof ModelConfigError) throw new ModelConfigError(`${dir}/${err.message}`);
    throw err;
  }
  const genPath = join(dir, "generation_config.json");
  if (existsSync(genPath)) {
    const gen = readJson(genPath);
    if (isObject(gen)) {
      const eos = tokenIds(gen.eos_token_id, "eos_token_id", genPath);
      cfg.eosTokenIds = [...new Set([...cfg.eosTokenIds, ...eos])];
      if (cfg.bosTokenId === null)
        cfg.bosTokenId = tokenIds(gen.bos_token_id, "bos_token_id", genPath)[0] ?? null;
    }
  }
  for (const id of [...cfg.eosTokenIds, ...(cfg.bosTokenId === null ? [] : [cfg.bosTokenId])]) {
    if (id >= cfg.vocabSize) {
      throw new ModelConfigError(
        `${dir}: special token id ${id} is outside the vocabulary of ${cfg.vocabSize}`,
      );
    }
  }
  return cfg;
}

export function moduleShape(cfg: ModelConfig, kind: ModuleKind): { inFeatures: number; outFeatures: number } {
  const attn = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  switch (kind) {
    case "q":
      return { inFeatures: cfg.hiddenSize, outFeatures: attn };
    case "k":
    case "v":
      return { inFeatures: cfg.hiddenSize, outFeatures: kv };
    case "o":
      return { inFeatures: attn, outFeatures: cfg.hiddenSize };
    case "gate":
    case "up":
      return { inFeatures: cfg.hiddenSize, outFeatures: cfg.intermediateSize };
    case "down":
      return { inFeatures: cfg.intermediateSize, outFeatures: cfg.hiddenSize };
  }
}

const MODULE_SUFFIX: Record<ModuleKind, string> = {
  q: "self_attn.q_proj",
  k: "self_attn.k_proj",
  v: "self_attn.v_proj",
  o: "self_attn.o_proj",
  gate: "mlp.gate_proj",
  up: "mlp.up_proj",
  down: "mlp.down_proj",
};

/** "q_proj" — the module's own name, what PEFT's target_modules list. */
export function moduleLeafName(kind: ModuleKind): string {
  return MODULE_SUFFIX[kind].split(".")[1]!;
}

/** "model.layers.3.self_attn.q_proj" — the module, without ".weight". */
export function modulePath(layer: number, kind: ModuleKind): string {
  return `model.layers.${layer}.${MODULE_SUFFIX[kind]}`;
}

/** "model.layers.3.self_attn.q_norm.weight": Qwen3's per-head norm of q or k. */
export function headNormName(layer: number, kind: "q" | "k"): string {
  return `model.layers.${layer}.self_attn.${kind}_norm.weight`;
}

/** "model.layers.3.self_attn.q_proj.weight". */
export function weightName(layer: number, kind: ModuleKind): string {
  return `${modulePath(layer, kind)}.weight`;
}
