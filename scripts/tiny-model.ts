// Random-weight Llama models in Hugging Face layout, for tests ("tiny") and benchmarks ("bench-1b"):
// config.json, model.safetensors streamed tensor by tensor, a byte-level BPE tokenizer with a Llama-3-style
// chat template, generation_config.json, and random PEFT adapters under adapters/. The same shapes come as
// Qwen2 (q/k/v biases) or Qwen3 (per-head q/k norms) checkpoints too; only config.json and the weights differ.
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { type FloatDtype, float32ToBfloat16, float32ToFloat16 } from "../worker/engine/dtype.ts";
import {
  ARCHITECTURE_CLASSES,
  headNormName,
  MODULE_KINDS,
  type ModelConfig,
  modulePath,
  moduleShape,
  parseModelConfig,
  weightName,
} from "../worker/engine/model-config.ts";
import { Prng } from "../worker/engine/prng.ts";
import { type TensorToWrite, writeSafetensors } from "../worker/engine/safetensors.ts";
import { buildByteLevelTokenizer } from "./byte-level-bpe.ts";
import { writeRandomAdapter } from "./random-adapter.ts";
import { UniformStream } from "./uniform-stream.ts";

export type TinyShape = "tiny" | "bench-1b";
export const TINY_SHAPES: readonly TinyShape[] = ["tiny", "bench-1b"];
export type TinyArchitecture = "llama" | "qwen2" | "qwen3";
export const TINY_ARCHITECTURES: readonly TinyArchitecture[] = ["llama", "qwen2", "qwen3"];

