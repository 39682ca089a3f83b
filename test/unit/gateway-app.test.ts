// The gateway app through HTTP requests (app.request), on PGlite and the in-process bus with a scripted
// worker: the OpenAI shapes of answers and errors, auth, model resolution, limits and cancels.

import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from "vitest";
import { InProcessBroker } from "../../bus/in-process.ts";
import { openDb } from "../../db/open.ts";
import { createApiKey, ensureOrg } from "../../gateway/api-keys.ts";
import { loadBaseModel } from "../../gateway/base-loader.ts";
import { BaseCatalog } from "../../gateway/bases.ts";
import { claimKey } from "../../gateway/idempotency-keys.ts";
import { OrgCompileTime } from "../../gateway/org-compile-time.ts";
import { setPriorityTier } from "../../gateway/orgs.ts";
import {
  ChatCompletion,
  ChatCompletionChunk,
  Completion,
  DetokenizeResponse,
  ErrorBody,
  ModelCard,
  ModelList,
  TokenizeResponse,
} from "../../schema/api.ts";
import { idempotencyKeys } from "../../schema/db.ts";
import type { InferenceRequest } from "../../schema/wire.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { loadTokenizer } from "../../worker/engine/tokenizer.ts";
import { FAKE_REPLY_TOKENS, FakeWorker, fakeReplyText } from "../support/fake-worker.ts";
import { addFimTokens } from "../support/fim-model.ts";
import { BASE, CONTEXT, createGatewayHarness, type GatewayHarness } from "../support/gateway-harness.ts";

let h: GatewayHarness;
let worker: FakeWorker;

beforeAll(async () => {
  h = await createGatewayHarness({ limits: { maxBodyBytes: 64 * 1024 } });
  worker = await FakeWorker.start(h.workerBus, { base: BASE });
  await h.addAdapter({ name: "support-v1", alias: "support", trafficWeight: 100 });
  await h.addAdapter({ name: "support-v2", alias: "support", trafficWeight: 0 });
  await h.addAdapter({ name: "theirs", orgId: "other" });
  await h.addAdapter({ name: "broken", status: "failed", sha256: null, bytes: null });
});
afterAll(async () => {
  await worker.stop();
  await h.close();
});
beforeEach(() => {
  worker.behaviour = () => "reply";
});

function post(path: string, body: unknown, key = h.keys.acme, init: RequestInit = {}) {
  return h.app.request(path, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init,
  });
}

const chat = (body: Record<string, unknown> = {}, key?: string) =>
  post(
    "/v1/chat/completions",
    { model: BASE, messages: [{ role: "user", content: "Hi there" }], ...body },
    key,
  );

