// The engine's correctness oracle (../shared/DESIGN.md "The forward pass"): a sequence's logits with an
// adapter applied through the banks, inside a mixed batch of many distinct adapters, equal the same
// sequence run alone and the base graph run on merged weights W + s·B·A.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chunkedPrefillCase, chunkedPrefillTrace } from "../../scripts/chunked-prefill-trace.ts";
import { wholeRows } from "../../scripts/cuda-check.ts";
import { writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { type LoadedAdapter, loadPeftAdapter } from "../../worker/adapters/peft.ts";
import { CANDIDATES, type DecodeCandidates, type DecodeChoice } from "../../worker/engine/decode-row.ts";
import { Engine, EngineError, type LoraFormulation } from "../../worker/engine/engine.ts";
import { EngineThread } from "../../worker/engine/engine-thread.ts";
import type { ModelConfig } from "../../worker/engine/model-config.ts";
import { loadTokenizer } from "../../worker/engine/tokenizer.ts";
import type { SchedulerEngine } from "../../worker/scheduler.ts";
import { type AdapterVariant, writeAdapterVariants } from "../support/adapter-variants.ts";
import { expectChunkMisuseRefused } from "../support/chunked-prefill.ts";
import { writeMergedModel } from "../support/merged-model.ts";
import { referenceLogits } from "../support/reference-forward.ts";
import {
  expectSameDraws,
  generateEach,
  PENALIZED,
  SAMPLING_MIX,
  UNPENALIZED,
} from "../support/sampled-draws.ts";

let root: string;
let modelDir: string;
let model: ModelConfig;
const adapters: LoadedAdapter[] = [];

/** Nine adapters that differ in rank, targets and scaling, so one batch mixes all of it. */
const VARIANTS: AdapterVariant[] = [
  { rank: 4 },
  { rank: 8, alpha: 16 },
  { rank: 16, alpha: 8 },
  { rank: 8, useRslora: true, alpha: 32 },
  { rank: 4, targetModules: ["q", "v"] as const },
  { rank: 8, targetModules: ["gate", "up", "down"] as const },
  { rank: 12, rankPattern: { "layers.1.self_attn.o_proj": 4 }, alphaPattern: { "mlp.down_proj": 3 } },
  { rank: 6, targetModulesRegex: String.raw`model\.layers\.0\..*_proj` },
  { rank: 16, dtype: "BF16" as const },
];

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-engine-"));
  const tiny = initTinyModel(join(root, "model"), { shape: "tiny", adapters: 0, rank: 4, seed: 5 });
  modelDir = tiny.dir;
  model = tiny.config;
  adapters.push(...writeAdapterVariants(root, model, VARIANTS, 100));
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

function engineFor(
  dir: string,
  slots = VARIANTS.length,
  loraFormulation: LoraFormulation = "segment-views",
): Promise<Engine> {
  return Engine.create({
    modelDir: dir,
    device: "cpu",
    maxContext: 64,
    slots,
    maxRank: 16,
    maxAdaptersPerStep: 16,
    threads: 1,
    loraFormulation,
  });
}

/**
 * Four slots holding adapters 0..2 in slots 1..3, on host state or on device-resident state with masked
 * rows (the code path GPUs run).
 */
async function threeAdapterEngine(deviceResidentState: boolean, prefixCacheBytes = 0): Promise<Engine> {
  const engine = await Engine.create({
    modelDir,
    device: "cpu",
    maxContext: 64,
    slots: 4,
    maxRank: 16,
    maxAdaptersPerStep: 16,
    threads: 1,
    deviceResidentState,
    prefixCacheBytes,
    ...(deviceResidentState ? { loraFormulation: "masked" as const } : {}),
  });
  for (const i of [0, 1, 2]) await engine.writeAdapter(i + 1, adapters[i]!);
  return engine;
}

function prompt(i: number): number[] {
  return Array.from({ length: 3 + i }, (_, t) => (17 * i + 31 * t + 1) % model.vocabSize);
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/**
 * Decodes n steps of the same rows on an engine and its twin (the same adapters through another formulation),
 * every row's logits agreeing; returns the engine's graph variant at each step.
 */
function twinSteps(engine: Engine, twin: Engine): (ids: string[], n: number) => Promise<number[]> {
  let token = 3;
  return async (ids, n) => {
    const variants: number[] = [];
    for (let t = 0; t < n; t++, token++) {
      const feed = new Map(ids.map((id) => [id, token]));
      const [got, want] = [await engine.decode(feed), await twin.decode(feed)];
      for (const id of ids) expect(maxDiff(got.get(id)!, want.get(id)!)).toBeLessThan(1e-4);
      variants.push(engine.graphVariant);
    }
    return variants;
  };
}

/** Runs one sequence alone: prefill, then decode the given tokens; the logits of every step. */
async function runAlone(
  engine: Engine,
  tokens: number[],
  slot: number,
  feed: number[],
): Promise<Float32Array[]> {
  const out = [(await engine.prefill("alone", tokens, slot))[0]!.slice()];
  for (const token of feed)
    out.push((await engine.decode(new Map([["alone", token]]))).get("alone")!.slice());
  engine.release("alone");
  return out;
}

describe("the engine on mixed-adapter batches", () => {
  // Adapter i sits in slot first + i·stride. Segment views with the 9 adapters spread over 25 of 32 slots
  // decode in the 16-segment variant; where they fill the slots they span (all 9 of 9, or slots 20..28 of
  // 64) their decode steps run slot-batched.
  it.each([
    ["segment views", "segment-views", 32, 1, 3, 16],
    ["slot-batched decode steps", "segment-views", VARIANTS.length, 1, 1, -2],
    ["slot-batched over a run of slots", "segment-views", 64, 20, 1, -2],
    ["segments", "segments", VARIANTS.length, 1, 1, 16],
    ["masked", "masked", VARIANTS.length, 1, 1, -1],
  ] as const)(
    "gives each sequence in a batch of 9 distinct adapters the logits it gets alone and on merged weights (%s)",
    async (_label, formulation, slots, first, stride, decodeVariant) => {
      const engine = await engineFor(modelDir, slots, formulation);
      expect(engine.formulation).toBe(formulation);
      const slotOfAdapter = (i: number) => first + i * stride;
      for (const [i, adapter] of adapters.entries()) await engine.writeAdapter(slotOfAdapter(i), adapter);
      // Ten sequences of ragged lengths: nine adapters and one base row; the last three join a step late.
      const ids = Array.from({ length: 10 }, (_, i) => `s${i}`);
      const slotOf = (i: number) => (i === 9 ? 0 : slotOfAdapter(i));
      const logits = new Map<string, Float32Array[]>(ids.map((id) => [id, []]));
      const fed = new Map<string, number[]>(ids.map((id) => [id, []]));
      const pick = (row: Float32Array) => row.indexOf(Math.max(...row));
      const next = new Map<string, number>();
      const admit = async (i: number) => {
        const [row] = await engine.prefill(ids[i]!, prompt(i), slotOf(i));
        logits.get(ids[i]!)!.push(row!.slice());
        next.set(ids[i]!, pick(row!));
      };
      for (let i = 0; i < 7; i++) await admit(i);
      const variants: number[] = [];
      for (let step = 0; step < 20; step++) {
        if (step === 1) for (let i = 7; i < 10; i++) await admit(i);
        const out = await engine.decode(next);
        variants.push(engine.graphVariant);
        for (const [id, row] of out) {
          fed.get(id)!.push(next.get(id)!);
          logits.get(id)!.push(row.slice());
          next.set(id, pick(row));
        }
      }
      for (const id of ids) engine.release(id);
      expect(variants.at(-1)).toBe(decodeVariant);

      for (const [i, id] of ids.entries()) {
        const alone = await runAlone(engine, prompt(i), slotOf(i), fed.get(id)!);
        expect(alone).toHaveLength(logits.get(id)!.length);
        for (const [step, row] of alone.entries())
          expect(maxDiff(row, logits.get(id)![step]!)).toBeLessThan(1e-4);
      }
      await engine.close();

      for (const i of [0, 3, 4, 6, 7, 8]) {
        const merged = await engineFor(writeMergedModel(modelDir, adapters[i]!, join(root, `merged-${i}`)));
        const viaMerge = await runAlone(merged, prompt(i), 0, fed.get(ids[i]!)!);
        for (const [step, row] of viaMerge.entries()) {
          expect(maxDiff(row, logits.get(ids[i]!)![step]!)).toBeLessThan(2e-4);
        }
        await merged.close();
      }
    },
  );

  it("agrees with the independent TypeScript reference forward, lora bias and rsLoRA included", async () => {
    const biasDir = join(root, "adapter-bias");
    writeRandomAdapter(biasDir, model, { rank: 8, alpha: 24, useRslora: true, loraBias: true, seed: 77 });
    const withBias = loadPeftAdapter(biasDir, model, { maxRank: 16 });
    const engine = await engineFor(modelDir);
    await engine.writeAdapter(1, withBias);
    await engine.writeAdapter(2, adapters[6]!);
    const tokens = prompt(6);
    for (const [slot, adapter] of [
      [0, undefined],
      [1, withBias],
      [2, adapters[6]],
    ] as const) {
      const viaEngine = await engine.prefill(`r${slot}`, tokens, slot, true);
      const reference = referenceLogits(modelDir, tokens, adapter);
      expect(viaEngine).toHaveLength(tokens.length);
      for (const [i, row] of viaEngine.entries()) expect(maxDiff(row, reference[i]!)).toBeLessThan(1e-4);
    }
    await engine.close();
  });

  it("runs a Qwen3 checkpoint (per-head q/k norms, attention wider than hidden) as the reference does", async () => {
    const qwen3 = initTinyModel(join(root, "qwen3"), {
      shape: "tiny",
      architecture: "qwen3",
      adapters: 2,
      rank: 8,
      seed: 9,
    });
    expect(qwen3.config).toMatchObject({ qkNorm: true, headDim: 32, hiddenSize: 64, numHeads: 4 });
    const [first, second] = qwen3.adapterDirs.map((dir) =>
      loadPeftAdapter(dir, qwen3.config, { maxRank: 16 }),
    );
    const engine = await engineFor(qwen3.dir, 2);
    await engine.writeAdapter(1, first!);
    await engine.writeAdapter(2, second!);
    const tokens = [prompt(4), prompt(6), prompt(5)];
    const feeds = [
      [7, 8, 9],
      [10, 11, 12],
      [13, 14, 15],
    ];
    // Three sequences (base, adapter 1, adapter 2) prefilled, then decoding together.
    const logits = new Map<string, Float32Array[]>();
    for (const [slot, prompt] of tokens.entries()) {
      logits.set(`q${slot}`, [(await engine.prefill(`q${slot}`, prompt, slot))[0]!.slice()]);
    }
    for (let step = 0; step < 3; step++) {
      const out = await engine.decode(new Map(tokens.map((_, slot) => [`q${slot}`, feeds[slot]![step]!])));
      for (const [id, row] of out) logits.get(id)!.push(row.slice());
    }
    for (const [slot, adapter] of [undefined, first, second].entries()) {
      const fed = [...tokens[slot]!, ...feeds[slot]!];
      const reference = referenceLogits(qwen3.dir, fed, adapter).slice(tokens[slot]!.length - 1);
      for (const [step, row] of logits.get(`q${slot}`)!.entries()) {
        expect(maxDiff(row, reference[step]!)).toBeLessThan(1e-4);
      }
    }
    await engine.close();
    // The norms are not a no-op: the same weights read as a Llama (no q/k norms) give other logits.
    const asLlama = join(root, "qwen3-as-llama");
    cpSync(qwen3.dir, asLlama, { recursive: true });
    const config = JSON.parse(readFileSync(join(asLlama, "config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(
      join(asLlama, "config.json"),
      JSON.stringify({ ...config, architectures: ["LlamaForCausalLM"], model_type: "llama" }),
    );
    const withoutNorms = referenceLogits(asLlama, tokens[0]!).at(-1)!;
    expect(maxDiff(withoutNorms, logits.get("q0")![0]!)).toBeGreaterThan(1e-2);
  });

  it("changes the logits with an adapter, and gives the base logits in slot 0", async () => {
    const engine = await engineFor(modelDir);
    await engine.writeAdapter(1, adapters[0]!);
    const base = await runAlone(engine, prompt(2), 0, [5, 6]);
    const adapted = await runAlone(engine, prompt(2), 1, [5, 6]);
    engine.clearSlot(1);
    const cleared = await Engine.create({
      modelDir,
      device: "cpu",
      maxContext: 64,
      slots: 1,
      maxRank: 16,
      maxAdaptersPerStep: 1,
    });
    const baseAgain = await runAlone(cleared, prompt(2), 0, [5, 6]);
    for (const [step, row] of base.entries()) {
      expect(maxDiff(row, adapted[step]!)).toBeGreaterThan(1e-2);
      expect(maxDiff(row, baseAgain[step]!)).toBeLessThan(1e-5);
    }
    await engine.close();
    await cleared.close();
  });

  it("refuses what it cannot run with a clear error", async () => {
    const engine = await engineFor(modelDir, 2);
    await expect(engine.prefill("a", [], 0)).rejects.toThrow(/empty prompt/);
    await expect(engine.prefill("a", new Array(64).fill(1), 0)).rejects.toThrow(/64-token context/);
    await expect(engine.prefill("a", [1, 2], 3)).rejects.toThrow(EngineError);
    await engine.prefill("a", [1, 2], 0);
    await expect(engine.prefill("a", [1, 2], 0)).rejects.toThrow(/already running/);
    await engine.prefill("b", [1, 2, 3], 0);
    await expect(engine.decode(new Map([["a", 1]]))).rejects.toThrow(/missing b/);
    await engine.close();
    // Segment views feed tensors over host memory; device-resident banks have none to give.
    await expect(
      Engine.create({
        modelDir,
        device: "cpu",
        maxContext: 64,
        slots: 2,
        maxRank: 16,
        maxAdaptersPerStep: 4,
        deviceResidentState: true,
        loraFormulation: "segment-views",
      }),
    ).rejects.toThrow(/host memory; with device-resident state use segments or masked/);
  });

  it("keeps the same results with device-resident state and masked rows, the code path GPUs run", async () => {
    const host = await engineFor(modelDir);
    const resident = await Engine.create({
      loraFormulation: "masked",
      modelDir,
      device: "cpu",
      maxContext: 64,
      slots: VARIANTS.length,
      maxRank: 16,
      maxAdaptersPerStep: 16,
      threads: 1,
      deviceResidentState: true,
    });
    const trace = async (engine: Engine) => {
      const out: Float32Array[] = [];
      for (const i of [0, 1, 2]) await engine.writeAdapter(i + 1, adapters[i]!);
      await engine.prefill("a", prompt(1), 1);
      await engine.prefill("b", prompt(5), 2);
      for (const row of (
        await engine.decode(
          new Map([
            ["a", 4],
            ["b", 8],
          ]),
        )
      ).values())
        out.push(row.slice());
      // b leaves, c joins with another adapter, and slot 1 is rewritten while a runs.
      engine.release("b");
      await engine.prefillTogether([
        { id: "c", tokens: prompt(2), slot: 3 },
        { id: "d", tokens: prompt(2), slot: 0 },
      ]);
      await engine.writeAdapter(1, adapters[4]!);
      for (const step of [0, 1]) {
        const rows = await engine.decode(
          new Map([
            ["a", 10 + step],
            ["c", 20 + step],
            ["d", 30 + step],
          ]),
        );
        for (const id of ["a", "c", "d"]) out.push(rows.get(id)!.slice());
      }
      // A step settled in the graph: a's pick, c's candidates (as logits), d's whole row.
      const settled = await engine.decodePicking(
        new Map([
          ["a", 12],
          ["c", 22],
          ["d", 32],
        ]),
        new Map<string, DecodeChoice>([
          ["a", { kind: "argmax" }],
          ["c", { kind: "candidates", temperature: 0.5, mayNeedRow: false }],
        ]),
      );
      out.push(Float32Array.of(settled.get("a") as number));
      out.push((settled.get("c") as DecodeCandidates).logits.slice());
      out.push((settled.get("d") as Float32Array).slice());
      return out;
    };
    const expected = await trace(host);
    const actual = await trace(resident);
    expect(actual).toHaveLength(expected.length);
    for (const [i, row] of actual.entries()) expect(maxDiff(row, expected[i]!)).toBeLessThan(1e-5);
    await host.close();
    await resident.close();
  });

  it("parks sequences out of the batch and resumes them, in another slot too, computing what they would have", async () => {
    for (const deviceResidentState of [false, true]) {
      const engine = await threeAdapterEngine(deviceResidentState);
      await engine.writeAdapter(4, adapters[0]!);
      const pick = (row: Float32Array) => row.indexOf(Math.max(...row));
      const logits = new Map<string, Float32Array[]>();
      const fed = new Map<string, number[]>();
      const next = new Map<string, number>();
      const admit = async (id: string, i: number, slot: number) => {
        const [row] = await engine.prefill(id, prompt(i), slot);
        logits.set(id, [row!.slice()]);
        fed.set(id, []);
        next.set(id, pick(row!));
      };
      const decode = async (ids: string[]) => {
        const out = await engine.decode(new Map(ids.map((id) => [id, next.get(id)!])));
        for (const [id, row] of out) {
          fed.get(id)!.push(next.get(id)!);
          logits.get(id)!.push(row.slice());
          next.set(id, pick(row));
        }
      };
      await admit("a", 1, 1);
      await admit("b", 4, 2);
      await decode(["a", "b"]);
      await decode(["a", "b"]);
      // c is parked before it ever joined the batch; a from the batch.
      await admit("c", 2, 3);
      await engine.park("c");
      await engine.park("a");
      await expect(engine.decode(new Map([["a", 1]]))).rejects.toThrow(EngineError);
      await expect(engine.prefill("a", [1, 2], 1)).rejects.toThrow("sequence a is parked: resume it");
      await expect(engine.park("a")).rejects.toThrow("sequence a is not decoding");
      expect(() => engine.resume("b", 2)).toThrow("sequence b is not parked");
      await decode(["b"]);
      await decode(["b"]);
      // a comes back in slot 4, which holds its adapter too; slot 1 has another adapter now.
      await engine.writeAdapter(1, adapters[1]!);
      engine.resume("a", 4);
      engine.resume("c", 3);
      for (let step = 0; step < 3; step++) await decode(["a", "b", "c"]);
      // A parked sequence released leaves nothing behind.
      await admit("d", 3, 2);
      await engine.park("d");
      engine.release("d");
      for (const id of ["a", "b", "c"]) engine.release(id);
      expect(engine.running).toBe(0);

      for (const [id, i, slot] of [
        ["a", 1, 4],
        ["b", 4, 2],
        ["c", 2, 3],
      ] as const) {
        const alone = await runAlone(engine, prompt(i), slot, fed.get(id)!);
        expect(alone).toHaveLength(logits.get(id)!.length);
        for (const [step, row] of alone.entries())
          expect(maxDiff(row, logits.get(id)![step]!)).toBeLessThan(1e-4);
      }
      await engine.close();
    }
  });

  it("prefills prompts of different lengths together as each alone, and decodes them on the same", async () => {
    // Lengths 4, 8, 3 and 11 with three adapters and the base: rows right-padded to 11 in one run.
    const batch = [
      { id: "p", tokens: prompt(1), slot: 1 },
      { id: "q", tokens: prompt(5), slot: 2 },
      { id: "r", tokens: prompt(0), slot: 0 },
      { id: "s", tokens: prompt(8), slot: 3 },
    ];
    for (const deviceResidentState of [false, true]) {
      const engine = await Engine.create({
        modelDir,
        device: "cpu",
        maxContext: 64,
        slots: 4,
        maxRank: 16,
        maxAdaptersPerStep: 16,
        threads: 1,
        deviceResidentState,
      });
      for (const i of [0, 1, 2]) await engine.writeAdapter(i + 1, adapters[i]!);
      const trace = async (together: boolean) => {
        const out: Float32Array[] = together
          ? await engine.prefillTogether(batch.map((p) => ({ ...p, allLogits: true })))
          : [];
        if (!together)
          for (const p of batch) out.push(...(await engine.prefill(p.id, p.tokens, p.slot, true)));
        for (const step of [0, 1]) {
          const rows = await engine.decode(new Map(batch.map((p, i) => [p.id, 40 + 7 * i + step])));
          for (const p of batch) out.push(rows.get(p.id)!);
        }
        for (const p of batch) engine.release(p.id);
        return out.map((row) => row.slice());
      };
      const alone = await trace(false);
      const together = await trace(true);
      // Every prompt token's logits (4 + 8 + 3 + 11 rows), then two decode steps of four rows.
      expect(together).toHaveLength(26 + 8);
      for (const [i, row] of together.entries()) expect(maxDiff(row, alone[i]!)).toBeLessThan(1e-4);
      await engine.close();
    }
  });

  it("prefills a long prompt in chunks while others decode, as in one run", async () => {
    const c = chunkedPrefillCase(model.vocabSize);
    for (const deviceResidentState of [false, true]) {
      const engine = await threeAdapterEngine(deviceResidentState);
      const whole = await chunkedPrefillTrace(engine, c, false);
      const chunked = await chunkedPrefillTrace(engine, c, true);
      expect([...chunked.keys()].sort()).toEqual([...whole.keys()].sort());
      expect(chunked.get("long")).toHaveLength(23);
      for (const [label, rows] of chunked)
        for (const [i, row] of rows.entries()) expect(maxDiff(row, whole.get(label)![i]!)).toBeLessThan(1e-4);
      await expectChunkMisuseRefused(engine, c);
      await engine.close();
    }
  });

  it("prefills a prompt that starts like an earlier one on the same adapter from that prefix's cache, computing the same", async () => {
    const system = Array.from({ length: 40 }, (_, t) => (11 * t + 3) % model.vocabSize);
    const withTail = (n: number, seed: number) => [
      ...system,
      ...Array.from({ length: n }, (_, t) => (seed + 7 * t) % model.vocabSize),
    ];
    for (const deviceResidentState of [false, true]) {
      const cached = await threeAdapterEngine(deviceResidentState, 1 << 20);
      const reference = await threeAdapterEngine(deviceResidentState);
      let run = 0;
      // Prefill on both, then two decode steps: every row equal within fp32 tolerance.
      const expectSame = async (prompts: { tokens: number[]; slot: number; more?: true }[]) => {
        const ids = prompts.map(() => `p${run++}`);
        const batch = prompts.map((p, i) => ({ ...p, id: ids[i]! }));
        const got = await cached.prefillTogether(batch);
        const want = await reference.prefillTogether(batch);
        for (const [i, row] of got.entries()) expect(maxDiff(row, want[i]!)).toBeLessThan(1e-4);
        const decoding = ids.filter((_, i) => !prompts[i]!.more);
        for (const step of [0, 1]) {
          const tokens = new Map(decoding.map((id, i) => [id, 9 + 5 * i + step]));
          const [a, b] = [await cached.decode(tokens), await reference.decode(tokens)];
          for (const id of decoding) expect(maxDiff(a.get(id)!, b.get(id)!)).toBeLessThan(1e-4);
        }
        return ids;
      };
      const reused = () => cached.prefixCacheStats()!.reusedTokens;
      const release = (ids: string[]) => {
        for (const id of ids) {
          cached.release(id);
          reference.release(id);
        }
      };

      release(await expectSame([{ tokens: withTail(5, 1), slot: 1 }]));
      expect(reused()).toBe(0);
      expect(cached.prefixCacheStats()!.entries).toBe(1); // its first 32 tokens: two whole blocks
      // Same adapter, same 40-token start: the two blocks are reused; another adapter's prompt is not.
      release(
        await expectSame([
          { tokens: withTail(7, 2), slot: 1 },
          { tokens: withTail(7, 2), slot: 2 },
        ]),
      );
      expect(reused()).toBe(32);
      // A prompt sent in chunks reuses the prefix in its first chunk, and is remembered when complete.
      const [chunked] = await expectSame([{ tokens: withTail(3, 5).slice(0, 36), slot: 2, more: true }]);
      const rest = [{ id: chunked!, tokens: withTail(3, 5).slice(36), slot: 2 }];
      const [a, b] = [await cached.prefillTogether(rest), await reference.prefillTogether(rest)];
      expect(maxDiff(a[0]!, b[0]!)).toBeLessThan(1e-4);
      release([chunked!]);
      expect(reused()).toBe(64);
      // The slot rewritten with another adapter: its earlier adapter's prefixes no longer apply.
      for (const engine of [cached, reference]) await engine.writeAdapter(1, adapters[3]!);
      release(await expectSame([{ tokens: withTail(6, 3), slot: 1 }]));
      expect(reused()).toBe(64);
      await cached.close();
      await reference.close();
    }
  });

  it("stores a released sequence's decoded tokens with its prompt, so a prompt continuing the conversation reuses both", async () => {
    for (const deviceResidentState of [false, true]) {
      const cached = await threeAdapterEngine(deviceResidentState, 1 << 20);
      const reference = await threeAdapterEngine(deviceResidentState);
      const first = Array.from({ length: 20 }, (_, t) => (13 * t + 5) % model.vocabSize);
      const answer = Array.from({ length: 30 }, (_, t) => (29 * t + 7) % model.vocabSize);
      await cached.prefill("turn-1", first, 1);
      for (const token of answer) await cached.decode(new Map([["turn-1", token]]));
      // 50 tokens in its cache: three whole blocks stored (the prompt alone held one).
      cached.release("turn-1");
      const next = [{ id: "turn-2", tokens: [...first, ...answer, 3, 4, 5, 6], slot: 1 }];
      const [got] = await cached.prefillTogether(next);
      const [want] = await reference.prefillTogether(next);
      expect(cached.reusedPromptTokens(["turn-2"])).toEqual([48]);
      expect(maxDiff(got!, want!)).toBeLessThan(1e-4);
      const step = new Map([["turn-2", 9]]);
      const [a, b] = [await cached.decode(step), await reference.decode(step)];
      expect(maxDiff(a.get("turn-2")!, b.get("turn-2")!)).toBeLessThan(1e-4);
      // Another adapter's conversation does not reuse it.
      const other = [{ id: "other", tokens: next[0]!.tokens, slot: 2 }];
      await cached.prefillTogether(other);
      expect(cached.reusedPromptTokens(["other"])).toEqual([0]);
      await cached.close();
      await reference.close();
    }
  });

  it("decodes across the host cache's capacity steps as a prefill of the whole text computes", async () => {
    const engine = await Engine.create({
      modelDir,
      device: "cpu",
      maxContext: 160,
      slots: 1,
      maxRank: 16,
      maxAdaptersPerStep: 1,
      threads: 1,
    });
    await engine.writeAdapter(1, adapters[0]!);
    // Two sequences of different lengths, so rows are ragged when the cache grows past 64 and 128 positions.
    const texts = [60, 30].map((n, s) => Array.from({ length: n + 80 }, (_, t) => (7 * t + 3 * s) % 50));
    const decoded = texts.map(() => [] as Float32Array[]);
    await engine.prefill("a", texts[0]!.slice(0, 60), 1);
    await engine.prefill("b", texts[1]!.slice(0, 30), 0);
    for (let step = 0; step < 79; step++) {
      const out = await engine.decode(
        new Map([
          ["a", texts[0]![60 + step]!],
          ["b", texts[1]![30 + step]!],
        ]),
      );
      decoded[0]!.push(out.get("a")!.slice());
      decoded[1]!.push(out.get("b")!.slice());
    }
    engine.release("a");
    engine.release("b");
    for (const [s, [id, slot, start]] of [["a", 1, 60] as const, ["b", 0, 30] as const].entries()) {
      const whole = await engine.prefill(`${id}-whole`, texts[s]!.slice(0, start + 80), slot, true);
      for (const [step, row] of decoded[s]!.entries())
        expect(maxDiff(row, whole[start + step]!)).toBeLessThan(1e-4);
      engine.release(`${id}-whole`);
    }
    await engine.close();
  });

  it("settles picks and candidates in its graph, and draws through them what it draws from whole rows", async () => {
    const engine = await engineFor(modelDir);
    await engine.writeAdapter(1, adapters[2]!);
    const ids = ["a", "b", "c", "d", "e"];
    for (const [i, id] of ids.entries()) await engine.prefill(id, prompt(i), i % 2);
    const twin = await engineFor(modelDir);
    await twin.writeAdapter(1, adapters[2]!);
    for (const [i, id] of ids.entries()) await twin.prefill(id, prompt(i), i % 2);
    const next = new Map(ids.map((id, i) => [id, 40 + i]));
    const want = await twin.decode(next);
    const dRow = want.get("d")!;
    const dOrder = [...dRow.keys()].sort((x, y) => dRow[y]! - dRow[x]! || x - y);
    const rows = await engine.decodePicking(
      next,
      new Map<string, DecodeChoice>([
        ["a", { kind: "argmax" }],
        ["b", { kind: "candidates", temperature: 0.6, mayNeedRow: false }],
        ["c", { kind: "candidates", temperature: 0, mayNeedRow: true }],
        // Penalties apply before the pick: d's argmax, penalized away, leaves its runner-up.
        [
          "d",
          {
            kind: "argmax",
            penalties: {
              tokens: Int32Array.of(dOrder[0]!),
              repetition: Float64Array.of(1.5),
              presence: Float64Array.of(50),
              frequency: Float64Array.of(0),
            },
          },
        ],
      ]),
    );
    const argmax = (row: Float32Array) => row.indexOf(Math.max(...row));
    expect(rows.get("a")).toBe(argmax(want.get("a")!));
    expect(rows.get("d")).toBe(dOrder[1]);
    for (const [id, t] of [
      ["b", 0.6],
      ["c", 1],
    ] as const) {
      const c = rows.get(id) as DecodeCandidates;
      const row = want.get(id)!;
      const order = [...row.keys()].sort((x, y) => row[y]! - row[x]! || x - y).slice(0, CANDIDATES);
      expect(Array.from(c.tokens)).toEqual(order);
      for (const [k, token] of order.entries()) expect(c.logits[k]).toBeCloseTo(row[token]!, 5);
      let sum = 0;
      for (const x of row) sum += Math.exp((x - row[order[0]!]!) / t);
      expect(c.logSumExp).toBeCloseTo(row[order[0]!]! / t + Math.log(sum), 4);
      expect(c.vocab).toBe(model.vocabSize);
    }
    expect(maxDiff(rows.get("e") as Float32Array, want.get("e")!)).toBeLessThan(1e-5);
    // Only a draw that may reach past its candidates keeps its row, until the next step.
    expect(maxDiff(engine.logitsOf("c"), want.get("c")!)).toBeLessThan(1e-5);
    expect(() => engine.logitsOf("b")).toThrow(EngineError);
    // Every row a top-p draw: all come back as candidates, each with its row kept.
    const topP = { kind: "candidates", temperature: 0.8, mayNeedRow: true } as const;
    const allTopP = await engine.decodePicking(
      new Map(ids.map((id) => [id, 2])),
      new Map(ids.map((id) => [id, topP])),
    );
    for (const id of ids) {
      const c = allTopP.get(id) as DecodeCandidates;
      expect(c.tokens[0]).toBe(argmax(engine.logitsOf(id)));
    }
    await engine.decodePicking(new Map(ids.map((id) => [id, 1])), new Map());
    expect(() => engine.logitsOf("c")).toThrow(/kept no logits/);
    await twin.close();

    // Through the batching loop: the same tokens and logprobs as host sampling of every whole row.
    const tokenizer = loadTokenizer(modelDir);
    const sampling = SAMPLING_MIX;
    for (const id of ids) engine.release(id);
    let settled = 0;
    let settledPenalized = 0;
    const counting: SchedulerEngine = {
      padsPrefills: engine.padsPrefills,
      prefixReadyAfterPrefill: engine.prefixReadyAfterPrefill,
      prefillTogether: (prompts) => engine.prefillTogether(prompts),
      decodePicking: async (tokens, choices) => {
        const out = await engine.decodePicking(tokens, choices);
        for (const [id, row] of out) {
          if (row instanceof Float32Array) continue;
          settled++;
          if (choices.get(id)?.penalties) settledPenalized++;
        }
        return out;
      },
      logitsOf: (id) => engine.logitsOf(id),
      release: (id) => engine.release(id),
      reusedPromptTokens: (ids) => engine.reusedPromptTokens(ids),
      cachedPrefixLength: (prompt) => engine.cachedPrefixLength(prompt),
    };
    const [viaChoices, viaRows] = [
      await generateEach(counting, tokenizer, sampling, prompt),
      await generateEach(wholeRows(engine), tokenizer, sampling, prompt),
    ];
    expect(settled).toBeGreaterThan(0);
    expect(settledPenalized).toBeGreaterThan(0);
    expectSameDraws(viaChoices, viaRows);
    // The penalties mattered: without them each of those sequences generates other tokens.
    const plain = await generateEach(wholeRows(engine), tokenizer, UNPENALIZED, prompt);
    expect(PENALIZED.every((i) => plain[i]!.tokenIds.join() !== viaRows[i]!.tokenIds.join())).toBe(true);
    await engine.close();
  });

  it("stays on a larger graph variant until a smaller one has sufficed for 16 decode steps, computing the same", async () => {
    // Adapters three slots apart: five of them fill too few of the slots they span for slot-batched steps.
    const slotOf = (i: number) => 3 * i + 1;
    const engine = await engineFor(modelDir, 32);
    const twin = await engineFor(modelDir, 32);
    for (const [i, adapter] of adapters.entries()) {
      await engine.writeAdapter(slotOf(i), adapter);
      await twin.writeAdapter(slotOf(i), adapter);
    }
    // Five adapters need the 16-segment variant; once the fifth leaves, four fit the 4-segment one. The twin
    // runs the four alone throughout (rows of a batch do not affect each other).
    const four = ["a", "b", "c", "d"];
    for (const [i, id] of four.entries()) {
      await engine.prefill(id, prompt(i), slotOf(i));
      await twin.prefill(id, prompt(i), slotOf(i));
    }
    await engine.prefill("e", prompt(4), slotOf(4));
    const step = (e: Engine, ids: string[], token: number) => e.decode(new Map(ids.map((id) => [id, token])));
    await step(engine, [...four, "e"], 3);
    await step(twin, four, 3);
    expect(engine.graphVariant).toBe(16);
    engine.release("e");
    const variants: number[] = [];
    for (let t = 0; t < 17; t++) {
      const [got, want] = [await step(engine, four, 4 + t), await step(twin, four, 4 + t)];
      variants.push(engine.graphVariant);
      for (const id of four) expect(maxDiff(got.get(id)!, want.get(id)!)).toBeLessThan(1e-5);
      // A prefill in between (over two adapters: one alone runs span-masked) takes the current variant and
      // does not count as a step.
      if (t === 5) {
        await engine.prefillTogether([
          { id: "p", tokens: prompt(6), slot: slotOf(0) },
          { id: "q", tokens: prompt(7), slot: slotOf(1) },
        ]);
        expect(engine.graphVariant).toBe(16);
        for (const id of ["p", "q"]) engine.release(id);
      }
    }
    expect(twin.graphVariant).toBe(4);
    expect(variants).toEqual([...Array(15).fill(16), 4, 4]);
    // More adapters move up at once; a decode without any forgets the larger variant.
    await engine.prefill("e", prompt(4), slotOf(4));
    await step(engine, [...four, "e"], 7);
    expect(engine.graphVariant).toBe(16);
    for (const id of [...four, "e"]) engine.release(id);
    await engine.prefill("base", prompt(1), 0);
    await step(engine, ["base"], 7);
    expect(engine.graphVariant).toBe(0);
    // One adapter lies within a few slots: span-masked (-3), not a segment variant.
    await engine.prefill("one", prompt(2), slotOf(1));
    await step(engine, ["base", "one"], 8);
    expect(engine.graphVariant).toBe(-3);
    await engine.close();
    await twin.close();
  });

  it("decodes slot-batched while the step's adapters fill most of the slots they span, a slot's earlier adapter leaving no trace", async () => {
    // Six slots, five in the step (two rows on slot 2, one base row). The twin decodes the same rows through
    // gathered segments throughout.
    const engine = await engineFor(modelDir, 6);
    const twin = await engineFor(modelDir, 6, "segments");
    // Slot 1 held a rank-16 adapter before its rank-4 one: a slot-batched step reads all 16 rows.
    await engine.writeAdapter(1, adapters[2]!);
    for (const e of [engine, twin]) {
      await e.writeAdapter(1, adapters[0]!);
      for (const [slot, variant] of [
        [2, 1],
        [3, 3],
        [4, 4],
        [5, 5],
      ])
        await e.writeAdapter(slot!, adapters[variant!]!);
    }
    const rows: [string, number][] = [
      ["a", 1],
      ["b", 2],
      ["b2", 2],
      ["c", 3],
      ["d", 4],
      ["e", 5],
      ["base", 0],
    ];
    for (const [i, [id, slot]] of rows.entries()) {
      await engine.prefill(id, prompt(i), slot);
      await twin.prefill(id, prompt(i), slot);
    }
    const steps = twinSteps(engine, twin);
    const all = rows.map(([id]) => id);
    expect(await steps(all, 3)).toEqual([-2, -2, -2]);
    // A prefill over two adapters runs the segment variant (slot-batched would pad it to every slot); one
    // over a single adapter runs span-masked. Decodes go on slot-batched.
    await engine.prefillTogether([
      { id: "p", tokens: prompt(8), slot: 3 },
      { id: "q", tokens: prompt(7), slot: 4 },
    ]);
    expect(engine.graphVariant).toBe(16);
    await engine.prefill("r", prompt(6), 5);
    expect(engine.graphVariant).toBe(-3);
    for (const id of ["p", "q", "r"]) engine.release(id);
    expect(await steps(all, 2)).toEqual([-2, -2]);

    // Two adapters left, slots 1 and 5: segment views suffice, and take over after 16 steps in a row.
    for (const id of ["b", "b2", "c", "d"]) for (const e of [engine, twin]) e.release(id);
    expect(await steps(["a", "e", "base"], 17)).toEqual([...Array(15).fill(-2), 4, 4]);
    expect(twin.graphVariant).not.toBe(-2);
    await engine.close();
    await twin.close();
  });

  it("decodes span-masked while the step's adapters lie within a few slots; a lora bias runs segment views", async () => {
    // The twin decodes the same rows through gathered segments throughout.
    const engine = await engineFor(modelDir, 16);
    const twin = await engineFor(modelDir, 16, "segments");
    const biasDir = join(root, "adapter-span-bias");
    writeRandomAdapter(biasDir, model, { rank: 4, loraBias: true, seed: 78 });
    const biased = loadPeftAdapter(biasDir, model, { maxRank: 16 });
    // Slot 2 held a rank-16 adapter before its rank-4 one: a span-masked step reads all 16 of its rows.
    await engine.writeAdapter(2, adapters[2]!);
    for (const e of [engine, twin]) {
      for (const [slot, adapter] of [
        [1, adapters[1]!],
        [2, adapters[0]!],
        [4, adapters[3]!],
        [7, adapters[4]!],
        [9, adapters[5]!],
      ] as const)
        await e.writeAdapter(slot, adapter);
    }
    let i = 0;
    const admit = async (id: string, slot: number) => {
      await engine.prefill(id, prompt(i), slot);
      await twin.prefill(id, prompt(i++), slot);
    };
    const release = (...ids: string[]) => {
      for (const id of ids) for (const e of [engine, twin]) e.release(id);
    };
    const steps = twinSteps(engine, twin);
    // Slots 1..4 (two rows on slot 2, one base row): span-masked.
    for (const [id, slot] of [
      ["a", 1],
      ["b", 2],
      ["b2", 2],
      ["c", 4],
      ["base", 0],
    ] as const)
      await admit(id, slot);
    const all = ["a", "b", "b2", "c", "base"];
    expect(await steps(all, 2)).toEqual([-3, -3]);
    // A prefill over one adapter runs span-masked too (no gather or scatter of its tokens).
    await admit("g", 7);
    expect(engine.graphVariant).toBe(-3);
    // Once on, it stays over up to eight slots (1..7), and leaves past them at once: five adapters in slots
    // 1..9 fill enough of them for slot-batched steps (-2).
    expect(await steps([...all, "g"], 2)).toEqual([-3, -3]);
    await admit("i", 9);
    expect(await steps([...all, "g", "i"], 2)).toEqual([-2, -2]);
    // Back to slots 1..7: not taken up again over more than four slots (slot-batched stays); over 1..4 it is.
    release("i");
    expect(await steps([...all, "g"], 2)).toEqual([-2, -2]);
    release("g");
    expect(await steps(all, 2)).toEqual([-3, -3]);
    // A lora bias in the span (slot 3, empty so far): segment views, also where six adapters in slots 1..9
    // would run slot-batched.
    for (const e of [engine, twin]) await e.writeAdapter(3, biased);
    await admit("bias", 3);
    expect(await steps([...all, "bias"], 2)).toEqual([16, 16]);
    await admit("g", 7);
    await admit("i", 9);
    expect(await steps([...all, "bias", "g", "i"], 2)).toEqual([16, 16]);
    release("bias");
    expect(await steps([...all, "g", "i"], 2)).toEqual([-2, -2]);
    await engine.close();
    await twin.close();
  });

  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  /** The tiny model's engine in a worker thread: 2 slots, rank 16. */
  const smallThread = () =>
    EngineThread.start({
      modelDir,
      device: "cpu",
      maxContext: 64,
      slots: 2,
      maxRank: 16,
      maxAdaptersPerStep: 2,
    });

  it("answers the same from a worker thread as in the caller's thread", async () => {
    const direct = await engineFor(modelDir);
    await direct.writeAdapter(1, adapters[3]!);
    const expected = await runAlone(direct, prompt(4), 1, [9, 11]);
    await direct.close();
    const thread = await smallThread();
    try {
      // What the thread's engine says of itself comes across: the onnxruntime engine pads prefills.
      expect(thread.padsPrefills).toBe(true);
      await thread.writeAdapter(1, adapters[3]!);
      const [first] = await thread.prefill("t", prompt(4), 1);
      const second = (await thread.decode(new Map([["t", 9]]))).get("t")!;
      expect(maxDiff(first!, expected[0]!)).toBeLessThan(1e-6);
      expect(maxDiff(second, expected[1]!)).toBeLessThan(1e-6);
      // It parks as the engine does (the scheduler's preemption uses that when it is there).
      await thread.park!("t");
      await thread.resume!("t", 1);
      const third = (await thread.decode(new Map([["t", 11]]))).get("t")!;
      expect(maxDiff(third, expected[2]!)).toBeLessThan(1e-6);
      await expect(thread.prefill("u", [], 1)).rejects.toThrow(/empty prompt/);
    } finally {
      await thread.close();
    }
  });

  it("keeps a drawn row's whole logits beside a whole row returned by the same step, across the thread", async () => {
    // The step's rows share one buffer, which the thread hands over to its caller: the row kept for
    // logitsOf must be the engine's own, or the next call that returns it cannot cross (and the thread died).
    const thread = await smallThread();
    try {
      await thread.prefill("plain", prompt(4), 0);
      await thread.prefill("drawn", prompt(5), 0);
      const rows = await thread.decodePicking(
        new Map([
          ["plain", 9],
          ["drawn", 11],
        ]),
        new Map<string, DecodeChoice>([
          ["drawn", { kind: "candidates", temperature: 0.7, mayNeedRow: true }],
        ]),
      );
      const whole = rows.get("plain") as Float32Array;
      const kept = await thread.logitsOf("drawn");
      expect(kept.length).toBe(whole.length);
      expect(kept.some((x) => x !== 0)).toBe(true);
      // The thread goes on serving.
      const next = await thread.decode(
        new Map([
          ["plain", 3],
          ["drawn", 4],
        ]),
      );
      expect(next.get("plain")?.length).toBe(whole.length);
    } finally {
      await thread.close();
    }
    // An ended thread fails a call at once rather than leaving it waiting.
    await expect(thread.decode(new Map())).rejects.toThrow(/engine thread exited/);
    // Closed on purpose, it does not tell its owner the engine was lost.
    const told = await Promise.race([thread.ended.then(() => true), sleep(50).then(() => false)]);
    expect(told).toBe(false);
  });

  it("tells its owner when the thread ends on its own, and fails calls at once from then on", async () => {
    const thread = await smallThread();
    // As a crash would: the thread stops without close().
    await (thread as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    expect((await thread.ended).message).toMatch(/engine thread exited/);
    await expect(thread.prefill("late", prompt(3), 0)).rejects.toThrow(/engine thread exited/);
    await thread.close();
  });
});