export interface InitTinyOptions {
  shape: TinyShape;
  /** Defaults to 2 for both shapes; the GPU benchmark uses 16 layers of bench-1b. */
  layers?: number;
  adapters: number;
  rank: number;
  seed: number;
  dtype?: FloatDtype;
  /** The checkpoint's architecture; default llama. */
  architecture?: TinyArchitecture;
  /**
   * False: no end-of-text token in generation_config.json and tokenizer_config.json, so a request generates
   * exactly max_tokens unless something stops it (tests that count tokens). Default true.
   */
  endOfText?: boolean;
  /** Called as weight bytes reach the disk. */
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

export interface TinyModel {
  dir: string;
  config: ModelConfig;
  parameters: number;
  weightBytes: number;
  adapterDirs: string[];
}

export const SPECIAL_TOKENS = [
  "<|begin_of_text|>",
  "<|end_of_text|>",
  "<|start_header_id|>",
  "<|end_header_id|>",
  "<|eot_id|>",
  "<|eom_id|>",
  "<|reserved_special_token_0|>",
  "<|reserved_special_token_1|>",
] as const;

// Llama 3's own template: bos before the first message, a header per turn, <|eot_id|> after each.
const CHAT_TEMPLATE =
  "{% set loop_messages = messages %}{% for message in loop_messages %}" +
  "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}" +
  "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

const SHAPES: Record<TinyShape, Record<string, unknown>> = {
  tiny: {
    hidden_size: 64,
    intermediate_size: 128,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    vocab_size: 512,
    max_position_embeddings: 2048,
    rope_theta: 10000,
    rope_scaling: null,
  },
  // Llama 3.2 1B's widths, its llama3 rope scaling, and a 32k vocabulary.
  "bench-1b": {
    hidden_size: 2048,
    intermediate_size: 8192,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    head_dim: 64,
    vocab_size: 32000,
    max_position_embeddings: 131072,
    rope_theta: 500000,
    rope_scaling: {
      rope_type: "llama3",
      factor: 32,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 8192,
    },
  },
};

const TORCH_DTYPE: Record<FloatDtype, string> = { F32: "float32", F16: "float16", BF16: "bfloat16" };
const CHUNK = 1 << 20;
const SEED_BLOCK = 65536;

/** How a tensor's values are drawn: uniform with the given std around a center. */
interface Init {
  center: number;
  std: number;
}

function checkCount(name: string, v: number, min: number): void {
  if (!Number.isSafeInteger(v) || v < min)
    throw new RangeError(`${name} must be an integer ≥ ${min}, got ${v}`);
}

function randomTensor(
  name: string,
  shape: number[],
  init: Init,
  dtype: FloatDtype,
  prng: Prng,
  progress: (bytes: number) => void,
): TensorToWrite {
  const count = shape.reduce((a, d) => a * d, 1);
  const half = init.std * Math.sqrt(3);
  const stream = new UniformStream(prng);
  return {
    name,
    dtype,
    shape,
    *data() {
      for (let done = 0; done < count; done += CHUNK) {
        const values = new Float32Array(Math.min(CHUNK, count - done));
        stream.fill(values, init.center, half);
        const chunk =
          dtype === "F32" ? values : dtype === "F16" ? float32ToFloat16(values) : float32ToBfloat16(values);
        progress(chunk.byteLength);
        yield chunk;
      }
    },
  };
}

/** The config.json of a random model of this shape. */
export function tinyConfigJson(
  shape: TinyShape,
  layers: number,
  dtype: FloatDtype,
  architecture: TinyArchitecture = "llama",
): Record<string, unknown> {
  const vocab = SHAPES[shape].vocab_size as number;
  const bos = vocab - SPECIAL_TOKENS.length + SPECIAL_TOKENS.indexOf("<|begin_of_text|>");
  const eos = [
    vocab - SPECIAL_TOKENS.length + SPECIAL_TOKENS.indexOf("<|end_of_text|>"),
    vocab - SPECIAL_TOKENS.length + SPECIAL_TOKENS.indexOf("<|eot_id|>"),
  ];
  return {
    architectures: [ARCHITECTURE_CLASSES[architecture]],
    model_type: architecture,
    ...SHAPES[shape],
    // As in Qwen3 0.6B, attention twice as wide as the hidden size (heads × head_dim ≠ hidden).
    ...(architecture === "qwen3" && shape === "tiny" ? { head_dim: 32 } : {}),
    num_hidden_layers: layers,
    hidden_act: "silu",
    rms_norm_eps: 1e-5,
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: false,
    torch_dtype: TORCH_DTYPE[dtype],
    bos_token_id: bos,
    eos_token_id: eos,
    initializer_range: 0.02,
    use_cache: true,
  };
}

/**
 * Writes a model's byte-level BPE tokenizer (tokenizer.json, tokenizer_config.json with the chat template)
 * into `dir`: all a benchmark of the vocabulary alone needs (bench structured).
 */
export function writeTinyTokenizer(dir: string, config: ModelConfig, endOfText = true): void {
  const tokenizer = buildByteLevelTokenizer({
    vocabSize: config.vocabSize,
    specialTokens: SPECIAL_TOKENS,
    bosToken: "<|begin_of_text|>",
  });
  mkdirSync(dir, { recursive: true });
  writeJson(join(dir, "tokenizer.json"), tokenizer.json);
  writeJson(join(dir, "tokenizer_config.json"), {
    tokenizer_class: "PreTrainedTokenizerFast",
    bos_token: "<|begin_of_text|>",
    ...(endOfText ? { eos_token: "<|eot_id|>" } : {}),
    clean_up_tokenization_spaces: false,
    model_max_length: config.maxPositions,
    model_input_names: ["input_ids", "attention_mask"],
    added_tokens_decoder: Object.fromEntries(
      SPECIAL_TOKENS.map((t) => [
        String(tokenizer.specialIds[t]),
        { content: t, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
      ]),
    ),
    chat_template: CHAT_TEMPLATE,
  });
}

export function initTinyModel(dir: string, options: InitTinyOptions): TinyModel {
  const { shape, adapters, rank, seed } = options;
  const layers = options.layers ?? 2;
  const dtype = options.dtype ?? "F32";
  const architecture = options.architecture ?? "llama";
  if (!TINY_SHAPES.includes(shape)) throw new RangeError(`unknown shape ${shape} (tiny, bench-1b)`);
  if (!TINY_ARCHITECTURES.includes(architecture)) {
    throw new RangeError(`unknown architecture ${architecture} (${TINY_ARCHITECTURES.join(", ")})`);
  }
  checkCount("layers", layers, 1);
  checkCount("adapters", adapters, 0);
  if (adapters >= SEED_BLOCK) throw new RangeError(`at most ${SEED_BLOCK - 1} adapters, got ${adapters}`);
  checkCount("rank", rank, 1);
  checkCount("seed", seed, 0);
  if (seed >= 2 ** 32) throw new RangeError(`seed must be below 2^32, got ${seed}`);
  const root = resolve(dir);
  mkdirSync(root, { recursive: true });

  const configJson = tinyConfigJson(shape, layers, dtype, architecture);
  const config = parseModelConfig(configJson);
  writeJson(join(root, "config.json"), configJson);
  const endOfText = options.endOfText ?? true;
  writeJson(join(root, "generation_config.json"), {
    bos_token_id: configJson.bos_token_id,
    ...(endOfText ? { eos_token_id: configJson.eos_token_id } : {}),
    do_sample: true,
    temperature: 0.6,
    top_p: 0.9,
  });

  writeTinyTokenizer(root, config, endOfText);

  const specs = weightSpecs(config);
  const bytesPerValue = dtype === "F32" ? 4 : 2;
  const parameters = specs.reduce((a, s) => a + s.shape.reduce((x, d) => x * d, 1), 0);
  const weightBytes = parameters * bytesPerValue;
  let done = 0;
  const progress = (bytes: number): void => {
    done += bytes;
    options.onProgress?.(done, weightBytes);
  };
  // One stream per tensor: a tensor's values do not depend on how many values came before it. Base
  // weights and each adapter get seeds of their own within the model seed's block.
  const tensors = specs.map((s, i) =>
    randomTensor(s.name, s.shape, s.init, dtype, new Prng(seed * SEED_BLOCK, i), progress),
  );
  writeSafetensors(join(root, "model.safetensors"), tensors, { format: "pt" });

  const adapterDirs: string[] = [];
  for (let i = 0; i < adapters; i++) {
    const adapterDir = join(root, "adapters", `adapter-${i}`);
    writeRandomAdapter(adapterDir, config, { rank, seed: seed * SEED_BLOCK + 1 + i, dtype });
    adapterDirs.push(adapterDir);
  }
  return { dir: root, config, parameters, weightBytes, adapterDirs };
}

function writeJson(path: string, value: unknown): void {
  writeFileSync(path, `${JSON.stringify(value, null, 2)}\n`);
}

// Scales keep every activation near unit size at any width: projections have std 1/sqrt(fan_in) (≈0.02
// at bench-1b's width), so a forward pass stays finite and its logits are spread, not all equal.
function weightSpecs(cfg: ModelConfig): { name: string; shape: number[]; init: Init }[] {
  const norm: Init = { center: 1, std: 0.05 };
  const specs: { name: string; shape: number[]; init: Init }[] = [
    {
      name: "model.embed_tokens.weight",
      shape: [cfg.vocabSize, cfg.hiddenSize],
      init: { center: 0, std: 1 },
    },
  ];
  for (let l = 0; l < cfg.numLayers; l++) {
    specs.push({ name: `model.layers.${l}.input_layernorm.weight`, shape: [cfg.hiddenSize], init: norm });
    for (const kind of MODULE_KINDS) {
      if (kind === "gate") {
        specs.push({
          name: `model.layers.${l}.post_attention_layernorm.weight`,
          shape: [cfg.hiddenSize],
          init: norm,
        });
      }
      const { inFeatures, outFeatures } = moduleShape(cfg, kind);
      specs.push({
        name: weightName(l, kind),
        shape: [outFeatures, inFeatures],
        init: { center: 0, std: 1 / Math.sqrt(inFeatures) },
      });
      if (cfg.qkvBias && (kind === "q" || kind === "k" || kind === "v")) {
        specs.push({
          name: `${modulePath(l, kind)}.bias`,
          shape: [outFeatures],
          init: { center: 0, std: 0.3 },
        });
      }
      if (cfg.qkNorm && (kind === "q" || kind === "k")) {
        specs.push({
          name: headNormName(l, kind),
          shape: [cfg.headDim],
          init: norm,
        });
      }
    }
  }
  specs.push({ name: "model.norm.weight", shape: [cfg.hiddenSize], init: norm });
  specs.push({
    name: "lm_head.weight",
    shape: [cfg.vocabSize, cfg.hiddenSize],
    init: { center: 0, std: 1 / Math.sqrt(cfg.hiddenSize) },
  });
  return specs;
}