async function expectError(res: Response, status: number, code: string | null, param?: string | null) {
  expect(res.status).toBe(status);
  expect(res.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
  const body = ErrorBody.parse(await res.json());
  expect(body.error.code).toBe(code);
  if (param !== undefined) expect(body.error.param).toBe(param);
  return body.error;
}

/** The `data:` payloads of an SSE body, [DONE] included. */
async function events(res: Response): Promise<string[]> {
  const text = await res.text();
  expect(text.endsWith("\n\n")).toBe(true);
  return text
    .split("\n\n")
    .filter((frame) => frame !== "")
    .map((frame) => {
      expect(frame.startsWith("data: ")).toBe(true);
      return frame.slice("data: ".length);
    });
}

const lastRequest = (): InferenceRequest => worker.received.at(-1)!;

describe("chat completions", () => {
  it("answers a non-streaming chat with the worker's text, finish_reason and usage", async () => {
    const res = await chat({ max_tokens: 4 });
    expect(res.status).toBe(200);
    const requestId = res.headers.get("x-request-id");
    const body = ChatCompletion.parse(await res.json());
    expect(body).toMatchObject({
      id: `chatcmpl-${requestId}`,
      object: "chat.completion",
      model: BASE,
      choices: [
        { index: 0, message: { role: "assistant", content: fakeReplyText(4) }, finish_reason: "length" },
      ],
      usage: { completion_tokens: 4 },
    });
    const sent = lastRequest();
    expect(sent.id).toBe(requestId);
    expect(body.usage.prompt_tokens).toBe(sent.prompt_token_ids.length);
    expect(body.usage.total_tokens).toBe(body.usage.prompt_tokens + 4);
    // This worker's Final says nothing of a prefix cache: none of the prompt was cached.
    expect(body.usage.prompt_tokens_details).toEqual({ cached_tokens: 0 });
    expect(sent).toMatchObject({ org: "acme", base: BASE, adapter: null });
  });

  it("tokenizes the conversation through the base's chat template", async () => {
    await chat({
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hi" },
      ],
    });
    const ids = lastRequest().prompt_token_ids;
    // The template starts with bos, writes a header per turn and ends with the assistant's header.
    expect(ids[0]).toBe(504);
    expect(ids.filter((id) => id === 508)).toHaveLength(2);
    expect(ids.length).toBeGreaterThan(6);
  });

  it("continues the final assistant message (vLLM's continue_final_message), or leaves the generation prompt out", async () => {
    const tokenizer = loadTokenizer(h.modelDir);
    const prompt = () => tokenizer.decode(lastRequest().prompt_token_ids);
    const question = { role: "user", content: "Give me JSON" };
    // Llama 3's template trims each message: the prompt ends at the trimmed prefill, with no end of turn.
    const prefill = { role: "assistant", content: '{"answer": ' };
    expect((await chat({ messages: [question, prefill], continue_final_message: true })).status).toBe(200);
    expect(prompt().endsWith('<|start_header_id|>assistant<|end_header_id|>\n\n{"answer":')).toBe(true);
    expect((await chat({ messages: [question], add_generation_prompt: false })).status).toBe(200);
    expect(prompt().endsWith("Give me JSON<|eot_id|>")).toBe(true);
    await chat({ messages: [question] });
    expect(prompt().endsWith("<|start_header_id|>assistant<|end_header_id|>\n\n")).toBe(true);
    // Counted the same way by /tokenize.
    const counted = await post("/tokenize", {
      model: BASE,
      messages: [question, prefill],
      continue_final_message: true,
    });
    await chat({ messages: [question, prefill], continue_final_message: true });
    expect(((await counted.json()) as { tokens: number[] }).tokens).toEqual(lastRequest().prompt_token_ids);

    const before = worker.received.length;
    await expectError(
      await chat({
        messages: [question, prefill],
        continue_final_message: true,
        add_generation_prompt: true,
      }),
      400,
      null,
      "continue_final_message",
    );
    await expectError(
      await chat({ messages: [question], continue_final_message: true }),
      400,
      null,
      "continue_final_message",
    );
    await expectError(
      await chat({
        messages: [question, prefill],
        continue_final_message: true,
        response_format: { type: "json_object" },
      }),
      400,
      null,
      "continue_final_message",
    );
    await expectError(
      await chat({
        messages: [question, { role: "assistant", content: "  " }],
        continue_final_message: true,
      }),
      400,
      null,
      "messages.1.content",
    );
    expect(worker.received.length).toBe(before);
  });

  it("maps the sampling parameters onto the wire request", async () => {
    await chat({
      max_completion_tokens: 9,
      temperature: 0.5,
      top_p: 0.9,
      seed: 42,
      stop: "\n",
      presence_penalty: 0.5,
      frequency_penalty: -0.5,
      logprobs: true,
      top_logprobs: 3,
      logit_bias: { "65": 100, "7": -2.5 },
      user: "someone",
    });
    expect(lastRequest().sampling).toMatchObject({
      max_tokens: 9,
      temperature: 0.5,
      top_p: 0.9,
      seed: 42,
      stop: ["\n"],
      presence_penalty: 0.5,
      frequency_penalty: -0.5,
      logprobs: true,
      top_logprobs: 3,
      logit_bias: [
        [7, -2.5],
        [65, 100],
      ],
    });
    await chat({ logit_bias: {} });
    expect(lastRequest().sampling.logit_bias).toBeUndefined();
  });

  it("fills what a request leaves out from the base's generation_config.json; what it gives wins", async () => {
    // The tiny model's generation_config.json states temperature 0.6 and top_p 0.9, nothing else.
    await chat();
    expect(lastRequest().sampling).toMatchObject({
      temperature: 0.6,
      top_p: 0.9,
      top_k: 0,
      min_p: 0,
      repetition_penalty: 1,
    });
    // vLLM's parameters beyond OpenAI's, as its clients send them; -1 is its top_k "off".
    await chat({ temperature: 1, top_p: 1, top_k: -1, min_p: 0.05, repetition_penalty: 1.1 });
    expect(lastRequest().sampling).toMatchObject({
      temperature: 1,
      top_p: 1,
      top_k: 0,
      min_p: 0.05,
      repetition_penalty: 1.1,
    });
    // A base that states them all (max_new_tokens as chat's default answer length, within the context).
    const tiny = h.deps.bases.get(BASE)!;
    const samplingDefaults = { top_k: 20, min_p: 0.02, repetition_penalty: 1.05, max_tokens: 7 };
    const app = h.appWith({ bases: new BaseCatalog([{ ...tiny, samplingDefaults }]) });
    const postTo = (path: string, body: Record<string, unknown>) =>
      app.request(path, {
        method: "POST",
        headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
        body: JSON.stringify({ model: BASE, ...body }),
      });
    const request = (body: Record<string, unknown>) =>
      postTo("/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }], ...body });
    expect((await request({})).status).toBe(200);
    expect(lastRequest().sampling).toMatchObject({
      max_tokens: 7,
      temperature: 1,
      top_p: 1,
      top_k: 20,
      min_p: 0.02,
      repetition_penalty: 1.05,
    });
    // Legacy completions default to 16 tokens, as OpenAI and vLLM: the file's max_new_tokens is chat's.
    expect((await postTo("/v1/completions", { prompt: "Hi" })).status).toBe(200);
    expect(lastRequest().sampling).toMatchObject({ max_tokens: 16, top_k: 20 });
    expect((await request({ max_tokens: 3, top_k: 0, min_p: null, repetition_penalty: 1 })).status).toBe(200);
    expect(lastRequest().sampling).toMatchObject({
      max_tokens: 3,
      top_k: 0,
      min_p: 0.02,
      repetition_penalty: 1,
    });
    const long = { ...tiny, samplingDefaults: { max_tokens: 100_000 } };
    await h.appWith({ bases: new BaseCatalog([long]) }).request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "Hi" }] }),
    });
    expect(lastRequest().sampling.max_tokens).toBe(CONTEXT - lastRequest().prompt_token_ids.length);
    // A gateway told to ignore the file (--sampling-defaults openai) samples at OpenAI's defaults.
    const openai = await loadBaseModel(h.db, { name: BASE, dir: h.modelDir }, { samplingDefaults: "openai" });
    expect(openai.samplingDefaults).toEqual({});
    await h.appWith({ bases: new BaseCatalog([openai]) }).request("/v1/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({ model: BASE, prompt: "Hi" }),
    });
    expect(lastRequest().sampling).toMatchObject({ temperature: 1, top_p: 1 });
  });

  it("takes vLLM's min_tokens, ignore_eos and stop_token_ids, and refuses what cannot be honoured", async () => {
    const eos = loadTokenizer(h.modelDir).eosTokenIds;
    await chat();
    expect(lastRequest().sampling).toMatchObject({ min_tokens: 0, ignore_eos: false, stop_token_ids: eos });
    await chat({ max_tokens: 8, min_tokens: 5, stop_token_ids: [65, 66, 65] });
    expect(lastRequest().sampling).toMatchObject({ min_tokens: 5, stop_token_ids: [...eos, 65, 66] });
    await chat({ ignore_eos: true, stop_token_ids: [65] });
    expect(lastRequest().sampling).toMatchObject({ ignore_eos: true, stop_token_ids: [65] });
    const before = worker.received.length;
    await expectError(await chat({ max_tokens: 4, min_tokens: 5 }), 400, null, "min_tokens");
    await expectError(await chat({ stop_token_ids: [1, 99999] }), 400, null, "stop_token_ids");
    await expectError(await chat({ stop_token_ids: [-1] }), 400, null, "stop_token_ids.0");
    expect(worker.received.length).toBe(before);
  });

  it("takes vLLM's allowed_token_ids, bad_words, include_stop_str_in_output and truncate_prompt_tokens", async () => {
    await chat({ allowed_token_ids: [7, 9, 7], include_stop_str_in_output: true, stop: ["."] });
    expect(lastRequest().sampling).toMatchObject({
      allowed_token_ids: [7, 9],
      include_stop_str_in_output: true,
    });
    await chat();
    expect(lastRequest().sampling.allowed_token_ids).toBeUndefined();
    expect(lastRequest().sampling.bad_words_ids).toBeUndefined();
    await chat({ bad_words: ["hello", " world"] });
    const tokenizer = loadTokenizer(h.modelDir);
    const encode = (text: string) => tokenizer.encode(text, { addSpecialTokens: false });
    // Each word at the start of a text, and after a space where that is other tokens of the same count.
    const expected = ["hello", " hello", "world", " world"]
      .map(encode)
      .filter(
        (ids, i, all) => i % 2 === 0 || (ids[0] !== all[i - 1]![0] && ids.length === all[i - 1]!.length),
      );
    expect(lastRequest().sampling.bad_words_ids).toEqual(expected);
    const ids = Array.from({ length: 40 }, (_, i) => i + 1);
    await post("/v1/completions", { model: BASE, prompt: ids, max_tokens: 2, truncate_prompt_tokens: 5 });
    expect(lastRequest().prompt_token_ids).toEqual(ids.slice(-5));
    await chat({ max_tokens: 8 });
    const whole = lastRequest().prompt_token_ids;
    await chat({ max_tokens: 8, truncate_prompt_tokens: 3 });
    expect(lastRequest().prompt_token_ids).toEqual(whole.slice(-3));
    // -1: as much of the prompt as leaves room for max_tokens.
    const long = Array.from({ length: CONTEXT + 50 }, (_, i) => (i % 400) + 1);
    await post("/v1/completions", { model: BASE, prompt: long, max_tokens: 10, truncate_prompt_tokens: -1 });
    expect(lastRequest().prompt_token_ids).toEqual(long.slice(-(CONTEXT - 10)));
    const before = worker.received.length;
    await expectError(await chat({ allowed_token_ids: [99999] }), 400, null, "allowed_token_ids");
    await expectError(await chat({ allowed_token_ids: [] }), 400, null, "allowed_token_ids");
    await expectError(await chat({ truncate_prompt_tokens: 0 }), 400, null, "truncate_prompt_tokens");
    await expectError(await chat({ bad_words: ["  "] }), 400, null, "bad_words.0");
    await expectError(await chat({ stream_options: { include_usage: true } }), 400, null, "stream_options");
    // Each word is tokenized on the event loop: megabytes of "words" are refused before any of it is.
    const longWord = await expectError(
      await chat({ bad_words: ["x", "ab".repeat(65)] }),
      400,
      null,
      "bad_words.1",
    );
    expect(longWord.message).toContain("at most 128 characters");
    const many = Array.from({ length: 65 }, (_, i) => `${i}`.padEnd(128, "w"));
    const together = await expectError(await chat({ bad_words: many }), 400, null, "bad_words");
    expect(together.message).toContain("at most 8192 characters together");
    expect(worker.received.length).toBe(before);
  });

  it("defaults max_tokens to the room left in the context", async () => {
    await chat();
    const sent = lastRequest();
    expect(sent.sampling.max_tokens).toBe(CONTEXT - sent.prompt_token_ids.length);
  });

  it("returns chat logprobs per token when asked", async () => {
    const body = ChatCompletion.parse(
      await (await chat({ max_tokens: 2, logprobs: true, top_logprobs: 2 })).json(),
    );
    const content = body.choices[0]?.logprobs?.content;
    expect(content).toHaveLength(2);
    expect(content?.[0]).toMatchObject({ token: "Hello", logprob: -0.25, bytes: [72, 101, 108, 108, 111] });
    expect(content?.[0]?.top_logprobs).toHaveLength(2);
  });

  it("says refusal: null beside the content's logprobs, streamed or not, as OpenAI's logprobs object has it", async () => {
    const answer = (await (await chat({ max_tokens: 2, logprobs: true })).json()) as ChatCompletion;
    expect(Object.keys(answer.choices[0]!.logprobs!)).toEqual(["content", "refusal"]);
    expect(answer.choices[0]!.logprobs!.refusal).toBeNull();
    const chunks = (await events(await chat({ max_tokens: 2, logprobs: true, stream: true })))
      .filter((data) => data !== "[DONE]")
      .map((data) => JSON.parse(data) as ChatCompletionChunk);
    const withLogprobs = chunks.flatMap((chunk) => chunk.choices).filter((choice) => choice.logprobs);
    expect(withLogprobs).toHaveLength(2);
    for (const choice of withLogprobs)
      expect(choice.logprobs).toEqual({ content: expect.any(Array), refusal: null });
  });

  it("streams the role chunk, content deltas, the finish chunk, the usage chunk and [DONE]", async () => {
    const res = await chat({ stream: true, stream_options: { include_usage: true }, max_tokens: 3 });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const requestId = res.headers.get("x-request-id");
    const data = await events(res);
    expect(data.at(-1)).toBe("[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    for (const c of chunks) {
      expect(c).toMatchObject({ id: `chatcmpl-${requestId}`, object: "chat.completion.chunk", model: BASE });
    }
    expect(chunks[0].choices[0].delta).toEqual({ role: "assistant", content: "" });
    const deltas = chunks.slice(1, -2).map((c) => c.choices[0].delta.content);
    expect(deltas.join("")).toBe(fakeReplyText(3));
    expect(chunks.at(-2).choices[0]).toMatchObject({ delta: {}, finish_reason: "length" });
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage: { completion_tokens: 3 } });
  });

  it("leaves usage out of a stream that did not ask for it", async () => {
    const data = await events(await chat({ stream: true }));
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    expect(chunks.every((c) => !("usage" in c))).toBe(true);
    expect(chunks.at(-1).choices[0].finish_reason).toBe("stop");
    expect(chunks).toHaveLength(FAKE_REPLY_TOKENS + 2);
  });

  it("serves service_tier flex as a batch line is and priority as priority, says the tier served when asked, and refuses an unknown one", async () => {
    const flex = await chat({ max_tokens: 2, service_tier: "flex" });
    expect(ChatCompletion.parse(await flex.json()).service_tier).toBe("flex");
    // Marked for the worker's queue order and the meter's batch price.
    expect(lastRequest().batch).toBe(true);
    const chunks = (await events(await chat({ stream: true, service_tier: "flex" })))
      .slice(0, -1)
      .map((d) => JSON.parse(d));
    expect(chunks.every((chunk) => chunk.service_tier === "flex")).toBe(true);
    expect(lastRequest().batch).toBe(true);
    for (const tier of ["default", "auto"]) {
      const body = ChatCompletion.parse(await (await chat({ max_tokens: 1, service_tier: tier })).json());
      expect(body.service_tier).toBe("default");
      expect(lastRequest().batch).toBeUndefined();
      expect(lastRequest().priority).toBeUndefined();
    }
    // Marked for the worker's queue order and the meter's priority price.
    const priority = await chat({ max_tokens: 1, service_tier: "priority" });
    expect(ChatCompletion.parse(await priority.json()).service_tier).toBe("priority");
    expect(lastRequest()).toMatchObject({ priority: true });
    expect(lastRequest().batch).toBeUndefined();
    expect("service_tier" in ((await (await chat({ max_tokens: 1 })).json()) as object)).toBe(false);
    const before = worker.received.length;
    await expectError(await chat({ service_tier: "scale" }), 400, null, "service_tier");
    const text = await post("/v1/completions", {
      model: BASE,
      prompt: "Hi",
      max_tokens: 1,
      service_tier: "flex",
    });
    expect(Completion.parse(await text.json()).service_tier).toBe("flex");
    expect(worker.received.length).toBe(before + 1);
    expect(lastRequest().batch).toBe(true);
  });

  it("takes the OpenAI fields that change nothing in an answer without effect: the same run as without them", async () => {
    const plain = await chat({ max_tokens: 2, seed: 5 });
    expect(plain.status).toBe(200);
    const without = lastRequest();
    const withFields = await chat({
      max_tokens: 2,
      seed: 5,
      user: "u-1",
      safety_identifier: "hash-1",
      metadata: { team: "a" },
      store: true,
      prompt_cache_key: "k",
      prediction: { type: "content", content: "Hello there" },
    });
    expect(withFields.status).toBe(200);
    // What the worker is asked to run: the same prompt, sampling and routing (ids, inbox and clock aside).
    const { base, adapter, prompt_token_ids, sampling } = lastRequest();
    expect({ base, adapter, prompt_token_ids, sampling }).toEqual({
      base: without.base,
      adapter: without.adapter,
      prompt_token_ids: without.prompt_token_ids,
      sampling: without.sampling,
    });
    expect(lastRequest().priority).toBe(without.priority);
    expect(lastRequest().batch).toBe(without.batch);
  });

  it("serves priority at the standard tier, and says so, to an org the operator withheld it from", async () => {
    await ensureOrg(h.db, "no-priority");
    const key = (await createApiKey(h.db, { orgId: "no-priority", name: "test" })).key;
    expect(await setPriorityTier(h.db, "no-priority", false)).toMatchObject({ priority_tier: false });
    for (const stream of [false, true]) {
      const res = await chat({ max_tokens: 1, service_tier: "priority", stream }, key);
      const tiers = stream
        ? (await events(res)).slice(0, -1).map((d) => JSON.parse(d).service_tier)
        : [ChatCompletion.parse(await res.json()).service_tier];
      expect(new Set(tiers)).toEqual(new Set(["default"]));
      expect(lastRequest().priority).toBeUndefined();
      expect(lastRequest().org).toBe("no-priority");
    }
    // Another org's priority request is unaffected.
    await chat({ max_tokens: 1, service_tier: "priority" });
    expect(lastRequest()).toMatchObject({ priority: true, org: "acme" });
  });
});

