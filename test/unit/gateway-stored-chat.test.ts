// Stored chat completions through the official `openai` client against the gateway over HTTP (in-process
// bus, scripted worker): a completion created with `store: true` — streamed or not — reads back as it was
// answered, with its metadata and the messages it answered; the list's order, pages and filters; metadata
// replaced; deletion; org scoping; the retention; and what is never stored (store left out or false, a
// stream its client left, bad input).
import { sql } from "drizzle-orm";
import OpenAI from "openai";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { serveApp } from "../../gateway/node.ts";
import { StoredRetention } from "../../gateway/stored-retention.ts";
import { storedChatCompletions } from "../../schema/db.ts";
import type { StoredChatCompletion } from "../../schema/stored-chat-api.ts";
import { type FakeWorker, fakeReplyText } from "../support/fake-worker.ts";
import { BASE, type GatewayHarness } from "../support/gateway-harness.ts";
import { apiFailure } from "../support/openai-calls.ts";
import { type ServedGateway, serveGateway } from "../support/served-gateway.ts";

let h: GatewayHarness;
let worker: FakeWorker;
let gateway: ServedGateway;
let client: OpenAI;
let otherClient: OpenAI;

const ADAPTER_MODEL = `${BASE}:acme/a1`;

beforeAll(async () => {
  gateway = await serveGateway({ adapters: ["a1"] });
  ({ h, worker, client, otherClient } = gateway);
});
afterAll(() => gateway.close());
beforeEach(async () => {
  worker.behaviour = () => "reply";
  await h.db.delete(storedChatCompletions);
});

const hello: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "Hi" }];

/** A stored completion's metadata (the SDK's ChatCompletion type does not declare it). */
const metadataOf = (completion: OpenAI.ChatCompletion) => (completion as StoredChatCompletion).metadata;

async function allStored(query: OpenAI.Chat.ChatCompletionListParams = {}): Promise<string[]> {
  const ids: string[] = [];
  for await (const completion of client.chat.completions.list(query)) ids.push(completion.id);
  return ids;
}

