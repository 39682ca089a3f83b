// The autoscaling signal: desired workers from the backlog (sequences) and the token rate (throughput),
// scaling from zero, the bounds; and GET /v1/fleet/scale through app.request on the in-process bus, with
// its admin scope and the luminet_desired_workers gauge; the batch lines waiting per base beside it.
import OpenAI, { toFile } from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ScaleSignal, scaleOptionsProblem, scaleSignal } from "../../gateway/fleet-scale.ts";
import { quietMetrics } from "../../gateway/quiet-metrics.ts";
import { ANY_WORKER } from "../../schema/wire.ts";
import { sampleRequest } from "../contract/wire-samples.ts";
import { FakeWorker } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { idleHeartbeat } from "../support/heartbeats.ts";

const beat = idleHeartbeat;

describe("scaleSignal", () => {
  const options = { sequencesPerWorker: 10, targetUtilization: 1 };

  it("wants no worker for a base with nothing queued and none running", () => {
    expect(scaleSignal("b", 0, [], options).desired_workers).toBe(0);
  });

  it("scales from zero: a backlog with no worker wants one", () => {
    const signal = scaleSignal("b", 3, [], options);
    expect(signal).toMatchObject({ workers: 0, desired_workers: 1, backlog: 3 });
  });

  it("wants enough workers for the backlog's sequences at the target utilization", () => {
    expect(scaleSignal("b", 25, [beat("w1")], options).desired_workers).toBe(3);
    expect(scaleSignal("b", 25, [beat("w1")], { ...options, targetUtilization: 0.5 }).desired_workers).toBe(
      5,
    );
  });

  it("counts running sequences the bus does not show yet", () => {
    const busy = [beat("w1", { running: 10 }), beat("w2", { running: 9 })];
    expect(scaleSignal("b", 0, busy, options).desired_workers).toBe(2);
  });

  it("wants more workers when the token rate nears the workers' throughput", () => {
    const hot = [beat("w1", { tokens_per_s: 100 }), beat("w2", { tokens_per_s: 100 })];
    const signal = scaleSignal("b", 2, hot, {
      ...options,
      tokensPerSecondPerWorker: 120,
      targetUtilization: 0.8,
    });
    expect(signal.capacity.tokens_per_s_per_worker).toBe(96);
    expect(signal.desired_workers).toBe(3);
  });

  it("leaves the token rate out where a worker's throughput is not configured: what workers report is demand, not capacity", () => {
    // One worker streaming for one client, then two busy ones: neither fleet is short of workers.
    const planned = { ...options, targetUtilization: 0.8 };
    const one = scaleSignal("b", 1, [beat("w1", { running: 1, tokens_per_s: 280 })], planned);
    expect(one.capacity.tokens_per_s_per_worker).toBeNull();
    expect(one.desired_workers).toBe(1);
    const busy = [
      beat("w1", { running: 8, tokens_per_s: 900 }),
      beat("w2", { running: 8, tokens_per_s: 900 }),
    ];
    expect(scaleSignal("b", 16, busy, planned).desired_workers).toBe(2);
  });

  it("takes a worker's sequences from the smallest --max-batch live workers report, else 64", () => {
    const unset = { targetUtilization: 1 };
    const beats = [beat("w1", { max_batch: 16 }), beat("w2", { max_batch: 32 }), beat("w3")];
    const signal = scaleSignal("b", 40, beats, unset);
    expect(signal.capacity.sequences_per_worker).toBe(16);
    expect(signal.desired_workers).toBe(3);
    // Workers from before max_batch was reported, or none at all: the worker's default --max-batch.
    expect(scaleSignal("b", 130, [beat("w3")], unset).capacity.sequences_per_worker).toBe(64);
    expect(scaleSignal("b", 130, [], unset).desired_workers).toBe(3);
    // Configured, it wins over what workers report.
    expect(scaleSignal("b", 40, beats, { ...unset, sequencesPerWorker: 40 }).desired_workers).toBe(1);
  });

  it("names what is wrong with configured bounds as the caller names them", () => {
    const names = { min: "MIN", max: "MAX", utilization: "UTIL" };
    const ok = { minWorkers: 1, maxWorkers: 4, targetUtilization: 0.8 };
    expect(scaleOptionsProblem(ok, names, "0.8")).toBeNull();
    expect(scaleOptionsProblem({ ...ok, minWorkers: 5 }, names, "0.8")).toBe(
      "MIN (5) must not exceed MAX (4)",
    );
    expect(scaleOptionsProblem({ ...ok, targetUtilization: 0 }, names, "0")).toBe(
      'UTIL must be a number in (0, 1], got "0"',
    );
    expect(scaleOptionsProblem({ ...ok, targetUtilization: Number.NaN }, names, "lots")).toContain(
      'got "lots"',
    );
  });

  it("stays within the minimum and maximum", () => {
    expect(scaleSignal("b", 0, [], { ...options, minWorkers: 2 }).desired_workers).toBe(2);
    expect(scaleSignal("b", 1_000, [], { ...options, maxWorkers: 8 }).desired_workers).toBe(8);
  });
});