describe("completions", () => {
  it("answers a text prompt with a text_completion and usage", async () => {
    const res = await post("/v1/completions", { model: BASE, prompt: "Once upon", max_tokens: 5 });
    const body = Completion.parse(await res.json());
    expect(body).toMatchObject({
      id: `cmpl-${res.headers.get("x-request-id")}`,
      object: "text_completion",
      choices: [{ index: 0, text: fakeReplyText(5), finish_reason: "length", logprobs: null }],
      usage: { completion_tokens: 5 },
    });
    expect(lastRequest().prompt_token_ids[0]).toBe(504);
  });

  it("takes a prompt of token ids as it is", async () => {
    await post("/v1/completions", { model: BASE, prompt: [1, 2, 3], max_tokens: 1 });
    expect(lastRequest().prompt_token_ids).toEqual([1, 2, 3]);
  });

  it("returns legacy logprobs as parallel arrays", async () => {
    const body = Completion.parse(
      await (await post("/v1/completions", { model: BASE, prompt: "x", max_tokens: 2, logprobs: 2 })).json(),
    );
    expect(body.choices[0]?.logprobs).toEqual({
      tokens: ["Hello", " from"],
      token_logprobs: [-0.25, -0.25],
      top_logprobs: [
        { Hello: -0.25, " from": -1.25 },
        { " from": -0.25, " a": -1.25 },
      ],
      text_offset: [0, 5],
    });
  });

  it("streams text chunks, the finish chunk, usage and [DONE]", async () => {
    const res = await post("/v1/completions", {
      model: BASE,
      prompt: "x",
      stream: true,
      stream_options: { include_usage: true },
    });
    const data = await events(res);
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    expect(
      chunks
        .slice(0, -2)
        .map((c) => c.choices[0].text)
        .join(""),
    ).toBe(fakeReplyText(100));
    expect(chunks.at(-2).choices[0].finish_reason).toBe("stop");
    expect(chunks.at(-1).usage.completion_tokens).toBe(FAKE_REPLY_TOKENS);
  });

  it("refuses more than 64 prompts × n, max_tokens 0 without echo, prompt_logprobs in a stream, best_of and token ids outside the vocabulary", async () => {
    await expectError(
      await post("/v1/completions", { model: BASE, prompt: Array(33).fill("a"), n: 2 }),
      400,
      null,
      "prompt",
    );
    // One prompt: n alone asks for too many.
    await expectError(await post("/v1/completions", { model: BASE, prompt: "a", n: 65 }), 400, null, "n");
    const notAPrompt = await expectError(
      await post("/v1/completions", { model: BASE, prompt: [true] }),
      400,
      null,
      "prompt",
    );
    expect(notAPrompt.message).toContain("a list of strings");
    await expectError(
      await post("/v1/completions", { model: BASE, prompt: ["a", [1, 99999]] }),
      400,
      null,
      "prompt",
    );
    await expectError(
      await post("/v1/completions", { model: BASE, prompt: "a", max_tokens: 0 }),
      400,
      null,
      "max_tokens",
    );
    for (const path of ["/v1/completions", "/v1/chat/completions"]) {
      const input =
        path === "/v1/completions" ? { prompt: "a" } : { messages: [{ role: "user", content: "a" }] };
      await expectError(
        await post(path, { model: BASE, ...input, stream: true, prompt_logprobs: 1 }),
        400,
        null,
        "prompt_logprobs",
      );
      await expectError(
        await post(path, { model: BASE, ...input, prompt_logprobs: 21 }),
        400,
        null,
        "prompt_logprobs",
      );
    }
    await expectError(
      await post("/v1/completions", { model: BASE, prompt: "a", best_of: 2 }),
      400,
      null,
      "best_of",
    );
    // Chat as well: vLLM takes best_of there too, and Luminet cannot drop runs it generated.
    await expectError(await chat({ best_of: 3, n: 2 }), 400, null, "best_of");
    expect((await chat({ best_of: 2, n: 2 })).status).toBe(200);
    await expectError(
      await post("/v1/completions", { model: BASE, prompt: [1, 99999] }),
      400,
      null,
      "prompt",
    );
    await expectError(await post("/v1/completions", { model: BASE, prompt: [] }), 400, null, "prompt");
  });
});

