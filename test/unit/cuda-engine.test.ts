// The CUDA engine without a GPU: over the native code on the CPU emulator (npm run build:cuda -- --emulate;
// skipped where it is not built) it must give what the onnxruntime CPU engine gives for the same sequences,
// within fp16 tolerance — ragged prompts prefilled together in chunks, mixed-adapter decode, greedy tokens
// from the device, a BF16 Qwen2 model with biases and tied embeddings — and refuse the same misuse with the
// same errors; and it must say clearly when the addon or a GPU is missing.

import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chunkedPrefillCase, chunkedPrefillTrace } from "../../scripts/chunked-prefill-trace.ts";
import { wholeRows } from "../../scripts/cuda-check.ts";
import { writeRandomAdapter } from "../../scripts/random-adapter.ts";
import { initTinyModel, tinyConfigJson } from "../../scripts/tiny-model.ts";
import { type LoadedAdapter, loadPeftAdapter } from "../../worker/adapters/peft.ts";
import { createEngine } from "../../worker/engine/create-engine.ts";
import { CudaEngine, type CudaEngineOptions, cacheRowBytes } from "../../worker/engine/cuda/cuda-engine.ts";
import {
  CUDA_EMULATED_ADDON_PATH,
  type CudaAddon,
  CudaUnavailableError,
  type NativeStep,
} from "../../worker/engine/cuda/native.ts";
import { CANDIDATES, type DecodeCandidates } from "../../worker/engine/decode-row.ts";
import { float32ToBfloat16 } from "../../worker/engine/dtype.ts";
import { Engine } from "../../worker/engine/engine.ts";
import { type ModelConfig, parseModelConfig } from "../../worker/engine/model-config.ts";
import { Prng } from "../../worker/engine/prng.ts";
import { openWeights, writeSafetensors } from "../../worker/engine/safetensors.ts";
import { GREEDY } from "../../worker/engine/sampler.ts";
import { loadTokenizer } from "../../worker/engine/tokenizer.ts";
import { type Job, type Outcome, Scheduler, type SchedulerEngine } from "../../worker/scheduler.ts";
import { type AdapterVariant, writeAdapterVariants } from "../support/adapter-variants.ts";
import { expectChunkMisuseRefused } from "../support/chunked-prefill.ts";
import { interceptSteps } from "../support/intercepted-cuda-addon.ts";
import { spawnLuminet } from "../support/luminet-command.ts";
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

/** Adapters that differ in rank, targets, scaling and bias, so one batch mixes all of it. */
const VARIANTS: AdapterVariant[] = [
  { rank: 4 },
  { rank: 8, alpha: 16 },
  { rank: 16, alpha: 8, loraBias: true },
  { rank: 8, useRslora: true, alpha: 32 },
  { rank: 4, targetModules: ["q", "v"] as const },
  { rank: 8, targetModules: ["gate", "up", "down"] as const },
  { rank: 12, rankPattern: { "layers.1.self_attn.o_proj": 4 } },
  { rank: 6, targetModulesRegex: String.raw`model\.layers\.0\..*_proj` },
  { rank: 16, dtype: "BF16" as const },
];

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-cuda-engine-"));
  // F16 weights: the CPU engine widens them to fp32, the addon computes with them as they are.
  const tiny = initTinyModel(join(root, "model"), {
    shape: "tiny",
    adapters: 0,
    rank: 4,
    seed: 9,
    dtype: "F16",
  });
  modelDir = tiny.dir;
  model = tiny.config;
  adapters.push(...writeAdapterVariants(root, model, VARIANTS, 200));
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

const common = { maxContext: 64, slots: VARIANTS.length, maxRank: 16, maxAdaptersPerStep: 16 };

function cpuEngine(overrides: Partial<CudaEngineOptions> = {}): Promise<Engine> {
  return Engine.create({ ...common, modelDir, device: "cpu", threads: 1, ...overrides });
}

const hasEmulatedAddon = existsSync(CUDA_EMULATED_ADDON_PATH);

/** A CUDA engine over the emulated native addon, and every step it sent the addon. */
function cudaEngine(overrides: Partial<CudaEngineOptions> = {}) {
  const steps: NativeStep[] = [];
  const emulated = createRequire(import.meta.url)(CUDA_EMULATED_ADDON_PATH) as CudaAddon;
  const addon = interceptSteps(emulated, (step) => {
    steps.push(step);
    return step;
  });
  const engine = CudaEngine.create({ ...common, modelDir, device: "cuda", ...overrides }, addon);
  return { steps, engine };
}

