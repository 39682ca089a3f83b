// `luminet bench switch`: the hot-adapter overhead of ../shared/BENCH.md ("switch"). One idle worker — the
// real worker core (engine thread, adapter tiers, scheduler, replies) on the in-process bus — serves one
// request at a time with the same prompt, alternating a request on a resident (pinned) rank-16 adapter with
// a base-only request, so both kinds see the same machine noise. Reported: time to first token and
// per-token latency, p50 and p99 per kind, and the adapter's overhead (adapter minus base-only).
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  type AdapterRef,
  ANY_WORKER,
  greedySampling,
  type InferenceRequest,
  WIRE_VERSION,
} from "../schema/wire.ts";
import { sha256OfFile } from "../worker/adapters/disk-cache.ts";
import { computeDtypeFor, type Device } from "../worker/engine/device.ts";
import { Prng } from "../worker/engine/prng.ts";
import { machineName } from "./bench-engine.ts";
import { saveBenchResult } from "./bench-result.ts";
import { type Percentiles, p50p99, round } from "./bench-stats.ts";
import { BENCH_BASE, startBenchWorker } from "./bench-worker.ts";
import { randomPrompts } from "./random-prompts.ts";
import { initTinyModel } from "./tiny-model.ts";

export interface SwitchBenchOptions {
  device: Device;
  /** Layers of bench-1b; default 2 on CPU, 16 on a GPU. */
  layers?: number;
  /** A bench-1b folder with adapters/adapter-0; generated (and cached) when absent. */
  modelDir?: string;
  /** Timed requests of each kind; at least 200 for a p99 worth the name. */
  requests?: number;
  /** Tokens each request generates. */
  tokens?: number;
  log?: (line: string) => void;
}

export interface SwitchBenchResult {
  machine: string;
  device: Device;
  shape: string;
  base: { ttft_ms: Percentiles; per_token_ms: Percentiles };
  adapter: { ttft_ms: Percentiles; per_token_ms: Percentiles };
  /**
   * Adapter minus base-only, percentile by percentile; and the percentiles of the difference within each
   * back-to-back pair, which cancels the drift of a shared machine's load.
   */
  overhead_ms: {
    ttft: Percentiles;
    per_token: Percentiles;
    paired_ttft: Percentiles;
    paired_per_token: Percentiles;
  };
  setup: {
    layers: number;
    dtype: string;
    rank: number;
    requests_per_kind: number;
    max_tokens: number;
    prompt_tokens: number;
    path: string;
  };
}

const RANK = 16;
const PROMPT_TOKENS = 32;
const WARM_UP = 4;

/** The engine benchmark's cached model when present (it has adapter-0), else one adapter of our own. */
export function benchModelWithAdapter(device: Device, layers: number, log: (line: string) => void): string {
  const dtype = device === "cpu" ? "F32" : "F16";
  const models = resolve(".luminet", "bench-models");
  const shared = join(models, `bench-1b-${layers}l-${dtype.toLowerCase()}`);
  if (existsSync(join(shared, "adapters", "adapter-0", "adapter_model.safetensors"))) return shared;
  const own = join(models, `bench-1b-${layers}l-${dtype.toLowerCase()}-1a`);
  if (existsSync(join(own, "adapters", "adapter-0", "adapter_model.safetensors"))) return own;
  log(`generating bench-1b (${layers} layers, ${dtype}) with one rank-${RANK} adapter in ${own}`);
  initTinyModel(own, { shape: "bench-1b", layers, adapters: 1, rank: RANK, seed: 7, dtype });
  return own;
}