describe("GET /v1/fleet/scale", () => {
  let h: GatewayHarness;
  const desired: Record<string, number> = {};
  const waiting: Record<string, number> = {};
  const metrics = quietMetrics({
    desiredWorkers(base, workers) {
      desired[base] = workers;
    },
    batchLinesWaiting(base, lines) {
      waiting[base] = lines;
    },
  });
  let app: ReturnType<GatewayHarness["appWith"]>;

  beforeAll(async () => {
    h = await createGatewayHarness();
    app = h.appWith({ metrics, scale: { sequencesPerWorker: 4, targetUtilization: 1 } });
  });
  afterAll(async () => {
    await h.close();
  });

  const get = (key: string, query = "") =>
    app.request(`/v1/fleet/scale${query}`, { headers: { authorization: `Bearer ${key}` } });

  it("refuses a key without the admin scope", async () => {
    expect((await get(h.keys.acme)).status).toBe(403);
  });

  it("answers 404 for a base the gateway does not serve", async () => {
    const unknown = await get(h.keys.acmeAdmin, "?base=nope");
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: "model_not_found", param: "base" } });
  });

  it("asks for workers for a queue nobody serves, then for the backlog a worker has pulled", async () => {
    for (let i = 0; i < 6; i++) {
      await h.bus.publishRequest(sampleRequest({ id: `queued-${i}`, base: BASE }), ANY_WORKER);
    }
    const res = await get(h.keys.acmeAdmin);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { object: string; data: ScaleSignal[] };
    expect(body.data).toEqual([
      expect.objectContaining({ base: BASE, workers: 0, backlog: 6, desired_workers: 2 }),
    ]);
    expect(desired[BASE]).toBe(2);

    // A worker that stalls before claiming holds its requests pulled and unacked: still backlog.
    const worker = await FakeWorker.start(h.workerBus, { base: BASE, stallClaims: true });
    await worker.pulled(6);
    const after = (await (await get(h.keys.acmeAdmin, `?base=${BASE}`)).json()) as { data: ScaleSignal[] };
    expect(after.data[0]).toMatchObject({ workers: 1, backlog: 6, desired_workers: 2 });
    worker.releaseClaims();
    await worker.stop();
  });

  it("counts the lines of running batches not yet sent, per base, without asking for workers for them", async () => {
    const client = new OpenAI({
      apiKey: h.keys.acme,
      baseURL: "http://gateway/v1",
      maxRetries: 0,
      fetch: async (url, init) => app.request(String(url), init),
    });
    const line = (id: string, model: string) =>
      JSON.stringify({
        custom_id: id,
        method: "POST",
        url: "/v1/chat/completions",
        body: { model, messages: [] },
      });
    const file = await client.files.create({
      file: await toFile(
        Buffer.from(`${[line("a", BASE), line("b", `${BASE}:acme/a1`), line("c", "other:7b")].join("\n")}\n`),
        "w.jsonl",
      ),
      purpose: "batch",
    });
    const before = ((await (await get(h.keys.acmeAdmin)).json()) as { data: ScaleSignal[] }).data[0]!;
    await client.batches.create({
      input_file_id: file.id,
      endpoint: "/v1/chat/completions",
      completion_window: "24h",
    });
    const body = (await (await get(h.keys.acmeAdmin)).json()) as { data: ScaleSignal[] };
    expect(body.data[0]).toMatchObject({
      base: BASE,
      batch_lines_waiting: 2,
      desired_workers: before.desired_workers,
    });
    expect(waiting[BASE]).toBe(2);
  });
});
