// `luminet bench <name>`: the benchmarks of ../shared/BENCH.md; results go to bench/results/<name>.json.
import { resolve } from "node:path";
import type { Command } from "commander";
import { logger } from "../../core/logger.ts";
import { reportBatchLoadBench, runBatchLoadBench } from "../../scripts/bench-batch-load.ts";
import { reportColdLoadBench, runColdLoadBench } from "../../scripts/bench-cold-load.ts";
import { reportE2eBench, runE2eBench } from "../../scripts/bench-e2e.ts";
import { reportEngineBench, runEngineBench } from "../../scripts/bench-engine.ts";
import { reportFleetBench, runFleetBench } from "../../scripts/bench-fleet.ts";
import { reportGatewayBench, runGatewayBench } from "../../scripts/bench-gateway.ts";
import { reportLongPromptBench, runLongPromptBench } from "../../scripts/bench-long-prompt.ts";
import { reportPrefixCacheBench, runPrefixCacheBench } from "../../scripts/bench-prefix-cache.ts";
import { reportPriorityBench, runPriorityBench } from "../../scripts/bench-priority.ts";
import { reportStructuredBench, runStructuredBench } from "../../scripts/bench-structured.ts";
import { reportSwitchBench, runSwitchBench } from "../../scripts/bench-switch.ts";
import { writeBenchmarkPlots } from "../../scripts/plot-benchmarks.ts";
import { parseDevice } from "../../worker/engine/device.ts";
import { LORA_FORMULATIONS, type LoraFormulation } from "../../worker/engine/engine.ts";
import { count, QUANTIZE_HELP, quantize } from "../flags.ts";
import { runCommand } from "../run-command.ts";

/** Where a benchmark's progress goes: stderr, so stdout holds only its result. */
const log = (line: string) => process.stderr.write(`${line}\n`);

/** What the engine-level benchmarks take: the device and which bench-1b. */
interface ModelFlags {
  device: string;
  layers?: string;
  model?: string;
  json?: boolean;
}

/** Adds --device, --layers and --model (`adapters`: which adapters the folder must hold). */
function modelOptions(command: Command, adapters = ""): Command {
  return command
    .option("--device <device>", "cpu | webgpu | cuda", "cpu")
    .option("--layers <n>", "layers of bench-1b (default 2 on cpu, 16 on a GPU)")
    .option(
      "--model <dir>",
      `a bench-1b folder${adapters ? ` with ${adapters}` : ""} (default: generated and cached in .luminet/)`,
    );
}

/** The options ModelFlags give a benchmark run, and its progress log. */
function modelRun(flags: ModelFlags) {
  return {
    device: parseDevice(flags.device),
    ...(flags.layers ? { layers: count("--layers", flags.layers) } : {}),
    ...(flags.model ? { modelDir: resolve(flags.model) } : {}),
    log,
  };
}

/**
 * Runs a benchmark's action with failures reported as "luminet bench <name>: message", and with a worker
 * inside logging only warnings and errors unless LOG_LEVEL asks (its log shares stdout with the result).
 */
function benchAction<F>(name: string, run: (flags: F) => Promise<void>): (flags: F) => Promise<void> {
  return (flags) =>
    runCommand(`bench ${name}`, () => {
      if (!process.env.LOG_LEVEL) logger.level = "warn";
      return run(flags);
    });
}

