// The CUDA engine's host-side plans, which need no GPU: which checkpoint bytes fill which native weight,
// which cache row each sequence owns, and how prefills and decodes become ragged native steps.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { SequenceTable } from "../../worker/engine/cuda/sequence-table.ts";
import { planSteps, prefillRows } from "../../worker/engine/cuda/step-plan.ts";
import { nativeWeightSizes, weightUploads } from "../../worker/engine/cuda/weight-plan.ts";
import { EngineError } from "../../worker/engine/engine.ts";
import { parseModelConfig } from "../../worker/engine/model-config.ts";
import { openWeights } from "../../worker/engine/safetensors.ts";

const root = mkdtempSync(join(tmpdir(), "luminet-cuda-plans-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Checks that the uploads into each target tile [0, size) exactly once. */
function expectTiled(uploads: ReturnType<typeof weightUploads>, sizes: Map<string, number>): void {
  for (const [target, size] of sizes) {
    const parts = uploads.filter((u) => u.target === target).sort((a, b) => a.offset - b.offset);
    let covered = 0;
    for (const part of parts) {
      expect(part.offset, `${target}: ${part.source} starts where the previous part ended`).toBe(covered);
      covered += part.elements;
    }
    expect(covered, `${target} is filled to its end`).toBe(size);
  }
}

describe("the CUDA weight upload plan", () => {
  it.each(["llama", "qwen2", "qwen3"] as const)(
    "fills every native weight of a real tiny model exactly once from tensors of the right size (%s)",
    (architecture) => {
      const tiny = initTinyModel(join(root, architecture), {
        shape: "tiny",
        architecture,
        adapters: 0,
        rank: 4,
        seed: 1,
        dtype: "F16",
      });
      const m = tiny.config;
      const uploads = weightUploads(m);
      const sizes = nativeWeightSizes(m);
      const weights = openWeights(tiny.dir);

      // Every checkpoint tensor is read exactly once, with the element count the file really holds.
      expect(uploads.map((u) => u.source).sort()).toEqual(weights.names().sort());
      for (const u of uploads) {
        const info = weights.info(u.source);
        expect(
          info.shape.reduce((a, d) => a * d, 1),
          u.source,
        ).toBe(u.elements);
      }
      expectTiled(uploads, sizes);

      const q = m.numHeads * m.headDim;
      const kv = m.numKvHeads * m.headDim;
      const perLayer = {
        attn_norm: m.hiddenSize,
        qkv: (q + 2 * kv) * m.hiddenSize,
        ...(m.qkvBias ? { qkv_bias: q + 2 * kv } : {}),
        ...(m.qkNorm ? { q_norm: m.headDim, k_norm: m.headDim } : {}),
        o: m.hiddenSize * q,
        mlp_norm: m.hiddenSize,
        gate_up: 2 * m.intermediateSize * m.hiddenSize,
        down: m.hiddenSize * m.intermediateSize,
      };
      const expected = new Map<string, number>([
        ["embed", m.vocabSize * m.hiddenSize],
        ["final_norm", m.hiddenSize],
        ["lm_head", m.vocabSize * m.hiddenSize],
      ]);
      for (let l = 0; l < m.numLayers; l++)
        for (const [name, size] of Object.entries(perLayer)) expected.set(`layers.${l}.${name}`, size);
      expect(new Map([...sizes].sort())).toEqual(new Map([...expected].sort()));

      // q, k, v rows in that order; gate rows then up rows.
      const at = (target: string) =>
        uploads.filter((u) => u.target === target).map((u) => [u.source, u.offset]);
      expect(at("layers.1.qkv")).toEqual([
        ["model.layers.1.self_attn.q_proj.weight", 0],
        ["model.layers.1.self_attn.k_proj.weight", q * m.hiddenSize],
        ["model.layers.1.self_attn.v_proj.weight", (q + kv) * m.hiddenSize],
      ]);
      expect(at("layers.0.gate_up")).toEqual([
        ["model.layers.0.mlp.gate_proj.weight", 0],
        ["model.layers.0.mlp.up_proj.weight", m.intermediateSize * m.hiddenSize],
      ]);
    },
  );

  it("fuses Qwen2's q/k/v biases and leaves out lm_head when the embeddings are tied", () => {
    const m = parseModelConfig({
      architectures: ["Qwen2ForCausalLM"],
      hidden_size: 64,
      intermediate_size: 96,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      vocab_size: 100,
      tie_word_embeddings: true,
    });
    const uploads = weightUploads(m);
    const sizes = nativeWeightSizes(m);
    expectTiled(uploads, sizes);
    expect(sizes.has("lm_head")).toBe(false);
    expect(uploads.some((u) => u.source === "lm_head.weight")).toBe(false);
    expect(uploads.filter((u) => u.target === "layers.1.qkv_bias").map((u) => [u.source, u.offset])).toEqual([
      ["model.layers.1.self_attn.q_proj.bias", 0],
      ["model.layers.1.self_attn.k_proj.bias", 64],
      ["model.layers.1.self_attn.v_proj.bias", 96],
    ]);
    expect(sizes.get("layers.0.qkv_bias")).toBe(64 + 2 * 32);
  });
});

describe("the CUDA engine's cache rows", () => {
  it("gives each sequence its own row, reuses freed rows lowest first, and refuses past the last row", () => {
    const table = new SequenceTable(3);
    expect(["a", "b", "c"].map((id) => table.admit(id, 0).cacheRow)).toEqual([0, 1, 2]);
    expect(table.lowestFreeRow()).toBeUndefined();
    expect(() => table.admit("d", 0)).toThrow(EngineError);
    expect(() => table.admit("d", 0)).toThrow(/no free cache row.*3 sequences are running/);
    expect(() => table.admit("b", 0)).toThrow(/sequence b is already running/);
    table.release("c");
    table.release("a");
    table.release("a");
    table.release("unknown");
    expect(table.size).toBe(1);
    expect(table.lowestFreeRow()).toBe(0);
    expect(table.admit("e", 2).cacheRow).toBe(0);
    expect(table.admit("f", 1).cacheRow).toBe(2);
    expect([...table.all.keys()]).toEqual(["b", "e", "f"]);
    expect(table.get("e")).toEqual({
      cacheRow: 0,
      slot: 2,
      length: 0,
      partial: false,
      parked: false,
      prompt: [],
      reused: 0,
    });
  });
});

describe("the CUDA engine's step plan", () => {
  const prompts = [
    { cacheRow: 4, slot: 1, start: 0, tokens: [10, 11, 12, 13, 14] },
    // The next chunk of a prompt whose first 7 tokens are in row 0's cache already.
    { cacheRow: 0, slot: 0, start: 7, tokens: [20, 21] },
    { cacheRow: 2, slot: 3, start: 0, tokens: [30, 31, 32] },
  ];

  it("prefills ragged prompts in chunks that keep each prompt's positions in order, a continued one from its length", () => {
    const planned = planSteps(prefillRows(prompts), 4, true);
    const steps = planned.map((p) => p.native);
    expect(steps.map((s) => [...s.tokens])).toEqual([
      [10, 11, 12, 13],
      [14, 20, 21, 30],
      [31, 32],
    ]);
    expect(steps.map((s) => [...s.positions])).toEqual([
      [0, 1, 2, 3],
      [4, 7, 8, 0],
      [1, 2],
    ]);
    expect(steps.map((s) => [...s.cacheRows])).toEqual([
      [4, 4, 4, 4],
      [4, 0, 0, 2],
      [2, 2],
    ]);
    expect(steps.map((s) => [...s.slots])).toEqual([
      [1, 1, 1, 1],
      [1, 0, 0, 3],
      [3, 3],
    ]);
    // Only each prompt's last token, so the logits come out prompt by prompt. The first chunk has none;
    // a native step names at least one, so it asks for its last row and drops the result.
    expect(steps.map((s) => [...s.logitRows])).toEqual([[3], [0, 2], [1]]);
    expect(planned.map((p) => p.wanted)).toEqual([0, 2, 1]);
    expect(steps.every((s) => s.returnLogits)).toBe(true);
  });

  it("asks for every token's logits with allLogits, in row order across chunks", () => {
    const steps = planSteps(prefillRows(prompts.map((p) => ({ ...p, allLogits: true }))), 6, false).map(
      (p) => p.native,
    );
    expect(steps.map((s) => s.tokens.length)).toEqual([6, 4]);
    expect(steps.map((s) => [...s.logitRows])).toEqual([
      [0, 1, 2, 3, 4, 5],
      [0, 1, 2, 3],
    ]);
    expect(steps.flatMap((s) => [...s.logitRows].map((r) => s.tokens[r]))).toEqual(
      prompts.flatMap((p) => p.tokens),
    );
    expect(steps.every((s) => !s.returnLogits)).toBe(true);
  });

  it("runs a decode batch as one step and refuses a step size below one", () => {
    const rows = [7, 8, 9].map((token, i) => ({
      token,
      cacheRow: i,
      position: 10 + i,
      slot: i,
      logits: true,
    }));
    const [planned, ...rest] = planSteps(rows, 64, false);
    const step = planned!.native;
    expect(rest).toEqual([]);
    expect([...step.positions]).toEqual([10, 11, 12]);
    expect([...step.logitRows]).toEqual([0, 1, 2]);
    expect(planned!.wanted).toBe(3);
    expect(planSteps([], 4, true)).toEqual([]);
    expect(() => planSteps(rows, 0, true)).toThrow(RangeError);
  });
});
