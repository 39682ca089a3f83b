// "If the chosen worker does not take the request in time, another does, never both" on the real NATS: the
// gateway publishes to a worker that pulls the request but stalls before claiming it; after the claim
// timeout a copy goes to the base's shared queue. A real `luminet worker` process serves the copy and the
// stalled worker's late claim is refused; when the stalled worker claims first instead, the copy is refused.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, inject, it, vi } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { rendezvous } from "../../core/rendezvous.ts";
import { chooseWorker } from "../../gateway/routing.ts";
import { FakeWorker, fakeReplyText } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { idleHeartbeat } from "../support/heartbeats.ts";
import { startWorkerProcess, type WorkerProcess } from "../support/worker-process.ts";

// A late claim is answered by the inbox, or, once the inbox has closed, refused when the bus's claim
// request times out (5 s): wait past that.
const CLAIM_ANSWER = { timeout: 10_000, interval: 50 };

const CLAIM_TIMEOUT_MS = 300;

let h: GatewayHarness;
const buses: Bus[] = [];
const fakes: FakeWorker[] = [];
let real: WorkerProcess | undefined;
let beating: ReturnType<typeof setInterval> | undefined;

async function bus(namespace: string): Promise<Bus> {
  const connected = await connectJetStreamBus({ servers: inject("natsUrl"), namespace });
  buses.push(connected);
  return connected;
}

/**
 * Worker ids, `${chosen}-N` and `${other}-N`, such that routing prefers the first for the test org's
 * base-only requests (it places those by org, gateway/routing.ts): the test decides which worker is
 * "chosen" without bending the router.
 */
function idsChoosing(chosen: string, other: string): { chosen: string; other: string } {
  for (let n = 0; ; n++) {
    const ids = { chosen: `${chosen}-${n}`, other: `${other}-${n}` };
    const preferred = rendezvous("acme", [idleHeartbeat(ids.chosen), idleHeartbeat(ids.other)]);
    if (preferred?.worker_id === ids.chosen) return ids;
  }
}

/** A gateway on `namespace`, checked to route acme's next base-only request to `target`. */
async function gatewayOn(namespace: string, target: string) {
  const gatewayBus = await bus(namespace);
  let nextId = "";
  const app = h.appWith({
    bus: gatewayBus,
    routing: { claimTimeoutMs: CLAIM_TIMEOUT_MS },
    newRequestId: () => nextId,
  });
  return async (body: Record<string, unknown>, signal?: AbortSignal) => {
    const live = await gatewayBus.liveHeartbeats(BASE);
    expect(chooseWorker(live, null, "acme")).toBe(target);
    nextId = `failover${randomUUID().replaceAll("-", "")}`;
    const requestId = nextId;
    const res = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "Say hi" }], ...body }),
      ...(signal ? { signal } : {}),
    });
    return { res, requestId };
  };
}

async function liveWorkers(gatewayBus: Bus, count: number): Promise<void> {
  await vi.waitFor(async () => expect(await gatewayBus.liveHeartbeats(BASE)).toHaveLength(count), {
    timeout: 20_000,
    interval: 50,
  });
}

beforeAll(async () => {
  h = await createGatewayHarness();
});

afterAll(async () => {
  clearInterval(beating);
  await Promise.all(fakes.map((fake) => fake.stop()));
  await real?.stop();
  await Promise.all(buses.map((b) => b.close()));
  await h.close();
});

