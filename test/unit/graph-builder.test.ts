// The built decoder graph on onnxruntime's CPU provider, against itself and against merged weights:
// incremental decoding reproduces a full prefill, ragged decode batches match rows run alone, adapter
// deltas through the banks equal the base graph on W + s·B·A, and a bf16 checkpoint casts exactly.
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
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { buildGraph, cachedGraphPath, type GraphOptions } from "../../worker/engine/graph-builder.ts";
import {
  loadModelConfig,
  MODULE_KINDS,
  type ModelConfig,
  type ModuleKind,
  moduleShape,
  weightName,
} from "../../worker/engine/model-config.ts";
import { Prng } from "../../worker/engine/prng.ts";
import { inverseFrequencies } from "../../worker/engine/rope.ts";
import { openWeights, type WeightIndex, writeSafetensors } from "../../worker/engine/safetensors.ts";
import { referenceLogits } from "../support/reference-forward.ts";

const MAX_CONTEXT = 64;
const TOL = 1e-4;
const root = mkdtempSync(join(tmpdir(), "luminet-graph-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

type Feeds = Record<string, ort.Tensor>;
const i64 = (v: readonly number[], dims = [v.length]) =>
  new ort.Tensor(
    "int64",
    BigInt64Array.from(v, (x) => BigInt(x)),
    dims,
  );
const i32 = (v: readonly number[], dims = [v.length]) => new ort.Tensor("int32", Int32Array.from(v), dims);
const f32 = (v: Float32Array, dims: number[]) => new ort.Tensor("float32", v, dims);

interface Model {
  dir: string;
  cfg: ModelConfig;
  weights: WeightIndex;
}

function open(dir: string): Model {
  return { dir, cfg: loadModelConfig(dir), weights: openWeights(dir) };
}

async function session(m: Model, lora: GraphOptions["lora"] = null): Promise<ort.InferenceSession> {
  const path = cachedGraphPath(m.dir, m.cfg, m.weights, {
    computeDtype: "float32",
    maxContext: MAX_CONTEXT,
    lora,
  });
  return ort.InferenceSession.create(path, { executionProviders: ["cpu"], intraOpNumThreads: 1 });
}

// KV caches per layer, [B, kvHeads, P, headDim] in the contract's names.
type Kv = Record<string, ort.Tensor>;
function emptyKv(cfg: ModelConfig, batch: number): Kv {
  const kv: Kv = {};
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const n of ["key", "value"]) {
      kv[`past_${n}.${l}`] = f32(new Float32Array(0), [batch, cfg.numKvHeads, 0, cfg.headDim]);
    }
  }
  return kv;
}
function presentsAsPasts(out: ort.InferenceSession.ReturnType, cfg: ModelConfig): Kv {
  const kv: Kv = {};
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const n of ["key", "value"]) kv[`past_${n}.${l}`] = out[`present_${n}.${l}`]!;
  }
  return kv;
}

interface Step {
  tokens: number[][]; // [B][S]
  lengths: number[]; // per row: total length after this step
  rows: number[];
  kv: Kv;
  extra?: Feeds;
}
async function run(
  s: ort.InferenceSession,
  step: Step,
): Promise<{ logits: Float32Array[]; kv: Kv; out: ort.InferenceSession.ReturnType }> {
  const b = step.tokens.length;
  const seq = step.tokens[0]!.length;
  const out = await s.run({
    input_ids: i64(step.tokens.flat(), [b, seq]),
    seqlens_k: i32(step.lengths.map((n) => n - 1)),
    total_sequence_length: i32([Math.max(...step.lengths)], []),
    logits_rows: i64(step.rows),
    ...noChoices,
    ...step.kv,
    ...step.extra,
  });
  const data = out.logits!.data as Float32Array;
  const vocab = out.logits!.dims[1]!;
  const logits = step.rows.map((_, r) => data.slice(r * vocab, (r + 1) * vocab));
  return { logits, kv: {}, out };
}

/**
 * The decode-choice row lists of a run that wants only `logits`: row 0 each, as the engine feeds lists it
 * leaves unused (onnxruntime 1.30's TopK kills the process on zero rows).
 */
const noChoices: Feeds = {
  pick_rows: i64([0]),
  candidate_rows: i64([0]),
  candidate_temperatures: f32(Float32Array.of(1), [1]),
  whole_rows: i64([0]),
  ...penalties("pick", [[0, 0, 1, 0, 0]]),
  ...penalties("candidate", [[0, 0, 1, 0, 0]]),
};

