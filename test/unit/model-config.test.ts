import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  loadModelConfig,
  MODULE_KINDS,
  ModelConfigError,
  modulePath,
  moduleShape,
  parseModelConfig,
  weightName,
} from "../../worker/engine/model-config.ts";

// Trimmed from the published config.json of Llama 3.1 8B Instruct.
const LLAMA_31 = {
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_scaling: {
    factor: 8.0,
    low_freq_factor: 1.0,
    high_freq_factor: 4.0,
    original_max_position_embeddings: 8192,
    rope_type: "llama3",
  },
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  vocab_size: 128256,
};

// Mistral 7B v0.1: no head_dim, a single eos id.
const MISTRAL = {
  architectures: ["MistralForCausalLM"],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: "silu",
  hidden_size: 4096,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: "mistral",
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  torch_dtype: "bfloat16",
  vocab_size: 32000,
};

// Qwen2.5 0.5B Instruct: tied embeddings, q/k/v bias implied by the architecture.
const QWEN2 = {
  architectures: ["Qwen2ForCausalLM"],
  bos_token_id: 151643,
  eos_token_id: 151645,
  hidden_act: "silu",
  hidden_size: 896,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 21,
  model_type: "qwen2",
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  use_sliding_window: false,
  vocab_size: 151936,
};

// Qwen3 0.6B: per-head q/k norms, attention (16 × 128) twice as wide as hidden, tied embeddings.
const QWEN3 = {
  architectures: ["Qwen3ForCausalLM"],
  attention_bias: false,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: "silu",
  hidden_size: 1024,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  max_window_layers: 28,
  model_type: "qwen3",
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  torch_dtype: "bfloat16",
  use_sliding_window: false,
  vocab_size: 151936,
};

