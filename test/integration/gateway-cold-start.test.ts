// Scaling from zero on the real NATS with real `luminet worker` processes and the meter writing billing
// rows: a request for a base with no live worker waits on the base's shared queue, where the autoscaling
// signal and the shared consumer KEDA reads both show it, until a worker starts and serves it, billed once.
// A request nobody starts a worker for in time gets 503 and leaves the queue, and the worker that starts
// afterwards neither runs nor bills it.
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, describe, expect, inject, it, vi } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import type { ScaleSignal } from "../../gateway/fleet-scale.ts";
import { type Meter, startMeter } from "../../meter/meter.ts";
import { usageEvents } from "../../schema/db.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { startWorkerProcess, type WorkerProcess } from "../support/worker-process.ts";

const namespace = `coldstart_${process.pid}_${Date.now()}`;
const WAIT = { timeout: 30_000, interval: 100 };

let h: GatewayHarness;
let gatewayBus: Bus;
let meterBus: Bus;
let meter: Meter;
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  h = await createGatewayHarness();
  gatewayBus = await connectJetStreamBus({ servers: inject("natsUrl"), namespace });
  meterBus = await connectJetStreamBus({ servers: inject("natsUrl"), namespace });
  meter = await startMeter({ bus: meterBus, db: h.db, flushMs: 5 });
});

afterAll(async () => {
  await Promise.all(workers.map((worker) => worker.stop()));
  await meter?.stop();
  await meterBus?.close();
  await gatewayBus?.close();
  await h.close();
});

async function startWorker(workerId: string): Promise<WorkerProcess> {
  const worker = await startWorkerProcess({
    natsUrl: inject("natsUrl"),
    namespace,
    modelDir: h.modelDir,
    base: BASE,
    workerId,
  });
  workers.push(worker);
  return worker;
}

function gateway(coldStartTimeoutMs: number) {
  const app = h.appWith({ bus: gatewayBus, limits: { coldStartTimeoutMs } });
  return {
    chat: (body: Record<string, unknown>) =>
      app.request("/v1/chat/completions", {
        method: "POST",
        headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
        body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "Say hi" }], ...body }),
      }),
    async scale(): Promise<ScaleSignal> {
      const res = await app.request(`/v1/fleet/scale?base=${BASE}`, {
        headers: { authorization: `Bearer ${h.keys.acmeAdmin}` },
      });
      return ((await res.json()) as { data: ScaleSignal[] }).data[0]!;
    },
  };
}

async function billingRows(requestId: string) {
  return h.db.select().from(usageEvents).where(eq(usageEvents.requestId, requestId));
}

/** What KEDA's JetStream scaler reads: the base's shared durable, its lag and whether it can expire. */
async function sharedConsumer() {
  const nc = await connect({ servers: inject("natsUrl") });
  try {
    const info = await (await jetstreamManager(nc)).consumers.info(`${namespace}_REQUESTS`, `any__${BASE}`);
    return { lag: info.num_pending + info.num_ack_pending, expires: info.config.inactive_threshold ?? 0 };
  } finally {
    await nc.close();
  }
}

describe("a base scaled to zero", () => {
  it("answers 503 when no worker starts in time; the worker that starts later neither runs nor bills it", async () => {
    const res = await gateway(1_000).chat({ max_tokens: 4 });
    expect(res.status).toBe(503);
    const { error } = (await res.json()) as { error: { code: string; message: string } };
    expect(error.code).toBe("no_worker");
    expect(error.message).toContain("started within 1 s");
    const refusedId = res.headers.get("x-request-id")!;
    expect(refusedId).toBeTruthy();
    // Nobody waits for it any more, so the gateway took it off the queue: it asks the autoscaler for nothing.
    await vi.waitFor(async () => expect(await gatewayBus.requestBacklog(BASE)).toBe(0), WAIT);

    await startWorker("late");

    // A request served after it is billed, so the meter has caught up past the refused one.
    const served = await gateway(60_000).chat({ max_tokens: 2 });
    expect(served.status).toBe(200);
    const servedId = served.headers.get("x-request-id")!;
    await vi.waitFor(async () => expect(await billingRows(servedId)).toHaveLength(1), WAIT);
    expect(await billingRows(refusedId)).toEqual([]);

    await Promise.all(workers.splice(0).map((worker) => worker.stop()));
  }, 120_000);

  it("keeps requests queued, visible to the autoscaler, until a worker starts; serves and bills each once", async () => {
    const fleet = gateway(60_000);
    // The last worker's heartbeat outlives it by the heartbeat TTL.
    await vi.waitFor(async () => expect(await gatewayBus.liveHeartbeats(BASE)).toEqual([]), WAIT);

    const streamed = fleet.chat({ max_tokens: 3, stream: true });
    const whole = fleet.chat({ max_tokens: 3 });
    await vi.waitFor(
      async () => expect(await fleet.scale()).toMatchObject({ workers: 0, backlog: 2, desired_workers: 1 }),
      WAIT,
    );
    // The shared durable a worker made earlier is still there (it never expires), holding both requests.
    expect(await sharedConsumer()).toEqual({ lag: 2, expires: 0 });

    await startWorker("fresh");
    const [streamedRes, wholeRes] = await Promise.all([streamed, whole]);
    expect(streamedRes.status).toBe(200);
    expect(wholeRes.status).toBe(200);

    const frames = (await streamedRes.text()).split("\n\n").filter((frame) => frame.length > 0);
    expect(frames.at(-1)).toBe("data: [DONE]");
    const chunks = frames.slice(0, -1).map((frame) => JSON.parse(frame.slice("data: ".length)));
    expect(chunks.at(-1).choices[0].finish_reason).toMatch(/^(stop|length)$/);
    const body = (await wholeRes.json()) as { usage: { prompt_tokens: number; completion_tokens: number } };
    expect(body.usage.completion_tokens).toBeGreaterThan(0);

    for (const res of [streamedRes, wholeRes]) {
      const requestId = res.headers.get("x-request-id")!;
      await vi.waitFor(async () => expect(await billingRows(requestId)).toHaveLength(1), WAIT);
    }
    const [wholeRow] = await billingRows(wholeRes.headers.get("x-request-id")!);
    expect(wholeRow).toMatchObject({
      inputTokens: body.usage.prompt_tokens,
      outputTokens: body.usage.completion_tokens,
    });
    expect(await fleet.scale()).toMatchObject({ workers: 1, backlog: 0 });
  }, 120_000);
});
