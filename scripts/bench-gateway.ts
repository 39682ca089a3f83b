// `luminet bench gateway`: the latency the gateway adds (../shared/BENCH.md), in two parts.
//
// In one process: the gateway (served over HTTP by @hono/node-server), the in-process bus, PGlite and a
// worker that answers every request at once with one token; the same requests are also sent straight over
// the bus. Added latency = HTTP percentiles minus bus-direct percentiles, one request at a time, for
// non-streaming and streaming, and the Responses API not stored and stored (one insert into PGlite before the
// answer); then a closed loop at fixed concurrency gives requests/s. The HTTP client
// runs in the same process, so its cost is included: an upper bound on what the gateway adds.
//
// Open loop (scripts/bench-gateway-open-loop.ts), as BENCH.md asks: a real `luminet gateway` process on NATS
// and Postgres, fixed offered load from this process, added latency at 500 requests/s and the highest rate
// it sustains with p99 under 10 ms.
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { InProcessBroker } from "../bus/in-process.ts";
import { migrate } from "../db/migrate.ts";
import { openDb } from "../db/open.ts";
import { createApiKey, ensureOrg } from "../gateway/api-keys.ts";
import { createApp } from "../gateway/app.ts";
import { loadBaseModel } from "../gateway/base-loader.ts";
import { BaseCatalog } from "../gateway/bases.ts";
import { gatewayDeps } from "../gateway/deps.ts";
import { serveApp } from "../gateway/node.ts";
import { type GatewayOpenLoopResult, type RateRun, runGatewayOpenLoop } from "./bench-gateway-open-loop.ts";
import { saveBenchResult } from "./bench-result.ts";
import { busDirect, startInstantWorker } from "./instant-worker.ts";
import { postgresServerUrl } from "./scratch-database.ts";
import { initTinyModel } from "./tiny-model.ts";

interface Percentiles {
  p50: number;
  p99: number;
}

export interface GatewayBenchResult {
  machine: string;
  requests_per_kind: number;
  direct_ms: Percentiles;
  http_ms: Percentiles;
  http_stream_ms: Percentiles;
  /** POST /v1/responses with store: false, and stored (the default). */
  responses_ms: Percentiles;
  responses_stored_ms: Percentiles;
  added_ms: {
    non_streaming: Percentiles;
    streaming: Percentiles;
    responses: Percentiles;
    responses_stored: Percentiles;
  };
  throughput: { concurrency: number; requests_per_s: number };
  open_loop: GatewayOpenLoopResult;
}

export interface GatewayBenchOptions {
  /** Timed requests of each kind in the one-process part; default 2,000. */
  requests?: number;
  /** Connections of the one-process closed loop; default 16. */
  concurrency?: number;
  /** NATS with JetStream for the open-loop part; default NATS_URL. */
  natsUrl?: string;
  /** A Postgres server for the open-loop part (a scratch database is made there); default DATABASE_URL. */
  databaseUrl?: string;
  /** The open loop's headline rate, requests/s; default 500. */
  rate?: number;
  /** The open loop's timed seconds per rate; default 5. */
  seconds?: number;
  /** The p99 a sustained rate stays under, ms; default 10. */
  p99LimitMs?: number;
  /** The open loop's first swept rate; default half the headline rate. */
  sweepFrom?: number;
  /** The open loop's sweep stops rising here; default 16,000 requests/s. */
  maxRate?: number;
  log?: (line: string) => void;
}

function percentiles(samples: number[]): Percentiles {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { p50: at(0.5), p99: at(0.99) };
}

const BASE = "tiny";

