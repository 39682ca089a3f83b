// `luminet bench priority`: what the priority service tier buys behind a backlog. The real worker core
// (engine thread, scheduler, replies) on the in-process bus, or on NATS JetStream with `--nats`, runs
// base-model requests. First, probe requests
// one after another on the idle worker (their time to first token is the floor); then `--backlog` standard
// requests of varied lengths are kept in flight — more than the worker holds (its batch and half a batch more), so the rest
// wait in the bus — and probes are sent again one at a time, alternating the standard tier and the priority
// tier. A standard probe queues behind the backlog; a priority one goes to the queue's priority lane, which
// the worker pulls first, and then ahead of the standard requests the worker holds.
import { computeDtypeFor, type Device } from "../worker/engine/device.ts";
import { Prng } from "../worker/engine/prng.ts";
import { machineName } from "./bench-engine.ts";
import { type BenchTier, timeToFirstToken } from "./bench-long-prompt.ts";
import { saveBenchResult } from "./bench-result.ts";
import { type Percentiles, p50p99, round } from "./bench-stats.ts";
import { benchModelWithAdapter } from "./bench-switch.ts";
import { startBenchWorker } from "./bench-worker.ts";
import { randomPrompts } from "./random-prompts.ts";
import { RequestLines } from "./request-lines.ts";

export interface PriorityBenchOptions {
  device: Device;
  /** Layers of bench-1b; default 2 on CPU, 16 on a GPU. */
  layers?: number;
  modelDir?: string;
  /** The worker's --max-batch. */
  maxBatch?: number;
  /** Standard requests kept in flight while the probes run. */
  backlog?: number;
  /** Probes of each tier under the backlog (and standard probes on the idle worker). */
  probes?: number;
  /** Tokens a backlog request generates on average (each between half and one and a half times this). */
  backlogTokens?: number;
  /** Run over NATS JetStream at this URL (a namespace of the run's own) instead of the in-process bus. */
  natsUrl?: string;
  log?: (line: string) => void;
}

export interface PriorityBenchResult {
  machine: string;
  device: Device;
  shape: string;
  max_batch: number;
  backlog: number;
  probes: number;
  /** Probes' time to first token on the idle worker. */
  idle_ttft_ms: Percentiles;
  /** Standard-tier probes behind the backlog. */
  standard_ttft_ms: Percentiles;
  /** Priority-tier probes behind the same backlog. */
  priority_ttft_ms: Percentiles;
  /** The backlog's generated tokens per second while the probes ran. */
  backlog_tokens_per_s: number;
  setup: {
    layers: number;
    dtype: string;
    prompt_tokens: number;
    probe_max_tokens: number;
    /** A backlog request's max_tokens on average (uniform over half to one and a half times it). */
    backlog_max_tokens: number;
    path: string;
  };
}

const PROMPT_TOKENS = 48;
const PROBE_MAX_TOKENS = 8;
/** Pause between one probe's end and the next one's start. */
const PROBE_GAP_MS = 200;

