// The CPU engine with 4-bit projection weights (`--quantize q4`, quantized-weights.ts): the blocks hold each
// weight within half a quantization step; the engine computes what float32 weights equal to the dequantized
// values compute, up to its int8 activations; and a sequence's logits inside a mixed-adapter batch are still
// exactly those it gets alone.
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import type { LoadedAdapter } from "../../worker/adapters/peft.ts";
import { Engine, EngineError } from "../../worker/engine/engine.ts";
import { MODULE_KINDS, type ModelConfig, moduleShape, weightName } from "../../worker/engine/model-config.ts";
import { dequantizeQ4, Q4_BLOCK, quantizeQ4 } from "../../worker/engine/quantized-weights.ts";
import { openWeights, writeSafetensors } from "../../worker/engine/safetensors.ts";
import { type AdapterVariant, writeAdapterVariants } from "../support/adapter-variants.ts";

let root: string;
let modelDir: string;
let model: ModelConfig;
let adapters: LoadedAdapter[];

const VARIANTS: AdapterVariant[] = [{ rank: 4 }, { rank: 8, alpha: 16 }, { rank: 16, alpha: 8 }];

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-q4-"));
  const tiny = initTinyModel(join(root, "model"), { shape: "tiny", adapters: 0, rank: 4, seed: 9 });
  modelDir = tiny.dir;
  model = tiny.config;
  adapters = writeAdapterVariants(root, model, VARIANTS, 300);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/**
 * A copy of the model as a Qwen2 checkpoint: the same weights plus q, k and v biases, which q4 adds after
 * its products.
 */
function writeQwen2Model(outDir: string): string {
  mkdirSync(outDir, { recursive: true });
  for (const file of readdirSync(modelDir)) {
    if (file.endsWith(".json")) copyFileSync(join(modelDir, file), join(outDir, file));
  }
  const config = JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")) as Record<string, unknown>;
  writeFileSync(
    join(outDir, "config.json"),
    JSON.stringify({ ...config, architectures: ["Qwen2ForCausalLM"], model_type: "qwen2" }),
  );
  const weights = openWeights(modelDir);
  const biases = Array.from({ length: model.numLayers }, (_, l) =>
    (["q", "k", "v"] as const).map((kind) => {
      const out = moduleShape(model, kind).outFeatures;
      const data = Float32Array.from({ length: out }, (_, i) => Math.sin(l * 7 + i * 0.3) * 0.5);
      return {
        name: weightName(l, kind).replace(/weight$/, "bias"),
        dtype: "F32" as const,
        shape: [out],
        data,
      };
    }),
  ).flat();
  writeSafetensors(join(outDir, "model.safetensors"), [
    ...weights.names().map((name) => ({
      name,
      dtype: "F32" as const,
      shape: weights.info(name).shape,
      data: weights.readFloat32(name),
    })),
    ...biases,
  ]);
  return outDir;
}

/** A copy of `dir`'s model whose projection weights and lm_head are float32 holding exactly their q4 values. */
function writeDequantizedModel(dir: string, outDir: string): string {
  mkdirSync(outDir, { recursive: true });
  for (const file of readdirSync(dir)) {
    if (file.endsWith(".json")) copyFileSync(join(dir, file), join(outDir, file));
  }
  const weights = openWeights(dir);
  const quantized = new Set([
    ...Array.from({ length: model.numLayers }, (_, l) => MODULE_KINDS.map((k) => weightName(l, k))).flat(),
    model.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight",
  ]);
  writeSafetensors(
    join(outDir, "model.safetensors"),
    weights.names().map((name) => {
      const shape = weights.info(name).shape;
      let data = weights.readFloat32(name);
      if (quantized.has(name)) {
        const [rows, cols] = shape as [number, number];
        data = dequantizeQ4(quantizeQ4(data, rows, cols), rows, cols);
      }
      return { name, dtype: "F32" as const, shape, data };
    }),
  );
  return outDir;
}

function engineFor(dir: string, quantize?: "q4"): Promise<Engine> {
  return Engine.create({
    modelDir: dir,
    device: "cpu",
    maxContext: 64,
    slots: VARIANTS.length + 1,
    maxRank: 16,
    maxAdaptersPerStep: 16,
    threads: 1,
    ...(quantize ? { quantize } : {}),
  });
}

const prompt = (i: number) =>
  Array.from({ length: 5 + 3 * i }, (_, k) => (17 * i + 5 * k + 3) % model.vocabSize);

/** Greedy decode of every prompt together, each on its own slot: per sequence, each step's logits and the tokens fed. */
async function runBatch(engine: Engine, slots: readonly number[], steps: number) {
  const logits = slots.map((): Float32Array[] => []);
  const fed = slots.map((): number[] => []);
  const next = new Map<string, number>();
  const pick = (row: Float32Array) => row.indexOf(Math.max(...row));
  for (const [i, slot] of slots.entries()) {
    const [row] = await engine.prefill(`s${i}`, prompt(i), slot);
    logits[i]!.push(row!.slice());
    next.set(`s${i}`, pick(row!));
  }
  for (let step = 0; step < steps; step++) {
    for (const [id, row] of await engine.decode(next)) {
      const i = Number(id.slice(1));
      fed[i]!.push(next.get(id)!);
      logits[i]!.push(row.slice());
      next.set(id, pick(row));
    }
  }
  for (let i = 0; i < slots.length; i++) engine.release(`s${i}`);
  return { logits, fed };
}