/** A set's penalty inputs from entries [row within the set, token, repetition, presence, frequency]. */
function penalties(set: string, entries: number[][]): Feeds {
  const f64 = (column: number) =>
    new ort.Tensor(
      "float64",
      Float64Array.from(entries, (e) => e[column]!),
      [entries.length],
    );
  return {
    [`${set}_penalty_index`]: i64(
      entries.flatMap((e) => [e[0]!, e[1]!]),
      [entries.length, 2],
    ),
    [`${set}_penalty_repetition`]: f64(2),
    [`${set}_penalty_presence`]: f64(3),
    [`${set}_penalty_frequency`]: f64(4),
  };
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

let base: Model;
let baseSession: ort.InferenceSession;
const prompt = [17, 300, 5, 42, 9, 128, 77, 3];

beforeAll(async () => {
  base = open(initTinyModel(join(root, "tiny"), { shape: "tiny", adapters: 0, rank: 4, seed: 11 }).dir);
  baseSession = await session(base);
});

describe("graph builder", () => {
  it("decoding step by step with presents fed back as pasts reproduces the logits of a full prefill", async () => {
    const { cfg } = base;
    const all = prompt.map((_, i) => i);
    const full = await run(baseSession, { tokens: [prompt], lengths: [8], rows: all, kv: emptyKv(cfg, 1) });
    const pre = await run(baseSession, {
      tokens: [prompt.slice(0, 5)],
      lengths: [5],
      rows: [4],
      kv: emptyKv(cfg, 1),
    });
    expect(maxDiff(pre.logits[0]!, full.logits[4]!)).toBeLessThan(TOL);
    let kv = presentsAsPasts(pre.out, cfg);
    for (let p = 5; p < 8; p++) {
      const step = await run(baseSession, { tokens: [[prompt[p]!]], lengths: [p + 1], rows: [0], kv });
      expect(step.out["present_key.0"]!.dims).toEqual([1, cfg.numKvHeads, p + 1, cfg.headDim]);
      expect(maxDiff(step.logits[0]!, full.logits[p]!)).toBeLessThan(TOL);
      kv = presentsAsPasts(step.out, cfg);
    }
    // The logits are not degenerate: positions differ from one another.
    expect(maxDiff(full.logits[6]!, full.logits[7]!)).toBeGreaterThan(1e-2);
  });

  it("picks, candidates and whole rows are the argmax, the largest logits with their log-sum-exp after each row's penalties, and the raw rows", async () => {
    const { cfg } = base;
    const all = [0, 1, 2, 3, 4, 5, 6, 7];
    const raw = (await run(baseSession, { tokens: [prompt], lengths: [8], rows: all, kv: emptyKv(cfg, 1) }))
      .logits;
    const order = (row: Float32Array) => [...row.keys()].sort((a, b) => row[b]! - row[a]! || a - b);
    // Entries [row within the set, token, repetition, presence, frequency]. Picks (rows 3, 0, 3): the first
    // loses its argmax to a presence penalty, the second gets a repetition and a frequency penalty, the
    // third none. Candidates (rows 1, 6): the first's top token divided by a repetition penalty, the
    // second's 100th token lifted to the top by a negative presence penalty.
    const pickPenalties = [
      [0, order(raw[3]!)[0]!, 1, 50, 0],
      [1, order(raw[0]!)[0]!, 1.3, 0, 0.2],
      [1, order(raw[0]!)[1]!, 1.3, 0, 0.4],
    ];
    const candidatePenalties = [
      [0, order(raw[1]!)[0]!, 2, 0.5, 0],
      [1, order(raw[6]!)[99]!, 1, -50, 0],
    ];
    const step = await run(baseSession, {
      tokens: [prompt],
      lengths: [8],
      rows: all,
      kv: emptyKv(cfg, 1),
      extra: {
        pick_rows: i64([3, 0, 3]),
        candidate_rows: i64([1, 6]),
        candidate_temperatures: f32(Float32Array.of(0.5, 1.7), [2]),
        whole_rows: i64([7, 2]),
        ...penalties("pick", pickPenalties),
        ...penalties("candidate", candidatePenalties),
      },
    });
    // The penalized rows as PenaltyList.applyTo makes them, each step rounded to float32.
    const penalize = (row: Float32Array, set: number, entries: number[][]) => {
      const out = row.slice();
      for (const [r, t, repetition, presence, frequency] of entries) {
        if (r !== set) continue;
        if (repetition !== 1) out[t!] = out[t!]! > 0 ? out[t!]! / repetition! : out[t!]! * repetition!;
        out[t!] = out[t!]! - presence! - frequency!;
      }
      return out;
    };
    const picks = [3, 0, 3].map((r, k) => order(penalize(raw[r]!, k, pickPenalties))[0]!);
    expect(Array.from(step.out.picks!.data as BigInt64Array, Number)).toEqual(picks);
    expect(picks[0]).not.toBe(order(raw[3]!)[0]);
    expect(picks[2]).toBe(order(raw[3]!)[0]);

    const count = Math.min(64, cfg.vocabSize);
    const ids = step.out.candidate_ids!.data as BigInt64Array;
    const values = step.out.candidate_logits!.data as Float32Array;
    const lse = step.out.candidate_log_sum_exp!.data as Float32Array;
    for (const [k, [r, t]] of [
      [1, 0.5],
      [6, 1.7],
    ].entries()) {
      const row = penalize(raw[r!]!, k, candidatePenalties);
      const top = order(row).slice(0, count);
      expect(Array.from(ids.subarray(k * count, (k + 1) * count), Number)).toEqual(top);
      expect(Array.from(values.subarray(k * count, (k + 1) * count))).toEqual(top.map((i) => row[i]!));
      let sum = 0;
      for (const x of row) sum += Math.exp((x - row[top[0]!]!) / t!);
      expect(lse[k]!).toBeCloseTo(row[top[0]!]! / t! + Math.log(sum), 4);
    }
    expect(Number(ids[count])).toBe(order(raw[6]!)[99]);
    // Whole rows stay raw.
    const whole = step.out.whole_logits!.data as Float32Array;
    expect(whole.subarray(0, cfg.vocabSize)).toEqual(raw[7]);
    expect(whole.subarray(cfg.vocabSize)).toEqual(raw[2]);
  });

  it("a decode batch with ragged, right-padded pasts matches each row decoded alone", async () => {
    const { cfg } = base;
    const rows = [prompt.slice(0, 3), prompt.slice(1, 7), prompt.slice(2, 4)];
    const next = [7, 400, 21];
    const alone: Float32Array[] = [];
    const pasts: Kv[] = [];
    for (const [r, tokens] of rows.entries()) {
      const pre = await run(baseSession, {
        tokens: [tokens],
        lengths: [tokens.length],
        rows: [0],
        kv: emptyKv(cfg, 1),
      });
      pasts.push(presentsAsPasts(pre.out, cfg));
      const dec = await run(baseSession, {
        tokens: [[next[r]!]],
        lengths: [tokens.length + 1],
        rows: [0],
        kv: pasts[r]!,
      });
      alone.push(dec.logits[0]!);
    }
    // Stack the pasts into [3, kvHeads, P, headDim], each row right-padded with garbage past its length.
    const P = Math.max(...rows.map((t) => t.length));
    const { numKvHeads: KV, headDim: D } = cfg;
    const kv: Kv = {};
    for (const name of Object.keys(pasts[0]!)) {
      const stacked = new Float32Array(rows.length * KV * P * D).fill(123.5);
      for (const [r, tokens] of rows.entries()) {
        const src = pasts[r]![name]!.data as Float32Array;
        const len = tokens.length;
        for (let h = 0; h < KV; h++) {
          stacked.set(src.subarray(h * len * D, (h + 1) * len * D), (r * KV + h) * P * D);
        }
      }
      kv[name] = f32(stacked, [rows.length, KV, P, D]);
    }
    const batch = await run(baseSession, {
      tokens: next.map((t) => [t]),
      lengths: rows.map((t) => t.length + 1),
      rows: [0, 1, 2],
      kv,
    });
    for (let r = 0; r < rows.length; r++) expect(maxDiff(batch.logits[r]!, alone[r]!)).toBeLessThan(TOL);
  });

  it("reuses the cached graph file and rebuilds when the options change", () => {
    const opts: GraphOptions = { computeDtype: "float32", maxContext: MAX_CONTEXT, lora: null };
    const a = cachedGraphPath(base.dir, base.cfg, base.weights, opts);
    expect(cachedGraphPath(base.dir, base.cfg, base.weights, opts)).toBe(a);
    expect(readFileSync(a)).toEqual(Buffer.from(buildGraph(base.cfg, base.weights, opts)));
    expect(cachedGraphPath(base.dir, base.cfg, base.weights, { ...opts, maxContext: 32 })).not.toBe(a);
  });

  it("names every multi-LoRA node lora/…, so onnxruntime's per-node profile tells them apart", () => {
    const graph = (lora: GraphOptions["lora"]) =>
      Buffer.from(
        buildGraph(base.cfg, base.weights, { computeDtype: "float32", maxContext: MAX_CONTEXT, lora }),
      );
    const count = (bytes: Buffer, text: string) => bytes.toString("latin1").split(text).length - 1;
    const plain = graph(null);
    expect(count(plain, "lora/")).toBe(0);
    for (const lora of [
      { formulation: "segments", segments: 4, slots: 3, rowsPerSlot: 4 },
      { formulation: "segment-views", segments: 4 },
      { formulation: "masked", slots: 3, rowsPerSlot: 4 },
      { formulation: "slot-batched", rowsPerSlot: 4 },
      { formulation: "span-masked", rowsPerSlot: 4 },
    ] as const) {
      const withLora = graph(lora);
      // Every projection's delta, in every layer (a Gemm or a batched MatMul each), is named so; the base
      // graph's own nodes are not: as many unprefixed Gemm nodes as the plain graph has.
      expect(count(withLora, "lora/Gemm_") + count(withLora, "lora/MatMul_")).toBeGreaterThanOrEqual(
        7 * base.cfg.numLayers,
      );
      expect(count(withLora, "Gemm_") - count(withLora, "lora/Gemm_")).toBe(count(plain, "Gemm_"));
    }
  });

  it("adapter deltas through the banks equal the base graph on merged weights W + s·B·A (+ s·bias)", async () => {
    const { cfg } = base;
    const rng = new Prng(5);
    const uniform = (n: number, scale: number) =>
      Float32Array.from({ length: n }, () => scale * (2 * rng.nextFloat() - 1));
    // X: rank 4, every module, a lora bias on q/k/v. Y: rank 2, no v and no down (zero-rank slices).
    const x = randomAdapter(cfg, uniform, { rank: 4, scale: 2, kinds: MODULE_KINDS, bias: true });
    const y = randomAdapter(cfg, uniform, {
      rank: 2,
      scale: 0.5,
      kinds: MODULE_KINDS.filter((k) => k !== "v" && k !== "down"),
      bias: false,
    });
    const mergedX = open(writeMerged(base, join(root, "merged-x"), x));
    const mergedY = open(writeMerged(base, join(root, "merged-y"), y));
    expect(mergedX.cfg.architecture).toBe("qwen2");

    const lora = { formulation: "segments" as const, segments: 4, slots: 3, rowsPerSlot: 4 };
    const slotOf = new Map([
      [x, 1],
      [y, 2],
    ]);
    const banks = bankFeeds(cfg, lora, slotOf, uniform);
    const loraSession = await session(base, lora);

    // Prefill: row 0 with X, row 1 without adapter, row 2 with Y; segments [unused, Y, unused, X].
    const rows = [prompt.slice(0, 4), prompt.slice(2, 6), prompt.slice(4, 8)];
    const prefill = await run(loraSession, {
      tokens: rows,
      lengths: [4, 4, 4],
      rows: [3, 7, 11],
      kv: emptyKv(cfg, 3),
      extra: {
        ...banks,
        ...segmentFeeds(cfg, lora, [null, y, null, x], slotOf, [[], [8, 9, 10, 11], [], [0, 1, 2, 3]], 12),
      },
    });
    // Decode: segments [X, Y, unused, unused].
    const next = [11, 250, 99];
    const decode = await run(loraSession, {
      tokens: next.map((t) => [t]),
      lengths: [5, 5, 5],
      rows: [0, 1, 2],
      kv: presentsAsPasts(prefill.out, cfg),
      extra: { ...banks, ...segmentFeeds(cfg, lora, [x, y, null, null], slotOf, [[0], [2], [], []], 3) },
    });

    // A step in which no token has an adapter computes the base model's logits.
    const none = await run(loraSession, {
      tokens: next.map((t) => [t]),
      lengths: [5, 5, 5],
      rows: [0, 1, 2],
      kv: presentsAsPasts(prefill.out, cfg),
      extra: { ...banks, ...segmentFeeds(cfg, lora, [null, null, null, null], slotOf, [[], [], [], []], 3) },
    });
    const plainDecode = await run(baseSession, {
      tokens: [[next[1]!]],
      lengths: [5],
      rows: [0],
      kv: presentsAsPasts(
        (await run(baseSession, { tokens: [rows[1]!], lengths: [4], rows: [3], kv: emptyKv(cfg, 1) })).out,
        cfg,
      ),
    });
    expect(maxDiff(none.logits[1]!, plainDecode.logits[0]!)).toBeLessThan(TOL);

    const references = [mergedX, base, mergedY];
    for (const [r, m] of references.entries()) {
      const s = m === base ? baseSession : await session(m);
      const pre = await run(s, { tokens: [rows[r]!], lengths: [4], rows: [3], kv: emptyKv(cfg, 1) });
      const dec = await run(s, {
        tokens: [[next[r]!]],
        lengths: [5],
        rows: [0],
        kv: presentsAsPasts(pre.out, cfg),
      });
      expect(maxDiff(prefill.logits[r]!, pre.logits[0]!)).toBeLessThan(TOL);
      expect(maxDiff(decode.logits[r]!, dec.logits[0]!)).toBeLessThan(TOL);
      if (m !== base) {
        const plain = await run(baseSession, {
          tokens: [rows[r]!],
          lengths: [4],
          rows: [3],
          kv: emptyKv(cfg, 1),
        });
        expect(maxDiff(plain.logits[0]!, pre.logits[0]!)).toBeGreaterThan(1e-2); // the adapter matters
        await s.release();
      }
    }
    await loraSession.release();
  });

  it("a bf16 checkpoint with tied embeddings computes in float32 what its exact f32 copy computes", async () => {
    const bf16 = open(
      initTinyModel(join(root, "bf16"), { shape: "tiny", adapters: 0, rank: 4, seed: 12, dtype: "BF16" }).dir,
    );
    const tied = join(root, "bf16-tied");
    const f32Copy = join(root, "bf16-as-f32");
    const config = JSON.parse(readFileSync(join(bf16.dir, "config.json"), "utf8")) as Record<string, unknown>;
    const names = bf16.weights.names().filter((n) => n !== "lm_head.weight");
    for (const [dir, dtype] of [
      [tied, "bfloat16"],
      [f32Copy, "float32"],
    ] as const) {
      mkdirSync(dir);
      writeFileSync(
        join(dir, "config.json"),
        JSON.stringify({ ...config, torch_dtype: dtype, tie_word_embeddings: dir === tied }),
      );
    }
    writeSafetensors(
      join(tied, "model.safetensors"),
      names.map((name) => ({
        name,
        dtype: "BF16",
        shape: bf16.weights.info(name).shape,
        data: bf16.weights.readRaw(name),
      })),
    );
    // The untied f32 copy carries the embedding as lm_head explicitly.
    writeSafetensors(join(f32Copy, "model.safetensors"), [
      ...names.map((name) => ({
        name,
        dtype: "F32" as const,
        shape: bf16.weights.info(name).shape,
        data: bf16.weights.readFloat32(name),
      })),
      {
        name: "lm_head.weight",
        dtype: "F32",
        shape: bf16.weights.info("model.embed_tokens.weight").shape,
        data: bf16.weights.readFloat32("model.embed_tokens.weight"),
      },
    ]);
    const results: Float32Array[][] = [];
    for (const dir of [tied, f32Copy]) {
      const m = open(dir);
      const s = await session(m);
      results.push(
        (await run(s, { tokens: [prompt], lengths: [8], rows: [0, 7], kv: emptyKv(m.cfg, 1) })).logits,
      );
      await s.release();
    }
    expect(open(tied).cfg).toMatchObject({ dtype: "BF16", tieWordEmbeddings: true });
    for (const r of [0, 1]) expect(maxDiff(results[0]![r]!, results[1]![r]!)).toBeLessThan(TOL);

    // The graph reads float32 weights widened once on disk (every session maps that one file) rather than
    // casting at load (a float32 copy per session); the file comes back if deleted.
    const widenedFiles = () => readdirSync(tied).filter((f) => /^\.luminet-f32-.*\.safetensors$/.test(f));
    expect(widenedFiles()).toHaveLength(1);
    const widenedName = widenedFiles()[0]!;
    const widened = openWeights(tied, widenedName.replace(/\.safetensors$/, ""));
    const source = open(tied).weights;
    expect(widened.names().sort()).toEqual(source.names().sort());
    for (const name of source.names()) {
      expect(widened.info(name).dtype).toBe("F32");
      expect(widened.readFloat32(name)).toEqual(source.readFloat32(name));
    }
    rmSync(join(tied, widenedName));
    const m = open(tied);
    cachedGraphPath(m.dir, m.cfg, m.weights, {
      computeDtype: "float32",
      maxContext: MAX_CONTEXT,
      lora: null,
    });
    expect(widenedFiles()).toEqual([widenedName]);
  });

  it("refuses weights that do not fit the config, naming the tensor", () => {
    const opts: GraphOptions = { computeDtype: "float32", maxContext: MAX_CONTEXT, lora: null };
    expect(() => buildGraph({ ...base.cfg, intermediateSize: 96 }, base.weights, opts)).toThrow(
      "tensor model.layers.0.mlp.gate_proj.weight has shape [128, 64], expected [96, 64]",
    );
    expect(() =>
      buildGraph({ ...base.cfg, tieWordEmbeddings: false, numLayers: 3 }, base.weights, opts),
    ).toThrow(/no tensor model\.layers\.2\.input_layernorm\.weight/);
    expect(() =>
      buildGraph({ ...base.cfg, architecture: "qwen2", qkvBias: true }, base.weights, opts),
    ).toThrow(/no tensor model\.layers\.0\.self_attn\.q_proj\.bias/);
    expect(() =>
      buildGraph(base.cfg, base.weights, {
        ...opts,
        lora: { formulation: "segments", segments: 0, slots: 2, rowsPerSlot: 4 },
      }),
    ).toThrow("lora.segments must be a positive integer, got 0");
    // q4 blocks are 32 inputs wide, and q4 graphs compute in float32; refused before any weight is written.
    expect(() =>
      buildGraph({ ...base.cfg, intermediateSize: 80 }, base.weights, { ...opts, quantize: "q4" }),
    ).toThrow("q4 quantizes down_proj in blocks of 32 inputs, but it has 80");
    expect(() =>
      buildGraph(base.cfg, base.weights, { ...opts, computeDtype: "float16", quantize: "q4" }),
    ).toThrow("q4 weights need a float32 graph (CPU)");
  });

  it("agrees with the independent reference forward, with plain, linear, llama3 and YaRN rope", async () => {
    const config = JSON.parse(readFileSync(join(base.dir, "config.json"), "utf8")) as Record<string, unknown>;
    const variants: [string, unknown][] = [
      ["plain", null],
      ["linear", { rope_type: "linear", factor: 4 }],
      [
        "llama3",
        {
          rope_type: "llama3",
          factor: 8,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 64,
        },
      ],
      // A narrow band (head_dim 16) so some pairs keep, some interpolate, some blend; cos/sin scaled 1.14×.
      ["yarn", { rope_type: "yarn", factor: 4, beta_fast: 8, beta_slow: 1 }],
    ];
    const lastRows: Float32Array[] = [];
    for (const [name, ropeScaling] of variants) {
      const dir = join(root, `rope-${name}`);
      mkdirSync(dir);
      writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, rope_scaling: ropeScaling }));
      copyFileSync(join(base.dir, "model.safetensors"), join(dir, "model.safetensors"));
      const m = open(dir);
      const s = await session(m);
      const all = prompt.map((_, t) => t);
      const got = await run(s, {
        tokens: [prompt],
        lengths: [prompt.length],
        rows: all,
        kv: emptyKv(m.cfg, 1),
      });
      const want = referenceLogits(dir, prompt);
      for (const t of all) expect(maxDiff(got.logits[t]!, want[t]!)).toBeLessThan(TOL);
      lastRows.push(got.logits[prompt.length - 1]!);
      await s.release();
    }
    // Each scaling really changes the angles: the last position's logits differ from plain rope's.
    expect(maxDiff(lastRows[0]!, lastRows[1]!)).toBeGreaterThan(1e-3);
    expect(maxDiff(lastRows[0]!, lastRows[2]!)).toBeGreaterThan(1e-3);
    expect(maxDiff(lastRows[0]!, lastRows[3]!)).toBeGreaterThan(1e-3);
  });
});

