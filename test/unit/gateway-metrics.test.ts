// The gateway's operator series through app.request on the in-process bus with a scripted worker: requests
// by status and base, the added latency, the routing outcome of each request (from the heartbeats the
// gateway routed on), generations in flight, the tokens of every run's Final (a failed one's too); and the
// Prometheus text the Node entry serves at /metrics.
import { eq } from "drizzle-orm";
import type { Hono } from "hono";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InProcessBroker } from "../../bus/in-process.ts";
import { principalOfKey, RUN_AS } from "../../gateway/auth.ts";
import type { GatewayEnv } from "../../gateway/context.ts";
import type { GatewayMetrics } from "../../gateway/deps.ts";
import { mountMetricsRoute, prometheusMetrics } from "../../gateway/prometheus.ts";
import { type RouteOutcome, routeRequest } from "../../gateway/routing.ts";
import { apiKeys } from "../../schema/db.ts";
import { ANY_WORKER, type Usage } from "../../schema/wire.ts";
import { sampleRequest } from "../contract/wire-samples.ts";
import { FAKE_REPLY_TOKENS, FakeWorker } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { idleHeartbeat } from "../support/heartbeats.ts";

class RecordingMetrics implements GatewayMetrics {
  readonly responses: { route: string; status: number; base: string }[] = [];
  readonly addedSeconds: number[] = [];
  readonly routes: RouteOutcome[] = [];
  readonly inFlightDeltas: { stream: boolean; delta: number }[] = [];
  readonly tokenCounts: Usage[] = [];
  readonly errors: { route: string; code: string }[] = [];
  observe(route: string, status: number, _seconds: number, base: string) {
    this.responses.push({ route, status, base });
  }
  errorAnswered(route: string, code: string) {
    this.errors.push({ route, code });
  }
  added(_base: string, seconds: number) {
    this.addedSeconds.push(seconds);
  }
  routed(_base: string, outcome: RouteOutcome) {
    this.routes.push(outcome);
  }
  inFlight(_base: string, stream: boolean, delta: 1 | -1) {
    this.inFlightDeltas.push({ stream, delta });
  }
  desiredWorkers() {}
  liveWorkers() {}
  scaleSignalStale() {}
  batchLinesWaiting() {}
  coldStart() {}
  batchLine() {}
  batchEnded() {}
  webhookDelivery() {}
  tokens(_base: string, usage: Usage) {
    this.tokenCounts.push(usage);
  }
}

let h: GatewayHarness;
let worker: FakeWorker;
const metrics = new RecordingMetrics();
let app: ReturnType<GatewayHarness["appWith"]>;

beforeAll(async () => {
  h = await createGatewayHarness();
  worker = await FakeWorker.start(h.workerBus, {
    base: BASE,
    heartbeat: { adapters: { slot: ["acme/hot"], ram: ["acme/warm"], disk: ["acme/cool"] } },
  });
  for (const name of ["hot", "warm", "cool", "cold"]) await h.addAdapter({ name });
  app = h.appWith({ metrics });
});
afterAll(async () => {
  await worker.stop();
  await h.close();
});

const chat = (model: string, stream = false) =>
  app.request("/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
    body: JSON.stringify({ model, stream, messages: [{ role: "user", content: "Hi" }] }),
  });