describe("store: true", () => {
  it("keeps a completion as it was answered, with its metadata and the messages it answered", async () => {
    const messages: OpenAI.ChatCompletionMessageParam[] = [
      { role: "system", content: "Be brief." },
      {
        role: "user",
        content: [
          { type: "text", text: "Say " },
          { type: "text", text: "hello" },
        ],
        name: "ann",
      },
    ];
    const tools: OpenAI.ChatCompletionTool[] = [
      { type: "function", function: { name: "lookup", parameters: { type: "object" } } },
    ];
    const answer = await client.chat.completions.create({
      model: ADAPTER_MODEL,
      messages,
      max_tokens: 4,
      temperature: 0.3,
      seed: 7,
      user: "u-9",
      tools,
      tool_choice: "none",
      store: true,
      metadata: { customer: "acme-7", topic: "greeting" },
    });
    const stored = await client.chat.completions.retrieve(answer.id);
    // The answer, and what its request was, as OpenAI's stored objects echo it (sampling as it ran: top_p
    // from the base's generation_config.json, which the request left out).
    expect(stored).toEqual({
      ...answer,
      metadata: { customer: "acme-7", topic: "greeting" },
      temperature: 0.3,
      top_p: 0.9,
      seed: 7,
      presence_penalty: 0,
      frequency_penalty: 0,
      tools,
      tool_choice: "none",
      response_format: null,
      input_user: "u-9",
    });
    expect(stored.choices[0]!.message.content).toBe(fakeReplyText(4));

    const listed = await client.chat.completions.messages.list(answer.id);
    expect(listed.data).toEqual([
      {
        id: `${answer.id}-0`,
        role: "system",
        content: "Be brief.",
        name: null,
        content_parts: null,
      },
      {
        id: `${answer.id}-1`,
        role: "user",
        content: "Say hello",
        name: "ann",
        content_parts: [
          { type: "text", text: "Say " },
          { type: "text", text: "hello" },
        ],
      },
    ]);
    expect(listed.has_more).toBe(false);
  });

  it("lists an assistant's refusal parts among its content parts, their text in its content", async () => {
    const refused: OpenAI.ChatCompletionMessageParam = {
      role: "assistant",
      content: [
        { type: "text", text: "I " },
        { type: "refusal", refusal: "won't." },
      ],
    };
    const answer = await client.chat.completions.create({
      model: BASE,
      messages: [...hello, refused, { role: "user", content: "Please?" }],
      max_tokens: 1,
      store: true,
    });
    const listed = await client.chat.completions.messages.list(answer.id);
    expect(listed.data[1]).toEqual({
      id: `${answer.id}-1`,
      role: "assistant",
      content: "I won't.",
      name: null,
      content_parts: [
        { type: "text", text: "I " },
        { type: "refusal", refusal: "won't." },
      ],
    });
  });

  it("keeps a streamed completion as the same request unstreamed would have answered it", async () => {
    const request = {
      model: BASE,
      messages: hello,
      max_tokens: 5,
      logprobs: true,
      top_logprobs: 2,
      n: 2,
      store: true,
    } as const;
    const unstreamed = await client.chat.completions.create(request);
    const stream = await client.chat.completions.create({
      ...request,
      stream: true,
      stream_options: { include_usage: true },
    });
    let id = "";
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      id = chunk.id;
      usage = chunk.usage ?? usage;
    }
    const stored = await client.chat.completions.retrieve(id);
    const { id: _a, created: _b, ...sameAnswer } = unstreamed;
    expect(stored).toMatchObject({ ...sameAnswer, id, metadata: {} });
    expect(stored.usage).toEqual(usage);
    expect(stored.choices.map((c) => c.logprobs?.content?.length)).toEqual([5, 5]);
  });

  it("keeps a streamed call as its calls, put back together from their deltas", async () => {
    worker.behaviour = () => ({ say: ['{"name":"weather",', '"arguments":{"city":', '"Oslo"}}'] });
    const stream = await client.chat.completions.create({
      model: BASE,
      messages: hello,
      tools: [{ type: "function", function: { name: "weather", parameters: { type: "object" } } }],
      tool_choice: "required",
      store: true,
      stream: true,
    });
    let id = "";
    for await (const chunk of stream) id = chunk.id;
    const stored = await client.chat.completions.retrieve(id);
    expect(stored.choices).toEqual([
      {
        index: 0,
        message: {
          role: "assistant",
          content: null,
          refusal: null,
          tool_calls: [
            {
              id: expect.stringMatching(/^call_/),
              type: "function",
              function: { name: "weather", arguments: '{"city":"Oslo"}' },
            },
          ],
        },
        logprobs: null,
        finish_reason: "tool_calls",
      },
    ]);
    // Its usage, though the stream did not ask for it.
    expect(stored.usage).toMatchObject({ completion_tokens: 3 });
  });

  it("keeps nothing where store is left out or false", async () => {
    const plain = await client.chat.completions.create({ model: BASE, messages: hello, max_tokens: 1 });
    const unstored = await client.chat.completions.create({
      model: BASE,
      messages: hello,
      max_tokens: 1,
      store: false,
    });
    for (const id of [plain.id, unstored.id]) {
      const error = await apiFailure(client.chat.completions.retrieve(id));
      expect(error.status).toBe(404);
      expect(error.message).toContain("store: true");
    }
    expect(await allStored()).toEqual([]);
  });

  it("keeps nothing of a stream its client left, and its run is cancelled", async () => {
    worker.behaviour = () => ({ partial: 2 });
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: BASE, messages: hello, store: true, stream: true },
      { signal: controller.signal },
    );
    let id = "";
    await (async () => {
      for await (const chunk of stream) {
        id = chunk.id;
        if (chunk.choices[0]?.delta.content) controller.abort();
      }
    })().catch(() => {});
    const requestId = id.replace(/^chatcmpl-/, "");
    await worker.cancelled(requestId);
    expect(worker.cancels).toContain(requestId);
    expect(await allStored()).toEqual([]);
  });

  it("answers, streamed or not, even when the completion cannot be stored, and logs it", async () => {
    const logged: string[] = [];
    const app = h.appWith({
      storedRetention: new StoredRetention(0),
      log: {
        info() {},
        warn() {},
        error: (fields, message) => logged.push(`${message}: ${JSON.stringify(fields)}`),
      },
    });
    const post = (stream: boolean) =>
      app.request("/v1/chat/completions", {
        method: "POST",
        headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
        body: JSON.stringify({ model: BASE, messages: hello, max_tokens: 2, store: true, stream }),
      });
    await h.db.execute(sql`alter table stored_chat_completions rename to stored_chat_completions_away`);
    const texts: string[] = [];
    try {
      for (const stream of [false, true]) {
        const res = await post(stream);
        expect(res.status).toBe(200);
        texts.push(await res.text());
      }
    } finally {
      await h.db.execute(sql`alter table stored_chat_completions_away rename to stored_chat_completions`);
    }
    expect(JSON.parse(texts[0]!).choices[0].message.content).toBe(fakeReplyText(2));
    expect(texts[1]).toContain("data: [DONE]");
    expect(logged).toEqual([
      expect.stringContaining("could not store a chat completion"),
      expect.stringContaining("could not store a chat completion"),
    ]);
    expect(logged[0]).toContain("stored_chat_completions");
  });

  it("refuses metadata outside OpenAI's limits, and runs nothing", async () => {
    const before = worker.received.length;
    const tooMany = Object.fromEntries(Array.from({ length: 17 }, (_, k) => [`k${k}`, "v"]));
    const error = await apiFailure(
      client.chat.completions.create({ model: BASE, messages: hello, store: true, metadata: tooMany }),
    );
    expect(error.status).toBe(400);
    expect(error.param).toBe("metadata");
    expect(worker.received.length).toBe(before);
  });
});

