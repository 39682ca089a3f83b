// The reference forward is the oracle the engine is judged by, so it is pinned down here against facts
// that do not come from itself: causality, LoRA ≡ merged weights, Hugging Face's rotary frequencies.
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { initTinyModel, type TinyModel, tinyConfigJson } from "../../scripts/tiny-model.ts";
import { type LoadedAdapter, loadPeftAdapter } from "../../worker/adapters/peft.ts";
import { parseModelConfig } from "../../worker/engine/model-config.ts";
import { Prng } from "../../worker/engine/prng.ts";
import { openWeights, writeSafetensors } from "../../worker/engine/safetensors.ts";
import { writeMergedModel } from "../support/merged-model.ts";
import { referenceLogits, ropeInverseFrequencies } from "../support/reference-forward.ts";

const TOKENS = [5, 77, 300, 12, 499, 1, 64, 250, 33, 7];

let root: string;
let tiny: TinyModel;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-reference-"));
  tiny = initTinyModel(join(root, "model"), { shape: "tiny", adapters: 0, rank: 4, seed: 11 });
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

let counter = 0;
function adapter(options: Partial<Parameters<typeof writeRandomAdapter>[2]> = {}): LoadedAdapter {
  const dir = join(root, `adapter-${counter++}`);
  writeRandomAdapter(dir, tiny.config, { rank: 4, seed: 21, ...options });
  return loadPeftAdapter(dir, tiny.config, { maxRank: 64 });
}

function maxAbsDiff(a: Float32Array[], b: Float32Array[]): number {
  let worst = 0;
  for (const [p, row] of a.entries()) {
    for (const [i, v] of row.entries()) worst = Math.max(worst, Math.abs(v - b[p]![i]!));
  }
  return worst;
}

describe("the reference forward", () => {
  it("gives finite logits over the vocabulary that differ from position to position", () => {
    const logits = referenceLogits(tiny.dir, TOKENS);
    expect(logits).toHaveLength(TOKENS.length);
    for (const row of logits) {
      expect(row).toHaveLength(tiny.config.vocabSize);
      expect(row.every(Number.isFinite)).toBe(true);
    }
    for (let p = 1; p < logits.length; p++)
      expect(maxAbsDiff([logits[p]!], [logits[p - 1]!])).toBeGreaterThan(1e-3);
  });

  it("is causal: a position's logits do not depend on the tokens after it", () => {
    const full = referenceLogits(tiny.dir, TOKENS);
    const prefix = referenceLogits(tiny.dir, TOKENS.slice(0, 4));
    expect(prefix).toEqual(full.slice(0, 4));
    const changedTail = referenceLogits(tiny.dir, [...TOKENS.slice(0, 4), 100, 200]);
    expect(changedTail.slice(0, 4)).toEqual(full.slice(0, 4));
    expect(changedTail[4]).not.toEqual(full[4]);
  });

  it("gives the base logits for an adapter whose B matrices are all zero", () => {
    const loaded = adapter();
    const zeroB = {
      ...loaded,
      modules: loaded.modules.map((m) => ({ ...m, scaledBT: new Float32Array(m.scaledBT.length) })),
    };
    expect(referenceLogits(tiny.dir, TOKENS, zeroB)).toEqual(referenceLogits(tiny.dir, TOKENS));
  });

  it("with an adapter equals the base forward on merged weights W + scale·B·A", () => {
    const base = referenceLogits(tiny.dir, TOKENS);
    const cases = [
      adapter(),
      adapter({
        rank: 8,
        alpha: 16,
        useRslora: true,
        rankPattern: { v_proj: 2 },
        alphaPattern: { o_proj: 40 },
      }),
      adapter({ targetModulesRegex: ".*layers\\.1\\.mlp\\.(gate|down)_proj", seed: 5 }),
    ];
    for (const [i, loaded] of cases.entries()) {
      const withAdapter = referenceLogits(tiny.dir, TOKENS, loaded);
      const merged = writeMergedModel(tiny.dir, loaded, join(root, `merged-${i}`));
      expect(maxAbsDiff(withAdapter, referenceLogits(merged, TOKENS))).toBeLessThan(1e-4);
      // …and the adapter is not a no-op, or the comparison would prove nothing.
      expect(maxAbsDiff(withAdapter, base)).toBeGreaterThan(1e-2);
    }
  });

  it("adds scale·(lora bias) like a merged Qwen2 q/k/v bias, on top of Qwen2's own biases", () => {
    const dir = join(root, "qwen2");
    cpSync(tiny.dir, dir, { recursive: true });
    const { attention_bias: _a, mlp_bias: _m, ...rest } = tinyConfigJson("tiny", 2, "F32");
    const qwen = { ...rest, architectures: ["Qwen2ForCausalLM"], model_type: "qwen2" };
    writeFileSync(join(dir, "config.json"), JSON.stringify(qwen));
    const config = parseModelConfig(qwen);
    const baseWeights = openWeights(tiny.dir);
    const rng = new Prng(3);
    const tensors = baseWeights.names().map((name) => ({
      name,
      dtype: "F32" as const,
      shape: baseWeights.info(name).shape,
      data: baseWeights.readFloat32(name),
    }));
    for (let layer = 0; layer < config.numLayers; layer++) {
      for (const [kind, width] of [
        ["q", 64],
        ["k", 32],
        ["v", 32],
      ] as const) {
        const data = Float32Array.from({ length: width }, () => rng.nextNormal() * 0.5);
        tensors.push({
          name: `model.layers.${layer}.self_attn.${kind}_proj.bias`,
          dtype: "F32",
          shape: [width],
          data,
        });
      }
    }
    writeSafetensors(join(dir, "model.safetensors"), tensors);

    const adapterDir = join(root, "qwen-bias-adapter");
    writeRandomAdapter(adapterDir, config, {
      rank: 4,
      alpha: 8,
      seed: 2,
      targetModules: ["q", "k", "v"],
      loraBias: true,
    });
    const loaded = loadPeftAdapter(adapterDir, config, { maxRank: 64 });

    // Merge W + s·B·A and bias + s·lora_bias by hand.
    const mergedDir = join(root, "qwen2-merged");
    cpSync(dir, mergedDir, { recursive: true });
    const byName = new Map(tensors.map((t) => [t.name, Float32Array.from(t.data)]));
    for (const m of loaded.modules) {
      const prefix = `model.layers.${m.layer}.self_attn.${m.kind}_proj`;
      const w = byName.get(`${prefix}.weight`)!;
      for (let o = 0; o < m.outFeatures; o++) {
        for (let i = 0; i < m.inFeatures; i++) {
          let s = 0;
          for (let r = 0; r < m.rank; r++)
            s += m.scaledBT[r * m.outFeatures + o]! * m.a[r * m.inFeatures + i]!;
          w[o * m.inFeatures + i]! += s;
        }
      }
      const bias = byName.get(`${prefix}.bias`)!;
      for (let o = 0; o < m.outFeatures; o++) bias[o]! += m.scaledBias![o]!;
    }
    writeSafetensors(
      join(mergedDir, "model.safetensors"),
      tensors.map((t) => ({ ...t, data: byName.get(t.name)! })),
    );

    const withAdapter = referenceLogits(dir, TOKENS, loaded);
    expect(maxAbsDiff(withAdapter, referenceLogits(mergedDir, TOKENS))).toBeLessThan(1e-4);
    const withoutBias = { ...loaded, modules: loaded.modules.map((m) => ({ ...m, scaledBias: null })) };
    expect(maxAbsDiff(withAdapter, referenceLogits(dir, TOKENS, withoutBias))).toBeGreaterThan(1e-3);
    expect(maxAbsDiff(referenceLogits(dir, TOKENS), referenceLogits(tiny.dir, TOKENS))).toBeGreaterThan(1e-3);
  });

  it("reads the output head from the embedding when tie_word_embeddings is set", () => {
    const dir = join(root, "tied");
    cpSync(tiny.dir, dir, { recursive: true });
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({ ...tinyConfigJson("tiny", 2, "F32"), tie_word_embeddings: true }),
    );
    const base = openWeights(tiny.dir);
    writeSafetensors(
      join(dir, "model.safetensors"),
      base
        .names()
        .filter((n) => n !== "lm_head.weight")
        .map((name) => ({
          name,
          dtype: "F32" as const,
          shape: base.info(name).shape,
          data: base.readFloat32(name),
        })),
    );
    // Untied twin: lm_head is a copy of the embedding.
    const twin = join(root, "untied-twin");
    cpSync(tiny.dir, twin, { recursive: true });
    writeSafetensors(
      join(twin, "model.safetensors"),
      base.names().map((name) => ({
        name,
        dtype: "F32" as const,
        shape: base.info(name).shape,
        data: base.readFloat32(name === "lm_head.weight" ? "model.embed_tokens.weight" : name),
      })),
    );
    expect(referenceLogits(dir, TOKENS)).toEqual(referenceLogits(twin, TOKENS));
  });
});

