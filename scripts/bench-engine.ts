// `luminet bench engine`: mixed-adapter decode throughput against base-only, and against a roofline
// measured on the same machine (../shared/BENCH.md "engine"). 64 sequences decode together; runs for
// base-only and U = 1, 4, 16, 64 distinct rank-16 adapters (rows round-robin) share one untimed prefill and
// are interleaved block by block, so every run sees the same context lengths and the same machine noise;
// on cpu the schedule repeats over three rounds, and each run's figures come from its fastest step.
// The timed steps take each row's argmax where the logits are (decodePicking: in the onnxruntime graph, on
// the CUDA device; no logits come back), as greedy serving would. On cuda the addon measures the roofline
// (an fp16 GEMM and a device copy, the sizes roofline.ts uses).
// Runnable directly (the GPU machine runs the bundled file): node bench-engine.mjs --device webgpu --json
import { execFileSync } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { availableParallelism, cpus } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { loadPeftAdapter } from "../worker/adapters/peft.ts";
import { createEngine } from "../worker/engine/create-engine.ts";
import { type CUDA_FORMULATION, CudaEngine } from "../worker/engine/cuda/cuda-engine.ts";
import type { DecodeChoice } from "../worker/engine/decode-row.ts";
import { assertDeviceUsable, computeDtypeFor, type Device, parseDevice } from "../worker/engine/device.ts";
import type { LoraFormulation } from "../worker/engine/engine.ts";
import {
  MODULE_KINDS,
  type ModelConfig,
  moduleShape,
  parseModelConfig,
} from "../worker/engine/model-config.ts";
import { Prng } from "../worker/engine/prng.ts";
import { saveBenchResult } from "./bench-result.ts";
import { round } from "./bench-stats.ts";
import { measureRoofline, type Roofline } from "./roofline.ts";
import { initTinyModel, tinyConfigJson } from "./tiny-model.ts";

export interface EngineBenchOptions {
  device: Device;
  layers?: number;
  /** A bench-1b model folder with adapters/adapter-0..63; generated (and cached) when absent. */
  modelDir?: string;
  /** Multi-LoRA formulation; the engine's default for the device when absent. */
  formulation?: LoraFormulation;
  /** onnxruntime intra-op threads; every core when absent. */
  threads?: number;
  /** Each graph variant's session prepacks its own copy of the base weights (EngineOptions.prepackWeights). */
  prepackWeights?: boolean;
  /** CPU: 4-bit projection and lm_head weights (EngineOptions.quantize). */
  quantize?: "q4";
  /**
   * A shorter run than BENCH.md's (its context and timed steps per run by default: 128 and 16 on cpu, 512
   * and 32 on a GPU), for tests of the benchmark itself on small models.
   */
  context?: number;
  timedSteps?: number;
  /**
   * Times the interleaved schedule this many times, each after a fresh prefill of the same prompts, so every
   * run gets more chances at a step no neighbour slowed (default 3 on cpu, 1 on a GPU: its steps are steady).
   */
  rounds?: number;
  /** On cuda, the roofline's GEMM and copy sizes (default CUDA_ROOFLINE_SIZES; the emulator needs small ones). */
  cudaRoofline?: { gemmSize: number; copyBytes: number; repeats: number };
  log?: (line: string) => void;
}

export interface EngineBenchRow {
  U: number;
  tokens_per_s: number;
  ratio: number;
  bound: number;
  efficiency: number;
  /**
   * The run's fastest step, which tokens_per_s, ratio and efficiency come from (absent in results saved
   * before: those figures came from the median step).
   */
  step_ms_fastest?: number;
  step_ms_p50: number;
  added_ms_p50: number;
  /** Base-only's median step over this U's (absent in older results, whose ratio was this). */
  ratio_p50?: number;
  /** Process CPU time per step (all threads), and base-only's over this U's (absent in older results). */
  cpu_ms_p50?: number;
  cpu_ratio?: number;
}

