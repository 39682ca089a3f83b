// The whole path with real processes: `luminet gateway` and two `luminet worker`s on the real NATS, the
// database on PGlite (or the run's Postgres when DATABASE_URL is set), the official openai client in front.
// The test also plays the meter (a usage consumer) to check that what responses report is what is billed.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, stepCountIs, tool } from "ai";
import OpenAI, { toFile } from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { z } from "zod";
import type { Bus, Subscription } from "../../bus/bus.ts";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { migrate } from "../../db/migrate.ts";
import { openDb } from "../../db/open.ts";
import { createApiKey, ensureOrg } from "../../gateway/api-keys.ts";
import { architectureOf } from "../../gateway/base-loader.ts";
import { adapters, baseModels } from "../../schema/db.ts";
import type { UsageEvent } from "../../schema/wire.ts";
import { type LuminetProcess, startLuminetProcess } from "../../scripts/luminet-process.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { sha256OfFile } from "../../worker/adapters/disk-cache.ts";
import { loadModelConfig } from "../../worker/engine/model-config.ts";
import { loadTokenizer } from "../../worker/engine/tokenizer.ts";

const BASE = "tiny";
/** Served by the gateway, but no worker runs it. */
const IDLE_BASE = "tiny-idle";
const ADAPTERS = 4;
const CONTEXT = 1024;
const namespace = `e2e_${process.pid}_${Date.now()}`;

let root: string;
let modelDir: string;
let gatewayUrl: string;
let bus: Bus;
let usageSubscription: Subscription;
let client: OpenAI;
const keys = { acme: "", other: "" };
const usage = new Map<string, UsageEvent>();
const children: LuminetProcess[] = [];

/** Starts a luminet command and resolves with the first JSON log line `ready` accepts. */
async function start(
  args: string[],
  ready: (line: Record<string, unknown>) => boolean,
  env: Record<string, string>,
): Promise<Record<string, unknown>> {
  // Run from a folder with no node_modules or tsconfig, as an installed `luminet` is.
  const child = await startLuminetProcess({ args, env: { ...env, LOG_LEVEL: "info" }, cwd: root, ready });
  children.push(child);
  return child.readyEntry;
}

async function eventually<T>(what: string, probe: () => T | undefined): Promise<T> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

const billed = (requestId: string) =>
  eventually(`the usage event of ${requestId}`, () => usage.get(requestId));
const requestIdOf = (responseId: string) => responseId.replace(/^(chatcmpl-|cmpl-|resp_)/, "");

beforeAll(async () => {
  const natsUrl = inject("natsUrl");
  root = mkdtempSync(join(tmpdir(), "luminet-e2e-"));
  // No end-of-text token: every request generates exactly max_tokens unless cancelled.
  const tiny = initTinyModel(join(root, "model"), {
    shape: "tiny",
    adapters: ADAPTERS,
    rank: 4,
    seed: 5,
    endOfText: false,
  });
  modelDir = tiny.dir;

  const databaseUrl = inject("postgresUrl") || `pglite:${join(root, "db")}`;
  const db = await openDb(databaseUrl);
  await migrate(db);
  const architecture = architectureOf(loadModelConfig(modelDir));
  for (const name of [BASE, IDLE_BASE]) {
    await db
      .insert(baseModels)
      .values({
        name,
        architecture,
        contextLength: CONTEXT,
        inputPriceMicrosPerMillion: 100_000,
        outputPriceMicrosPerMillion: 200_000,
      })
      .onConflictDoNothing();
  }
  await ensureOrg(db, "acme");
  await ensureOrg(db, "other");
  keys.acme = (await createApiKey(db, { orgId: "acme", name: "e2e" })).key;
  keys.other = (await createApiKey(db, { orgId: "other", name: "e2e" })).key;
  for (let i = 0; i < ADAPTERS; i++) {
    const sha256 = await sha256OfFile(join(tiny.adapterDirs[i]!, "adapter_model.safetensors"));
    await db.insert(adapters).values({
      orgId: i === ADAPTERS - 1 ? "other" : "acme",
      name: `a${i}`,
      base: BASE,
      rank: 4,
      alpha: 8,
      targetModules: ["q_proj", "v_proj"],
      bytes: 1,
      sha256: sha256!,
      blobKey: `adapter-${i}`,
      status: "ready",
    });
  }
  await db.close();

  const env = { NATS_URL: natsUrl, DATABASE_URL: databaseUrl, LUMINET_NAMESPACE: namespace };
  const workerArgs = (id: string) => [
    "worker",
    ...["--model", modelDir, "--base", BASE, "--worker-id", id],
    ...["--slots", "4", "--max-adapters-per-batch", "4", "--max-rank", "4", "--max-context", String(CONTEXT)],
    ...["--threads", "1", "--blobs", join(modelDir, "adapters"), "--disk-cache", join(root, `cache-${id}`)],
    ...["--usage-spool", join(root, `usage-spool-${id}`)],
  ];
  const [gateway] = await Promise.all([
    start(
      [
        "gateway",
        "--port",
        "0",
        "--host",
        "127.0.0.1",
        "--model",
        `${BASE}=${modelDir}`,
        "--model",
        `${IDLE_BASE}=${modelDir}`,
        // A request for the idle base waits this long for a worker to start before 503.
        "--cold-start-timeout",
        "1",
        // A stream that waits answers 200 after 0.3 s, with a keep-alive every 0.2 s.
        "--stream-headers-after",
        "0.3",
        "--keep-alive",
        "0.2",
      ],
      (line) => typeof line.url === "string",
      env,
    ),
    start(workerArgs("w1"), (line) => line.msg === "worker ready", env),
    start(workerArgs("w2"), (line) => line.msg === "worker ready", env),
  ]);
  gatewayUrl = String(gateway!.url);
  client = new OpenAI({ apiKey: keys.acme, baseURL: `${gatewayUrl}/v1`, maxRetries: 0 });

  bus = await connectJetStreamBus({ servers: natsUrl, namespace });
  usageSubscription = await bus.consumeUsage(async (event) => {
    usage.set(event.request_id, event);
  });
}, 120_000);

afterAll(async () => {
  await Promise.all(children.map((child) => child.stop()));
  await usageSubscription?.close();
  await bus?.close();
  rmSync(root, { recursive: true, force: true });
});

const messages = [{ role: "user" as const, content: "Tell me a story" }];

/** A logprobs token's bytes: its text, or the bytes its "bytes:\\xNN…" form spells. */
function tokenTextBytes(token: string): Uint8Array {
  if (!token.startsWith("bytes:")) return new TextEncoder().encode(token);
  return Uint8Array.from(token.slice("bytes:".length).split("\\x").slice(1), (h) => Number.parseInt(h, 16));
}

