// The Responses API through the official `openai` client against the gateway over HTTP (in-process bus,
// scripted worker): what reaches the worker (the same prompt a chat request means), the response object
// streaming and not, stored responses and previous_response_id (each turn's items stored once, the chain
// rebuilt, a deleted turn's conversation written into the next), org scoping, and every refusal.
import { eq, sql } from "drizzle-orm";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadResponse, saveResponse } from "../../gateway/response-store.ts";
import { StoredRetention } from "../../gateway/stored-retention.ts";
import { storedResponses } from "../../schema/db.ts";
import { INCLUDE_LOGPROBS, type ResponseObject } from "../../schema/responses-api.ts";
import { type FakeWorker, fakeReplyText } from "../support/fake-worker.ts";
import { BASE, CONTEXT, type GatewayHarness } from "../support/gateway-harness.ts";
import { chatPromptIds, sentFor } from "../support/openai-calls.ts";
import { type ServedGateway, serveGateway } from "../support/served-gateway.ts";

let h: GatewayHarness;
let worker: FakeWorker;
let gateway: ServedGateway;
let client: OpenAI;
let otherClient: OpenAI;

beforeAll(async () => {
  gateway = await serveGateway({ adapters: ["a1"] });
  ({ h, worker, client, otherClient } = gateway);
});
afterAll(() => gateway.close());

const sent = (id: string) => sentFor(worker, id);

const chatPrompt = (messages: OpenAI.ChatCompletionMessageParam[]) =>
  chatPromptIds(client, worker, BASE, messages);