describe("rope frequencies", () => {
  const plain = { headDim: 128, ropeTheta: 500000, ropeScaling: null };
  it("are theta^(-2i/d), matching Hugging Face's float32 values", () => {
    const inv = inverseFrequencies(plain);
    expect(inv[0]).toBe(1);
    expect(inv[32]).toBe(Math.fround(1 / 500000 ** 0.5));
    expect(inv[63]! / 500000 ** (-126 / 128)).toBeCloseTo(1, 6);
  });

  it("linear scaling divides every frequency by the factor", () => {
    const inv = inverseFrequencies(plain);
    const linear = inverseFrequencies({ ...plain, ropeScaling: { type: "linear", factor: 4 } });
    expect(Array.from(linear)).toEqual(Array.from(inv, (f) => Math.fround(f / 4)));
  });

  it("llama3 scaling keeps short wavelengths, slows long ones by the factor and blends the band between", () => {
    const scaling = {
      type: "llama3",
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositions: 8192,
    } as const;
    const inv = inverseFrequencies(plain);
    const scaled = inverseFrequencies({ ...plain, ropeScaling: scaling });
    let blended = 0;
    inv.forEach((f, i) => {
      const wavelen = (2 * Math.PI) / f;
      const got = scaled[i]!;
      if (wavelen < 8192 / 4) expect(got).toBe(f);
      else if (wavelen > 8192) expect(got).toBe(Math.fround(f / 8));
      else {
        blended++;
        const smooth = (8192 / wavelen - 1) / 3;
        expect(got / ((1 - smooth) * (f / 8) + smooth * f)).toBeCloseTo(1, 6);
        expect(got).toBeGreaterThan(f / 8);
        expect(got).toBeLessThanOrEqual(f);
      }
    });
    expect(blended).toBeGreaterThan(0);
  });
});