describe("GET /v1/chat/completions", () => {
  /** Stores completions one after another, returning their ids. */
  async function storeSome(
    specs: { model?: string; metadata?: Record<string, string> }[],
    on: OpenAI = client,
  ): Promise<string[]> {
    const ids: string[] = [];
    for (const spec of specs) {
      const answer = await on.chat.completions.create({
        model: spec.model ?? BASE,
        messages: hello,
        max_tokens: 1,
        store: true,
        ...(spec.metadata ? { metadata: spec.metadata } : {}),
      });
      ids.push(answer.id);
    }
    return ids;
  }

  it("lists the org's completions oldest first, or newest first, a page at a time", async () => {
    const ids = await storeSome([{}, {}, {}, {}, {}]);
    await storeSome([{}], otherClient);
    expect(await allStored({ limit: 2 })).toEqual(ids);
    expect(await allStored({ limit: 2, order: "desc" })).toEqual([...ids].reverse());
    const first = await client.chat.completions.list({ limit: 2 });
    expect(first.data.map((c) => c.id)).toEqual(ids.slice(0, 2));
    expect(first.has_more).toBe(true);
    const second = await client.chat.completions.list({ limit: 2, after: ids[1]! });
    expect(second.data.map((c) => c.id)).toEqual(ids.slice(2, 4));
  });

  it("filters by model and by every metadata pair asked for", async () => {
    const [base, tagged, both] = await storeSome([
      { metadata: { team: "a" } },
      { model: ADAPTER_MODEL, metadata: { team: "a", env: "prod" } },
      { model: ADAPTER_MODEL, metadata: { team: "b", env: "prod" } },
    ]);
    expect(await allStored({ model: ADAPTER_MODEL })).toEqual([tagged, both]);
    expect(await allStored({ model: BASE })).toEqual([base]);
    expect(await allStored({ metadata: { team: "a" } })).toEqual([base, tagged]);
    expect(await allStored({ metadata: { team: "a", env: "prod" } })).toEqual([tagged]);
    expect(await allStored({ model: BASE, metadata: { env: "prod" } })).toEqual([]);
  });

  it("answers 400 for a cursor it does not know, a limit out of range, or a metadata filter outside OpenAI's limits", async () => {
    await storeSome([{}]);
    const pairs = Object.fromEntries(Array.from({ length: 17 }, (_, k) => [`k${k}`, "v"]));
    const tooMany = await apiFailure(client.chat.completions.list({ metadata: pairs }));
    expect([tooMany.status, tooMany.param]).toEqual([400, "metadata"]);
    const longValue = await apiFailure(client.chat.completions.list({ metadata: { k: "v".repeat(513) } }));
    expect([longValue.status, longValue.param]).toEqual([400, "metadata.k"]);
    const unknown = await apiFailure(client.chat.completions.list({ after: "chatcmpl-nope" }));
    expect(unknown.status).toBe(400);
    expect(unknown.param).toBe("after");
    const limit = await apiFailure(client.chat.completions.list({ limit: 101 }));
    expect(limit.status).toBe(400);
    expect(limit.param).toBe("limit");
  });
});