describe("the gateway with real workers, through the openai client", () => {
  it("lists the bases and the caller's adapters only", async () => {
    const ids: string[] = [];
    for await (const model of client.models.list()) ids.push(model.id);
    expect(ids).toEqual([BASE, IDLE_BASE, `${BASE}:acme/a0`, `${BASE}:acme/a1`, `${BASE}:acme/a2`]);
  });

  it("serves its dashboard's pages though it runs outside the package (JSX compiled by the package's tsconfig)", async () => {
    const page = await fetch(`${gatewayUrl}/dashboard/login`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("<form");
  });

  it("answers a chat completion on an adapter and bills exactly the usage it reports", async () => {
    const completion = await client.chat.completions.create({
      model: `${BASE}:acme/a1`,
      messages,
      max_tokens: 7,
      temperature: 0,
    });
    expect(completion.choices[0]?.finish_reason).toBe("length");
    expect(completion.usage?.completion_tokens).toBe(7);
    const event = await billed(requestIdOf(completion.id));
    expect(event).toMatchObject({
      org: "acme",
      base: BASE,
      adapter: "acme/a1",
      input_tokens: completion.usage?.prompt_tokens,
      output_tokens: 7,
      finish_reason: "length",
    });
  });

  it("streams a chat completion whose usage chunk matches the bill", async () => {
    const stream = await client.chat.completions.create({
      model: `${BASE}:acme/a0`,
      messages,
      max_tokens: 12,
      stream: true,
      stream_options: { include_usage: true },
    });
    let chunks = 0;
    let id = "";
    let usageChunk: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      id = chunk.id;
      if (chunk.choices[0]?.delta.content !== undefined) chunks++;
      usageChunk = chunk.usage ?? usageChunk;
    }
    expect(chunks).toBeGreaterThan(1);
    expect(usageChunk?.completion_tokens).toBe(12);
    const event = await billed(requestIdOf(id));
    expect(event.output_tokens).toBe(12);
    expect(event.input_tokens).toBe(usageChunk?.prompt_tokens);
  });

  it("gives the same greedy text streaming and not", async () => {
    const request = { model: `${BASE}:acme/a2`, messages, max_tokens: 10, temperature: 0 };
    const whole = await client.chat.completions.create(request);
    const stream = await client.chat.completions.create({ ...request, stream: true });
    let text = "";
    for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? "";
    expect(text).toBe(whole.choices[0]?.message.content);
  });

  it("honours vLLM's top_k and min_p: a hot draw cut to the best token is the greedy text", async () => {
    const request = { model: `${BASE}:acme/a2`, messages, max_tokens: 10 };
    const text = async (extra: Record<string, number>) =>
      (await client.chat.completions.create({ ...request, ...extra })).choices[0]?.message.content;
    const greedy = await text({ temperature: 0 });
    // The tiny model's random logits are flat: a hot draw strays from the greedy text at once.
    expect(await text({ temperature: 1.5, seed: 1 })).not.toBe(greedy);
    expect(await text({ temperature: 1.5, seed: 2, top_k: 1 })).toBe(greedy);
    expect(await text({ temperature: 1.5, seed: 3, min_p: 1 })).toBe(greedy);
  });

  it("ends on vLLM's stop_token_ids, held off by its min_tokens", async () => {
    const [x] = loadTokenizer(modelDir).encode("x", { addSpecialTokens: false });
    // A bias that makes the caller's stop token the answer's every pick.
    const request = {
      model: BASE,
      messages,
      max_tokens: 12,
      temperature: 0,
      logit_bias: { [String(x)]: 100 },
    };
    const answer = async (extra: Record<string, unknown>) => {
      const completion = await client.chat.completions.create({ ...request, ...extra });
      const choice = completion.choices[0]!;
      return {
        finish: choice.finish_reason,
        tokens: completion.usage!.completion_tokens,
        text: choice.message.content,
      };
    };
    expect(await answer({})).toMatchObject({ finish: "length", tokens: 12, text: "x".repeat(12) });
    expect(await answer({ stop_token_ids: [x] })).toEqual({ finish: "stop", tokens: 1, text: "" });
    // min_tokens 5: five tokens that are not the stop token, then the stop token.
    const held = await answer({ stop_token_ids: [x], min_tokens: 5 });
    expect(held).toMatchObject({ finish: "stop", tokens: 6 });
    expect(held.text).not.toContain("x");
  });

  it("serves legacy completions, streaming and not", async () => {
    const completion = await client.completions.create({
      model: BASE,
      prompt: "Once upon a time",
      max_tokens: 5,
    });
    expect(completion.usage?.completion_tokens).toBe(5);
    const stream = await client.completions.create({
      model: BASE,
      prompt: "Once",
      max_tokens: 5,
      stream: true,
    });
    let finish: string | null = null;
    for await (const chunk of stream) finish = chunk.choices[0]?.finish_reason ?? finish;
    expect(finish).toBe("length");
  });

  it("reports each token's own bytes in logprobs, and logit_bias forces a token", async () => {
    // 😀 is F0 9F 98 80; the tiny vocabulary has a token per byte, so F0's token ends inside a character.
    const [lead] = loadTokenizer(modelDir).encode("😀", { addSpecialTokens: false });
    const forced = await client.chat.completions.create({
      model: `${BASE}:acme/a0`,
      messages,
      max_tokens: 4,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
      logit_bias: { [String(lead)]: 100 },
    });
    const tokens = forced.choices[0]?.logprobs?.content ?? [];
    expect(tokens.map((t) => t.token)).toEqual(Array(4).fill("bytes:\\xf0"));
    for (const t of tokens) {
      expect(t.bytes).toEqual([0xf0]);
      expect(t.logprob).toBeGreaterThan(-1e-3);
      expect(t.top_logprobs[0]).toMatchObject({ token: "bytes:\\xf0", bytes: [0xf0] });
    }

    // Unforced, the tokens' bytes join into the text, however the model splits characters.
    const free = await client.chat.completions.create({
      model: `${BASE}:acme/a1`,
      messages,
      max_tokens: 24,
      temperature: 0,
      logprobs: true,
    });
    const bytes = (free.choices[0]?.logprobs?.content ?? []).flatMap((t) => t.bytes ?? []);
    expect(bytes.length).toBeGreaterThanOrEqual(24);
    expect(new TextDecoder().decode(Uint8Array.from(bytes))).toBe(free.choices[0]?.message.content);

    // Legacy completions, streamed: each token's text_offset is where it starts in the streamed text.
    const stream = await client.completions.create({
      model: BASE,
      prompt: "Once",
      max_tokens: 12,
      logprobs: 1,
      stream: true,
      temperature: 0,
    });
    let text = "";
    const offsets: number[] = [];
    const tokenBytes: number[][] = [];
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      text += choice?.text ?? "";
      offsets.push(...(choice?.logprobs?.text_offset ?? []));
      for (const t of choice?.logprobs?.tokens ?? []) tokenBytes.push([...tokenTextBytes(t)]);
    }
    expect(offsets).toHaveLength(12);
    const decoder = new TextDecoder();
    let at = 0;
    for (const [i, b] of tokenBytes.entries()) {
      expect(offsets[i]).toBe(at);
      at += decoder.decode(Uint8Array.from(b), { stream: true }).length;
    }
    expect(at + decoder.decode().length).toBe(text.length);
  });

  it("scores a prompt as lm-eval-harness asks: echo with logprobs gives each prompt token's logprob, as greedy generation reported it", async () => {
    const tokenizer = loadTokenizer(modelDir);
    const idOfBytes = new Map<string, number>();
    for (let id = 0; id < tokenizer.vocabSize; id++) {
      idOfBytes.set(Buffer.from(tokenizer.tokenBytes(id)).toString("hex"), id);
    }
    const model = `${BASE}:acme/a2`;
    const prompt = "Once upon a time";
    const context = tokenizer.encode(prompt, { addSpecialTokens: true });
    const generated = await client.completions.create({
      model,
      prompt: context,
      max_tokens: 8,
      temperature: 0,
      logprobs: 1,
    });
    const reported = generated.choices[0]!.logprobs!;
    const continuation = reported.tokens!.map(
      (t) => idOfBytes.get(Buffer.from(tokenTextBytes(t)).toString("hex"))!,
    );
    expect(continuation.every((id) => id !== undefined)).toBe(true);
    const all = context.length + continuation.length;
    // lm-eval-harness's loglikelihood request: context and continuation as ids, echo, logprobs 1, and
    // max_tokens 1 (it drops the generated token) or 0.
    let scoredAlone: (number | null)[] = [];
    for (const maxTokens of [0, 1]) {
      const scored = await client.completions.create({
        model,
        prompt: [...context, ...continuation],
        max_tokens: maxTokens,
        temperature: 0,
        logprobs: 1,
        echo: true,
      });
      const choice = scored.choices[0]!;
      const logprobs = choice.logprobs!;
      expect(logprobs.tokens).toHaveLength(all + maxTokens);
      expect(logprobs.tokens!.slice(context.length, all)).toEqual(reported.tokens);
      expect(logprobs.token_logprobs![0]).toBeNull();
      expect(logprobs.top_logprobs![0]).toBeNull();
      expect(choice.text.startsWith(prompt + generated.choices[0]!.text)).toBe(true);
      if (maxTokens === 0) scoredAlone = logprobs.token_logprobs!;
      const tail = logprobs.token_logprobs!.slice(context.length, all);
      for (const [i, logprob] of tail.entries()) expect(logprob).toBeCloseTo(reported.token_logprobs![i]!, 3);
      // Each continuation token was the greedy one: its logprob is its position's best.
      const tops = logprobs.top_logprobs!.slice(context.length, all);
      for (const [i, top] of tops.entries()) expect(tail[i]).toBeCloseTo(Math.max(...Object.values(top!)), 6);
      expect(choice.finish_reason).toBe("length");
      expect(scored.usage).toMatchObject({ prompt_tokens: all, completion_tokens: maxTokens });
      expect(await billed(requestIdOf(scored.id))).toMatchObject({
        adapter: "acme/a2",
        input_tokens: all,
        output_tokens: maxTokens,
      });
    }

    // With a batch_size above 1 it sends several prompts in one request: each is scored as it is alone.
    const batch = await client.completions.create({
      model,
      prompt: [[...context, ...continuation], context],
      max_tokens: 0,
      temperature: 0,
      logprobs: 1,
      echo: true,
    });
    expect(batch.choices.map((c) => c.index)).toEqual([0, 1]);
    const [both, contextOnly] = batch.choices.map((c) => c.logprobs!.token_logprobs!);
    expect(both).toHaveLength(all);
    for (const [i, logprob] of both!.entries()) {
      if (i === 0) expect(logprob).toBeNull();
      else expect(logprob).toBeCloseTo(scoredAlone[i]!, 4);
    }
    expect(contextOnly).toHaveLength(context.length);
    expect(batch.usage).toMatchObject({ prompt_tokens: all + context.length, completion_tokens: 0 });

    // Streamed, the echo comes first, with the prompt tokens' logprobs; the text is the unstreamed answer's.
    const whole = await client.completions.create({
      model,
      prompt,
      max_tokens: 5,
      temperature: 0,
      echo: true,
    });
    const stream = await client.completions.create({
      model,
      prompt,
      max_tokens: 5,
      temperature: 0,
      echo: true,
      logprobs: 2,
      stream: true,
    });
    const texts: string[] = [];
    const offsets: number[] = [];
    const tokenLogprobs: (number | null)[] = [];
    for await (const chunk of stream) {
      const choice = chunk.choices[0];
      if (!choice || (choice.text === "" && !choice.logprobs)) continue;
      texts.push(choice.text);
      offsets.push(...(choice.logprobs?.text_offset ?? []));
      tokenLogprobs.push(...(choice.logprobs?.token_logprobs ?? []));
    }
    expect(texts[0]).toBe(prompt);
    expect(texts.join("")).toBe(whole.choices[0]!.text);
    expect(tokenLogprobs).toHaveLength(context.length + 5);
    expect(tokenLogprobs.filter((l) => l === null)).toHaveLength(1);
    // Offsets index the echoed text: the first generated token starts where the prompt ends.
    expect(offsets[context.length]).toBe(prompt.length);

    // vLLM's prompt_logprobs on chat: per prompt token, its own and the two most likely, ranked.
    const chat = (await client.chat.completions.create({
      model,
      messages,
      max_tokens: 2,
      temperature: 0,
      prompt_logprobs: 2,
    } as OpenAI.ChatCompletionCreateParamsNonStreaming)) as OpenAI.ChatCompletion & {
      prompt_logprobs: (Record<string, { logprob: number; rank: number; decoded_token: string }> | null)[];
    };
    expect(chat.prompt_logprobs).toHaveLength(chat.usage!.prompt_tokens);
    expect(chat.prompt_logprobs[0]).toBeNull();
    for (const position of chat.prompt_logprobs.slice(1)) {
      const entries = Object.values(position!);
      expect(entries.length).toBeGreaterThanOrEqual(2);
      expect(entries.length).toBeLessThanOrEqual(3);
      const best = Math.max(...entries.map((e) => e.logprob));
      for (const e of entries) {
        expect(e.logprob).toBeLessThanOrEqual(0);
        if (e.rank === 1) expect(e.logprob).toBe(best);
      }
    }
  });

  it("serves 20 concurrent requests over mixed adapters, each run and billed on its own adapter", async () => {
    const models = Array.from({ length: 20 }, (_, i) => (i % 4 === 3 ? BASE : `${BASE}:acme/a${i % 3}`));
    const results = await Promise.all(
      models.map(async (model, i) => {
        const maxTokens = 3 + (i % 5);
        if (i % 2 === 0) {
          const r = await client.chat.completions.create({ model, messages, max_tokens: maxTokens });
          return { model, id: r.id, tokens: r.usage?.completion_tokens, maxTokens };
        }
        const stream = await client.chat.completions.create({
          model,
          messages,
          max_tokens: maxTokens,
          stream: true,
          stream_options: { include_usage: true },
        });
        let id = "";
        let tokens: number | undefined;
        for await (const chunk of stream) {
          id = chunk.id;
          tokens = chunk.usage?.completion_tokens ?? tokens;
        }
        return { model, id, tokens, maxTokens };
      }),
    );
    for (const r of results) {
      expect(r.tokens).toBe(r.maxTokens);
      const event = await billed(requestIdOf(r.id));
      expect(event.adapter).toBe(r.model === BASE ? null : r.model.split(":")[1]);
      expect(event.output_tokens).toBe(r.maxTokens);
    }
  });

  it("answers n choices, choice i as a one-choice request with seed + i, each billed on its own", async () => {
    const request = {
      model: `${BASE}:acme/a2`,
      messages: [
        {
          role: "user" as const,
          content: `Once there was a lighthouse keeper who counted ships. ${"The sea was calm. ".repeat(8)}Three different endings, please`,
        },
      ],
      max_tokens: 6,
      temperature: 1,
    };
    const together = await client.chat.completions.create({ ...request, n: 3, seed: 11 });
    const alone = await Promise.all(
      [11, 12, 13].map((seed) => client.chat.completions.create({ ...request, seed })),
    );
    const texts = together.choices.map((c) => c.message.content);
    expect(texts).toEqual(alone.map((r) => r.choices[0]?.message.content));
    expect(new Set(texts).size).toBeGreaterThan(1);

    const stream = await client.chat.completions.create({
      ...request,
      n: 3,
      seed: 11,
      stream: true,
      stream_options: { include_usage: true },
    });
    const streamed = ["", "", ""];
    let id = "";
    let streamedUsage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      id = chunk.id;
      streamedUsage = chunk.usage ?? streamedUsage;
      for (const choice of chunk.choices) streamed[choice.index] += choice.delta.content ?? "";
    }
    expect(streamed).toEqual(texts);

    // The later choices of the first request prefilled only what the first choice's prompt cache did not
    // cover (the worker holds them back a step for it); the streamed request's choices all found it.
    const prompt = together.usage?.prompt_tokens ?? 0;
    const cachedPerChoice = Math.floor((prompt / 3 - 1) / 16) * 16;
    expect(cachedPerChoice).toBeGreaterThanOrEqual(64);
    for (const [responseId, reported, cachedChoices] of [
      [together.id, together.usage, 2],
      [id, streamedUsage, 3],
    ] as const) {
      const requestId = requestIdOf(responseId);
      const events = await Promise.all([requestId, `${requestId}-1`, `${requestId}-2`].map(billed));
      expect(events.map((e) => e.output_tokens)).toEqual([6, 6, 6]);
      expect(events.reduce((sum, e) => sum + (e.cached_input_tokens ?? 0), 0)).toBe(
        cachedChoices * cachedPerChoice,
      );
      expect(reported).toMatchObject({
        prompt_tokens: events.reduce((sum, e) => sum + e.input_tokens, 0),
        completion_tokens: 18,
        prompt_tokens_details: {
          cached_tokens: events.reduce((sum, e) => sum + (e.cached_input_tokens ?? 0), 0),
        },
      });
    }
  });

  it("answers in JSON mode with one JSON object, closed or cut at max_tokens, streaming and not", async () => {
    const request = {
      model: `${BASE}:acme/a1`,
      messages: [{ role: "user" as const, content: "Describe a cat as a JSON object" }],
      response_format: { type: "json_object" as const },
      max_tokens: 200,
      temperature: 1,
    };
    const answers = await Promise.all(
      [1, 2, 3, 4].map((seed) => client.chat.completions.create({ ...request, seed })),
    );
    let closed = 0;
    for (const answer of answers) {
      const [choice] = answer.choices;
      expect(choice?.message.content?.startsWith("{")).toBe(true);
      if (choice?.finish_reason === "stop") {
        closed++;
        expect(JSON.parse(choice.message.content ?? "")).toBeTypeOf("object");
      } else {
        expect(answer.usage?.completion_tokens).toBe(200);
      }
    }
    expect(closed).toBeGreaterThan(0);
    const stream = await client.chat.completions.create({ ...request, seed: 1, stream: true });
    let streamed = "";
    for await (const chunk of stream) streamed += chunk.choices[0]?.delta.content ?? "";
    expect(streamed).toBe(answers[0]?.choices[0]?.message.content);
  });

  it("answers with a JSON schema's instance, keys in order and types kept, or refuses the schema", async () => {
    const schema = {
      type: "object",
      properties: {
        city: { type: "string", maxLength: 8 },
        days: { type: "integer" },
        tags: { type: "array", items: { enum: ["sea", "hills"] }, maxItems: 3 },
      },
      required: ["city", "days", "tags"],
      additionalProperties: false,
    };
    const answers = await Promise.all(
      [1, 2, 3, 4].map((seed) =>
        client.chat.completions.create({
          model: `${BASE}:acme/a0`,
          messages: [{ role: "user" as const, content: "Plan a trip" }],
          response_format: { type: "json_schema", json_schema: { name: "trip", strict: true, schema } },
          max_tokens: 200,
          temperature: 1,
          seed,
        }),
      ),
    );
    let closed = 0;
    for (const answer of answers) {
      const [choice] = answer.choices;
      if (choice?.finish_reason !== "stop") continue;
      closed++;
      const trip = JSON.parse(choice.message.content ?? "") as Record<string, unknown>;
      expect(Object.keys(trip)).toEqual(["city", "days", "tags"]);
      expect([...(trip.city as string)].length).toBeLessThanOrEqual(8);
      expect(Number.isInteger(trip.days)).toBe(true);
      expect((trip.tags as string[]).every((t) => t === "sea" || t === "hills")).toBe(true);
    }
    expect(closed).toBeGreaterThan(0);
    await expect(
      client.chat.completions.create({
        model: BASE,
        messages,
        response_format: {
          type: "json_schema",
          json_schema: {
            name: "trip",
            strict: true,
            schema: {
              ...schema,
              properties: { ...schema.properties, city: { type: "string", format: "uri" } },
            },
          },
        },
      }),
    ).rejects.toMatchObject({ status: 400, param: "response_format.json_schema.schema" });
  });

  it("answers a zod schema's strict format through the SDK's parse: e-mail, date, UUID and bounded numbers", async () => {
    const booking = z.object({
      email: z.email().max(24),
      day: z.iso.date(),
      id: z.uuid(),
      guests: z.int().min(1).max(8),
      price: z.number().positive().max(1000).multipleOf(0.01),
    });
    const answers = await Promise.all(
      [1, 2, 3].map((seed) =>
        client.chat.completions.parse({
          model: `${BASE}:acme/a1`,
          messages: [{ role: "user" as const, content: "Book a table" }],
          response_format: zodResponseFormat(booking, "booking"),
          max_tokens: 400,
          temperature: 1,
          seed,
        }),
      ),
    );
    for (const answer of answers) {
      const [choice] = answer.choices;
      // Every field is bounded, so the value always completes; the SDK has run zod's own parse on it.
      expect(choice?.finish_reason).toBe("stop");
      const parsed = choice?.message.parsed;
      expect(booking.parse(parsed)).toEqual(parsed);
      expect(Number.isNaN(Date.parse(parsed!.day))).toBe(false);
    }
  });

  it("answers exactly one of a choice's labels, a regex's match or a grammar's string through vLLM's structured outputs; draws only allowed_token_ids", async () => {
    const labels = ["positive", "negative", "neutral", "mixed ☯"];
    const classified = await Promise.all(
      [1, 2, 3, 4].map((seed) =>
        client.chat.completions.create({
          model: seed === 4 ? BASE : `${BASE}:acme/a${seed % 3}`,
          messages: [{ role: "user" as const, content: "Classify: the food was cold" }],
          max_tokens: 20,
          temperature: 1,
          seed,
          // vLLM's current field, and the guided_* field it replaced.
          ...(seed % 2 === 0 ? { structured_outputs: { choice: labels } } : { guided_choice: labels }),
        } as OpenAI.ChatCompletionCreateParamsNonStreaming),
      ),
    );
    for (const answer of classified) {
      expect(labels).toContain(answer.choices[0]?.message.content);
      expect(answer.choices[0]?.finish_reason).toBe("stop");
    }
    const completion = await client.completions.create({
      model: `${BASE}:acme/a1`,
      prompt: "Order number:",
      max_tokens: 12,
      temperature: 1,
      seed: 9,
      structured_outputs: { regex: "[A-Z]{2}-\\d{4}" },
    } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(completion.choices[0]?.text).toMatch(/^[A-Z]{2}-\d{4}$/);
    expect(completion.choices[0]?.finish_reason).toBe("stop");
    // response_format on completions, as vLLM takes it there: the text is an instance of the schema.
    const formatted = await client.completions.create({
      model: `${BASE}:acme/a2`,
      prompt: "Verdict:",
      max_tokens: 24,
      temperature: 1,
      seed: 5,
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "verdict",
          strict: true,
          schema: {
            type: "object",
            properties: { ok: { type: "boolean" }, n: { type: "integer", minimum: 0, maximum: 9 } },
            required: ["ok", "n"],
            additionalProperties: false,
          },
        },
      },
    } as OpenAI.CompletionCreateParamsNonStreaming);
    const verdict = JSON.parse(formatted.choices[0]!.text) as { ok: unknown; n: number };
    expect(Object.keys(verdict)).toEqual(["ok", "n"]);
    expect(typeof verdict.ok).toBe("boolean");
    expect(verdict.n >= 0 && verdict.n <= 9 && Number.isInteger(verdict.n)).toBe(true);
    await expect(
      client.completions.create({
        model: BASE,
        prompt: "x",
        response_format: { type: "json_object" },
        guided_regex: "b",
      } as OpenAI.CompletionCreateParamsNonStreaming),
    ).rejects.toMatchObject({ status: 400, param: "response_format" });
    // A grammar, here one no regex can say: nested lists, answered whole; in vLLM's EBNF and in Lark.
    const lists = 'root ::= list\nlist ::= "[" (item ("," item)*)? "]"\nitem ::= [0-9] | list';
    const larkLists = 'start: list\nlist: "[" [item ("," item)*] "]"\nitem: /[0-9]/ | list';
    const nested = (text: string): boolean => {
      const items = (s: string): string | null => {
        if (!s.startsWith("[")) return null;
        let rest = s.slice(1);
        if (rest.startsWith("]")) return rest.slice(1);
        for (;;) {
          const after = /^[0-9]/.test(rest) ? rest.slice(1) : items(rest);
          if (after === null) return null;
          if (after.startsWith("]")) return after.slice(1);
          if (!after.startsWith(",")) return null;
          rest = after.slice(1);
        }
      };
      return items(text) === "";
    };
    for (const [seed, body] of [
      [3, { structured_outputs: { grammar: lists } }],
      [4, { guided_grammar: larkLists }],
    ] as [number, Record<string, unknown>][]) {
      const answer = await client.chat.completions.create({
        model: `${BASE}:acme/a2`,
        messages: [{ role: "user" as const, content: "A nested list, please" }],
        max_tokens: 16,
        temperature: 1,
        seed,
        ...body,
      } as OpenAI.ChatCompletionCreateParamsNonStreaming);
      const content = answer.choices[0]?.message.content ?? "";
      expect(nested(content), content).toBe(true);
      expect(answer.choices[0]?.finish_reason).toBe("stop");
    }
    // vLLM's allowed_token_ids: only "a" and "b" (no end of sequence: it runs to max_tokens); a stop
    // string kept at the end with include_stop_str_in_output.
    const allowed = ["a", "b"].map((c) => loadTokenizer(modelDir).encode(c, { addSpecialTokens: false })[0]!);
    const letters = (extra: Record<string, unknown> = {}) =>
      client.completions.create({
        model: BASE,
        prompt: "Letters:",
        max_tokens: 10,
        temperature: 1,
        seed: 4,
        allowed_token_ids: allowed,
        ...extra,
      } as OpenAI.CompletionCreateParamsNonStreaming);
    const ab = await letters();
    expect(ab.choices[0]?.text).toMatch(/^[ab]{10}$/);
    expect(ab.usage?.completion_tokens).toBe(10);
    // bad_words: "b" is never drawn, so only "a" is left.
    expect((await letters({ bad_words: ["b"] })).choices[0]?.text).toBe("a".repeat(10));
    const kept = await letters({ stop: ["b"], include_stop_str_in_output: true });
    // The same seed draws the same letters up to the stop (or all ten, if no "b" came).
    const drawn = ab.choices[0]!.text;
    const firstB = drawn.indexOf("b");
    expect(kept.choices[0]?.text).toBe(firstB < 0 ? drawn : drawn.slice(0, firstB + 1));
    const streamed = await client.chat.completions.create({
      model: BASE,
      messages: [{ role: "user" as const, content: "Yes or no?" }],
      stream: true,
      guided_choice: ["yes", "no"],
    } as OpenAI.ChatCompletionCreateParamsStreaming);
    let text = "";
    for await (const chunk of streamed) text += chunk.choices[0]?.delta.content ?? "";
    expect(["yes", "no"]).toContain(text);
    // Refused, naming the field: two constraints, grammars that cannot be compiled, a structural tag, a
    // regex that cannot be compiled.
    for (const [extra, param] of [
      [{ guided_choice: ["a"], guided_regex: "b" }, "guided_regex"],
      [{ structured_outputs: { grammar: "root ::= 'a'" } }, "structured_outputs.grammar"],
      [{ guided_grammar: 'root ::= root "a" | "b"' }, "guided_grammar"],
      [
        { structured_outputs: { structural_tag: { type: "structural_tag" } } },
        "structured_outputs.structural_tag",
      ],
      [{ guided_regex: "a(?=b)" }, "guided_regex"],
      [{ guided_json: "{not json" }, "guided_json"],
      [{ guided_choice: [] }, "guided_choice"],
      [{ allowed_token_ids: [1_000_000] }, "allowed_token_ids"],
      [{ guided_choice: ["x"], response_format: { type: "json_object" } }, "response_format"],
    ] as [Record<string, unknown>, string][]) {
      await expect(
        client.chat.completions.create({
          model: BASE,
          messages: [{ role: "user" as const, content: "Say it in JSON" }],
          ...extra,
        } as OpenAI.ChatCompletionCreateParamsNonStreaming),
      ).rejects.toMatchObject({ status: 400, param });
    }
  });

  it("runs a Batch API batch of mixed-adapter lines on the workers and bills every line, and a flex request, as a batch line; a priority request is marked so", async () => {
    const lines = [`${BASE}:acme/a0`, `${BASE}:acme/a1`, BASE, `${BASE}:acme/a2`].map((model, i) =>
      JSON.stringify({
        custom_id: `line-${i}`,
        method: "POST",
        url: "/v1/chat/completions",
        body: { model, messages, max_tokens: 4 + i },
      }),
    );
    const file = await client.files.create({
      file: await toFile(Buffer.from(`${lines.join("\n")}\n`), "nightly.jsonl"),
      purpose: "batch",
    });
    const created = await client.batches.create({
      input_file_id: file.id,
      endpoint: "/v1/chat/completions",
      completion_window: "24h",
    });
    // The gateway process's runner takes the lines within its poll.
    let batch = created;
    const deadline = Date.now() + 60_000;
    while (batch.status !== "completed" && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      batch = await client.batches.retrieve(created.id);
    }
    expect(batch.status).toBe("completed");
    expect(batch.request_counts).toEqual({ total: 4, completed: 4, failed: 0 });
    const output = (await (await client.files.content(batch.output_file_id!)).text())
      .split("\n")
      .filter((line) => line !== "")
      .map(
        (line) =>
          JSON.parse(line) as {
            custom_id: string;
            response: { request_id: string; body: OpenAI.ChatCompletion };
          },
      );
    expect(output.map((line) => line.custom_id)).toEqual(["line-0", "line-1", "line-2", "line-3"]);
    for (const [i, line] of output.entries()) {
      expect(line.response.body.usage?.completion_tokens).toBe(4 + i);
      // Billed as any request: its usage event carries the line's request id and its tokens.
      const event = await eventually(`usage of ${line.custom_id}`, () => usage.get(line.response.request_id));
      expect(event.output_tokens).toBe(4 + i);
      expect(event.batch).toBe(true);
    }
    // A live request at the flex tier is billed as a batch line is.
    const flex = await client.chat.completions.create({
      model: `${BASE}:acme/a1`,
      messages,
      max_tokens: 2,
      service_tier: "flex",
    });
    expect(flex.service_tier).toBe("flex");
    const flexUsage = await eventually("usage of the flex request", () =>
      usage.get(flex.id.replace(/^chatcmpl-/, "")),
    );
    expect(flexUsage.batch).toBe(true);
    // One at the priority tier: its usage event says so, for the meter's priority price.
    const priority = await client.chat.completions.create({
      model: `${BASE}:acme/a1`,
      messages,
      max_tokens: 2,
      service_tier: "priority",
    });
    expect(priority.service_tier).toBe("priority");
    expect(await billed(requestIdOf(priority.id))).toMatchObject({ priority: true, output_tokens: 2 });
  });

  it("calls a required function with arguments of its schema, streaming and not, and takes the result back", async () => {
    const tools = [
      {
        type: "function" as const,
        function: {
          name: "forecast",
          parameters: {
            type: "object",
            properties: { city: { type: "string", maxLength: 10 }, days: { type: "integer" } },
            required: ["city", "days"],
          },
        },
      },
      {
        type: "function" as const,
        function: { name: "clock", parameters: { type: "object", properties: {} } },
      },
    ];
    const request = {
      model: `${BASE}:acme/a1`,
      messages: [{ role: "user" as const, content: "Will it rain in Oslo?" }],
      tools,
      tool_choice: "required" as const,
      max_tokens: 120,
      temperature: 1,
      seed: 3,
    };
    const answer = await client.chat.completions.create(request);
    const [choice] = answer.choices;
    expect(choice?.finish_reason).toBe("tool_calls");
    expect(choice?.message.content).toBeNull();
    const [call] = choice?.message.tool_calls ?? [];
    expect(call?.type).toBe("function");
    const fn = (call as { function: { name: string; arguments: string } }).function;
    expect(["forecast", "clock"]).toContain(fn.name);
    const args = JSON.parse(fn.arguments) as Record<string, unknown>;
    if (fn.name === "forecast") {
      expect(Object.keys(args)).toEqual(["city", "days"]);
      expect(Number.isInteger(args.days)).toBe(true);
    } else expect(args).toEqual({});

    // Streamed as OpenAI streams calls: the id and name first, then the arguments in pieces.
    const stream = await client.chat.completions.create({ ...request, stream: true });
    const deltas: { id?: string; name?: string; arguments?: string }[] = [];
    let finish: string | null = null;
    let content = "";
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta;
      content += delta?.content ?? "";
      for (const c of delta?.tool_calls ?? []) deltas.push({ id: c.id, ...c.function });
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(content).toBe("");
    expect(finish).toBe("tool_calls");
    expect(deltas[0]).toMatchObject({ id: expect.stringMatching(/^call_/), name: fn.name });
    expect(deltas.slice(1).every((d) => d.id === undefined && d.name === undefined)).toBe(true);
    const streamedArguments = deltas.map((d) => d.arguments ?? "").join("");
    expect(JSON.parse(streamedArguments)).toEqual(JSON.parse(fn.arguments));

    // The call and its result go back to the model, which answers on.
    const followUp = await client.chat.completions.create({
      model: `${BASE}:acme/a1`,
      messages: [
        ...request.messages,
        { role: "assistant", content: null, tool_calls: [call!] },
        { role: "tool", tool_call_id: call!.id, content: '{"rain": true}' },
      ],
      tools,
      tool_choice: "none",
      max_tokens: 5,
    });
    expect(followUp.choices[0]?.finish_reason).toBe("length");
    expect(followUp.choices[0]?.message.content?.length).toBeGreaterThan(0);

    // Beside a response_format, as an SDK's tool loop sends them: a required call is a call, and an auto
    // answer is a call or an instance of the format, never text of neither.
    const verdict = {
      type: "json_schema" as const,
      json_schema: {
        name: "verdict",
        strict: true,
        schema: {
          type: "object",
          properties: { rain: { type: "boolean" } },
          required: ["rain"],
          additionalProperties: false,
        },
      },
    };
    const formatted = await client.chat.completions.create({ ...request, response_format: verdict });
    expect(formatted.choices[0]?.finish_reason).toBe("tool_calls");
    for (const seed of [1, 2, 3, 4]) {
      const auto = await client.chat.completions.create({
        ...request,
        tool_choice: "auto",
        response_format: verdict,
        seed,
      });
      const [picked] = auto.choices;
      if (picked?.finish_reason === "tool_calls") {
        expect(["forecast", "clock"]).toContain(
          (picked.message.tool_calls![0] as { function: { name: string } }).function.name,
        );
      } else expect(Object.keys(JSON.parse(picked!.message.content!))).toEqual(["rain"]);
    }
  });

  it("serves the Responses API: greedy text as chat, a required call streamed, a schema instance, a continued conversation from the prefix cache", async () => {
    const model = `${BASE}:acme/a2`;
    const chat = await client.chat.completions.create({
      model,
      messages: [
        { role: "system", content: "Answer briefly." },
        { role: "user", content: "Tell me a story" },
      ],
      max_tokens: 8,
      temperature: 0,
    });
    const response = await client.responses.create({
      model,
      instructions: "Answer briefly.",
      input: "Tell me a story",
      max_output_tokens: 8,
      temperature: 0,
    });
    expect(response.output_text).toBe(chat.choices[0]?.message.content);
    expect(response.status).toBe("incomplete");
    const bill = await billed(requestIdOf(response.id));
    expect(bill.input_tokens).toBe(response.usage?.input_tokens);
    expect(bill.output_tokens).toBe(response.usage?.output_tokens);
    expect(bill.adapter).toBe("acme/a2");

    // A required call, streamed: the item opens with its name, the arguments come in pieces.
    const tools = [
      {
        type: "function" as const,
        name: "forecast",
        parameters: {
          type: "object",
          properties: { city: { type: "string", maxLength: 10 }, days: { type: "integer" } },
          required: ["city", "days"],
          additionalProperties: false,
        },
        strict: true,
      },
    ];
    const stream = await client.responses.create({
      model,
      input: "Will it rain in Oslo?",
      tools,
      tool_choice: "required",
      max_output_tokens: 120,
      temperature: 1,
      stream: true,
    });
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of stream) events.push(event);
    const added = events.find((e) => e.type === "response.output_item.added");
    expect(added?.type === "response.output_item.added" && added.item).toMatchObject({
      type: "function_call",
      name: "forecast",
      call_id: expect.stringMatching(/^call_/),
    });
    const pieces = events.flatMap((e) =>
      e.type === "response.function_call_arguments.delta" ? [e.delta] : [],
    );
    const done = events.at(-1);
    if (done?.type !== "response.completed") throw new Error(`ended with ${done?.type}`);
    const [call] = done.response.output;
    if (call?.type !== "function_call") throw new Error("no call");
    expect(pieces.join("")).toBe(call.arguments);
    const args = JSON.parse(call.arguments) as Record<string, unknown>;
    expect(Object.keys(args)).toEqual(["city", "days"]);
    expect(Number.isInteger(args.days)).toBe(true);

    // The call's output goes back through previous_response_id; the model answers on, in a schema.
    const schema = {
      type: "object",
      properties: { rain: { type: "boolean" }, note: { type: "string", maxLength: 12 } },
      required: ["rain", "note"],
      additionalProperties: false,
    };
    const followUps = await Promise.all(
      [1, 2, 3].map((seedless) =>
        client.responses.create({
          model,
          previous_response_id: done.response.id,
          input: [{ type: "function_call_output", call_id: call.call_id, output: '{"rain": true}' }],
          text: { format: { type: "json_schema", name: "answer", schema, strict: true } },
          max_output_tokens: 60 + seedless,
          temperature: 1,
        }),
      ),
    );
    const closed = followUps.filter((r) => r.status === "completed");
    expect(closed.length).toBeGreaterThan(0);
    for (const answer of closed) {
      const value = JSON.parse(answer.output_text) as Record<string, unknown>;
      expect(Object.keys(value)).toEqual(["rain", "note"]);
      expect(typeof value.rain).toBe("boolean");
    }

    // A conversation continued with previous_response_id prefills only its new turn: the earlier prompt's
    // whole 16-token blocks come from the worker's prefix cache (base-model requests of an org meet on one
    // worker), billed as cached input.
    const opening = await client.responses.create({
      model: BASE,
      input:
        "Tell me a long story about the sea, the ships that sail on it and the people who wait for them.",
      max_output_tokens: 3,
      temperature: 0,
    });
    const next = await client.responses.create({
      model: BASE,
      previous_response_id: opening.id,
      input: "And then?",
      max_output_tokens: 2,
    });
    const cached = next.usage?.input_tokens_details.cached_tokens ?? 0;
    expect(cached).toBeGreaterThanOrEqual(16);
    expect(cached).toBeLessThanOrEqual(opening.usage!.input_tokens);
    expect((await billed(requestIdOf(next.id))).cached_input_tokens).toBe(cached);
  });

  it("calls OpenAI's custom tools: a forced call's input in its Lark grammar or regex, streamed as its input, sent back, and in the Responses API with allowed_tools", async () => {
    // A Lark grammar whose strings a RegExp can check independently.
    const sql = 'start: "SELECT " COL (", " COL)* " FROM " COL ";"\nCOL: /[a-z]{1,6}/';
    const isSql = (text: string) => /^SELECT [a-z]{1,6}(, [a-z]{1,6})* FROM [a-z]{1,6};$/.test(text);
    const tools = [
      {
        type: "custom" as const,
        custom: {
          name: "run_sql",
          description: "Runs one query",
          format: { type: "grammar" as const, grammar: { syntax: "lark" as const, definition: sql } },
        },
      },
      {
        type: "custom" as const,
        custom: {
          name: "ticket",
          format: {
            type: "grammar" as const,
            grammar: { syntax: "regex" as const, definition: "[A-Z]{3}-\\d{3}" },
          },
        },
      },
      { type: "custom" as const, custom: { name: "note" } },
    ];
    const request = {
      model: `${BASE}:acme/a0`,
      messages: [{ role: "user" as const, content: "Which users signed up today?" }],
      tools,
      max_tokens: 40,
      temperature: 1,
    };
    for (const seed of [1, 2]) {
      const answer = await client.chat.completions.create({
        ...request,
        seed,
        tool_choice: { type: "custom", custom: { name: "run_sql" } },
      });
      const [choice] = answer.choices;
      expect(choice?.message.content).toBeNull();
      const [call] = choice?.message.tool_calls ?? [];
      if (call?.type !== "custom") throw new Error(`expected a custom call, got ${JSON.stringify(call)}`);
      expect(call.custom.name).toBe("run_sql");
      expect(call.id).toMatch(/^call_/);
      // Whole within max_tokens (the grammar closes in time), or cut off by it as a prefix.
      if (choice?.finish_reason === "tool_calls")
        expect(isSql(call.custom.input), call.custom.input).toBe(true);
      else expect(choice?.finish_reason).toBe("length");
    }
    const ticket = await client.chat.completions.create({
      ...request,
      seed: 5,
      tool_choice: { type: "custom", custom: { name: "ticket" } },
    });
    const ticketCall = ticket.choices[0]?.message.tool_calls?.[0];
    expect(ticketCall?.type === "custom" && ticketCall.custom.input).toMatch(/^[A-Z]{3}-\d{3}$/);
    expect(ticket.choices[0]?.finish_reason).toBe("tool_calls");

    // Streamed: the call's id, type and name first, then its input in pieces.
    const stream = await client.chat.completions.create({
      ...request,
      seed: 5,
      tool_choice: { type: "custom", custom: { name: "ticket" } },
      stream: true,
    });
    const deltas: Record<string, unknown>[] = [];
    let finish: string | null = null;
    for await (const chunk of stream) {
      for (const delta of chunk.choices[0]?.delta.tool_calls ?? [])
        deltas.push(delta as unknown as Record<string, unknown>);
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(deltas[0]).toMatchObject({
      index: 0,
      id: expect.stringMatching(/^call_/),
      type: "custom",
      custom: { name: "ticket" },
    });
    const streamed = deltas.map((d) => (d.custom as { input?: string }).input ?? "").join("");
    expect(streamed).toBe(ticketCall?.type === "custom" ? ticketCall.custom.input : null);
    expect(finish).toBe("tool_calls");

    // The call and its result go back to the model, which answers on.
    const followUp = await client.chat.completions.create({
      ...request,
      messages: [
        ...request.messages,
        { role: "assistant", content: null, tool_calls: [ticketCall!] },
        { role: "tool", tool_call_id: ticketCall!.id, content: "opened" },
      ],
      tool_choice: "none",
      max_tokens: 4,
    });
    expect(followUp.choices[0]?.message.content?.length).toBeGreaterThan(0);

    // Refused, naming the field: a grammar that cannot run, a function choice naming a custom tool.
    await expect(
      client.chat.completions.create({
        ...request,
        tools: [
          {
            type: "custom",
            custom: {
              name: "bad",
              format: { type: "grammar", grammar: { syntax: "lark", definition: "start: undefined_rule" } },
            },
          },
        ],
      }),
    ).rejects.toMatchObject({ status: 400, param: "tools.0.custom.format.grammar.definition" });
    await expect(
      client.chat.completions.create({
        ...request,
        tool_choice: { type: "function", function: { name: "note" } },
      }),
    ).rejects.toMatchObject({ status: 400, param: "tool_choice" });

    // The Responses API: a custom_tool_call item, streamed as custom_tool_call_input events, and its output
    // sent back as a custom_tool_call_output item.
    const responseTools = [
      {
        type: "custom" as const,
        name: "ticket",
        format: { type: "grammar" as const, syntax: "regex" as const, definition: "[A-Z]{3}-\\d{3}" },
      },
    ];
    const events: OpenAI.Responses.ResponseStreamEvent[] = [];
    for await (const event of await client.responses.create({
      model: `${BASE}:acme/a0`,
      input: "Open a ticket",
      tools: responseTools,
      tool_choice: { type: "custom", name: "ticket" },
      max_output_tokens: 20,
      temperature: 1,
      stream: true,
    })) {
      events.push(event);
    }
    const done = events.at(-1);
    if (done?.type !== "response.completed") throw new Error(`ended with ${done?.type}`);
    const [item] = done.response.output;
    if (item?.type !== "custom_tool_call") throw new Error(`expected a custom_tool_call, got ${item?.type}`);
    expect(item).toMatchObject({
      name: "ticket",
      call_id: expect.stringMatching(/^call_/),
      status: "completed",
    });
    expect(item.input).toMatch(/^[A-Z]{3}-\d{3}$/);
    const pieces = events.flatMap((e) =>
      e.type === "response.custom_tool_call_input.delta" ? [e.delta] : [],
    );
    expect(pieces.join("")).toBe(item.input);
    expect(events.find((e) => e.type === "response.custom_tool_call_input.done")).toMatchObject({
      input: item.input,
    });
    const answered = await client.responses.create({
      model: `${BASE}:acme/a0`,
      previous_response_id: done.response.id,
      input: [{ type: "custom_tool_call_output", call_id: item.call_id, output: "opened" }],
      max_output_tokens: 4,
    });
    expect(answered.output_text.length).toBeGreaterThan(0);
    const items = await client.responses.inputItems.list(answered.id);
    expect(items.data.map((i) => i.type)).toContain("custom_tool_call_output");
    // allowed_tools: every tool is shown, only the allowed one is called (here required: its input whole).
    const restricted = await client.responses.create({
      model: `${BASE}:acme/a0`,
      input: "Open a ticket",
      tools: [
        ...responseTools,
        { type: "function", name: "clock", parameters: { type: "object" }, strict: false },
      ],
      tool_choice: { type: "allowed_tools", mode: "required", tools: [{ type: "custom", name: "ticket" }] },
      max_output_tokens: 20,
      temperature: 1,
    });
    expect(restricted.output).toMatchObject([
      { type: "custom_tool_call", name: "ticket", input: expect.stringMatching(/^[A-Z]{3}-\d{3}$/) },
    ]);
  });

  it("runs a Vercel AI SDK tool loop: a required call under its schema, executed, its result answered on", async () => {
    const provider = createOpenAI({ apiKey: keys.acme, baseURL: `${gatewayUrl}/v1` });
    const calls: { city: string; days: number }[] = [];
    const result = await generateText({
      model: provider(`${BASE}:acme/a0`),
      prompt: "Will it rain in Oslo?",
      tools: {
        forecast: tool({
          // Strict, so the schema holds in full (a lenient one is read without what only narrows values, as
          // OpenAI does not enforce those); a pattern rather than .max(10): zod counts UTF-16 units, JSON
          // Schema's maxLength code points, so a character outside the BMP would count twice here.
          strict: true,
          inputSchema: z.object({ city: z.string().regex(/^[A-Za-z ]{1,10}$/), days: z.number().int() }),
          execute: async (input) => {
            calls.push(input);
            return { rain: true };
          },
        }),
      },
      toolChoice: "required",
      // The first step must call; the second answers with the result.
      prepareStep: ({ stepNumber }) => (stepNumber === 1 ? { toolChoice: "none" } : undefined),
      stopWhen: stepCountIs(2),
      maxOutputTokens: 80,
    });
    expect(result.steps).toHaveLength(2);
    expect(calls).toHaveLength(1);
    expect(Number.isInteger(calls[0]?.days)).toBe(true);
    expect(result.steps[0]?.finishReason).toBe("tool-calls");
    expect(result.steps[1]?.text.length).toBeGreaterThan(0);
  });

  it("answers every error path in OpenAI's shape", async () => {
    const stranger = new OpenAI({
      apiKey: "lk_notAKeyAtAll000000000000",
      baseURL: `${gatewayUrl}/v1`,
      maxRetries: 0,
    });
    await expect(stranger.models.list()).rejects.toMatchObject({ status: 401, code: "invalid_api_key" });
    await expect(
      client.chat.completions.create({ model: `${BASE}:other/a3`, messages }),
    ).rejects.toMatchObject({
      status: 404,
      code: "model_not_found",
    });
    await expect(
      client.chat.completions.create({ model: `${BASE}:acme/a3`, messages }),
    ).rejects.toMatchObject({
      status: 404,
      code: "model_not_found",
    });
    await expect(client.chat.completions.create({ model: BASE, messages, n: 17 })).rejects.toMatchObject({
      status: 400,
      param: "n",
    });
    await expect(
      client.chat.completions.create({ model: BASE, messages, max_tokens: CONTEXT }),
    ).rejects.toMatchObject({ status: 400, code: "context_length_exceeded" });
    const idle = await client.chat.completions
      .create({ model: IDLE_BASE, messages })
      .catch((e: unknown) => e);
    expect(idle).toMatchObject({
      status: 503,
      code: "no_worker",
      message: expect.stringContaining("started within 1 s"),
    });
    // Streaming, the headers go out after 0.3 s and keep-alives follow: the client sees the same error,
    // in-band, and no chunk before it.
    const received: unknown[] = [];
    const streamed = await (async () => {
      const stream = await client.chat.completions.create({ model: IDLE_BASE, messages, stream: true });
      for await (const chunk of stream) received.push(chunk);
    })().catch((e: unknown) => e);
    expect(received).toEqual([]);
    expect(streamed).toMatchObject({ message: expect.stringContaining("started within 1 s") });
    const rawStream = await fetch(`${gatewayUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${keys.acme}`, "content-type": "application/json" },
      body: JSON.stringify({ model: IDLE_BASE, messages, stream: true }),
    });
    expect(rawStream.status).toBe(200);
    expect(await rawStream.text()).toMatch(/^(: keep-alive\n\n)+data: \{"error":\{.*"code":"no_worker"/s);
    const raw = await fetch(`${gatewayUrl}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${keys.acme}`, "content-type": "application/json" },
      body: "{oops",
    });
    expect(raw.status).toBe(400);
    expect(raw.headers.get("x-request-id")).toBeTruthy();
    expect(await raw.json()).toMatchObject({ error: { type: "invalid_request_error" } });
  });

  it("cancels the run when the client goes away mid-stream, and bills only what was generated", async () => {
    const controller = new AbortController();
    const stream = await client.chat.completions.create(
      { model: `${BASE}:acme/a0`, messages, max_tokens: CONTEXT - 100, stream: true },
      { signal: controller.signal },
    );
    let id = "";
    let seen = 0;
    for await (const chunk of stream) {
      id = chunk.id;
      if (chunk.choices[0]?.delta.content && ++seen === 3) break;
    }
    controller.abort();
    const event = await billed(requestIdOf(id));
    expect(event.finish_reason).toBe("cancelled");
    expect(event.output_tokens).toBeGreaterThanOrEqual(3);
    expect(event.output_tokens).toBeLessThan(CONTEXT - 100);
  });
});
