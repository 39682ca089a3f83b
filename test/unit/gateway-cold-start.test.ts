// Scaling from zero through app.request on the in-process bus: a request for a base with no live worker
// waits on the base's shared queue until a (scripted) worker starts and claims it, streaming or not; the
// autoscaling signal asks for a worker meanwhile; after the cold-start timeout the answer is 503 no_worker
// and the request leaves the queue, so a worker that starts later never gets it; a client that leaves
// ends the wait the same way.
// A stream that waits past its headers' due time answers 200 with SSE keep-alives, then tokens or an
// in-band error.
// Each test gets its own broker, so no heartbeat of an earlier test's worker is live in the next.
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import type { Bus } from "../../bus/bus.ts";
import { InProcessBroker } from "../../bus/in-process.ts";
import type { GatewayDepsInput } from "../../gateway/deps.ts";
import type { ScaleSignal } from "../../gateway/fleet-scale.ts";
import type { ColdStartOutcome } from "../../gateway/generation.ts";
import { quietMetrics } from "../../gateway/quiet-metrics.ts";
import { FakeWorker, fakeReplyText } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

let h: GatewayHarness;
const opened: { close(): Promise<void> }[] = [];

beforeAll(async () => {
  h = await createGatewayHarness();
});
afterEach(async () => {
  await Promise.all(opened.splice(0).map((handle) => handle.close()));
});
afterAll(async () => {
  await h.close();
});

/** A gateway on a broker of its own, with no worker yet; `startWorker` brings one up on that broker. */
function coldFleet(limits: GatewayDepsInput["limits"]) {
  const broker = new InProcessBroker();
  const gatewayBus = broker.connect();
  const workerBus: Bus = broker.connect();
  opened.push(gatewayBus, workerBus);
  const coldStarts: ColdStartOutcome[] = [];
  const metrics = quietMetrics({ coldStart: (_base, outcome) => void coldStarts.push(outcome) });
  const app = h.appWith({ bus: gatewayBus, metrics, limits });
  return {
    coldStarts,
    chat: (body: Record<string, unknown>, signal?: AbortSignal) =>
      app.request("/v1/chat/completions", {
        method: "POST",
        headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
        body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "Hi" }], ...body }),
        ...(signal ? { signal } : {}),
      }),
    async scale(): Promise<ScaleSignal> {
      const res = await app.request(`/v1/fleet/scale?base=${BASE}`, {
        headers: { authorization: `Bearer ${h.keys.acmeAdmin}` },
      });
      return ((await res.json()) as { data: ScaleSignal[] }).data[0]!;
    },
    async startWorker(): Promise<FakeWorker> {
      const worker = await FakeWorker.start(workerBus, { base: BASE });
      opened.push({ close: () => worker.stop() });
      return worker;
    },
  };
}

const WAIT = { timeout: 10_000, interval: 20 };

/** The content a chat stream's body carries, after checking it ends with [DONE]; SSE comments skipped. */
function streamedText(body: string): string {
  const frames = body.split("\n\n").filter((frame) => frame.length > 0 && !frame.startsWith(":"));
  expect(frames.at(-1)).toBe("data: [DONE]");
  return frames
    .slice(0, -1)
    .map((frame) => JSON.parse(frame.slice("data: ".length)).choices[0].delta.content ?? "")
    .join("");
}

/**
 * The fleet's only request was given up: it left the queue (the autoscaler no longer counts it), so the
 * worker that starts next is handed only the request sent after it.
 */
async function expectWithdrawn(fleet: ReturnType<typeof coldFleet>): Promise<void> {
  await vi.waitFor(async () => expect((await fleet.scale()).backlog).toBe(0), WAIT);
  const worker = await fleet.startWorker();
  const next = await fleet.chat({ max_tokens: 2 });
  expect(next.status).toBe(200);
  expect(worker.received).toHaveLength(1);
  expect(worker.claims).toEqual([expect.objectContaining({ granted: true })]);
}

