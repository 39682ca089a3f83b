// `luminet bench long-prompt`: what one long prompt does to the sequences already streaming. The real
// worker core (engine thread, scheduler, replies) on the in-process bus runs `streams` short requests; once
// each has streamed a few tokens, a request with a long prompt arrives. Per step token budget (the worker's
// --step-tokens) it reports the streams' longest gap between two tokens while the long prompt prefilled
// and how many tokens they got meanwhile, their median gap overall, and the long request's time to first
// token. A budget at least the prompt's length prefills it in one run (no chunks): the before of chunked
// prefill, measured side by side with the after.
import type { Bus, ReplyInbox } from "../bus/bus.ts";
import {
  ANY_WORKER,
  greedySampling,
  type InferenceRequest,
  type Usage,
  WIRE_VERSION,
} from "../schema/wire.ts";
import { computeDtypeFor, type Device } from "../worker/engine/device.ts";
import { Prng } from "../worker/engine/prng.ts";
import { machineName } from "./bench-engine.ts";
import { saveBenchResult } from "./bench-result.ts";
import { percentile, round } from "./bench-stats.ts";
import { benchModelWithAdapter } from "./bench-switch.ts";
import { BENCH_BASE, startBenchWorker } from "./bench-worker.ts";
import { randomPrompts } from "./random-prompts.ts";

export interface LongPromptBenchOptions {
  device: Device;
  /** Layers of bench-1b; default 2 on CPU, 16 on a GPU. */
  layers?: number;
  modelDir?: string;
  /** Tokens of the long prompt. */
  promptTokens?: number;
  /** Sequences streaming when it arrives. */
  streams?: number;
  /** Step token budgets to compare; one at least the prompt's length runs it whole. */
  stepTokens?: number[];
  log?: (line: string) => void;
}

export interface LongPromptRun {
  step_tokens: number;
  /** The streams' longest gap between two tokens that overlapped the long prompt's prefill. */
  stream_max_gap_ms: number;
  /** Tokens the streams got, together, between the long request's arrival and its first token. */
  stream_tokens_during_prefill: number;
  stream_gap_p50_ms: number;
  long_ttft_ms: number;
}

export interface LongPromptBenchResult {
  machine: string;
  device: Device;
  shape: string;
  prompt_tokens: number;
  streams: number;
  results: LongPromptRun[];
  setup: {
    layers: number;
    dtype: string;
    stream_prompt_tokens: number;
    stream_max_tokens: number;
    path: string;
  };
}

const STREAM_PROMPT_TOKENS = 32;
/** Tokens each stream has before the long request is sent. */
const STREAMED_BEFORE = 4;

export async function runLongPromptBench(options: LongPromptBenchOptions): Promise<LongPromptBenchResult> {
  const log = options.log ?? (() => {});
  const { device } = options;
  const layers = options.layers ?? (device === "cpu" ? 2 : 16);
  const promptTokens = options.promptTokens ?? 1536;
  const streams = options.streams ?? 8;
  const budgets = options.stepTokens ?? [promptTokens + streams, 512, 256];
  for (const budget of budgets) {
    if (!Number.isSafeInteger(budget) || budget <= streams) {
      throw new RangeError(
        `each step token budget must be an integer above --streams (${streams}), got ${budget}`,
      );
    }
  }
  const modelDir = options.modelDir ?? benchModelWithAdapter(device, layers, log);
  const randomPrompt = randomPrompts(modelDir, new Prng(5, 0));
  const longPrompt = randomPrompt(promptTokens);
  const streamPrompts = Array.from({ length: streams }, () => randomPrompt(STREAM_PROMPT_TOKENS));
  // Enough tokens to outlast the long prompt's prefill in every run: a stream ends early only by length.
  const streamMaxTokens = 48;
  const results: LongPromptRun[] = [];
  for (const budget of budgets) {
    log(`step budget ${budget} tokens: ${streams} streams, then a ${promptTokens}-token prompt`);
    results.push(await oneRun({ device, modelDir, budget, longPrompt, streamPrompts, streamMaxTokens }));
    const last = results.at(-1)!;
    log(
      `  streams' longest gap ${last.stream_max_gap_ms} ms, ${last.stream_tokens_during_prefill} tokens meanwhile; long TTFT ${last.long_ttft_ms} ms`,
    );
  }
  return {
    machine: machineName(device),
    device,
    shape: "bench-1b",
    prompt_tokens: promptTokens,
    streams,
    results,
    setup: {
      layers,
      dtype: computeDtypeFor(device),
      stream_prompt_tokens: STREAM_PROMPT_TOKENS,
      stream_max_tokens: streamMaxTokens,
      path: "luminet worker core on the in-process bus",
    },
  };
}

