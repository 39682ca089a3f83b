// The gateway benchmark's open-loop part (../shared/BENCH.md, "gateway"): a real `luminet gateway` process
// on NATS JetStream and Postgres (a namespace and a scratch database of the run's own), an instant worker
// (scripts/instant-worker.ts) on the same bus in this process, and fixed-rate load from this process
// (scripts/open-loop.ts) over keep-alive HTTP connections. At the headline rate (500 requests/s) it times
// non-streaming and streaming chat completions (max_tokens 1), and the same requests sent straight over the
// bus from here (publish, claim, chunk, Final) at the same rate: added = through the gateway minus direct,
// per percentile. Then it raises the rate until p99 passes the limit (10 ms), requests fail or completions
// fall behind, and narrows down between the last rate that held and the first that did not: the highest
// load the gateway's one process (one core for its JavaScript) sustains. The gateway's CPU use at each rate
// comes from /proc.
import { Agent, request } from "node:http";
import { connectJetStreamBus } from "../bus/jetstream.ts";
import { EVENT_LOOP_SAMPLE_MS } from "../core/process-metrics.ts";
import { migrate } from "../db/migrate.ts";
import { openDb } from "../db/open.ts";
import { createApiKey, ensureOrg } from "../gateway/api-keys.ts";
import { round } from "./bench-stats.ts";
import { busDirect, startInstantWorker } from "./instant-worker.ts";
import { startLuminetProcess } from "./luminet-process.ts";
import { benchNamespace, removeNamespace } from "./nats-namespace.ts";
import { type OpenLoopRun, openLoop } from "./open-loop.ts";
import { cpuSecondsOf } from "./process-cpu.ts";
import { metricByLabel, metricValue } from "./prometheus-text.ts";
import { scratchDatabase } from "./scratch-database.ts";

export interface GatewayOpenLoopOptions {
  natsUrl: string;
  /** A Postgres server; the run makes a scratch database there. */
  serverUrl: string;
  /** The tiny model's folder, served as base `tiny`. */
  modelDir: string;
  /** The chat every request sends, and the prompt token ids the gateway makes of it (for bus direct). */
  chat: { messages: { role: string; content: string }[]; promptTokenIds: number[] };
  /** The headline offered load, requests/s; default 500. */
  rate?: number;
  /** Timed seconds at each rate (after one second of warm-up at that rate); default 5. */
  seconds?: number;
  /** The p99 a sustained rate must stay under, ms; default 10. */
  p99LimitMs?: number;
  /** The sweep's first rate, requests/s; default half the headline rate. */
  sweepFrom?: number;
  /** The sweep stops rising here, requests/s; default 16,000. */
  maxRate?: number;
  log: (line: string) => void;
}

/**
 * One timed run at a fixed rate, with the CPU the gateway process and this one (client and worker) used, and
 * how long the gateway's event loop stalled (its /metrics: the most a 10 ms sampling timer ran late, and
 * the time its garbage collector paused it).
 */
export interface RateRun extends OpenLoopRun {
  /** The gateway process's CPU seconds per second; null where /proc cannot tell. */
  gateway_cores: number | null;
  gateway_loop_lag_ms_max: number;
  gateway_gc_ms: number;
  /** This process's (the load generator's and the instant worker's) CPU seconds per second. */
  client_cores: number;
}

export interface SweepRun extends RateRun {
  /** p99 under the limit, no errors, and completions kept up with the offered rate. */
  held: boolean;
}

export interface GatewayOpenLoopResult {
  rate: number;
  seconds: number;
  direct: RateRun;
  http: RateRun;
  http_stream: RateRun;
  added_ms: { non_streaming: { p50: number; p99: number }; streaming: { p50: number; p99: number } };
  sweep: SweepRun[];
  /** The highest swept rate that held (null: not even the first), and the limit it held under. */
  sustained: { p99_limit_ms: number; requests_per_s: number | null };
}