/** Sequence i alone on `slot`, fed `tokens` after its prompt: the logits of every step. */
async function runAlone(engine: Engine, i: number, slot: number, tokens: readonly number[]) {
  const [first] = await engine.prefill("alone", prompt(i), slot);
  const out = [first!.slice()];
  for (const token of tokens)
    out.push((await engine.decode(new Map([["alone", token]]))).get("alone")!.slice());
  engine.release("alone");
  return out;
}

const maxDiff = (a: Float32Array, b: Float32Array) =>
  a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
const spread = (a: Float32Array) => Math.max(...a) - Math.min(...a);

describe("4-bit projection weights (q4)", () => {
  it("holds each weight within half a step of its block's scale, an all-zero block as zeros", () => {
    const cols = 4 * Q4_BLOCK;
    const w = Float32Array.from({ length: 3 * cols }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)));
    w.fill(0, cols, cols + Q4_BLOCK);
    const q = quantizeQ4(w, 3, cols);
    expect(q.packed.byteLength).toBe(w.length / 2);
    const back = dequantizeQ4(q, 3, cols);
    for (let i = 0; i < w.length; i++) {
      const scale = q.scales[Math.floor(i / Q4_BLOCK)]!;
      expect(Math.abs(back[i]! - w[i]!)).toBeLessThanOrEqual(scale / 2 + 1e-6);
    }
    expect(Array.from(back.subarray(cols, cols + Q4_BLOCK))).toEqual(new Array(Q4_BLOCK).fill(0));
    // The largest magnitude of a block is kept exactly (it maps to ±7 steps).
    const first = w.subarray(0, Q4_BLOCK);
    const largest = first.reduce((m, v) => (Math.abs(v) > Math.abs(m) ? v : m), 0);
    expect(back[first.indexOf(largest)]).toBeCloseTo(largest, 5);
    expect(() => quantizeQ4(new Float32Array(48), 1, 48)).toThrow(/multiple of 32/);
  });

  it.each([
    ["Llama", () => modelDir],
    ["Qwen2, q/k/v biases", () => writeQwen2Model(join(root, "qwen2"))],
  ])(
    "computes what float32 weights holding the q4 values compute, up to its int8 activations (%s)",
    async (name, dirOf) => {
      const dir = dirOf();
      const q4 = await engineFor(dir, "q4");
      const exact = await engineFor(
        writeDequantizedModel(dir, join(root, `dequantized-${name.slice(0, 5)}`)),
      );
      // The relative difference of each position's logits (teacher-forced prompts, base and three adapters).
      let worst = 0;
      for (const engine of [q4, exact]) {
        for (const [i, adapter] of adapters.slice(0, 3).entries()) await engine.writeAdapter(i + 1, adapter);
      }
      for (const slot of [0, 1, 2, 3]) {
        const tokens = prompt(slot + 2);
        const viaQ4 = await q4.prefill(`q${slot}`, tokens, slot, true);
        const viaExact = await exact.prefill(`e${slot}`, tokens, slot, true);
        for (const [i, row] of viaQ4.entries()) {
          worst = Math.max(worst, maxDiff(row, viaExact[i]!) / spread(viaExact[i]!));
        }
        q4.release(`q${slot}`);
        exact.release(`e${slot}`);
      }
      // About 1 % of a row's spread on this model (int8 activations, rounded per block of 32, every layer).
      expect(worst).toBeGreaterThan(0);
      expect(worst).toBeLessThan(0.02);
      await q4.close();
      await exact.close();
    },
  );

  it("gives each sequence in a mixed-adapter batch the logits it gets alone", async () => {
    const engine = await engineFor(modelDir, "q4");
    for (const [i, adapter] of adapters.slice(0, 3).entries()) await engine.writeAdapter(i + 1, adapter);
    // Slot 0 (base) and three adapters, each its own sequence, greedy.
    const slots = [0, 1, 2, 3];
    const together = await runBatch(engine, slots, 6);
    for (const [i, slot] of slots.entries()) {
      const alone = await runAlone(engine, i, slot, together.fed[i]!);
      expect(alone).toHaveLength(7);
      for (const [step, row] of alone.entries()) {
        expect(maxDiff(row, together.logits[i]![step]!)).toBeLessThan(1e-5);
      }
    }
    await engine.close();
  });

  it("is refused where it cannot run", async () => {
    await expect(
      Engine.create({
        modelDir,
        device: "cpu",
        computeDtype: "float16",
        maxContext: 64,
        slots: 2,
        maxRank: 16,
        maxAdaptersPerStep: 4,
        quantize: "q4",
      }),
    ).rejects.toThrow(EngineError);
  });
});
