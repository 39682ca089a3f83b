// A worker that dies after its tokens went out sends no usage event, and its request never runs again;
// the gateway bills what reached the client, once.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { UsageEvent } from "../../schema/wire.ts";
import { FakeWorker } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

let h: GatewayHarness;
let worker: FakeWorker;
const billed: UsageEvent[] = [];

beforeAll(async () => {
  h = await createGatewayHarness();
  worker = await FakeWorker.start(h.workerBus, { base: BASE });
  await h.workerBus.consumeUsage(async (event) => {
    billed.push(event);
  });
});
afterAll(async () => {
  await worker.stop();
  await h.close();
});

describe("a stream whose worker was lost after its first tokens", () => {
  it("ends with an error and bills exactly the tokens the client received", async () => {
    worker.behaviour = () => ({ partial: 3 });
    const res = await h.app.request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "Hi there" }], stream: true }),
    });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    while ((text.match(/"content":"[^"]+"/g) ?? []).length < 3)
      text += decoder.decode((await reader.read()).value);
    // The request is redelivered to another worker, whose claim the inbox refuses: tokens already went out.
    const request = worker.received[worker.received.length - 1]!;
    const granted = await h.workerBus.claimReply(request.reply, {
      v: 1,
      request_id: request.id,
      worker_id: "other",
    });
    expect(granted).toBe(false);
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read())
      text += decoder.decode(chunk.value);
    expect(text).toContain('"error"');

    // Waits only as long as the meter takes; the limit is for a loaded machine.
    const deadline = Date.now() + 20_000;
    while (!billed.some((e) => e.request_id === request.id) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const events = billed.filter((e) => e.request_id === request.id);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      output_tokens: 3,
      input_tokens: request.prompt_token_ids.length,
      finish_reason: "error",
      org: request.org,
      base: BASE,
    });
  });

  it("bills a request not streamed none of the tokens its lost worker sent: its client gets only the error", async () => {
    worker.behaviour = () => ({ partial: 3 });
    const before = worker.received.length;
    const answer = h.app.request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "Whole or nothing" }] }),
    });
    // The worker claimed it and sent its three chunks, which the gateway holds for the whole answer.
    const claimed = () => {
      const request = worker.received[before];
      return worker.claims.some((c) => c.granted && c.requestId === request?.id) ? request : undefined;
    };
    while (!claimed()) await new Promise((r) => setTimeout(r, 10));
    const request = claimed();
    await new Promise((r) => setTimeout(r, 50));
    const granted = await h.workerBus.claimReply(request!.reply, {
      v: 1,
      request_id: request!.id,
      worker_id: "other",
    });
    expect(granted).toBe(false);
    const res = await answer;
    expect(res.status).toBe(502);
    expect(await res.json()).toMatchObject({ error: { code: "worker_lost" } });
    const deadline = Date.now() + 20_000;
    while (!billed.some((e) => e.request_id === request!.id) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(billed.filter((e) => e.request_id === request!.id)).toMatchObject([
      { output_tokens: 0, input_tokens: request!.prompt_token_ids.length, finish_reason: "error" },
    ]);
  });
});