describe("gateway metrics", () => {
  it("counts each routing outcome from the worker's residency: slot, RAM, disk, cold", async () => {
    metrics.routes.length = 0;
    for (const name of ["hot", "warm", "cool", "cold"]) {
      expect((await chat(`${BASE}:acme/${name}`)).status).toBe(200);
    }
    await chat(BASE);
    expect(metrics.routes).toEqual(["resident", "ram", "disk", "cold", "resident"]);
  });

  it("labels responses with status and base, and base-less routes with none", async () => {
    metrics.responses.length = 0;
    await chat(BASE);
    await chat("no-such-base");
    await app.request("/healthz");
    expect(metrics.responses).toEqual([
      { route: "/v1/chat/completions", status: 200, base: BASE },
      { route: "/v1/chat/completions", status: 404, base: "" },
      { route: "/healthz", status: 200, base: "" },
    ]);
  });

  it("counts each error answer by its code, whichever handler, middleware or limit made it", async () => {
    metrics.errors.length = 0;
    await chat(BASE);
    await chat("no-such-base");
    await app.request("/v1/models", { headers: { authorization: "Bearer lk_not_a_key_at_all_0000000000" } });
    await app.request("/v1/no-such-route", { headers: { authorization: `Bearer ${h.keys.acme}` } });
    await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: BASE,
        messages: [{ role: "user", content: "x".repeat(5 * 1024 * 1024) }],
      }),
    });
    await app.request("/healthz");
    expect(metrics.errors).toEqual([
      { route: "/v1/chat/completions", code: "model_not_found" },
      { route: "/v1/*", code: "invalid_api_key" },
      { route: "/v1/*", code: "unknown_url" },
      // Answered by the body limit, the middleware of every /v1 route.
      { route: "/v1/*", code: "request_too_large" },
    ]);
  });

  it("records the added latency once per queued request, and nothing for a refused one", async () => {
    metrics.addedSeconds.length = 0;
    await chat(BASE);
    await chat("no-such-base");
    expect(metrics.addedSeconds).toHaveLength(1);
    expect(metrics.addedSeconds[0]).toBeGreaterThan(0);
  });

  it("holds a generation in flight until its stream ends", async () => {
    metrics.inFlightDeltas.length = 0;
    const res = await chat(BASE, true);
    expect(metrics.inFlightDeltas).toContainEqual({ stream: true, delta: 1 });
    await res.text();
    expect(metrics.inFlightDeltas).toEqual([
      { stream: true, delta: 1 },
      { stream: true, delta: -1 },
    ]);
  });

  it("counts the tokens of every run's Final, a failed one's and each choice's included", async () => {
    metrics.tokenCounts.length = 0;
    const res = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({ model: BASE, n: 2, max_tokens: 3, messages: [{ role: "user", content: "Hi" }] }),
    });
    const body = (await res.json()) as { usage: { prompt_tokens: number } };
    expect(metrics.tokenCounts.map((u) => u.completion_tokens)).toEqual([3, 3]);
    expect(metrics.tokenCounts.reduce((sum, u) => sum + u.prompt_tokens, 0)).toBe(body.usage.prompt_tokens);
    worker.behaviour = () => ({ error: { code: "oom", message: "out of memory" }, after: 2 });
    try {
      expect((await chat(BASE)).status).toBe(502);
    } finally {
      worker.behaviour = () => "reply";
    }
    expect(metrics.tokenCounts.at(-1)?.completion_tokens).toBe(2);
  });

  it("serves every series in Prometheus text at /metrics", async () => {
    const served = h.appWith({ metrics: prometheusMetrics() }) as Hono<GatewayEnv>;
    mountMetricsRoute(served, { ...h.deps, metrics: prometheusMetrics() });
    const res = await served.request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: `${BASE}:acme/cold`,
        stream: true,
        messages: [{ role: "user", content: "Hi" }],
      }),
    });
    await res.text();
    const text = await (await served.request("/metrics")).text();
    expect(text).toContain(
      `luminet_gateway_requests_total{route="/v1/chat/completions",status="200",base="${BASE}"} 1`,
    );
    expect(text).toContain(`luminet_route_total{base="${BASE}",outcome="cold"} 1`);
    await served.request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "no-such-base", messages: [{ role: "user", content: "Hi" }] }),
    });
    expect(await (await served.request("/metrics")).text()).toContain(
      'luminet_gateway_errors_total{route="/v1/chat/completions",code="model_not_found"} 1',
    );
    expect(text).toContain(`luminet_gateway_added_seconds_count{base="${BASE}"} 1`);
    expect(text).toContain(`luminet_gateway_inflight{base="${BASE}",stream="true"} 0`);
    expect(text).toContain(
      `luminet_gateway_tokens_total{base="${BASE}",kind="completion"} ${FAKE_REPLY_TOKENS}`,
    );
    expect(text).toContain(`luminet_gateway_tokens_total{base="${BASE}",kind="cached_prompt"} 0`);
    // Read at the scrape: one live worker, nothing queued.
    expect(text).toContain(`luminet_desired_workers{base="${BASE}"} 0`);
    expect(text).toContain(`luminet_live_workers{base="${BASE}"} 1`);
    expect(text).toContain("luminet_scale_signal_stale 0");
    // The process's own series (core/process-metrics.ts), each once.
    expect(text.match(/^process_cpu_seconds_total \d/gm)).toHaveLength(1);
    expect(text).toMatch(/^nodejs_eventloop_lag_max_seconds \d/m);
  });

  it("asks for the metrics token when one is set, and compares it whole", async () => {
    const served = h.appWith({}) as Hono<GatewayEnv>;
    mountMetricsRoute(served, { ...h.deps, metrics: prometheusMetrics() }, "scrape-secret");
    const scrape = (authorization?: string) =>
      served.request("/metrics", authorization ? { headers: { authorization } } : {});
    for (const refused of [
      undefined,
      "Bearer scrape-secre",
      "Bearer scrape-secret2",
      "scrape-secret",
      "Basic scrape-secret",
      "Bearer scrape-secret extra",
    ]) {
      const res = await scrape(refused);
      expect(res.status, String(refused)).toBe(401);
      expect(await res.text()).not.toContain("luminet_");
    }
    // The scheme is case-insensitive, as HTTP says.
    for (const taken of ["Bearer scrape-secret", "bearer scrape-secret", "BEARER  scrape-secret"]) {
      const ok = await scrape(taken);
      expect(ok.status, taken).toBe(200);
      expect(await ok.text()).toContain("luminet_gateway_requests_total");
    }
  });

  it("asks for a worker at the scrape when a request waits for a base with none", async () => {
    const cold = new InProcessBroker().connect();
    try {
      const served = h.appWith({ bus: cold }) as Hono<GatewayEnv>;
      mountMetricsRoute(served, { ...h.deps, bus: cold, metrics: prometheusMetrics() });
      await cold.publishRequest(sampleRequest({ id: "waiting", base: BASE }), ANY_WORKER);
      const text = await (await served.request("/metrics")).text();
      expect(text).toContain(`luminet_desired_workers{base="${BASE}"} 1`);
      expect(text).toContain(`luminet_live_workers{base="${BASE}"} 0`);
    } finally {
      await cold.close();
    }
  });

  it("says when it could not read the autoscaling signal, the gauges holding their last values", async () => {
    const away = new InProcessBroker().connect();
    const served = h.appWith({ bus: away }) as Hono<GatewayEnv>;
    mountMetricsRoute(served, { ...h.deps, bus: away, metrics: prometheusMetrics() });
    await away.close();
    const text = await (await served.request("/metrics")).text();
    expect(text).toContain("luminet_scale_signal_stale 1");
    const fine = h.appWith({}) as Hono<GatewayEnv>;
    mountMetricsRoute(fine, { ...h.deps, metrics: prometheusMetrics() });
    expect(await (await fine.request("/metrics")).text()).toContain("luminet_scale_signal_stale 0");
  });

  it("counts no batch line's run among clients' answers: the batch runner's own requests are not theirs", async () => {
    const served = h.appWith({ metrics: prometheusMetrics() }) as Hono<GatewayEnv>;
    mountMetricsRoute(served, { ...h.deps, metrics: prometheusMetrics() });
    const refused =
      /luminet_gateway_errors_total\{route="\/v1\/chat\/completions",code="model_not_found"\} (\d+)/;
    const refusals = async () => refused.exec(await (await served.request("/metrics")).text())?.[1] ?? "0";
    const before = await refusals();
    const [key] = await h.db
      .select({ id: apiKeys.id })
      .from(apiKeys)
      .where(eq(apiKeys.orgId, "acme"))
      .limit(1);
    const principal = await principalOfKey(h.db, key!.id);
    await served.fetch(
      new Request("http://batch.internal/v1/chat/completions", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "no-such-base", messages: [{ role: "user", content: "Hi" }] }),
      }),
      { [RUN_AS]: principal! },
    );
    expect(await refusals()).toBe(before);
  });
});

describe("routeRequest", () => {
  const beat = idleHeartbeat;

  it("names the shared queue a fallback when every worker has a backlog", () => {
    const busy = [beat("w1", { queue_depth: 20 }), beat("w2", { queue_depth: 17 })];
    expect(routeRequest(busy, "a", "r")).toEqual({ workerId: ANY_WORKER, outcome: "fallback" });
  });

  it("residency-blind routing sends a resident adapter to the least-loaded worker, and says it is cold", () => {
    const holder = beat("holder", { adapters: { slot: ["a"], ram: [], disk: [] }, queue_depth: 1 });
    const idle = beat("idle");
    expect(routeRequest([holder, idle], "a", "r")).toEqual({ workerId: "holder", outcome: "resident" });
    expect(routeRequest([holder, idle], "a", "r", { residencyBlind: true })).toEqual({
      workerId: "idle",
      outcome: "cold",
    });
  });
});
