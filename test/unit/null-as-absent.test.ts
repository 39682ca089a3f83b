// Fields clients send as null to mean "not given" (a turn echoed back as the API returned it, Python's None
// serialized): taken as left out, so a request with them reads, and prompts, exactly as one without them.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServedApp, serveApp } from "../../gateway/node.ts";
import { ChatCompletionRequest, CompletionRequest } from "../../schema/api.ts";
import { ResponseCreateRequest } from "../../schema/responses-api.ts";
import { FakeWorker } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

const turns = [
  { role: "user", content: "Hi" },
  { role: "assistant", content: "Hello", tool_calls: null, name: null },
  { role: "user", content: "Again", name: null, tool_call_id: null },
];
const tools = [
  { type: "function", function: { name: "f", description: null, parameters: { type: "object" } } },
  { type: "custom", custom: { name: "g", description: null } },
];
const withNulls = {
  model: BASE,
  messages: turns,
  tools,
  user: null,
  stream_options: { include_usage: null },
  response_format: { type: "json_schema", json_schema: { name: "s", description: null, schema: {} } },
};
const without = {
  model: BASE,
  messages: [
    { role: "user", content: "Hi" },
    { role: "assistant", content: "Hello" },
    { role: "user", content: "Again" },
  ],
  tools: [
    { type: "function", function: { name: "f", parameters: { type: "object" } } },
    { type: "custom", custom: { name: "g" } },
  ],
  stream_options: {},
  response_format: { type: "json_schema", json_schema: { name: "s", schema: {} } },
};

describe("null as left out", () => {
  it("reads a chat request's nulls as absent keys: nothing downstream sees a null", () => {
    const read = ChatCompletionRequest.parse(withNulls);
    const { user, stream_options, response_format, ...rest } = read;
    expect(user).toBeNull();
    expect(stream_options).toStrictEqual({ include_usage: null });
    expect(response_format?.json_schema?.description).toBeNull();
    const { stream_options: _s, response_format: _r, ...expected } = ChatCompletionRequest.parse(without);
    expect(rest).toStrictEqual(expected);
    expect(CompletionRequest.parse({ model: BASE, prompt: "x", user: null }).user).toBeNull();
    expect(ResponseCreateRequest.parse({ model: BASE, input: "x", user: null }).user).toBeNull();
  });
});

describe("null as left out, through the gateway", () => {
  let h: GatewayHarness;
  let worker: FakeWorker;
  let served: ServedApp;
  let client: OpenAI;

  beforeAll(async () => {
    h = await createGatewayHarness();
    worker = await FakeWorker.start(h.workerBus, { base: BASE });
    served = await serveApp(h.app, 0, "127.0.0.1");
    client = new OpenAI({ apiKey: h.keys.acme, baseURL: `${served.url}/v1`, maxRetries: 0 });
  });
  afterAll(async () => {
    await served?.close();
    await worker?.stop();
    await h?.close();
  });

  it("answers a conversation echoed back with nulls, prompted as the same one without them", async () => {
    const prompts: number[][] = [];
    for (const messages of [turns, without.messages]) {
      const answer = await client.chat.completions.create({
        model: BASE,
        messages: messages as OpenAI.ChatCompletionMessageParam[],
        user: null as unknown as string,
        max_tokens: 2,
      });
      expect(answer.choices[0]?.message.content).toBeTruthy();
      prompts.push(worker.received.at(-1)!.prompt_token_ids);
    }
    expect(prompts[0]).toEqual(prompts[1]);
  });
});