describe("completions with a suffix (fill in the middle)", () => {
  it("writes a code model's FIM prompt, and refuses a base without FIM tokens, echo, or a prompt of ids", async () => {
    const coderDir = mkdtempSync(join(tmpdir(), "luminet-coder-"));
    try {
      initTinyModel(coderDir, { shape: "tiny", adapters: 0, rank: 4, seed: 7 });
      const fim = addFimTokens(coderDir);
      const coder = await loadBaseModel(h.db, { name: BASE, dir: coderDir });
      const app = h.appWith({ bases: new BaseCatalog([coder]) });
      const complete = (body: Record<string, unknown>) =>
        app.request("/v1/completions", {
          method: "POST",
          headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
          body: JSON.stringify({ model: BASE, max_tokens: 3, ...body }),
        });
      const res = await complete({ prompt: "def add(a, b):\n    return ", suffix: "\n\nprint(add(1, 2))" });
      expect(res.status).toBe(200);
      const encode = (text: string) => coder.tokenizer.encode(text, { addSpecialTokens: false });
      expect(lastRequest().prompt_token_ids).toEqual([
        coder.tokenizer.bosTokenId,
        fim.prefix,
        ...encode("def add(a, b):\n    return "),
        fim.suffix,
        ...encode("\n\nprint(add(1, 2))"),
        fim.middle,
      ]);
      await expectError(await complete({ prompt: "x", suffix: "y", echo: true }), 400, null, "echo");
      await expectError(await complete({ prompt: [1, 2], suffix: "y" }), 400, null, "prompt");
    } finally {
      rmSync(coderDir, { recursive: true, force: true });
    }
    const plain = await expectError(
      await post("/v1/completions", { model: BASE, prompt: "x", suffix: "y" }),
      400,
      null,
      "suffix",
    );
    expect(plain.message).toContain("has no fill-in-the-middle tokens");
  });
});

describe("adapters in model ids", () => {
  it("runs the named adapter of the caller's org", async () => {
    const res = await chat({ model: `${BASE}:acme/support-v2` });
    expect(res.status).toBe(200);
    expect(ChatCompletion.parse(await res.json()).model).toBe(`${BASE}:acme/support-v2`);
    expect(lastRequest().adapter).toMatchObject({
      name: "acme/support-v2",
      rank: 4,
      blob_key: "adapters/support-v2-2",
    });
  });

  it("resolves an alias to a version with traffic weight and answers with that version's model id", async () => {
    const version = `${BASE}:acme/support-v1`;
    for (let i = 0; i < 5; i++) {
      const res = await chat({ model: `${BASE}:acme/support` });
      expect(res.status).toBe(200);
      expect(lastRequest().adapter?.name).toBe("acme/support-v1");
      expect(ChatCompletion.parse(await res.json()).model).toBe(version);
    }
    const streamed = await events(await chat({ model: `${BASE}:acme/support`, stream: true }));
    for (const data of streamed.slice(0, -1))
      expect(ChatCompletionChunk.parse(JSON.parse(data)).model).toBe(version);
    const completion = await post("/v1/completions", { model: `${BASE}:acme/support`, prompt: "Hi" });
    expect(Completion.parse(await completion.json()).model).toBe(version);
    const response = await post("/v1/responses", {
      model: `${BASE}:acme/support`,
      input: "Hi",
      store: false,
    });
    expect(((await response.json()) as { model: string }).model).toBe(version);
  });

  it("answers 404 model_not_found for another org's adapter, an unknown one, a failed one and an unknown base", async () => {
    const theirs = await expectError(
      await chat({ model: `${BASE}:other/theirs` }),
      404,
      "model_not_found",
      "model",
    );
    const unknown = await expectError(await chat({ model: `${BASE}:acme/nope` }), 404, "model_not_found");
    // Same wording either way: the answer does not reveal that another org's adapter exists.
    expect(theirs.message.replace("other/theirs", "X")).toBe(unknown.message.replace("acme/nope", "X"));
    await expectError(await chat({ model: `${BASE}:acme/broken` }), 404, "model_not_found");
    await expectError(await chat({ model: "no-such-base" }), 404, "model_not_found");
    await expectError(await chat({ model: "no-such-base:acme/support" }), 404, "model_not_found");
  });

  it("lets the owner run its adapter and refuses everyone else", async () => {
    expect((await chat({ model: `${BASE}:other/theirs` }, h.keys.other)).status).toBe(200);
    await expectError(await chat({ model: `${BASE}:other/theirs` }, h.keys.acme), 404, "model_not_found");
  });
});

describe("/tokenize and /detokenize", () => {
  const messages = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi" },
  ];

  it("counts a chat request's prompt as the chat completion sends it, and a text prompt as completions do", async () => {
    const tools = [{ type: "function", function: { name: "lookup", parameters: { type: "object" } } }];
    for (const extra of [{}, { tools }]) {
      const counted = TokenizeResponse.parse(
        await (await post("/tokenize", { model: `${BASE}:acme/support`, messages, ...extra })).json(),
      );
      await chat({ messages, ...extra });
      expect(counted.tokens).toEqual(lastRequest().prompt_token_ids);
      expect(counted).toMatchObject({
        count: counted.tokens.length,
        max_model_len: CONTEXT,
        token_strs: null,
      });
    }
    const sent = worker.received.length;
    const text = TokenizeResponse.parse(
      await (await post("/tokenize", { model: BASE, prompt: "Once upon", return_token_strs: true })).json(),
    );
    await post("/v1/completions", { model: BASE, prompt: "Once upon", max_tokens: 1 });
    expect(worker.received).toHaveLength(sent + 1);
    expect(text.tokens).toEqual(lastRequest().prompt_token_ids);
    expect(text.token_strs!.slice(1).join("")).toBe("Once upon");
    const bare = TokenizeResponse.parse(
      await (await post("/tokenize", { model: BASE, prompt: "Once upon", add_special_tokens: false })).json(),
    );
    expect(bare.tokens).toEqual(text.tokens.slice(1));

    const back = await post("/detokenize", { model: BASE, tokens: bare.tokens });
    expect(DetokenizeResponse.parse(await back.json()).prompt).toBe("Once upon");
  });

  it("refuses a request without a key, for another org's adapter, with neither or both inputs, or ids outside the vocabulary", async () => {
    await expectError(
      await post("/tokenize", { model: BASE, prompt: "a" }, "lk_nope"),
      401,
      "invalid_api_key",
    );
    await expectError(
      await post("/tokenize", { model: `${BASE}:other/theirs`, prompt: "a" }),
      404,
      "model_not_found",
    );
    await expectError(await post("/tokenize", { model: BASE }), 400, null, "prompt");
    await expectError(await post("/tokenize", { model: BASE, prompt: "a", messages }), 400, null, "prompt");
    await expectError(await post("/detokenize", { model: BASE, tokens: [1, 99999] }), 400, null, "tokens");
    await expectError(await post("/detokenize", { model: BASE, tokens: "1 2" }), 400, null, "tokens");
  });
});

describe("routing", () => {
  it("matches every route with Hono's RegExpRouter: one path it cannot take would slow every request", async () => {
    await h.app.request("/healthz");
    // SmartRouter settles on the first router that takes every route; TrieRouter is the slow fallback.
    expect((h.app.router as { name: string }).name).toBe("SmartRouter + RegExpRouter");
    // POST /v1/responses/input_tokens is registered as a parameter for it; no other name answers there.
    const other = await h.app.request("/v1/responses/other", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
      body: "{}",
    });
    expect(other.status).toBe(404);
  });
});

