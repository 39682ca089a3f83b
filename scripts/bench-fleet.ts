// `luminet bench fleet`: routing quality across workers (../shared/BENCH.md, "fleet"). Four `luminet worker`
// processes with the tiny model, 16 slots each, on a real NATS (NATS_URL, a namespace of the run's own),
// serve 200 adapters whose popularity follows Zipf(1.0); requests go through the gateway's own routing and
// generation path (gateway/generation.ts, routing on the workers' heartbeats) from a closed loop of
// concurrent clients in this process. Each router runs on fresh workers: residency-aware routing, then a
// residency-blind least-loaded router as the baseline, each in two phases of the same size — cold (every
// adapter starts in the blob store) and warm (a new draw on the workers as the cold phase left them).
// Reported per phase: where each request's adapter was when it reached its worker (the workers' own count
// from their /metrics: in a slot, in RAM, ...), the routing decision's view, adapter loads per 1,000
// requests, tokens/s and time to first token.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Bus } from "../bus/bus.ts";
import { connectJetStreamBus } from "../bus/jetstream.ts";
import { startGenerations } from "../gateway/generation.ts";
import { quietMetrics } from "../gateway/quiet-metrics.ts";
import type { RouteOutcome } from "../gateway/routing.ts";
import type { AdapterRef } from "../schema/wire.ts";
import { greedySampling } from "../schema/wire.ts";
import type { LoadTier, Whereabouts } from "../worker/adapters/adapter-manager.ts";
import { sha256OfFile } from "../worker/adapters/disk-cache.ts";
import { Prng } from "../worker/engine/prng.ts";
import { machineName } from "./bench-engine.ts";
import { saveBenchResult } from "./bench-result.ts";
import { p50p99, round } from "./bench-stats.ts";
import { closedLoop } from "./closed-loop.ts";
import { type LuminetProcess, startLuminetProcess } from "./luminet-process.ts";
import { benchNamespace, removeNamespace } from "./nats-namespace.ts";
import { phaseBar } from "./phase-bar.ts";
import { metricByLabel } from "./prometheus-text.ts";
import { initTinyModel } from "./tiny-model.ts";

export interface FleetBenchOptions {
  /** The NATS the workers and the routing side meet on; default NATS_URL. */
  natsUrl?: string;
  workers?: number;
  slots?: number;
  adapters?: number;
  requests?: number;
  /** Requests in flight at once (closed loop). */
  concurrency?: number;
  /** Tokens each request generates. */
  tokens?: number;
  log?: (line: string) => void;
  /** A cli-progress bar per phase on stderr. */
  progress?: boolean;
}

/** One phase of a run: its requests' routes, where their adapters were, loads and speed. */
export interface FleetPhase {
  requests: number;
  /** The gateway's view when routing (`luminet_route_total`): the chosen worker's last heartbeat. */
  routes: Record<RouteOutcome, number>;
  /** The workers' view (`luminet_adapter_arrivals_total`): where the adapter was when the request arrived. */
  arrivals: Record<Whereabouts, number>;
  /** Arrived at a worker holding its adapter in a slot. */
  in_slot_share: number;
  /** Arrived at a worker holding its adapter in a slot or in RAM (a load from RAM is a copy, no I/O). */
  in_memory_share: number;
  /** Adapter loads into a slot (from RAM, disk or the blob store) per 1,000 requests. */
  loads_per_1000: number;
  /** The same by the tier each load came from; "blob" is a fetch from the blob store. */
  loads_per_1000_by_tier: Record<LoadTier, number>;
  tokens_per_s: number;
  ttft_ms: { p50: number; p99: number };
  seconds: number;
}

/**
 * One router's run on fresh workers: `cold`, the first requests (every adapter starts in the blob store),
 * then `warm`, as many more drawn from the same popularity on the workers as the cold phase left them.
 */
export interface FleetRun {
  router: "residency" | "least-loaded";
  cold: FleetPhase;
  warm: FleetPhase;
}

