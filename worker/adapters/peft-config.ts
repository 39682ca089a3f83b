// adapter_config.json of a PEFT LoRA adapter: parsing, refusal of what Luminet does not serve, and
// PEFT's own rules for which modules an adapter targets and which rank and alpha each module gets
// (peft/tuners/tuners_utils.py check_target_module_exists, peft/utils/other.py get_pattern_key), with the
// bounds on alpha and the scale it makes that keep an accepted adapter's weights finite.

export class AdapterError extends Error {
  override name = "AdapterError";
}

/**
 * The largest |scale| (alpha/r, alpha/√r with rsLoRA) a module may have. Trained adapters use an alpha of
 * about r to a few times r, a few to a few hundred: a scale of 0.5 to 4, tens at most under rsLoRA. 10,000
 * is far past any of them, so a larger one is a mistyped or broken config, not a training choice; left in,
 * it turns a layer's output, then every logit, into NaN (alpha 1e30 did, on every request).
 */
export const MAX_LORA_SCALE = 1e4;

/**
 * Whether float32 holds `value`: not past its range (±3.4e38), and not so small (under 1.4e-45) that it
 * rounds to 0. An adapter's weights are float32 and its alpha is stored as a Postgres `real`, the same type.
 */
export function fitsFloat32(value: number): boolean {
  const rounded = Math.fround(value);
  return Number.isFinite(rounded) && (rounded !== 0 || value === 0);
}

const FLOAT32_ALPHA = "a number float32 holds (a magnitude from 1.4e-45 to 3.4e38, or 0)";

/** The seven linear modules of a Llama-family decoder layer, by their Hugging Face leaf names. */
export const LINEAR_MODULE_NAMES = [
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
] as const;

export interface PeftLoraConfig {
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  /** A list matches module-name suffixes (or whole names); a string is a regex matched against the whole name. */
  targetModules: string[] | RegExp;
  excludeModules: string[] | RegExp | null;
  layersToTransform: number[] | null;
  layersPattern: string[];
  /** Insertion order matters: PEFT takes the first key that matches. */
  rankPattern: [string, number][];
  alphaPattern: [string, number][];
  /**
   * Kept for completeness; PEFT resets it to false for torch.nn.Linear targets (every Llama module), so
   * lora_A/lora_B are stored [r, in] / [out, r] either way.
   */
  fanInFanOut: boolean;
  loraBias: boolean;
  baseModelNameOrPath: string | null;
}

// Module names of the token embedding and the output head in a Hugging Face causal LM.
const EMBEDDING_MODULES = ["model.embed_tokens", "lm_head"];

// PEFT's default targets when target_modules is absent (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
// gives q_proj, v_proj for llama, mistral and qwen2 alike).
const DEFAULT_TARGETS = ["q_proj", "v_proj"];

// init_lora_weights values whose adapters are trained against a base model that PEFT itself rewrote
// (a residual after SVD, QR or quantization). Saved without PEFT's conversion, they only work on that
// rewritten base.
const BASE_MUTATING_INITS = ["pissa", "olora", "corda", "loftq", "lora_ga"];

// Config keys that switch on a LoRA variant whose forward pass differs from y = Wx + s·B·A·x.
const VARIANT_KEYS: [string, string][] = [
  ["velora_config", "VeLoRA"],
  ["monteclora_config", "MonteCLoRA"],
  ["use_bdlora", "block-diagonal LoRA"],
  ["arrow_config", "Arrow routing"],
  ["kasa_config", "KaSA"],
  ["use_qalora", "QA-LoRA"],
  ["alora_invocation_tokens", "activated LoRA (alora_invocation_tokens)"],
  ["layer_replication", "layer_replication"],
  ["target_parameters", "LoRA on parameters (target_parameters)"],
];

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/** Set means anything but null/undefined/false/empty list/empty object. */
function isSet(v: unknown): boolean {
  if (v === undefined || v === null || v === false) return false;
  if (Array.isArray(v)) return v.length > 0;
  if (isObject(v)) return Object.keys(v).length > 0;
  return true;
}

/**
 * Compiles a Python `re` pattern as a JavaScript RegExp anchored by `anchor`. The named-group syntax
 * differs between the two and is translated; everything else PEFT users write in module patterns
 * (classes, alternation, escapes, quantifiers) reads the same.
 */