describe("a request its chosen worker does not claim in time", () => {
  const namespace = `failover_${process.pid}_${Date.now()}`;
  const ids = idsChoosing("stalled", "real");
  let stalled: FakeWorker;
  let send: Awaited<ReturnType<typeof gatewayOn>>;
  let gatewayBus: Bus;

  beforeAll(async () => {
    real = await startWorkerProcess({
      natsUrl: inject("natsUrl"),
      namespace,
      modelDir: h.modelDir,
      base: BASE,
      workerId: ids.other,
    });
    // The stalled worker pulls only its own queue, as a frozen process takes nothing more.
    stalled = await FakeWorker.start(await bus(namespace), {
      base: BASE,
      workerId: ids.chosen,
      stallClaims: true,
      shared: false,
    });
    fakes.push(stalled);
    beating = setInterval(() => void stalled.beat(), 1000);
    send = await gatewayOn(namespace, ids.chosen);
    gatewayBus = buses[buses.length - 1]!;
    await liveWorkers(gatewayBus, 2);
  }, 60_000);

  it("is served by another worker, and the late claim of the chosen one is refused", async () => {
    const { res, requestId } = await send({ max_tokens: 4 });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toBe(requestId);
    const body = (await res.json()) as {
      choices: { message: { content: string }; finish_reason: string }[];
      usage: { completion_tokens: number };
    };
    expect(body.usage.completion_tokens).toBeGreaterThan(0);
    expect(body.usage.completion_tokens).toBeLessThanOrEqual(4);
    expect(body.choices[0]?.message.content).not.toBe(fakeReplyText(4));

    await stalled.pulled(1);
    expect(stalled.received[0]?.id).toBe(requestId);
    // The served copy was acked, and the gateway took the original off the stalled worker's queue though
    // that worker still holds it: the autoscaler's backlog does not count the request twice, or at all.
    await vi.waitFor(async () => expect(await gatewayBus.requestBacklog(BASE)).toBe(0), CLAIM_ANSWER);
    stalled.releaseClaims();
    await vi.waitFor(() => expect(stalled.claims).toHaveLength(1), CLAIM_ANSWER);
    expect(stalled.claims[0]).toMatchObject({ requestId, granted: false });
  });

  it("streams from another worker, and the chosen one's late claim is refused", async () => {
    stalled.stallClaims();
    const { res, requestId } = await send({ max_tokens: 3, stream: true });
    expect(res.status).toBe(200);
    const frames = (await res.text()).split("\n\n").filter((frame) => frame.length > 0);
    expect(frames.at(-1)).toBe("data: [DONE]");
    const chunks = frames.slice(0, -1).map((frame) => JSON.parse(frame.slice("data: ".length)));
    expect(chunks.every((chunk) => chunk.id === `chatcmpl-${requestId}`)).toBe(true);
    expect(chunks.at(-1).choices[0].finish_reason).toMatch(/^(stop|length)$/);

    await stalled.pulled(2);
    stalled.releaseClaims();
    await vi.waitFor(() => expect(stalled.claims).toHaveLength(2), CLAIM_ANSWER);
    expect(stalled.claims[1]).toMatchObject({ requestId, granted: false });
  });
});

describe("a chosen worker that claims after the copy went out, before anyone took the copy", () => {
  const namespace = `failover_late_${process.pid}_${Date.now()}`;

  it("keeps it, and the copy's claim is refused even before any token went out", async () => {
    const ids = idsChoosing("chosen", "spare");
    const chosen = await FakeWorker.start(await bus(namespace), {
      base: BASE,
      workerId: ids.chosen,
      stallClaims: true,
      shared: false,
      behaviour: () => "hang",
    });
    const spare = await FakeWorker.start(await bus(namespace), {
      base: BASE,
      workerId: ids.other,
      stallClaims: true,
    });
    fakes.push(chosen, spare);
    const send = await gatewayOn(namespace, ids.chosen);
    await liveWorkers(buses[buses.length - 1]!, 2);

    const client = new AbortController();
    const answer = send({ max_tokens: 4, stream: true }, client.signal);
    await chosen.pulled(1);
    // The copy reaches the shared queue only after the claim timeout: the spare pulling it proves it went.
    await spare.pulled(1);
    const original = chosen.received[0]!;
    const copy = spare.received[0]!;
    expect(copy.id).toBe(original.id);
    expect(copy.reply).not.toBe(original.reply);

    chosen.releaseClaims();
    await vi.waitFor(() => expect(chosen.claims).toHaveLength(1), CLAIM_ANSWER);
    expect(chosen.claims[0]).toEqual({ requestId: original.id, reply: original.reply, granted: true });
    // No token has gone out, so only the copy rule stands between the spare and a second run.
    spare.releaseClaims();
    await vi.waitFor(() => expect(spare.claims).toHaveLength(1), CLAIM_ANSWER);
    expect(spare.claims[0]).toEqual({ requestId: copy.id, reply: copy.reply, granted: false });

    client.abort();
    await chosen.cancelled(original.id);
    await answer.then((result) => result.res.body?.cancel()).catch(() => {});
  });
});