describe("/v1/models", () => {
  const list = async (key: string) => {
    const res = await h.app.request("/v1/models", { headers: { authorization: `Bearer ${key}` } });
    expect(res.status).toBe(200);
    const body = ModelList.parse(await res.json());
    expect(body.object).toBe("list");
    return body.data.map((m) => m.id);
  };

  it("lists the bases and the caller's ready adapters and aliases, never another org's", async () => {
    expect(await list(h.keys.acme)).toEqual([
      BASE,
      `${BASE}:acme/support`,
      `${BASE}:acme/support-v1`,
      `${BASE}:acme/support-v2`,
    ]);
    expect(await list(h.keys.other)).toEqual([BASE, `${BASE}:other/theirs`]);
  });

  it("retrieves one model with its context length and, for an adapter, its base (vLLM's fields), and 404s another org's", async () => {
    const get = (id: string) =>
      h.app.request(`/v1/models/${encodeURIComponent(id)}`, {
        headers: { authorization: `Bearer ${h.keys.acme}` },
      });
    expect(ModelCard.parse(await (await get(`${BASE}:acme/support-v1`)).json())).toMatchObject({
      object: "model",
      owned_by: "acme",
      max_model_len: CONTEXT,
      parent: BASE,
    });
    expect(ModelCard.parse(await (await get(BASE)).json())).toMatchObject({
      owned_by: "luminet",
      max_model_len: CONTEXT,
      parent: null,
    });
    await expectError(await get(`${BASE}:other/theirs`), 404, "model_not_found");
  });

  it("refuses a list of the adapters of another org named by ?org, as the other management routes do", async () => {
    const adapters = (query: string) =>
      h.app.request(`/v1/adapters${query}`, { headers: { authorization: `Bearer ${h.keys.acmeAdmin}` } });
    const refused = await expectError(await adapters("?org=other"), 403, "insufficient_permissions");
    expect(refused.message).toBe("This API key belongs to org 'acme' and cannot act on org 'other'.");
    expect((await adapters("?org=acme")).status).toBe(200);
    expect((await adapters("")).status).toBe(200);
  });

  it("deletes one of the org's adapters by its model id for an admin key, as OpenAI deletes a fine-tuned model", async () => {
    await h.addAdapter({ name: "short-lived" });
    const id = `${BASE}:acme/short-lived`;
    const del = (model: string, key = h.keys.acmeAdmin) =>
      h.app.request(`/v1/models/${encodeURIComponent(model)}`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${key}` },
      });
    await expectError(await del(id, h.keys.acme), 403, "insufficient_permissions");
    await expectError(await del(BASE), 403, "insufficient_permissions");
    await expectError(await del(`${BASE}:acme/support`), 400, null, "model");
    await expectError(await del(`${BASE}:other/theirs`), 404, "model_not_found");
    expect(await list(h.keys.acme)).toContain(id);

    const res = await del(id);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ id, object: "model", deleted: true });
    expect(await list(h.keys.acme)).not.toContain(id);
    await expectError(await del(id), 404, "model_not_found");
    expect(await list(h.keys.other)).toContain(`${BASE}:other/theirs`);
  });
});

describe("bad input", () => {
  it("refuses malformed JSON", async () => {
    const error = await expectError(await post("/v1/chat/completions", "{not json"), 400, null);
    expect(error.type).toBe("invalid_request_error");
    expect(error.message).toContain("parse the JSON body");
  });

  it("refuses a body that is not UTF-8, with or without an Idempotency-Key, and runs nothing", async () => {
    const before = worker.received.length;
    const json = JSON.stringify({ model: BASE, messages: [{ role: "user", content: "caf\u00e9" }] });
    // "é" as Latin-1 (0xE9): not UTF-8, which a lenient read would have sent on as U+FFFD.
    const latin1 = Uint8Array.from(json, (ch) => ch.charCodeAt(0));
    for (const extra of [{}, { "idempotency-key": "k-latin1" }] as Record<string, string>[]) {
      const res = await h.app.request("/v1/chat/completions", {
        method: "POST",
        headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json", ...extra },
        body: latin1,
      });
      const error = await expectError(res, 400, null);
      expect(error.message).toContain("not valid UTF-8");
    }
    expect(worker.received.length).toBe(before);
    // The same request in UTF-8 runs.
    expect((await post("/v1/chat/completions", json)).status).toBe(200);
  });

  it("refuses wrong types, naming the field", async () => {
    await expectError(await chat({ temperature: "hot" }), 400, null, "temperature");
    await expectError(await chat({ max_tokens: -1 }), 400, null, "max_tokens");
    await expectError(await chat({ top_k: -2 }), 400, null, "top_k");
    await expectError(await chat({ top_k: 2.5 }), 400, null, "top_k");
    await expectError(await chat({ min_p: 1.5 }), 400, null, "min_p");
    await expectError(await chat({ repetition_penalty: 0 }), 400, null, "repetition_penalty");
    await expectError(await chat({ messages: "hello" }), 400, null, "messages");
    await expectError(await post("/v1/chat/completions", "[1,2]"), 400, null);
  });

  it("says what a field of several shapes accepts", async () => {
    const stop = await expectError(await chat({ stop: Array(17).fill("a") }), 400, null, "stop");
    expect(stop.message).toContain("at most 16 non-empty strings");
    expect((await chat({ stop: ["a", "b", "c", "d", "e"] })).status).toBe(200);
    const image = [
      { type: "text", text: "What is this?" },
      { type: "image_url", image_url: { url: "https://example.com/cat.png" } },
    ];
    const content = await expectError(
      await chat({ messages: [{ role: "user", content: image }] }),
      400,
      null,
      "messages.0.content.1",
    );
    expect(content.message).toContain('content of type "image_url" is not supported');
    const prompt = await expectError(
      await post("/v1/completions", { model: BASE, prompt: { text: "x" } }),
      400,
      null,
      "prompt",
    );
    expect(prompt.message).toContain("a list of token ids");
  });

  it("refuses empty messages, unknown roles and n outside 1..16", async () => {
    await expectError(await chat({ messages: [] }), 400, null, "messages");
    await expectError(
      await chat({ messages: [{ role: "wizard", content: "hi" }] }),
      400,
      null,
      "messages.0.role",
    );
    await expectError(
      await chat({ messages: [{ role: "tool", content: "hi" }] }),
      400,
      null,
      "messages.0.tool_call_id",
    );
    await expectError(await chat({ n: 0 }), 400, null, "n");
    await expectError(await chat({ n: 17 }), 400, null, "n");
    expect((await chat({ n: 1 })).status).toBe(200);
    expect((await chat({ n: 16 })).status).toBe(200);
  });

  it("takes an assistant's refusal parts as its text, and refuses them in other roles and other part types by name", async () => {
    const turns = (assistant: unknown) => [
      { role: "user", content: "Do the thing" },
      { role: "assistant", content: assistant },
      { role: "user", content: "Please?" },
    ];
    expect((await chat({ messages: turns("I won't.") })).status).toBe(200);
    const asText = lastRequest().prompt_token_ids;
    const parts = [
      { type: "text", text: "I " },
      { type: "refusal", refusal: "won't." },
    ];
    expect((await chat({ messages: turns(parts) })).status).toBe(200);
    expect(lastRequest().prompt_token_ids).toEqual(asText);

    const before = worker.received.length;
    const user = await expectError(
      await chat({ messages: [{ role: "user", content: [{ type: "refusal", refusal: "no" }] }] }),
      400,
      null,
      "messages.0.content.0",
    );
    expect(user.message).toContain("only assistant messages carry refusal parts");
    const audio = [{ type: "input_audio", input_audio: { data: "AAAA", format: "wav" } }];
    const unsupported = await expectError(
      await chat({ messages: [{ role: "user", content: audio }] }),
      400,
      null,
      "messages.0.content.0",
    );
    expect(unsupported.message).toContain('content of type "input_audio" is not supported');
    await expectError(
      await chat({ messages: turns([{ type: "refusal" }]) }),
      400,
      null,
      "messages.1.content.0.refusal",
    );
    expect(worker.received.length).toBe(before);
  });

  it("refuses a tool message that answers no call of an earlier assistant message, naming its tool_call_id", async () => {
    const call = { id: "call_1", type: "function", function: { name: "weather", arguments: "{}" } };
    const asked = [
      { role: "user", content: "Weather?" },
      { role: "assistant", content: null, tool_calls: [call] },
    ];
    const before = worker.received.length;
    const unknown = await expectError(
      await chat({ messages: [...asked, { role: "tool", tool_call_id: "call_2", content: "sunny" }] }),
      400,
      null,
      "messages.2.tool_call_id",
    );
    expect(unknown.message).toContain("must be a response to a preceding assistant message's tool_calls");
    // An answer before its call answers nothing yet.
    await expectError(
      await chat({
        messages: [asked[0], { role: "tool", tool_call_id: "call_1", content: "sunny" }, asked[1]],
      }),
      400,
      null,
      "messages.1.tool_call_id",
    );
    expect(worker.received.length).toBe(before);
    const answered = [...asked, { role: "tool", tool_call_id: "call_1", content: "sunny" }];
    expect((await chat({ messages: answered })).status).toBe(200);
  });

  it("refuses max_tokens beyond the context and a prompt over the context", async () => {
    const error = await expectError(
      await chat({ max_tokens: CONTEXT }),
      400,
      "context_length_exceeded",
      "max_tokens",
    );
    expect(error.message).toContain(`maximum context length is ${CONTEXT} tokens`);
    const long = "word ".repeat(CONTEXT * 2);
    await expectError(
      await chat({ messages: [{ role: "user", content: long }] }),
      400,
      "context_length_exceeded",
      "messages",
    );
  });

  it("counts a too-long prompt's completion as the request asked for it, or as its default", async () => {
    const long = "word ".repeat(CONTEXT * 2);
    const requested = (message: string) => {
      const [, total, prompt, completion] =
        /you requested (\d+) tokens \((\d+) in the prompt, (\d+) for the completion\)/.exec(message) ?? [];
      expect(Number(total)).toBe(Number(prompt) + Number(completion));
      expect(Number(prompt)).toBeGreaterThan(CONTEXT);
      return Number(completion);
    };
    const chatError = await expectError(
      await chat({ messages: [{ role: "user", content: long }], max_tokens: 2 }),
      400,
      "context_length_exceeded",
      "messages",
    );
    expect(requested(chatError.message)).toBe(2);
    const completionError = await expectError(
      await post("/v1/completions", { model: BASE, prompt: long }),
      400,
      "context_length_exceeded",
      "prompt",
    );
    // /v1/completions' default max_tokens, as OpenAI's.
    expect(requested(completionError.message)).toBe(16);
  });

  it("refuses a logit_bias whose keys are not token ids of the base or whose values leave -100..100", async () => {
    for (const bias of [{ abc: 1 }, { "-1": 1 }, { "1.5": 1 }, { "01": 1 }, { "100000": 1 }, { "5": 101 }]) {
      const error = await expectError(await chat({ logit_bias: bias }), 400, null, "logit_bias");
      expect(error.message).toMatch(/logit_bias/);
    }
    const many = Object.fromEntries(Array.from({ length: 1025 }, (_, i) => [String(i % 500), 1]));
    expect(Object.keys(many)).toHaveLength(500);
    const tooMany = Object.fromEntries(Array.from({ length: 1025 }, (_, i) => [String(i), 1]));
    expect((await chat({ logit_bias: many })).status).toBe(200);
    const error = await expectError(
      await post("/v1/completions", { model: BASE, prompt: "x", logit_bias: tooMany }),
      400,
      null,
      "logit_bias",
    );
    expect(error.message).toContain("at most 1024");
  });

  it("refuses the deprecated function fields, non-text outputs and unknown formats rather than ignoring them", async () => {
    const fn = { name: "weather", parameters: { type: "object" } };
    const refused: [Record<string, unknown>, string][] = [
      [{ functions: [fn] }, "functions"],
      [{ function_call: { name: "weather" } }, "function_call"],
      [{ response_format: { type: "xml" } }, "response_format"],
      [{ tool_choice: "required" }, "tool_choice"],
      [{ modalities: ["text", "audio"] }, "modalities"],
      [{ audio: { voice: "alloy", format: "wav" } }, "audio"],
      [{ web_search_options: {} }, "web_search_options"],
      [{ reasoning_effort: "high" }, "reasoning_effort"],
      [{ chat_template_kwargs: { enable_thinking: true } }, "chat_template_kwargs.enable_thinking"],
    ];
    for (const [body, param] of refused) await expectError(await chat(body), 400, null, param);
    // What asks for nothing beyond text is served.
    for (const body of [
      { tools: [] },
      { tool_choice: "none" },
      { tool_choice: "auto" },
      { response_format: { type: "text" } },
      { modalities: ["text"] },
      // A model that does not reason does what "none" asks.
      { reasoning_effort: "none" },
      { chat_template_kwargs: { enable_thinking: false } },
    ]) {
      expect((await chat(body)).status).toBe(200);
      expect(lastRequest().sampling.response_format).toBeUndefined();
    }
  });

  it("shows the tools to the model whatever tool_choice says: none changes what may be called, not the prompt", async () => {
    const tool = { type: "function", function: { name: "weather", parameters: { type: "object" } } };
    const promptWith = async (extra: Record<string, unknown>) => {
      expect((await chat(extra)).status).toBe(200);
      return lastRequest().prompt_token_ids;
    };
    const bare = await promptWith({});
    const auto = await promptWith({ tools: [tool], tool_choice: "auto" });
    expect(auto.length).toBeGreaterThan(bare.length);
    expect(await promptWith({ tools: [tool], tool_choice: "none" })).toEqual(auto);
    expect(lastRequest().sampling.response_format).toBeUndefined();
  });

  it("generates a required call under its function's schema, described to a template without tools", async () => {
    const tool = {
      type: "function",
      function: { name: "weather", parameters: { type: "object", properties: { city: { type: "string" } } } },
    };
    expect((await chat({ tools: [tool], tool_choice: "required", stop: ['"'] })).status).toBe(200);
    const sent = lastRequest();
    // Stop strings would cut the call into text: a required call is generated whole.
    expect(sent.sampling.stop).toEqual([]);
    expect(sent.sampling.response_format).toEqual({
      json_schema: {
        type: "object",
        properties: { name: { const: "weather" }, arguments: tool.function.parameters },
        required: ["name", "arguments"],
        additionalProperties: false,
      },
    });
    // The tiny model's template does not read tools: a system message describes them first.
    const prompt = loadTokenizer(h.modelDir).decode(sent.prompt_token_ids);
    expect(prompt).toContain('"name":"weather"');
    expect(prompt.indexOf('"name":"weather"')).toBeLessThan(prompt.indexOf("Hi there"));
    // Auto leaves the answer free, stop strings included.
    expect((await chat({ tools: [tool], stop: ['"'] })).status).toBe(200);
    expect(lastRequest().sampling.response_format).toBeUndefined();
    expect(lastRequest().sampling.stop).toEqual(['"']);
    // A response_format holds text answers: beside a required call, the call is generated all the same.
    const required = { tools: [tool], tool_choice: "required" };
    expect((await chat(required)).status).toBe(200);
    const callFormat = lastRequest().sampling.response_format;
    const formatted = await chat({
      ...required,
      response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "object" } } },
    });
    expect(formatted.status).toBe(200);
    expect(lastRequest().sampling.response_format).toEqual(callFormat);
    // A structured output is for the whole answer, which a required call is: refused beside one.
    await expectError(await chat({ ...required, guided_regex: "a+" }), 400, null, "tool_choice");
    const history = [
      { role: "user", content: "Weather?" },
      {
        role: "assistant",
        content: null,
        tool_calls: [{ id: "c1", type: "function", function: { name: "weather", arguments: "{oops" } }],
      },
    ];
    await expectError(
      await chat({ tools: [tool], messages: history }),
      400,
      null,
      "messages.1.tool_calls.0.function.arguments",
    );
  });

  it("answers a required call cut by max_tokens as the call so far, streamed or not, never its JSON as text", async () => {
    const tools = [{ type: "function", function: { name: "weather", parameters: { type: "object" } } }];
    // As a model lays a call out: whitespace between its tokens, which is not the call's.
    const pieces = [
      "{\n",
      '"name"\r:',
      ' "weather",\t',
      '"arguments": {',
      '\r"city"',
      ' :\t"O',
      'slo"}',
      "}",
    ];
    const answers = async (max_tokens: number) => {
      const body = { tools, tool_choice: "required", max_tokens };
      const whole = ChatCompletion.parse(await (await chat(body)).json()).choices[0]!;
      const chunks = (await events(await chat({ ...body, stream: true })))
        .filter((e) => e !== "[DONE]")
        .map((e) => ChatCompletionChunk.parse(JSON.parse(e)).choices[0]);
      const streamedArgs = chunks
        .flatMap((c) => c?.delta.tool_calls ?? [])
        .map((call) => ("function" in call ? (call.function.arguments ?? "") : ""))
        .join("");
      return { whole, streamedArgs, streamedFinish: chunks.at(-1)?.finish_reason };
    };
    worker.behaviour = () => ({ say: pieces });
    const done = await answers(64);
    expect(done.whole.finish_reason).toBe("tool_calls");
    expect(done.whole.message.tool_calls?.[0]).toMatchObject({ function: { arguments: '{"city":"Oslo"}' } });
    expect(done.streamedArgs).toBe('{"city":"Oslo"}');
    // Cut inside the arguments: the call with what was written of them, ending "length".
    const cut = await answers(6);
    expect(cut.whole.finish_reason).toBe("length");
    expect(cut.whole.message.content).toBeNull();
    expect(cut.whole.message.tool_calls?.[0]).toMatchObject({
      function: { name: "weather", arguments: '{"city":"O' },
    });
    expect(cut.streamedArgs).toBe('{"city":"O');
    expect(cut.streamedFinish).toBe("length");
    // Cut before the name: an empty answer, not the call's opening as content.
    const early = await answers(2);
    expect(early.whole.finish_reason).toBe("length");
    expect(early.whole.message.content).toBe("");
    expect(early.whole.message.tool_calls ?? []).toEqual([]);
    expect(early.streamedArgs).toBe("");
  });

  it("streams an auto answer's calls as they are written, and its text as text", async () => {
    const tools = [
      { type: "function", function: { name: "weather", parameters: { type: "object" } } },
      { type: "function", function: { name: "time" } },
    ];
    const streamed = async () =>
      (await events(await chat({ tools, stream: true })))
        .filter((e) => e !== "[DONE]")
        .map((e) => ChatCompletionChunk.parse(JSON.parse(e)).choices[0]);
    // Hermes-style calls, two of them, a token at a time.
    worker.behaviour = () => ({
      say: [
        "<tool_call>",
        '{"name": "weather", ',
        '"arguments": {"city": ',
        '"Oslo"}}',
        "</tool_call>",
        "<tool_call>",
        '{"name":"time","arguments":{}}',
        "</tool_call>",
      ],
    });
    const choices = await streamed();
    // One entry per call in a chunk, as OpenAI sends: a call's id and name come with its first arguments.
    for (const choice of choices) {
      const indexes = (choice?.delta.tool_calls ?? []).map((call) => call.index);
      expect(new Set(indexes).size).toBe(indexes.length);
    }
    const calls = choices.flatMap((c) => c?.delta.tool_calls ?? []);
    expect(calls).toEqual([
      {
        index: 0,
        id: expect.stringMatching(/^call_/),
        type: "function",
        function: { name: "weather", arguments: '{"city":' },
      },
      { index: 0, function: { arguments: '"Oslo"}' } },
      { index: 1, id: `${calls[0]!.id}_1`, type: "function", function: { name: "time", arguments: "{}" } },
    ]);
    expect(choices.some((c) => c?.delta.content)).toBe(false);
    expect(choices.at(-1)?.finish_reason).toBe("tool_calls");
    // Not calls: the text goes out, the brace it began with included.
    worker.behaviour = () => ({ say: ["{", "not", " a call"] });
    const text = await streamed();
    expect(text.map((c) => c?.delta.content ?? "").join("")).toBe("{not a call");
    expect(text.at(-1)?.finish_reason).toBe("stop");
  });

  it("takes JSON mode where the messages mention JSON, as OpenAI does, and tells the worker", async () => {
    const error = await expectError(
      await chat({ response_format: { type: "json_object" } }),
      400,
      null,
      "messages",
    );
    expect(error.message).toContain("must contain the word 'json'");
    const res = await chat({
      response_format: { type: "json_object" },
      messages: [{ role: "user", content: "Answer in Json, please" }],
    });
    expect(res.status).toBe(200);
    expect(lastRequest().sampling.response_format).toBe("json_object");
  });

  it("takes a JSON schema the worker's grammar keeps, and refuses one it does not with the keyword named", async () => {
    const schema = {
      type: "object",
      properties: { city: { type: "string" }, days: { type: "integer" } },
      required: ["city", "days"],
      additionalProperties: false,
    };
    const format = (s: unknown) => ({
      type: "json_schema",
      json_schema: { name: "trip", strict: true, schema: s },
    });
    expect((await chat({ response_format: format(schema) })).status).toBe(200);
    expect(lastRequest().sampling.response_format).toEqual({ json_schema: schema });
    const before = worker.received.length;
    const pattern = {
      ...schema,
      properties: { ...schema.properties, city: { type: "string", pattern: "(?<=x)[A-Z]" } },
    };
    const error = await expectError(
      await chat({ response_format: format(pattern) }),
      400,
      null,
      "response_format.json_schema.schema",
    );
    expect(error.message).toContain("Invalid schema for response_format 'trip'");
    expect(error.message).toContain('pattern "(?<=x)[A-Z]": lookbehind is not supported');
    // Not strict, a keyword that only narrows values is left out (OpenAI does not enforce such a schema).
    const lenient = { type: "json_schema", json_schema: { name: "trip", schema: pattern } };
    expect((await chat({ response_format: lenient })).status).toBe(200);
    expect(lastRequest().sampling.response_format).toEqual({ json_schema: schema });
    await expectError(
      await chat({ response_format: { type: "json_schema", json_schema: { name: "trip" } } }),
      400,
      null,
      "response_format.json_schema",
    );
    await expectError(
      await chat({ response_format: { type: "json_schema", json_schema: { name: "a b", schema } } }),
      400,
      null,
      "response_format.json_schema.name",
    );
    // Only the lenient request ran.
    expect(worker.received.length).toBe(before + 1);
  });

  it("refuses patterns, choices, grammars and schemas too long or deep to compile with a 400 naming them", async () => {
    const before = worker.received.length;
    const nested = (depth: number): Record<string, unknown> =>
      depth === 0 ? { type: "string" } : { type: "object", properties: { a: nested(depth - 1) } };
    const cases: [Record<string, unknown>, string][] = [
      [{ structured_outputs: { regex: "x".repeat(20_000) } }, "structured_outputs.regex"],
      [
        { structured_outputs: { regex: `${"(".repeat(5_000)}a${")".repeat(5_000)}` } },
        "structured_outputs.regex",
      ],
      [{ structured_outputs: { choice: ["x".repeat(20_000)] } }, "structured_outputs.choice"],
      [{ guided_grammar: `root ::= ${"(".repeat(5_000)}"x"${")".repeat(5_000)}` }, "guided_grammar"],
      [
        {
          messages: [{ role: "user", content: "Answer in JSON" }],
          response_format: { type: "json_schema", json_schema: { name: "deep", schema: nested(1_500) } },
        },
        "response_format.json_schema.schema",
      ],
    ];
    for (const [body, param] of cases) {
      const res = await chat({ max_tokens: 2, ...body });
      const error = await expectError(res, 400, null, param);
      expect(error.message).toMatch(/too long|too deeply|too complex|more than/);
    }
    expect(worker.received.length).toBe(before);
  });

  it("refuses with 429 an org's requests that ask for a compile once its compile time this minute is spent, and only those", async () => {
    const shared = h.deps.compileTime;
    // A budget the first schema's compile spends.
    h.deps.compileTime = new OrgCompileTime(0.001);
    try {
      const schema = { type: "object", properties: { answer: { type: "string" } }, required: ["answer"] };
      const withSchema = (key?: string) =>
        chat(
          {
            max_tokens: 2,
            messages: [{ role: "user", content: "Answer in JSON" }],
            response_format: { type: "json_schema", json_schema: { name: "answer", schema } },
          },
          key,
        );
      expect((await withSchema()).status).toBe(200);
      const before = worker.received.length;
      const refused = await withSchema();
      const error = await expectError(refused, 429, "rate_limit_exceeded");
      expect(error.message).toContain("compiling grammars, patterns and JSON schemas");
      expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
      expect(worker.received.length).toBe(before);
      // Without a schema the org goes on; another org's schema too.
      expect((await chat({ max_tokens: 2 })).status).toBe(200);
      expect((await withSchema(h.keys.other)).status).toBe(200);
    } finally {
      h.deps.compileTime = shared;
    }
  });

  it("ignores unknown fields, as OpenAI does", async () => {
    const res = await chat({ some_future_option: { a: 1 }, metadata: { x: "y" } });
    expect(res.status).toBe(200);
  });

  it("refuses a body over the size limit with 413 before reading it", async () => {
    const res = await chat({ messages: [{ role: "user", content: "x".repeat(70 * 1024) }] });
    await expectError(res, 413, "request_too_large");
  });

  it("sends nothing to a worker for refused input", async () => {
    const before = worker.received.length;
    await chat({ n: 17 });
    await chat({ messages: [] });
    expect(worker.received.length).toBe(before);
  });
});

describe("auth", () => {
  it("answers 401 invalid_api_key without a key, with a malformed one and with an unknown one", async () => {
    const noKey = await h.app.request("/v1/models");
    await expectError(noKey, 401, "invalid_api_key");
    await expectError(await chat({}, "sk-not-ours"), 401, "invalid_api_key");
    const unknown = `lk_${"x".repeat(40)}`;
    const error = await expectError(await chat({}, unknown), 401, "invalid_api_key");
    expect(error.message).not.toContain(unknown);
  });
});

describe("workers", () => {
  it("answers 503 with Retry-After when no worker serves the base and cold starts are off", async () => {
    const idle = new InProcessBroker().connect();
    try {
      const res = await h
        .appWith({ bus: idle, limits: { coldStartTimeoutMs: 0 } })
        .request("/v1/chat/completions", {
          method: "POST",
          headers: { authorization: `Bearer ${h.keys.acme}` },
          body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "hi" }] }),
        });
      await expectError(res, 503, "no_worker");
      expect(res.headers.get("retry-after")).toBe("5");
    } finally {
      await idle.close();
    }
  });

  it("passes a worker's error on with its meaning", async () => {
    worker.behaviour = () => ({ error: { code: "adapter_not_found", message: "adapter was deleted" } });
    await expectError(await chat(), 404, "model_not_found");
    worker.behaviour = () => ({ error: { code: "oom", message: "out of memory" } });
    await expectError(await chat(), 502, "oom");
  });

  it("ends a stream with an error event when the worker fails before the first token", async () => {
    worker.behaviour = () => ({ error: { code: "oom", message: "out of memory" } });
    await expectError(await chat({ stream: true }), 502, "oom");
  });

  it("cancels the worker's run when the client goes away", async () => {
    worker.behaviour = () => "hang";
    const controller = new AbortController();
    const pending = post(
      "/v1/chat/completions",
      { model: BASE, messages: [{ role: "user", content: "hi" }] },
      h.keys.acme,
      {
        signal: controller.signal,
      },
    );
    const before = worker.received.length;
    while (worker.received.length === before) await new Promise((r) => setTimeout(r, 5));
    controller.abort();
    await worker.cancelled(lastRequest().id);
    await Promise.resolve(pending).catch(() => {});
    expect(worker.cancels).toContain(lastRequest().id);
  });

  it("cancels a stream whose reader goes away after the first tokens", async () => {
    worker.behaviour = () => ({ partial: 2 });
    const res = await chat({ stream: true });
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toContain('"role":"assistant"');
    await reader.cancel();
    const id = res.headers.get("x-request-id")!;
    await worker.cancelled(id);
    expect(worker.cancels).toContain(id);
  });

  it("does not cancel a run that finished", async () => {
    const res = await chat({ stream: true });
    await res.text();
    const res2 = await chat();
    await res2.json();
    expect(worker.cancels).not.toContain(res.headers.get("x-request-id"));
    expect(worker.cancels).not.toContain(res2.headers.get("x-request-id"));
  });

  it("answers 504 and cancels the run when the worker takes longer than the request timeout", async () => {
    worker.behaviour = () => "hang";
    const res = await h.appWith({ limits: { requestTimeoutMs: 50 } }).request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}` },
      body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "hi" }] }),
    });
    await expectError(res, 504, "timeout");
    await worker.cancelled(res.headers.get("x-request-id")!);
  });
});