describe("rotary frequencies", () => {
  // Values printed by transformers' ROPE_INIT_FUNCTIONS (float32) for these configs.
  it("match Hugging Face's llama3 scaling (Llama 3.2 1B's rope config)", () => {
    const cfg = parseModelConfig(tinyConfigJson("bench-1b", 1, "F32"));
    const hf = [
      1.0, 0.663601279, 0.440366626, 0.292227834, 0.193922758, 0.128687382, 0.0853971019, 0.0566696189,
      0.0376060307, 0.0249554086, 0.0165604409, 0.0109895291, 0.00729266508, 0.00483942125, 0.00321144611,
      0.00129054801, 0.000429556705, 9.70828623e-5, 1.94616387e-5, 1.29147675e-5, 8.57025589e-6,
      5.68723226e-6, 3.77405445e-6, 2.50446715e-6, 1.66196742e-6, 1.10288363e-6, 7.31874934e-7, 4.85673127e-7,
      3.22293289e-7, 2.1387423e-7, 1.41927202e-7, 9.41830649e-8,
    ];
    const ours = ropeInverseFrequencies(cfg);
    expect(ours).toHaveLength(hf.length);
    for (const [i, f] of hf.entries()) expect(Math.abs(ours[i]! - f) / f).toBeLessThan(1e-6);
  });

  it("match Hugging Face's linear scaling", () => {
    const cfg = parseModelConfig({
      ...tinyConfigJson("tiny", 1, "F32"),
      rope_scaling: { rope_type: "linear", factor: 4 },
    });
    const hf = [
      0.25, 0.079056941, 0.0250000004, 0.00790569466, 0.00249999994, 0.000790569466, 0.000250000012,
      7.90569466e-5,
    ];
    const ours = ropeInverseFrequencies(cfg);
    for (const [i, f] of hf.entries()) expect(Math.abs(ours[i]! - f) / f).toBeLessThan(1e-6);
  });
});
