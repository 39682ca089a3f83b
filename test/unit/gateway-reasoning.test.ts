// A reasoning model behind the gateway (app.request, PGlite, the in-process bus, a scripted worker): the
// base's chat template is a hybrid reasoning model's (it reads enable_thinking) or one that opens the
// reasoning in the prompt; answers come back with the reasoning in reasoning_content, streamed or not,
// its tokens in the usage, and reasoning_effort decides the prompt.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ChatCompletion, ChatCompletionChunk, ErrorBody } from "../../schema/api.ts";
import type { InferenceRequest } from "../../schema/wire.ts";
import { loadTokenizer, type Tokenizer } from "../../worker/engine/tokenizer.ts";
import { FakeWorker } from "../support/fake-worker.ts";
import { BASE, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

const TURNS =
  "{%- for message in messages %}<|start_header_id|>{{ message.role }}<|end_header_id|>\n\n" +
  "{% if message.role == 'assistant' and '</think>' in message.content %}" +
  "{{ message.content.split('</think>')[-1].lstrip('\\n') }}{%- else %}{{ message.content }}{%- endif %}" +
  "<|eot_id|>{%- endfor %}";
/** Thinks unless told not to (enable_thinking false writes an empty reasoning block into the prompt). */
const HYBRID =
  `${TURNS}{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n` +
  "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{%- endif %}";
/** Always thinks: the generation prompt opens the reasoning block. */
const OPENS = `${TURNS}{%- if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n<think>\n{% endif %}`;

const THOUGHT = ["<think>", "\n", "Let", " me", " see", ".", "\n", "</think>", "\n\n", "Hi", "!"];

interface Setup {
  h: GatewayHarness;
  worker: FakeWorker;
  tokenizer: Tokenizer;
}

async function setUp(chatTemplate: string): Promise<Setup> {
  const h = await createGatewayHarness({}, { chatTemplate });
  const worker = await FakeWorker.start(h.workerBus, { base: BASE });
  return { h, worker, tokenizer: loadTokenizer(h.modelDir) };
}

async function tearDown({ h, worker }: Setup): Promise<void> {
  await worker.stop();
  await h.close();
}

function chat(s: Setup, body: Record<string, unknown> = {}) {
  return s.h.app.request("/v1/chat/completions", {
    method: "POST",
    headers: { authorization: `Bearer ${s.h.keys.acme}`, "content-type": "application/json" },
    body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "Hi there" }], ...body }),
  });
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
    s = await setUp(HYBRID);
  });
  afterAll(() => tearDown(s));
  beforeEach(() => {
    s.worker.behaviour = () => ({ say: THOUGHT });
  });

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

describe("a model whose prompt opens the reasoning", () => {
  let s: Setup;
  beforeAll(async () => {
    s = await setUp(OPENS);
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
