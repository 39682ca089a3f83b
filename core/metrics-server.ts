// GET /metrics for a process's Prometheus registry, with the probes an orchestrator asks: GET /healthz
// (liveness) and GET /readyz (readiness, with the reason when not ready). `luminet worker` and `luminet
// meter` serve theirs on --metrics-port; the gateway serves its series on its own API port.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import { collectProcessMetrics } from "./process-metrics.ts";

/** Why the process takes no new work, or null when it does (GET /readyz). */
export type NotReady = () => string | null;

/**
 * Serves the registry at GET /metrics on `port` (0: any free port), with probes for an orchestrator:
 * GET /healthz answers 200 while the process serves HTTP at all (liveness), GET /readyz 200 while the
 * process takes new work and 503 with the reason once it does not (draining, say). Resolves once listening.
 */
export async function serveMetrics(
  registry: Registry,
  port: number,
  host = "0.0.0.0",
  notReady: NotReady = () => null,
): Promise<Server> {
  collectProcessMetrics(registry);
  const server = createServer((req, res) => {
    const path = req.url?.split("?")[0];
    const text = (status: number, body: string) =>
      res.writeHead(status, { "content-type": "text/plain" }).end(`${body}\n`);
    if (req.method === "GET" && path === "/healthz") return text(200, "ok");
    if (req.method === "GET" && path === "/readyz") {
      const reason = notReady();
      return reason === null ? text(200, "ready") : text(503, `not ready: ${reason}`);
    }
    if (req.method !== "GET" || path !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found: try GET /metrics\n");
      return;
    }
    registry.metrics().then(
      (body) => res.writeHead(200, { "content-type": registry.contentType }).end(body),
      (error: Error) => res.writeHead(500, { "content-type": "text/plain" }).end(`${error.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}

export function listeningPort(server: Server): number {
  return (server.address() as AddressInfo).port;
}
