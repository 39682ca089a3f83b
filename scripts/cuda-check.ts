// The native CUDA engine against the CPU engine, run on the GPU machine beside the benchmark (issue #9):
// a tiny fp16 model with eight adapters of mixed ranks and targets and ten ragged prompts (some longer
// than a step, so they prefill in chunks). Checks, each recorded and asserted:
//   prefill_logits     last-token prefill logits within fp16 tolerance of the CPU engine's (fp32)
//   decode_logits      the batch's decode logits against the CPU engine fed the same tokens
//   greedy_vs_cpu      the device's greedy tokens equal the CPU's wherever the CPU's top two differ by
//                      more than the tolerance (closer calls may flip in fp16 and are only counted)
//   greedy_alone_vs_batch  each sequence's greedy tokens alone equal those inside the mixed batch
//   batch_vs_alone_logits  its decode logits inside the batch equal those alone (within tolerance)
//   device_argmax      decodeGreedy's device argmax equals the argmax of the logits decode returns
//   cuda_graphs        the same greedy tokens with CUDA graphs on and off
//   chunked_prefill    a long prompt sent in three chunks while others decode (scripts/chunked-prefill-trace.ts):
//                      every logit row within tolerance of the CPU engine running it whole
//   prefix_cache       a prompt that starts like a released one continues that sequence's stored row:
//                      32 tokens reused, its logits within tolerance of the CPU engine's for the whole prompt
//   device_sampling    through the scheduler, sequences sampled from the device's picks and candidates
//                      (penalties applied there) draw the tokens that sampling their whole rows on the
//                      host draws: greedy, top-k, top-p, logprobs, presence/frequency/repetition penalties
// Tolerances are relative to the logit spread (largest minus smallest logit of the CPU's rows).
//   LUMINET_CUDA_ADDON=<addon> node cuda-check.mjs --out DIR   (writes DIR/cuda-check.json; exit 1 on failure)
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { type LoadedAdapter, loadPeftAdapter } from "../worker/adapters/peft.ts";
import type { ServingEngine } from "../worker/engine/create-engine.ts";
import { CudaEngine, cacheRowBytes } from "../worker/engine/cuda/cuda-engine.ts";
import type { CudaAddon } from "../worker/engine/cuda/native.ts";
import { Engine } from "../worker/engine/engine.ts";
import { GREEDY, type SamplingParams } from "../worker/engine/sampler.ts";
import { loadTokenizer } from "../worker/engine/tokenizer.ts";
import type { SchedulerEngine } from "../worker/scheduler.ts";
import { chunkedPrefillCase, chunkedPrefillTrace } from "./chunked-prefill-trace.ts";
import { writeRandomAdapter } from "./random-adapter.ts";
import { SlotGeneration } from "./slot-generation.ts";
import { initTinyModel } from "./tiny-model.ts";

const SEQUENCES = 10;
const STEPS = 8;
/** Cache rows and rows per step: prompts of up to 41 tokens prefill in chunks of 16. */
const STEP_ROWS = 16;
/** Largest logit difference allowed, as a fraction of the logit spread (fp16 against fp32, two layers). */
const TOLERANCE = 1e-2;

/** Eight adapters of mixed ranks, targets and scalings; with the base rows, nine kinds of row per batch. */
const ADAPTERS = [
  { rank: 4 },
  { rank: 8, alpha: 16 },
  { rank: 16, alpha: 8, loraBias: true },
  { rank: 8, useRslora: true, alpha: 32 },
  { rank: 4, targetModules: ["q", "v"] },
  { rank: 8, targetModules: ["gate", "up", "down"] },
  { rank: 12, rankPattern: { "layers.1.self_attn.o_proj": 4 } },
  { rank: 16, dtype: "BF16" },
] as const;

export interface CheckResult {
  pass: boolean;
  [detail: string]: unknown;
}

export interface CudaCheckReport {
  device: string;
  model: string;
  pass: boolean;
  checks: Record<string, CheckResult>;
  memory: unknown;
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** Top logit minus the runner-up. */
function margin(row: Float32Array): number {
  const best = argmax(row);
  let second = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < row.length; i++) if (i !== best) second = Math.max(second, row[i]!);
  return row[best]! - second;
}