export interface EngineBenchResult {
  machine: string;
  device: Device;
  /** "bench-1b", or for a --model folder of other widths "custom (…)" naming them (benchShape). */
  shape: string;
  base_tokens_per_s: number;
  /** Absent in results saved before the headline moved to the fastest step. */
  base_step_ms_p50?: number;
  results: EngineBenchRow[];
  roofline: {
    flops_per_s: number;
    bytes_per_s: number;
    dominant: "compute" | "memory";
  };
  setup: {
    layers: number;
    dtype: string;
    formulation: LoraFormulation | typeof CUDA_FORMULATION;
    /** Absent in results saved before the option existed (every core). */
    threads?: number;
    /** Absent in results saved before weights were left unpacked by default (they were prepacked). */
    prepack_weights?: boolean;
    /** "q4" when the projection and lm_head weights ran in 4 bits; absent for float32. */
    quantize?: "q4";
    sequences: number;
    context: number;
    timed_steps: number;
    /** Absent in results saved before rounds existed (one). */
    rounds?: number;
    rank: number;
    /** Which step of a run the headline figures come from (absent in older results: the median). */
    headline_step?: "fastest";
  };
  /** cuda only: device milliseconds per phase of one profiled step at base-only and at each U. */
  phases?: { U: number; ms: Record<string, number> }[];
}

const SEQUENCES = 64;
const RANK = 16;
const U_VALUES = [1, 4, 16, 64];
/** Steps per run between switches; runs rotate until each has its timed steps. */
const BLOCK = 4;
/** On cuda, after the timed runs: one step profiled phase by phase at each of these U (0: base-only). */
const PROFILED_U = [0, ...U_VALUES];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

export function machineName(device: Device): string {
  const cpu = `${cpus()[0]?.model.trim() ?? "unknown CPU"} (${availableParallelism()} threads)`;
  if (device === "cpu") return cpu;
  try {
    const gpu = execFileSync("nvidia-smi", ["--query-gpu=name", "--format=csv,noheader"], {
      encoding: "utf8",
    });
    return `${gpu.trim().split("\n")[0]} via ${device}; host ${cpu}`;
  } catch {
    return `${device} device; host ${cpu}`;
  }
}

/** The ideal step: FLOPs and bytes of the base model plus, per distinct adapter, its bytes once. */
export function stepCost(
  model: ModelConfig,
  batch: number,
  context: number,
  bytesPerValue: number,
  adapters: number,
) {
  let linear = 0;
  let loraPerToken = 0;
  let adapterValues = 0;
  for (const kind of MODULE_KINDS) {
    const { inFeatures, outFeatures } = moduleShape(model, kind);
    linear += inFeatures * outFeatures;
    loraPerToken += RANK * (inFeatures + outFeatures);
    adapterValues += RANK * (inFeatures + outFeatures);
  }
  const lmHead = model.vocabSize * model.hiddenSize;
  const attention = 4 * model.numHeads * model.headDim * context;
  const kvValues = 2 * model.numKvHeads * model.headDim * context;
  const flops =
    batch * (2 * (linear * model.numLayers + lmHead) + attention * model.numLayers) +
    (adapters > 0 ? batch * 2 * loraPerToken * model.numLayers : 0);
  const bytes =
    (linear * model.numLayers +
      lmHead +
      batch * kvValues * model.numLayers +
      adapters * adapterValues * model.numLayers) *
    bytesPerValue;
  return { flops, bytes };
}

/**
 * "bench-1b" for a model of bench-1b's widths (whatever its layer count, which setup.layers gives); for any
 * other `--model` folder, "custom (…)" with its widths: its figures are no bench-1b result.
 */
export function benchShape(model: ModelConfig): string {
  const bench = parseModelConfig(tinyConfigJson("bench-1b", model.numLayers, "F32"));
  const widths = [
    "hiddenSize",
    "intermediateSize",
    "numHeads",
    "numKvHeads",
    "headDim",
    "vocabSize",
  ] as const;
  if (model.architecture === bench.architecture && widths.every((w) => model[w] === bench[w])) {
    return "bench-1b";
  }
  return `custom (${model.architecture}, hidden ${model.hiddenSize}, intermediate ${model.intermediateSize}, ${model.numHeads}/${model.numKvHeads} heads of ${model.headDim}, vocab ${model.vocabSize})`;
}

/** bench-1b with 64 rank-16 adapters (adapter-0..63), generated once under `models` (.luminet/bench-models/). */
export function ensureBenchModel(
  device: Device,
  layers: number,
  log: (line: string) => void,
  models = resolve(".luminet", "bench-models"),
): string {
  const dtype = device === "cpu" ? "F32" : "F16";
  const dir = join(models, `bench-1b-${layers}l-${dtype.toLowerCase()}`);
  if (existsSync(join(dir, "adapters", `adapter-${SEQUENCES - 1}`, "adapter_model.safetensors"))) return dir;
  // The last adapter is written last: without it, an earlier generation was interrupted. What it left
  // (weights still under their `.partial` name, hundreds of MB, and some adapters) goes before starting over.
  rmSync(dir, { recursive: true, force: true });
  log(`generating bench-1b (${layers} layers, ${dtype}) with ${SEQUENCES} rank-${RANK} adapters in ${dir}`);
  let lastPercent = -10;
  initTinyModel(dir, {
    shape: "bench-1b",
    layers,
    adapters: SEQUENCES,
    rank: RANK,
    seed: 7,
    dtype,
    onProgress: (done, total) => {
      const percent = Math.floor((100 * done) / total);
      if (percent >= lastPercent + 10) {
        lastPercent = percent;
        log(`  weights ${percent}%`);
      }
    },
  });
  return dir;
}

