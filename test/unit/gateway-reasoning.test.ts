// A reasoning model behind the gateway (app.request, PGlite, the in-process bus, a scripted worker): the
// base's chat template is a hybrid reasoning model's (it reads enable_thinking) or one that opens the
// reasoning in the prompt; answers come back with the reasoning in reasoning_content, streamed or not,
// its tokens in the usage, and reasoning_effort decides the prompt.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ChatCompletion, ChatCompletionChunk, ErrorBody } from "../../schema/api.ts";
import type {
  ListedItem,
  OutputMessage,
  ReasoningOutput,
  ResponseObject,
} from "../../schema/responses-api.ts";
import type { InferenceRequest } from "../../schema/wire.ts";
import { loadTokenizer, type Tokenizer } from "../../worker/engine/tokenizer.ts";
import { FakeWorker } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";
import { HYBRID_REASONING_TEMPLATE, OPENING_REASONING_TEMPLATE } from "../support/reasoning-templates.ts";

const THOUGHT = ["<think>", "\n", "Let", " me", " see", ".", "\n", "</think>", "\n\n", "Hi", "!"];

interface Setup {
  h: GatewayHarness;
  worker: FakeWorker;
  tokenizer: Tokenizer;
}

async function setUp(chatTemplate: string, reasoningTags = false): Promise<Setup> {
  const h = await createGatewayHarness({}, { chatTemplate, reasoningTags });
  const worker = await FakeWorker.start(h.workerBus, { base: BASE });
  return { h, worker, tokenizer: loadTokenizer(h.modelDir) };
}

async function tearDown({ h, worker }: Setup): Promise<void> {
  await worker.stop();
  await h.close();
}