describe("POST /v1/responses", () => {
  it("takes the sampling parameters, vLLM's beyond OpenAI's too, and echoes OpenAI's", async () => {
    const extra = {
      top_k: 5,
      min_p: 0.1,
      repetition_penalty: 1.2,
      min_tokens: 1,
      ignore_eos: true,
      stop_token_ids: [7],
      seed: 42,
    };
    const response = await client.responses.create({
      model: BASE,
      input: "Hi",
      max_output_tokens: 2,
      temperature: 1.1,
      top_p: 0.8,
      ...extra,
    } as OpenAI.Responses.ResponseCreateParamsNonStreaming);
    expect(response).toMatchObject({ temperature: 1.1, top_p: 0.8 });
    expect(sent(response.id).sampling).toMatchObject({ temperature: 1.1, top_p: 0.8, ...extra });
  });

  it("answers a response whose prompt is the chat prompt of its instructions and input", async () => {
    const response = await client.responses.create({
      model: `${BASE}:acme/a1`,
      instructions: "Be brief.",
      input: "Say hello",
      max_output_tokens: 3,
    });
    expect(response.id).toMatch(/^resp_/);
    expect(response.object).toBe("response");
    expect(response.output_text).toBe(fakeReplyText(3));
    expect(response.status).toBe("incomplete");
    expect(response.incomplete_details).toEqual({ reason: "max_output_tokens" });
    expect(response.output).toHaveLength(1);
    expect(response.output[0]).toMatchObject({ type: "message", role: "assistant", status: "incomplete" });
    expect(response.usage).toMatchObject({ output_tokens: 3, input_tokens_details: { cached_tokens: 0 } });
    const request = sent(response.id);
    expect(response.usage?.input_tokens).toBe(request.prompt_token_ids.length);
    expect(request.adapter?.name).toBe("acme/a1");
    expect(request.sampling.max_tokens).toBe(3);
    expect(request.prompt_token_ids).toEqual(
      await chatPrompt([
        { role: "system", content: "Be brief." },
        { role: "user", content: "Say hello" },
      ]),
    );

    // Sampled with the base's generation_config.json where the request is silent, and echoed as sampled.
    expect(request.sampling).toMatchObject({ temperature: 0.6, top_p: 0.9 });
    expect(response).toMatchObject({ temperature: 0.6, top_p: 0.9 });

    const complete = await client.responses.create({ model: BASE, input: "Hi", max_output_tokens: 50 });
    expect(complete.status).toBe("completed");
    expect(complete.incomplete_details).toBeNull();
    expect(complete.output_text).toBe(fakeReplyText(50));
  });

  it("turns input items, function calls and their outputs included, into the chat conversation", async () => {
    const response = await client.responses.create({
      model: BASE,
      input: [
        { role: "developer", content: "Use the tools." },
        {
          type: "message",
          role: "user",
          content: [
            { type: "input_text", text: "Weather in " },
            { type: "input_text", text: "Oslo?" },
          ],
        },
        { type: "function_call", call_id: "call_1", name: "weather", arguments: '{"city":"Oslo"}' },
        { type: "function_call_output", call_id: "call_1", output: '{"celsius":4}' },
      ],
      max_output_tokens: 2,
    });
    const chat = await client.chat.completions.create({
      model: BASE,
      messages: [
        { role: "developer", content: "Use the tools." },
        { role: "user", content: "Weather in Oslo?" },
        {
          role: "assistant",
          content: null,
          tool_calls: [
            { id: "call_1", type: "function", function: { name: "weather", arguments: '{"city":"Oslo"}' } },
          ],
        },
        { role: "tool", tool_call_id: "call_1", content: '{"celsius":4}' },
      ],
      max_tokens: 1,
    });
    expect(sent(response.id).prompt_token_ids).toEqual(sent(chat.id).prompt_token_ids);
    expect(response.output_text).toBe(fakeReplyText(2));
  });

  it("streams OpenAI's events in order, numbered, ending with the response it stored", async () => {
    // top_logprobs is an API parameter the SDK's types leave out.
    const params = {
      model: BASE,
      input: "Say hello",
      stream: true as const,
      include: ["message.output_text.logprobs" as const],
      top_logprobs: 2,
    };
    const stream = await client.responses.create(params);
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of stream) events.push(event);
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    const types = events.map((e) => e.type);
    const deltas = events.filter((e) => e.type === "response.output_text.delta");
    expect(types).toEqual([
      "response.created",
      "response.in_progress",
      "response.output_item.added",
      "response.content_part.added",
      ...deltas.map(() => "response.output_text.delta"),
      "response.output_text.done",
      "response.content_part.done",
      "response.output_item.done",
      "response.completed",
    ]);
    const text = deltas.map((e) => (e.type === "response.output_text.delta" ? e.delta : "")).join("");
    expect(text).toBe(fakeReplyText(100));
    const last = events.at(-1);
    if (last?.type !== "response.completed") throw new Error("no response.completed");
    expect(last.response.status).toBe("completed");
    const part = last.response.output[0];
    if (part?.type !== "message" || part.content[0]?.type !== "output_text") throw new Error("no text");
    expect(part.content[0].text).toBe(text);
    expect(part.content[0].logprobs).toHaveLength(deltas.length);
    expect(part.content[0].logprobs?.[0]?.top_logprobs).toHaveLength(2);
    expect(last.response.usage?.output_tokens).toBe(deltas.length);

    const stored = await client.responses.retrieve(last.response.id);
    expect(stored).toEqual({ ...last.response, output_text: text });
  });

  it("streams an auto answer's calls as they are written, each its own function_call item", async () => {
    worker.behaviour = () => ({
      say: [
        "[TOOL_CALLS] [",
        '{"name":"weather","arguments":{"city":',
        '"Oslo"}},',
        '{"name":"time","arguments":{}}',
        "]",
      ],
    });
    try {
      const tools = [
        { type: "function" as const, name: "weather", parameters: { type: "object" }, strict: false },
        { type: "function" as const, name: "time", parameters: null, strict: false },
      ];
      const stream = await client.responses.create({
        model: BASE,
        input: "Weather and time?",
        tools,
        stream: true,
      });
      const events: OpenAI.Responses.ResponseStreamEvent[] = [];
      for await (const event of stream) events.push(event);
      const calls = events.filter((e) => e.type !== "response.created" && e.type !== "response.in_progress");
      expect(calls.map((e) => [e.type, "output_index" in e ? e.output_index : null])).toEqual([
        ["response.output_item.added", 0],
        ["response.function_call_arguments.delta", 0],
        ["response.function_call_arguments.delta", 0],
        ["response.function_call_arguments.done", 0],
        ["response.output_item.done", 0],
        ["response.output_item.added", 1],
        ["response.function_call_arguments.delta", 1],
        ["response.function_call_arguments.done", 1],
        ["response.output_item.done", 1],
        ["response.completed", null],
      ]);
      const done = events.at(-1) as OpenAI.Responses.ResponseCompletedEvent;
      expect(done.response.output).toMatchObject([
        { type: "function_call", name: "weather", arguments: '{"city":"Oslo"}', status: "completed" },
        { type: "function_call", name: "time", arguments: "{}", status: "completed" },
      ]);
    } finally {
      worker.behaviour = () => "reply";
    }
  });

  it("answers a required call cut by max_output_tokens as the call so far, streamed or not", async () => {
    worker.behaviour = () => ({
      say: ['{\n"name":\r"weather",', '"arguments":\t{', '"city" :', ' "O', 'slo"}}'],
    });
    try {
      const tools = [
        { type: "function" as const, name: "weather", parameters: { type: "object" }, strict: false },
      ];
      const ask = { model: BASE, input: "Weather?", tools, tool_choice: "required" as const };
      const outputOf = async (max_output_tokens: number) => {
        const whole = await client.responses.create({ ...ask, max_output_tokens });
        const stream = await client.responses.create({ ...ask, max_output_tokens, stream: true });
        let last: OpenAI.Responses.ResponseStreamEvent | undefined;
        for await (const event of stream) last = event;
        const streamed = (last as OpenAI.Responses.ResponseIncompleteEvent).response;
        // The same output but for the ids, which are each request's own.
        const idsAside = (item: object) => ({ ...item, id: "", call_id: "" });
        expect(streamed.output.map(idsAside)).toEqual(whole.output.map(idsAside));
        return whole;
      };
      const cut = await outputOf(4);
      expect(cut.status).toBe("incomplete");
      expect(cut.output).toMatchObject([{ type: "function_call", name: "weather", arguments: '{"city":"O' }]);
      // What continues it is answered: the half-written call was the gateway's own, taken when stored, and
      // reaches the prompt as the text it is.
      worker.behaviour = () => "reply";
      const call = cut.output[0] as OpenAI.Responses.ResponseFunctionToolCall;
      const next = await client.responses.create({
        model: BASE,
        previous_response_id: cut.id,
        input: [{ type: "function_call_output", call_id: call.call_id, output: "4 degrees" }],
      });
      expect(next.status).toBe("completed");
      const prompt = h.deps.bases.get(BASE)!.tokenizer.decode(worker.received.at(-1)!.prompt_token_ids);
      expect(prompt).toContain(JSON.stringify('{"city":"O'));
      // A call of the client's own that is not JSON is still refused, naming it.
      await expect(
        client.responses.create({
          model: BASE,
          previous_response_id: cut.id,
          input: [{ type: "function_call", call_id: "c2", name: "weather", arguments: '{"city"' }],
        }),
      ).rejects.toMatchObject({ status: 400, param: "input.0.arguments" });
      worker.behaviour = () => ({
        say: ['{\n"name":\r"weather",', '"arguments":\t{', '"city" :', ' "O', 'slo"}}'],
      });
      // Cut before the name: an empty message, not the call's opening as text.
      const early = await outputOf(1);
      expect(early.output).toMatchObject([{ type: "message", content: [{ type: "output_text", text: "" }] }]);
    } finally {
      worker.behaviour = () => "reply";
    }
  });

  it("serves service_tier flex as a batch line is, and says so", async () => {
    const flex = await client.responses.create({
      model: BASE,
      input: "Whenever",
      max_output_tokens: 1,
      service_tier: "flex",
    });
    expect(flex.service_tier).toBe("flex");
    expect(sent(flex.id).batch).toBe(true);
    expect((await client.responses.retrieve(flex.id)).service_tier).toBe("flex");
    const plain = await client.responses.create({ model: BASE, input: "Now", max_output_tokens: 1 });
    expect(sent(plain.id).batch).toBeUndefined();
    expect(plain.service_tier).toBeUndefined();
  });

  it("gives the stream helper's final response", async () => {
    const stream = client.responses.stream({ model: BASE, input: "Say hello" });
    const response = await stream.finalResponse();
    expect(response.status).toBe("completed");
    expect(response.output[0]).toMatchObject({
      type: "message",
      status: "completed",
      content: [{ type: "output_text", text: fakeReplyText(100) }],
    });
  });

  it("continues a stored response's conversation with previous_response_id, within the org", async () => {
    const first = await client.responses.create({
      model: BASE,
      instructions: "Not carried over.",
      input: "First question",
      max_output_tokens: 3,
    });
    const second = await client.responses.create({
      model: BASE,
      input: "Second question",
      previous_response_id: first.id,
      max_output_tokens: 2,
    });
    expect(second.previous_response_id).toBe(first.id);
    const expected = [
      { role: "user" as const, content: "First question" },
      { role: "assistant" as const, content: fakeReplyText(3) },
      { role: "user" as const, content: "Second question" },
    ];
    expect(sent(second.id).prompt_token_ids).toEqual(await chatPrompt(expected));
    const third = await client.responses.create({
      model: BASE,
      input: "Third",
      previous_response_id: second.id,
      max_output_tokens: 1,
    });
    expect(sent(third.id).prompt_token_ids).toEqual(
      await chatPrompt([
        ...expected,
        { role: "assistant", content: fakeReplyText(2) },
        { role: "user", content: "Third" },
      ]),
    );

    // Its input items: the whole conversation it answered, newest first, a page at a time.
    const items: OpenAI.Responses.ResponseItem[] = [];
    for await (const item of client.responses.inputItems.list(third.id, { limit: 2 })) items.push(item);
    const texts = items.map((item) =>
      item.type === "message"
        ? `${item.role}: ${item.content.map((p) => ("text" in p ? p.text : "")).join("")}`
        : item.type,
    );
    expect(texts).toEqual([
      "user: Third",
      `assistant: ${fakeReplyText(2)}`,
      "user: Second question",
      `assistant: ${fakeReplyText(3)}`,
      "user: First question",
    ]);
    expect(new Set(items.map((item) => item.id)).size).toBe(5);
    expect(items[1]?.id).toBe(second.output[0]?.id);
    const oldest = await client.responses.inputItems.list(third.id, { order: "asc", limit: 1 });
    expect(oldest.data.map((item) => item.id)).toEqual([items[4]?.id]);
    expect(oldest.has_more).toBe(true);
    await expect(client.responses.inputItems.list(third.id, { limit: 101 })).rejects.toMatchObject({
      status: 400,
      param: "limit",
    });
    await expect(otherClient.responses.inputItems.list(third.id)).rejects.toMatchObject({ status: 404 });

    await expect(otherClient.responses.retrieve(first.id)).rejects.toMatchObject({
      status: 404,
      code: "response_not_found",
    });
    await expect(
      otherClient.responses.create({ model: BASE, input: "x", previous_response_id: first.id }),
    ).rejects.toMatchObject({ status: 404, param: "previous_response_id" });
    await expect(otherClient.responses.delete(first.id)).rejects.toMatchObject({ status: 404 });

    await client.responses.delete(first.id);
    await expect(client.responses.retrieve(first.id)).rejects.toMatchObject({ status: 404 });
    // The later responses hold their whole conversation: deleting the first does not break them.
    const fourth = await client.responses.create({
      model: BASE,
      input: "Fourth",
      previous_response_id: third.id,
      max_output_tokens: 1,
    });
    expect(fourth.status).toBe("incomplete");
    expect(sent(fourth.id).prompt_token_ids).toEqual(
      await chatPrompt([
        ...expected,
        { role: "assistant", content: fakeReplyText(2) },
        { role: "user", content: "Third" },
        { role: "assistant", content: fakeReplyText(1) },
        { role: "user", content: "Fourth" },
      ]),
    );
  });

  it("stores each turn's own items once, and writes the whole conversation into a response whose predecessor goes", async () => {
    const rowOf = async (id: string) =>
      (
        await h.db
          .select({
            conversation: storedResponses.conversation,
            previousId: storedResponses.previousId,
            ancestors: storedResponses.ancestors,
          })
          .from(storedResponses)
          .where(eq(storedResponses.id, id))
      )[0]!;
    const turn = (input: string, previous?: string) =>
      client.responses.create({
        model: BASE,
        input,
        max_output_tokens: 1,
        ...(previous ? { previous_response_id: previous } : {}),
      });
    const texts = async (id: string) =>
      (await client.responses.inputItems.list(id, { order: "asc", limit: 100 })).data.map((item) =>
        item.type === "message" ? item.content.map((p) => ("text" in p ? p.text : "")).join("") : item.type,
      );
    const a = await turn("A");
    const b = await turn("B", a.id);
    const c = await turn("C", b.id);
    const d = await turn("D", c.id);
    // Each row holds the one item its turn added, linked to the turn before, listing the turns before it.
    for (const [response, previous] of [
      [b, a],
      [c, b],
      [d, c],
    ] as const) {
      expect(await rowOf(response.id)).toMatchObject({ previousId: previous.id });
      expect((await rowOf(response.id)).conversation).toHaveLength(1);
    }
    const whole = ["A", fakeReplyText(1), "B", fakeReplyText(1), "C", fakeReplyText(1), "D"];
    expect(await texts(d.id)).toEqual(whole);
    // Deleting a turn in the middle: the next one takes the whole conversation; the rest still link.
    await client.responses.delete(b.id);
    expect(await rowOf(c.id)).toMatchObject({ previousId: null, ancestors: [] });
    expect((await rowOf(c.id)).conversation).toHaveLength(5);
    expect(await rowOf(d.id)).toMatchObject({ previousId: c.id, ancestors: [a.id, b.id, c.id] });
    expect(await texts(d.id)).toEqual(whole);
    expect(await texts(c.id)).toEqual(whole.slice(0, 5));
    // A response stored while the one it continues has just gone keeps the whole conversation itself.
    const gone = await loadResponse(h.db, "acme", c.id);
    await client.responses.delete(c.id);
    const late = await turn("E");
    await saveResponse(h.db, "acme", {
      response: { ...late, id: "resp_late" } as unknown as ResponseObject,
      items: [{ type: "message", role: "user", content: "E" }],
      previous: gone,
    });
    expect(await rowOf("resp_late")).toMatchObject({ previousId: null, ancestors: [] });
    expect((await loadResponse(h.db, "acme", "resp_late"))!.conversation).toHaveLength(7);
    expect(await texts(d.id)).toEqual(whole);
  });

  it("resolves item references to the caller's stored items, as the Vercel AI SDK sends earlier answers", async () => {
    const first = await client.responses.create({
      model: BASE,
      input: "First question",
      max_output_tokens: 3,
    });
    const answer = first.output[0]!;
    const second = await client.responses.create({
      model: BASE,
      input: [
        { role: "user", content: "First question" },
        { type: "item_reference", id: answer.id! },
        { role: "user", content: "Second question" },
      ],
      max_output_tokens: 2,
    });
    expect(sent(second.id).prompt_token_ids).toEqual(
      await chatPrompt([
        { role: "user", content: "First question" },
        { role: "assistant", content: fakeReplyText(3) },
        { role: "user", content: "Second question" },
      ]),
    );
    // An input item of a stored response can be referenced too.
    const [, , question] = (await client.responses.inputItems.list(second.id, { order: "asc" })).data;
    const third = await client.responses.create({
      model: BASE,
      input: [{ type: "item_reference", id: question!.id }],
      max_output_tokens: 1,
    });
    expect(sent(third.id).prompt_token_ids).toEqual(
      await chatPrompt([{ role: "user", content: "Second question" }]),
    );

    // Custom tool calls and their outputs are items too (ctc_…, ctco_…).
    const ran = await client.responses.create({
      model: BASE,
      input: [
        { role: "user", content: "List it" },
        { type: "custom_tool_call", call_id: "call_ls", name: "shell", input: "ls" },
        { type: "custom_tool_call_output", call_id: "call_ls", output: "a.txt" },
      ],
      max_output_tokens: 1,
    });
    const [, call, output] = (await client.responses.inputItems.list(ran.id, { order: "asc" })).data;
    expect([call!.id.split("_")[0], output!.id.split("_")[0]]).toEqual(["ctc", "ctco"]);
    const again = await client.responses.create({
      model: BASE,
      input: [
        { role: "user", content: "List it" },
        { type: "item_reference", id: call!.id },
        { type: "item_reference", id: output!.id },
      ],
      max_output_tokens: 1,
    });
    expect(sent(again.id).prompt_token_ids).toEqual(sent(ran.id).prompt_token_ids);

    for (const id of [`msg_${"0".repeat(32)}`, "msg_not-ours", "rs_abc"]) {
      await expect(
        client.responses.create({
          model: BASE,
          input: [
            { role: "user", content: "x" },
            { type: "item_reference", id },
          ],
        }),
      ).rejects.toMatchObject({ status: 404, code: "item_not_found", param: "input.1" });
    }
    await expect(
      otherClient.responses.create({ model: BASE, input: [{ type: "item_reference", id: answer.id! }] }),
    ).rejects.toMatchObject({ status: 404, code: "item_not_found" });
    // With previous_response_id the answer is already in what it continues: referring to it again would
    // repeat it, which OpenAI refuses too.
    await expect(
      client.responses.create({
        model: BASE,
        previous_response_id: first.id,
        input: [
          { type: "item_reference", id: answer.id! },
          { role: "user", content: "Again" },
        ],
      }),
    ).rejects.toMatchObject({ status: 400, param: "input.0" });
  });

  it("refuses a NUL character (U+0000) in an id with 400, not a server error, and runs nothing", async () => {
    const runs = worker.received.length;
    await expect(client.responses.retrieve("resp_\u0000")).rejects.toMatchObject({
      status: 400,
      message: expect.stringContaining("NUL"),
    });
    await expect(
      client.responses.create({ model: BASE, input: "x", previous_response_id: "resp_\u0000" }),
    ).rejects.toMatchObject({ status: 400 });
    await expect(
      client.responses.create({ model: BASE, input: [{ type: "item_reference", id: "msg_\u0000" }] }),
    ).rejects.toMatchObject({ status: 400, param: "input.0.id" });
    expect(worker.received.length).toBe(runs);
  });

  it("drops a too-long conversation's oldest items with truncation auto, instructions kept, and fails without", async () => {
    const long = (n: number) => `Message ${n}: ${"lorem ipsum dolor sit amet ".repeat(4)}`;
    let previous: string | undefined;
    for (let n = 0; n < 4; n++) {
      const turn = await client.responses.create({
        model: BASE,
        input: long(n),
        max_output_tokens: 3,
        ...(previous ? { previous_response_id: previous, truncation: "auto" as const } : {}),
      });
      previous = turn.id;
    }
    const request = {
      model: BASE,
      instructions: "Be brief.",
      input: "The last question",
      previous_response_id: previous!,
      max_output_tokens: 40,
    };
    await expect(client.responses.create(request)).rejects.toMatchObject({
      status: 400,
      code: "context_length_exceeded",
    });
    const truncated = await client.responses.create({ ...request, truncation: "auto" });
    expect((truncated as { truncation?: string }).truncation).toBe("auto");
    const prompt = sent(truncated.id).prompt_token_ids;
    expect(prompt.length + 40).toBeLessThanOrEqual(CONTEXT);
    const text = h.deps.bases.get(BASE)!.tokenizer.decode(prompt);
    expect(text).toContain("Be brief.");
    expect(text).toContain("The last question");
    expect(text).not.toContain("Message 0:");
    // Only as much as needed went: the turn before the question is still there.
    expect(text).toContain("Message 3:");
  });

  it("never cuts between a call and its output, for parallel calls and custom tools alike", async () => {
    const big = `CALL-A ${"lorem ipsum ".repeat(60)}`;
    const parallel = await client.responses.create({
      model: BASE,
      max_output_tokens: 8,
      truncation: "auto",
      input: [
        { role: "user", content: "Two things" },
        { type: "function_call", call_id: "a", name: "g", arguments: JSON.stringify({ x: big }) },
        { type: "function_call", call_id: "b", name: "g", arguments: "{}" },
        { type: "function_call_output", call_id: "a", output: "RESULT-A" },
        { type: "function_call_output", call_id: "b", output: "RESULT-B" },
        { role: "user", content: "The last question" },
      ],
    });
    const kept = h.deps.bases.get(BASE)!.tokenizer.decode(sent(parallel.id).prompt_token_ids);
    expect(kept).toContain("The last question");
    // Call a does not fit: its output and call b's (which sits between them) go with it.
    expect(kept).not.toContain("CALL-A");
    expect(kept).not.toContain("RESULT-A");
    expect(kept).not.toContain("RESULT-B");

    const custom = await client.responses.create({
      model: BASE,
      max_output_tokens: 8,
      truncation: "auto",
      input: [
        { role: "user", content: "Run it" },
        { type: "custom_tool_call", call_id: "c", name: "shell", input: big },
        { type: "custom_tool_call_output", call_id: "c", output: "RESULT-C" },
        { role: "user", content: "The last question" },
      ],
    });
    const left = h.deps.bases.get(BASE)!.tokenizer.decode(sent(custom.id).prompt_token_ids);
    expect(left).toContain("The last question");
    expect(left).not.toContain("RESULT-C");
  });

  it("drops, from a long input, exactly the oldest items it must and no more", async () => {
    const turns = Array.from({ length: 240 }, (_, n) => ({
      role: n % 2 === 0 ? ("user" as const) : ("assistant" as const),
      content: `Turn ${n}: lorem ipsum`,
    }));
    const request = { model: BASE, instructions: "Be brief.", max_output_tokens: 8 };
    const truncated = await client.responses.create({ ...request, input: turns, truncation: "auto" });
    const text = h.deps.bases.get(BASE)!.tokenizer.decode(sent(truncated.id).prompt_token_ids);
    expect(text).toContain("Be brief.");
    expect(text).toContain("Turn 239:");
    const first = turns.findIndex((turn) => text.includes(`${turn.content.split(":")[0]}:`));
    expect(first).toBeGreaterThan(0);
    // The kept turns fit as they are; one more older turn would not.
    await expect(client.responses.create({ ...request, input: turns.slice(first) })).resolves.toBeTruthy();
    await expect(
      client.responses.create({ ...request, input: turns.slice(first - 1) }),
    ).rejects.toMatchObject({
      status: 400,
      code: "context_length_exceeded",
    });
  });

  it("counts a too-long input's completion as its max_output_tokens", async () => {
    const error = await client.responses
      .create({ model: BASE, input: "word ".repeat(CONTEXT * 2), max_output_tokens: 2 })
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(error).toMatchObject({ status: 400, code: "context_length_exceeded" });
    const [, total, prompt, completion] =
      /you requested (\d+) tokens \((\d+) in the prompt, (\d+) for the completion\)/.exec(
        (error as Error).message,
      ) ?? [];
    expect(Number(completion)).toBe(2);
    expect(Number(total)).toBe(Number(prompt) + 2);
  });

  it("keeps nothing with store: false", async () => {
    const response = await client.responses.create({ model: BASE, input: "Hi", store: false });
    expect((response as { store?: boolean }).store).toBe(false);
    await expect(client.responses.retrieve(response.id)).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(
      client.responses.create({ model: BASE, input: "x", previous_response_id: response.id }),
    ).rejects.toMatchObject({ status: 404, code: "response_not_found" });
  });

  it("answers even when the response cannot be stored, and logs it", async () => {
    const logged: string[] = [];
    const app = h.appWith({
      storedRetention: new StoredRetention(0),
      log: {
        info() {},
        warn() {},
        error: (fields, message) => logged.push(`${message}: ${JSON.stringify(fields)}`),
      },
    });
    await h.db.execute(sql`alter table stored_responses rename to stored_responses_away`);
    let res: Response;
    try {
      res = await app.request("/v1/responses", {
        method: "POST",
        headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
        body: JSON.stringify({ model: BASE, input: "Hi", max_output_tokens: 2 }),
      });
    } finally {
      await h.db.execute(sql`alter table stored_responses_away rename to stored_responses`);
    }
    expect(res.status).toBe(200);
    expect(((await res.json()) as { output: unknown[] }).output).toHaveLength(1);
    expect(logged).toEqual([expect.stringContaining("could not store a response")]);
    expect(logged[0]).toContain("stored_responses");
  });

  it("deletes responses past their retention, swept at most hourly by each gateway process", async () => {
    let now = Date.now();
    const clock = () => now;
    const clientOf = (retention: StoredRetention) => {
      const app = h.appWith({ now: clock, storedRetention: retention });
      return new OpenAI({
        apiKey: h.keys.acme,
        baseURL: "http://gateway/v1",
        maxRetries: 0,
        fetch: async (url, init) => app.request(String(url), init),
      });
    };
    const day = 24 * 60 * 60_000;
    const swept = clientOf(StoredRetention.days(30, clock));
    const old = await swept.responses.create({ model: BASE, input: "Old", max_output_tokens: 1 });
    now += 31 * day;
    // This process has not swept yet: storing the next response, which continues the old one, sweeps the
    // old one away, after writing the conversation into its successor.
    const fresh = await swept.responses.create({
      model: BASE,
      input: "Fresh",
      previous_response_id: old.id,
      max_output_tokens: 1,
    });
    await expect(swept.responses.retrieve(old.id)).rejects.toMatchObject({ status: 404 });
    expect((await swept.responses.retrieve(fresh.id)).id).toBe(fresh.id);
    const carried = await swept.responses.inputItems.list(fresh.id, { order: "asc" });
    expect(carried.data.map((item) => (item.type === "message" ? item.role : item.type))).toEqual([
      "user",
      "assistant",
      "user",
    ]);
    // A sweep just before `fresh` expires; within the hour after it no sweep runs, though `fresh` has
    // expired meanwhile; an hour after it one does.
    const minute = 60_000;
    now += 30 * day - 30 * minute;
    await swept.responses.create({ model: BASE, input: "Another", max_output_tokens: 1 });
    now += 40 * minute;
    await swept.responses.create({ model: BASE, input: "Within the hour", max_output_tokens: 1 });
    expect((await swept.responses.retrieve(fresh.id)).id).toBe(fresh.id);
    now += 30 * minute;
    await swept.responses.create({ model: BASE, input: "Later", max_output_tokens: 1 });
    await expect(swept.responses.retrieve(fresh.id)).rejects.toMatchObject({ status: 404 });

    // A sweep that deleted a whole batch makes the next one due a minute later, not an hour.
    await h.db.execute(sql`delete from stored_responses`);
    const batched = clientOf(new StoredRetention(30 * day, clock, 1));
    const expired: OpenAI.Responses.Response[] = [];
    for (const input of ["One", "Two", "Three"]) {
      expired.push(await batched.responses.create({ model: BASE, input, max_output_tokens: 1 }));
    }
    now += 31 * day;
    const gone = async () => {
      const found = await Promise.all(expired.map((r) => batched.responses.retrieve(r.id).catch(() => null)));
      return found.filter((r) => r === null).length;
    };
    await batched.responses.create({ model: BASE, input: "Sweeps one", max_output_tokens: 1 });
    expect(await gone()).toBe(1);
    now += 30_000;
    await batched.responses.create({ model: BASE, input: "Too soon", max_output_tokens: 1 });
    expect(await gone()).toBe(1);
    now += 31_000;
    await batched.responses.create({ model: BASE, input: "Sweeps two", max_output_tokens: 1 });
    expect(await gone()).toBe(2);

    // Retention 0 keeps them until deleted.
    const keeper = clientOf(new StoredRetention(0, clock));
    const kept = await keeper.responses.create({ model: BASE, input: "Keep", max_output_tokens: 1 });
    now += 3650 * day;
    await keeper.responses.create({ model: BASE, input: "Again", max_output_tokens: 1 });
    expect((await keeper.responses.retrieve(kept.id)).id).toBe(kept.id);
  });

  it("echoes prompt_cache_key, safety_identifier, max_tool_calls and text.verbosity, as created and as stored", async () => {
    const created = await client.responses.create({
      model: BASE,
      input: "Hi",
      max_output_tokens: 2,
      prompt_cache_key: "tenant-7",
      safety_identifier: "user-42",
      max_tool_calls: 3,
      text: { verbosity: "medium" },
      // OpenAI's API takes max_tool_calls; this SDK's types do not have it yet.
    } as OpenAI.Responses.ResponseCreateParamsNonStreaming);
    const echoed = {
      prompt_cache_key: "tenant-7",
      safety_identifier: "user-42",
      max_tool_calls: 3,
      text: { format: { type: "text" }, verbosity: "medium" },
    };
    expect(created).toMatchObject(echoed);
    expect(await client.responses.retrieve(created.id)).toMatchObject(echoed);
  });

  it("refuses what it cannot honour with a 400 naming the field, and runs nothing", async () => {
    const before = worker.received.length;
    const refusals: [Record<string, unknown>, string][] = [
      [
        { input: [{ role: "user", content: [{ type: "input_image", image_url: "https://x/y.png" }] }] },
        "input.0.content.0",
      ],
      [{ input: [{ type: "computer_call_output", call_id: "c" }] }, "input.0.type"],
      // Earlier reasoning is kept but never prompts: alone it leaves nothing to answer.
      [{ input: [{ type: "reasoning", summary: [] }] }, "input"],
      [
        { input: [{ type: "function_call", call_id: "c", name: "f", arguments: "{oops" }] },
        "input.0.arguments",
      ],
      [{ tools: [{ type: "web_search" }] }, "tools.0.type"],
      [{ include: [INCLUDE_LOGPROBS, "bogus"] }, "include.1"],
      [{ text: { verbosity: "low" } }, "text.verbosity"],
      [{ text: { format: { type: "json_object" } } }, "input"],
      [
        {
          text: {
            format: {
              type: "json_schema",
              name: "x",
              schema: {
                type: "object",
                properties: { a: { type: "string", pattern: "(a)\\1" } },
                required: ["a"],
                additionalProperties: false,
              },
              strict: true,
            },
          },
        },
        "text.format.schema",
      ],
      [
        {
          tools: [
            {
              type: "function",
              name: "f",
              parameters: { type: "object", properties: { a: { type: "string", format: "uri" } } },
              strict: true,
            },
          ],
        },
        "tools.0.parameters",
      ],
      [
        {
          tool_choice: { type: "function", name: "nope" },
          tools: [{ type: "function", name: "f", strict: false }],
        },
        "tool_choice",
      ],
      [{ max_output_tokens: CONTEXT * 2 }, "max_output_tokens"],
      [{ input: "x".repeat(2000) }, "input"],
      [{ reasoning: { effort: "high" } }, "reasoning.effort"],
      [{ background: true, store: false }, "store"],
      [{ input: [] }, "input"],
      // Nothing to answer: no input, and no conversation or previous response to answer instead.
      [{ input: undefined }, "input"],
      // A prompt template is refused by name, with or without input.
      [{ prompt: { id: "pmpt_1" } }, "prompt"],
      [{ input: undefined, prompt: { id: "pmpt_1" } }, "prompt"],
      // An empty id is not "no previous response": the client meant one.
      [{ previous_response_id: "" }, "previous_response_id"],
      // An item's id is unique within what a response answers (its input_items page by it).
      [
        {
          input: [
            { type: "message", role: "user", content: "a", id: "msg_twice" },
            { type: "message", role: "user", content: "b", id: "msg_twice" },
          ],
        },
        "input.1",
      ],
    ];
    for (const [fields, param] of refusals) {
      const error = await client.responses
        .create({
          model: BASE,
          input: "Say hello",
          ...fields,
        } as OpenAI.Responses.ResponseCreateParamsNonStreaming)
        .catch((e: unknown) => e);
      expect(error, JSON.stringify(fields)).toBeInstanceOf(OpenAI.BadRequestError);
      expect((error as InstanceType<typeof OpenAI.APIError>).param, JSON.stringify(fields)).toBe(param);
    }
    expect(worker.received.length).toBe(before);
  });

  it("raises a worker's failure in the middle of a stream as an APIError", async () => {
    worker.behaviour = (request) =>
      request.sampling.max_tokens === 43
        ? { error: { code: "oom", message: "out of memory" }, after: 2 }
        : "reply";
    try {
      const stream = await client.responses.create({
        model: BASE,
        input: "Hi",
        stream: true,
        max_output_tokens: 43,
      });
      const types: string[] = [];
      const failure = await (async () => {
        for await (const event of stream) types.push(event.type);
      })().catch((e: unknown) => e);
      expect(failure).toBeInstanceOf(OpenAI.APIError);
      expect((failure as Error).message).toContain("out of memory");
      expect(types.filter((t) => t === "response.output_text.delta")).toHaveLength(2);
      expect(types).not.toContain("response.completed");
      // The error event is numbered on from the events before it, as every event is.
      const raw = await client.responses
        .create({ model: BASE, input: "Hi", stream: true, max_output_tokens: 43 })
        .asResponse();
      const events = (await raw.text())
        .split("\n")
        .filter((line) => line.startsWith("data: "))
        .map((line) => JSON.parse(line.slice("data: ".length)) as { type: string; sequence_number: number });
      expect(events.at(-1)).toMatchObject({ type: "error", code: "oom" });
      expect(events.map((event) => event.sequence_number)).toEqual(events.map((_, k) => k));
    } finally {
      worker.behaviour = () => "reply";
    }
  });
});