export interface FleetBenchResult {
  machine: string;
  setup: {
    workers: number;
    slots_per_worker: number;
    adapters: number;
    zipf_s: number;
    requests: number;
    concurrency: number;
    prompt_tokens: number;
    max_tokens: number;
    model: string;
    path: string;
  };
  residency: FleetRun;
  baseline: FleetRun;
  /** residency's loads / the baseline's over both phases, all tiers and from the blob store only. */
  load_ratio: number;
  blob_load_ratio: number;
}

const BASE = "tiny";
const RANK = 4;
const PROMPT_TOKENS = 16;
const ZIPF_S = 1.0;

/** Adapter indices drawn from Zipf(s) over n adapters (index 0 the most popular), by inverse CDF. */
export function zipfSequence(n: number, s: number, count: number, prng: Prng): number[] {
  const cdf: number[] = [];
  let total = 0;
  for (let k = 1; k <= n; k++) {
    total += 1 / k ** s;
    cdf.push(total);
  }
  return Array.from({ length: count }, () => {
    const u = prng.nextFloat() * total;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (cdf[mid]! < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  });
}

const ratio = (a: number, b: number) => (b > 0 ? round(a / b) : 0);

interface WorkerCounts {
  loads: Record<LoadTier, number>;
  arrivals: Record<Whereabouts, number>;
}

const noLoads = (): Record<LoadTier, number> => ({ ram: 0, disk: 0, blob: 0 });
const noArrivals = (): Record<Whereabouts, number> => ({ slot: 0, ram: 0, disk: 0, loading: 0, none: 0 });

/** The workers' own counters, from their /metrics, summed over the fleet. */
async function fleetCounts(metricsUrls: readonly string[]): Promise<WorkerCounts> {
  const counts = { loads: noLoads(), arrivals: noArrivals() };
  for (const url of metricsUrls) {
    const text = await (await fetch(url)).text();
    const loads = metricByLabel(text, "luminet_adapter_load_seconds_count", "tier");
    for (const [tier, n] of Object.entries(loads)) counts.loads[tier as LoadTier] += n;
    const arrivals = metricByLabel(text, "luminet_adapter_arrivals_total", "tier");
    for (const [tier, n] of Object.entries(arrivals)) counts.arrivals[tier as Whereabouts] += n;
  }
  return counts;
}

function minus<K extends string>(after: Record<K, number>, before: Record<K, number>): Record<K, number> {
  return Object.fromEntries(Object.entries<number>(after).map(([k, v]) => [k, v - before[k as K]])) as Record<
    K,
    number
  >;
}

async function runOnce(
  router: FleetRun["router"],
  modelDir: string,
  adapters: readonly AdapterRef[],
  sequences: { cold: readonly number[]; warm: readonly number[] },
  o: Required<Omit<FleetBenchOptions, "log">>,
  log: (line: string) => void,
): Promise<FleetRun> {
  const scratch = mkdtempSync(join(tmpdir(), "luminet-bench-fleet-"));
  const namespace = benchNamespace("fleet");
  const workers: LuminetProcess[] = [];
  let gateway: Bus | undefined;
  try {
    const started = await Promise.all(
      Array.from({ length: o.workers }, (_, i) =>
        startLuminetProcess({
          args: [
            "worker",
            ...["--model", modelDir, "--base", BASE, "--worker-id", `w${i}`, "--namespace", namespace],
            ...["--device", "cpu", "--threads", "1", "--metrics-port", "0"],
            ...["--slots", String(o.slots), "--max-adapters-per-batch", String(o.slots)],
            ...["--max-rank", String(RANK), "--max-batch", "16", "--step-tokens", "256"],
            ...["--max-context", String(PROMPT_TOKENS + o.tokens + 8), "--ram-cache-bytes", "256MiB"],
            ...["--blobs", join(modelDir, "adapters"), "--disk-cache", join(scratch, `cache-${i}`)],
            ...["--disk-cache-bytes", "1GiB", "--usage-spool", join(scratch, `usage-spool-${i}`)],
          ],
          env: { NATS_URL: o.natsUrl, LOG_LEVEL: "info" },
          ready: (entry) => entry.msg === "worker ready",
        }).then((worker) => {
          workers.push(worker);
          return worker;
        }),
      ),
    );
    const metricsUrls = started.map((w) => `http://127.0.0.1:${w.readyEntry.metricsPort}/metrics`);
    gateway = await connectJetStreamBus({
      servers: o.natsUrl,
      namespace,
      connectionName: "luminet-bench-fleet",
    });
    while ((await gateway.liveHeartbeats(BASE)).length < o.workers)
      await new Promise((r) => setTimeout(r, 50));
    log(`${router}: ${o.workers} worker processes up`);
    const bus = gateway;

    let routes: Record<RouteOutcome, number>;
    const metrics = quietMetrics({
      routed(_base, outcome) {
        routes[outcome]++;
      },
    });
    const prng = new Prng(11, 0);
    const prompt = Array.from({ length: PROMPT_TOKENS }, () => 3 + Math.floor(prng.nextFloat() * 200));

    const runPhase = async (phase: "cold" | "warm", sequence: readonly number[]): Promise<FleetPhase> => {
      log(`${router}, ${phase}: ${sequence.length} requests, ${o.concurrency} at a time`);
      const bar = phaseBar(o.progress, `${router}, ${phase} (requests)`, sequence.length);
      routes = { resident: 0, ram: 0, disk: 0, cold: 0, fallback: 0 };
      const before = await fleetCounts(metricsUrls);
      const ttfts: number[] = [];
      let tokens = 0;
      const started = performance.now();
      await closedLoop(sequence.length, o.concurrency, async (index) => {
        const sent = performance.now();
        const [generation] = await startGenerations(
          {
            bus,
            routing: { residencyBlind: router === "least-loaded" },
            timeoutMs: 10 * 60_000,
            retryAfterSeconds: 1,
            coldStartTimeoutMs: 0,
            now: Date.now,
            metrics,
          },
          {
            requestId: `${router}-${phase}-${index}`,
            caller: { keyId: "bench", orgId: "bench", prefix: "bench", scopes: [] },
            base: BASE,
            adapter: adapters[sequence[index]!]!,
            admitted: {
              prompts: [{ tokenIds: prompt, maxTokens: o.tokens }],
              sampling: greedySampling(o.tokens),
              choices: 1,
              stream: true,
              includeUsage: false,
            },
          },
        );
        let first = true;
        const chunks = generation!.chunks();
        for (;;) {
          const step = await chunks.next();
          if (step.done) break;
          if (first) ttfts.push(performance.now() - sent);
          first = false;
          tokens += step.value.token_ids.length;
        }
        bar.increment();
      });
      bar.stop();
      const seconds = (performance.now() - started) / 1000;
      const after = await fleetCounts(metricsUrls);
      const loads = minus(after.loads, before.loads);
      const arrivals = minus(after.arrivals, before.arrivals);
      const per1000 = (n: number) => round((n * 1000) / sequence.length, 1);
      return {
        requests: sequence.length,
        routes,
        arrivals,
        in_slot_share: round(arrivals.slot / sequence.length, 4),
        in_memory_share: round((arrivals.slot + arrivals.ram) / sequence.length, 4),
        loads_per_1000: per1000(loads.ram + loads.disk + loads.blob),
        loads_per_1000_by_tier: {
          ram: per1000(loads.ram),
          disk: per1000(loads.disk),
          blob: per1000(loads.blob),
        },
        tokens_per_s: round(tokens / seconds, 1),
        ttft_ms: p50p99(ttfts),
        seconds: round(seconds, 1),
      };
    };
    const cold = await runPhase("cold", sequences.cold);
    const warm = await runPhase("warm", sequences.warm);
    return { router, cold, warm };
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    await gateway?.close();
    await removeNamespace(o.natsUrl, namespace);
    rmSync(scratch, { recursive: true, force: true });
  }
}

export async function runFleetBench(options: FleetBenchOptions = {}): Promise<FleetBenchResult> {
  const log = options.log ?? (() => {});
  const natsUrl = options.natsUrl ?? process.env.NATS_URL;
  if (!natsUrl) {
    throw new Error(
      "NATS_URL is not set: the fleet benchmark's workers are processes on a real NATS with JetStream (e.g. nats://127.0.0.1:4222)",
    );
  }
  const o = {
    natsUrl,
    workers: options.workers ?? 4,
    slots: options.slots ?? 16,
    adapters: options.adapters ?? 200,
    requests: options.requests ?? 2_000,
    concurrency: options.concurrency ?? 16,
    tokens: options.tokens ?? 8,
    progress: options.progress === true,
  };
  const modelDir = mkdtempSync(join(tmpdir(), "luminet-bench-fleet-model-"));
  try {
    log(`generating the tiny model with ${o.adapters} rank-${RANK} adapters`);
    initTinyModel(modelDir, { shape: "tiny", adapters: o.adapters, rank: RANK, seed: 7 });
    const adapters = await Promise.all(
      Array.from({ length: o.adapters }, async (_, i): Promise<AdapterRef> => {
        const file = join(modelDir, "adapters", `adapter-${i}`, "adapter_model.safetensors");
        return {
          name: `bench/adapter-${i}`,
          blob_key: `adapter-${i}`,
          sha256: (await sha256OfFile(file))!,
          rank: RANK,
        };
      }),
    );
    const sequences = {
      cold: zipfSequence(o.adapters, ZIPF_S, o.requests, new Prng(5, 0)),
      warm: zipfSequence(o.adapters, ZIPF_S, o.requests, new Prng(5, 1)),
    };
    const residency = await runOnce("residency", modelDir, adapters, sequences, o, log);
    const baseline = await runOnce("least-loaded", modelDir, adapters, sequences, o, log);
    const allLoads = (run: FleetRun, tier?: LoadTier) =>
      [run.cold, run.warm].reduce(
        (sum, phase) => sum + (tier ? phase.loads_per_1000_by_tier[tier] : phase.loads_per_1000),
        0,
      );
    return {
      machine: machineName("cpu"),
      setup: {
        workers: o.workers,
        slots_per_worker: o.slots,
        adapters: o.adapters,
        zipf_s: ZIPF_S,
        requests: o.requests,
        concurrency: o.concurrency,
        prompt_tokens: PROMPT_TOKENS,
        max_tokens: o.tokens,
        model: "tiny (random weights), fp32, 1 onnxruntime thread per worker",
        path: `gateway routing and generation (startGenerations) -> NATS JetStream -> ${o.workers} luminet worker processes`,
      },
      residency,
      baseline,
      load_ratio: ratio(allLoads(residency), allLoads(baseline)),
      blob_load_ratio: ratio(allLoads(residency, "blob"), allLoads(baseline, "blob")),
    };
  } finally {
    rmSync(modelDir, { recursive: true, force: true });
  }
}

/** Prints the result (one JSON line with --json, else a table) and saves bench/results/fleet.json. */
export function reportFleetBench(
  result: FleetBenchResult,
  json: boolean,
  resultsDir = "bench/results",
): void {
  if (saveBenchResult("fleet", result, json, resultsDir)) return;
  const { setup } = result;
  process.stdout.write(
    `fleet bench on ${result.machine}: ${setup.workers} workers x ${setup.slots_per_worker} slots, ${setup.adapters} adapters, Zipf(${setup.zipf_s}), ${setup.requests} requests, ${setup.concurrency} in flight\n`,
  );
  process.stdout.write(
    "router        phase  in slot   in memory   loads/1000   blob loads/1000   tokens/s   TTFT p50   TTFT p99 (ms)\n",
  );
  const share = (x: number) => `${(x * 100).toFixed(1)} %`;
  for (const run of [result.residency, result.baseline]) {
    for (const phase of ["cold", "warm"] as const) {
      const p = run[phase];
      process.stdout.write(
        `${run.router.padEnd(14)}${phase.padEnd(7)}${share(p.in_slot_share).padEnd(10)}${share(p.in_memory_share).padEnd(12)}${String(p.loads_per_1000).padEnd(13)}${String(p.loads_per_1000_by_tier.blob).padEnd(18)}${String(p.tokens_per_s).padEnd(11)}${String(p.ttft_ms.p50).padEnd(11)}${p.ttft_ms.p99}\n`,
      );
    }
  }
  process.stdout.write(
    `loads vs baseline: ${share(result.load_ratio)} (all tiers), ${share(result.blob_load_ratio)} (blob store)\n`,
  );
}
