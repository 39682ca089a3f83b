// The Conversations API through the official `openai` client against the gateway over HTTP (in-process bus,
// scripted worker): conversations and their items created, read, paged, changed and deleted; a Responses
// request naming a conversation starts from its items and adds its input and output to it, streamed or not;
// org scoping; and every refusal changes nothing.
import type OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ErrorBody } from "../../schema/api.ts";
import { conversations } from "../../schema/db.ts";
import { type FakeWorker, fakeReplyText } from "../support/fake-worker.ts";
import { BASE, type GatewayHarness } from "../support/gateway-harness.ts";
import { apiFailure, chatPromptIds, sentFor } from "../support/openai-calls.ts";
import { type ServedGateway, serveGateway } from "../support/served-gateway.ts";

let h: GatewayHarness;
let worker: FakeWorker;
let gateway: ServedGateway;
let client: OpenAI;
let otherClient: OpenAI;

beforeAll(async () => {
  gateway = await serveGateway();
  ({ h, worker, client, otherClient } = gateway);
});
afterAll(() => gateway.close());

const sent = (id: string) => sentFor(worker, id);

const chatPrompt = (messages: OpenAI.ChatCompletionMessageParam[]) =>
  chatPromptIds(client, worker, BASE, messages);

/** Every item of the conversation, oldest first, as "role: text" (or the item's type). */
async function transcript(id: string): Promise<string[]> {
  const lines: string[] = [];
  for await (const item of client.conversations.items.list(id, { order: "asc", limit: 2 })) {
    lines.push(
      item.type === "message"
        ? `${item.role}: ${item.content.map((p) => ("text" in p ? p.text : "")).join("")}`
        : item.type,
    );
  }
  return lines;
}

/** A text message item with its own id (which the SDK's input types leave out, though the API takes it). */
const message = (role: "user" | "assistant", content: string, id: string) =>
  ({ type: "message", role, content, id }) as OpenAI.Responses.ResponseInputItem;

const conversationCount = async () => (await h.db.select().from(conversations)).length;