/** Largest difference between rows and their references, and the references' logit spread. */
function compare(rows: Float32Array[], references: Float32Array[]) {
  let maxAbs = 0;
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (const [r, row] of rows.entries()) {
    const ref = references[r]!;
    for (let v = 0; v < row.length; v++) {
      maxAbs = Math.max(maxAbs, Math.abs(row[v]! - ref[v]!));
      lo = Math.min(lo, ref[v]!);
      hi = Math.max(hi, ref[v]!);
    }
  }
  const spread = hi - lo;
  const relative = maxAbs / spread;
  return {
    pass: Number.isFinite(relative) && relative <= TOLERANCE,
    max_abs_diff: maxAbs,
    spread,
    relative,
    tolerance: TOLERANCE,
  };
}

/** compare, failing outright where the rows and their references differ in number. */
function sameRowCount(rows: Float32Array[], references: Float32Array[]): CheckResult {
  if (rows.length !== references.length) {
    return { pass: false, rows: rows.length, references: references.length };
  }
  return compare(rows, references);
}

interface Trace {
  /** [sequence][k] logits of the k-th next token (k = 0: the prefill's last token); absent for device greedy. */
  logits: Float32Array[][];
  /** [sequence][k] the k-th next token: the greedy pick, or the fed one when teacher-forced. */
  tokens: number[][];
}

/**
 * Prefills the sequences (together, or each in a batch of its own when `alone`) and decodes STEPS steps,
 * feeding each step the previous token: greedy on the host from the logits, greedy on the device
 * (decodeGreedy, no logits), or `feed`'s tokens.
 */
async function trace(
  engine: Engine | CudaEngine,
  prompts: number[][],
  slots: number[],
  how: { alone?: boolean; deviceGreedy?: boolean; feed?: number[][] },
): Promise<Trace> {
  const ids = prompts.map((_, i) => `s${i}`);
  const groups = how.alone ? ids.map((_, i) => [i]) : [ids.map((_, i) => i)];
  const out: Trace = { logits: prompts.map(() => []), tokens: prompts.map(() => []) };
  const next = new Map<string, number>();
  const take = (i: number, step: number, row: Float32Array | null, picked?: number) => {
    if (row) out.logits[i]!.push(row.slice());
    const token = how.feed ? how.feed[i]![step]! : (picked ?? argmax(row!));
    out.tokens[i]!.push(token);
    next.set(ids[i]!, token);
  };
  for (const group of groups) {
    next.clear();
    const requests = group.map((i) => ({ id: ids[i]!, tokens: prompts[i]!, slot: slots[i]! }));
    const first = await engine.prefillTogether(requests);
    for (const [g, i] of group.entries()) take(i, 0, first[g]!);
    for (let step = 1; step <= STEPS; step++) {
      if (how.deviceGreedy) {
        if (!(engine instanceof CudaEngine)) throw new Error("device greedy needs the CUDA engine");
        const picked = await engine.decodeGreedy(next);
        for (const i of group) take(i, step, null, picked.get(ids[i]!)!);
      } else {
        const rows = await engine.decode(next);
        for (const i of group) take(i, step, rows.get(ids[i]!)!);
      }
    }
    for (const i of group) engine.release(ids[i]!);
  }
  return out;
}

function sameTokens(a: number[][], b: number[][]) {
  const same = a.filter((tokens, i) => tokens.join() === b[i]!.join()).length;
  return { pass: same === a.length, same: `${same}/${a.length}`, steps: STEPS };
}