export async function runEngineBench(options: EngineBenchOptions): Promise<EngineBenchResult> {
  const log = options.log ?? (() => {});
  const { device } = options;
  const onGpu = device !== "cpu";
  const layers = options.layers ?? (onGpu ? 16 : 2);
  const context = options.context ?? (onGpu ? 512 : 128);
  const timedSteps = options.timedSteps ?? (onGpu ? 32 : 16);
  const rounds = options.rounds ?? (onGpu ? 1 : 3);
  const runs = [0, ...U_VALUES];
  const profiledSteps = device === "cuda" ? PROFILED_U.length : 0;
  const totalSteps = runs.length * (timedSteps + 1) + profiledSteps;
  const promptLength = context - totalSteps - 1;
  if (promptLength < 1) {
    throw new RangeError(`a context of ${context} leaves no prompt for ${totalSteps} decode steps`);
  }
  if (options.modelDir !== undefined && options.layers !== undefined) {
    throw new RangeError("--layers sizes the generated bench-1b; a --model folder runs with its own layers");
  }
  // Before minutes of model generation: a device that cannot run says so now.
  await assertDeviceUsable(device);
  const modelDir = options.modelDir ?? ensureBenchModel(device, layers, log);
  const threads = options.threads ?? availableParallelism();

  const engine = await createEngine({
    modelDir,
    device,
    maxContext: context,
    slots: SEQUENCES,
    maxRank: RANK,
    maxAdaptersPerStep: SEQUENCES,
    maxBatch: SEQUENCES,
    threads,
    ...(options.prepackWeights ? { prepackWeights: true } : {}),
    ...(options.quantize ? { quantize: options.quantize } : {}),
    ...(options.formulation ? { loraFormulation: options.formulation } : {}),
  });
  const model = engine.model;
  log(`writing ${SEQUENCES} adapters into slots`);
  for (let i = 0; i < SEQUENCES; i++) {
    const adapter = loadPeftAdapter(join(modelDir, "adapters", `adapter-${i}`), model, { maxRank: RANK });
    await engine.writeAdapter(i + 1, adapter);
  }
  log("building graph variants");
  await engine.warmUp();

  const prng = new Prng(11, 0);
  const ids = Array.from({ length: SEQUENCES }, (_, i) => `seq-${i}`);
  const prompts = ids.map((id) => ({
    id,
    tokens: Array.from({ length: promptLength }, () => Math.floor(prng.nextFloat() * model.vocabSize)),
    slot: 0,
  }));
  let next = new Map<string, number>();

  const greedy = new Map<string, DecodeChoice>(ids.map((id) => [id, { kind: "argmax" }]));
  const stepTimes = new Map<number, number[]>(runs.map((u) => [u, []]));
  const cpuTimes = new Map<number, number[]>(runs.map((u) => [u, []]));
  const assign = (u: number) => {
    for (const [b, id] of ids.entries()) engine.switchAdapter(id, u === 0 ? 0 : (b % u) + 1);
  };
  // Wall seconds and process CPU seconds of one decode step. On a shared machine the CPU time of a
  // one-thread run (--threads 1) hardly moves with the neighbours' load; wall time does.
  const step = async (): Promise<[number, number]> => {
    const start = performance.now();
    const cpuStart = process.cpuUsage();
    // Greedy serving's step: each row's argmax is taken where the logits are, no logits come back.
    const picked = await engine.decodePicking(next, greedy);
    next = new Map([...picked].map(([id, token]) => [id, token as number]));
    const cpu = process.cpuUsage(cpuStart);
    const seconds = (performance.now() - start) / 1000;
    return [seconds, (cpu.user + cpu.system) / 1e6];
  };
  for (let round = 1; round <= rounds; round++) {
    if (round > 1) for (const id of ids) engine.release(id);
    log(
      `round ${round} of ${rounds}: prefilling ${SEQUENCES} prompts of ${promptLength} tokens (untimed, shared by every run)`,
    );
    const first = await engine.prefillTogether(prompts);
    next = new Map(ids.map((id, i) => [id, argmax(first[i]!)]));
    for (const u of runs) {
      assign(u);
      await step();
    }
    log(`timing ${timedSteps} decode steps per run, interleaved in blocks of ${BLOCK}`);
    for (let done = 0; done < timedSteps; done += BLOCK) {
      for (const u of runs) {
        assign(u);
        for (let i = 0; i < Math.min(BLOCK, timedSteps - done); i++) {
          const [seconds, cpuSeconds] = await step();
          stepTimes.get(u)!.push(seconds);
          cpuTimes.get(u)!.push(cpuSeconds);
        }
      }
    }
  }
  log("measuring the roofline (peak MatMul rate, memory bandwidth)");
  let roofline: Roofline;
  let phases: EngineBenchResult["phases"];
  if (engine instanceof CudaEngine) {
    roofline = await engine.roofline(options.cudaRoofline ?? CUDA_ROOFLINE_SIZES);
    // Last, so that a profile the device refuses costs none of the figures above.
    log("profiling one step's phases at base-only and at each U");
    try {
      phases = [];
      for (const u of PROFILED_U) {
        assign(u);
        const profiled = await engine.profileDecode(next);
        next = profiled.next;
        phases.push({
          U: u,
          ms: Object.fromEntries(Object.entries(profiled.phases).map(([phase, ms]) => [phase, round(ms, 4)])),
        });
      }
    } catch (error) {
      log(`profiling failed: ${(error as Error).message}`);
    }
    await engine.close();
  } else {
    await engine.close();
    roofline = await measureRoofline(device, computeDtypeFor(device), threads);
  }
  const bytesPerValue = onGpu ? 2 : 4;
  const meanContext = promptLength + totalSteps / 2;
  const ideal = (u: number) => {
    const { flops, bytes } = stepCost(model, SEQUENCES, meanContext, bytesPerValue, u);
    return Math.max(flops / roofline.flopsPerSecond, bytes / roofline.bytesPerSecond);
  };
  const base = stepCost(model, SEQUENCES, meanContext, bytesPerValue, 0);
  // Headline figures from each run's fastest step: a neighbour only ever adds time, and on a shared VM it
  // can double a step for minutes, so medians of interleaved runs land on either side of that (docs/BENCHMARKS.md).
  const baseFastest = Math.min(...stepTimes.get(0)!);
  const baseStep = median(stepTimes.get(0)!);
  const baseCpu = median(cpuTimes.get(0)!);
  const results = U_VALUES.map((u) => {
    const fastest = Math.min(...stepTimes.get(u)!);
    const stepSeconds = median(stepTimes.get(u)!);
    const cpuSeconds = median(cpuTimes.get(u)!);
    // Efficiency from the ratio and bound as reported, so that the three figures agree as printed (a ratio
    // far from 1 over a small bound would otherwise differ in the fourth place from ratio / bound).
    const ratio = round(baseFastest / fastest, 4);
    const bound = round(ideal(0) / ideal(u), 4);
    return {
      U: u,
      tokens_per_s: round(SEQUENCES / fastest, 0),
      ratio,
      bound,
      efficiency: round(ratio / bound, 4),
      step_ms_fastest: round(fastest * 1000, 2),
      step_ms_p50: round(stepSeconds * 1000, 2),
      added_ms_p50: round((stepSeconds - baseStep) * 1000, 2),
      ratio_p50: round(baseStep / stepSeconds, 4),
      cpu_ms_p50: round(cpuSeconds * 1000, 2),
      cpu_ratio: round(baseCpu / cpuSeconds, 4),
    };
  });
  return {
    machine: machineName(device),
    device,
    shape: benchShape(model),
    base_tokens_per_s: round(SEQUENCES / baseFastest, 0),
    base_step_ms_p50: round(baseStep * 1000, 2),
    results,
    roofline: {
      flops_per_s: round(roofline.flopsPerSecond, 0),
      bytes_per_s: round(roofline.bytesPerSecond, 0),
      dominant:
        base.flops / roofline.flopsPerSecond > base.bytes / roofline.bytesPerSecond ? "compute" : "memory",
    },
    setup: {
      // The model's own count: a --model folder need not have the default number of layers.
      layers: model.numLayers,
      dtype: computeDtypeFor(device),
      formulation: engine.formulation,
      threads,
      prepack_weights: options.prepackWeights === true,
      ...(options.quantize ? { quantize: options.quantize } : {}),
      sequences: SEQUENCES,
      context,
      timed_steps: timedSteps,
      rounds,
      rank: RANK,
      headline_step: "fastest",
    },
    ...(phases?.length ? { phases } : {}),
  };
}