describe("conversations", () => {
  it("creates a conversation with its first items and metadata, and reads them back", async () => {
    const conversation = await client.conversations.create({
      metadata: { customer: "acme-7" },
      items: [{ type: "message", role: "system", content: "Be brief." }, message("user", "Hi", "msg_mine")],
    });
    expect(conversation).toMatchObject({ object: "conversation", metadata: { customer: "acme-7" } });
    expect(conversation.id).toMatch(/^conv_/);
    expect(await client.conversations.retrieve(conversation.id)).toEqual(conversation);

    const newest = await client.conversations.items.list(conversation.id);
    expect(newest.data.map((item) => item.id)).toEqual(["msg_mine", expect.stringMatching(/^msg_/)]);
    expect(newest.data[0]).toEqual({
      id: "msg_mine",
      type: "message",
      role: "user",
      status: "completed",
      content: [{ type: "input_text", text: "Hi" }],
    });
    expect(
      await client.conversations.items.retrieve("msg_mine", { conversation_id: conversation.id }),
    ).toEqual(newest.data[0]);
  });

  it("adds items at the end, pages them either way, and deletes one", async () => {
    const { id } = await client.conversations.create({});
    for (const k of [0, 1, 2]) {
      const added = await client.conversations.items.create(id, {
        items: [
          { type: "message", role: "user", content: `question ${k}` },
          { type: "message", role: "assistant", content: `answer ${k}` },
        ],
      });
      expect(added.data.map((item) => item.type)).toEqual(["message", "message"]);
    }
    expect(await transcript(id)).toEqual([
      "user: question 0",
      "assistant: answer 0",
      "user: question 1",
      "assistant: answer 1",
      "user: question 2",
      "assistant: answer 2",
    ]);
    const first = await client.conversations.items.list(id, { limit: 2 });
    expect(first.has_more).toBe(true);
    const second = await client.conversations.items.list(id, { limit: 2, after: first.data[1]!.id! });
    expect(second.data.map((item) => (item.type === "message" ? item.content : null))).toEqual([
      [{ type: "output_text", text: "answer 1", annotations: [] }],
      [{ type: "input_text", text: "question 1" }],
    ]);

    const doomed = second.data[0]!.id!;
    const after = await client.conversations.items.delete(doomed, { conversation_id: id });
    expect(after).toMatchObject({ id, object: "conversation" });
    expect(await transcript(id)).not.toContain("assistant: answer 1");
    expect(
      (await apiFailure(client.conversations.items.retrieve(doomed, { conversation_id: id }))).status,
    ).toBe(404);
    // Added after a deleted item: still at the end.
    await client.conversations.items.create(id, {
      items: [{ type: "message", role: "user", content: "last" }],
    });
    expect((await transcript(id)).at(-1)).toBe("user: last");
  });

  it("creates and adds once under an Idempotency-Key, however often the request is retried", async () => {
    const once = { headers: { "Idempotency-Key": "conv-create-1" } };
    const first = await client.conversations.create({ items: [message("user", "Hi", "msg_once")] }, once);
    const again = await client.conversations.create({ items: [message("user", "Hi", "msg_once")] }, once);
    expect(again.id).toBe(first.id);
    const add = { items: [{ type: "message" as const, role: "user" as const, content: "More" }] };
    const added = await client.conversations.items.create(first.id, add, {
      headers: { "Idempotency-Key": "conv-add-1" },
    });
    const retried = await client.conversations.items.create(first.id, add, {
      headers: { "Idempotency-Key": "conv-add-1" },
    });
    expect(retried.data).toEqual(added.data);
    expect(await transcript(first.id)).toEqual(["user: Hi", "user: More"]);
  });

  it("has its metadata replaced, and is deleted with its items", async () => {
    const { id } = await client.conversations.create({
      metadata: { a: "1" },
      items: [{ type: "message", role: "user", content: "Hi" }],
    });
    expect(await client.conversations.update(id, { metadata: { b: "2" } })).toMatchObject({
      metadata: { b: "2" },
    });
    expect((await client.conversations.retrieve(id)).metadata).toEqual({ b: "2" });
    expect(await client.conversations.delete(id)).toEqual({
      id,
      object: "conversation.deleted",
      deleted: true,
    });
    expect((await apiFailure(client.conversations.retrieve(id))).status).toBe(404);
    expect((await apiFailure(client.conversations.items.list(id))).status).toBe(404);
    expect((await apiFailure(client.conversations.delete(id))).status).toBe(404);
  });

  it("belongs to its org: another org can neither read, change, add to nor delete it", async () => {
    const { id } = await client.conversations.create({
      metadata: { a: "1" },
      items: [message("user", "Hi", "msg_own")],
    });
    for (const call of [
      () => otherClient.conversations.retrieve(id),
      () => otherClient.conversations.update(id, { metadata: { a: "2" } }),
      () => otherClient.conversations.delete(id),
      () => otherClient.conversations.items.list(id),
      () =>
        otherClient.conversations.items.create(id, {
          items: [{ type: "message", role: "user", content: "x" }],
        }),
      () => otherClient.conversations.items.retrieve("msg_own", { conversation_id: id }),
      () => otherClient.conversations.items.delete("msg_own", { conversation_id: id }),
      () => otherClient.responses.create({ model: BASE, conversation: id, input: "x" }),
    ]) {
      expect((await apiFailure(call())).status).toBe(404);
    }
    expect(await transcript(id)).toEqual(["user: Hi"]);
    expect((await client.conversations.retrieve(id)).metadata).toEqual({ a: "1" });
  });

  it("refuses items it cannot hold, naming them, and creates or adds nothing", async () => {
    const before = await conversationCount();
    const { id } = await client.conversations.create({
      items: [{ type: "message", role: "user", content: "Hi" }],
    });
    const cases: [OpenAI.Responses.ResponseInputItem[], string][] = [
      [
        [
          {
            type: "message",
            role: "user",
            content: [{ type: "input_image", image_url: "https://example.com/a.png", detail: "auto" }],
          },
        ],
        "items.0.content.0",
      ],
      [[{ type: "function_call", call_id: "c1", name: "f", arguments: "{not json" }], "items.0.arguments"],
      [[message("user", "a", "msg_twice"), message("user", "b", "msg_twice")], "items.1"],
      [
        Array.from({ length: 21 }, () => ({ type: "message" as const, role: "user" as const, content: "x" })),
        "items",
      ],
    ];
    for (const [items, param] of cases) {
      const created = await apiFailure(client.conversations.create({ items }));
      expect([created.status, created.param]).toEqual([400, param]);
      const added = await apiFailure(client.conversations.items.create(id, { items }));
      expect([added.status, added.param]).toEqual([400, param]);
    }
    expect(await conversationCount()).toBe(before + 1);
    expect(await transcript(id)).toEqual(["user: Hi"]);
  });
});