/** Runs every check; `addon` defaults to the built addon (tests pass the CPU-emulated one). */
export async function runCudaCheck(addon?: CudaAddon): Promise<CudaCheckReport> {
  const root = mkdtempSync(join(tmpdir(), "luminet-cuda-check-"));
  try {
    const tiny = initTinyModel(join(root, "model"), {
      shape: "tiny",
      adapters: 0,
      rank: 4,
      seed: 3,
      dtype: "F16",
    });
    const adapters: LoadedAdapter[] = ADAPTERS.map((variant, i) => {
      const dir = join(root, `adapter-${i}`);
      writeRandomAdapter(dir, tiny.config, {
        seed: 40 + i,
        ...variant,
        targetModules: "targetModules" in variant ? [...variant.targetModules] : undefined,
      } as Parameters<typeof writeRandomAdapter>[2]);
      return loadPeftAdapter(dir, tiny.config, { maxRank: 16 });
    });
    const options = {
      modelDir: tiny.dir,
      maxContext: 128,
      slots: ADAPTERS.length,
      maxRank: 16,
      maxAdaptersPerStep: ADAPTERS.length,
      maxBatch: STEP_ROWS,
      stepTokens: STEP_ROWS,
    };
    const prompts = Array.from({ length: SEQUENCES }, (_, i) =>
      Array.from({ length: 5 + 4 * i }, (_, t) => (13 * i + 7 * t + 2) % tiny.config.vocabSize),
    );
    // Slots 0..8 then 0 again: eight distinct adapters and two base rows in every batch step.
    const slots = prompts.map((_, i) => i % (ADAPTERS.length + 1));

    const cuda = await CudaEngine.create({ ...options, device: "cuda" }, addon);
    const device = cuda.deviceName();
    for (const [i, adapter] of adapters.entries()) await cuda.writeAdapter(i + 1, adapter);
    await cuda.warmUp();
    const batch = await trace(cuda, prompts, slots, {});
    const batchGreedy = await trace(cuda, prompts, slots, { deviceGreedy: true });
    const alone = await trace(cuda, prompts, slots, { alone: true });
    const chunkCase = chunkedPrefillCase(tiny.config.vocabSize);
    const chunked = await chunkedPrefillTrace(cuda, chunkCase, true);
    const memory = cuda.memory();
    await cuda.close();

    const noGraphs = await CudaEngine.create({ ...options, device: "cuda", cudaGraphs: false }, addon);
    for (const [i, adapter] of adapters.entries()) await noGraphs.writeAdapter(i + 1, adapter);
    const withoutGraphs = await trace(noGraphs, prompts, slots, { deviceGreedy: true });
    const sampling = await deviceSampling(noGraphs, tiny.dir, prompts, slots);
    await noGraphs.close();

    // Two prompts sharing a 40-token start, one after the other, the second from the first's stored row.
    const rowBytes = cacheRowBytes(tiny.config, options.maxContext);
    const cached = await CudaEngine.create({ ...options, device: "cuda", prefixCacheBytes: rowBytes }, addon);
    await cached.writeAdapter(1, adapters[0]!);
    const shared = prompts[9]!.slice(0, 40);
    const sharing = [
      [...shared, 3, 4, 5],
      [...shared, 6, 7],
    ];
    const fromStoredRow: Float32Array[] = [];
    let reused = 0;
    for (const [i, tokens] of sharing.entries()) {
      fromStoredRow.push(...(await cached.prefill(`shared-${i}`, tokens, 1)));
      reused += cached.reusedPromptTokens([`shared-${i}`])[0]!;
      cached.release(`shared-${i}`);
    }
    await cached.close();

    // The CPU engine decodes the batch fed the CUDA batch's tokens, so every step compares like for like.
    const cpu = await Engine.create({ ...options, device: "cpu", threads: 1 });
    for (const [i, adapter] of adapters.entries()) await cpu.writeAdapter(i + 1, adapter);
    const cpuBatch = await trace(cpu, prompts, slots, { feed: batch.tokens });
    const whole = await chunkedPrefillTrace(cpu, chunkCase, false);
    const sharingWhole: Float32Array[] = [];
    for (const [i, tokens] of sharing.entries()) {
      sharingWhole.push(...(await cpu.prefill(`shared-${i}`, tokens, 1)));
      cpu.release(`shared-${i}`);
    }
    await cpu.close();
    const labels = [...whole.keys()].sort();

    const firstRows = (t: Trace) => t.logits.map((rows) => rows[0]!);
    const decodeRows = (t: Trace) => t.logits.flatMap((rows) => rows.slice(1));
    const prefill = compare(firstRows(batch), firstRows(cpuBatch));
    const prefixRows = sameRowCount(fromStoredRow, sharingWhole);
    const decode = compare(decodeRows(batch), decodeRows(cpuBatch));
    let agree = 0;
    let closeCalls = 0;
    const decisiveMisses: string[] = [];
    for (const [i, rows] of batch.logits.entries()) {
      for (const [step, row] of rows.entries()) {
        const ref = cpuBatch.logits[i]![step]!;
        if (argmax(row) === argmax(ref)) agree++;
        else if (margin(ref) <= TOLERANCE * prefill.spread) closeCalls++;
        else decisiveMisses.push(`s${i} step ${step}`);
      }
    }
    const picks = SEQUENCES * (STEPS + 1);
    const checks: Record<string, CheckResult> = {
      prefill_logits: prefill,
      decode_logits: decode,
      greedy_vs_cpu: {
        pass: decisiveMisses.length === 0,
        agree: `${agree}/${picks}`,
        close_calls: closeCalls,
        decisive_misses: decisiveMisses,
      },
      greedy_alone_vs_batch: sameTokens(alone.tokens, batch.tokens),
      batch_vs_alone_logits: compare(decodeRows(batch), decodeRows(alone)),
      device_argmax: sameTokens(batchGreedy.tokens, batch.tokens),
      cuda_graphs: sameTokens(withoutGraphs.tokens, batchGreedy.tokens),
      chunked_prefill: sameRowCount(
        labels.flatMap((label) => chunked.get(label) ?? []),
        labels.flatMap((label) => whole.get(label)!),
      ),
      prefix_cache: { ...prefixRows, reused, pass: prefixRows.pass && reused === 32 },
      device_sampling: sampling,
    };
    return {
      device,
      model: `tiny (2 layers, hidden 64, fp16), ${ADAPTERS.length} adapters of ranks ${ADAPTERS.map((a) => a.rank).join("/")}, ${SEQUENCES} prompts of 5..${5 + 4 * (SEQUENCES - 1)} tokens in steps of ${STEP_ROWS} rows, ${STEPS} decode steps`,
      pass: Object.values(checks).every((c) => c.pass),
      checks,
      memory,
    };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

/** Sampling settings for deviceSampling, one per prompt (cycled). */
const SAMPLING: Partial<SamplingParams>[] = [
  {},
  { temperature: 0.9, topK: 5, seed: 1 },
  { temperature: 1, topP: 0.8, seed: 2, topLogprobs: 2 },
  { temperature: 0, topLogprobs: 3 },
  { temperature: 0, repetitionPenalty: 0.3, frequencyPenalty: 0.5 },
  { temperature: 0.9, topK: 8, seed: 5, presencePenalty: -4, repetitionPenalty: 1.2 },
  { temperature: 0, topLogprobs: 2, frequencyPenalty: 1, presencePenalty: -6 },
  // logit_bias rides in the penalty entries (a negative presence on tokens the sequence has not seen).
  {
    temperature: 0.8,
    topK: 4,
    seed: 6,
    logitBias: new Map([
      [70, 2],
      [71, -100],
    ]),
    frequencyPenalty: 0.5,
  },
];

/**
 * The prompts through the scheduler twice on one engine: with the device's picks and candidates, and
 * with every row's logits sampled on the host. Both must draw the same tokens.
 */
async function deviceSampling(
  engine: CudaEngine,
  modelDir: string,
  prompts: number[][],
  slots: number[],
): Promise<CheckResult> {
  const tokenizer = loadTokenizer(modelDir);
  const run = async (through: SchedulerEngine) => {
    const generation = new SlotGeneration(through, tokenizer, {
      slots: Math.max(...slots),
      maxBatch: STEP_ROWS,
      maxContext: 128,
      stepTokens: STEP_ROWS,
    });
    const results = await Promise.all(
      prompts.map((promptTokens, i) =>
        generation.generate({
          id: `d${i}`,
          promptTokens,
          slot: slots[i]!,
          sampling: { ...GREEDY, ...SAMPLING[i % SAMPLING.length] },
          maxTokens: STEPS,
          stopTokenIds: [],
        }),
      ),
    );
    return results.map((r) => r.tokenIds);
  };
  return sameTokens(await run(engine), await run(wholeRows(engine)));
}

/** The engine answering every decode with whole rows of logits, so the host samples each row itself. */
export function wholeRows(engine: ServingEngine): SchedulerEngine {
  return {
    padsPrefills: engine.padsPrefills,
    prefixReadyAfterPrefill: engine.prefixReadyAfterPrefill,
    prefillTogether: (prompts) => engine.prefillTogether(prompts),
    decodePicking: (tokens) => engine.decode(tokens),
    logitsOf: (id) => engine.logitsOf(id),
    release: (id) => engine.release(id),
    reusedPromptTokens: (ids) => engine.reusedPromptTokens(ids),
    cachedPrefixLength: (prompt) => engine.cachedPrefixLength(prompt),
  };
}

/** One line per check: PASS/FAIL, its name and its numbers. */
export function summaryLines(report: CudaCheckReport): string[] {
  return Object.entries(report.checks).map(([name, { pass, ...details }]) => {
    const parts = Object.entries(details).map(([k, v]) =>
      typeof v === "number" ? `${k} ${Number(v.toPrecision(3))}` : `${k} ${JSON.stringify(v)}`,
    );
    return `${pass ? "PASS" : "FAIL"} ${name}: ${parts.join(", ")}`;
  });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const args = process.argv.slice(2);
  const at = args.indexOf("--out");
  const out = at >= 0 ? args[at + 1]! : "bench/results";
  const report = await runCudaCheck();
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, "cuda-check.json"), `${JSON.stringify(report, null, 2)}\n`);
  for (const line of summaryLines(report)) process.stdout.write(`${line}\n`);
  process.stdout.write(`cuda-check on ${report.device}: ${report.pass ? "PASS" : "FAIL"}\n`);
  if (!report.pass) process.exitCode = 1;
}
