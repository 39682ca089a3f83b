// `luminet bench e2e`: the whole path (../shared/BENCH.md, "e2e"). Three real processes — `luminet gateway`,
// `luminet worker` and `luminet meter` — on real NATS (NATS_URL, a namespace of the run's own) and real
// Postgres (a scratch database on DATABASE_URL's server, dropped afterwards). An admin key uploads the
// adapters through the API; then the official `openai` client streams chat completions from N concurrent
// connections (a closed loop), request i on adapter i mod A. Generated tokens/s end to end is compared with
// the engine alone — the worker's own Scheduler over an EngineThread, no bus, every adapter resident — on
// exactly the same mix: the same prompt token ids, adapters, max_tokens, greedy, stop tokens and
// concurrency. Each round runs one pass through the stack and one on the engine alone back to back (ABBA:
// the order flips every round), and the ratio is the median of the rounds' ratios, because the machine is
// shared. Finally every response's usage (stream_options.include_usage) must equal its billed usage_events
// row.
//
// Both sides start with one untimed request per adapter, so adapter loads are timed in neither. While a
// pass through the stack runs, the CPU seconds of each process and the worker's own step seconds (its
// /metrics) are read: they say where an overhead goes, the engine idle between requests or slower steps.
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Readable } from "node:stream";
import { eq } from "drizzle-orm";
import type OpenAI from "openai";
import { migrate } from "../db/migrate.ts";
import { openDb } from "../db/open.ts";
import { archiveSize, archiveStream } from "../gateway/adapter-archive.ts";
import { createApiKey, ensureOrg } from "../gateway/api-keys.ts";
import { usageEvents } from "../schema/db.ts";
import type { AdapterRef } from "../schema/wire.ts";
import { ADAPTER_FILES } from "../worker/adapters/blob-store.ts";
import { loadPeftAdapter } from "../worker/adapters/peft.ts";
import { EngineThread } from "../worker/engine/engine-thread.ts";
import { Prng } from "../worker/engine/prng.ts";
import { GREEDY } from "../worker/engine/sampler.ts";
import { loadTokenizer } from "../worker/engine/tokenizer.ts";
import { ResidentAdapters } from "../worker/resident-adapters.ts";
import { Scheduler } from "../worker/scheduler.ts";
import { ensureBenchModel, machineName } from "./bench-engine.ts";
import { saveBenchResult } from "./bench-result.ts";
import { p50p99, round } from "./bench-stats.ts";
import { closedLoop } from "./closed-loop.ts";
import { type LuminetProcess, startLuminetProcess } from "./luminet-process.ts";
import { benchNamespace, removeNamespace } from "./nats-namespace.ts";
import { phaseBar } from "./phase-bar.ts";
import { cpuSecondsOf } from "./process-cpu.ts";
import { metricValue } from "./prometheus-text.ts";
import { postgresServerUrl, scratchDatabase } from "./scratch-database.ts";
import { initTinyModel, type TinyShape } from "./tiny-model.ts";

export interface E2eBenchOptions {
  /** Model shape; default bench-1b (random weights, fp32). */
  shape?: TinyShape;
  /** Layers of the model; default 2 (fits a 2-core CPU). */
  layers?: number;
  /** Distinct adapters the requests use; default 32. */
  adapters?: number;
  /** Concurrent streaming connections (requests in flight); default 64. */
  connections?: number;
  /** Timed requests; default twice the connections. */
  requests?: number;
  /** max_tokens of every request; default 32. */
  maxTokens?: number;
  /** Rounds of one timed pass through the stack and one on the engine alone; default 3. */
  rounds?: number;
  /**
   * onnxruntime intra-op threads of both sides (the worker's `--threads` and the engine alone's); default
   * every core. Fewer leaves cores to the serving path, as a GPU host's engine does.
   */
  threads?: number;
  /** Default NATS_URL. */
  natsUrl?: string;
  /** A Postgres server (a scratch database is made on it); default DATABASE_URL. */
  databaseUrl?: string;
  /** A cli-progress bar per phase on stderr. */
  progress?: boolean;
  log?: (line: string) => void;
}