const root = mkdtempSync(join(tmpdir(), "luminet-model-config-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("parseModelConfig", () => {
  it("reads a Llama 3.1 config with llama3 rope scaling and several eos ids", () => {
    expect(parseModelConfig(LLAMA_31)).toEqual({
      architecture: "llama",
      hiddenSize: 4096,
      intermediateSize: 14336,
      numLayers: 32,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 128,
      vocabSize: 128256,
      maxPositions: 131072,
      rmsNormEps: 1e-5,
      ropeTheta: 500000,
      ropeScaling: {
        type: "llama3",
        factor: 8,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositions: 8192,
      },
      tieWordEmbeddings: false,
      qkvBias: false,
      qkNorm: false,
      dtype: "BF16",
      bosTokenId: 128000,
      eosTokenIds: [128001, 128008, 128009],
    });
  });

  it("reads a Mistral config, deriving head_dim from hidden size and heads", () => {
    const cfg = parseModelConfig(MISTRAL);
    expect(cfg).toMatchObject({
      architecture: "mistral",
      headDim: 128,
      numKvHeads: 8,
      ropeScaling: null,
      qkvBias: false,
    });
    expect(cfg.eosTokenIds).toEqual([2]);
  });

  it("caps a Mistral model's context at its sliding window, where full attention is what it computes", () => {
    expect(parseModelConfig(MISTRAL).maxPositions).toBe(4096);
    expect(parseModelConfig({ ...MISTRAL, sliding_window: null }).maxPositions).toBe(32768);
    expect(parseModelConfig({ ...MISTRAL, sliding_window: 65536 }).maxPositions).toBe(32768);
    // Qwen2 writes a sliding_window it does not use unless use_sliding_window is set.
    expect(parseModelConfig({ ...QWEN2, sliding_window: 4096 }).maxPositions).toBe(32768);
  });

  it("reads a Qwen3 config: per-head q/k norms, no q/k/v bias, head_dim wider than hidden / heads", () => {
    expect(parseModelConfig(QWEN3)).toMatchObject({
      architecture: "qwen3",
      hiddenSize: 1024,
      numHeads: 16,
      numKvHeads: 8,
      headDim: 128,
      maxPositions: 40960,
      tieWordEmbeddings: true,
      qkvBias: false,
      qkNorm: true,
      ropeTheta: 1e6,
      eosTokenIds: [151645],
    });
    expect(parseModelConfig({ ...QWEN3, architectures: undefined }).architecture).toBe("qwen3");
  });

  it("reads a Qwen2 config with tied embeddings and q/k/v bias", () => {
    const cfg = parseModelConfig(QWEN2);
    expect(cfg).toMatchObject({
      architecture: "qwen2",
      headDim: 64,
      numKvHeads: 2,
      tieWordEmbeddings: true,
      qkvBias: true,
      ropeTheta: 1e6,
      rmsNormEps: 1e-6,
      eosTokenIds: [151645],
    });
  });

  it("fills transformers' defaults for what a config leaves out", () => {
    const minimal = {
      model_type: "llama",
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      vocab_size: 100,
    };
    expect(parseModelConfig(minimal)).toMatchObject({
      architecture: "llama",
      numKvHeads: 4,
      headDim: 16,
      ropeTheta: 10000,
      ropeScaling: null,
      rmsNormEps: 1e-6,
      maxPositions: 2048,
      tieWordEmbeddings: false,
      dtype: "F32",
      bosTokenId: null,
      eosTokenIds: [],
    });
    expect(parseModelConfig({ ...minimal, head_dim: 32 }).headDim).toBe(32);
    expect(parseModelConfig({ ...minimal, torch_dtype: "float16" }).dtype).toBe("F16");
  });

  it("resolves YaRN as transformers 5 does: the factor from the context stretch where the original is given", () => {
    const yarn = { rope_type: "yarn", factor: 4, original_max_position_embeddings: 32768 };
    const stretched = parseModelConfig({ ...QWEN3, max_position_embeddings: 131072, rope_scaling: yarn });
    expect(stretched.ropeScaling).toEqual({
      type: "yarn",
      factor: 4,
      originalMaxPositions: 32768,
      betaFast: 32,
      betaSlow: 1,
      attentionFactor: 0.1 * Math.log(4) + 1,
      truncate: true,
    });
    // Qwen3's own max_position_embeddings (40960) with that snippet stretches the context 1.25 times.
    expect(parseModelConfig({ ...QWEN3, rope_scaling: yarn }).ropeScaling).toMatchObject({ factor: 1.25 });
    // Without original_max_position_embeddings: `factor` as given, over max_position_embeddings.
    expect(
      parseModelConfig({ ...QWEN3, rope_scaling: { rope_type: "yarn", factor: 2 } }).ropeScaling,
    ).toMatchObject({ factor: 2, originalMaxPositions: 40960, attentionFactor: 0.1 * Math.log(2) + 1 });
    // DeepSeek's mscale ratio, and an explicit attention factor.
    const deepseek = {
      rope_type: "yarn",
      factor: 40,
      mscale: 1,
      mscale_all_dim: 1,
      beta_fast: 32,
      beta_slow: 1,
    };
    expect(parseModelConfig({ ...QWEN3, rope_scaling: deepseek }).ropeScaling).toMatchObject({
      attentionFactor: 1,
    });
    expect(
      parseModelConfig({ ...QWEN3, rope_scaling: { rope_type: "yarn", factor: 2, attention_factor: 1.5 } })
        .ropeScaling,
    ).toMatchObject({ attentionFactor: 1.5 });
    expect(() =>
      parseModelConfig({ ...QWEN3, rope_scaling: { rope_type: "yarn", factor: 2, truncate: "yes" } }),
    ).toThrow(/rope_scaling\.truncate must be a boolean/);
    expect(() => parseModelConfig({ ...QWEN3, rope_scaling: { rope_type: "yarn" } })).toThrow(
      /rope_scaling\.factor is missing/,
    );
  });

  it("reads linear rope scaling (older `type` key) and treats rope_type default as none", () => {
    expect(parseModelConfig({ ...MISTRAL, rope_scaling: { type: "linear", factor: 2 } }).ropeScaling).toEqual(
      {
        type: "linear",
        factor: 2,
      },
    );
    expect(parseModelConfig({ ...MISTRAL, rope_scaling: { rope_type: "default" } }).ropeScaling).toBeNull();
  });

  it.each([
    [
      "an unknown architecture",
      { ...LLAMA_31, architectures: ["GPT2LMHeadModel"] },
      /unsupported architecture "GPT2LMHeadModel"/,
    ],
    [
      "an unknown model_type",
      { ...MISTRAL, architectures: undefined, model_type: "gemma" },
      /unsupported model_type "gemma"/,
    ],
    [
      "an unsupported rope type",
      { ...LLAMA_31, rope_scaling: { rope_type: "dynamic", factor: 4 } },
      /unsupported rope_scaling type "dynamic"/,
    ],
    [
      "llama3 scaling without its factors",
      { ...LLAMA_31, rope_scaling: { rope_type: "llama3", factor: 8 } },
      /rope_scaling\.low_freq_factor is missing/,
    ],
    ["a missing field", { ...MISTRAL, hidden_size: undefined }, /hidden_size is missing/],
    [
      "a non-integer size",
      { ...MISTRAL, num_hidden_layers: 2.5 },
      /num_hidden_layers must be a positive integer, got 2.5/,
    ],
    [
      "heads not a multiple of kv heads",
      { ...MISTRAL, num_key_value_heads: 5 },
      /not a multiple of num_key_value_heads 5/,
    ],
    [
      "an activation other than silu",
      { ...MISTRAL, hidden_act: "gelu" },
      /hidden_act "gelu" is not supported/,
    ],
    ["an unsupported dtype", { ...MISTRAL, torch_dtype: "float8" }, /torch_dtype "float8" is not supported/],
    [
      "attention bias on Llama",
      { ...LLAMA_31, attention_bias: true },
      /attention_bias = true is not supported/,
    ],
    [
      "attention bias on Qwen3 (it would bias o_proj too)",
      { ...QWEN3, attention_bias: true },
      /attention_bias = true is not supported/,
    ],
    [
      "Qwen3's sliding-window attention",
      { ...QWEN3, use_sliding_window: true, sliding_window: 4096 },
      /use_sliding_window = true is not supported/,
    ],
    ["a sliding window that is not a size", { ...MISTRAL, sliding_window: 0 }, /sliding_window must be/],
    [
      "a bad eos id",
      { ...MISTRAL, eos_token_id: ["x"] },
      /eos_token_id must be a token id or a list of them/,
    ],
    ["something that is not an object", [1], /not a JSON object/],
  ])("rejects %s", (_, json, message) => {
    expect(() => parseModelConfig(json)).toThrow(ModelConfigError);
    expect(() => parseModelConfig(json)).toThrow(message);
  });
});

