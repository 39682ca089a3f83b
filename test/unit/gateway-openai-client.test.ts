// The official `openai` client against the gateway served over HTTP by @hono/node-server (in-process bus,
// scripted worker): what SDK users see for streaming and not, /v1/models, concurrency across adapters,
// every error path, and a client that aborts a stream.
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServedApp, serveApp } from "../../gateway/node.ts";
import { loadTokenizer } from "../../worker/engine/tokenizer.ts";
import { FAKE_REPLY_TOKENS, FakeWorker, fakeReplyText } from "../support/fake-worker.ts";
import { BASE, CONTEXT, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

let h: GatewayHarness;
let worker: FakeWorker;
let served: ServedApp;
let client: OpenAI;

beforeAll(async () => {
  h = await createGatewayHarness({ limits: { maxBodyBytes: 32 * 1024 } });
  worker = await FakeWorker.start(h.workerBus, { base: BASE });
  for (let i = 0; i < 4; i++) await h.addAdapter({ name: `a${i}` });
  served = await serveApp(h.app, 0, "127.0.0.1");
  client = new OpenAI({ apiKey: h.keys.acme, baseURL: `${served.url}/v1`, maxRetries: 0 });
});
afterAll(async () => {
  await served.close();
  await worker.stop();
  await h.close();
});

const messages = [{ role: "user" as const, content: "Say hello" }];

/**
 * Streams a request of `n` choices whose runs (marked by their max_tokens) send two chunks and then wait,
 * aborts the client once text arrived, and resolves with the request id.
 */
async function abortAfterFirstText(maxTokens: number, n: number): Promise<string> {
  worker.behaviour = (request) => (request.sampling.max_tokens === maxTokens ? { partial: 2 } : "reply");
  try {
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: BASE, messages, stream: true, max_tokens: maxTokens, n },
      { signal: controller.signal },
    );
    let id = "";
    for await (const chunk of stream) {
      id = chunk.id.replace("chatcmpl-", "");
      if (chunk.choices[0]?.delta.content) break;
    }
    controller.abort();
    return id;
  } finally {
    worker.behaviour = () => "reply";
  }
}