export interface E2eRun {
  requests: number;
  tokens: number;
  seconds: number;
  tokens_per_s: number;
}

export interface E2eBenchResult {
  machine: string;
  /** Load average (1 min) when the run began: the machine is shared. */
  load_average: number;
  setup: {
    shape: TinyShape;
    layers: number;
    adapters: number;
    rank: number;
    connections: number;
    requests: number;
    rounds: number;
    max_tokens: number;
    /** onnxruntime intra-op threads of each side's engine (without --threads: every core). */
    threads: number;
    prompt_tokens_mean: number;
    worker: { slots: number; max_batch: number; step_tokens: number };
    path: string;
  };
  /** Through the stack: the median pass's tokens/s, and every pass. */
  e2e: {
    tokens_per_s: number;
    passes: E2eRun[];
    ttft_ms: { p50: number; p99: number };
    /** The worker's step seconds (prefills and decodes) over the timed wall time of every pass. */
    engine_busy_share: number;
    step_seconds: number;
    /** CPU seconds each process used in the timed passes; null where /proc is not readable. */
    cpu_seconds: { client: number; gateway: number | null; worker: number | null; meter: number | null };
  };
  /** The engine alone on the same mix: the median pass's tokens/s, and every pass. */
  engine: {
    tokens_per_s: number;
    passes: E2eRun[];
    /** CPU seconds of this process (the engine thread and the scheduler) in the engine-alone passes. */
    cpu_seconds: number;
  };
  /** End-to-end tokens/s over the engine's own, per round (its two passes ran back to back). */
  round_ratios: number[];
  /** The median of round_ratios; the aim is ≥ 0.9. */
  ratio: number;
  /** Every pass, either way, generated the same number of tokens for each request (greedy, same mix). */
  same_completion_tokens: boolean;
  billing: {
    responses: number;
    billed_rows: number;
    matched: number;
    /** Responses whose usage differs from their row (or have no row), and rows no response announced. */
    mismatches: { request_id: string; response: Usage | null; billed: Usage | null }[];
    /** From the last response to the last billing row. */
    meter_lag_ms: number;
    ok: boolean;
  };
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

/** One request of the mix: its chat message, the prompt ids the gateway makes of it, its adapter. */
interface MixItem {
  content: string;
  promptTokens: number[];
  adapter: number;
  maxTokens: number;
}

const BASE = "bench";
const ORG = "bench";
const RANK = 16;
const STEP_TOKENS = 1024;
/** The worker's prefix cache, the same for the engine alone. */
const PREFIX_CACHE_BYTES = 512 * 2 ** 20;
/** Adapters in the engine bench's cached bench-1b folder, which this bench shares. */
const BENCH_MODEL_ADAPTERS = 64;
/** The words the prompts are drawn from. */
const WORDS = (
  "the a river stone light quiet morning engine signal garden paper window orbit copper silver harbor " +
  "forest winter market lantern bridge"
).split(" ");

async function loadOpenAi(): Promise<typeof OpenAI> {
  try {
    return (await import("openai")).default;
  } catch {
    throw new Error(
      "luminet bench e2e drives the stack with the official openai client, a devDependency: run `npm ci` (without --omit=dev)",
    );
  }
}

function buildMix(modelDir: string, count: number, adapters: number, maxTokens: number, offset = 0) {
  const tokenizer = loadTokenizer(modelDir);
  const prng = new Prng(23, offset);
  return Array.from({ length: count }, (_, i): MixItem => {
    const words = Array.from({ length: 8 }, () => WORDS[Math.floor(prng.nextFloat() * WORDS.length)]);
    const content = `Request ${offset + i}: ${words.join(" ")}`;
    // What the gateway's admission makes of it (gateway/admission.ts).
    const text = tokenizer.applyChatTemplate([{ role: "user", content }], { addGenerationPrompt: true });
    const promptTokens = tokenizer.encode(text, { addSpecialTokens: false });
    return { content, promptTokens, adapter: (offset + i) % adapters, maxTokens };
  });
}

interface Stack {
  url: string;
  gateway: LuminetProcess;
  worker: LuminetProcess;
  meter: LuminetProcess;
  workerMetricsUrl: string;
  stop(): Promise<void>;
}

async function startStack(
  o: { natsUrl: string; databaseUrl: string; namespace: string; modelDir: string; scratch: string },
  worker: { slots: number; maxBatch: number; maxContext: number; threads?: number },
): Promise<Stack> {
  const env = { NATS_URL: o.natsUrl, DATABASE_URL: o.databaseUrl, LOG_LEVEL: "info" };
  const blobs = join(o.scratch, "blobs");
  const started: LuminetProcess[] = [];
  const stop = async () => {
    for (const p of started.splice(0).reverse()) await p.stop();
  };
  try {
    const gateway = await startLuminetProcess({
      args: ["gateway", "--model", `${BASE}=${o.modelDir}`, "--port", "0", "--host", "127.0.0.1"].concat([
        "--namespace",
        o.namespace,
        "--blobs",
        blobs,
        "--max-adapter-rank",
        String(RANK),
      ]),
      env,
      ready: (entry) => typeof entry.url === "string" && String(entry.msg).startsWith("gateway listening"),
    });
    started.push(gateway);
    const meter = await startLuminetProcess({
      args: ["meter", "--namespace", o.namespace],
      env,
      ready: (entry) => entry.msg === "meter started",
    });
    started.push(meter);
    const workerProcess = await startLuminetProcess({
      args: [
        "worker",
        "--model",
        o.modelDir,
        "--base",
        BASE,
        "--worker-id",
        "e2e",
        "--namespace",
        o.namespace,
      ]
        .concat(["--blobs", blobs, "--disk-cache", join(o.scratch, "cache"), "--metrics-port", "0"])
        .concat(["--usage-spool", join(o.scratch, "usage-spool")])
        .concat(["--slots", String(worker.slots), "--max-adapters-per-batch", String(worker.slots)])
        .concat(["--max-rank", String(RANK), "--max-batch", String(worker.maxBatch)])
        .concat(["--max-context", String(worker.maxContext), "--step-tokens", String(STEP_TOKENS)])
        .concat(["--prefix-cache-bytes", String(PREFIX_CACHE_BYTES)])
        .concat(worker.threads ? ["--threads", String(worker.threads)] : []),
      env,
      ready: (entry) => entry.msg === "worker ready",
    });
    started.push(workerProcess);
    return {
      url: String(gateway.readyEntry.url),
      gateway,
      worker: workerProcess,
      meter,
      workerMetricsUrl: `http://127.0.0.1:${workerProcess.readyEntry.metricsPort}/metrics`,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function uploadAdapter(url: string, key: string, folder: string, name: string): Promise<void> {
  const files = ADAPTER_FILES.map((file) => ({ name: file, path: join(folder, file) }));
  const response = await fetch(`${url}/v1/adapters?${new URLSearchParams({ base: BASE, name })}`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${key}`,
      "content-type": "application/x-tar",
      "content-length": String(archiveSize(files)),
    },
    body: Readable.toWeb(archiveStream(files)) as ReadableStream<Uint8Array>,
    duplex: "half",
  } as RequestInit);
  if (!response.ok) throw new Error(`uploading ${name}: HTTP ${response.status} ${await response.text()}`);
}

interface Answer {
  requestId: string;
  usage: Usage | null;
  ttftMs: number;
}

/** One streamed chat completion through the openai client. */
async function ask(client: OpenAI, item: MixItem): Promise<Answer> {
  const sent = performance.now();
  const stream = await client.chat.completions.create({
    model: `${BASE}:${ORG}/adapter-${item.adapter}`,
    messages: [{ role: "user", content: item.content }],
    max_tokens: item.maxTokens,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let id = "";
  let usage: Usage | null = null;
  let ttftMs = -1;
  for await (const chunk of stream) {
    id = chunk.id;
    if (ttftMs < 0 && chunk.choices[0]?.delta.content) ttftMs = performance.now() - sent;
    if (chunk.usage) {
      usage = { prompt_tokens: chunk.usage.prompt_tokens, completion_tokens: chunk.usage.completion_tokens };
    }
  }
  return { requestId: id.replace(/^chatcmpl-/, ""), usage, ttftMs };
}

async function workerMetrics(url: string) {
  const text = await (await fetch(url)).text();
  return { stepSeconds: metricValue(text, "luminet_step_seconds_sum") };
}

/** Waits until the meter billed every answer (or 60 s passed), then compares each usage with its row. */
async function checkBilling(
  db: Awaited<ReturnType<typeof openDb>>,
  answers: readonly Answer[],
): Promise<E2eBenchResult["billing"]> {
  const waitStart = performance.now();
  let rows = await db.select().from(usageEvents).where(eq(usageEvents.orgId, ORG));
  while (rows.length < answers.length && performance.now() - waitStart < 60_000) {
    await new Promise((r) => setTimeout(r, 100));
    rows = await db.select().from(usageEvents).where(eq(usageEvents.orgId, ORG));
  }
  const meterLagMs = performance.now() - waitStart;
  const billed = new Map(
    rows.map((row) => [
      row.requestId,
      { prompt_tokens: row.inputTokens, completion_tokens: row.outputTokens },
    ]),
  );
  const mismatches: E2eBenchResult["billing"]["mismatches"] = [];
  let matched = 0;
  for (const answer of answers) {
    const row = billed.get(answer.requestId) ?? null;
    billed.delete(answer.requestId);
    const same =
      row !== null &&
      answer.usage !== null &&
      row.prompt_tokens === answer.usage.prompt_tokens &&
      row.completion_tokens === answer.usage.completion_tokens;
    if (same) matched++;
    else mismatches.push({ request_id: answer.requestId, response: answer.usage, billed: row });
  }
  for (const [requestId, row] of billed)
    mismatches.push({ request_id: requestId, response: null, billed: row });
  return {
    responses: answers.length,
    billed_rows: rows.length,
    matched,
    mismatches,
    meter_lag_ms: round(meterLagMs, 1),
    ok: mismatches.length === 0,
  };
}

/** One timed pass of the mix through the stack. */
interface StackPass {
  run: E2eRun;
  answers: Answer[];
  stepSeconds: number;
  cpu: CpuSeconds;
}

type CpuSeconds = E2eBenchResult["e2e"]["cpu_seconds"];

/** The openai client on the stack, warmed up (one request per adapter) and ready for timed passes. */
async function stackClient(stack: Stack, key: string, warmUp: readonly MixItem[], connections: number) {
  const OpenAIClient = await loadOpenAi();
  const client = new OpenAIClient({
    apiKey: key,
    baseURL: `${stack.url}/v1`,
    maxRetries: 0,
    timeout: 30 * 60_000,
  });
  const warmAnswers: Answer[] = [];
  await closedLoop(warmUp.length, connections, async (i) => {
    warmAnswers.push(await ask(client, warmUp[i]!));
  });
  return { client, warmAnswers };
}

async function stackPass(
  stack: Stack,
  client: OpenAI,
  mix: readonly MixItem[],
  connections: number,
  bar: { increment(): void },
): Promise<StackPass> {
  const processes = { gateway: stack.gateway, worker: stack.worker, meter: stack.meter };
  const cpuOf = () =>
    Object.fromEntries(Object.entries(processes).map(([name, p]) => [name, cpuSecondsOf(p.pid)]));
  const cpuBefore = cpuOf();
  const clientBefore = process.cpuUsage();
  const metricsBefore = await workerMetrics(stack.workerMetricsUrl);
  const answers: Answer[] = new Array(mix.length);
  const started = performance.now();
  await closedLoop(mix.length, connections, async (i) => {
    answers[i] = await ask(client, mix[i]!);
    bar.increment();
  });
  const seconds = (performance.now() - started) / 1000;
  const metricsAfter = await workerMetrics(stack.workerMetricsUrl);
  const cpuAfter = cpuOf();
  const clientCpu = process.cpuUsage(clientBefore);
  const delta = (name: keyof typeof processes) => {
    const [a, b] = [cpuBefore[name], cpuAfter[name]];
    return a == null || b == null ? null : b - a;
  };
  const tokens = answers.reduce((sum, a) => sum + (a.usage?.completion_tokens ?? 0), 0);
  return {
    run: runOf(mix.length, tokens, seconds),
    answers,
    stepSeconds: metricsAfter.stepSeconds - metricsBefore.stepSeconds,
    cpu: {
      client: (clientCpu.user + clientCpu.system) / 1e6,
      gateway: delta("gateway"),
      worker: delta("worker"),
      meter: delta("meter"),
    },
  };
}

const runOf = (requests: number, tokens: number, seconds: number): E2eRun => ({
  requests,
  tokens,
  seconds: round(seconds, 2),
  tokens_per_s: round(tokens / seconds, 1),
});

/**
 * The engine alone: the worker's own Scheduler over an EngineThread, configured as the worker configures
 * them, with every adapter written into its slot up front (the worker's adapter tiers are what it skips).
 */
async function startEngineAlone(
  modelDir: string,
  o: { adapters: number; connections: number; maxContext: number; threads?: number },
  warmUp: readonly MixItem[],
) {
  const tokenizer = loadTokenizer(modelDir);
  const engine = await EngineThread.start({
    modelDir,
    device: "cpu",
    maxContext: o.maxContext,
    slots: o.adapters,
    maxRank: RANK,
    maxAdaptersPerStep: o.adapters,
    prefixCacheBytes: PREFIX_CACHE_BYTES,
    ...(o.threads ? { threads: o.threads } : {}),
  });
  const refs = Array.from(
    { length: o.adapters },
    (_, i): AdapterRef => ({
      name: `${ORG}/adapter-${i}`,
      blob_key: `adapter-${i}`,
      sha256: `slot-${i + 1}`,
      rank: RANK,
    }),
  );
  const scheduler = new Scheduler(engine, tokenizer, new ResidentAdapters(refs), {
    maxBatch: o.connections,
    maxContext: o.maxContext,
    stepTokenBudget: STEP_TOKENS,
    maxAdaptersPerStep: o.adapters,
  });
  let n = 0;
  const generate = async (item: MixItem) => {
    const outcome = await scheduler.submit({
      id: `r${n++}`,
      org: ORG,
      adapter: refs[item.adapter]!,
      promptTokens: item.promptTokens,
      sampling: GREEDY,
      limits: { maxTokens: item.maxTokens, stopTokenIds: tokenizer.eosTokenIds, stopStrings: [] },
    });
    if (outcome.kind !== "done" || outcome.finishReason === "error") {
      throw new Error(`the engine alone failed a request: ${JSON.stringify(outcome)}`);
    }
    return outcome.tokens.length;
  };
  try {
    await engine.warmUp();
    for (let i = 0; i < o.adapters; i++) {
      const folder = join(modelDir, "adapters", `adapter-${i}`);
      await engine.writeAdapter(i + 1, loadPeftAdapter(folder, engine.model, { maxRank: RANK }));
    }
    await closedLoop(warmUp.length, o.connections, async (i) => {
      await generate(warmUp[i]!);
    });
  } catch (error) {
    await engine.close();
    throw error;
  }
  return {
    /** One timed pass: tokens/s and each request's generated token count. */
    async pass(mix: readonly MixItem[], bar: { increment(): void }) {
      const completionTokens: number[] = new Array(mix.length);
      const cpuBefore = process.cpuUsage();
      const started = performance.now();
      await closedLoop(mix.length, o.connections, async (i) => {
        completionTokens[i] = await generate(mix[i]!);
        bar.increment();
      });
      const seconds = (performance.now() - started) / 1000;
      const cpu = process.cpuUsage(cpuBefore);
      return {
        cpuSeconds: (cpu.user + cpu.system) / 1e6,
        run: runOf(
          mix.length,
          completionTokens.reduce((a, b) => a + b, 0),
          seconds,
        ),
        completionTokens,
      };
    },
    close: () => engine.close(),
  };
}

type EngineAlone = Awaited<ReturnType<typeof startEngineAlone>>;

interface Measured {
  stackPasses: StackPass[];
  enginePasses: { run: E2eRun; completionTokens: number[]; cpuSeconds: number }[];
  billing: E2eBenchResult["billing"];
}

/**
 * Starts the stack on a scratch database and namespace, uploads the adapters, then runs the timed passes:
 * per round one through the stack and one on the engine alone, the order flipping every round (so a drift
 * in the machine's load weighs on both alike); then checks billing and cleans up.
 */
async function measure(
  o: {
    natsUrl: string;
    serverUrl: string;
    modelDir: string;
    scratch: string;
    adapters: number;
    connections: number;
    rounds: number;
  },
  worker: { slots: number; maxBatch: number; maxContext: number; threads?: number },
  engine: EngineAlone,
  warmUp: readonly MixItem[],
  mix: readonly MixItem[],
  out: { log: (line: string) => void; progress: boolean },
): Promise<Measured> {
  const database = await scratchDatabase(o.serverUrl, "e2e");
  const namespace = benchNamespace("e2e");
  try {
    const db = await openDb(database.url);
    try {
      await migrate(db);
      await ensureOrg(db, ORG);
      const { key } = await createApiKey(db, { orgId: ORG, name: "bench-e2e", scopes: ["admin"] });
      const stack = await startStack({ ...o, databaseUrl: database.url, namespace }, worker);
      try {
        const uploads = phaseBar(out.progress, "uploading adapters", o.adapters);
        for (let i = 0; i < o.adapters; i++) {
          const folder = join(o.modelDir, "adapters", `adapter-${i}`);
          await uploadAdapter(stack.url, key, folder, `${ORG}/adapter-${i}`);
          uploads.increment();
        }
        uploads.stop();
        const { client, warmAnswers } = await stackClient(stack, key, warmUp, o.connections);
        out.log(
          `${o.rounds} rounds of ${mix.length} requests from ${o.connections} connections over ${o.adapters} adapters, through the stack and on the engine alone`,
        );
        const bar = phaseBar(out.progress, "timed passes (requests)", 2 * o.rounds * mix.length);
        const stackPasses: StackPass[] = [];
        const enginePasses: Measured["enginePasses"] = [];
        for (let round = 0; round < o.rounds; round++) {
          const passes = [
            async () => stackPasses.push(await stackPass(stack, client, mix, o.connections, bar)),
            async () => enginePasses.push(await engine.pass(mix, bar)),
          ];
          for (const pass of round % 2 === 0 ? passes : passes.reverse()) await pass();
        }
        bar.stop();
        out.log("waiting for the meter, then comparing every response's usage with its billed row");
        const answers = [...warmAnswers, ...stackPasses.flatMap((p) => p.answers)];
        return { stackPasses, enginePasses, billing: await checkBilling(db, answers) };
      } finally {
        await stack.stop();
      }
    } finally {
      await db.close();
    }
  } finally {
    await database.drop();
    await removeNamespace(o.natsUrl, namespace);
  }
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function serviceUrls(options: E2eBenchOptions): { natsUrl: string; serverUrl: string } {
  const natsUrl = options.natsUrl ?? process.env.NATS_URL;
  const serverUrl = options.databaseUrl ?? process.env.DATABASE_URL;
  if (!natsUrl) {
    throw new Error(
      "NATS_URL is not set: the benchmark runs on a real NATS with JetStream (e.g. nats://127.0.0.1:4222)",
    );
  }
  return { natsUrl, serverUrl: postgresServerUrl(serverUrl) };
}

export async function runE2eBench(options: E2eBenchOptions = {}): Promise<E2eBenchResult> {
  const log = options.log ?? (() => {});
  const { natsUrl, serverUrl } = serviceUrls(options);
  const o = {
    shape: options.shape ?? "bench-1b",
    layers: options.layers ?? 2,
    adapters: options.adapters ?? 32,
    connections: options.connections ?? 64,
    maxTokens: options.maxTokens ?? 32,
    rounds: options.rounds ?? 3,
    ...(options.threads ? { threads: options.threads } : {}),
    progress: options.progress === true,
  };
  const requests = options.requests ?? 2 * o.connections;
  const loadAverage = loadavg()[0]!;
  const scratch = mkdtempSync(join(tmpdir(), "luminet-bench-e2e-"));
  try {
    let modelDir: string;
    if (o.shape === "bench-1b") {
      if (o.adapters > BENCH_MODEL_ADAPTERS) {
        throw new RangeError(
          `--adapters: the bench-1b model has ${BENCH_MODEL_ADAPTERS} adapters, asked for ${o.adapters}`,
        );
      }
      modelDir = ensureBenchModel("cpu", o.layers, log);
    } else {
      modelDir = join(scratch, "model");
      initTinyModel(modelDir, {
        shape: o.shape,
        layers: o.layers,
        adapters: o.adapters,
        rank: RANK,
        seed: 7,
      });
    }
    modelDir = resolve(modelDir);
    const warmUp = buildMix(modelDir, o.adapters, o.adapters, 2);
    const mix = buildMix(modelDir, requests, o.adapters, o.maxTokens, o.adapters);
    const longest = Math.max(...mix.map((m) => m.promptTokens.length));
    const maxContext = longest + o.maxTokens + 8;
    const worker = {
      slots: o.adapters,
      maxBatch: o.connections,
      maxContext,
      ...(o.threads ? { threads: o.threads } : {}),
    };

    log("the engine alone: loading the model and writing the adapters");
    const engine = await startEngineAlone(modelDir, { ...o, maxContext }, warmUp);
    let measured: Measured;
    try {
      log(`the stack: gateway, worker and meter processes on ${natsUrl} and a scratch database`);
      measured = await measure({ natsUrl, serverUrl, modelDir, scratch, ...o }, worker, engine, warmUp, mix, {
        log,
        progress: o.progress,
      });
    } finally {
      await engine.close();
    }
    const { stackPasses, enginePasses, billing } = measured;
    for (const [i, answer] of stackPasses[0]!.answers.entries()) {
      if (answer.usage?.prompt_tokens !== mix[i]!.promptTokens.length) {
        throw new Error(
          `request ${i}: the gateway counted ${answer.usage?.prompt_tokens} prompt tokens, the engine run uses ${mix[i]!.promptTokens.length}: not the same mix`,
        );
      }
    }
    const reference = enginePasses[0]!.completionTokens;
    const sum = (values: readonly number[]) => values.reduce((a, b) => a + b, 0);
    const cpu = (name: keyof CpuSeconds) => {
      const values = stackPasses.map((p) => p.cpu[name]);
      return values.some((v) => v === null) ? null : round(sum(values as number[]), 2);
    };
    const e2eSeconds = sum(stackPasses.map((p) => p.run.seconds));
    const stepSeconds = sum(stackPasses.map((p) => p.stepSeconds));
    const ttfts = stackPasses.flatMap((p) => p.answers.map((a) => a.ttftMs)).filter((t) => t >= 0);
    const roundRatios = stackPasses.map((p, i) =>
      round(p.run.tokens_per_s / enginePasses[i]!.run.tokens_per_s),
    );
    return {
      machine: machineName("cpu"),
      load_average: round(loadAverage, 2),
      setup: {
        shape: o.shape,
        layers: o.layers,
        adapters: o.adapters,
        rank: RANK,
        connections: o.connections,
        requests,
        rounds: o.rounds,
        max_tokens: o.maxTokens,
        threads: o.threads ?? availableParallelism(),
        prompt_tokens_mean: round(mix.reduce((s, m) => s + m.promptTokens.length, 0) / mix.length, 1),
        worker: { slots: worker.slots, max_batch: worker.maxBatch, step_tokens: STEP_TOKENS },
        path: "openai client (streaming) -> luminet gateway -> NATS JetStream -> luminet worker (cpu) -> NATS -> gateway; usage -> luminet meter -> Postgres",
      },
      e2e: {
        tokens_per_s: round(median(stackPasses.map((p) => p.run.tokens_per_s)), 1),
        passes: stackPasses.map((p) => p.run),
        ttft_ms: p50p99(ttfts, 1),
        engine_busy_share: round(stepSeconds / e2eSeconds),
        step_seconds: round(stepSeconds, 2),
        cpu_seconds: {
          client: cpu("client")!,
          gateway: cpu("gateway"),
          worker: cpu("worker"),
          meter: cpu("meter"),
        },
      },
      engine: {
        tokens_per_s: round(median(enginePasses.map((p) => p.run.tokens_per_s)), 1),
        passes: enginePasses.map((p) => p.run),
        cpu_seconds: round(sum(enginePasses.map((p) => p.cpuSeconds)), 2),
      },
      round_ratios: roundRatios,
      ratio: round(median(roundRatios)),
      same_completion_tokens: [
        ...stackPasses.map((p) => p.answers.map((a) => a.usage?.completion_tokens)),
        ...enginePasses.map((p) => p.completionTokens),
      ].every((counts) => counts.every((c, i) => c === reference[i])),
      billing,
    };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** Prints the result (one JSON line with --json, else a summary) and saves bench/results/e2e.json. */
export function reportE2eBench(result: E2eBenchResult, json: boolean, resultsDir = "bench/results"): void {
  if (saveBenchResult("e2e", result, json, resultsDir)) return;
  const { setup, e2e, engine, billing } = result;
  const cpu = Object.entries(e2e.cpu_seconds)
    .map(([name, s]) => `${name} ${s ?? "?"}`)
    .join(", ");
  const passes = (runs: E2eRun[]) => runs.map((r) => r.tokens_per_s).join(", ");
  process.stdout.write(
    `e2e bench on ${result.machine} (load average ${result.load_average}): ${setup.shape} ${setup.layers} layers, ${setup.adapters} adapters, ${setup.connections} connections, ${setup.rounds} rounds of ${setup.requests} requests x ${setup.max_tokens} tokens, ${setup.threads} onnxruntime threads per engine\n` +
      `  end to end    ${e2e.tokens_per_s} tokens/s median (passes ${passes(e2e.passes)}), TTFT p50 ${e2e.ttft_ms.p50} ms p99 ${e2e.ttft_ms.p99} ms\n` +
      `  engine alone  ${engine.tokens_per_s} tokens/s median (passes ${passes(engine.passes)})\n` +
      `  ratio ${result.ratio} (aim ≥ 0.9; per round ${result.round_ratios.join(", ")}); the worker's engine was busy ${(e2e.engine_busy_share * 100).toFixed(1)} % of the passes through the stack\n` +
      `  CPU seconds in those passes: ${cpu}; in the engine-alone passes: ${engine.cpu_seconds}\n` +
      `  billing: ${billing.matched}/${billing.responses} responses equal their billed row, ${billing.mismatches.length} mismatches (meter lag ${billing.meter_lag_ms} ms)\n`,
  );
}