describe("a request for a base with no live worker", () => {
  it("waits on the shared queue, counted by the scale signal, until a worker starts and serves it", async () => {
    const fleet = coldFleet({ coldStartTimeoutMs: 60_000 });
    const answer = fleet.chat({ max_tokens: 4 });
    await vi.waitFor(
      async () => expect(await fleet.scale()).toMatchObject({ workers: 0, backlog: 1, desired_workers: 1 }),
      WAIT,
    );
    const worker = await fleet.startWorker();
    const res = await answer;
    expect(res.status).toBe(200);
    const body = (await res.json()) as { choices: { message: { content: string } }[] };
    expect(body.choices[0]?.message.content).toBe(fakeReplyText(4));
    expect(worker.claims).toEqual([expect.objectContaining({ granted: true })]);
    expect(fleet.coldStarts).toEqual(["claimed"]);
  });

  it("streams once a worker has started", async () => {
    const fleet = coldFleet({ coldStartTimeoutMs: 60_000 });
    const answer = fleet.chat({ max_tokens: 3, stream: true });
    await vi.waitFor(async () => expect((await fleet.scale()).backlog).toBe(1), WAIT);
    await fleet.startWorker();
    const res = await answer;
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    expect(streamedText(await res.text())).toBe(fakeReplyText(3));
  });

  it("answers 503 no_worker after the cold-start timeout, and a worker that starts later never gets it", async () => {
    const fleet = coldFleet({ coldStartTimeoutMs: 200 });
    const res = await fleet.chat({ max_tokens: 4 });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("5");
    const { error } = (await res.json()) as { error: { message: string; type: string; code: string } };
    expect(error).toEqual({
      message: `No worker for the base model \`${BASE}\` started within 0.2 s; retry in 5 s.`,
      type: "server_error",
      param: null,
      code: "no_worker",
    });
    expect(fleet.coldStarts).toEqual(["timeout"]);
    await expectWithdrawn(fleet);
  });

  it("stops waiting when the client leaves, and a worker that starts later never gets it", async () => {
    const fleet = coldFleet({ coldStartTimeoutMs: 60_000 });
    const client = new AbortController();
    const answer = Promise.resolve(fleet.chat({ max_tokens: 4, stream: true }, client.signal)).catch(
      (error: unknown) => error,
    );
    await vi.waitFor(async () => expect((await fleet.scale()).backlog).toBe(1), WAIT);
    client.abort();
    await answer;
    await vi.waitFor(() => expect(fleet.coldStarts).toEqual(["cancelled"]), WAIT);
    await expectWithdrawn(fleet);
  });

  it("answers a stream that waits long 200 at once, keeps it alive with comments, then streams the tokens", async () => {
    const fleet = coldFleet({ coldStartTimeoutMs: 60_000, streamHeadersAfterMs: 50, keepAliveMs: 40 });
    const res = await fleet.chat({ max_tokens: 3, stream: true });
    // No worker yet: the headers went out because they were due, not because a token came.
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    expect(fleet.coldStarts).toEqual([]);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    expect(decoder.decode((await reader.read()).value)).toBe(": keep-alive\n\n");
    await fleet.startWorker();
    let rest = "";
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read())
      rest += decoder.decode(chunk.value);
    expect(streamedText(rest)).toBe(fakeReplyText(3));
    expect(fleet.coldStarts).toEqual(["claimed"]);
  });

  it("tells a stream whose headers went out that no worker started, in-band", async () => {
    const fleet = coldFleet({ coldStartTimeoutMs: 300, streamHeadersAfterMs: 50, keepAliveMs: 60_000 });
    const res = await fleet.chat({ max_tokens: 3, stream: true });
    expect(res.status).toBe(200);
    const frames = (await res.text()).split("\n\n").filter((frame) => frame.length > 0);
    expect(frames).toHaveLength(1);
    const { error } = JSON.parse(frames[0]!.slice("data: ".length)) as { error: { code: string } };
    expect(error.code).toBe("no_worker");
    expect(fleet.coldStarts).toEqual(["timeout"]);
  });

  it("answers 503 at once, queueing nothing, with cold starts off", async () => {
    const fleet = coldFleet({ coldStartTimeoutMs: 0 });
    const res = await fleet.chat({});
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("no_worker");
    expect(await fleet.scale()).toMatchObject({ backlog: 0, desired_workers: 0 });
    expect(fleet.coldStarts).toEqual([]);
  });
});