describe("Idempotency-Key", () => {
  const keyed = (key: string, body: Record<string, unknown>) =>
    h.app.request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "idempotency-key": key },
      body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "hi" }], ...body }),
    });

  it("replays the stored response instead of running a request twice", async () => {
    const before = worker.received.length;
    const first = await keyed("k-replay", { max_tokens: 3 });
    const second = await keyed("k-replay", { max_tokens: 3 });
    expect(second.status).toBe(200);
    expect(second.headers.get("idempotent-replayed")).toBe("true");
    expect(await second.text()).toBe(await first.text());
    expect(worker.received.length).toBe(before + 1);
  });

  it("keys per org: another org's same key runs on its own", async () => {
    const before = worker.received.length;
    await keyed("k-org", {});
    const theirs = await h.app.request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.other}`, "idempotency-key": "k-org" },
      body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "hi" }] }),
    });
    expect(theirs.headers.get("idempotent-replayed")).toBeNull();
    expect(worker.received.length).toBe(before + 2);
  });

  it("refuses the key with a different body", async () => {
    await keyed("k-body", { max_tokens: 2 });
    await expectError(await keyed("k-body", { max_tokens: 4 }), 400, "idempotency_key_reused");
  });

  it("answers 409 while the key's request still runs, and frees the key when it is abandoned", async () => {
    worker.behaviour = () => "hang";
    const controller = new AbortController();
    const running = h.app.request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "idempotency-key": "k-running" },
      body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "hi" }] }),
      signal: controller.signal,
    });
    const before = worker.received.length;
    while (worker.received.length === before) await new Promise((r) => setTimeout(r, 5));
    await expectError(await keyed("k-running", {}), 409, "idempotency_key_in_use");
    controller.abort();
    await Promise.resolve(running).catch(() => {});
    worker.behaviour = () => "reply";
    expect((await keyed("k-running", {})).status).toBe(200);
  });

  it("lets a failed request run again under the same key", async () => {
    worker.behaviour = () => ({ error: { code: "oom", message: "out of memory" } });
    await expectError(await keyed("k-retry", {}), 502, "oom");
    worker.behaviour = () => "reply";
    const retried = await keyed("k-retry", {});
    expect(retried.status).toBe(200);
    expect(retried.headers.get("idempotent-replayed")).toBeNull();
  });

  it("replays on another gateway process sharing the database", async () => {
    const before = worker.received.length;
    const first = await keyed("k-shared", { max_tokens: 2 });
    const elsewhere = await h.appWith({}).request("/v1/chat/completions", {
      method: "POST",
      headers: { authorization: `Bearer ${h.keys.acme}`, "idempotency-key": "k-shared" },
      body: JSON.stringify({ model: BASE, messages: [{ role: "user", content: "hi" }], max_tokens: 2 }),
    });
    expect(elsewhere.headers.get("idempotent-replayed")).toBe("true");
    expect(await elsewhere.text()).toBe(await first.text());
    expect(worker.received.length).toBe(before + 1);
  });

  it("takes over a claim its dead gateway left once the lease is over, and forgets an answer after a day", async () => {
    let now = Date.now();
    const app = h.appWith({ now: () => now });
    const body = JSON.stringify({ model: BASE, messages: [{ role: "user", content: "hi" }] });
    const send = (key: string) =>
      app.request("/v1/chat/completions", {
        method: "POST",
        headers: { authorization: `Bearer ${h.keys.acme}`, "idempotency-key": key },
        body,
      });
    // A gateway claimed the key for this body and died mid-request.
    const hash = createHash("sha256").update(body).digest("hex");
    const key = (header: string) => JSON.stringify(["acme", "/v1/chat/completions", header]);
    const lease = new Date(now + h.deps.limits.requestTimeoutMs + 60_000);
    expect(await claimKey(h.db, key("k-dead"), hash, new Date(now), lease)).toBeNull();
    await expectError(await send("k-dead"), 409, "idempotency_key_in_use");
    now = lease.getTime() + 1;
    const before = worker.received.length;
    expect((await send("k-dead")).status).toBe(200);
    expect(worker.received.length).toBe(before + 1);
    // A day on, the answer is no longer replayed, and the sweep deletes a key nobody used again.
    expect((await send("k-day")).headers.get("idempotent-replayed")).toBeNull();
    expect((await send("k-day")).headers.get("idempotent-replayed")).toBe("true");
    now += 24 * 60 * 60_000 + 1;
    expect((await send("k-day")).headers.get("idempotent-replayed")).toBeNull();
    expect(worker.received.length).toBe(before + 3);
    const rows = await h.db
      .select({ key: idempotencyKeys.key })
      .from(idempotencyKeys)
      .where(eq(idempotencyKeys.key, key("k-dead")));
    expect(rows).toHaveLength(0);
  });

  it("replays a completed stream's events instead of running it twice", async () => {
    const before = worker.received.length;
    const first = await (await keyed("k-stream", { stream: true, max_tokens: 3 })).text();
    expect(first).toContain("data: [DONE]");
    const again = await keyed("k-stream", { stream: true, max_tokens: 3 });
    expect(again.status).toBe(200);
    expect(again.headers.get("content-type")).toContain("text/event-stream");
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(await again.text()).toBe(first);
    expect(worker.received.length).toBe(before + 1);
  });

  it("answers 409 while a stream under the key runs, and frees the key of one whose client left", async () => {
    worker.behaviour = () => ({ partial: 1 });
    try {
      const res = await keyed("k-stream-left", { stream: true });
      const reader = res.body!.getReader();
      expect(new TextDecoder().decode((await reader.read()).value)).toContain("data: ");
      await expectError(await keyed("k-stream-left", { stream: true }), 409, "idempotency_key_in_use");
      await reader.cancel();
      worker.behaviour = () => "reply";
      const before = worker.received.length;
      await vi.waitFor(async () => {
        const retried = await keyed("k-stream-left", { stream: true });
        expect(retried.status).toBe(200);
        expect(retried.headers.get("idempotent-replayed")).toBeNull();
        expect(await retried.text()).toContain("data: [DONE]");
      });
      expect(worker.received.length).toBe(before + 1);
    } finally {
      worker.behaviour = () => "reply";
    }
  });

  it("frees the key of a stream that ended with an in-band error, so a retry runs", async () => {
    worker.behaviour = () => ({ error: { code: "oom", message: "out of memory" }, after: 1 });
    const failed = await (await keyed("k-stream-error", { stream: true })).text();
    expect(failed).toContain('"code":"oom"');
    worker.behaviour = () => "reply";
    const before = worker.received.length;
    const retried = await keyed("k-stream-error", { stream: true });
    expect(retried.headers.get("idempotent-replayed")).toBeNull();
    expect(await retried.text()).toContain("data: [DONE]");
    expect(worker.received.length).toBe(before + 1);
  });
});

describe("GET /readyz", () => {
  it("is ready while the bus and the database answer, and names what it cannot reach", async () => {
    const ready = await h.app.request("/readyz");
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ready: true });

    // A database that no longer answers (the bus side: test/integration/bus-disconnected.test.ts).
    const closedDb = await openDb("pglite:memory");
    await closedDb.close();
    const cutOff = await h.appWith({ db: closedDb }).request("/readyz");
    expect(cutOff.status).toBe(503);
    expect(await cutOff.json()).toEqual({ ready: false, unavailable: ["database"] });
  });
});

describe("every response", () => {
  it("carries x-request-id, unknown routes included, in OpenAI's error shape", async () => {
    const res = await h.app.request("/v1/nope", { headers: { authorization: `Bearer ${h.keys.acme}` } });
    await expectError(res, 404, "unknown_url");
    const health = await h.app.request("/healthz");
    expect(health.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
  });
});