// A random LoRA adapter: per (layer, kind) A [rank, in], B [out, rank], optional bias [out] (q/k/v only,
// so the merged model can carry it as Qwen2's attention bias).
interface TestAdapter {
  rank: number;
  scale: number;
  modules: Map<string, { a: Float32Array; b: Float32Array; bias: Float32Array | null }>;
}
const key = (l: number, kind: ModuleKind) => `${l}.${kind}`;

function randomAdapter(
  cfg: ModelConfig,
  uniform: (n: number, scale: number) => Float32Array,
  o: { rank: number; scale: number; kinds: readonly ModuleKind[]; bias: boolean },
): TestAdapter {
  const modules: TestAdapter["modules"] = new Map();
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const kind of o.kinds) {
      const { inFeatures, outFeatures } = moduleShape(cfg, kind);
      const hasBias = o.bias && (kind === "q" || kind === "k" || kind === "v");
      modules.set(key(l, kind), {
        a: uniform(o.rank * inFeatures, 0.3),
        b: uniform(outFeatures * o.rank, 0.3),
        bias: hasBias ? uniform(outFeatures, 0.3) : null,
      });
    }
  }
  return { rank: o.rank, scale: o.scale, modules };
}

// A copy of the model with W + s·B·A in every targeted module; with any bias it becomes a Qwen2 model
// whose q/k/v biases are s·bias (zero elsewhere).
function writeMerged(m: Model, dir: string, adapter: TestAdapter): string {
  mkdirSync(dir, { recursive: true });
  for (const f of ["generation_config.json", "tokenizer.json", "tokenizer_config.json"]) {
    copyFileSync(join(m.dir, f), join(dir, f));
  }
  const config = JSON.parse(readFileSync(join(m.dir, "config.json"), "utf8")) as Record<string, unknown>;
  const withBias = [...adapter.modules.values()].some((x) => x.bias !== null);
  if (withBias) Object.assign(config, { architectures: ["Qwen2ForCausalLM"], model_type: "qwen2" });
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  const tensors = m.weights.names().map((name) => {
    const info = m.weights.info(name);
    return { name, dtype: "F32" as const, shape: info.shape, data: m.weights.readFloat32(name) };
  });
  for (let l = 0; l < m.cfg.numLayers; l++) {
    for (const kind of MODULE_KINDS) {
      const { inFeatures: n, outFeatures: out } = moduleShape(m.cfg, kind);
      const mod = adapter.modules.get(key(l, kind));
      if (mod) {
        const w = tensors.find((t) => t.name === weightName(l, kind))!.data;
        for (let o = 0; o < out; o++) {
          for (let i = 0; i < n; i++) {
            let d = 0;
            for (let r = 0; r < adapter.rank; r++) d += mod.b[o * adapter.rank + r]! * mod.a[r * n + i]!;
            w[o * n + i]! += adapter.scale * d;
          }
        }
      }
      if (withBias && (kind === "q" || kind === "k" || kind === "v")) {
        const bias = mod?.bias ? mod.bias.map((v) => adapter.scale * v) : new Float32Array(out);
        tensors.push({
          name: weightName(l, kind).replace(/weight$/, "bias"),
          dtype: "F32",
          shape: [out],
          data: bias,
        });
      }
    }
  }
  writeSafetensors(join(dir, "model.safetensors"), tensors);
  return dir;
}