describe("loadModelConfig", () => {
  it("adds generation_config.json's eos ids to the config's", () => {
    const dir = mkdtempSync(join(root, "gen-"));
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...LLAMA_31, eos_token_id: 128001 }));
    writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [128001, 128009] }));
    expect(loadModelConfig(dir).eosTokenIds).toEqual([128001, 128009]);
  });

  it("names the folder when config.json is missing or wrong", () => {
    const dir = mkdtempSync(join(root, "bad-"));
    expect(() => loadModelConfig(dir)).toThrow(`${dir}: no config.json`);
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...MISTRAL, eos_token_id: 99999 }));
    expect(() => loadModelConfig(dir)).toThrow(/special token id 99999 is outside the vocabulary of 32000/);
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...MISTRAL, hidden_act: "relu" }));
    expect(() => loadModelConfig(dir)).toThrow(
      `${dir}/config.json: hidden_act "relu" is not supported (silu)`,
    );
  });
});

describe("linear modules", () => {
  const cfg = parseModelConfig(LLAMA_31);

  it("lists the seven module kinds in q, k, v, o, gate, up, down order", () => {
    expect(MODULE_KINDS).toEqual(["q", "k", "v", "o", "gate", "up", "down"]);
  });

  it("gives each module's in and out features, with GQA narrowing k and v", () => {
    expect(MODULE_KINDS.map((k) => moduleShape(cfg, k))).toEqual([
      { inFeatures: 4096, outFeatures: 4096 },
      { inFeatures: 4096, outFeatures: 1024 },
      { inFeatures: 4096, outFeatures: 1024 },
      { inFeatures: 4096, outFeatures: 4096 },
      { inFeatures: 4096, outFeatures: 14336 },
      { inFeatures: 4096, outFeatures: 14336 },
      { inFeatures: 14336, outFeatures: 4096 },
    ]);
    const wide = parseModelConfig({ ...MISTRAL, head_dim: 256 });
    expect(moduleShape(wide, "q")).toEqual({ inFeatures: 4096, outFeatures: 8192 });
    expect(moduleShape(wide, "o")).toEqual({ inFeatures: 8192, outFeatures: 4096 });
  });

  it("names modules and weights as Hugging Face does", () => {
    expect(modulePath(3, "q")).toBe("model.layers.3.self_attn.q_proj");
    expect(weightName(3, "o")).toBe("model.layers.3.self_attn.o_proj.weight");
    expect(weightName(0, "gate")).toBe("model.layers.0.mlp.gate_proj.weight");
    expect(weightName(11, "down")).toBe("model.layers.11.mlp.down_proj.weight");
  });
});
