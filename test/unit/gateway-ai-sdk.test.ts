// The Vercel AI SDK (`ai` with `@ai-sdk/openai`, whose default model speaks the Responses API) against the
// gateway over HTTP (in-process bus, scripted worker): text generated and streamed, and a multi-turn
// conversation, whose earlier answers the SDK sends as item references when responses are stored.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, type ModelMessage, streamText } from "ai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServedApp, serveApp } from "../../gateway/node.ts";
import type { InferenceRequest } from "../../schema/wire.ts";
import { FakeWorker, fakeReplyText } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

let h: GatewayHarness;
let worker: FakeWorker;
let served: ServedApp;
/** The bodies the SDK posted to /v1/responses, in order. */
const posted: Record<string, unknown>[] = [];
let provider: ReturnType<typeof createOpenAI>;

beforeAll(async () => {
  h = await createGatewayHarness();
  worker = await FakeWorker.start(h.workerBus, { base: BASE });
  served = await serveApp(h.app, 0, "127.0.0.1");
  provider = createOpenAI({
    apiKey: h.keys.acme,
    baseURL: `${served.url}/v1`,
    fetch: async (url, init) => {
      if (String(url).endsWith("/responses") && typeof init?.body === "string")
        posted.push(JSON.parse(init.body));
      return fetch(url, init);
    },
  });
});
afterAll(async () => {
  await served.close();
  await worker.stop();
  await h.close();
});

const lastRun = (): InferenceRequest => worker.received.at(-1)!;

describe("the Vercel AI SDK", () => {
  it("generates and streams text through the Responses API, with usage", async () => {
    const result = await generateText({ model: provider(BASE), prompt: "Say hello", maxOutputTokens: 3 });
    expect(posted.at(-1)).toMatchObject({ model: BASE, max_output_tokens: 3 });
    expect(result.text).toBe(fakeReplyText(3));
    expect(result.finishReason).toBe("length");
    expect(result.usage.outputTokens).toBe(3);
    expect(result.usage.inputTokens).toBe(lastRun().prompt_token_ids.length);

    const stream = streamText({ model: provider(BASE), prompt: "Say hello" });
    let text = "";
    for await (const piece of stream.textStream) text += piece;
    expect(text).toBe(fakeReplyText(100));
    expect(await stream.finishReason).toBe("stop");
  });

  it("continues a conversation whose earlier answers it sends as item references", async () => {
    const model = provider(BASE);
    const history: ModelMessage[] = [{ role: "user", content: "First question" }];
    const first = await generateText({ model, messages: history, maxOutputTokens: 3 });
    history.push(...first.response.messages, { role: "user", content: "Second question" });
    const second = await generateText({ model, messages: history, maxOutputTokens: 2 });
    const input = posted.at(-1)?.input as { type?: string }[];
    expect(input.map((item) => item.type ?? "message")).toEqual(["message", "item_reference", "message"]);
    expect(second.text).toBe(fakeReplyText(2));

    const chat = await fetch(`${served.url}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({
        model: BASE,
        messages: [
          { role: "user", content: "First question" },
          { role: "assistant", content: fakeReplyText(3) },
          { role: "user", content: "Second question" },
        ],
        max_tokens: 1,
      }),
    });
    expect(chat.status).toBe(200);
    expect(worker.received.at(-2)?.prompt_token_ids).toEqual(lastRun().prompt_token_ids);
  });
});
