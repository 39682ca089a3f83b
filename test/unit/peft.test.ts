// PEFT adapter loading: each config field means what PEFT makes it mean, and everything Luminet does not
// serve is refused with a message that names it.
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type RandomAdapterOptions, writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { tinyConfigJson } from "../../scripts/tiny-model.ts";
import { AdapterError, type LoadedAdapter, loadPeftAdapter } from "../../worker/adapters/peft.ts";
import { MODULE_KINDS, type ModelConfig, parseModelConfig } from "../../worker/engine/model-config.ts";
import { openWeights, type TensorToWrite, writeSafetensors } from "../../worker/engine/safetensors.ts";

const model = parseModelConfig(tinyConfigJson("tiny", 2, "F32"));
const root = mkdtempSync(join(tmpdir(), "luminet-peft-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let counter = 0;
function adapter(options: Partial<RandomAdapterOptions> = {}, base: ModelConfig = model): string {
  const dir = join(root, `adapter-${counter++}`);
  writeRandomAdapter(dir, base, { rank: 4, seed: 7, ...options });
  return dir;
}

function load(dir: string, maxRank = 64): LoadedAdapter {
  return loadPeftAdapter(dir, model, { maxRank });
}

function editConfig(dir: string, edit: (cfg: Record<string, unknown>) => void): void {
  const path = join(dir, "adapter_config.json");
  const cfg = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  edit(cfg);
  writeFileSync(path, JSON.stringify(cfg));
}

/** Rewrites adapter_model.safetensors as F32, letting `edit` change, drop or add tensors. */
function editTensors(dir: string, edit: (tensors: TensorToWrite[]) => TensorToWrite[]): void {
  const weights = openWeights(dir, "adapter_model");
  const tensors = weights.names().map((name) => ({
    name,
    dtype: "F32" as const,
    shape: weights.info(name).shape,
    data: weights.readFloat32(name),
  }));
  writeSafetensors(join(dir, "adapter_model.safetensors"), edit(tensors));
}

function module(a: LoadedAdapter, layer: number, kind: string) {
  const m = a.modules.find((x) => x.layer === layer && x.kind === kind);
  if (!m) throw new Error(`no module ${layer}.${kind}`);
  return m;
}

/** A mutation that sets one adapter_config.json field. */
const set =
  (key: string, value: unknown) =>
  (dir: string): void =>
    editConfig(dir, (c) => {
      c[key] = value;
    });

const keys = (a: LoadedAdapter): string[] => a.modules.map((m) => `${m.layer}.${m.kind}`);

function refusal(dir: string, maxRank = 64): string {
  try {
    load(dir, maxRank);
  } catch (err) {
    expect(err).toBeInstanceOf(AdapterError);
    return (err as Error).message;
  }
  throw new Error("the adapter loaded");
}

/** scale · Bᵀ of a lora_B [out, rank], computed plainly. */
function scaledTranspose(b: Float32Array, out: number, rank: number, scale: number): Float32Array {
  const t = new Float32Array(rank * out);
  for (let r = 0; r < rank; r++) for (let o = 0; o < out; o++) t[r * out + o] = scale * b[o * rank + r]!;
  return t;
}

describe("loading a PEFT adapter", () => {
  it("reads every targeted module with scale alpha/r, the file's A as stored and B as scale·Bᵀ", () => {
    const dir = adapter({ rank: 4, alpha: 12 });
    const a = load(dir);
    expect(keys(a)).toEqual([0, 1].flatMap((l) => MODULE_KINDS.map((k) => `${l}.${k}`)));
    const weights = openWeights(dir, "adapter_model");
    for (const m of a.modules) {
      expect(m.rank).toBe(4);
      expect(m.scale).toBe(3);
      const prefix = `base_model.model.model.layers.${m.layer}.${m.kind === "gate" || m.kind === "up" || m.kind === "down" ? "mlp" : "self_attn"}.${m.kind}_proj`;
      expect(m.a).toEqual(weights.readFloat32(`${prefix}.lora_A.weight`));
      const b = weights.readFloat32(`${prefix}.lora_B.weight`);
      expect(m.scaledBT).toEqual(scaledTranspose(b, m.outFeatures, m.rank, 3));
      expect(m.a.length).toBe(m.rank * m.inFeatures);
      expect(m.scaledBT.length).toBe(m.outFeatures * m.rank);
      expect(m.scaledBias).toBeNull();
      expect(m.scaledBT.some((v) => v !== 0)).toBe(true);
      // Shared memory: handing the adapter to the engine thread copies nothing.
      expect(m.a.buffer).toBeInstanceOf(SharedArrayBuffer);
      expect(m.scaledBT.buffer).toBeInstanceOf(SharedArrayBuffer);
    }
    expect(module(a, 0, "k").outFeatures).toBe(model.numKvHeads * model.headDim);
    expect(module(a, 0, "down").inFeatures).toBe(model.intermediateSize);
  });

  it("reports the file's size, its sha256, the folder name and the largest rank", () => {
    const dir = adapter({ rank: 8 });
    const file = join(dir, "adapter_model.safetensors");
    const a = load(dir);
    expect(a.name).toBe(basename(dir));
    expect(a.bytes).toBe(statSync(file).size);
    expect(a.sha256).toBe(createHash("sha256").update(readFileSync(file)).digest("hex"));
    expect(a.maxRank).toBe(8);
    expect(loadPeftAdapter(dir, model, { maxRank: 8, name: "acme/support" }).name).toBe("acme/support");
  });

  it("scales by alpha/sqrt(r) with use_rslora", () => {
    const plain = load(adapter({ rank: 16, alpha: 8 }));
    const rs = load(adapter({ rank: 16, alpha: 8, useRslora: true }));
    for (const [i, m] of rs.modules.entries()) {
      expect(m.scale).toBe(2);
      expect(plain.modules[i]!.scale).toBe(0.5);
      expect(m.a).toEqual(plain.modules[i]!.a);
      // 2 / 0.5: the same B, scaled four times as much.
      expect(m.scaledBT).toEqual(plain.modules[i]!.scaledBT.map((v) => 4 * v));
    }
  });

  it("takes rank and alpha per module from rank_pattern and alpha_pattern, first matching key winning", () => {
    const a = load(
      adapter({
        rank: 8,
        alpha: 16,
        rankPattern: { v_proj: 4, "model.layers.1.mlp.down_proj": 2, proj: 1 },
        alphaPattern: { "layers\\.0\\..*proj": 3, o_proj: 40 },
      }),
    );
    for (const m of a.modules) {
      const rank = m.kind === "v" ? 4 : m.layer === 1 && m.kind === "down" ? 2 : 8;
      // "proj" matches no module: a pattern key must match whole dotted name segments at the end.
      const alpha = m.layer === 0 ? 3 : m.kind === "o" ? 40 : 16;
      expect([m.layer, m.kind, m.rank, m.scale]).toEqual([m.layer, m.kind, rank, alpha / rank]);
      expect(m.a.length).toBe(rank * m.inFeatures);
    }
  });

  it("uses each module's own rank and alpha under rsLoRA too", () => {
    const a = load(adapter({ rank: 16, alpha: 8, useRslora: true, rankPattern: { q_proj: 4 } }));
    expect(module(a, 1, "q").scale).toBe(4);
    expect(module(a, 1, "k").scale).toBe(2);
  });

  it("treats a target_modules string as a regex that must match the whole module name", () => {
    const regex = adapter({ targetModulesRegex: ".*layers\\.1\\.(self_attn\\.(q|v)_proj|mlp\\.up_proj)" });
    expect(keys(load(regex))).toEqual(["1.q", "1.v", "1.up"]);

    const suffix = adapter({ targetModules: ["q"] });
    editConfig(suffix, (c) => {
      c.target_modules = "q_proj";
    });
    expect(refusal(suffix)).toContain("does not target module model.layers.0.self_attn.q_proj");
  });

  it("matches a target_modules list against name suffixes, and all-linear against all seven", () => {
    const partial = load(adapter({ targetModules: ["k", "gate"] }));
    expect(keys(partial)).toEqual(["0.k", "0.gate", "1.k", "1.gate"]);

    const allLinear = adapter();
    editConfig(allLinear, (c) => {
      c.target_modules = "all-linear";
    });
    expect(load(allLinear).modules).toHaveLength(14);
  });

  it("honours layers_to_transform and exclude_modules", () => {
    const dir = adapter({ targetModules: ["q"] });
    editConfig(dir, (c) => {
      c.layers_to_transform = [1];
    });
    expect(refusal(dir)).toContain("does not target module model.layers.0.self_attn.q_proj");
    editTensors(dir, (ts) => ts.filter((t) => t.name.includes("layers.1.")));
    expect(keys(load(dir))).toEqual(["1.q"]);

    const excluded = adapter({ targetModules: ["q", "v"] });
    editConfig(excluded, (c) => {
      c.exclude_modules = ["v_proj"];
    });
    expect(refusal(excluded)).toContain("does not target module model.layers.0.self_attn.v_proj");
  });

  it("scales the lora_B bias like B", () => {
    const dir = adapter({ rank: 4, alpha: 8, loraBias: true });
    const a = load(dir);
    const weights = openWeights(dir, "adapter_model");
    const m = module(a, 1, "o");
    expect(m.scale).toBe(2);
    expect(m.scaledBias).toEqual(
      weights.readFloat32("base_model.model.model.layers.1.self_attn.o_proj.lora_B.bias").map((v) => 2 * v),
    );
    expect(m.scaledBias!.length).toBe(m.outFeatures);
  });

  it("reads fan_in_fan_out adapters in PEFT's [r, in] / [out, r] layout, which PEFT keeps for nn.Linear", () => {
    const plain = load(adapter({ seed: 3 }));
    const fanned = adapter({ seed: 3, fanInFanOut: true });
    expect(load(fanned).modules).toEqual(plain.modules);

    // PEFT itself fails on transposed tensors ("size mismatch"); so does Luminet, naming the tensor.
    editTensors(fanned, (ts) =>
      ts.map((t) => {
        const [r, c] = t.shape as [number, number];
        const src = t.data as Float32Array;
        const data = new Float32Array(src.length);
        for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) data[j * r + i] = src[i * c + j]!;
        return { ...t, shape: [c, r], data };
      }),
    );
    expect(refusal(fanned)).toMatch(
      /tensor base_model\.model\.model\.layers\.0\.self_attn\.q_proj\.lora_A\.weight has shape \[64, 4\], expected \[4, 64\]/,
    );
  });

  it("converts F16 and BF16 tensors to float32", () => {
    const f32 = load(adapter({ seed: 5 }));
    for (const dtype of ["F16", "BF16"] as const) {
      const half = load(adapter({ seed: 5, dtype }));
      const tolerance = dtype === "F16" ? 1e-3 : 8e-3;
      for (const [i, m] of half.modules.entries()) {
        const ref = f32.modules[i]!;
        for (let j = 0; j < m.scaledBT.length; j++) {
          const want = ref.scaledBT[j]!;
          expect(Math.abs(m.scaledBT[j]! - want)).toBeLessThanOrEqual(tolerance * Math.abs(want) + 1e-7);
        }
      }
    }
  });
});

describe("refusing what Luminet does not serve", () => {
  const cases: [string, (dir: string) => void, string][] = [
    ["DoRA in the config", set("use_dora", true), "DoRA adapters (use_dora: true)"],
    [
      "DoRA magnitude tensors",
      (d) =>
        editTensors(d, (ts) => [
          ...ts,
          {
            name: "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
            dtype: "F32",
            shape: [64],
            data: new Float32Array(64),
          },
        ]),
      "DoRA adapters (lora_magnitude_vector) are not supported",
    ],
    ["modules_to_save", set("modules_to_save", ["lm_head"]), 'modules_to_save ["lm_head"] is not supported'],
    [
      "an embedding target",
      set("target_modules", ["q_proj", "embed_tokens"]),
      "selects model.embed_tokens; LoRA on the embedding or the output head (embedding LoRA) is not supported",
    ],
    ["an lm_head target", set("target_modules", ".*(q_proj|lm_head)"), "selects lm_head"],
    [
      "embedding LoRA tensors",
      (d) =>
        editTensors(d, (ts) => [
          ...ts,
          {
            name: "base_model.model.model.embed_tokens.lora_embedding_A",
            dtype: "F32",
            shape: [4, 512],
            data: new Float32Array(2048),
          },
        ]),
      "embedding LoRA is not supported",
    ],
    [
      'bias "all"',
      set("bias", "all"),
      'bias "all" is not supported: it trains and ships the base model\'s own biases',
    ],
    ['bias "lora_only"', set("bias", "lora_only"), 'bias "lora_only" is not supported'],
    [
      "another PEFT method",
      set("peft_type", "IA3"),
      'peft_type "IA3" is not supported; only LORA adapters are served',
    ],
    [
      "a PiSSA adapter that needs its residual base",
      set("init_lora_weights", "pissa_niter_4"),
      'init_lora_weights "pissa_niter_4"',
    ],
    ["a LoRA variant", set("use_qalora", true), "QA-LoRA is not supported"],
    ["trainable tokens", set("trainable_token_indices", [1, 2]), "trainable_token_indices is not supported"],
  ];
  for (const [what, mutate, message] of cases) {
    it(`refuses ${what}`, () => {
      const dir = adapter();
      mutate(dir);
      expect(refusal(dir)).toContain(message);
    });
  }

  it("never opens a pickled adapter_model.bin", () => {
    const dir = adapter();
    rmSync(join(dir, "adapter_model.safetensors"));
    writeFileSync(join(dir, "adapter_model.bin"), "not really a pickle");
    expect(refusal(dir)).toContain(
      "has adapter_model.bin but no adapter_model.safetensors; pickled adapters are never loaded; convert to safetensors",
    );
  });
});

describe("validating an adapter against the base model", () => {
  it("refuses tensors whose rank disagrees with the config", () => {
    const dir = adapter({ rank: 8 });
    editConfig(dir, (c) => {
      c.r = 4;
    });
    expect(refusal(dir)).toContain(
      "tensor base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight has shape [8, 64], expected [4, 64] (rank 4 from adapter_config.json",
    );
  });

  it("refuses an adapter made for a base of another width", () => {
    const wide = parseModelConfig({ ...tinyConfigJson("tiny", 2, "F32"), hidden_size: 96, head_dim: 24 });
    expect(refusal(adapter({}, wide))).toMatch(/has shape \[4, 96\], expected \[4, 64\]/);
  });

  it("refuses layers the base does not have", () => {
    const deep = parseModelConfig(tinyConfigJson("tiny", 3, "F32"));
    expect(refusal(adapter({}, deep))).toContain("layer 2 does not exist, the base model has 2 layers");
  });

  it("refuses ranks above the configured maximum", () => {
    expect(refusal(adapter({ rank: 32 }), 16)).toContain("rank 32 exceeds the maximum rank 16");
  });

  it("refuses non-finite values, naming the tensor", () => {
    const dir = adapter();
    editTensors(dir, (ts) =>
      ts.map((t) => {
        if (!t.name.endsWith("layers.1.mlp.up_proj.lora_B.weight")) return t;
        const data = Float32Array.from(t.data as Float32Array);
        data[5] = Number.NaN;
        return { ...t, data };
      }),
    );
    expect(refusal(dir)).toContain(
      "tensor base_model.model.model.layers.1.mlp.up_proj.lora_B.weight has a non-finite value (NaN) at flat index 5",
    );
  });

  it("refuses a module with A but no B", () => {
    const dir = adapter();
    editTensors(dir, (ts) => ts.filter((t) => !t.name.endsWith("layers.0.mlp.gate_proj.lora_B.weight")));
    expect(refusal(dir)).toContain("base_model.model.model.layers.0.mlp.gate_proj: has lora_A but no lora_B");
  });

  it("refuses tensors that are not LoRA weights, and a lora_B bias the config does not declare", () => {
    const odd = adapter();
    editTensors(odd, (ts) => [
      ...ts,
      { name: "base_model.model.model.norm.weight", dtype: "F32", shape: [64], data: new Float32Array(64) },
    ]);
    expect(refusal(odd)).toContain("tensor base_model.model.model.norm.weight is not a LoRA weight");

    const biased = adapter({ loraBias: true });
    editConfig(biased, (c) => {
      c.lora_bias = false;
    });
    expect(refusal(biased)).toContain("lora_B has a bias but adapter_config.json has lora_bias false");
  });

  it("refuses malformed configs with the field named", () => {
    const badRegex = adapter();
    editConfig(badRegex, (c) => {
      c.target_modules = "(q_proj";
    });
    expect(refusal(badRegex)).toContain('target_modules "(q_proj" is not a valid regex');

    const badRank = adapter();
    editConfig(badRank, (c) => {
      c.rank_pattern = { q_proj: 0 };
    });
    expect(refusal(badRank)).toContain('rank_pattern["q_proj"] must be a positive integer, got 0');

    const noConfig = adapter();
    rmSync(join(noConfig, "adapter_config.json"));
    expect(refusal(noConfig)).toContain("no adapter_config.json");
  });
});

describe("keeping an adapter's alpha, scale and scaled weights finite in float32", () => {
  it("refuses an alpha float32 cannot hold, in lora_alpha or alpha_pattern, naming the field", () => {
    for (const alpha of [1e300, 3.5e38, -3.5e38, 1e-50]) {
      const dir = adapter();
      set("lora_alpha", alpha)(dir);
      expect(refusal(dir)).toContain(
        `adapter_config.json: lora_alpha must be a number float32 holds (a magnitude from 1.4e-45 to 3.4e38, or 0), got ${JSON.stringify(alpha)}`,
      );
    }
    const pattern = adapter();
    set("alpha_pattern", { v_proj: 1e-46 })(pattern);
    expect(refusal(pattern)).toContain(
      'adapter_config.json: alpha_pattern["v_proj"] must be a number float32 holds (a magnitude from 1.4e-45 to 3.4e38, or 0), got 1e-46',
    );
  });

  it("refuses a module whose scale is above 10,000 in magnitude, naming where its alpha and rank come from", () => {
    const cases: [Partial<RandomAdapterOptions>, string][] = [
      [
        { rank: 4, alpha: 1e30 },
        "module model.layers.0.self_attn.q_proj has LoRA scale 2.5e+29 (lora_alpha 1e+30 / r 4)",
      ],
      [
        { rank: 4, alpha: -40_004 },
        "module model.layers.0.self_attn.q_proj has LoRA scale -10001 (lora_alpha -40004 / r 4)",
      ],
      [
        { rank: 4, alpha: 8, alphaPattern: { "layers\\.1\\.mlp\\.up_proj": 3.3e38 } },
        'module model.layers.1.mlp.up_proj has LoRA scale 8.25e+37 (alpha_pattern["layers\\\\.1\\\\.mlp\\\\.up_proj"] 3.3e+38 / r 4)',
      ],
      [
        { rank: 4, alpha: 15_000, useRslora: true, rankPattern: { k_proj: 1 } },
        'module model.layers.0.self_attn.k_proj has LoRA scale 15000 (lora_alpha 15000 / sqrt(rank_pattern["k_proj"] 1) with use_rslora)',
      ],
    ];
    for (const [options, message] of cases) {
      const text = refusal(adapter(options));
      expect(text).toContain(message);
      expect(text).toContain("a scale may be at most 10000 in magnitude");
    }
    // The bound itself is accepted: alpha 40,000 over r 4, and 15,000 over √4 under rsLoRA.
    expect(load(adapter({ rank: 4, alpha: 40_000 })).modules[0]!.scale).toBe(10_000);
    expect(load(adapter({ rank: 4, alpha: 15_000, useRslora: true })).modules[0]!.scale).toBe(7_500);
  });

  it("refuses a lora_B weight or bias that its scale would carry past float32's range, naming the tensor", () => {
    const withValue = (options: Partial<RandomAdapterOptions>, tensor: string, value: number): string => {
      const dir = adapter(options);
      editTensors(dir, (ts) =>
        ts.map((t) => {
          if (!t.name.endsWith(tensor)) return t;
          const data = Float32Array.from(t.data as Float32Array);
          data[3] = value;
          return { ...t, data };
        }),
      );
      return dir;
    };
    const weight = withValue({ rank: 4, alpha: 40_000 }, "layers.1.self_attn.o_proj.lora_B.weight", -1e35);
    expect(refusal(weight)).toContain(
      "tensor base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight: its largest value 1.0000000409184788e+35 times the LoRA scale 10000 is 1.0000000409184788e+39, past float32's range (3.4e38)",
    );
    const bias = withValue({ rank: 4, alpha: 8, loraBias: true }, "layers.0.mlp.down_proj.lora_B.bias", 3e38);
    expect(refusal(bias)).toContain(
      "tensor base_model.model.model.layers.0.mlp.down_proj.lora_B.bias: its largest value",
    );
    // The same values at a scale that keeps them finite load, scaled exactly.
    const kept = load(withValue({ rank: 4, alpha: 4 }, "layers.1.self_attn.o_proj.lora_B.weight", -1e35));
    expect(module(kept, 1, "o").scaledBT).toContain(Math.fround(-1e35));
  });
});
