// `luminet bench prefix-cache`: time to first token for requests that share a long system prompt, with the
// worker's prefix cache off and on. The real worker core (engine thread, scheduler, replies) on the
// in-process bus serves the requests one at a time: each is the same `system`-token prefix and a tail of
// its own. Off, every request prefills its whole prompt; on, the first does and the rest reuse its
// prefix's cache (whole blocks of 16 tokens) and prefill only their tails. Then a burst: requests sharing a
// new prefix sent at once (as a request's n choices are) while the worker prefills an unrelated prompt, so
// they are all queued when a step takes them, with a step budget that admits them all: off, they are
// prefilled together; on, the first is and the rest wait a step to prefill only their tails from its cache
// (the scheduler's MIN_SHARED_PREFIX).

import type { ReplyInbox } from "../bus/bus.ts";
import { computeDtypeFor, type Device } from "../worker/engine/device.ts";
import { Prng } from "../worker/engine/prng.ts";
import { machineName } from "./bench-engine.ts";
import { readReply, sendRequest } from "./bench-long-prompt.ts";
import { saveBenchResult } from "./bench-result.ts";
import { percentile, round } from "./bench-stats.ts";
import { benchModelWithAdapter } from "./bench-switch.ts";
import { startBenchWorker } from "./bench-worker.ts";
import { randomPrompts } from "./random-prompts.ts";

export interface PrefixCacheBenchOptions {
  device: Device;
  /** Layers of bench-1b; default 2 on CPU, 16 on a GPU. */
  layers?: number;
  modelDir?: string;
  /** Tokens of the shared prefix. */
  systemTokens?: number;
  /** Tokens of each request's own tail. */
  tailTokens?: number;
  /** Timed requests per mode, after the first (which fills the cache when it is on). */
  requests?: number;
  /** Requests of the burst, sent at once. */
  burst?: number;
  log?: (line: string) => void;
}

export interface PrefixCacheRun {
  prefix_cache_bytes: number;
  first_ttft_ms: number;
  ttft_p50_ms: number;
  ttft_p90_ms: number;
}

export interface PrefixCacheBurstRun {
  prefix_cache_bytes: number;
  /** From sending the burst to the last request's first token. */
  last_ttft_ms: number;
  ttft_p50_ms: number;
  /** Prompt tokens of the burst the worker's prefix cache covered. */
  cached_prompt_tokens: number;
}

export interface PrefixCacheBenchResult {
  machine: string;
  device: Device;
  shape: string;
  system_tokens: number;
  tail_tokens: number;
  requests: number;
  results: PrefixCacheRun[];
  /** TTFT p50 with the cache off over with it on. */
  speedup_p50: number;
  burst: {
    requests: number;
    results: PrefixCacheBurstRun[];
    /** The burst's last first token with the cache off over with it on. */
    speedup_last: number;
  };
  setup: { layers: number; dtype: string; path: string };
}

const CACHE_BYTES = 512 * 2 ** 20;

export async function runPrefixCacheBench(options: PrefixCacheBenchOptions): Promise<PrefixCacheBenchResult> {
  const log = options.log ?? (() => {});
  const { device } = options;
  const layers = options.layers ?? (device === "cpu" ? 2 : 16);
  const systemTokens = options.systemTokens ?? 512;
  const tailTokens = options.tailTokens ?? 32;
  const requests = options.requests ?? 16;
  const burst = options.burst ?? 8;
  const modelDir = options.modelDir ?? benchModelWithAdapter(device, layers, log);
  const random = randomPrompts(modelDir, new Prng(9, 0));
  const system = random(systemTokens);
  const prompts = Array.from({ length: requests + 1 }, () => [...system, ...random(tailTokens)]);
  const results: PrefixCacheRun[] = [];
  for (const bytes of [0, CACHE_BYTES]) {
    log(`prefix cache ${bytes === 0 ? "off" : `on (${bytes / 2 ** 20} MiB)`}: ${requests + 1} requests`);
    const ttfts = (await timeRequests({ device, modelDir, bytes, prompts })).map((r) => r.ttft);
    const timed = ttfts.slice(1);
    results.push({
      prefix_cache_bytes: bytes,
      first_ttft_ms: round(ttfts[0]!, 1),
      ttft_p50_ms: round(percentile(timed, 50), 1),
      ttft_p90_ms: round(percentile(timed, 90), 1),
    });
    log(`  first ${results.at(-1)!.first_ttft_ms} ms, then p50 ${results.at(-1)!.ttft_p50_ms} ms`);
  }
  const burstSystem = random(systemTokens);
  const burstPrompts = Array.from({ length: burst }, () => [...burstSystem, ...random(tailTokens)]);
  const busy = random(systemTokens + tailTokens);
  const burstResults: PrefixCacheBurstRun[] = [];
  for (const bytes of [0, CACHE_BYTES]) {
    log(`prefix cache ${bytes === 0 ? "off" : "on"}: a burst of ${burst} requests at once`);
    const runs = await timeRequests({ device, modelDir, bytes, prompts: burstPrompts, busy });
    const ttfts = runs.map((r) => r.ttft);
    burstResults.push({
      prefix_cache_bytes: bytes,
      last_ttft_ms: round(Math.max(...ttfts), 1),
      ttft_p50_ms: round(percentile(ttfts, 50), 1),
      cached_prompt_tokens: runs.reduce((sum, r) => sum + r.cached, 0),
    });
    log(`  last first token after ${burstResults.at(-1)!.last_ttft_ms} ms`);
  }
  return {
    machine: machineName(device),
    device,
    shape: "bench-1b",
    system_tokens: systemTokens,
    tail_tokens: tailTokens,
    requests,
    results,
    speedup_p50: round(results[0]!.ttft_p50_ms / results[1]!.ttft_p50_ms, 2),
    burst: {
      requests: burst,
      results: burstResults,
      speedup_last: round(burstResults[0]!.last_ttft_ms / burstResults[1]!.last_ttft_ms, 2),
    },
    setup: {
      layers,
      dtype: computeDtypeFor(device),
      path: "luminet worker core on the in-process bus, one request at a time, then a burst at once",
    },
  };
}