function prompt(i: number): number[] {
  return Array.from({ length: 3 + i }, (_, t) => (17 * i + 31 * t + 1) % model.vocabSize);
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/** fp16 against fp32: every row within 1 % of the CPU rows' logit spread (as scripts/cuda-check.ts allows). */
function expectClose(got: Float32Array[], want: Float32Array[]): void {
  expect(got).toHaveLength(want.length);
  const spread = Math.max(...want.map((row) => Math.max(...row) - Math.min(...row)));
  for (const [i, row] of got.entries()) expect(maxDiff(row, want[i]!) / spread).toBeLessThan(1e-2);
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

async function errorOf(run: () => unknown): Promise<string> {
  try {
    await run();
  } catch (error) {
    return `${(error as Error).constructor.name}: ${(error as Error).message}`;
  }
  return "no error";
}

describe.skipIf(!hasEmulatedAddon)("the CUDA engine over the native code on the CPU emulator", () => {
  it("gives the CPU engine's logits for ragged prompts prefilled together in chunks and a mixed-adapter decode", async () => {
    const cpu = await cpuEngine();
    const { steps, engine: pending } = cudaEngine({ maxBatch: 12, stepTokens: 8 });
    const cuda = await pending;
    expect(cuda.formulation).toBe("cuda-sgmv");
    expect(cuda.spec.maxStepTokens).toBe(12);
    for (const [i, adapter] of adapters.entries()) {
      await cpu.writeAdapter(i + 1, adapter);
      await cuda.writeAdapter(i + 1, adapter);
    }
    await cuda.warmUp();
    // Ten prompts of 3..12 tokens, nine adapters and one base row, prefilled in one call on CUDA; the
    // odd ones want every token's logits (prompt logprobs), the others their last token's.
    const ids = Array.from({ length: 10 }, (_, i) => `s${i}`);
    const slotOf = (i: number) => (i === 9 ? 0 : i + 1);
    const allLogits = (i: number) => i % 2 === 1;
    const expected: Float32Array[] = [];
    const last: Float32Array[] = [];
    for (const [i, id] of ids.entries()) {
      const rows = await cpu.prefill(id, prompt(i), slotOf(i), allLogits(i));
      expected.push(...rows);
      last.push(rows.at(-1)!);
    }
    const actual = await cuda.prefillTogether(
      ids.map((id, i) => ({ id, tokens: prompt(i), slot: slotOf(i), allLogits: allLogits(i) })),
    );
    expect(actual).toHaveLength(5 + [1, 3, 5, 7, 9].reduce((n, i) => n + prompt(i).length, 0));
    expectClose(actual, expected);
    // The 75 prompt rows ran as steps of at most 12, some holding the end of one prompt and the start of
    // the next (after the warm-up step).
    const prefillSteps = steps.slice(1);
    expect(prefillSteps.map((s) => s.tokens.length)).toEqual([12, 12, 12, 12, 12, 12, 3]);
    expect(prefillSteps.some((s) => new Set(s.cacheRows).size > 1)).toBe(true);
    expect(ids.map((id) => cuda.sequenceLength(id))).toEqual(ids.map((_, i) => prompt(i).length));

    // Decode: the same teacher-forced tokens on both; then greedy on the device equals the CPU's argmax.
    let next = new Map(ids.map((id, i) => [id, argmax(last[i]!)]));
    for (let step = 0; step < 3; step++) {
      const want = await cpu.decode(next);
      const got = await cuda.decode(next);
      expect([...got.keys()]).toEqual([...next.keys()]);
      expectClose(
        ids.map((id) => got.get(id)!),
        ids.map((id) => want.get(id)!),
      );
      next = new Map(ids.map((id) => [id, argmax(want.get(id)!)]));
    }
    const want = await cpu.decode(next);
    const greedy = await cuda.decodeGreedy(next);
    expect([...greedy]).toEqual(ids.map((id) => [id, argmax(want.get(id)!)]));
    expect(cuda.sequenceLength("s3")).toBe(prompt(3).length + 4);

    // decodePicking: with every row greedy the device's picks come back and no logits cross; a row without a
    // choice (penalties) gets its whole logits, the same as decode's, and the rest still their picks; when
    // most rows have no choice, every row's logits come back in one copy.
    const argmaxChoice = { kind: "argmax" } as const;
    const picked = await cuda.decodePicking(greedy, new Map(ids.map((id) => [id, argmaxChoice])));
    expect(steps.at(-1)!.returnLogits).toBe(false);
    expect([...picked.values()].every((row) => typeof row === "number")).toBe(true);
    await cpu.decode(greedy); // the CPU engine takes the same step, to stay the reference
    const teacher = new Map(ids.map((id) => [id, picked.get(id) as number]));
    const wantMixed = await cpu.decode(teacher);
    const mixed = await cuda.decodePicking(teacher, new Map(ids.slice(1).map((id) => [id, argmaxChoice])));
    expect(steps.at(-1)!.returnLogits).toBe(false);
    expect(mixed.get(ids[0]!)).toBeInstanceOf(Float32Array);
    expectClose([mixed.get(ids[0]!) as Float32Array], [wantMixed.get(ids[0]!)!]);
    for (const id of ids.slice(1)) expect(mixed.get(id)).toBe(argmax(wantMixed.get(id)!));
    const next2 = new Map(ids.map((id) => [id, argmax(wantMixed.get(id)!)]));
    const wantMostly = await cpu.decode(next2);
    const mostlyWhole = await cuda.decodePicking(next2, new Map([[ids[0]!, argmaxChoice]]));
    expect(steps.at(-1)!.returnLogits).toBe(true);
    expect([...mostlyWhole.values()].every((row) => row instanceof Float32Array)).toBe(true);

    // Candidates: each row's largest logits, largest first, and its log-sum-exp at its temperature, computed
    // on the device; the whole row stays there for logitsOf.
    const after = new Map(ids.map((id) => [id, argmax(wantMostly.get(id)!)]));
    const sampled = { kind: "candidates", temperature: 0.7, mayNeedRow: true } as const;
    const drawn = await cuda.decodePicking(after, new Map(ids.map((id) => [id, sampled])));
    expect(steps.at(-1)!.returnLogits).toBe(false);
    for (const id of ids) {
      const c = drawn.get(id) as DecodeCandidates;
      const row = cuda.logitsOf(id);
      const order = [...row.keys()].sort((a, b) => row[b]! - row[a]! || a - b).slice(0, CANDIDATES);
      expect([...c.tokens]).toEqual(order);
      expect([...c.logits]).toEqual(order.map((t) => row[t]!));
      const max = row[order[0]!]!;
      const sum = row.reduce((acc, l) => acc + Math.exp((l - max) / 0.7), 0);
      expect(c.logSumExp).toBeCloseTo(max / 0.7 + Math.log(sum), 4);
    }

    // A released sequence frees its cache row for the next prompt, whose every token's logits match.
    cpu.release("s2");
    cuda.release("s2");
    expect(cuda.running).toBe(9);
    const whole = [...prompt(2), 5, 6, 7];
    const cpuAll = await cpu.prefill("again", whole, 4, true);
    const cudaAll = await cuda.prefill("again", whole, 4, true);
    expectClose(cudaAll, cpuAll);
    expect(steps.at(-1)!.cacheRows[0]).toBe(2);
    // The device holds only its last step's logits: after that prefill, no decode row is there any more.
    expect(() => cuda.logitsOf("s1")).toThrow(/was not in the last decode/);
    await cpu.close();
    await cuda.close();
  });

  it("prefills a long prompt in chunks while others decode, as the CPU engine does in one run", async () => {
    const c = chunkedPrefillCase(model.vocabSize);
    const cpu = await cpuEngine();
    const { steps, engine: pending } = cudaEngine({ maxBatch: 8, stepTokens: 8 });
    const cuda = await pending;
    for (const i of [0, 1, 2]) {
      await cpu.writeAdapter(i + 1, adapters[i]!);
      await cuda.writeAdapter(i + 1, adapters[i]!);
    }
    const whole = await chunkedPrefillTrace(cpu, c, false);
    const chunked = await chunkedPrefillTrace(cuda, c, true);
    expect([...chunked.keys()].sort()).toEqual([...whole.keys()].sort());
    for (const [label, rows] of chunked) expectClose(rows, whole.get(label)!);
    // The middle chunk's rows continued the long prompt's cache row at positions 9..15.
    const middle = steps.find((s) => s.positions[0] === 9)!;
    expect([...middle.positions]).toEqual([9, 10, 11, 12, 13, 14, 15]);
    await expectChunkMisuseRefused(cuda, c);
    await cpu.close();
    await cuda.close();
  });

  it("continues prompts from a copy of a released sequence's row that starts the same way, as the CPU engine computes them whole", async () => {
    const cpu = await cpuEngine();
    const rowBytes = cacheRowBytes(model, common.maxContext);
    // Two rows beyond maxBatch keep stored prefixes.
    const { engine: pending } = cudaEngine({ maxBatch: 3, stepTokens: 16, prefixCacheBytes: 2 * rowBytes });
    const cuda = await pending;
    expect(cuda.spec.cacheRows).toBe(5);
    for (const i of [0, 1]) {
      await cpu.writeAdapter(i + 1, adapters[i]!);
      await cuda.writeAdapter(i + 1, adapters[i]!);
    }
    const system = Array.from({ length: 40 }, (_, t) => (11 * t + 3) % model.vocabSize);
    const withTail = (seed: number) => [
      ...system,
      ...[0, 1, 2, 3, 4].map((t) => (seed + 7 * t) % model.vocabSize),
    ];
    let run = 0;
    // Prefill and two decode steps on both engines; the CUDA engine's rows close to the CPU's; then both
    // release it (the CUDA engine keeps its row as a stored prefix). Returns the tokens CUDA reused.
    const compare = async (tokens: number[], slot: number, prefixScope?: string) => {
      const id = `p${run++}`;
      const prompt = { id, tokens, slot, ...(prefixScope ? { prefixScope } : {}) };
      const got = [...(await cuda.prefillTogether([prompt]))];
      const want = [...(await cpu.prefillTogether([prompt]))];
      const reused = cuda.reusedPromptTokens([id])[0]!;
      for (const token of [5, 6]) {
        got.push((await cuda.decode(new Map([[id, token]]))).get(id)!);
        want.push((await cpu.decode(new Map([[id, token]]))).get(id)!);
      }
      expectClose(got, want);
      cuda.release(id);
      cpu.release(id);
      return reused;
    };
    expect(await compare(withTail(1), 1)).toBe(0);
    expect(cuda.prefixCacheStats()).toEqual({ entries: 1, bytes: rowBytes, reusedTokens: 0 });
    // Two prompts at once, each from its own copy of the stored row: 32 tokens, two whole blocks.
    const pair = [withTail(2), withTail(7)].map((tokens, i) => ({ id: `pair-${i}`, tokens, slot: 1 }));
    const got = await cuda.prefillTogether(pair);
    const want = await cpu.prefillTogether(pair);
    expectClose(got, want);
    expect(cuda.reusedPromptTokens(["pair-0", "pair-1"])).toEqual([32, 32]);
    for (const { id } of pair) {
      cuda.release(id);
      cpu.release(id);
    }
    expect(await compare(withTail(2), 1)).toBe(32);
    expect(await compare(withTail(3), 1, "another-org")).toBe(0);
    expect(await compare(withTail(4), 2)).toBe(0);
    // Three stored prompts for two rows: the least recently used left; the other two still serve.
    expect(cuda.prefixCacheStats()!.entries).toBe(2);
    expect(await compare(withTail(5), 1)).toBe(0);
    expect(await compare(withTail(6), 2)).toBe(32);
    // The stored prefixes' rows are beyond maxBatch: maxBatch new sequences still find rows, one more does not.
    const full = [0, 1, 2].map((i) => ({ id: `f${i}`, tokens: [100 + i, 101, 102], slot: 0 }));
    await cuda.prefillTogether(full);
    await expect(cuda.prefillTogether([{ id: "more", tokens: [1, 2, 3], slot: 0 }])).rejects.toThrow(
      "no free cache row for 1 more sequences: 3 of 3 are running (maxBatch)",
    );
    expect(cuda.prefixCacheStats()!.entries).toBe(2);
    for (const { id } of full) cuda.release(id);
    expect(cuda.prefixCacheStats()!.reusedTokens).toBe(128);
    await cpu.close();
    await cuda.close();
  });

  it("files a released sequence's decoded tokens with its prompt, so a prompt continuing the conversation reuses both", async () => {
    const cpu = await cpuEngine();
    const rowBytes = cacheRowBytes(model, common.maxContext);
    const cuda = await cudaEngine({ maxBatch: 2, stepTokens: 16, prefixCacheBytes: rowBytes }).engine;
    await cpu.writeAdapter(1, adapters[0]!);
    await cuda.writeAdapter(1, adapters[0]!);
    const first = Array.from({ length: 20 }, (_, t) => (13 * t + 5) % model.vocabSize);
    const answer = Array.from({ length: 30 }, (_, t) => (29 * t + 7) % model.vocabSize);
    await cuda.prefillTogether([{ id: "turn-1", tokens: first, slot: 1 }]);
    for (const token of answer) await cuda.decode(new Map([["turn-1", token]]));
    // 50 tokens in its row: kept as a prefix of three whole blocks (the prompt alone held one).
    cuda.release("turn-1");
    const next = [{ id: "turn-2", tokens: [...first, ...answer, 3, 4, 5, 6], slot: 1 }];
    const got = await cuda.prefillTogether(next);
    const want = await cpu.prefillTogether(next);
    expect(cuda.reusedPromptTokens(["turn-2"])).toEqual([48]);
    expectClose(got, want);
    await cpu.close();
    await cuda.close();
  });

  it("parks a preempted batch line in a cache row beyond maxBatch, or prefills it again where none is left", async () => {
    const rowBytes = cacheRowBytes(model, common.maxContext);
    const tokenizer = loadTokenizer(modelDir);
    const slots = { prefetch() {}, acquire: async () => 1, release() {} };
    const line = (id: string, seed: number): Job => ({
      id,
      org: "org",
      adapter: { name: "org/a", blob_key: "a", sha256: adapters[0]!.sha256, rank: 16 },
      promptTokens: Array.from({ length: 20 }, (_, t) => (seed + 7 * t) % model.vocabSize),
      sampling: GREEDY,
      limits: { maxTokens: 24, stopTokenIds: [] },
      batch: true,
    });
    /** A scheduler over a CUDA engine of two batch rows and `spareRows` more, and the ids it prefills. */
    const start = async (spareRows: number) => {
      const cuda = await cudaEngine({ maxBatch: 2, prefixCacheBytes: spareRows * rowBytes }).engine;
      await cuda.writeAdapter(1, adapters[0]!);
      const prefilled: string[] = [];
      const prefillTogether = cuda.prefillTogether.bind(cuda);
      cuda.prefillTogether = async (prompts) => {
        prefilled.push(...prompts.map((p) => p.id));
        return prefillTogether(prompts);
      };
      const options = { maxBatch: 2, maxContext: 64, stepTokenBudget: 256, maxAdaptersPerStep: 4 };
      return { cuda, prefilled, scheduler: new Scheduler(cuda, tokenizer, slots, options) };
    };
    const tokensOf = (o: Outcome) => (o.kind === "done" ? o.tokens.map((t) => t.token) : []);
    const alone = await start(0);
    const expected = await Promise.all(["a", "b"].map((id, i) => alone.scheduler.submit(line(id, i + 3))));
    await alone.cuda.close();

    for (const spareRows of [1, 0]) {
      const { cuda, scheduler, prefilled } = await start(spareRows);
      let live: Promise<Outcome> | undefined;
      const outcomes = await Promise.all(
        ["a", "b"].map((id, i) =>
          scheduler.submit({
            ...line(id, i + 3),
            onToken: () => {
              live ??= scheduler.submit({
                ...line("live", 9),
                batch: false,
                limits: { maxTokens: 3, stopTokenIds: [] },
              });
            },
          }),
        ),
      );
      expect(tokensOf((await live)!)).toHaveLength(3);
      // Parked or prefilled again, each line generates what it would have without the pause.
      expect(outcomes.map(tokensOf)).toEqual(expected.map(tokensOf));
      if (spareRows > 0) {
        // The preempted line rejoined from its row: no prompt was prefilled twice.
        expect(prefilled.sort()).toEqual(["a", "b", "live"]);
      } else {
        expect(prefilled).toHaveLength(4);
        expect(new Set(prefilled)).toEqual(new Set(["a", "b", "live"]));
      }
      expect(cuda.running).toBe(0);
      await cuda.close();
    }
  });

  it("parks only into rows beyond maxBatch, taking them from stored prefixes, and gives them back", async () => {
    const rowBytes = cacheRowBytes(model, common.maxContext);
    const cuda = await cudaEngine({ maxBatch: 2, prefixCacheBytes: 1 * rowBytes }).engine;
    const cpu = await cpuEngine({ maxBatch: 2 });
    // A released row filed as a stored prefix: the one row beyond maxBatch.
    await cuda.prefill("c", prompt(30), 0);
    cuda.release("c");
    expect(cuda.prefixCacheStats()?.entries).toBe(1);
    for (const engine of [cuda, cpu]) {
      await engine.prefillTogether([
        { id: "a", tokens: prompt(20), slot: 0 },
        { id: "b", tokens: prompt(4), slot: 0 },
      ]);
    }
    await cuda.park("a");
    await cpu.park("a");
    expect(cuda.prefixCacheStats()?.entries).toBe(0);
    await expect(cuda.park("b")).rejects.toThrow(
      /no cache row to park sequence b in: 1 rows beyond maxBatch/,
    );
    await expect(cuda.prefill("a", [1], 0)).rejects.toThrow(/sequence a is parked: resume it/);
    await expect(
      cuda.decode(
        new Map([
          ["a", 1],
          ["b", 2],
        ]),
      ),
    ).rejects.toThrow(/sequence a is parked: resume it/);
    // The batch has a row for another sequence beside b while a is parked.
    for (const engine of [cuda, cpu]) {
      await engine.prefill("e", prompt(2), 0);
      await engine.decode(
        new Map([
          ["b", 7],
          ["e", 8],
        ]),
      );
      engine.release("e");
      engine.resume("a", 0);
    }
    // a goes on from its row as the CPU engine's parked copy does.
    const got = await cuda.decode(
      new Map([
        ["a", 3],
        ["b", 4],
      ]),
    );
    const want = await cpu.decode(
      new Map([
        ["a", 3],
        ["b", 4],
      ]),
    );
    expectClose([got.get("a")!, got.get("b")!], [want.get("a")!, want.get("b")!]);
    cuda.release("a");
    cuda.release("b");
    expect(cuda.running).toBe(0);
    await cuda.close();
    await cpu.close();
  });

  it("refuses the same misuse as the CPU engine with the same errors", async () => {
    const cpu = await cpuEngine({ slots: 2, maxRank: 8 });
    const cuda = await cudaEngine({ slots: 2, maxRank: 8 }).engine;
    const misuse: ((e: Engine | CudaEngine) => unknown)[] = [
      (e) => e.prefill("a", [], 0),
      (e) => e.prefill("a", new Array(64).fill(1), 0),
      (e) => e.prefill("a", [1, 2], 3),
      (e) => e.writeAdapter(0, adapters[0]!),
      (e) => e.writeAdapter(3, adapters[0]!),
      (e) => e.writeAdapter(1, adapters[2]!),
      (e) => e.clearSlot(0),
      (e) => e.switchAdapter("nobody", 1),
      (e) => e.prefill("a", [1, 2], 0),
      (e) => e.prefill("a", [1, 2], 0),
      (e) => e.prefill("b", [1, 2, 3], 0),
      (e) => e.decode(new Map([["a", 1]])),
      (e) =>
        e.decode(
          new Map([
            ["a", 1],
            ["c", 2],
          ]),
        ),
      (e) => e.switchAdapter("a", 5),
    ];
    for (const run of misuse) expect(await errorOf(() => run(cuda))).toBe(await errorOf(() => run(cpu)));
    expect(await errorOf(() => cpu.prefill("a", [1], 0))).toMatch(/already running/);
    await cpu.close();

    // What only the CUDA engine can be asked: tokens outside the vocabulary, more sequences than cache rows.
    await expect(cuda.prefill("z", [1, model.vocabSize], 0)).rejects.toThrow(/outside the vocabulary of 512/);
    await expect(
      cuda.decode(
        new Map([
          ["a", -1],
          ["b", 1],
        ]),
      ),
    ).rejects.toThrow(/token -1/);
    const small = await cudaEngine({ maxBatch: 2 }).engine;
    await small.prefillTogether([
      { id: "x", tokens: [1], slot: 0 },
      { id: "y", tokens: [2, 3], slot: 0 },
    ]);
    await expect(small.prefill("z", [4], 0)).rejects.toThrow(/no free cache row .*2 of 2 are running/);
    expect(small.running).toBe(2);
    small.release("x");
    // Overlapping calls would plan from stale lengths: the second is refused and leaves nothing behind.
    const first = small.decode(new Map([["y", 5]]));
    await expect(small.prefill("z", [4], 0)).rejects.toThrow(/a step is already running/);
    await first;
    expect(small.sequenceLength("y")).toBe(3);
    expect(small.running).toBe(1);
    await small.prefill("z", [4], 0);
    await small.close();
    await cuda.close();
  });

  it("draws through the device's picks and candidates what it draws from whole rows, fetching the rows they cannot settle", async () => {
    const tokenizer = loadTokenizer(modelDir);
    const { steps, engine: pending } = cudaEngine({ maxBatch: 12 });
    const sparse = await pending;
    const whole = await cudaEngine({ maxBatch: 12 }).engine;
    for (const engine of [sparse, whole]) await engine.writeAdapter(1, adapters[0]!);
    let fetched = 0;
    const logitsOf = sparse.logitsOf.bind(sparse);
    sparse.logitsOf = (id) => {
      fetched++;
      return logitsOf(id);
    };
    // The same engine answering with whole rows only: the host samples every row from its logits.
    const hostSampled = wholeRows(whole);
    const sampling = SAMPLING_MIX;
    const run = (engine: SchedulerEngine, params = sampling) =>
      generateEach(engine, tokenizer, params, prompt);
    const [viaCandidates, viaRows] = [await run(sparse), await run(hostSampled)];
    expectSameDraws(viaCandidates, viaRows);
    expect(steps.some((step) => (step.candidates ?? 0) > 0)).toBe(true);
    // Decode steps of all the rows, the one without a choice among them, copied no whole rows (that one's
    // came alone), and took the penalized rows' penalties to the device.
    const allRows = steps.filter(
      (step) => step.tokens.length === sampling.length && (step.candidates ?? 0) > 0,
    );
    expect(allRows.length).toBeGreaterThan(0);
    expect(allRows.every((step) => !step.returnLogits)).toBe(true);
    expect(allRows.every((step) => new Set(step.penalties?.rows).size === PENALIZED.length)).toBe(true);
    // The penalties mattered: without them each of those sequences generates other tokens.
    const plain = await run(hostSampled, UNPENALIZED);
    expect(PENALIZED.every((i) => plain[i]!.tokenIds.join() !== viaRows[i]!.tokenIds.join())).toBe(true);
    // top_p over the tiny model's flat logits needs more than the candidates: its rows were fetched.
    expect(fetched).toBeGreaterThan(0);
    await sparse.close();
    await whole.close();
  });

  it("runs a BF16 Qwen2 model with q/k/v biases and tied embeddings as the CPU engine does", async () => {
    // The tiny model as Qwen2: lm_head dropped (tied), random q/k/v biases added, everything in BF16.
    const dir = join(root, "qwen2-bf16");
    mkdirSync(dir, { recursive: true });
    const { attention_bias: _a, mlp_bias: _m, ...rest } = tinyConfigJson("tiny", 2, "BF16");
    const configJson = {
      ...rest,
      architectures: ["Qwen2ForCausalLM"],
      model_type: "qwen2",
      tie_word_embeddings: true,
    };
    writeFileSync(join(dir, "config.json"), JSON.stringify(configJson));
    const qwen = parseModelConfig(configJson);
    const base = openWeights(modelDir);
    const bf16 = (data: Float32Array) => float32ToBfloat16(data);
    const tensors = base
      .names()
      .filter((name) => name !== "lm_head.weight")
      .map((name) => ({
        name,
        dtype: "BF16" as const,
        shape: base.info(name).shape,
        data: bf16(base.readFloat32(name)),
      }));
    const rng = new Prng(17);
    for (let layer = 0; layer < qwen.numLayers; layer++) {
      for (const [kind, width] of [
        ["q", 64],
        ["k", 32],
        ["v", 32],
      ] as const) {
        tensors.push({
          name: `model.layers.${layer}.self_attn.${kind}_proj.bias`,
          dtype: "BF16",
          shape: [width],
          data: bf16(Float32Array.from({ length: width }, () => rng.nextNormal() * 0.5)),
        });
      }
    }
    writeSafetensors(join(dir, "model.safetensors"), tensors);
    const adapterDir = join(root, "qwen2-adapter");
    writeRandomAdapter(adapterDir, qwen, { rank: 4, alpha: 8, seed: 5, loraBias: true });
    const adapter = loadPeftAdapter(adapterDir, qwen, { maxRank: 16 });

    const options = { ...common, modelDir: dir, slots: 1 };
    const cpu = await Engine.create({ ...options, device: "cpu", threads: 1 });
    const cuda = await cudaEngine(options).engine;
    expect(cuda.spec).toMatchObject({ qkvBias: true, tieWordEmbeddings: true });
    for (const engine of [cpu, cuda]) await engine.writeAdapter(1, adapter);
    for (const slot of [0, 1]) {
      const id = `q${slot}`;
      expectClose(
        await cuda.prefill(id, prompt(5), slot, true),
        await cpu.prefill(id, prompt(5), slot, true),
      );
      const next = new Map([[id, 7]]);
      expectClose([(await cuda.decode(next)).get(id)!], [(await cpu.decode(next)).get(id)!]);
      cpu.release(id);
      cuda.release(id);
    }
    await cpu.close();
    await cuda.close();
  });
  it("runs a Qwen3 model (per-head q/k norms, attention wider than hidden) as the CPU engine does", async () => {
    const qwen3 = initTinyModel(join(root, "qwen3"), {
      shape: "tiny",
      architecture: "qwen3",
      adapters: 1,
      rank: 8,
      seed: 13,
      dtype: "F16",
    });
    const adapter = loadPeftAdapter(qwen3.adapterDirs[0]!, qwen3.config, { maxRank: 16 });
    const options = { ...common, modelDir: qwen3.dir, slots: 1 };
    const cpu = await Engine.create({ ...options, device: "cpu", threads: 1 });
    const cuda = await cudaEngine(options).engine;
    expect(cuda.spec).toMatchObject({ qkNorm: true, headDim: 32, hidden: 64, heads: 4 });
    for (const engine of [cpu, cuda]) await engine.writeAdapter(1, adapter);
    // A base row and an adapter row, prefilled, then decoding together.
    for (const slot of [0, 1]) {
      expectClose(
        await cuda.prefill(`q${slot}`, prompt(4 + slot), slot, true),
        await cpu.prefill(`q${slot}`, prompt(4 + slot), slot, true),
      );
    }
    for (const token of [7, 8]) {
      const next = new Map([
        ["q0", token],
        ["q1", token + 100],
      ]);
      const [viaCuda, viaCpu] = [await cuda.decode(next), await cpu.decode(next)];
      for (const id of ["q0", "q1"]) expectClose([viaCuda.get(id)!], [viaCpu.get(id)!]);
    }
    await cpu.close();
    await cuda.close();
  });

  it("runs YaRN rope (frequencies ramped, cos and sin scaled) as the CPU engine does", async () => {
    const dir = join(root, "yarn");
    mkdirSync(dir, { recursive: true });
    for (const file of [
      "model.safetensors",
      "tokenizer.json",
      "tokenizer_config.json",
      "generation_config.json",
    ]) {
      copyFileSync(join(modelDir, file), join(dir, file));
    }
    const config = JSON.parse(readFileSync(join(modelDir, "config.json"), "utf8")) as Record<string, unknown>;
    const yarn = { rope_type: "yarn", factor: 4, beta_fast: 8, beta_slow: 1 };
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, rope_scaling: yarn }));
    const options = { ...common, modelDir: dir, slots: 1 };
    const cpu = await Engine.create({ ...options, device: "cpu", threads: 1 });
    const cuda = await cudaEngine(options).engine;
    expect(cuda.spec.ropeScale).toBeCloseTo(0.1 * Math.log(4) + 1, 6);
    expectClose(await cuda.prefill("y", prompt(9), 0, true), await cpu.prefill("y", prompt(9), 0, true));
    const next = new Map([["y", 7]]);
    expectClose([(await cuda.decode(next)).get("y")!], [(await cpu.decode(next)).get("y")!]);
    await cpu.close();
    await cuda.close();
  });

  it("times a decode step's phases on the device without changing what the step computes", async () => {
    const ids = Array.from({ length: 4 }, (_, i) => `p${i}`);
    // Two adapter rows (one adapter twice) and two base rows.
    const slots = [1, 0, 1, 0];
    const started = async (cudaGraphs: boolean) => {
      const { engine: pending } = cudaEngine({ cudaGraphs });
      const engine = await pending;
      await engine.writeAdapter(1, adapters[2]!);
      const first = await engine.prefillTogether(
        ids.map((id, i) => ({ id, tokens: prompt(i), slot: slots[i]! })),
      );
      return { engine, next: new Map(ids.map((id, i) => [id, argmax(first[i]!)])) };
    };
    const plain = await started(true);
    const want = await plain.engine.decodeGreedy(plain.next);
    const wantAfter = await plain.engine.decodeGreedy(want);

    for (const cudaGraphs of [true, false]) {
      const profiled = await started(cudaGraphs);
      const startedAt = performance.now();
      const { next, phases } = await profiled.engine.profileDecode(profiled.next);
      const wallMs = performance.now() - startedAt;
      expect(next).toEqual(want);
      // A graph replayed twice wrote the same cache entries: the next step is unchanged too.
      expect(await profiled.engine.decodeGreedy(next)).toEqual(wantAfter);
      expect(Object.keys(phases)).toEqual([
        "embed",
        "norms",
        "qkv gemm",
        "lora",
        "rotary + cache write",
        "attention",
        "o gemm",
        "gate_up gemm",
        "silu * up",
        "down gemm",
        "lm_head gemm",
        "argmax",
      ]);
      for (const ms of Object.values(phases)) expect(ms).toBeGreaterThanOrEqual(0);
      // Real work takes measurable time, and the phases of one forward add up to less than the call took.
      expect(phases.attention).toBeGreaterThan(0);
      expect(phases.lora).toBeGreaterThan(0);
      const total = Object.values(phases).reduce((a, b) => a + b, 0);
      expect(total).toBeLessThan(wallMs);
      await profiled.engine.close();
    }

    // A step without adapter rows has no LoRA phase.
    for (const id of ids) plain.engine.switchAdapter(id, 0);
    const { phases } = await plain.engine.profileDecode(wantAfter);
    expect(phases).not.toHaveProperty("lora");
    expect(phases).toHaveProperty("qkv gemm");
    await plain.engine.close();
  });
});