describe("POST /v1/responses/input_tokens", () => {
  it("counts the input tokens the same request is billed for, what it continues included, and runs nothing", async () => {
    const first = await client.responses.create({
      model: BASE,
      instructions: "Be brief.",
      input: "Say hello",
      max_output_tokens: 2,
    });
    const conversation = await client.conversations.create({
      items: [{ type: "message", role: "user", content: "Earlier words" }],
    });
    const requests: OpenAI.Responses.ResponseCreateParamsNonStreaming[] = [
      { model: `${BASE}:acme/a1`, instructions: "Be brief.", input: "Say hello", max_output_tokens: 2 },
      { model: BASE, previous_response_id: first.id, input: "And again", max_output_tokens: 2 },
      { model: BASE, conversation: conversation.id, input: "Then this", max_output_tokens: 2 },
    ];
    for (const request of requests) {
      const received = worker.received.length;
      const counted = await client.responses.inputTokens.count(
        request as OpenAI.Responses.InputTokenCountParams,
      );
      expect(worker.received.length).toBe(received);
      const response = await client.responses.create(request);
      expect(counted).toEqual({
        object: "response.input_tokens",
        input_tokens: response.usage!.input_tokens,
      });
      expect(counted.input_tokens).toBe(sent(response.id).prompt_token_ids.length);
    }
    const unknown = client.responses.inputTokens.count({
      model: BASE,
      input: "x",
      conversation: "conv_nope",
    });
    await expect(unknown).rejects.toMatchObject({ status: 404, param: "conversation" });
    await expect(client.responses.inputTokens.count({ model: "nope", input: "x" })).rejects.toMatchObject({
      status: 404,
    });
    // No default model: tokens are counted with a base's tokenizer and chat template, and there are several.
    const modelless = await client.responses.inputTokens.count({ input: "x" }).catch((e: unknown) => e);
    expect(modelless).toMatchObject({ status: 400, param: "model" });
    expect((modelless as Error).message).toContain("must be given: there is no default model");
  });
});
