// The gateway's Prometheus series (Node only: prom-client), on the default registry so `GET /metrics` in
// one process (`luminet dev`) also shows the worker's series: responses by route, status and base, the
// gateway's added latency, routing outcomes, generations in flight, tokens answered, the desired worker count
// per base, how waits for a worker of a base scaled to zero ended, batch lines run and batches ended; and the process's own
// (core/process-metrics.ts).
import { timingSafeEqual } from "node:crypto";
import type { Hono } from "hono";
import { Counter, Gauge, Histogram, register } from "prom-client";
import { collectProcessMetrics } from "../core/process-metrics.ts";
import type { GatewayEnv } from "./context.ts";
import type { GatewayDeps, GatewayMetrics } from "./deps.ts";
import { readScaleSignals } from "./scale-signals.ts";

let metrics: GatewayMetrics | undefined;

/** One set of series per process, however many apps are built. */
export function prometheusMetrics(): GatewayMetrics {
  if (metrics) return metrics;
  collectProcessMetrics(register);
  const requests = new Counter({
    name: "luminet_gateway_requests_total",
    help: 'HTTP requests answered by the gateway, by route, status and base model ("" when none)',
    labelNames: ["route", "status", "base"],
  });
  const errors = new Counter({
    name: "luminet_gateway_errors_total",
    help: "Error answers by route and OpenAI error code (its type where it has none): why requests are refused",
    labelNames: ["route", "code"],
  });
  const seconds = new Histogram({
    name: "luminet_gateway_request_seconds",
    help: "Time to the response's headers (the whole response when not streaming), by route",
    labelNames: ["route"],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  });
  const added = new Histogram({
    name: "luminet_gateway_added_seconds",
    help: "The gateway's own time from a request's arrival until it is queued for a worker, by base",
    labelNames: ["base"],
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
  });
  const routes = new Counter({
    name: "luminet_route_total",
    help: "Routing decisions: adapter resident in a slot, in RAM, on disk, cold, or the shared queue (fallback)",
    labelNames: ["base", "outcome"],
  });
  const inFlight = new Gauge({
    name: "luminet_gateway_inflight",
    help: "Generations running or queued, by base and whether the client streams",
    labelNames: ["base", "stream"],
  });
  const desired = new Gauge({
    name: "luminet_desired_workers",
    help: "Workers each base needs for its queue and running load (computed at each scrape and GET /v1/fleet/scale)",
    labelNames: ["base"],
  });
  const live = new Gauge({
    name: "luminet_live_workers",
    help: "Workers of each base beating now (read with luminet_desired_workers): what the desired count compares with",
    labelNames: ["base"],
  });
  const stale = new Gauge({
    name: "luminet_scale_signal_stale",
    help: "1 while the last reading of the autoscaling signal failed (NATS or the database away): the desired and live workers and the lines waiting then hold their last values",
  });
  const waiting = new Gauge({
    name: "luminet_batch_lines_waiting",
    help: "Lines of running batches for each base not yet sent to a worker: they ride spare capacity and do not raise luminet_desired_workers (computed with it)",
    labelNames: ["base"],
  });
  const coldStarts = new Counter({
    name: "luminet_cold_start_total",
    help: "Requests that found no live worker for their base and waited for one to start: claimed, timeout or cancelled",
    labelNames: ["base", "outcome"],
  });
  const tokens = new Counter({
    name: "luminet_gateway_tokens_total",
    help: "Tokens of the runs answered, as their workers counted them: prompt (prefilled), cached_prompt (from a prefix cache) and completion, by base",
    labelNames: ["base", "kind"],
  });
  const batchLines = new Counter({
    name: "luminet_batch_lines_total",
    help: "Batch API lines this process ran: answered (200), failed (another answer), retried (put back after a transient refusal), handed_back (cancelled on stop)",
    labelNames: ["outcome"],
  });
  const batchesEnded = new Counter({
    name: "luminet_batches_ended_total",
    help: "Batches this process ended, by final status: completed, expired, cancelled",
    labelNames: ["status"],
  });
  const webhookDeliveries = new Counter({
    name: "luminet_webhook_deliveries_total",
    help: "Webhook delivery attempts this process made: delivered (2xx), retried (another answer or none; tried again later), failed (given up 72 hours after the event)",
    labelNames: ["outcome"],
  });
  metrics = {
    webhookDelivery(outcome) {
      webhookDeliveries.inc({ outcome });
    },
    batchLine(outcome) {
      batchLines.inc({ outcome });
    },
    batchEnded(status) {
      batchesEnded.inc({ status });
    },
    observe(route, status, s, base) {
      requests.inc({ route, status: String(status), base });
      seconds.observe({ route }, s);
    },
    errorAnswered(route, code) {
      errors.inc({ route, code });
    },
    added(base, s) {
      added.observe({ base }, s);
    },
    routed(base, outcome) {
      routes.inc({ base, outcome });
    },
    inFlight(base, stream, delta) {
      inFlight.inc({ base, stream: String(stream) }, delta);
    },
    desiredWorkers(base, workers) {
      desired.set({ base }, workers);
    },
    liveWorkers(base, workers) {
      live.set({ base }, workers);
    },
    scaleSignalStale(failed) {
      stale.set(failed ? 1 : 0);
    },
    batchLinesWaiting(base, lines) {
      waiting.set({ base }, lines);
    },
    coldStart(base, outcome) {
      coldStarts.inc({ base, outcome });
    },
    tokens(base, usage) {
      const cached = usage.cached_tokens ?? 0;
      tokens.inc({ base, kind: "prompt" }, usage.prompt_tokens - cached);
      tokens.inc({ base, kind: "cached_prompt" }, cached);
      tokens.inc({ base, kind: "completion" }, usage.completion_tokens);
    },
  };
  return metrics;
}

/**
 * GET /metrics. Each scrape first reads the autoscaling signal, so `luminet_desired_workers` and
 * `luminet_batch_lines_waiting` are current without anyone calling GET /v1/fleet/scale; if the bus or the
 * database cannot answer, the gauges keep their last values. With `token` (LUMINET_METRICS_TOKEN) a scrape
 * must send `Authorization: Bearer <token>`: the series name the bases and show the traffic, and the
 * gateway's port is the public API's.
 */
export function mountMetricsRoute(
  app: Hono<GatewayEnv>,
  deps: Pick<GatewayDeps, "bus" | "db" | "bases" | "scale" | "metrics" | "log">,
  token?: string,
): void {
  app.get("/metrics", async (c) => {
    // The scheme is case-insensitive (RFC 9110), the token compared in constant time.
    const sent = /^bearer\s+(\S+)\s*$/i.exec(c.req.header("authorization") ?? "")?.[1] ?? "";
    if (token && !sameText(sent, token)) {
      return c.text("unauthorized: send Authorization: Bearer <LUMINET_METRICS_TOKEN>\n", 401, {
        "www-authenticate": "Bearer",
      });
    }
    await readScaleSignals(deps).catch((error: unknown) =>
      deps.log.warn(
        { err: error instanceof Error ? error.message : String(error) },
        "could not read the autoscaling signal for /metrics",
      ),
    );
    return c.body(await register.metrics(), 200, { "content-type": register.contentType });
  });
}

/** Compares without an early exit, so the time a refusal takes says nothing of the token. */
function sameText(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}