const BASE = "tiny";
const ORG = "bench";
const WORKER_ID = "instant";
/** A rate holds only if completions reach this share of it. */
const KEPT_UP = 0.95;
/** Seconds of the first traffic, untimed: the gateway's code gets compiled and its connections opened. */
const WARM_UP_SECONDS = 3;
const NARROWING_STEPS = 3;
const REQUEST_TIMEOUT_MS = 30_000;

/** Keep-alive HTTP POSTs of one body; each resolves once the whole answer (or stream) arrived. */
function poster(url: string, path: string, key: string, body: string) {
  const target = new URL(url);
  const agent = new Agent({ keepAlive: true });
  const headers = {
    authorization: `Bearer ${key}`,
    "content-type": "application/json",
    "content-length": Buffer.byteLength(body),
  };
  const post = () =>
    new Promise<void>((resolve, reject) => {
      const req = request(
        { agent, host: target.hostname, port: target.port, path, method: "POST", headers },
        (res) => {
          let text = "";
          if (res.statusCode !== 200) res.setEncoding("utf8").on("data", (chunk: string) => (text += chunk));
          else res.on("data", () => {});
          res.on("error", reject);
          res.on("end", () =>
            res.statusCode === 200
              ? resolve()
              : reject(new Error(`gateway answered ${res.statusCode}: ${text}`)),
          );
        },
      );
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(new Error("no answer within 30 s")));
      req.on("error", reject);
      req.end(body);
    });
  return { post, close: () => agent.destroy() };
}

/**
 * This process's side of the bus: a connection and the instant worker on it (the connection closed again
 * if the worker cannot start).
 */
async function connectWorker(natsUrl: string, namespace: string) {
  const bus = await connectJetStreamBus({ servers: natsUrl, namespace, connectionName: "bench-gateway" });
  try {
    return { bus, worker: await startInstantWorker(bus, BASE, WORKER_ID) };
  } catch (error) {
    await bus.close();
    throw error;
  }
}