export async function runSwitchBench(options: SwitchBenchOptions): Promise<SwitchBenchResult> {
  const log = options.log ?? (() => {});
  const { device } = options;
  const layers = options.layers ?? (device === "cpu" ? 2 : 16);
  const requests = options.requests ?? 200;
  const tokens = options.tokens ?? 4;
  if (tokens < 2) throw new RangeError("--tokens must be at least 2: per-token latency needs two tokens");
  const modelDir = options.modelDir ?? benchModelWithAdapter(device, layers, log);
  log("starting the worker (engine thread, graph variants)");
  const { worker, gateway, stop } = await startBenchWorker({
    modelDir,
    device,
    slots: 4,
    maxAdaptersPerBatch: 4,
    maxRank: RANK,
    maxBatch: 8,
    maxContext: PROMPT_TOKENS + tokens + 8,
    stepTokens: 512,
  });
  try {
    const sha256 = await sha256OfFile(join(modelDir, "adapters", "adapter-0", "adapter_model.safetensors"));
    const adapter: AdapterRef = {
      name: "bench/adapter-0",
      blob_key: "adapter-0",
      sha256: sha256!,
      rank: RANK,
    };
    await gateway.publishControl({
      v: WIRE_VERSION,
      kind: "pin",
      base: BENCH_BASE,
      adapter: adapter.name,
      pinned: true,
      blob: { blob_key: adapter.blob_key, sha256: adapter.sha256, rank: RANK },
      at: Date.now(),
    });
    while (!worker.tiers().slot.includes(adapter.name)) await new Promise((r) => setTimeout(r, 20));
    log(`adapter ${adapter.name} pinned in a slot`);

    const prompt = randomPrompts(modelDir, new Prng(3, 0))(PROMPT_TOKENS);
    let count = 0;
    const timeOne = async (withAdapter: boolean) => {
      const inbox = await gateway.openReplyInbox();
      const request: InferenceRequest = {
        v: WIRE_VERSION,
        id: `switch-${count++}`,
        org: "bench",
        api_key_id: "bench",
        base: BENCH_BASE,
        adapter: withAdapter ? adapter : null,
        prompt_token_ids: prompt,
        sampling: greedySampling(tokens),
        reply: inbox.subject,
        created_at: Date.now(),
        deadline: Date.now() + 10 * 60_000,
      };
      const sent = performance.now();
      await gateway.publishRequest(request, ANY_WORKER);
      const arrivals: number[] = [];
      for await (const reply of inbox) {
        if (reply.type === "chunk" && reply.token_ids.length > 0) arrivals.push(performance.now());
        if (reply.type === "final" && reply.finish_reason !== "length") {
          throw new Error(`bench request ended "${reply.finish_reason}": ${reply.error?.message ?? ""}`);
        }
      }
      const first = arrivals[0]!;
      return { ttft: first - sent, perToken: (arrivals.at(-1)! - first) / (arrivals.length - 1) };
    };

    for (let i = 0; i < WARM_UP; i++) {
      await timeOne(false);
      await timeOne(true);
    }
    const samples = {
      base: { ttft: [] as number[], perToken: [] as number[] },
      adapter: { ttft: [] as number[], perToken: [] as number[] },
    };
    const paired = { ttft: [] as number[], perToken: [] as number[] };
    for (let i = 0; i < requests; i++) {
      // Which kind goes first alternates, so neither always follows the other.
      for (const withAdapter of i % 2 === 0 ? [false, true] : [true, false]) {
        const { ttft, perToken } = await timeOne(withAdapter);
        const kind = withAdapter ? samples.adapter : samples.base;
        kind.ttft.push(ttft);
        kind.perToken.push(perToken);
      }
      paired.ttft.push(samples.adapter.ttft.at(-1)! - samples.base.ttft.at(-1)!);
      paired.perToken.push(samples.adapter.perToken.at(-1)! - samples.base.perToken.at(-1)!);
      if ((i + 1) % 50 === 0) log(`  ${i + 1}/${requests} request pairs`);
    }
    const base = { ttft_ms: p50p99(samples.base.ttft), per_token_ms: p50p99(samples.base.perToken) };
    const withAdapter = {
      ttft_ms: p50p99(samples.adapter.ttft),
      per_token_ms: p50p99(samples.adapter.perToken),
    };
    const minus = (a: Percentiles, b: Percentiles) => ({
      p50: round(a.p50 - b.p50, 3),
      p99: round(a.p99 - b.p99, 3),
    });
    return {
      machine: machineName(device),
      device,
      shape: "bench-1b",
      base,
      adapter: withAdapter,
      overhead_ms: {
        ttft: minus(withAdapter.ttft_ms, base.ttft_ms),
        per_token: minus(withAdapter.per_token_ms, base.per_token_ms),
        paired_ttft: p50p99(paired.ttft),
        paired_per_token: p50p99(paired.perToken),
      },
      setup: {
        layers,
        dtype: computeDtypeFor(device),
        rank: RANK,
        requests_per_kind: requests,
        max_tokens: tokens,
        prompt_tokens: PROMPT_TOKENS,
        path: "luminet worker core on the in-process bus, one request at a time",
      },
    };
  } finally {
    await stop();
  }
}

/** Prints the result (one JSON line with --json, else a table) and saves bench/results/switch.json. */
export function reportSwitchBench(
  result: SwitchBenchResult,
  json: boolean,
  resultsDir = "bench/results",
): void {
  if (saveBenchResult("switch", result, json, resultsDir)) return;
  const { setup } = result;
  process.stdout.write(
    `switch bench on ${result.machine} (${result.device}, bench-1b ${setup.layers} layers ${setup.dtype}, rank ${setup.rank}; ${setup.requests_per_kind} requests per kind, ${setup.prompt_tokens}-token prompt, ${setup.max_tokens} tokens each)\n`,
  );
  process.stdout.write("                    TTFT p50   TTFT p99   per-token p50   per-token p99   (ms)\n");
  const row = (name: string, ttft: Percentiles, perToken: Percentiles) =>
    process.stdout.write(
      `${name.padEnd(20)}${ttft.p50.toFixed(3).padEnd(11)}${ttft.p99.toFixed(3).padEnd(11)}${perToken.p50.toFixed(3).padEnd(16)}${perToken.p99.toFixed(3)}\n`,
    );
  row("base-only", result.base.ttft_ms, result.base.per_token_ms);
  row("resident adapter", result.adapter.ttft_ms, result.adapter.per_token_ms);
  row("overhead", result.overhead_ms.ttft, result.overhead_ms.per_token);
  row("paired overhead", result.overhead_ms.paired_ttft, result.overhead_ms.paired_per_token);
}