// Banks per (layer, kind) with each adapter in its slot: A rows, s·Bᵀ rows, s·bias. Every row no adapter
// owns holds garbage, so a slice that strays reads it.
function bankFeeds(
  cfg: ModelConfig,
  lora: { slots: number; rowsPerSlot: number },
  slotOf: Map<TestAdapter, number>,
  uniform: (n: number, scale: number) => Float32Array,
): Feeds {
  const feeds: Feeds = {};
  const rowsTotal = lora.slots * lora.rowsPerSlot;
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const kind of MODULE_KINDS) {
      const { inFeatures: n, outFeatures: out } = moduleShape(cfg, kind);
      const a = uniform(rowsTotal * n, 50);
      const b = uniform(rowsTotal * out, 50);
      const bias = uniform(lora.slots * out, 50);
      for (const [adapter, slot] of slotOf) {
        bias.fill(0, slot * out, (slot + 1) * out);
        const mod = adapter.modules.get(key(l, kind));
        if (!mod) continue;
        for (let r = 0; r < adapter.rank; r++) {
          const row = slot * lora.rowsPerSlot + r;
          a.set(mod.a.subarray(r * n, (r + 1) * n), row * n);
          for (let o = 0; o < out; o++) b[row * out + o] = adapter.scale * mod.b[o * adapter.rank + r]!;
        }
        if (mod.bias)
          bias.set(
            mod.bias.map((v) => adapter.scale * v),
            slot * out,
          );
      }
      feeds[`lora_a.${l}.${kind}`] = f32(a, [rowsTotal, n]);
      feeds[`lora_b.${l}.${kind}`] = f32(b, [rowsTotal, out]);
      feeds[`lora_bias.${l}.${kind}`] = f32(bias, [lora.slots, out]);
    }
  }
  return feeds;
}