describe("a response in a conversation", () => {
  it("starts from the conversation's items and adds its input and output to it, turn after turn", async () => {
    const { id } = await client.conversations.create({
      items: [
        { type: "message", role: "system", content: "Be brief." },
        { type: "message", role: "user", content: "First question" },
        { type: "message", role: "assistant", content: "First answer" },
      ],
    });
    const second = await client.responses.create({
      model: BASE,
      conversation: id,
      input: "Second question",
      max_output_tokens: 2,
    });
    expect(second.conversation).toEqual({ id });
    const expected: OpenAI.ChatCompletionMessageParam[] = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "First question" },
      { role: "assistant", content: "First answer" },
      { role: "user", content: "Second question" },
    ];
    expect(sent(second.id).prompt_token_ids).toEqual(await chatPrompt(expected));

    // Streamed, with the conversation named as an object.
    const stream = await client.responses.create({
      model: BASE,
      conversation: { id },
      input: "Third question",
      max_output_tokens: 1,
      stream: true,
    });
    let third: OpenAI.Responses.Response | undefined;
    for await (const event of stream) if (event.type === "response.incomplete") third = event.response;
    expect(third?.conversation).toEqual({ id });
    expect(sent(third!.id).prompt_token_ids).toEqual(
      await chatPrompt([
        ...expected,
        { role: "assistant", content: fakeReplyText(2) },
        { role: "user", content: "Third question" },
      ]),
    );
    expect(await transcript(id)).toEqual([
      "system: Be brief.",
      "user: First question",
      "assistant: First answer",
      "user: Second question",
      `assistant: ${fakeReplyText(2)}`,
      "user: Third question",
      `assistant: ${fakeReplyText(1)}`,
    ]);
    // The output message is listed under the response's own item id.
    const newest = await client.conversations.items.list(id, { limit: 2 });
    expect(newest.data[0]!.id).toBe(third!.output[0]!.id);
    // Cut by max_output_tokens, it stays incomplete, as the response's own item says; the input completed.
    expect(newest.data.map((item) => (item as { status?: string }).status)).toEqual([
      "incomplete",
      "completed",
    ]);

    // The response is stored with the conversation so far: previous_response_id continues it whole.
    const fourth = await client.responses.create({
      model: BASE,
      previous_response_id: second.id,
      input: "Branch",
      max_output_tokens: 1,
    });
    expect(sent(fourth.id).prompt_token_ids).toEqual(
      await chatPrompt([
        ...expected,
        { role: "assistant", content: fakeReplyText(2) },
        { role: "user", content: "Branch" },
      ]),
    );
    // A branch off a stored response does not add to the conversation.
    expect(await transcript(id)).toHaveLength(7);
  });

  it("answers the conversation as it stands when input is left out, and refuses one with nothing to answer", async () => {
    const { id } = await client.conversations.create({
      items: [{ type: "message", role: "user", content: "First question" }],
    });
    const request = { model: BASE, conversation: id, max_output_tokens: 2 };
    const counted = await client.responses.inputTokens.count(request);
    const answer = await client.responses.create(request);
    expect(answer.output_text).toBe(fakeReplyText(2));
    expect(counted.input_tokens).toBe(answer.usage!.input_tokens);
    const asked: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "First question" }];
    expect(sent(answer.id).prompt_token_ids).toEqual(await chatPrompt(asked));
    expect(await transcript(id)).toEqual(["user: First question", `assistant: ${fakeReplyText(2)}`]);

    // The same with previous_response_id: the model answers on after its own answer.
    const on = await client.responses.create({ model: BASE, previous_response_id: answer.id });
    expect(sent(on.id).prompt_token_ids).toEqual(
      await chatPrompt([...asked, { role: "assistant", content: fakeReplyText(2) }]),
    );

    const before = worker.received.length;
    const empty = await client.conversations.create({});
    const nothing = await apiFailure(client.responses.create({ model: BASE, conversation: empty.id }));
    expect([nothing.status, nothing.param]).toEqual([400, "input"]);
    expect(nothing.message).toContain("nothing to answer");
    const alone = await apiFailure(client.responses.create({ model: BASE, max_output_tokens: 1 }));
    expect([alone.status, alone.param]).toEqual([400, "input"]);
    expect(alone.message).toContain("input is required unless conversation or previous_response_id");
    expect(worker.received.length).toBe(before);
    expect(await transcript(empty.id)).toEqual([]);
  });

  it("refuses a tool output in the input that answers no call before it, and takes one whose call is in what it continues", async () => {
    const call = (call_id: string) =>
      ({ type: "function_call", call_id, name: "weather", arguments: "{}" }) as const;
    const output = (call_id: string) => ({ type: "function_call_output", call_id, output: "sunny" }) as const;
    const ask = { type: "message", role: "user", content: "Weather?" } as const;
    const before = worker.received.length;
    const refusals: [OpenAI.Responses.ResponseInputItem[], string][] = [
      [[ask, call("call_a"), output("call_b")], "input.2.call_id"],
      [[ask, output("call_a"), call("call_a")], "input.1.call_id"],
      [[ask, { type: "custom_tool_call_output", call_id: "call_c", output: "done" }], "input.1.call_id"],
    ];
    for (const [input, param] of refusals) {
      const refused = await apiFailure(client.responses.create({ model: BASE, input }));
      expect([refused.status, refused.param], JSON.stringify(input)).toEqual([400, param]);
      expect(refused.message).toContain("No tool call found");
    }
    expect(worker.received.length).toBe(before);

    // The call in the conversation, or in the response continued: the output answers it.
    const { id } = await client.conversations.create({ items: [ask, call("call_conv")] });
    const inConversation = await client.responses.create({
      model: BASE,
      conversation: id,
      input: [output("call_conv")],
      max_output_tokens: 1,
    });
    expect(inConversation.status).toBe("incomplete");
    // A call the model made, answered by what continues its response.
    worker.behaviour = () => ({ say: ['{"name":"weather","arguments":{}}'] });
    const first = await client.responses.create({
      model: BASE,
      input: [ask],
      tools: [{ type: "function", name: "weather", parameters: null, strict: false }],
      tool_choice: "required",
    });
    worker.behaviour = () => "reply";
    const made = first.output[0] as OpenAI.Responses.ResponseFunctionToolCall;
    const continued = await client.responses.create({
      model: BASE,
      previous_response_id: first.id,
      input: [output(made.call_id)],
      max_output_tokens: 1,
    });
    expect(continued.status).toBe("incomplete");
    // A call of the input's own that nothing answers is refused, as OpenAI refuses it.
    const unanswered = await apiFailure(
      client.responses.create({ model: BASE, input: [ask, call("call_x"), ask] }),
    );
    expect([unanswered.status, unanswered.param]).toEqual([400, "input"]);
    expect(unanswered.message).toContain('No tool output found for function_call "call_x"');
    // What a conversation already holds is not checked again: an output added alone is still answered.
    const lone = await client.conversations.create({ items: [ask, output("call_gone")] });
    const answered = await client.responses.create({
      model: BASE,
      conversation: lone.id,
      max_output_tokens: 1,
    });
    expect(answered.status).toBe("incomplete");
  });

  it("takes item_references to the org's conversation items, whoever chose their ids, and only its own", async () => {
    const { id } = await client.conversations.create({
      items: [
        message("user", "Chosen", "msg_chosen-for-reference"),
        { type: "message", role: "assistant", content: "Added answer" },
      ],
    });
    const [, added] = (await client.conversations.items.list(id, { order: "asc" })).data;
    const input: OpenAI.Responses.ResponseInputItem[] = [
      { type: "item_reference", id: "msg_chosen-for-reference" },
      { type: "item_reference", id: added!.id! },
      { role: "user", content: "Next" },
    ];
    const response = await client.responses.create({ model: BASE, input, max_output_tokens: 1 });
    expect(sent(response.id).prompt_token_ids).toEqual(
      await chatPrompt([
        { role: "user", content: "Chosen" },
        { role: "assistant", content: "Added answer" },
        { role: "user", content: "Next" },
      ]),
    );
    // Copied into another conversation by reference.
    const other = await client.conversations.create({ items: input.slice(0, 2) });
    expect(await transcript(other.id)).toEqual(["user: Chosen", "assistant: Added answer"]);

    const foreign = await apiFailure(otherClient.responses.create({ model: BASE, input }));
    expect([foreign.status, foreign.code, foreign.param]).toEqual([404, "item_not_found", "input.0"]);
  });

  it("refuses references that name more items than four request bodies, before building any prompt", async () => {
    const limit = h.deps.limits.maxBodyBytes;
    // One item of a third of a body: ten references to it come to more than four bodies.
    const large = "word ".repeat(Math.floor(limit / 3 / 5));
    await client.conversations.create({ items: [message("user", large, "msg_large-for-reference")] });
    const runs = worker.received.length;
    const refs = (n: number): OpenAI.Responses.ResponseInputItem[] =>
      Array.from({ length: n }, () => ({ type: "item_reference" as const, id: "msg_large-for-reference" }));
    const refused = await apiFailure(
      client.responses.create({ model: BASE, input: refs(13), max_output_tokens: 1 }),
    );
    expect([refused.status, refused.param]).toEqual([400, "input"]);
    expect(refused.message).toContain("reference fewer");
    // Under the bound the items are read and judged as a prompt: this one is too long for the context.
    const tooLong = await apiFailure(
      client.responses.create({ model: BASE, input: refs(2), max_output_tokens: 1 }),
    );
    expect([tooLong.status, tooLong.code]).toEqual([400, "context_length_exceeded"]);
    expect(worker.received.length).toBe(runs);
  });

  it("holds at most four request bodies of items: more is refused, by the items route and before a response runs", async () => {
    // A small body limit, so the bound (four bodies) is reached in a few requests.
    const app = h.appWith({ limits: { maxBodyBytes: 20_000 } });
    const post = (path: string, body: unknown) =>
      app.request(path, {
        method: "POST",
        headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const { id } = (await (await post("/v1/conversations", {})).json()) as { id: string };
    const items = [{ type: "message", role: "user", content: "x".repeat(15_000) }];
    for (let k = 0; k < 5; k++)
      expect((await post(`/v1/conversations/${id}/items`, { items })).status).toBe(200);
    const refused = await post(`/v1/conversations/${id}/items`, { items });
    expect(refused.status).toBe(400);
    expect(((await refused.json()) as ErrorBody).error).toMatchObject({
      code: "conversation_too_large",
      param: "items",
    });
    const runs = worker.received.length;
    const answered = await post("/v1/responses", {
      model: BASE,
      conversation: id,
      input: "y".repeat(15_000),
      max_output_tokens: 1,
    });
    expect(answered.status).toBe(400);
    expect(((await answered.json()) as ErrorBody).error).toMatchObject({
      code: "conversation_too_large",
      param: "input",
    });
    expect(worker.received.length).toBe(runs);
  });

  it("keeps a turn whose text holds U+0000 or a lone surrogate as it was sent, in the conversation and the stored response", async () => {
    // jsonb refuses U+0000; a model may write it all the same (schema/text-safe-jsonb.ts).
    const { id } = await client.conversations.create({});
    worker.behaviour = () => ({ say: ["nul\u0000", " and \uffff0"] });
    try {
      const response = await client.responses.create({
        model: BASE,
        conversation: id,
        input: "say \u0000 \ud800",
        max_output_tokens: 5,
      });
      expect(response.output_text).toBe("nul\u0000 and \uffff0");
      expect(await transcript(id)).toEqual(["user: say \u0000 \ud800", "assistant: nul\u0000 and \uffff0"]);
      expect((await client.responses.retrieve(response.id)).output_text).toBe("nul\u0000 and \uffff0");
    } finally {
      worker.behaviour = () => "reply";
    }
  });

  it("adds its turn even when the response is not stored", async () => {
    const { id } = await client.conversations.create({});
    const response = await client.responses.create({
      model: BASE,
      conversation: id,
      input: "Hello",
      max_output_tokens: 1,
      store: false,
    });
    expect(await transcript(id)).toEqual(["user: Hello", `assistant: ${fakeReplyText(1)}`]);
    expect((await apiFailure(client.responses.retrieve(response.id))).status).toBe(404);
  });

  it("refuses an unknown conversation, one with previous_response_id, or an input id the conversation holds, and runs nothing", async () => {
    const { id } = await client.conversations.create({
      items: [message("user", "Hi", "msg_taken")],
    });
    const stored = await client.responses.create({ model: BASE, input: "x", max_output_tokens: 1 });
    const before = worker.received.length;
    const unknown = await apiFailure(
      client.responses.create({ model: BASE, conversation: "conv_nope", input: "x" }),
    );
    expect([unknown.status, unknown.param]).toEqual([404, "conversation"]);
    const both = await apiFailure(
      client.responses.create({ model: BASE, conversation: id, previous_response_id: stored.id, input: "x" }),
    );
    expect([both.status, both.param]).toEqual([400, "conversation"]);
    // The same 400 when neither exists: the two are not read before the conflict is seen.
    const neither = await apiFailure(
      client.responses.create({
        model: BASE,
        conversation: "conv_nope",
        previous_response_id: "resp_nope",
        input: "x",
      }),
    );
    expect([neither.status, neither.param]).toEqual([400, "conversation"]);
    // Two items of one input with the same id: said as such, not as one the conversation holds.
    const twice = await apiFailure(
      client.responses.create({
        model: BASE,
        input: [message("user", "a", "msg_twice"), message("user", "b", "msg_twice")],
      }),
    );
    expect([twice.status, twice.param]).toEqual([400, "input.1"]);
    expect(twice.message).toContain("an earlier item of input has id 'msg_twice'");
    const taken = await apiFailure(
      client.responses.create({
        model: BASE,
        conversation: id,
        input: [message("user", "again", "msg_taken")],
      }),
    );
    expect([taken.status, taken.param]).toEqual([400, "input.0"]);
    expect(worker.received.length).toBe(before);
    expect(await transcript(id)).toEqual(["user: Hi"]);
  });

  it("keeps a response's turn whose input id another addition took while it ran, under the id it would have had", async () => {
    const { id } = await client.conversations.create({ items: [message("user", "Hi", "msg_first")] });
    worker.stallClaims();
    const before = worker.received.length;
    const running = client.responses.create({
      model: BASE,
      conversation: id,
      input: [message("user", "mine", "msg_contested")],
      max_output_tokens: 2,
    });
    try {
      await worker.pulled(before + 1);
      // Checked when the response began; taken now, before it ends.
      await client.conversations.items.create(id, { items: [message("user", "theirs", "msg_contested")] });
    } finally {
      worker.releaseClaims();
    }
    const response = await running;
    expect(response.output_text).toBe(fakeReplyText(2));
    expect(await transcript(id)).toEqual([
      "user: Hi",
      "user: theirs",
      "user: mine",
      `assistant: ${fakeReplyText(2)}`,
    ]);
    const items = (await client.conversations.items.list(id, { order: "asc" })).data;
    expect(items.map((item) => item.id)).toEqual([
      "msg_first",
      "msg_contested",
      expect.stringMatching(/^msg_.+_in0$/),
      response.output[0]!.id,
    ]);
  });
});