describe("a stored completion", () => {
  async function storeOne(metadata: Record<string, string> = {}): Promise<string> {
    const answer = await client.chat.completions.create({
      model: BASE,
      messages: hello,
      max_tokens: 1,
      store: true,
      metadata,
    });
    return answer.id;
  }

  it("has its metadata replaced whole, or cleared with null", async () => {
    const id = await storeOne({ team: "a", env: "dev" });
    const updated = await client.chat.completions.update(id, { metadata: { reviewed: "yes" } });
    expect(metadataOf(updated)).toEqual({ reviewed: "yes" });
    expect(metadataOf(await client.chat.completions.retrieve(id))).toEqual({ reviewed: "yes" });
    expect(await allStored({ metadata: { team: "a" } })).toEqual([]);
    expect(await allStored({ metadata: { reviewed: "yes" } })).toEqual([id]);
    const cleared = await client.chat.completions.update(id, { metadata: null });
    expect(metadataOf(cleared)).toEqual({});
  });

  it("keeps its metadata when an update is refused", async () => {
    const id = await storeOne({ team: "a" });
    const error = await apiFailure(client.chat.completions.update(id, { metadata: { k: "v".repeat(513) } }));
    expect(error.status).toBe(400);
    expect(metadataOf(await client.chat.completions.retrieve(id))).toEqual({ team: "a" });
  });

  it("is deleted, after which it is not found", async () => {
    const id = await storeOne();
    expect(await client.chat.completions.delete(id)).toEqual({
      id,
      object: "chat.completion.deleted",
      deleted: true,
    });
    expect((await apiFailure(client.chat.completions.retrieve(id))).status).toBe(404);
    expect((await apiFailure(client.chat.completions.delete(id))).status).toBe(404);
    expect((await apiFailure(client.chat.completions.messages.list(id))).status).toBe(404);
  });

  it("belongs to its org: another org can neither read, change, list nor delete it", async () => {
    const id = await storeOne({ team: "a" });
    for (const call of [
      () => otherClient.chat.completions.retrieve(id),
      () => otherClient.chat.completions.update(id, { metadata: { team: "b" } }),
      () => otherClient.chat.completions.delete(id),
      () => otherClient.chat.completions.messages.list(id),
    ]) {
      expect((await apiFailure(call())).status).toBe(404);
    }
    expect((await otherClient.chat.completions.list()).data).toEqual([]);
    expect(metadataOf(await client.chat.completions.retrieve(id))).toEqual({ team: "a" });
  });

  it("lists its messages a page at a time, in either order", async () => {
    const messages = Array.from(
      { length: 5 },
      (_, k): OpenAI.ChatCompletionMessageParam => ({
        role: k % 2 === 0 ? "user" : "assistant",
        content: `turn ${k}`,
      }),
    );
    const answer = await client.chat.completions.create({
      model: BASE,
      messages,
      max_tokens: 1,
      store: true,
    });
    const contents: (string | null)[] = [];
    for await (const message of client.chat.completions.messages.list(answer.id, { limit: 2 })) {
      contents.push(message.content);
    }
    expect(contents).toEqual(messages.map((m) => m.content));
    const newest = await client.chat.completions.messages.list(answer.id, { limit: 2, order: "desc" });
    expect(newest.data.map((m) => m.id)).toEqual([`${answer.id}-4`, `${answer.id}-3`]);
    const unknown = await apiFailure(client.chat.completions.messages.list(answer.id, { after: "nope" }));
    expect(unknown.status).toBe(400);
  });
});

describe("retention", () => {
  it("deletes completions stored longer ago than the retention, and keeps them with retention 0", async () => {
    let now = Date.parse("2026-01-01T00:00:00Z");
    const clock = () => now;
    const day = 24 * 60 * 60_000;
    const clientOf = async (retention: StoredRetention) => {
      const app = h.appWith({ now: clock, storedRetention: retention });
      const server = await serveApp(app, 0, "127.0.0.1");
      const api = new OpenAI({ apiKey: h.keys.acme, baseURL: `${server.url}/v1`, maxRetries: 0 });
      return { api, close: () => server.close() };
    };
    const store = (api: OpenAI) =>
      api.chat.completions.create({ model: BASE, messages: hello, max_tokens: 1, store: true });

    const keeper = await clientOf(new StoredRetention(0, clock));
    const swept = await clientOf(StoredRetention.days(30, clock));
    try {
      const old = await store(keeper.api);
      now += 31 * day;
      const kept = await store(keeper.api);
      expect(await allStored()).toEqual([old.id, kept.id]);
      // The first store through a gateway with a 30-day retention sweeps what is older.
      now += 1000;
      const fresh = await store(swept.api);
      expect(await allStored()).toEqual([kept.id, fresh.id]);
    } finally {
      await keeper.close();
      await swept.close();
    }
  });
});