/**
 * Each prompt's time to first token, and the prompt tokens the prefix cache covered, through a fresh
 * worker: one request at a time, or, given a `busy` prompt, all sent at once just after a request of that
 * prompt (so they queue while it prefills), with a step budget that admits them all in one step.
 */
async function timeRequests(run: {
  device: Device;
  modelDir: string;
  bytes: number;
  prompts: number[][];
  busy?: number[];
}): Promise<TimedReply[]> {
  const longest = Math.max(...run.prompts.map((p) => p.length));
  const together = run.busy ? run.prompts.length + 1 : 1;
  const { gateway, stop } = await startBenchWorker({
    modelDir: run.modelDir,
    device: run.device,
    slots: 1,
    maxAdaptersPerBatch: 1,
    maxRank: 16,
    maxBatch: Math.max(4, together),
    maxContext: longest + 16,
    stepTokens: together * (longest + 16),
    prefixCacheBytes: run.bytes,
  });
  try {
    if (run.busy) {
      // On the bus first, so the worker is busy with it when the burst arrives.
      const busy = await sendRequest(gateway, "busy", run.busy, 2);
      const sent = performance.now();
      const inboxes = await Promise.all(
        run.prompts.map((prompt, i) => sendRequest(gateway, `burst-${i}`, prompt, 2)),
      );
      const [, burst] = await Promise.all([
        readReply(busy, "busy", () => {}),
        Promise.all(inboxes.map((inbox, i) => timeReply(inbox, `burst-${i}`, sent))),
      ]);
      return burst;
    }
    const runs: TimedReply[] = [];
    for (const [i, prompt] of run.prompts.entries()) {
      const sent = performance.now();
      runs.push(await timeReply(await sendRequest(gateway, `prefix-${i}`, prompt, 2), `prefix-${i}`, sent));
    }
    return runs;
  } finally {
    await stop();
  }
}

interface TimedReply {
  /** From `sent` to the reply's first token. */
  ttft: number;
  /** Prompt tokens the prefix cache covered. */
  cached: number;
}

/** Reads a sent request's reply: its time to first token from `sent`, and its prompt tokens from the cache. */
async function timeReply(inbox: ReplyInbox, id: string, sent: number): Promise<TimedReply> {
  let first = 0;
  const usage = await readReply(inbox, id, (at) => {
    first ||= at;
  });
  return { ttft: first - sent, cached: usage.cached_tokens ?? 0 };
}

/** Prints the result (one JSON line with --json, else a table) and saves bench/results/prefix-cache.json. */
export function reportPrefixCacheBench(
  result: PrefixCacheBenchResult,
  json: boolean,
  resultsDir = "bench/results",
): void {
  if (saveBenchResult("prefix-cache", result, json, resultsDir)) return;
  process.stdout.write(
    `prefix-cache bench on ${result.machine} (${result.device}, bench-1b ${result.setup.layers} layers ${result.setup.dtype}): ${result.requests} requests of a shared ${result.system_tokens}-token prefix and ${result.tail_tokens} tokens of their own\n`,
  );
  process.stdout.write("prefix cache   first TTFT   TTFT p50   TTFT p90   (ms)\n");
  for (const r of result.results) {
    process.stdout.write(
      `${(r.prefix_cache_bytes === 0 ? "off" : "on").padEnd(15)}${r.first_ttft_ms.toFixed(1).padEnd(13)}${r.ttft_p50_ms.toFixed(1).padEnd(11)}${r.ttft_p90_ms.toFixed(1)}\n`,
    );
  }
  process.stdout.write(`speedup at p50: ${result.speedup_p50}×\n`);
  process.stdout.write(
    `a burst of ${result.burst.requests} at once: last TTFT   TTFT p50   (ms)   prompt tokens from the cache\n`,
  );
  for (const r of result.burst.results) {
    process.stdout.write(
      `${(r.prefix_cache_bytes === 0 ? "off" : "on").padEnd(15)}${r.last_ttft_ms.toFixed(1).padEnd(13)}${r.ttft_p50_ms.toFixed(1).padEnd(16)}${r.cached_prompt_tokens}\n`,
    );
  }
  process.stdout.write(`speedup of the last first token: ${result.burst.speedup_last}×\n`);
}