export async function runGatewayOpenLoop(o: GatewayOpenLoopOptions): Promise<GatewayOpenLoopResult> {
  const rate = o.rate ?? 500;
  const seconds = o.seconds ?? 5;
  const limit = o.p99LimitMs ?? 10;
  const maxRate = o.maxRate ?? 16_000;
  const sweepFrom = o.sweepFrom ?? Math.max(1, Math.round(rate / 2));
  const database = await scratchDatabase(o.serverUrl, "gateway");
  const namespace = benchNamespace("gateway");
  try {
    const db = await openDb(database.url);
    let key: string;
    let keyId: string;
    try {
      await migrate(db);
      await ensureOrg(db, ORG);
      const created = await createApiKey(db, { orgId: ORG, name: "bench-gateway" });
      key = created.key;
      keyId = created.record.id;
    } finally {
      await db.close();
    }
    const gateway = await startLuminetProcess({
      args: ["gateway", "--model", `${BASE}=${o.modelDir}`, "--port", "0", "--host", "127.0.0.1"].concat([
        "--namespace",
        namespace,
      ]),
      env: { NATS_URL: o.natsUrl, DATABASE_URL: database.url, LOG_LEVEL: "info" },
      ready: (entry) => typeof entry.url === "string" && String(entry.msg).startsWith("gateway listening"),
    });
    const { bus, worker } = await connectWorker(o.natsUrl, namespace).catch(async (error: unknown) => {
      await gateway.stop();
      throw error;
    });
    const url = String(gateway.readyEntry.url);
    const { messages, promptTokenIds } = o.chat;
    const body = (stream: boolean) => JSON.stringify({ model: BASE, messages, max_tokens: 1, stream });
    const plain = poster(url, "/v1/chat/completions", key, body(false));
    const streaming = poster(url, "/v1/chat/completions", key, body(true));
    try {
      const direct = busDirect(bus, {
        base: BASE,
        workerId: WORKER_ID,
        org: ORG,
        apiKeyId: keyId,
        promptTokenIds,
        timeoutMs: REQUEST_TIMEOUT_MS,
      });

      const gatewayMetrics = async () => (await fetch(`${url}/metrics`)).text();
      const gcSeconds = (text: string) =>
        Object.values(metricByLabel(text, "nodejs_gc_duration_seconds_sum", "kind")).reduce(
          (a, b) => a + b,
          0,
        );
      const timed = async (name: string, at: number, send: () => Promise<void>): Promise<RateRun> => {
        await openLoop({ rate: at, seconds: Math.min(1, seconds), send });
        // A scrape also restarts the event-loop lag window.
        const metricsBefore = await gatewayMetrics();
        const gatewayBefore = cpuSecondsOf(gateway.pid);
        const clientBefore = process.cpuUsage();
        const started = performance.now();
        const run = await openLoop({ rate: at, seconds, send });
        const wall = (performance.now() - started) / 1000;
        const gatewayAfter = cpuSecondsOf(gateway.pid);
        const client = process.cpuUsage(clientBefore);
        const metricsAfter = await gatewayMetrics();
        const result: RateRun = {
          ...run,
          gateway_cores:
            gatewayBefore === null || gatewayAfter === null
              ? null
              : round((gatewayAfter - gatewayBefore) / wall),
          client_cores: round((client.user + client.system) / 1e6 / wall),
          gateway_loop_lag_ms_max: round(
            Math.max(
              0,
              metricValue(metricsAfter, "nodejs_eventloop_lag_max_seconds") * 1000 - EVENT_LOOP_SAMPLE_MS,
            ),
          ),
          gateway_gc_ms: round((gcSeconds(metricsAfter) - gcSeconds(metricsBefore)) * 1000),
        };
        o.log(
          `${name} at ${at} requests/s: p50 ${run.latency_ms.p50} ms, p99 ${run.latency_ms.p99} ms, ` +
            `${run.completed_per_s} completed/s, ${run.errors} errors, ` +
            `CPU cores: gateway ${result.gateway_cores ?? "?"}, this process ${result.client_cores}; ` +
            `gateway loop lag max ${result.gateway_loop_lag_ms_max} ms, GC ${result.gateway_gc_ms} ms`,
        );
        return result;
      };

      await openLoop({ rate, seconds: WARM_UP_SECONDS, send: plain.post });
      await openLoop({ rate, seconds: WARM_UP_SECONDS, send: streaming.post });
      const directRun = await timed("bus direct", rate, direct);
      const httpRun = await timed("http", rate, plain.post);
      const streamRun = await timed("http stream", rate, streaming.post);
      const minus = (a: RateRun, b: RateRun) => ({
        p50: round(a.latency_ms.p50 - b.latency_ms.p50),
        p99: round(a.latency_ms.p99 - b.latency_ms.p99),
      });

      const sweep: SweepRun[] = [];
      const attempt = async (at: number) => {
        const run = await timed("sweep: http", at, plain.post);
        const held = run.errors === 0 && run.latency_ms.p99 < limit && run.completed_per_s >= KEPT_UP * at;
        sweep.push({ ...run, held });
        return held;
      };
      let good: number | null = null;
      let bad: number | null = null;
      for (let at = sweepFrom; at <= maxRate; at *= 2) {
        if (!(await attempt(at))) {
          bad = at;
          break;
        }
        good = at;
      }
      for (let step = 0; step < NARROWING_STEPS && good !== null && bad !== null; step++) {
        const middle = Math.round((good + bad) / 2);
        if (await attempt(middle)) good = middle;
        else bad = middle;
      }
      const firstError = worker.firstError();
      if (firstError) o.log(`the instant worker met an error: ${firstError}`);
      return {
        rate,
        seconds,
        direct: directRun,
        http: httpRun,
        http_stream: streamRun,
        added_ms: { non_streaming: minus(httpRun, directRun), streaming: minus(streamRun, directRun) },
        sweep,
        sustained: { p99_limit_ms: limit, requests_per_s: good },
      };
    } finally {
      plain.close();
      streaming.close();
      await worker.stop();
      await bus.close();
      await gateway.stop();
    }
  } finally {
    await database.drop();
    await removeNamespace(o.natsUrl, namespace);
  }
}