/** On cuda: roofline.ts's sizes (a 4096³ GEMM, 256 Mi fp16 values copied), timed by the addon. */
const CUDA_ROOFLINE_SIZES = { gemmSize: 4096, copyBytes: 512 * 2 ** 20, repeats: 5 };

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/**
 * Prints the result (one JSON line with --json, else a table) and saves bench/results/engine-<device>.json;
 * a custom model's run goes to engine-<device>-custom.json, never over a bench-1b result.
 */
export function reportEngineBench(
  result: EngineBenchResult,
  json: boolean,
  resultsDir = "bench/results",
): void {
  const name = `engine-${result.device}${result.shape === "bench-1b" ? "" : "-custom"}`;
  if (saveBenchResult(name, result, json, resultsDir)) return;
  process.stdout.write(
    `engine bench on ${result.machine} (${result.device}, ${result.shape}, ${result.setup.layers} layers ${result.setup.dtype}${result.setup.quantize ? `, ${result.setup.quantize} weights` : ""})\n`,
  );
  process.stdout.write(
    `base-only: ${result.base_tokens_per_s} tokens/s; roofline dominated by ${result.roofline.dominant}\n`,
  );
  process.stdout.write(
    "(tokens/s, ratio and efficiency from each run's fastest step; p50: its median step)\n" +
      (result.setup.quantize
        ? "(the bound models float32 weights: with 4-bit ones the base step is quicker than it assumes)\n"
        : "") +
      "U    tokens/s   ratio   bound   efficiency   fastest ms   p50 ms    p50 ratio   cpu ratio\n",
  );
  for (const r of result.results) {
    process.stdout.write(
      `${String(r.U).padEnd(5)}${String(r.tokens_per_s).padEnd(11)}${r.ratio.toFixed(3).padEnd(8)}${r.bound.toFixed(3).padEnd(8)}${r.efficiency.toFixed(3).padEnd(13)}${(r.step_ms_fastest?.toFixed(1) ?? "—").padEnd(13)}${r.step_ms_p50.toFixed(1).padEnd(10)}${(r.ratio_p50?.toFixed(3) ?? "—").padEnd(12)}${r.cpu_ratio?.toFixed(3) ?? "—"}\n`,
    );
  }
  if (!result.phases) return;
  process.stdout.write(`\ndevice ms per step by phase (one profiled step each)\n${"phase".padEnd(22)}`);
  process.stdout.write(
    `${result.phases.map((p) => (p.U === 0 ? "base" : `U=${p.U}`).padEnd(10)).join("")}\n`,
  );
  // In the forward's order: the last profile (an adapter run) has every phase.
  const names = [...new Set([...result.phases].reverse().flatMap((p) => Object.keys(p.ms)))];
  for (const name of [...names, "total"]) {
    const cells = result.phases.map((p) => {
      const ms = name === "total" ? Object.values(p.ms).reduce((a, b) => a + b, 0) : p.ms[name];
      return (ms === undefined ? "—" : ms.toFixed(3)).padEnd(10);
    });
    process.stdout.write(`${name.padEnd(22)}${cells.join("")}\n`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const args = process.argv.slice(2);
  const value = (flag: string) => {
    const at = args.indexOf(flag);
    return at >= 0 ? args[at + 1] : undefined;
  };
  const layers = value("--layers");
  const threads = value("--threads");
  const rounds = value("--rounds");
  const result = await runEngineBench({
    ...(threads ? { threads: Number(threads) } : {}),
    ...(rounds ? { rounds: Number(rounds) } : {}),
    ...(args.includes("--prepack") ? { prepackWeights: true } : {}),
    ...(value("--quantize") === "q4" ? { quantize: "q4" as const } : {}),
    device: parseDevice(value("--device") ?? "cpu"),
    ...(layers ? { layers: Number(layers) } : {}),
    ...(value("--model") ? { modelDir: resolve(value("--model")!) } : {}),
    ...(value("--lora") ? { formulation: value("--lora") as LoraFormulation } : {}),
    log: (line) => process.stderr.write(`[${(performance.now() / 1000).toFixed(1)}s] ${line}\n`),
  });
  reportEngineBench(result, args.includes("--json"), value("--out") ?? "bench/results");
}
