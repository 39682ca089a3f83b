// `luminet bench batch-load`: what a worker full of batch lines does to live requests, and what the live
// requests cost the batch. The real worker core (engine thread, scheduler, replies) on the in-process bus
// runs base-model requests. First, live requests one after another on the idle worker (their time to first
// token is the floor); then `--max-batch` batch lines are kept in flight (a finished line is replaced at
// once, so the batch stays full: `--batch-fill 1`, the worst case for live traffic) and the same live
// requests are sent again; last, the batch lines alone for as long. It reports the live requests' time to
// first token idle and under the batch, the batch lines' tokens/s alone and with the live requests beside
// them (and so the batch tokens each live request cost), and how many running lines they preempted.
import { computeDtypeFor, type Device } from "../worker/engine/device.ts";
import { Prng } from "../worker/engine/prng.ts";
import { machineName } from "./bench-engine.ts";
import { timeToFirstToken } from "./bench-long-prompt.ts";
import { saveBenchResult } from "./bench-result.ts";
import { type Percentiles, p50p99, round } from "./bench-stats.ts";
import { benchModelWithAdapter } from "./bench-switch.ts";
import { startBenchWorker } from "./bench-worker.ts";
import { randomPrompts } from "./random-prompts.ts";
import { RequestLines } from "./request-lines.ts";

export interface BatchLoadBenchOptions {
  device: Device;
  /** Layers of bench-1b; default 2 on CPU, 16 on a GPU. */
  layers?: number;
  modelDir?: string;
  /** The worker's --max-batch: the batch lines kept in flight. */
  maxBatch?: number;
  /** Live requests in each phase. */
  live?: number;
  /** Tokens each batch line generates. */
  lineTokens?: number;
  log?: (line: string) => void;
}

export interface BatchLoadBenchResult {
  machine: string;
  device: Device;
  shape: string;
  max_batch: number;
  live_requests: number;
  /** Live requests' time to first token on the idle worker. */
  idle_ttft_ms: Percentiles;
  /** The same requests while batch lines fill every place. */
  loaded_ttft_ms: Percentiles;
  /** Batch lines' generated tokens per second while the live requests ran beside them. */
  batch_tokens_per_s_with_live: number;
  /** The batch lines alone, for as long. */
  batch_tokens_per_s_alone: number;
  /** How long the live requests took beside the batch (one after another, with a short pause between). */
  live_phase_s: number;
  /**
   * Batch tokens the live requests cost, each: (alone − with live) × live_phase_s / live requests. The
   * fair comparison across schedulers, whose live phases differ in length.
   */
  batch_tokens_lost_per_live: number;
  /** Running batch lines taken out of the batch for the live requests (luminet_preemptions_total). */
  preemptions: number;
  setup: {
    layers: number;
    dtype: string;
    prompt_tokens: number;
    live_max_tokens: number;
    line_max_tokens: number;
    path: string;
  };
}

const PROMPT_TOKENS = 48;
const LIVE_MAX_TOKENS = 8;
/** Pause between one live request's end and the next one's start: the batch settles meanwhile. */
const LIVE_GAP_MS = 200;

export async function runBatchLoadBench(options: BatchLoadBenchOptions): Promise<BatchLoadBenchResult> {
  const log = options.log ?? (() => {});
  const { device } = options;
  const layers = options.layers ?? (device === "cpu" ? 2 : 16);
  const maxBatch = options.maxBatch ?? 16;
  const live = options.live ?? 12;
  const lineTokens = options.lineTokens ?? 48;
  const modelDir = options.modelDir ?? benchModelWithAdapter(device, layers, log);
  const prompt = randomPrompts(modelDir, new Prng(9, 0));
  const randomPrompt = () => prompt(PROMPT_TOKENS);
  const livePrompts = Array.from({ length: live }, randomPrompt);
  const { gateway, worker, stop } = await startBenchWorker({
    modelDir,
    device,
    slots: 1,
    maxAdaptersPerBatch: 1,
    maxRank: 16,
    maxBatch,
    maxContext: PROMPT_TOKENS + lineTokens + 16,
    stepTokens: 512,
  });
  try {
    const liveRun = async (phase: string): Promise<number[]> => {
      const ttfts: number[] = [];
      for (const [i, prompt] of livePrompts.entries()) {
        ttfts.push(await timeToFirstToken(gateway, `${phase}-live-${i}`, prompt, LIVE_MAX_TOKENS));
        await new Promise((resolve) => setTimeout(resolve, LIVE_GAP_MS));
      }
      return ttfts;
    };
    log(`${live} live requests on the idle worker`);
    await liveRun("warm-up");
    const idle = await liveRun("idle");
    log(`${maxBatch} batch lines in flight; the same live requests beside them`);
    const lines = new RequestLines(gateway, maxBatch, randomPrompt, () => lineTokens, "batch");
    await lines.started();
    const preemptedBefore = await preemptionCount(worker.metrics.preemptions);
    let window = lines.window();
    const loaded = await liveRun("loaded");
    const withLive = window.tokensPerSecond();
    const seconds = window.seconds();
    const preemptions = (await preemptionCount(worker.metrics.preemptions)) - preemptedBefore;
    log(`the batch lines alone for as long`);
    window = lines.window();
    await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    const alone = window.tokensPerSecond();
    await lines.stop();
    return {
      machine: machineName(device),
      device,
      shape: "bench-1b",
      max_batch: maxBatch,
      live_requests: live,
      idle_ttft_ms: p50p99(idle, 1),
      loaded_ttft_ms: p50p99(loaded, 1),
      batch_tokens_per_s_with_live: round(withLive, 1),
      batch_tokens_per_s_alone: round(alone, 1),
      live_phase_s: round(seconds, 2),
      batch_tokens_lost_per_live: round(((alone - withLive) * seconds) / live, 1),
      preemptions,
      setup: {
        layers,
        dtype: computeDtypeFor(device),
        prompt_tokens: PROMPT_TOKENS,
        live_max_tokens: LIVE_MAX_TOKENS,
        line_max_tokens: lineTokens,
        path: "luminet worker core on the in-process bus",
      },
    };
  } finally {
    await stop();
  }
}

async function preemptionCount(counter: {
  get(): Promise<{ values: { value: number }[] }>;
}): Promise<number> {
  return (await counter.get()).values[0]?.value ?? 0;
}

/** Prints the result (one JSON line with --json, else a table) and saves bench/results/batch-load.json. */
export function reportBatchLoadBench(
  result: BatchLoadBenchResult,
  json: boolean,
  resultsDir = "bench/results",
): void {
  if (saveBenchResult("batch-load", result, json, resultsDir)) return;
  const { setup } = result;
  process.stdout.write(
    `batch-load bench on ${result.machine} (${result.device}, bench-1b ${setup.layers} layers ${setup.dtype}): ${result.max_batch} batch lines in flight, ${result.live_requests} live requests\n`,
  );
  process.stdout.write(
    `live TTFT idle     p50 ${result.idle_ttft_ms.p50} ms, p99 ${result.idle_ttft_ms.p99} ms\n` +
      `live TTFT loaded   p50 ${result.loaded_ttft_ms.p50} ms, p99 ${result.loaded_ttft_ms.p99} ms\n` +
      `batch tokens/s     ${result.batch_tokens_per_s_with_live} with the live requests (${result.live_phase_s} s), ${result.batch_tokens_per_s_alone} alone\n` +
      `batch tokens lost  ${result.batch_tokens_lost_per_live} per live request\n` +
      `preemptions        ${result.preemptions}\n`,
  );
}
