// The gateway's Prometheus series (Node only: prom-client), on the default registry so `GET /metrics` in
// one process (`luminet dev`) also shows the worker's series.
import type { Hono } from "hono";
import { Counter, Histogram, register } from "prom-client";
import type { GatewayEnv } from "./context.ts";
import type { GatewayMetrics } from "./deps.ts";

let metrics: GatewayMetrics | undefined;

/** One set of series per process, however many apps are built. */
export function prometheusMetrics(): GatewayMetrics {
  if (metrics) return metrics;
  const requests = new Counter({
    name: "luminet_gateway_requests_total",
    help: "HTTP requests answered by the gateway, by route and status",
    labelNames: ["route", "status"],
  });
  const seconds = new Histogram({
    name: "luminet_gateway_request_seconds",
    help: "Time to the response's headers (the whole response when not streaming), by route",
    labelNames: ["route"],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  });
  metrics = {
    observe(route, status, s) {
      requests.inc({ route, status: String(status) });
      seconds.observe({ route }, s);
    },
  };
  return metrics;
}

export function mountMetricsRoute(app: Hono<GatewayEnv>): void {
  app.get("/metrics", async (c) =>
    c.body(await register.metrics(), 200, { "content-type": register.contentType }),
  );
}