export async function runPriorityBench(options: PriorityBenchOptions): Promise<PriorityBenchResult> {
  const log = options.log ?? (() => {});
  const { device } = options;
  const layers = options.layers ?? (device === "cpu" ? 2 : 16);
  const maxBatch = options.maxBatch ?? 16;
  const backlog = options.backlog ?? 4 * maxBatch;
  const probes = options.probes ?? 6;
  const backlogTokens = options.backlogTokens ?? 32;
  if (backlog <= maxBatch + Math.ceil(maxBatch / 2)) {
    throw new Error(
      `--backlog ${backlog} fits in what a worker holds (--max-batch ${maxBatch} and half as many more): nothing would wait in the bus`,
    );
  }
  const modelDir = options.modelDir ?? benchModelWithAdapter(device, layers, log);
  const prng = new Prng(11, 0);
  const prompt = randomPrompts(modelDir, prng);
  const randomPrompt = () => prompt(PROMPT_TOKENS);
  const probePrompts = Array.from({ length: probes }, randomPrompt);
  const { gateway, stop } = await startBenchWorker({
    modelDir,
    device,
    slots: 1,
    maxAdaptersPerBatch: 1,
    maxRank: 16,
    maxBatch,
    maxContext: PROMPT_TOKENS + 2 * backlogTokens + 16,
    stepTokens: 512,
    ...(options.natsUrl ? { natsUrl: options.natsUrl } : {}),
  });
  try {
    const probe = async (id: string, prompt: number[], tier: BenchTier): Promise<number> => {
      const ttft = await timeToFirstToken(gateway, id, prompt, PROBE_MAX_TOKENS, tier);
      await new Promise((resolve) => setTimeout(resolve, PROBE_GAP_MS));
      return ttft;
    };
    log(`${probes} probes on the idle worker`);
    for (const [i, prompt] of probePrompts.entries()) await probe(`warm-up-${i}`, prompt, "standard");
    const idle: number[] = [];
    for (const [i, prompt] of probePrompts.entries()) idle.push(await probe(`idle-${i}`, prompt, "standard"));
    log(`${backlog} standard requests in flight; ${probes} probes of each tier behind them`);
    // Lengths vary, so requests end on different steps and places free up all the time, as in serving.
    const backlogLength = () => Math.round(backlogTokens * (0.5 + prng.nextFloat()));
    const lines = new RequestLines(gateway, backlog, randomPrompt, backlogLength, "standard");
    await lines.started();
    const window = lines.window();
    const standard: number[] = [];
    const priority: number[] = [];
    for (const [i, prompt] of probePrompts.entries()) {
      standard.push(await probe(`standard-${i}`, prompt, "standard"));
      priority.push(await probe(`priority-${i}`, prompt, "priority"));
    }
    const backlogTokensPerS = window.tokensPerSecond();
    await lines.stop();
    return {
      machine: machineName(device),
      device,
      shape: "bench-1b",
      max_batch: maxBatch,
      backlog,
      probes,
      idle_ttft_ms: p50p99(idle, 1),
      standard_ttft_ms: p50p99(standard, 1),
      priority_ttft_ms: p50p99(priority, 1),
      backlog_tokens_per_s: round(backlogTokensPerS, 1),
      setup: {
        layers,
        dtype: computeDtypeFor(device),
        prompt_tokens: PROMPT_TOKENS,
        probe_max_tokens: PROBE_MAX_TOKENS,
        backlog_max_tokens: backlogTokens,
        path: `luminet worker core on ${options.natsUrl ? "NATS JetStream" : "the in-process bus"}`,
      },
    };
  } finally {
    await stop();
  }
}

/** Prints the result (one JSON line with --json, else a table) and saves bench/results/priority.json. */
export function reportPriorityBench(
  result: PriorityBenchResult,
  json: boolean,
  resultsDir = "bench/results",
): void {
  const name = result.setup.path.includes("NATS") ? "priority-nats" : "priority";
  if (saveBenchResult(name, result, json, resultsDir)) return;
  const { setup } = result;
  process.stdout.write(
    `priority bench on ${result.machine} (${result.device}, bench-1b ${setup.layers} layers ${setup.dtype}): --max-batch ${result.max_batch}, ${result.backlog} standard requests in flight, ${result.probes} probes of each tier\n`,
  );
  process.stdout.write(
    `TTFT idle                p50 ${result.idle_ttft_ms.p50} ms, p99 ${result.idle_ttft_ms.p99} ms\n` +
      `TTFT standard, backlog   p50 ${result.standard_ttft_ms.p50} ms, p99 ${result.standard_ttft_ms.p99} ms\n` +
      `TTFT priority, backlog   p50 ${result.priority_ttft_ms.p50} ms, p99 ${result.priority_ttft_ms.p99} ms\n` +
      `backlog tokens/s         ${result.backlog_tokens_per_s}\n`,
  );
}
