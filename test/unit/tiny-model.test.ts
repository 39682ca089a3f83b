import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { loadPeftAdapter } from "../../worker/adapters/peft.ts";
import {
  loadModelConfig,
  MODULE_KINDS,
  type ModelConfig,
  moduleShape,
  weightName,
} from "../../worker/engine/model-config.ts";
import { openWeights, type WeightIndex } from "../../worker/engine/safetensors.ts";
import { loadTokenizer } from "../../worker/engine/tokenizer.ts";

const root = mkdtempSync(join(tmpdir(), "luminet-tiny-model-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
const freshDir = () => join(root, `model-${counter++}`);

function rmsNorm(x: Float32Array, w: Float32Array, eps: number): Float32Array {
  let ms = 0;
  for (const v of x) ms += v * v;
  const r = 1 / Math.sqrt(ms / x.length + eps);
  return x.map((v, i) => v * r * w[i]!);
}

function matVec(weights: WeightIndex, name: string, x: Float32Array): Float32Array {
  const w = weights.readFloat32(name);
  const out = new Float32Array(w.length / x.length);
  for (let o = 0; o < out.length; o++) {
    let s = 0;
    for (let i = 0; i < x.length; i++) s += w[o * x.length + i]! * x[i]!;
    out[o] = s;
  }
  return out;
}

// With a single token, attention over one key returns its value, so rotary embeddings and softmax drop out
// and the whole Llama forward fits in a few lines.
function singleTokenLogits(cfg: ModelConfig, w: WeightIndex, token: number): Float32Array {
  const emb = w.readFloat32("model.embed_tokens.weight");
  let h = emb.slice(token * cfg.hiddenSize, (token + 1) * cfg.hiddenSize);
  const add = (a: Float32Array, b: Float32Array) => a.map((v, i) => v + b[i]!);
  for (let l = 0; l < cfg.numLayers; l++) {
    const x = rmsNorm(h, w.readFloat32(`model.layers.${l}.input_layernorm.weight`), cfg.rmsNormEps);
    const v = matVec(w, weightName(l, "v"), x);
    const group = cfg.numHeads / cfg.numKvHeads;
    const attn = new Float32Array(cfg.numHeads * cfg.headDim).map((_, i) => {
      const head = Math.floor(i / cfg.headDim);
      return v[Math.floor(head / group) * cfg.headDim + (i % cfg.headDim)]!;
    });
    h = add(h, matVec(w, weightName(l, "o"), attn));
    const y = rmsNorm(h, w.readFloat32(`model.layers.${l}.post_attention_layernorm.weight`), cfg.rmsNormEps);
    const gate = matVec(w, weightName(l, "gate"), y);
    const up = matVec(w, weightName(l, "up"), y);
    const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
    h = add(h, matVec(w, weightName(l, "down"), act));
  }
  return matVec(w, "lm_head.weight", rmsNorm(h, w.readFloat32("model.norm.weight"), cfg.rmsNormEps));
}

function std(x: Float32Array): number {
  const mean = x.reduce((a, v) => a + v, 0) / x.length;
  return Math.sqrt(x.reduce((a, v) => a + (v - mean) ** 2, 0) / x.length);
}

describe("initTinyModel", () => {
  it("writes a folder that the config, weight, tokenizer and adapter loaders all accept", () => {
    const dir = freshDir();
    const model = initTinyModel(dir, { shape: "tiny", adapters: 2, rank: 4, seed: 1 });
    expect(readdirSync(dir).sort()).toEqual([
      "adapters",
      "config.json",
      "generation_config.json",
      "model.safetensors",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    const cfg = loadModelConfig(dir);
    expect(cfg).toEqual(model.config);
    expect(cfg).toMatchObject({
      architecture: "llama",
      hiddenSize: 64,
      intermediateSize: 128,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 16,
      numLayers: 2,
      vocabSize: 512,
      tieWordEmbeddings: false,
      dtype: "F32",
      bosTokenId: 504,
      eosTokenIds: [505, 508],
    });

    const weights = openWeights(dir);
    const expected = new Map<string, number[]>([
      ["model.embed_tokens.weight", [512, 64]],
      ["model.norm.weight", [64]],
      ["lm_head.weight", [512, 64]],
    ]);
    for (let l = 0; l < 2; l++) {
      expected.set(`model.layers.${l}.input_layernorm.weight`, [64]);
      expected.set(`model.layers.${l}.post_attention_layernorm.weight`, [64]);
      for (const kind of MODULE_KINDS) {
        const { inFeatures, outFeatures } = moduleShape(cfg, kind);
        expected.set(weightName(l, kind), [outFeatures, inFeatures]);
      }
    }
    expect(new Map(weights.names().map((n) => [n, weights.info(n).shape]))).toEqual(expected);
    expect(model.parameters).toBe(
      [...expected.values()].reduce((a, s) => a + s.reduce((x, d) => x * d, 1), 0),
    );

    const tok = loadTokenizer(dir);
    expect(tok.vocabSize).toBe(cfg.vocabSize);
    expect(tok.decode(tok.encode("round trip ✓", { addSpecialTokens: false }))).toBe("round trip ✓");

    expect(model.adapterDirs).toEqual([
      join(dir, "adapters", "adapter-0"),
      join(dir, "adapters", "adapter-1"),
    ]);
    for (const adapterDir of model.adapterDirs) {
      const adapter = loadPeftAdapter(adapterDir, cfg, { maxRank: 8 });
      expect(adapter.maxRank).toBe(4);
      expect(adapter.modules).toHaveLength(2 * MODULE_KINDS.length);
    }
  });

  it("draws weights at scales that keep a forward pass finite with spread-out logits", () => {
    const dir = freshDir();
    initTinyModel(dir, { shape: "tiny", adapters: 0, rank: 4, seed: 2 });
    const cfg = loadModelConfig(dir);
    const weights = openWeights(dir);
    expect(std(weights.readFloat32(weightName(0, "q")))).toBeCloseTo(1 / 8, 2);
    const norm = weights.readFloat32("model.norm.weight");
    expect(Math.min(...norm)).toBeGreaterThan(0.9);
    expect(Math.max(...norm)).toBeLessThan(1.1);

    const a = singleTokenLogits(cfg, weights, 72);
    const b = singleTokenLogits(cfg, weights, 300);
    for (const logits of [a, b]) {
      expect(logits.every(Number.isFinite)).toBe(true);
      expect(std(logits)).toBeGreaterThan(0.3);
      expect(std(logits)).toBeLessThan(10);
    }
    expect(a.indexOf(Math.max(...a))).not.toBe(b.indexOf(Math.max(...b)));
  });

  it("gives the same bytes for the same seed and different weights for another", () => {
    const [one, two, other] = [freshDir(), freshDir(), freshDir()];
    initTinyModel(one, { shape: "tiny", adapters: 1, rank: 2, seed: 9 });
    initTinyModel(two, { shape: "tiny", adapters: 1, rank: 2, seed: 9 });
    initTinyModel(other, { shape: "tiny", adapters: 1, rank: 2, seed: 10 });
    for (const file of [
      "model.safetensors",
      "tokenizer.json",
      "adapters/adapter-0/adapter_model.safetensors",
    ]) {
      expect(readFileSync(join(one, file)).equals(readFileSync(join(two, file)))).toBe(true);
    }
    expect(
      readFileSync(join(one, "model.safetensors")).equals(readFileSync(join(other, "model.safetensors"))),
    ).toBe(false);
    const adapter = "adapters/adapter-0/adapter_model.safetensors";
    expect(readFileSync(join(one, adapter)).equals(readFileSync(join(other, adapter)))).toBe(false);
  });

  it("writes f16 and bf16 weights that read back close to the same seed's f32 ones", () => {
    const f32 = freshDir();
    initTinyModel(f32, { shape: "tiny", adapters: 0, rank: 2, seed: 4 });
    const reference = openWeights(f32).readFloat32(weightName(1, "down"));
    for (const [dtype, tolerance] of [
      ["F16", 1e-3],
      ["BF16", 1e-2],
    ] as const) {
      const dir = freshDir();
      const model = initTinyModel(dir, { shape: "tiny", adapters: 1, rank: 2, seed: 4, dtype });
      expect(model.weightBytes).toBe(model.parameters * 2);
      expect(loadModelConfig(dir).dtype).toBe(dtype);
      const weights = openWeights(dir);
      expect(weights.info(weightName(1, "down")).dtype).toBe(dtype);
      const values = weights.readFloat32(weightName(1, "down"));
      expect(Math.max(...values.map((v, i) => Math.abs(v - reference[i]!)))).toBeLessThan(tolerance);
      expect(
        openWeights(join(dir, "adapters", "adapter-0"), "adapter_model").info(
          "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        ).dtype,
      ).toBe(dtype);
    }
  });

  it("reports progress up to the total weight bytes", () => {
    const seen: number[] = [];
    const totals = new Set<number>();
    const model = initTinyModel(freshDir(), {
      shape: "tiny",
      layers: 3,
      adapters: 0,
      rank: 2,
      seed: 0,
      onProgress: (done, total) => {
        totals.add(total);
        seen.push(done);
      },
    });
    expect(model.config.numLayers).toBe(3);
    expect([...totals]).toEqual([model.weightBytes]);
    expect(seen.at(-1)).toBe(model.weightBytes);
    expect(seen.every((v, i) => i === 0 || v > seen[i - 1]!)).toBe(true);
  });

  it("rejects bad options by name", () => {
    expect(() =>
      initTinyModel(freshDir(), { shape: "tiny", layers: 0, adapters: 0, rank: 2, seed: 0 }),
    ).toThrow(/layers must be an integer ≥ 1, got 0/);
    expect(() => initTinyModel(freshDir(), { shape: "tiny", adapters: 0, rank: 0, seed: 0 })).toThrow(/rank/);
    expect(() => initTinyModel(freshDir(), { shape: "tiny", adapters: 0, rank: 2, seed: -1 })).toThrow(
      /seed/,
    );
  });
});

describe("luminet model init-tiny", () => {
  it("writes the model and adapters and prints a one-line summary", () => {
    const dir = freshDir();
    const result = spawnSync(
      process.execPath,
      [
        "bin/luminet.mjs",
        "model",
        "init-tiny",
        dir,
        "--adapters",
        "1",
        "--rank",
        "2",
        "--seed",
        "5",
        "--dtype",
        "f16",
      ],
      { encoding: "utf8" },
    );
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(
      /^wrote .*: tiny Llama, 2 layers, hidden 64, vocab 512, .* F16\), 1 adapters of rank 2\n$/,
    );
    expect(loadModelConfig(dir).dtype).toBe("F16");
    expect(
      loadPeftAdapter(join(dir, "adapters", "adapter-0"), loadModelConfig(dir), { maxRank: 2 }).maxRank,
    ).toBe(2);
  });

  it("writes a Qwen3 checkpoint with --arch qwen3: per-head q/k norm weights beside its projections", () => {
    const dir = freshDir();
    const result = spawnSync(
      process.execPath,
      ["bin/luminet.mjs", "model", "init-tiny", dir, "--arch", "qwen3", "--adapters", "1", "--rank", "2"],
      { encoding: "utf8" },
    );
    expect(result.stderr).toBe("");
    expect(result.stdout).toMatch(/^wrote .*: tiny Qwen3, 2 layers, hidden 64, /);
    const config = loadModelConfig(dir);
    expect(config).toMatchObject({ architecture: "qwen3", qkNorm: true, headDim: 32 });
    const weights = openWeights(dir);
    expect(weights.info("model.layers.1.self_attn.k_norm.weight").shape).toEqual([32]);
    expect(weights.names().some((name) => name.endsWith(".bias"))).toBe(false);
    expect(
      loadPeftAdapter(join(dir, "adapters", "adapter-0"), config, { maxRank: 2 }).modules.length,
    ).toBeGreaterThan(0);
  });

  it("refuses a folder that is not empty, leaving it as it was, and writes into an empty one", () => {
    const dir = freshDir();
    const init = (...flags: string[]) =>
      spawnSync(process.execPath, ["bin/luminet.mjs", "model", "init-tiny", dir, ...flags], {
        encoding: "utf8",
      });
    mkdirSync(dir);
    expect(init("--adapters", "2").status).toBe(0);
    const refused = init("--arch", "qwen2", "--adapters", "1", "--seed", "5");
    expect(refused.status).not.toBe(0);
    expect(refused.stdout).toBe("");
    expect(refused.stderr).toContain(`luminet model init-tiny: ${dir} is not empty`);
    expect(readdirSync(join(dir, "adapters"))).toEqual(["adapter-0", "adapter-1"]);
    expect(loadModelConfig(dir).architecture).toBe("llama");
  });

  it("refuses an unknown architecture", () => {
    const result = spawnSync(
      process.execPath,
      ["bin/luminet.mjs", "model", "init-tiny", freshDir(), "--arch", "gemma"],
      { encoding: "utf8" },
    );
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain("expected one of llama, qwen2, qwen3");
  });

  it("refuses an unknown shape", () => {
    const result = spawnSync(
      process.execPath,
      ["bin/luminet.mjs", "model", "init-tiny", freshDir(), "--shape", "7b"],
      {
        encoding: "utf8",
      },
    );
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain("expected one of tiny, bench-1b");
  });
});