export function pythonRegex(pattern: string, anchor: (p: string) => string, where: string): RegExp {
  const js = pattern
    .replace(/\(\?P</g, "(?<")
    .replace(/\(\?P=(\w+)\)/g, "\\k<$1>")
    .replace(/\\A/g, "^")
    .replace(/\\Z/g, "$");
  try {
    return new RegExp(anchor(js));
  } catch (err) {
    throw new AdapterError(
      `adapter_config.json: ${where} ${JSON.stringify(pattern)} is not a valid regex (${(err as Error).message})`,
    );
  }
}

const fullMatch = (p: string): string => `^(?:${p})$`;
// get_pattern_key: re.match(rf"(.*\.)?({key})$", name)
const patternKeyMatch = (p: string): string => `^(?:.*\\.)?(?:${p})$`;

function positiveInt(c: Record<string, unknown>, key: string, fallback: number): number {
  const v = c[key] ?? fallback;
  if (!Number.isSafeInteger(v) || (v as number) <= 0) {
    throw new AdapterError(
      `adapter_config.json: ${key} must be a positive integer, got ${JSON.stringify(v)}`,
    );
  }
  return v as number;
}

function float32Number(c: Record<string, unknown>, key: string, fallback: number): number {
  const v = c[key] ?? fallback;
  if (typeof v !== "number" || !fitsFloat32(v)) {
    throw new AdapterError(`adapter_config.json: ${key} must be ${FLOAT32_ALPHA}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function bool(c: Record<string, unknown>, key: string): boolean {
  const v = c[key] ?? false;
  if (typeof v !== "boolean") {
    throw new AdapterError(`adapter_config.json: ${key} must be true or false, got ${JSON.stringify(v)}`);
  }
  return v;
}

function stringList(v: unknown, key: string): string[] {
  if (!Array.isArray(v) || !v.every((x) => typeof x === "string")) {
    throw new AdapterError(
      `adapter_config.json: ${key} must be a list of module names or a regex string, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function moduleSelector(v: unknown, key: string): string[] | RegExp {
  return typeof v === "string" ? pythonRegex(v, fullMatch, key) : stringList(v, key);
}

function pattern(c: Record<string, unknown>, key: string, integer: boolean): [string, number][] {
  const v = c[key] ?? {};
  if (!isObject(v)) throw new AdapterError(`adapter_config.json: ${key} must be an object`);
  const out: [string, number][] = [];
  for (const [name, value] of Object.entries(v)) {
    const ok = integer
      ? Number.isSafeInteger(value) && (value as number) > 0
      : typeof value === "number" && fitsFloat32(value);
    if (!ok) {
      throw new AdapterError(
        `adapter_config.json: ${key}[${JSON.stringify(name)}] must be ${integer ? "a positive integer" : FLOAT32_ALPHA}, got ${JSON.stringify(value)}`,
      );
    }
    pythonRegex(name, patternKeyMatch, `${key} key`);
    out.push([name, value as number]);
  }
  return out;
}

function refuseUnsupported(c: Record<string, unknown>): void {
  if (c.peft_type !== "LORA") {
    throw new AdapterError(
      `adapter_config.json: peft_type ${JSON.stringify(c.peft_type)} is not supported; only LORA adapters are served`,
    );
  }
  if (c.use_dora === true) {
    throw new AdapterError("adapter_config.json: DoRA adapters (use_dora: true) are not supported");
  }
  if (isSet(c.modules_to_save)) {
    throw new AdapterError(
      `adapter_config.json: modules_to_save ${JSON.stringify(c.modules_to_save)} is not supported: it replaces whole base modules, which one shared base model cannot do per request`,
    );
  }
  if (isSet(c.trainable_token_indices)) {
    throw new AdapterError(
      "adapter_config.json: trainable_token_indices is not supported: it changes the base model's embeddings",
    );
  }
  const bias = c.bias ?? "none";
  if (bias !== "none") {
    throw new AdapterError(
      `adapter_config.json: bias ${JSON.stringify(bias)} is not supported: it trains and ships the base model's own biases; only bias "none" is served (lora_bias is supported)`,
    );
  }
  for (const [key, what] of VARIANT_KEYS) {
    if (isSet(c[key])) {
      throw new AdapterError(`adapter_config.json: ${what} is not supported (${key} is set)`);
    }
  }
  const init = c.init_lora_weights;
  if (typeof init === "string" && BASE_MUTATING_INITS.some((p) => init.toLowerCase().startsWith(p))) {
    throw new AdapterError(
      `adapter_config.json: init_lora_weights ${JSON.stringify(init)} adapters are trained against a rewritten base model; convert it to a plain LoRA with PEFT's save_pretrained(path_initial_model_for_weight_conversion=...) first`,
    );
  }
}

/** Parses adapter_config.json's content; throws AdapterError naming the field for anything unsupported. */
export function parsePeftConfig(json: unknown): PeftLoraConfig {
  if (!isObject(json)) throw new AdapterError("adapter_config.json: not a JSON object");
  const c = json;
  refuseUnsupported(c);

  const rawTargets = c.target_modules ?? DEFAULT_TARGETS;
  const targetModules =
    typeof rawTargets === "string" && rawTargets.toLowerCase() === "all-linear"
      ? [...LINEAR_MODULE_NAMES]
      : moduleSelector(rawTargets, "target_modules");
  const rawExclude = c.exclude_modules;
  const excludeModules = isSet(rawExclude) ? moduleSelector(rawExclude, "exclude_modules") : null;

  let layersToTransform: number[] | null = null;
  const ltt = c.layers_to_transform;
  if (ltt !== undefined && ltt !== null) {
    const list = Array.isArray(ltt) ? ltt : [ltt];
    if (!list.every((x) => Number.isSafeInteger(x) && x >= 0)) {
      throw new AdapterError(
        `adapter_config.json: layers_to_transform must be a layer index or a list of them, got ${JSON.stringify(ltt)}`,
      );
    }
    if (list.length > 0) layersToTransform = list as number[];
  }
  const lp = c.layers_pattern;
  const layersPattern =
    lp === undefined || lp === null ? [] : typeof lp === "string" ? [lp] : stringList(lp, "layers_pattern");

  const base = c.base_model_name_or_path;
  const cfg: PeftLoraConfig = {
    r: positiveInt(c, "r", 8),
    loraAlpha: float32Number(c, "lora_alpha", 8),
    useRslora: bool(c, "use_rslora"),
    targetModules,
    excludeModules,
    layersToTransform,
    layersPattern: layersPattern.filter((p) => p !== ""),
    rankPattern: pattern(c, "rank_pattern", true),
    alphaPattern: pattern(c, "alpha_pattern", false),
    fanInFanOut: bool(c, "fan_in_fan_out"),
    loraBias: bool(c, "lora_bias"),
    baseModelNameOrPath: typeof base === "string" ? base : null,
  };
  for (const embedding of EMBEDDING_MODULES) {
    if (isTargeted(cfg, embedding)) {
      throw new AdapterError(
        `adapter_config.json: target_modules selects ${embedding}; LoRA on the embedding or the output head (embedding LoRA) is not supported`,
      );
    }
  }
  return cfg;
}

function selects(selector: string[] | RegExp, name: string): boolean {
  if (selector instanceof RegExp) return selector.test(name);
  return selector.some((t) => name === t || name.endsWith(`.${t}`));
}

function layerIndexOf(cfg: PeftLoraConfig, name: string): number | null {
  // Lazy .*? finds the first numbered segment, the layer index, as PEFT does.
  const patterns = cfg.layersPattern.length === 0 ? ["[^.]*"] : cfg.layersPattern;
  for (const p of patterns) {
    const m = new RegExp(`^.*?\\.${p}\\.(\\d+)\\.`).exec(name);
    if (m) return Number(m[1]);
  }
  return null;
}

/** Whether PEFT would put a LoRA layer on the module named `name` (e.g. "model.layers.0.self_attn.q_proj"). */
export function isTargeted(cfg: PeftLoraConfig, name: string): boolean {
  if (cfg.excludeModules && selects(cfg.excludeModules, name)) return false;
  if (cfg.targetModules instanceof RegExp) return cfg.targetModules.test(name);
  if (cfg.targetModules.includes(name)) return true;
  if (!selects(cfg.targetModules, name)) return false;
  if (cfg.layersToTransform === null) return true;
  const layer = layerIndexOf(cfg, name);
  return layer !== null && cfg.layersToTransform.includes(layer);
}

/** The first pattern entry whose key matches the module `name`, as PEFT's get_pattern_key picks it. */
function patternEntry(entries: [string, number][], name: string): [string, number] | undefined {
  return entries.find(([key]) => pythonRegex(key, patternKeyMatch, "pattern key").test(name));
}

export function moduleRank(cfg: PeftLoraConfig, name: string): number {
  return patternEntry(cfg.rankPattern, name)?.[1] ?? cfg.r;
}

/**
 * PEFT's scaling: alpha / r, or alpha / sqrt(r) with rsLoRA, from the module's own rank and alpha. Throws
 * AdapterError, naming the fields it came from, past MAX_LORA_SCALE.
 */
export function moduleScale(cfg: PeftLoraConfig, name: string): number {
  const rankEntry = patternEntry(cfg.rankPattern, name);
  const alphaEntry = patternEntry(cfg.alphaPattern, name);
  const rank = rankEntry?.[1] ?? cfg.r;
  const alpha = alphaEntry?.[1] ?? cfg.loraAlpha;
  const scale = cfg.useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
  if (Math.abs(scale) > MAX_LORA_SCALE) {
    const alphaFrom = alphaEntry ? `alpha_pattern[${JSON.stringify(alphaEntry[0])}]` : "lora_alpha";
    const rankFrom = rankEntry ? `rank_pattern[${JSON.stringify(rankEntry[0])}]` : "r";
    const divisor = cfg.useRslora ? `sqrt(${rankFrom} ${rank}) with use_rslora` : `${rankFrom} ${rank}`;
    throw new AdapterError(
      `adapter_config.json: module ${name} has LoRA scale ${scale} (${alphaFrom} ${alpha} / ${divisor}); ` +
        `a scale may be at most ${MAX_LORA_SCALE} in magnitude (trained adapters have 0.5 to 4, tens at most with rsLoRA)`,
    );
  }
  return scale;
}