describe("the openai client", () => {
  it("lists models", async () => {
    const ids = [];
    for await (const model of client.models.list()) ids.push(model.id);
    expect(ids).toEqual([BASE, ...[0, 1, 2, 3].map((i) => `${BASE}:acme/a${i}`)]);
    expect((await client.models.retrieve(`${BASE}:acme/a1`)).owned_by).toBe("acme");
    // An id whose %XX escape is not UTF-8 (or not an escape) is the caller's error.
    for (const id of ["%ff", "%zz", "%"]) {
      await expect(client.models.retrieve(id)).rejects.toMatchObject({
        status: 400,
        message: expect.stringContaining("percent-escape"),
      });
    }
  });

  it("creates a chat completion", async () => {
    const completion = await client.chat.completions.create({ model: BASE, messages, max_tokens: 3 });
    expect(completion.choices[0]?.message.content).toBe(fakeReplyText(3));
    expect(completion.choices[0]?.finish_reason).toBe("length");
    expect(completion.usage?.completion_tokens).toBe(3);
  });

  it("streams a chat completion with usage", async () => {
    const stream = await client.chat.completions.create({
      model: `${BASE}:acme/a2`,
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = "";
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | null | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? "";
      finish = chunk.choices[0]?.finish_reason ?? finish;
      usage = chunk.usage ?? usage;
    }
    expect(text).toBe(fakeReplyText(100));
    expect(finish).toBe("stop");
    expect(usage?.completion_tokens).toBe(FAKE_REPLY_TOKENS);
  });

  it("uses the stream helper's final message", async () => {
    const runner = client.chat.completions.stream({ model: BASE, messages, max_tokens: 2 });
    const final = await runner.finalChatCompletion();
    expect(final.choices[0]?.message.content).toBe(fakeReplyText(2));
  });

  it("creates legacy completions, streaming and not", async () => {
    const completion = await client.completions.create({ model: BASE, prompt: "Hi", max_tokens: 4 });
    expect(completion.choices[0]?.text).toBe(fakeReplyText(4));
    const stream = await client.completions.create({ model: BASE, prompt: "Hi", stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.text ?? "";
    expect(text).toBe(fakeReplyText(100));
  });

  it("serves 20 concurrent requests over mixed adapters, each with its own adapter", async () => {
    const models = Array.from({ length: 20 }, (_, i) => (i % 5 === 4 ? BASE : `${BASE}:acme/a${i % 4}`));
    const results = await Promise.all(
      models.map(async (model, i) => {
        if (i % 2 === 0) {
          const r = await client.chat.completions.create({ model, messages, max_tokens: 1 + (i % 6) });
          return { model, id: r.id, text: r.choices[0]?.message.content, n: 1 + (i % 6) };
        }
        const stream = await client.chat.completions.create({
          model,
          messages,
          stream: true,
          max_tokens: 1 + (i % 6),
        });
        let text = "";
        let id = "";
        for await (const chunk of stream) {
          id = chunk.id;
          text += chunk.choices[0]?.delta.content ?? "";
        }
        return { model, id, text, n: 1 + (i % 6) };
      }),
    );
    for (const r of results) {
      expect(r.text).toBe(fakeReplyText(r.n));
      const sent = worker.received.find((q) => r.id.endsWith(q.id));
      expect(sent?.adapter?.name ?? BASE).toBe(r.model === BASE ? BASE : r.model.split(":")[1]);
    }
    expect(new Set(results.map((r) => r.id)).size).toBe(20);
  });

  it("raises the SDK's error classes with OpenAI's codes", async () => {
    const bad = new OpenAI({ apiKey: "lk_nope", baseURL: `${served.url}/v1`, maxRetries: 0 });
    await expect(bad.models.list()).rejects.toMatchObject({ status: 401, code: "invalid_api_key" });
    await expect(bad.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);

    const notFound = client.chat.completions.create({ model: `${BASE}:other/x`, messages });
    await expect(notFound).rejects.toBeInstanceOf(OpenAI.NotFoundError);
    await expect(
      client.chat.completions.create({ model: `${BASE}:acme/missing`, messages }),
    ).rejects.toMatchObject({
      status: 404,
      code: "model_not_found",
      param: "model",
    });

    for (const n of [0, 17]) {
      await expect(client.chat.completions.create({ model: BASE, messages, n })).rejects.toMatchObject({
        status: 400,
        param: "n",
      });
    }
    await expect(client.chat.completions.create({ model: BASE, messages: [] })).rejects.toBeInstanceOf(
      OpenAI.BadRequestError,
    );
    await expect(
      client.chat.completions.create({ model: BASE, messages, max_tokens: CONTEXT * 2 }),
    ).rejects.toMatchObject({ status: 400, code: "context_length_exceeded" });
    await expect(
      client.chat.completions.create({
        model: BASE,
        messages: [{ role: "user", content: "x".repeat(40_000) }],
      }),
    ).rejects.toMatchObject({ status: 413, code: "request_too_large" });
  });

  it("sees 503 with Retry-After when no worker for the base starts within the cold-start timeout", async () => {
    const { InProcessBroker } = await import("../../bus/in-process.ts");
    const idle = new InProcessBroker().connect();
    const lonely = await serveApp(
      h.appWith({ bus: idle, limits: { coldStartTimeoutMs: 100 } }),
      0,
      "127.0.0.1",
    );
    try {
      const c = new OpenAI({ apiKey: h.keys.acme, baseURL: `${lonely.url}/v1`, maxRetries: 0 });
      const error = await c.chat.completions.create({ model: BASE, messages }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OpenAI.InternalServerError);
      expect(error).toMatchObject({ status: 503, code: "no_worker" });
      expect((error as InstanceType<typeof OpenAI.APIError>).headers?.get("retry-after")).toBe("5");
    } finally {
      await lonely.close();
      await idle.close();
    }
  });

  it("raises a worker's failure before the first token with its HTTP status", async () => {
    worker.behaviour = (request) =>
      request.sampling.max_tokens === 41 ? { error: { code: "oom", message: "out of memory" } } : "reply";
    try {
      await expect(
        client.chat.completions.create({ model: BASE, messages, stream: true, max_tokens: 41 }),
      ).rejects.toMatchObject({ status: 502, code: "oom" });
    } finally {
      worker.behaviour = () => "reply";
    }
  });

  it("raises a worker's failure in the middle of a stream as an APIError after the text so far", async () => {
    worker.behaviour = (request) =>
      request.sampling.max_tokens === 43
        ? { error: { code: "oom", message: "out of memory" }, after: 2 }
        : "reply";
    try {
      const stream = await client.chat.completions.create({
        model: BASE,
        messages,
        stream: true,
        max_tokens: 43,
      });
      let text = "";
      const failure = await (async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
      })().catch((e: unknown) => e);
      expect(text).toBe(fakeReplyText(2));
      expect(failure).toBeInstanceOf(OpenAI.APIError);
      expect((failure as InstanceType<typeof OpenAI.APIError>).message).toContain("out of memory");
    } finally {
      worker.behaviour = () => "reply";
    }
  });

  it("cancels the worker's run when the client aborts a stream", async () => {
    const id = await abortAfterFirstText(42, 1);
    await worker.cancelled(id);
    expect(worker.cancels).toContain(id);
  });
});

describe("n choices", () => {
  const runsOf = (responseId: string) => {
    const id = responseId.replace(/^(chatcmpl|cmpl)-/, "");
    return worker.received.filter((q) => q.id === id || q.id.startsWith(`${id}-`));
  };

  it("runs each choice on its own with seed + index and answers them all, usage summed", async () => {
    const completion = await client.chat.completions.create({
      model: `${BASE}:acme/a1`,
      messages,
      max_tokens: 4,
      n: 3,
      seed: 7,
    });
    expect(completion.choices.map((c) => [c.index, c.message.content, c.finish_reason])).toEqual([
      [0, fakeReplyText(4), "length"],
      [1, fakeReplyText(4), "length"],
      [2, fakeReplyText(4), "length"],
    ]);
    const runs = runsOf(completion.id);
    const id = completion.id.replace("chatcmpl-", "");
    expect(runs.map((q) => [q.id, q.sampling.seed, q.adapter?.name])).toEqual([
      [id, 7, "acme/a1"],
      [`${id}-1`, 8, "acme/a1"],
      [`${id}-2`, 9, "acme/a1"],
    ]);
    const prompt = runs[0]!.prompt_token_ids.length;
    expect(completion.usage).toMatchObject({
      prompt_tokens: 3 * prompt,
      completion_tokens: 12,
      total_tokens: 3 * prompt + 12,
    });
  });

  it("streams the choices interleaved, each with its role, text and finish, then the summed usage", async () => {
    const stream = await client.chat.completions.create({
      model: BASE,
      messages,
      n: 2,
      max_tokens: 5,
      stream: true,
      stream_options: { include_usage: true },
    });
    const texts = ["", ""];
    const roles: number[] = [];
    const finishes: (string | null)[] = [null, null];
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      usage = chunk.usage ?? usage;
      for (const choice of chunk.choices) {
        expect(finishes[choice.index]).toBeNull();
        if (choice.delta.role) roles.push(choice.index);
        texts[choice.index] += choice.delta.content ?? "";
        finishes[choice.index] = choice.finish_reason ?? null;
      }
    }
    expect(roles).toEqual([0, 1]);
    expect(texts).toEqual([fakeReplyText(5), fakeReplyText(5)]);
    expect(finishes).toEqual(["length", "length"]);
    expect(usage?.completion_tokens).toBe(10);
  });

  it("answers legacy completions with n choices, streaming and not", async () => {
    const completion = await client.completions.create({ model: BASE, prompt: "Hi", max_tokens: 3, n: 2 });
    expect(completion.choices.map((c) => [c.index, c.text])).toEqual([
      [0, fakeReplyText(3)],
      [1, fakeReplyText(3)],
    ]);
    const stream = await client.completions.create({
      model: BASE,
      prompt: "Hi",
      max_tokens: 2,
      n: 3,
      stream: true,
    });
    const texts = ["", "", ""];
    for await (const chunk of stream) for (const c of chunk.choices) texts[c.index] += c.text;
    expect(texts).toEqual(Array(3).fill(fakeReplyText(2)));
    await expect(
      client.completions.create({ model: BASE, prompt: "Hi", max_tokens: 2, n: 2, best_of: 3 }),
    ).rejects.toMatchObject({ status: 400, param: "best_of" });
  });

  it("answers several prompts' n choices, answer i being choice i % n of prompt ⌊i / n⌋, each run with its prompt and seed", async () => {
    const sent = worker.received.length;
    const prompts = ["Hi", "A longer prompt than the first"];
    const completion = await client.completions.create({ model: BASE, prompt: prompts, n: 2, seed: 7 });
    const runs = worker.received.slice(sent);
    expect(runs).toHaveLength(4);
    const id = completion.id.replace("cmpl-", "");
    const byId = new Map(runs.map((r) => [r.id, r]));
    const tokenizer = loadTokenizer(h.modelDir);
    for (let i = 0; i < 4; i++) {
      const run = byId.get(i === 0 ? id : `${id}-${i}`)!;
      const ids = tokenizer.encode(prompts[Math.floor(i / 2)]!, { addSpecialTokens: true });
      expect(run.prompt_token_ids).toEqual(ids);
      expect(run.sampling.seed).toBe(7 + (i % 2));
      // max_tokens left out: legacy completions' 16.
      expect(run.sampling.max_tokens).toBe(16);
      expect(completion.choices[i]).toMatchObject({ index: i, text: fakeReplyText(run.sampling.max_tokens) });
    }
    expect(completion.usage?.prompt_tokens).toBe(runs.reduce((n, r) => n + r.prompt_token_ids.length, 0));

    const stream = await client.completions.create({
      model: BASE,
      prompt: [[1, 2], [3]],
      max_tokens: 2,
      stream: true,
    });
    const texts = ["", ""];
    for await (const chunk of stream) for (const c of chunk.choices) texts[c.index] += c.text;
    expect(texts).toEqual([fakeReplyText(2), fakeReplyText(2)]);
  });

  it("cancels every choice's run when the client aborts a stream", async () => {
    const id = await abortAfterFirstText(45, 2);
    await worker.cancelled(id);
    await worker.cancelled(`${id}-1`);
    expect(worker.cancels).toEqual(expect.arrayContaining([id, `${id}-1`]));
  });

  it("fails the whole request when one choice fails, and cancels the others", async () => {
    worker.behaviour = (request) =>
      request.sampling.max_tokens !== 44
        ? "reply"
        : request.id.endsWith("-1")
          ? { error: { code: "oom", message: "out of memory" } }
          : "hang";
    try {
      const sent = worker.received.length;
      await expect(
        client.chat.completions.create({ model: BASE, messages, max_tokens: 44, n: 3 }),
      ).rejects.toMatchObject({ status: 502, code: "oom" });
      const [first, , third] = worker.received.slice(sent).map((q) => q.id);
      await worker.cancelled(first!);
      await worker.cancelled(third!);
      expect(worker.cancels).toEqual(expect.arrayContaining([first, third]));
    } finally {
      worker.behaviour = () => "reply";
    }
  });
});