export function registerBench(program: Command): void {
  const bench = program.command("bench").description("benchmarks (see docs/BENCHMARKS.md)");
  modelOptions(
    bench
      .command("engine")
      .description("mixed-adapter decode throughput vs base-only, against a measured roofline"),
    "adapters/adapter-0..63",
  )
    .option(
      "--lora <formulation>",
      `${LORA_FORMULATIONS.join(" | ")} (default: segment-views on cpu, masked on a GPU)`,
    )
    .option("--threads <n>", "onnxruntime intra-op threads (default: every core; 1 measures CPU time best)")
    .option(
      "--rounds <n>",
      "times the interleaved schedule this often, each after a fresh prefill (default 3 on cpu, 1 on a GPU)",
    )
    .option(
      "--prepack",
      "cpu: every graph variant prepacks its own copy of the base weights (faster batched Gemms, a weights copy per variant)",
    )
    .option("--quantize <q4>", QUANTIZE_HELP)
    .option("--json", "print one JSON line")
    .action(
      benchAction(
        "engine",
        async (
          flags: ModelFlags & {
            lora?: string;
            threads?: string;
            rounds?: string;
            prepack?: boolean;
            quantize?: string;
          },
        ) => {
          const formulation = flags.lora as LoraFormulation | undefined;
          if (formulation !== undefined && !LORA_FORMULATIONS.includes(formulation)) {
            throw new Error(`--lora must be one of ${LORA_FORMULATIONS.join(", ")}, got ${flags.lora}`);
          }
          const result = await runEngineBench({
            ...modelRun(flags),
            ...(formulation ? { formulation } : {}),
            ...(flags.threads ? { threads: count("--threads", flags.threads) } : {}),
            ...(flags.rounds ? { rounds: count("--rounds", flags.rounds) } : {}),
            ...(flags.prepack ? { prepackWeights: true } : {}),
            ...(flags.quantize ? { quantize: quantize(flags.quantize) } : {}),
          });
          reportEngineBench(result, flags.json === true);
        },
      ),
    );
  bench
    .command("cold-load")
    .description("adapter load time from each tier (RAM, disk, blob store) and the step time meanwhile")
    .option("--layers <n>", "layers of bench-1b", "2")
    .option("--model <dir>", "a bench-1b folder with adapters/adapter-0..2 (default: generated in .luminet/)")
    .option("--json", "print one JSON line")
    .action(
      benchAction("cold-load", async (flags: { layers: string; model?: string; json?: boolean }) => {
        const result = await runColdLoadBench({
          layers: count("--layers", flags.layers),
          ...(flags.model ? { modelDir: resolve(flags.model) } : {}),
          log,
        });
        reportColdLoadBench(result, flags.json === true);
      }),
    );
  modelOptions(
    bench
      .command("switch")
      .description("hot adapter overhead: TTFT and per-token latency, resident adapter minus base-only"),
    "adapters/adapter-0",
  )
    .option("--requests <n>", "timed requests of each kind", "200")
    .option("--tokens <n>", "tokens each request generates", "4")
    .option("--json", "print one JSON line")
    .action(
      benchAction("switch", async (flags: ModelFlags & { requests: string; tokens: string }) => {
        const result = await runSwitchBench({
          ...modelRun(flags),
          requests: count("--requests", flags.requests),
          tokens: count("--tokens", flags.tokens),
        });
        reportSwitchBench(result, flags.json === true);
      }),
    );
  modelOptions(
    bench
      .command("batch-load")
      .description(
        "live requests on a worker whose batch is full of batch lines: their time to first token against idle, and the batch's tokens/s",
      ),
  )
    .option("--max-batch <n>", "the worker's --max-batch: batch lines kept in flight", "16")
    .option("--live <n>", "live requests in each phase", "12")
    .option("--line-tokens <n>", "tokens each batch line generates", "48")
    .option("--json", "print one JSON line")
    .action(
      benchAction(
        "batch-load",
        async (flags: ModelFlags & { maxBatch: string; live: string; lineTokens: string }) => {
          const result = await runBatchLoadBench({
            ...modelRun(flags),
            maxBatch: count("--max-batch", flags.maxBatch),
            live: count("--live", flags.live),
            lineTokens: count("--line-tokens", flags.lineTokens),
          });
          reportBatchLoadBench(result, flags.json === true);
        },
      ),
    );
  modelOptions(
    bench
      .command("priority")
      .description(
        "priority-tier against standard requests behind a backlog of standard ones: their time to first token",
      ),
  )
    .option("--max-batch <n>", "the worker's --max-batch", "16")
    .option("--backlog <n>", "standard requests kept in flight (default 4 x --max-batch)")
    .option("--probes <n>", "probe requests of each tier", "6")
    .option("--backlog-tokens <n>", "tokens a backlog request generates, on average", "32")
    .option(
      "--nats",
      "over NATS JetStream at NATS_URL (a namespace of its own) instead of the in-process bus",
    )
    .option("--json", "print one JSON line")
    .action(
      benchAction(
        "priority",
        async (
          flags: ModelFlags & {
            maxBatch: string;
            backlog?: string;
            probes: string;
            backlogTokens: string;
            nats?: boolean;
          },
        ) => {
          const natsUrl = process.env.NATS_URL;
          if (flags.nats && !natsUrl) throw new Error("--nats needs NATS_URL");
          const result = await runPriorityBench({
            ...modelRun(flags),
            maxBatch: count("--max-batch", flags.maxBatch),
            ...(flags.backlog ? { backlog: count("--backlog", flags.backlog) } : {}),
            probes: count("--probes", flags.probes),
            backlogTokens: count("--backlog-tokens", flags.backlogTokens),
            ...(flags.nats ? { natsUrl } : {}),
          });
          reportPriorityBench(result, flags.json === true);
        },
      ),
    );
  modelOptions(
    bench
      .command("long-prompt")
      .description(
        "what a long prompt does to the sequences streaming when it arrives: their longest gap, per step token budget",
      ),
  )
    .option("--prompt-tokens <n>", "tokens of the long prompt", "1536")
    .option("--streams <n>", "sequences streaming when it arrives", "8")
    .option(
      "--step-tokens <list>",
      "step token budgets to compare, comma-separated (default: the prompt's length plus the streams, which runs it whole, then 512 and 256)",
    )
    .option("--json", "print one JSON line")
    .action(
      benchAction(
        "long-prompt",
        async (flags: ModelFlags & { promptTokens: string; streams: string; stepTokens?: string }) => {
          const result = await runLongPromptBench({
            ...modelRun(flags),
            promptTokens: count("--prompt-tokens", flags.promptTokens),
            streams: count("--streams", flags.streams),
            ...(flags.stepTokens
              ? { stepTokens: flags.stepTokens.split(",").map((n) => count("--step-tokens", n.trim())) }
              : {}),
          });
          reportLongPromptBench(result, flags.json === true);
        },
      ),
    );
  modelOptions(
    bench
      .command("prefix-cache")
      .description(
        "time to first token of requests sharing a long prefix, with the worker's prefix cache off and on",
      ),
  )
    .option("--system-tokens <n>", "tokens of the shared prefix", "512")
    .option("--tail-tokens <n>", "tokens of each request's own tail", "32")
    .option("--requests <n>", "timed requests per mode", "16")
    .option("--burst <n>", "requests of the burst sent at once", "8")
    .option("--json", "print one JSON line")
    .action(
      benchAction(
        "prefix-cache",
        async (
          flags: ModelFlags & { systemTokens: string; tailTokens: string; requests: string; burst: string },
        ) => {
          const result = await runPrefixCacheBench({
            ...modelRun(flags),
            systemTokens: count("--system-tokens", flags.systemTokens),
            tailTokens: count("--tail-tokens", flags.tailTokens),
            requests: count("--requests", flags.requests),
            burst: count("--burst", flags.burst),
          });
          reportPrefixCacheBench(result, flags.json === true);
        },
      ),
    );
  bench
    .command("gateway")
    .description(
      "gateway added latency (HTTP minus bus-direct, streaming and not), requests/s, and the highest open-loop load with p99 under a limit (NATS_URL, DATABASE_URL)",
    )
    .option("--requests <n>", "timed requests of each kind", "2000")
    .option("--concurrency <n>", "connections of the closed-loop throughput run", "16")
    .option("--rate <n>", "open loop: the offered load the added latency is measured at, requests/s", "500")
    .option("--seconds <n>", "open loop: timed seconds at each rate", "5")
    .option("--p99-limit <ms>", "open loop: the p99 the highest sustained rate stays under", "10")
    .option("--json", "print one JSON line")
    .action(
      benchAction(
        "gateway",
        async (flags: {
          requests: string;
          concurrency: string;
          rate: string;
          seconds: string;
          p99Limit: string;
          json?: boolean;
        }) => {
          const result = await runGatewayBench({
            requests: count("--requests", flags.requests),
            concurrency: count("--concurrency", flags.concurrency),
            rate: count("--rate", flags.rate),
            seconds: count("--seconds", flags.seconds),
            p99LimitMs: count("--p99-limit", flags.p99Limit),
            log,
          });
          reportGatewayBench(result, flags.json === true);
        },
      ),
    );
  bench
    .command("fleet")
    .description(
      "routing quality across 4 worker processes on NATS (NATS_URL): resident hits and adapter loads vs a residency-blind router",
    )
    .option(
      "--requests <n>",
      "requests per phase (cold, then warm; residency-aware, then the baseline)",
      "2000",
    )
    .option("--concurrency <n>", "requests in flight at once", "16")
    .option("--json", "print one JSON line")
    .action(
      benchAction("fleet", async (flags: { requests: string; concurrency: string; json?: boolean }) => {
        const result = await runFleetBench({
          requests: count("--requests", flags.requests),
          concurrency: count("--concurrency", flags.concurrency),
          log,
          progress: true,
        });
        reportFleetBench(result, flags.json === true);
      }),
    );
  bench
    .command("e2e")
    .description(
      "the whole path: gateway, worker and meter processes on NATS and Postgres, streamed through the openai client; tokens/s vs the engine alone, usage vs billing",
    )
    .option("--shape <shape>", "tiny | bench-1b", "bench-1b")
    .option("--layers <n>", "layers of the model", "2")
    .option("--adapters <n>", "distinct adapters the requests use", "32")
    .option("--connections <n>", "concurrent streaming connections", "64")
    .option("--requests <n>", "timed requests (default: twice the connections)")
    .option("--max-tokens <n>", "max_tokens of every request", "32")
    .option("--rounds <n>", "rounds of one timed pass through the stack and one on the engine alone", "3")
    .option(
      "--threads <n>",
      "onnxruntime intra-op threads of the worker's engine and of the engine alone (default: every core; fewer leaves cores to the serving path)",
    )
    .option("--json", "print one JSON line")
    .action(benchAction("e2e", benchE2e));
  bench
    .command("structured")
    .description(
      "what structured output's mask costs a step: JSON schema, regex, choice, EBNF and Lark grammars on the bench vocabulary",
    )
    .option("--walks <n>", "walks per case; the first tables the states it meets", "5")
    .option("--steps <n>", "most tokens a walk draws", "48")
    .option("--json", "print one JSON line")
    .action(
      benchAction("structured", async (flags: { walks: string; steps: string; json?: boolean }) => {
        const result = runStructuredBench({
          walks: count("--walks", flags.walks),
          steps: count("--steps", flags.steps),
        });
        reportStructuredBench(result, flags.json === true);
      }),
    );
  bench
    .command("plots")
    .description("redraw the SVG plots of docs/BENCHMARKS.md from bench/results/*.json")
    .option("--results <dir>", "where the benchmark results are", "bench/results")
    .option("--out <dir>", "where the plots go", "docs/plots")
    .action((options: { results: string; out: string }) => {
      const written = writeBenchmarkPlots(options.results, options.out);
      if (written.length === 0) {
        process.stderr.write(`luminet bench plots: no engine or fleet results in ${options.results}\n`);
        process.exitCode = 1;
      }
      for (const path of written) process.stdout.write(`${path}\n`);
    });
}

interface E2eFlags {
  shape: string;
  layers: string;
  adapters: string;
  connections: string;
  requests?: string;
  maxTokens: string;
  rounds: string;
  threads?: string;
  json?: boolean;
}

async function benchE2e(options: E2eFlags): Promise<void> {
  if (options.shape !== "tiny" && options.shape !== "bench-1b") {
    throw new Error(`--shape must be tiny or bench-1b, got ${options.shape}`);
  }
  const result = await runE2eBench({
    shape: options.shape,
    layers: count("--layers", options.layers),
    adapters: count("--adapters", options.adapters),
    connections: count("--connections", options.connections),
    ...(options.requests ? { requests: count("--requests", options.requests) } : {}),
    maxTokens: count("--max-tokens", options.maxTokens),
    rounds: count("--rounds", options.rounds),
    ...(options.threads ? { threads: count("--threads", options.threads) } : {}),
    progress: true,
    log,
  });
  reportE2eBench(result, options.json === true);
  if (!result.billing.ok) {
    throw new Error(
      `${result.billing.mismatches.length} usages differ from their billed rows (bench/results/e2e.json lists them)`,
    );
  }
}