async function oneRun(run: {
  device: Device;
  modelDir: string;
  budget: number;
  longPrompt: number[];
  streamPrompts: number[][];
  streamMaxTokens: number;
}): Promise<LongPromptRun> {
  const { gateway, stop } = await startBenchWorker({
    modelDir: run.modelDir,
    device: run.device,
    slots: 1,
    maxAdaptersPerBatch: 1,
    maxRank: 16,
    maxBatch: run.streamPrompts.length + 1,
    maxContext: run.longPrompt.length + 64,
    stepTokens: run.budget,
  });
  try {
    const arrivals = run.streamPrompts.map(() => [] as number[]);
    let sendLong: () => void = () => {};
    const longSent = new Promise<void>((resolve) => {
      sendLong = resolve;
    });
    const streamsDone = run.streamPrompts.map((prompt, i) =>
      streamRequest(gateway, `stream-${i}`, prompt, run.streamMaxTokens, (at) => {
        arrivals[i]!.push(at);
        if (arrivals.every((a) => a.length >= STREAMED_BEFORE)) sendLong();
      }),
    );
    await longSent;
    const sentAt = performance.now();
    let firstAt = 0;
    await streamRequest(gateway, "long", run.longPrompt, 4, (at) => {
      firstAt ||= at;
    });
    await Promise.all(streamsDone);
    const gaps: number[] = [];
    let maxGap = 0;
    let during = 0;
    for (const times of arrivals) {
      for (let t = 1; t < times.length; t++) {
        const gap = times[t]! - times[t - 1]!;
        gaps.push(gap);
        if (times[t]! > sentAt && times[t - 1]! < firstAt) maxGap = Math.max(maxGap, gap);
      }
      during += times.filter((at) => at > sentAt && at < firstAt).length;
    }
    return {
      step_tokens: run.budget,
      stream_max_gap_ms: round(maxGap, 1),
      stream_tokens_during_prefill: during,
      stream_gap_p50_ms: round(percentile(gaps, 50), 1),
      long_ttft_ms: round(firstAt - sentAt, 1),
    };
  } finally {
    await stop();
  }
}

/**
 * Sends one base-model request and calls `onToken` with each token's arrival time; resolves at its end with
 * the usage its Final reported.
 */
export async function streamRequest(
  gateway: Bus,
  id: string,
  prompt: number[],
  maxTokens: number,
  onToken: (at: number) => void,
): Promise<Usage> {
  return await readReply(await sendRequest(gateway, id, prompt, maxTokens), id, onToken);
}

/**
 * Publishes one base-model request (`batch`: as a Batch API line); resolves, once it is on the bus, with its
 * reply inbox.
 */
/** The service tier a bench request is sent at: a Batch API line, a standard request or a priority one. */
export type BenchTier = "batch" | "standard" | "priority";

export async function sendRequest(
  gateway: Bus,
  id: string,
  prompt: number[],
  maxTokens: number,
  tier: BenchTier = "standard",
): Promise<ReplyInbox> {
  const inbox = await gateway.openReplyInbox();
  const message: InferenceRequest = {
    v: WIRE_VERSION,
    id,
    org: "bench",
    api_key_id: "bench",
    base: BENCH_BASE,
    adapter: null,
    prompt_token_ids: prompt,
    sampling: greedySampling(maxTokens),
    reply: inbox.subject,
    created_at: Date.now(),
    deadline: Date.now() + 10 * 60_000,
    ...(tier === "batch" ? { batch: true } : {}),
    ...(tier === "priority" ? { priority: true } : {}),
  };
  await gateway.publishRequest(message, ANY_WORKER);
  return inbox;
}

/**
 * Reads a sent request's reply (see streamRequest). Ending at max_tokens or at an end-of-sequence token (which
 * a random-weight bench model picks now and then under greedy decoding) is an answer; any other end throws.
 */
export async function readReply(
  inbox: ReplyInbox,
  id: string,
  onToken: (at: number) => void,
): Promise<Usage> {
  for await (const reply of inbox) {
    if (reply.type === "chunk") for (const _ of reply.token_ids) onToken(performance.now());
    if (reply.type === "final") {
      if (reply.finish_reason !== "length" && reply.finish_reason !== "stop") {
        throw new Error(`bench request ${id} ended "${reply.finish_reason}": ${reply.error?.message ?? ""}`);
      }
      return reply.usage;
    }
  }
  throw new Error(`bench request ${id} ended without its final reply`);
}

/** Sends a request and reads its whole reply; returns the milliseconds from the send to its first token. */
export async function timeToFirstToken(
  gateway: Bus,
  id: string,
  prompt: number[],
  maxTokens: number,
  tier: BenchTier = "standard",
): Promise<number> {
  const sentAt = performance.now();
  let firstAt = 0;
  await readReply(await sendRequest(gateway, id, prompt, maxTokens, tier), id, (at) => {
    firstAt ||= at;
  });
  if (firstAt === 0) throw new Error(`bench request ${id} ended before its first token`);
  return firstAt - sentAt;
}

/** Prints the result (one JSON line with --json, else a table) and saves bench/results/long-prompt.json. */
export function reportLongPromptBench(
  result: LongPromptBenchResult,
  json: boolean,
  resultsDir = "bench/results",
): void {
  if (saveBenchResult("long-prompt", result, json, resultsDir)) return;
  const { setup } = result;
  process.stdout.write(
    `long-prompt bench on ${result.machine} (${result.device}, bench-1b ${setup.layers} layers ${setup.dtype}): ${result.streams} streams, then one ${result.prompt_tokens}-token prompt\n`,
  );
  process.stdout.write(
    "step tokens   streams' longest gap   their tokens meanwhile   gap p50   long TTFT   (ms)\n",
  );
  for (const r of result.results) {
    process.stdout.write(
      `${String(r.step_tokens).padEnd(14)}${r.stream_max_gap_ms.toFixed(1).padEnd(23)}${String(r.stream_tokens_during_prefill).padEnd(25)}${r.stream_gap_p50_ms.toFixed(1).padEnd(10)}${r.long_ttft_ms.toFixed(1)}\n`,
    );
  }
}