// The per-step segment inputs: which flattened tokens each segment holds, and its adapter's bank rows.
function segmentFeeds(
  cfg: ModelConfig,
  lora: { segments: number; rowsPerSlot: number },
  segments: (TestAdapter | null)[],
  slotOf: Map<TestAdapter, number>,
  tokens: number[][],
  tokenCount: number,
): Feeds {
  const perm = tokens.flat();
  const unsort = new Array<number>(tokenCount).fill(perm.length);
  perm.forEach((t, i) => {
    unsort[t] = i;
  });
  const feeds: Feeds = {
    lora_perm: i64(perm),
    lora_counts: i64(tokens.map((t) => t.length)),
    lora_unsort: i64(unsort),
    lora_bias_rows: i64(
      segments.flatMap((a) => (a ? [slotOf.get(a)!, slotOf.get(a)! + 1] : [0, 0])),
      [lora.segments, 2],
    ),
  };
  for (const kind of MODULE_KINDS) {
    const bounds = segments.flatMap((a) => {
      if (!a) return [0, 0];
      const start = slotOf.get(a)! * lora.rowsPerSlot;
      const targets = [...Array(cfg.numLayers).keys()].some((l) => a.modules.has(key(l, kind)));
      return [start, start + (targets ? a.rank : 0)];
    });
    feeds[`lora_rows.${kind}`] = i64(bounds, [lora.segments, 2]);
  }
  return feeds;
}