describe("the CUDA engine without its addon or a GPU", () => {
  it("says what is missing when the addon is not built or sees no GPU", async () => {
    const options = { ...common, modelDir, device: "cuda" as const };
    const saved = process.env.LUMINET_CUDA_ADDON;
    process.env.LUMINET_CUDA_ADDON = join(root, "missing", "luminet-cuda.node");
    try {
      await expect(createEngine(options)).rejects.toThrow(CudaUnavailableError);
      await expect(createEngine(options)).rejects.toThrow(/not built .*npm run build:cuda/);
    } finally {
      if (saved === undefined) delete process.env.LUMINET_CUDA_ADDON;
      else process.env.LUMINET_CUDA_ADDON = saved;
    }
    // The addon's answer on a host whose driver sees no GPU.
    const noDevice: CudaAddon = {
      deviceCount: () => 0,
      CudaModel: class {
        constructor() {
          throw new Error("a model was built with no device");
        }
      } as unknown as CudaAddon["CudaModel"],
    };
    await expect(CudaEngine.create(options, noDevice)).rejects.toThrow(/no CUDA device is visible/);
    await expect(Engine.create(options)).rejects.toThrow(/native CUDA engine.*createEngine/);
    // 4-bit weights are the CPU engine's: refused before anything is built.
    await expect(CudaEngine.create({ ...options, quantize: "q4" }, noDevice)).rejects.toThrow(
      /--quantize q4 runs on --device cpu only/,
    );
  });

  it("makes `luminet generate --device cuda` and `luminet bench engine --device cuda` fail with that error", async () => {
    const batch = join(root, "batch.jsonl");
    writeFileSync(batch, `${JSON.stringify({ id: 1, prompt_ids: [1, 2], adapter: null, max_tokens: 2 })}\n`);
    const env = { LUMINET_CUDA_ADDON: join(root, "missing", "luminet-cuda.node") };
    const [generate, bench] = await Promise.all([
      spawnLuminet(["generate", "--model", modelDir, "--batch", batch, "--device", "cuda"], env),
      spawnLuminet(["bench", "engine", "--device", "cuda", "--model", modelDir], env),
    ]);
    for (const run of [generate, bench]) {
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/the CUDA backend is not built .*npm run build:cuda/);
    }
    expect(generate.stdout).toBe("");
  }, 60_000);
});