export async function runGatewayBench(options: GatewayBenchOptions = {}): Promise<GatewayBenchResult> {
  const requests = options.requests ?? 2000;
  const concurrency = options.concurrency ?? 16;
  const log = options.log ?? (() => {});
  const natsUrl = options.natsUrl ?? process.env.NATS_URL;
  if (!natsUrl) {
    throw new Error(
      "NATS_URL is not set: the open-loop part runs a real gateway process on NATS with JetStream (e.g. nats://127.0.0.1:4222)",
    );
  }
  const serverUrl = postgresServerUrl(options.databaseUrl ?? process.env.DATABASE_URL);
  const dir = mkdtempSync(join(tmpdir(), "luminet-bench-gateway-"));
  const db = await openDb("pglite:memory");
  const broker = new InProcessBroker({ heartbeatTtlMs: 3_600_000 });
  const bus = broker.connect();
  const workerBus = broker.connect();
  try {
    initTinyModel(dir, { shape: "tiny", adapters: 0, rank: 4, seed: 1 });
    await migrate(db);
    const base = await loadBaseModel(db, { name: BASE, dir }, { contextLength: 512 });
    await ensureOrg(db, "bench");
    const { key, record } = await createApiKey(db, { orgId: "bench", name: "bench" });

    const worker = await startInstantWorker(workerBus, BASE, "instant");
    const messages = [{ role: "user", content: "Hello there, how are you?" }];
    const prompt = base.tokenizer.encode(
      base.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true }),
      { addSpecialTokens: false },
    );
    const direct = busDirect(bus, {
      base: BASE,
      workerId: "instant",
      org: "bench",
      apiKeyId: record.id,
      promptTokenIds: prompt,
      timeoutMs: 60_000,
    });

    const app = createApp(gatewayDeps({ db, bus, bases: new BaseCatalog([base]) }));
    const served = await serveApp(app, 0, "127.0.0.1");
    const body = (stream: boolean) => JSON.stringify({ model: BASE, messages, max_tokens: 1, stream });
    const post = (path: string, payload: string) => async () => {
      const res = await fetch(`${served.url}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body: payload,
      });
      if (res.status !== 200) throw new Error(`gateway answered ${res.status}: ${await res.text()}`);
      await res.text();
    };
    const http = (stream: boolean) => post("/v1/chat/completions", body(stream));
    const responses = (store: boolean) =>
      post("/v1/responses", JSON.stringify({ model: BASE, input: messages, max_output_tokens: 1, store }));

    const time = async (name: string, run: () => Promise<void>) => {
      for (let i = 0; i < Math.min(200, requests); i++) await run();
      const samples: number[] = [];
      for (let i = 0; i < requests; i++) {
        const started = performance.now();
        await run();
        samples.push(performance.now() - started);
      }
      const p = percentiles(samples);
      log(`${name}: p50 ${p.p50.toFixed(3)} ms, p99 ${p.p99.toFixed(3)} ms`);
      return p;
    };
    try {
      const directMs = await time("bus direct", direct);
      const httpMs = await time("http", http(false));
      const streamMs = await time("http stream", http(true));
      const responsesMs = await time("responses", responses(false));
      const storedMs = await time("responses stored", responses(true));
      const started = performance.now();
      let done = 0;
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (done < requests) {
            done++;
            await http(false)();
          }
        }),
      );
      const rps = requests / ((performance.now() - started) / 1000);
      log(`closed loop at concurrency ${concurrency}: ${rps.toFixed(0)} requests/s`);
      const minus = (a: Percentiles, b: Percentiles) => ({ p50: a.p50 - b.p50, p99: a.p99 - b.p99 });
      log("open loop: a gateway process on NATS and Postgres, fixed offered load from this process");
      const openLoop = await runGatewayOpenLoop({
        natsUrl,
        serverUrl,
        modelDir: dir,
        chat: { messages, promptTokenIds: prompt },
        log,
        ...(options.rate ? { rate: options.rate } : {}),
        ...(options.seconds ? { seconds: options.seconds } : {}),
        ...(options.p99LimitMs ? { p99LimitMs: options.p99LimitMs } : {}),
        ...(options.sweepFrom ? { sweepFrom: options.sweepFrom } : {}),
        ...(options.maxRate ? { maxRate: options.maxRate } : {}),
      });
      return {
        machine: `${cpus()[0]?.model ?? "unknown cpu"} × ${cpus().length}`,
        requests_per_kind: requests,
        direct_ms: directMs,
        http_ms: httpMs,
        http_stream_ms: streamMs,
        responses_ms: responsesMs,
        responses_stored_ms: storedMs,
        added_ms: {
          non_streaming: minus(httpMs, directMs),
          streaming: minus(streamMs, directMs),
          responses: minus(responsesMs, directMs),
          responses_stored: minus(storedMs, directMs),
        },
        throughput: { concurrency, requests_per_s: rps },
        open_loop: openLoop,
      };
    } finally {
      await served.close();
      await worker.stop();
    }
  } finally {
    await bus.close();
    await workerBus.close();
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function reportGatewayBench(
  result: GatewayBenchResult,
  json: boolean,
  resultsDir = "bench/results",
): void {
  if (saveBenchResult("gateway", result, json, resultsDir)) return;
  const f = (p: Percentiles) => `p50 ${p.p50.toFixed(3)} ms  p99 ${p.p99.toFixed(3)} ms`;
  const o = result.open_loop;
  const g = (p: { p50: number; p99: number }) => `p50 ${p.p50.toFixed(3)} ms  p99 ${p.p99.toFixed(3)} ms`;
  const run = (r: RateRun) =>
    `${g(r.latency_ms)}  (${r.completed_per_s} completed/s, ${r.errors} errors; gateway: ${r.gateway_cores ?? "?"} cores, ` +
    `loop lag max ${r.gateway_loop_lag_ms_max} ms, GC ${r.gateway_gc_ms} ms)`;
  process.stdout.write(
    `gateway bench on ${result.machine} (${result.requests_per_kind} requests per kind, one process)\n` +
      `  bus direct       ${f(result.direct_ms)}\n` +
      `  http             ${f(result.http_ms)}\n` +
      `  http streaming   ${f(result.http_stream_ms)}\n` +
      `  responses        ${f(result.responses_ms)}\n` +
      `  responses stored ${f(result.responses_stored_ms)}\n` +
      `  added            ${f(result.added_ms.non_streaming)}\n` +
      `  added streaming  ${f(result.added_ms.streaming)}\n` +
      `  added responses  ${f(result.added_ms.responses)} (stored: ${f(result.added_ms.responses_stored)})\n` +
      `  ${result.throughput.requests_per_s.toFixed(0)} requests/s at concurrency ${result.throughput.concurrency}\n` +
      `open loop at ${o.rate} requests/s (a gateway process on NATS and Postgres, ${o.seconds} s per rate)\n` +
      `  bus direct       ${run(o.direct)}\n` +
      `  http             ${run(o.http)}\n` +
      `  http streaming   ${run(o.http_stream)}\n` +
      `  added            ${g(o.added_ms.non_streaming)}\n` +
      `  added streaming  ${g(o.added_ms.streaming)}\n` +
      o.sweep
        .map((r) => `  ${String(r.offered_per_s).padStart(6)}/s  ${run(r)}${r.held ? "" : "  (not held)"}\n`)
        .join("") +
      `  sustained with p99 < ${o.sustained.p99_limit_ms} ms: ${o.sustained.requests_per_s ?? "none of the rates"} requests/s\n`,
  );
}
