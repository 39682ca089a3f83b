// The worker's HTTP endpoints for an orchestrator, beside /metrics: /healthz answers while the process
// serves at all, /readyz says whether it takes new requests (503 with the reason while draining).
import type { Server } from "node:http";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { listeningPort, serveMetrics } from "../../core/metrics-server.ts";

let server: Server;
let url: string;
let reason: string | null = null;

beforeAll(async () => {
  server = await serveMetrics(new Registry(), 0, "127.0.0.1", () => reason);
  url = `http://127.0.0.1:${listeningPort(server)}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

const get = async (path: string) => {
  const res = await fetch(`${url}${path}`);
  return { status: res.status, body: await res.text() };
};

describe("the worker's probes", () => {
  it("is live and ready while it takes requests, live and not ready while it drains", async () => {
    expect(await get("/healthz")).toEqual({ status: 200, body: "ok\n" });
    expect(await get("/readyz")).toEqual({ status: 200, body: "ready\n" });
    reason = "draining";
    expect(await get("/readyz")).toEqual({ status: 503, body: "not ready: draining\n" });
    expect((await get("/healthz")).status).toBe(200);
    expect((await get("/metrics")).body).toContain("process_cpu_seconds_total");
    expect((await get("/nope")).status).toBe(404);
  });
});