function post(s: Setup, path: string, body: Record<string, unknown>) {
  return s.h.app.request(path, {
    method: "POST",
    headers: { authorization: `Bearer ${s.h.keys.acme}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

const chat = (s: Setup, body: Record<string, unknown> = {}) =>
  post(s, "/v1/chat/completions", {
    model: BASE,
    messages: [{ role: "user", content: "Hi there" }],
    ...body,
  });

const respond = (s: Setup, body: Record<string, unknown> = {}) =>
  post(s, "/v1/responses", { model: BASE, input: "Hi there", ...body });

/** The events of a streamed response. */
async function responseEvents(res: Response): Promise<{ type: string; [key: string]: unknown }[]> {
  const frames = (await res.text()).split("\n\n").filter((frame) => frame !== "");
  return frames.map((frame) => JSON.parse(frame.slice(frame.indexOf("data: ") + "data: ".length)));
}

/** The chunks of an SSE body, [DONE] left out. */
async function chunks(res: Response): Promise<ChatCompletionChunk[]> {
  const frames = (await res.text()).split("\n\n").filter((frame) => frame !== "");
  expect(frames.at(-1)).toBe("data: [DONE]");
  return frames
    .slice(0, -1)
    .map((frame) => ChatCompletionChunk.parse(JSON.parse(frame.slice("data: ".length))));
}

/** The prompt the worker was sent, as text. */
const promptOf = (s: Setup, request: InferenceRequest = s.worker.received.at(-1)!) =>
  s.tokenizer.decode(request.prompt_token_ids);

describe("a hybrid reasoning model", () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setUp(HYBRID_REASONING_TEMPLATE);
  });
  afterAll(() => tearDown(s));
  beforeEach(() => {
    s.worker.behaviour = () => ({ say: THOUGHT });
  });

  describe("on chat completions", () => {
    it("answers with the reasoning apart from the content, and counts the reasoning's tokens", async () => {
      const res = await chat(s);
      expect(res.status).toBe(200);
      const body = ChatCompletion.parse(await res.json());
      expect(body.choices[0]!.message).toEqual({
        role: "assistant",
        content: "Hi!",
        reasoning_content: "Let me see.",
        refusal: null,
      });
      expect(body.choices[0]!.finish_reason).toBe("stop");
      expect(body.usage).toMatchObject({
        completion_tokens: THOUGHT.length,
        completion_tokens_details: { reasoning_tokens: 9 },
      });
      // Thinking is the template's default: the prompt ends where the model starts, no block written.
      expect(promptOf(s).endsWith("<|start_header_id|>assistant<|end_header_id|>\n\n")).toBe(true);
    });

    it("streams the reasoning as reasoning_content deltas before the content, each choice on its own", async () => {
      const res = await chat(s, { stream: true, n: 2, stream_options: { include_usage: true } });
      expect(res.status).toBe(200);
      const all = await chunks(res);
      for (const index of [0, 1]) {
        const deltas = all
          .flatMap((c) => c.choices.filter((choice) => choice.index === index))
          .map((c) => c.delta);
        const reasoning = deltas.filter((d) => d.reasoning_content !== undefined);
        const content = deltas.filter((d) => d.content !== undefined && d.content !== "");
        expect(reasoning.map((d) => d.reasoning_content).join("")).toBe("Let me see.");
        expect(content.map((d) => d.content).join("")).toBe("Hi!");
        // Every reasoning delta comes before the first content delta.
        expect(deltas.lastIndexOf(reasoning.at(-1)!)).toBeLessThan(deltas.indexOf(content[0]!));
        expect(deltas.some((d) => (d.reasoning_content ?? d.content ?? "").includes("think>"))).toBe(false);
      }
      expect(all.at(-1)!.usage).toMatchObject({
        completion_tokens: 2 * THOUGHT.length,
        completion_tokens_details: { reasoning_tokens: 18 },
      });
    });

    it("turns reasoning off for reasoning_effort none, and for JSON mode, through the template", async () => {
      s.worker.behaviour = () => ({ say: ["Hi", "!"] });
      const res = await chat(s, { reasoning_effort: "none" });
      const body = ChatCompletion.parse(await res.json());
      expect(body.choices[0]!.message).toEqual({ role: "assistant", content: "Hi!", refusal: null });
      expect(body.usage.completion_tokens_details).toBeUndefined();
      expect(promptOf(s).endsWith("<think>\n\n</think>\n\n")).toBe(true);

      s.worker.behaviour = () => ({ say: ['{"a"', ": 1}"] });
      const json = await chat(s, {
        messages: [{ role: "user", content: "Answer in JSON" }],
        response_format: { type: "json_object" },
      });
      expect(ChatCompletion.parse(await json.json()).choices[0]!.message.content).toBe('{"a": 1}');
      expect(promptOf(s).endsWith("<think>\n\n</think>\n\n")).toBe(true);
      expect(s.worker.received.at(-1)!.sampling.response_format).toBe("json_object");

      for (const effort of ["minimal", "high"]) {
        await chat(s, { reasoning_effort: effort });
        expect(promptOf(s)).not.toContain("<think>");
      }
    });

    it("takes vLLM's chat_template_kwargs.enable_thinking as Qwen3's clients send it", async () => {
      const off = ChatCompletion.parse(
        await (await chat(s, { chat_template_kwargs: { enable_thinking: false } })).json(),
      );
      expect(off.choices[0]!.message.reasoning_content).toBeUndefined();
      expect(promptOf(s).endsWith("<think>\n\n</think>\n\n")).toBe(true);
      const on = ChatCompletion.parse(
        await (
          await chat(s, { chat_template_kwargs: { enable_thinking: true }, reasoning_effort: "low" })
        ).json(),
      );
      expect(on.choices[0]!.message.reasoning_content).toBe("Let me see.");
      expect(promptOf(s)).not.toContain("<think>");
      const before = s.worker.received.length;
      for (const [body, param] of [
        [
          { chat_template_kwargs: { enable_thinking: true }, reasoning_effort: "none" },
          "chat_template_kwargs.enable_thinking",
        ],
        [{ chat_template_kwargs: { enable_thinking: "no" } }, "chat_template_kwargs.enable_thinking"],
        [
          { chat_template_kwargs: { tools_in_user_message: true } },
          "chat_template_kwargs.tools_in_user_message",
        ],
      ] as const) {
        const res = await chat(s, body);
        expect(res.status).toBe(400);
        expect(ErrorBody.parse(await res.json()).error.param).toBe(param);
      }
      expect(s.worker.received.length).toBe(before);
    });

    it("gives an assistant turn's reasoning_content back to the template, and only an assistant's", async () => {
      const call = { id: "c1", type: "function", function: { name: "weather", arguments: "{}" } };
      const messages = [
        { role: "user", content: "Weather?" },
        { role: "assistant", content: null, tool_calls: [call], reasoning_content: "Look it up." },
        { role: "tool", tool_call_id: "c1", content: "sunny" },
      ];
      expect((await chat(s, { messages })).status).toBe(200);
      expect(promptOf(s)).toContain("<think>Look it up.</think>");
      const res = await chat(s, { messages: [{ role: "user", content: "Hi", reasoning_content: "x" }] });
      expect(res.status).toBe(400);
      expect(ErrorBody.parse(await res.json()).error.param).toBe("messages.0.reasoning_content");
    });

    it("reports logprobs of the content's tokens only, streamed or not", async () => {
      const body = ChatCompletion.parse(await (await chat(s, { logprobs: true })).json());
      expect(body.choices[0]!.logprobs?.content?.map((t) => t.token)).toEqual(["Hi", "!"]);
      const deltas = (await chunks(await chat(s, { logprobs: true, stream: true }))).flatMap(
        (c) => c.choices,
      );
      expect(
        deltas.filter((c) => c.delta.reasoning_content !== undefined).every((c) => c.logprobs === null),
      ).toBe(true);
      expect(deltas.flatMap((c) => c.logprobs?.content ?? []).map((t) => t.token)).toEqual(["Hi", "!"]);
      const response = (await (
        await respond(s, { include: ["message.output_text.logprobs"] })
      ).json()) as ResponseObject;
      const message = response.output.find((item) => item.type === "message") as OutputMessage;
      expect(message.content[0]!.logprobs?.map((t) => t.token)).toEqual(["Hi", "!"]);
    });

    it("reads a function call from the content after the reasoning", async () => {
      s.worker.behaviour = () => ({
        say: [
          "<think>",
          "Oslo's weather, then.",
          "</think>",
          "\n\n",
          '{"name": "weather", ',
          '"arguments": {"city": "Oslo"}}',
        ],
      });
      const tools = [{ type: "function", function: { name: "weather", parameters: { type: "object" } } }];
      const body = ChatCompletion.parse(await (await chat(s, { tools })).json());
      expect(body.choices[0]!.finish_reason).toBe("tool_calls");
      expect(body.choices[0]!.message).toMatchObject({
        content: null,
        reasoning_content: "Oslo's weather, then.",
        tool_calls: [{ type: "function", function: { name: "weather", arguments: '{"city":"Oslo"}' } }],
      });
      const streamed = await chunks(await chat(s, { tools, stream: true }));
      const deltas = streamed.flatMap((c) => c.choices.map((choice) => choice.delta));
      expect(deltas.map((d) => d.reasoning_content ?? "").join("")).toBe("Oslo's weather, then.");
      expect(deltas.flatMap((d) => d.tool_calls ?? [])[0]).toMatchObject({ function: { name: "weather" } });
      expect(streamed.at(-1)!.choices[0]!.finish_reason).toBe("tool_calls");
    });

    it("refuses an effort that is not one of OpenAI's, and changes nothing", async () => {
      const before = s.worker.received.length;
      const res = await chat(s, { reasoning_effort: "extreme" });
      expect(res.status).toBe(400);
      const { error } = ErrorBody.parse(await res.json());
      expect(error.param).toBe("reasoning_effort");
      expect(s.worker.received.length).toBe(before);
    });
  });

  describe("on the Responses API", () => {
    it("outputs the reasoning as a reasoning item before the message, with its tokens in the usage", async () => {
      const res = await respond(s, { reasoning: { effort: "high" } });
      expect(res.status).toBe(200);
      const body = (await res.json()) as ResponseObject;
      const id = body.id.slice("resp_".length);
      expect(body.output).toEqual([
        {
          type: "reasoning",
          id: `rs_${id}`,
          summary: [],
          content: [{ type: "reasoning_text", text: "Let me see." }],
          status: "completed",
        },
        expect.objectContaining({ type: "message", content: [expect.objectContaining({ text: "Hi!" })] }),
      ]);
      expect(body.reasoning).toEqual({ effort: "high", summary: null });
      expect(body.usage?.output_tokens_details).toEqual({ reasoning_tokens: 9 });

      // Streamed: the reasoning item's events, closed before the message opens; the last event's response
      // is the one above.
      const events = await responseEvents(await respond(s, { stream: true }));
      const types = events.map((e) => e.type);
      const deltas = events.filter((e) => e.type === "response.reasoning_text.delta").map((e) => e.delta);
      expect(deltas.join("")).toBe("Let me see.");
      expect(types.indexOf("response.reasoning_text.done")).toBeLessThan(
        types.indexOf("response.output_text.delta"),
      );
      expect(events.find((e) => e.type === "response.reasoning_text.done")).toMatchObject({
        text: "Let me see.",
      });
      const done = events.at(-1) as { type: string; response: { output: unknown[]; usage: unknown } };
      expect(done.type).toBe("response.completed");
      expect(done.response.output).toEqual([
        expect.objectContaining({
          type: "reasoning",
          content: [{ type: "reasoning_text", text: "Let me see." }],
        }),
        expect.objectContaining({ type: "message", content: [expect.objectContaining({ text: "Hi!" })] }),
      ]);
      expect(done.response.usage).toMatchObject({ output_tokens_details: { reasoning_tokens: 9 } });
    });

    it("keeps reasoning items with the conversation, for the template to place, however they come back", async () => {
      const first = (await (await respond(s)).json()) as ResponseObject;
      // The test template writes an assistant turn's reasoning_content as <think>…</think> before it.
      const lastPrompt = () => promptOf(s);
      const answered = "<think>Let me see.</think>Hi!";
      // previous_response_id
      expect((await respond(s, { previous_response_id: first.id, input: "And then?" })).status).toBe(200);
      expect(lastPrompt()).toContain(answered);
      // The output items sent back as input, as clients that keep the state themselves do…
      const manual = await respond(s, { input: [...first.output, { role: "user", content: "And then?" }] });
      expect(manual.status).toBe(200);
      expect(lastPrompt()).toContain(answered);
      const kept = (await manual.json()) as ResponseObject;
      const listed = (await (
        await s.h.app.request(`/v1/responses/${kept.id}/input_items?order=asc`, {
          headers: { authorization: `Bearer ${s.h.keys.acme}` },
        })
      ).json()) as { data: ListedItem[] };
      expect(listed.data.map((item) => item.type)).toEqual(["reasoning", "message", "message"]);
      const [thought, answer] = first.output as [ReasoningOutput, OutputMessage];
      expect(listed.data[0]).toMatchObject({ id: thought.id, content: thought.content });
      // …or named by reference.
      const referenced = await respond(s, {
        input: [
          { type: "item_reference", id: thought.id },
          { type: "item_reference", id: answer.id },
          { role: "user", content: "And then?" },
        ],
      });
      expect(referenced.status).toBe(200);
      expect(lastPrompt()).toContain(answered);
    });

    it("gives a reasoning item to the template as the reasoning of the turn it led to", async () => {
      const res = await respond(s, {
        input: [
          { role: "user", content: "Weather?" },
          { type: "reasoning", summary: [], content: [{ type: "reasoning_text", text: "Look it up." }] },
          { type: "function_call", call_id: "c1", name: "weather", arguments: "{}" },
          { type: "function_call_output", call_id: "c1", output: "sunny" },
          { type: "reasoning", summary: [{ type: "summary_text", text: "Only a summary." }] },
          { role: "user", content: "Thanks" },
        ],
      });
      expect(res.status).toBe(200);
      expect(promptOf(s)).toContain("<think>Look it up.</think>");
      // A reasoning item with no turn after it has nothing to be the reasoning of.
      expect(promptOf(s)).not.toContain("Only a summary");
    });

    it("outputs no reasoning item, streamed or not, when the answer did not reason", async () => {
      s.worker.behaviour = () => ({ say: ["Hi", "!"] });
      const whole = (await (await respond(s)).json()) as ResponseObject;
      expect(whole.output.map((item) => item.type)).toEqual(["message"]);
      expect(whole.usage?.output_tokens_details).toEqual({ reasoning_tokens: 0 });
      const events = await responseEvents(await respond(s, { stream: true }));
      const done = events.at(-1) as unknown as { response: ResponseObject };
      expect(done.response.output.map((item) => item.type)).toEqual(["message"]);
      const chatBody = ChatCompletion.parse(await (await chat(s)).json());
      expect(chatBody.choices[0]!.message).toEqual({ role: "assistant", content: "Hi!", refusal: null });
      expect(chatBody.usage.completion_tokens_details).toEqual({ reasoning_tokens: 0 });
    });

    it("turns reasoning off for effort none and refuses an unknown effort by its Responses name", async () => {
      s.worker.behaviour = () => ({ say: ["Hi", "!"] });
      const body = (await (await respond(s, { reasoning: { effort: "none" } })).json()) as ResponseObject;
      expect(body.output.map((item) => item.type)).toEqual(["message"]);
      expect(promptOf(s).endsWith("<think>\n\n</think>\n\n")).toBe(true);
      const res = await respond(s, { reasoning: { effort: "extreme" } });
      expect(res.status).toBe(400);
      expect(ErrorBody.parse(await res.json()).error.param).toBe("reasoning.effort");
    });
  });
});

describe("a model whose prompt opens the reasoning", () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setUp(OPENING_REASONING_TEMPLATE);
  });
  afterAll(() => tearDown(s));

  it("reads the answer as reasoning up to </think>, and cannot be told not to reason", async () => {
    s.worker.behaviour = () => ({ say: ["Hmm", ",", " yes", ".", "\n", "</think>", "\n\n", "Yes", "."] });
    const body = ChatCompletion.parse(await (await chat(s)).json());
    expect(body.choices[0]!.message).toMatchObject({ content: "Yes.", reasoning_content: "Hmm, yes." });
    expect(body.usage.completion_tokens_details).toEqual({ reasoning_tokens: 7 });
    expect(promptOf(s).endsWith("<think>\n")).toBe(true);

    const res = await chat(s, { reasoning_effort: "none" });
    expect(res.status).toBe(400);
    expect(ErrorBody.parse(await res.json()).error.message).toMatch(/always reasons/);
  });

  it("keeps an answer cut off by max_tokens inside its reasoning as reasoning", async () => {
    s.worker.behaviour = () => ({ say: ["Hmm", ",", " yes", ".", "</think>", "Yes"] });
    const body = ChatCompletion.parse(await (await chat(s, { max_tokens: 3 })).json());
    expect(body.choices[0]!.finish_reason).toBe("length");
    expect(body.choices[0]!.message).toMatchObject({ content: "", reasoning_content: "Hmm, yes" });
  });
});

describe("a reasoning model whose tags are tokens (Qwen3's, DeepSeek-R1's), on a structured answer", () => {
  let s: Setup;
  let opening: Setup;
  let tags: { open: number; close: number };
  beforeAll(async () => {
    [s, opening] = await Promise.all([
      setUp(HYBRID_REASONING_TEMPLATE, true),
      setUp(OPENING_REASONING_TEMPLATE, true),
    ]);
    const [open, close] = ["<think>", "</think>"].map((tag) =>
      s.tokenizer.encode(tag, { addSpecialTokens: false }),
    );
    expect([open!.length, close!.length]).toEqual([1, 1]);
    tags = { open: open![0]!, close: close![0]! };
  });
  afterAll(async () => {
    await tearDown(s);
    await tearDown(opening);
  });
  const schema = {
    type: "json_schema",
    json_schema: {
      name: "count",
      strict: true,
      schema: {
        type: "object",
        properties: { n: { type: "integer" } },
        required: ["n"],
        additionalProperties: false,
      },
    },
  };
  const REASONED_VALUE = ["<think>", "\n", "Three", ".", "\n", "</think>", '{"n":', "3}"];

  it("reasons first: the worker's grammar waits for the closing tag, and the value comes apart as content", async () => {
    s.worker.behaviour = () => ({ say: REASONED_VALUE });
    const body = ChatCompletion.parse(await (await chat(s, { response_format: schema })).json());
    const sent = s.worker.received.at(-1)!;
    expect(sent.sampling.reasoning_tags).toEqual(tags);
    expect(sent.sampling.response_format).toEqual({ json_schema: schema.json_schema.schema });
    // Told to reason (the template's enable_thinking), its opening tag forced by the worker.
    expect(promptOf(s).endsWith("assistant<|end_header_id|>\n\n")).toBe(true);
    expect(body.choices[0]!.message).toMatchObject({ content: '{"n":3}', reasoning_content: "Three." });
    expect(body.usage.completion_tokens_details).toEqual({ reasoning_tokens: 6 });
    // Effort none still turns it off: no tags, the grammar from the first token.
    s.worker.behaviour = () => ({ say: ['{"n":', "3}"] });
    await chat(s, { response_format: schema, reasoning_effort: "none" });
    expect(s.worker.received.at(-1)!.sampling.reasoning_tags).toBeUndefined();
    expect(promptOf(s).endsWith("<think>\n\n</think>\n\n")).toBe(true);
  });

  it("forces no opening tag where the prompt opened the block", async () => {
    opening.worker.behaviour = () => ({ say: REASONED_VALUE.slice(1) });
    const body = ChatCompletion.parse(
      await (
        await chat(opening, {
          response_format: { type: "json_object" },
          messages: [{ role: "user", content: "JSON please" }],
        })
      ).json(),
    );
    expect(opening.worker.received.at(-1)!.sampling.reasoning_tags).toEqual({
      open: null,
      close: tags.close,
    });
    expect(body.choices[0]!.message).toMatchObject({ content: '{"n":3}', reasoning_content: "Three." });
  });

  it("streams a required call's arguments after its reasoning, on chat and on the Responses API", async () => {
    s.worker.behaviour = () => ({
      say: ["<think>", "Oslo.", "</think>", '{"name":"weather",', '"arguments":{"city":', '"Oslo"}}'],
    });
    const tools = [{ type: "function", function: { name: "weather", parameters: { type: "object" } } }];
    const whole = ChatCompletion.parse(await (await chat(s, { tools, tool_choice: "required" })).json());
    expect(s.worker.received.at(-1)!.sampling.reasoning_tags).toEqual(tags);
    expect(whole.choices[0]!.message).toMatchObject({
      content: null,
      reasoning_content: "Oslo.",
      tool_calls: [{ function: { name: "weather", arguments: '{"city":"Oslo"}' } }],
    });
    const streamed = await chunks(await chat(s, { tools, tool_choice: "required", stream: true }));
    const deltas = streamed.flatMap((c) => c.choices.map((choice) => choice.delta));
    expect(deltas.map((d) => d.reasoning_content ?? "").join("")).toBe("Oslo.");
    const calls = deltas.flatMap((d) => d.tool_calls ?? []);
    expect(calls[0]).toMatchObject({ function: { name: "weather" } });
    expect(calls.map((c) => ("function" in c ? c.function.arguments : "")).join("")).toBe('{"city":"Oslo"}');
    expect(streamed.at(-1)!.choices[0]!.finish_reason).toBe("tool_calls");

    const responseTools = [{ type: "function", name: "weather", parameters: { type: "object" } }];
    const events = await responseEvents(
      await respond(s, { tools: responseTools, tool_choice: "required", stream: true }),
    );
    const done = events.at(-1)!.response as ResponseObject;
    expect(done.output.map((item) => item.type)).toEqual(["reasoning", "function_call"]);
    expect(done.output[1]).toMatchObject({ name: "weather", arguments: '{"city":"Oslo"}' });
    const args = events
      .filter((e) => e.type === "response.function_call_arguments.delta")
      .map((e) => e.delta);
    expect(args.join("")).toBe('{"city":"Oslo"}');
  });
});
