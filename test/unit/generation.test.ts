// Generation through the worker's scheduler on a real engine: sequences join and leave every step, and what
// a sequence generates does not depend on what else runs beside it. Stop conditions end a sequence as
// OpenAI's API defines them; `luminet generate` runs a JSONL file through all of it.
import { spawn } from "node:child_process";
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { registerGenerate } from "../../cli/commands/generate.ts";
import {
  SlotGeneration,
  type SlotGenerationOptions,
  type SlotRequest,
} from "../../scripts/slot-generation.ts";
import { initTinyModel, type TinyModel } from "../../scripts/tiny-model.ts";
import { loadPeftAdapter } from "../../worker/adapters/peft.ts";
import { Engine } from "../../worker/engine/engine.ts";
import { compileGrammar } from "../../worker/engine/grammar-compiler.ts";
import { JsonGrammar } from "../../worker/engine/json-grammar.ts";
import { ANY_OBJECT, compileJsonSchema } from "../../worker/engine/json-schema.ts";
import { Prng } from "../../worker/engine/prng.ts";
import { GREEDY } from "../../worker/engine/sampler.ts";
import { SequenceOutput } from "../../worker/engine/sequence-output.ts";
import { loadTokenizer, type Tokenizer } from "../../worker/engine/tokenizer.ts";
import { type CommandRun, luminetInProcess } from "../support/luminet-command.ts";
import { addReasoningTags } from "../support/reasoning-templates.ts";

const CLI = fileURLToPath(new URL("../../bin/luminet.mjs", import.meta.url));
let root: string;
let tiny: TinyModel;
let engine: Engine;
let tokenizer: Tokenizer;
const options: SlotGenerationOptions = { slots: 6, maxBatch: 16, maxContext: 96, stepTokens: 64 };
const generation = () => new SlotGeneration(engine, tokenizer, options);

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), "luminet-generation-"));
  tiny = initTinyModel(join(root, "model"), { shape: "tiny", adapters: 6, rank: 8, seed: 9 });
  tokenizer = loadTokenizer(tiny.dir);
  engine = await Engine.create({
    modelDir: tiny.dir,
    device: "cpu",
    maxContext: 96,
    slots: 6,
    maxRank: 8,
    maxAdaptersPerStep: 16,
    threads: 1,
  });
  for (const [i, dir] of tiny.adapterDirs.entries())
    await engine.writeAdapter(i + 1, loadPeftAdapter(dir, tiny.config, { maxRank: 8 }));
});

afterAll(async () => {
  await engine.close();
  rmSync(root, { recursive: true, force: true });
});

function request(i: number, overrides: Partial<SlotRequest> = {}): SlotRequest {
  return {
    id: `r${i}`,
    promptTokens: tokenizer.encode(`request number ${i} says hello`),
    slot: i % 7,
    sampling: GREEDY,
    maxTokens: 6 + (i % 5),
    stopTokenIds: [],
    ...overrides,
  };
}

describe("generation through the scheduler", () => {
  it("generates the same greedy tokens for a sequence alone and inside a mixed batch joined mid-flight", async () => {
    const alone = [];
    for (let i = 0; i < 10; i++) alone.push(await generation().generate(request(i)));
    const batcher = generation();
    const first = [0, 1, 2, 3].map((i) => batcher.generate(request(i)));
    await new Promise((r) => setTimeout(r, 5));
    const later = [4, 5, 6, 7, 8, 9].map((i) => batcher.generate(request(i)));
    const together = await Promise.all([...first, ...later]);
    for (const [i, result] of together.entries()) {
      expect(result.tokenIds).toEqual(alone[i]!.tokenIds);
      expect(result.finishReason).toBe("length");
      expect(result.tokenIds).toHaveLength(6 + (i % 5));
    }
    expect(engine.running).toBe(0);
  });

  it("ends at a stop string, which never reaches the text, streamed or final", async () => {
    const free = await generation().generate(request(3, { maxTokens: 24 }));
    const stop = free.text.slice(6, 9);
    expect(stop.length).toBe(3);
    let streamed = "";
    const stopped = await generation().generate(
      request(3, { maxTokens: 24, stopStrings: [stop], onToken: (_, delta) => (streamed += delta) }),
    );
    expect(stopped.finishReason).toBe("stop");
    expect(stopped.text).toBe(free.text.slice(0, free.text.indexOf(stop)));
    expect(streamed).toBe(stopped.text);
  });

  it("ends at a stop token id without emitting it, and at max_tokens with finish_reason length", async () => {
    const free = await generation().generate(request(2, { maxTokens: 8 }));
    const stopToken = free.tokenIds[4]!;
    const stopped = await generation().generate(request(2, { maxTokens: 8, stopTokenIds: [stopToken] }));
    const at = free.tokenIds.indexOf(stopToken);
    expect(stopped.finishReason).toBe("stop");
    expect(stopped.tokenIds).toEqual(free.tokenIds.slice(0, at + 1));
    expect(stopped.text).toBe(tokenizer.decode(free.tokenIds.slice(0, at)));
    expect(free.finishReason).toBe("length");
  });

  it("stops a cancelled sequence within a step and keeps what it generated", async () => {
    const batcher = generation();
    let seen = 0;
    const pending = batcher.generate(
      request(1, {
        maxTokens: 60,
        onToken: (token) => {
          if (token && ++seen === 3) batcher.cancel("r1");
        },
      }),
    );
    const result = await pending;
    expect(result.finishReason).toBe("cancelled");
    expect(result.tokenIds.length).toBeGreaterThanOrEqual(3);
    expect(result.tokenIds.length).toBeLessThanOrEqual(4);
    expect(engine.running).toBe(0);
  });

  it("samples reproducibly with a seed", async () => {
    const sampling = { ...GREEDY, temperature: 1, seed: 42 };
    const a = await generation().generate(request(5, { sampling, maxTokens: 12 }));
    const b = await generation().generate(request(5, { sampling, maxTokens: 12 }));
    const c = await generation().generate(request(5, { sampling: { ...sampling, seed: 43 }, maxTokens: 12 }));
    expect(a.tokenIds).toEqual(b.tokenIds);
    expect(a.tokenIds).not.toEqual(c.tokenIds);
  });

  it("runs a request submitted while the loop winds down after its last request resolved", async () => {
    const batcher = generation();
    // Every delay between the previous request resolving and the next submit, in microtask ticks, so one
    // of them lands after the loop's last look at its queue and before it has ended.
    for (let ticks = 0; ticks < 24; ticks++) {
      await batcher.generate(request(2, { maxTokens: 1 }));
      for (let t = 0; t < ticks; t++) await Promise.resolve();
      const next = await batcher.generate(request(3, { maxTokens: 1 }));
      expect(next.tokenIds).toHaveLength(1);
    }
  }, 20_000);

  it("refuses a prompt that leaves no room in the context", async () => {
    const batcher = generation();
    await expect(batcher.generate(request(0, { promptTokens: new Array(96).fill(3) }))).rejects.toThrow(
      "the prompt has 96 tokens; this worker's context holds 96",
    );
  });
});

describe("JSON mode", () => {
  it("ends each output at its object's close, a valid JSON object, greedy or sampled, beside free sequences", async () => {
    const batcher = generation();
    const json = (i: number, temperature: number) =>
      batcher.generate(
        request(i, {
          id: `json-${i}-${temperature}`,
          maxTokens: 80,
          sampling: { ...GREEDY, temperature, seed: i },
          json: ANY_OBJECT,
        }),
      );
    const results = await Promise.all([
      ...[0, 1, 2, 3, 4, 5].flatMap((i) => [json(i, 0), json(i, 1)]),
      batcher.generate(request(6, { maxTokens: 20 })),
    ]);
    const free = results.pop()!;
    expect(free.tokenIds).toHaveLength(20);
    let closed = 0;
    for (const result of results) {
      const grammar = new JsonGrammar();
      // Every token's bytes continue the object: nothing a client could not parse once it is complete.
      for (const id of result.tokenIds) grammar.push(tokenizer.tokenBytes(id));
      expect(result.text).toBe(tokenizer.decode(result.tokenIds));
      if (result.finishReason === "stop") {
        closed++;
        expect(grammar.complete).toBe(true);
        expect(JSON.parse(result.text)).toBeTypeOf("object");
      } else {
        expect(result.finishReason).toBe("length");
        expect(result.tokenIds).toHaveLength(80);
      }
    }
    expect(closed).toBeGreaterThan(0);
  });
});

describe("a reasoning model's structured answer", () => {
  /** The tiny tokenizer with <think> and </think> as tokens, as Qwen3's has them. */
  function taggedTokenizer(): { tagged: Tokenizer; tags: { open: number; close: number } } {
    const dir = join(root, "tagged");
    mkdirSync(dir, { recursive: true });
    for (const file of ["tokenizer.json", "tokenizer_config.json"])
      copyFileSync(join(tiny.dir, file), join(dir, file));
    const tags = addReasoningTags(dir);
    return { tagged: loadTokenizer(dir), tags };
  }
  const schema = compileJsonSchema({
    type: "object",
    properties: { n: { type: "integer" } },
    required: ["n"],
    additionalProperties: false,
  });

  it("reasons between its tags, no stop token among them, then writes the value, closing in time", async () => {
    const { tagged, tags } = taggedTokenizer();
    const batcher = new SlotGeneration(engine, tagged, options);
    const eos = tagged.eosTokenIds;
    const cases = [
      { maxTokens: 24, temperature: 0, forced: true },
      { maxTokens: 40, temperature: 1, forced: true },
      // Greedy, this one writes the closing tag itself, earlier.
      { maxTokens: 40, temperature: 0, opened: true, forced: false },
    ];
    const results = await Promise.all(
      cases.map(({ maxTokens, temperature, opened }, i) =>
        batcher.generate(
          request(i, {
            maxTokens,
            sampling: { ...GREEDY, temperature, seed: i },
            stopTokenIds: eos,
            json: schema,
            reasoning: { open: opened ? null : tags.open, close: tags.close },
          }),
        ),
      ),
    );
    for (const [i, result] of results.entries()) {
      const { maxTokens, opened, forced } = cases[i]!;
      const ids = result.tokenIds;
      const close = ids.indexOf(tags.close);
      // No later than once only the value's room is left (the shortest value, {"n":0}, is 7 bytes, so 7
      // tokens at worst): forced there where the random model did not close on its own.
      expect(close).toBeLessThanOrEqual(maxTokens - 8);
      if (forced) expect(close).toBe(maxTokens - 8);
      else expect(close).toBeLessThan(maxTokens - 8);
      const reasoning = ids.slice(opened ? 0 : 1, close);
      if (!opened) expect(ids[0]).toBe(tags.open);
      expect(reasoning.some((id) => eos.includes(id) || id === tags.close)).toBe(false);
      const value = JSON.parse(tagged.decode(ids.slice(close + 1)));
      expect(Object.keys(value)).toEqual(["n"]);
      expect(Number.isInteger(value.n)).toBe(true);
      expect(result.finishReason).toBe("stop");
      expect(ids.length).toBeLessThanOrEqual(maxTokens);
    }
  });

  it("reasons first with a grammar too, the closing tag forced in time for a whole string of it", () => {
    const { tagged, tags } = taggedTokenizer();
    const eos = tagged.eosTokenIds;
    const grammar = compileGrammar('root ::= "SELECT " [a-z]{1,3} ";"');
    const prng = new Prng(4, 0);
    for (const maxTokens of [14, 20, 30]) {
      const out = new SequenceOutput(tagged, { ...GREEDY, temperature: 1, seed: maxTokens }, [1, 2, 3], {
        maxTokens,
        maxContext: 96,
        stopTokenIds: eos,
        grammar,
        reasoning: { open: tags.open, close: tags.close },
      });
      let finish: string | null = null;
      while (finish === null) {
        const logits = new Float32Array(tagged.vocabSize);
        for (let id = 0; id < logits.length; id++) logits[id] = prng.nextFloat() * 4;
        finish = out.accept(logits).finish;
      }
      const ids = out.tokenIds;
      expect(ids[0]).toBe(tags.open);
      const close = ids.indexOf(tags.close);
      // The shortest string, "SELECT a;", takes 9 tokens at worst: the tag comes with that room left.
      expect(close).toBeGreaterThan(0);
      expect(close).toBeLessThanOrEqual(maxTokens - 10);
      expect(ids.slice(1, close).some((id) => eos.includes(id))).toBe(false);
      expect(tagged.decode(ids.slice(close + 1))).toMatch(/^SELECT [a-z]{1,3};$/);
      expect(finish).toBe("stop");
      expect(ids.length).toBeLessThanOrEqual(maxTokens);
    }
  });

  it("masks stop tokens while reasoning, and takes a closing tag the model writes itself", () => {
    const { tagged, tags } = taggedTokenizer();
    const eos = tagged.eosTokenIds[0]!;
    const out = new SequenceOutput(tagged, GREEDY, [1, 2, 3], {
      maxTokens: 50,
      maxContext: 96,
      stopTokenIds: [eos],
      json: schema,
      reasoning: { open: tags.open, close: tags.close },
    });
    const row = (favoured: number) => {
      const logits = new Float32Array(tagged.vocabSize);
      logits[favoured] = 50;
      logits[65] = 10;
      return logits;
    };
    // The opening tag whatever the logits, then the reasoning's best token that is not a stop token.
    expect(out.accept(row(eos)).token.token).toBe(tags.open);
    expect(out.accept(row(eos)).token.token).toBe(65);
    expect(out.accept(row(tags.close)).token.token).toBe(tags.close);
    // The value's grammar from here: a stop token or a tag is refused, the object opens.
    expect(out.accept(row(eos)).text).toBe("{");
  });
});

describe("min_tokens", () => {
  it("holds off stop tokens, drawn from whole rows, and stop strings until the sequence has that many", () => {
    const eos = tokenizer.eosTokenIds[0]!;
    const out = new SequenceOutput(tokenizer, GREEDY, [1, 2, 3], {
      maxTokens: 16,
      maxContext: 96,
      stopTokenIds: [eos],
      stopStrings: ["a"],
      minTokens: 3,
    });
    const [a] = tokenizer.encode("a", { addSpecialTokens: false });
    // Each row favours the stop token, then "a" (a stop string).
    const row = () => {
      const logits = new Float32Array(tokenizer.vocabSize);
      logits[eos] = 20;
      logits[a!] = 10;
      return logits;
    };
    // The engine must send whole rows: a greedy pick on the device could be the stop token.
    expect(out.decodeChoice).toBeNull();
    expect(out.accept(row())).toMatchObject({ text: "a", finish: null });
    expect(out.accept(row())).toMatchObject({ text: "a", finish: null });
    // The third token is the min_tokens-th: a stop string ends the sequence there, as vLLM checks it.
    expect(out.accept(row())).toMatchObject({ text: "", finish: "stop" });
    const later = new SequenceOutput(tokenizer, GREEDY, [1, 2, 3], {
      maxTokens: 16,
      maxContext: 96,
      stopTokenIds: [eos],
      minTokens: 2,
    });
    expect(later.accept(row()).token.token).toBe(a);
    expect(later.accept(row()).token.token).toBe(a);
    // From the token after the min_tokens-th, a stop token may be drawn, and picked on the device.
    expect(later.decodeChoice).toEqual({ kind: "argmax" });
    expect(later.accept(row())).toMatchObject({ finish: "stop", stopToken: true });
  });
});

describe("a sequence's last text at a stop token", () => {
  function output(stopStrings: string[] = []): SequenceOutput {
    return new SequenceOutput(tokenizer, GREEDY, [1, 2, 3], { maxTokens: 16, maxContext: 96, stopStrings });
  }
  const eos = () => tokenizer.eosTokenIds[0]!;

  it("is the text held back for a stop string that never completed", () => {
    const out = output(["ok!"]);
    const held = tokenizer.encode("say ok", { addSpecialTokens: false }).map((id) => out.accept(id).text);
    expect(held.join("")).toBe("say ");
    const last = out.accept(eos());
    expect(last).toMatchObject({ finish: "stop", stopToken: true, text: "ok" });
    expect(out.text).toBe("say ok");
  });

  it("ends an incomplete character as U+FFFD, as a full decode of the tokens does", () => {
    const out = output();
    // 😀 is four byte-level tokens; the first two make no character.
    const ids = tokenizer.encode("hi😀", { addSpecialTokens: false }).slice(0, -2);
    for (const id of ids) out.accept(id);
    expect(out.text).toBe("hi");
    expect(out.accept(eos()).text).toBe("\uFFFD");
    expect(out.text).toBe(tokenizer.decode(ids));
  });
});

describe("vLLM's allowed_token_ids, bad_words and include_stop_str_in_output", () => {
  const prng = new Prng(4, 0);
  const row = () => Float32Array.from({ length: tokenizer.vocabSize }, () => prng.nextFloat() * 8);

  it("draws only the allowed tokens, greedy or sampled, and lists no other as an alternative", () => {
    const allowed = [7, 40, 41, 300];
    const greedy = new SequenceOutput(tokenizer, { ...GREEDY, topLogprobs: 5 }, [1, 2], {
      maxTokens: 8,
      maxContext: 96,
      allowedTokenIds: allowed,
    });
    const sampled = new SequenceOutput(
      tokenizer,
      { ...GREEDY, temperature: 1.5, seed: 3, topLogprobs: 0 },
      [1],
      {
        maxTokens: 40,
        maxContext: 96,
        allowedTokenIds: allowed,
      },
    );
    // Whole rows: the device's pick or candidates would settle the draw over the whole vocabulary.
    expect(greedy.decodeChoice).toBeNull();
    expect(sampled.decodeChoice).toBeNull();
    for (let i = 0; i < 8; i++) {
      const logits = row();
      const best = allowed.reduce((a, b) => (logits[b]! > logits[a]! ? b : a));
      const { token } = greedy.accept(logits);
      expect(token.token).toBe(best);
      expect(token.top.map((t) => t.token).sort((a, b) => a - b)).toEqual(allowed);
    }
    const drawn = new Set<number>();
    for (let i = 0; i < 40; i++) drawn.add(sampled.accept(row()).token.token);
    expect([...drawn].every((t) => allowed.includes(t))).toBe(true);
    expect(drawn.size).toBeGreaterThan(1);
  });

  it("never completes a bad word: a one-token word is never drawn, a longer one's last token not after the rest", () => {
    const out = new SequenceOutput(tokenizer, GREEDY, [1], {
      maxTokens: 8,
      maxContext: 96,
      badWordsIds: [[10], [11, 12]],
    });
    expect(out.decodeChoice).toBeNull();
    // Each row's best tokens, best first; the draw is the best one not banned.
    const ranked = (...ids: number[]) => {
      const logits = new Float32Array(tokenizer.vocabSize);
      for (const [rank, id] of ids.entries()) logits[id] = 10 - rank;
      return logits;
    };
    expect(out.accept(ranked(10, 11, 13)).token.token).toBe(11);
    expect(out.accept(ranked(12, 13)).token.token).toBe(13);
    // Not after 11 any more: 12 may come.
    expect(out.accept(ranked(12, 13)).token.token).toBe(12);
  });

  it("keeps the stop string that ended the answer at its end, only when asked", () => {
    const ids = tokenizer.encode("one two. three", { addSpecialTokens: false });
    for (const include of [false, true]) {
      const out = new SequenceOutput(tokenizer, GREEDY, [1], {
        maxTokens: 32,
        maxContext: 96,
        stopStrings: ["xyz", "."],
        includeStopStrings: include,
      });
      let finish: string | null = null;
      for (const id of ids) {
        finish = out.accept(id).finish;
        if (finish) break;
      }
      expect(finish).toBe("stop");
      expect(out.text).toBe(include ? "one two." : "one two");
    }
  });
});

describe("luminet generate", () => {
  // Run from a folder with no node_modules, as an installed `luminet` is: the engine thread must find tsx
  // from the package, not from the working directory. Runs a test makes start together.
  function generateArgs(lines: unknown[], ...flags: string[]) {
    const file = join(root, `batch-${Math.random()}.jsonl`);
    writeFileSync(file, lines.map((l) => JSON.stringify(l)).join("\n"));
    return ["generate", "--model", tiny.dir, "--batch", file, ...flags];
  }
  function generate(lines: unknown[], ...flags: string[]): Promise<CommandRun> {
    const child = spawn(process.execPath, [CLI, ...generateArgs(lines, ...flags)], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const run = { stdout: "", stderr: "" };
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      run.stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      run.stderr += d;
    });
    return new Promise((resolve, reject) => {
      child.once("error", reject);
      child.once("close", (code) => resolve({ code, ...run }));
    });
  }
  // Input refused before any engine starts: in this process, with the command's own registration.
  const generateInProcess = (lines: unknown[], ...flags: string[]) =>
    luminetInProcess(registerGenerate, generateArgs(lines, ...flags));
  const outputs = (stdout: string) =>
    stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));

  it("runs every line together and prints one result per request, in input order", async () => {
    const lines = [
      { id: "base", prompt: "request number 0 says hello", adapter: null, max_tokens: 6 },
      { id: "a1", prompt: "request number 1 says hello", adapter: tiny.adapterDirs[0], max_tokens: 7 },
      { id: "ids", prompt_ids: [5, 6, 7, 8], adapter: tiny.adapterDirs[3], max_tokens: 4 },
      {
        id: 7,
        prompt: "a sampled one",
        adapter: tiny.adapterDirs[0],
        max_tokens: 5,
        temperature: 0.9,
        seed: 1,
      },
    ];
    const result = await generate(lines);
    expect(result.code, result.stderr).toBe(0);
    const out = outputs(result.stdout);
    expect(out.map((o) => o.id)).toEqual(["base", "a1", "ids", "7"]);
    expect(out.slice(0, 3).map((o) => o.token_ids.length)).toEqual([6, 7, 4]);
    for (const o of out.slice(0, 3)) expect(o.finish_reason).toBe("length");
    // The sampled line may draw an end-of-turn token before its 5 tokens.
    const sampled = out[3];
    expect(sampled.finish_reason).toBe(sampled.token_ids.length === 5 ? "length" : "stop");
    // The summary on stderr counts what the lines hold.
    const generated = out.reduce((sum, o) => sum + o.token_ids.length, 0);
    expect(result.stderr).toMatch(
      new RegExp(`generate: 4 requests in [\\d.]+ s, ${generated} tokens generated`),
    );
    // The base line is what the engine generates greedily for that prompt.
    const expected = await generation().generate(request(0, { slot: 0, maxTokens: 6 }));
    expect(out[0].token_ids).toEqual(expected.tokenIds);
    expect(out[0].text).toBe(expected.text);
  });

  it("prefills a prompt longer than --step-tokens in chunks, to the tokens of one whole prefill", async () => {
    const long = tokenizer.encode("a long prompt that goes in chunks ".repeat(6)).slice(0, 70);
    const lines = [
      { id: "long", prompt_ids: long, adapter: tiny.adapterDirs[1], max_tokens: 6 },
      { id: "short", prompt: "request number 2 says hello", adapter: null, max_tokens: 8 },
    ];
    const [whole, chunked] = await Promise.all([
      generate(lines, "--prefix-cache-bytes", "0"),
      generate(lines, "--step-tokens", "34", "--prefix-cache-bytes", "0"),
    ]);
    expect(whole.code, whole.stderr).toBe(0);
    expect(chunked.code, chunked.stderr).toBe(0);
    expect(outputs(chunked.stdout)).toEqual(outputs(whole.stdout));
    expect(outputs(whole.stdout).map((o) => o.token_ids.length)).toEqual([6, 8]);
  });

  it("writes JSON in JSON mode and a JSON schema's instances, and names a schema it cannot keep", async () => {
    const schema = {
      type: "object",
      properties: { word: { type: "string", maxLength: 6 }, count: { type: "integer" } },
      required: ["word", "count"],
    };
    const lines = [0, 1, 2, 3].flatMap((seed) => [
      {
        id: `object-${seed}`,
        prompt: "as JSON",
        adapter: null,
        max_tokens: 150,
        temperature: 1,
        seed,
        response_format: { type: "json_object" },
      },
      {
        id: `schema-${seed}`,
        prompt: "as JSON",
        adapter: tiny.adapterDirs[1],
        max_tokens: 150,
        temperature: 1,
        seed,
        response_format: { type: "json_schema", json_schema: { name: "w", schema } },
      },
    ]);
    const refusing = generate([
      {
        id: "bad",
        prompt: "x",
        adapter: null,
        max_tokens: 4,
        response_format: {
          type: "json_schema",
          json_schema: {
            strict: true,
            schema: { type: "object", properties: { a: { type: "string", format: "uri" } } },
          },
        },
      },
    ]);
    const result = await generate(lines);
    expect(result.code, result.stderr).toBe(0);
    const closed = { object: 0, schema: 0 };
    for (const out of outputs(result.stdout)) {
      expect(out.text.startsWith("{")).toBe(true);
      if (out.finish_reason !== "stop") continue;
      const value = JSON.parse(out.text);
      if (String(out.id).startsWith("schema")) {
        closed.schema++;
        expect(Object.keys(value)).toEqual(["word", "count"]);
        expect(Number.isInteger(value.count)).toBe(true);
      } else {
        closed.object++;
        expect(value).toBeTypeOf("object");
      }
    }
    // The random model closes any-object JSON late (its keys run long); the schema's lengths close it soon.
    expect(closed.schema).toBeGreaterThanOrEqual(3);
    const refused = await refusing;
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(
      ':1: response_format.json_schema.schema.properties.a.format: "uri" is not supported',
    );
  });

  it("runs on 4-bit weights with --quantize q4, and names a kind it does not have", async () => {
    const lines = [
      { id: "base", prompt: "request number 0 says hello", adapter: null, max_tokens: 5 },
      { id: "a1", prompt: "request number 1 says hello", adapter: tiny.adapterDirs[0], max_tokens: 6 },
    ];
    const [result, refused] = await Promise.all([
      generate(lines, "--quantize", "q4"),
      generate(lines, "--quantize", "q8"),
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(outputs(result.stdout).map((o) => [o.id, o.token_ids.length, o.finish_reason])).toEqual([
      ["base", 5, "length"],
      ["a1", 6, "length"],
    ]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('--quantize must be q4, got "q8"');
  });

  it("names the line and field of bad input", async () => {
    const result = await generateInProcess([{ id: "x", prompt: "hi", adapter: null, max_tokens: 0 }]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/:1: max_tokens/);
    const both = await generateInProcess([
      { id: "x", prompt: "hi", prompt_ids: [1], adapter: null, max_tokens: 2 },
    ]);
    expect(both.stderr).toMatch(/exactly one of "prompt" and "prompt_ids"/);
    const tooLong = await generateInProcess(
      [{ id: "big", prompt_ids: new Array(64).fill(5), adapter: null, max_tokens: 2 }],
      "--max-context",
      "64",
    );
    expect(tooLong.code).toBe(1);
    expect(tooLong.stderr).toContain(
      "request big: its prompt has 64 tokens and leaves no room in the 64-token context",
    );
    const vocab = await generateInProcess([
      { id: "v", prompt_ids: [1, 2, 99_999], adapter: null, max_tokens: 2 },
    ]);
    expect(vocab.code).toBe(1);
    expect(vocab.stderr).toContain(
      `request v: prompt_ids holds 99999, outside the model's vocabulary of ${tiny.config.vocabSize} tokens`,
    );
    const noAdapter = await generateInProcess([
      { id: "fine", prompt: "hi", adapter: null, max_tokens: 2 },
      { id: "lost", prompt: "hi", adapter: join(root, "no-such-adapter"), max_tokens: 2 },
    ]);
    expect(noAdapter.code).toBe(1);
    expect(noAdapter.stdout).toBe("");
    expect(noAdapter.stderr).toContain(`request lost: adapter ${join(root, "no-such-adapter")}: `);
    const budget = await generateInProcess(
      [{ id: "x", prompt: "hi", adapter: null, max_tokens: 2 }],
      "--step-tokens",
      "0",
    );
    expect(budget.stderr).toContain('luminet generate: --step-tokens must be an integer ≥ 1, got "0"');
  });

  it("refuses an empty prompt_ids at the check, with its line, printing nothing", async () => {
    const empty = await generateInProcess([
      { id: "fine", prompt: "hi", adapter: null, max_tokens: 2 },
      { id: "empty", prompt_ids: [], adapter: null, max_tokens: 3 },
    ]);
    expect(empty.code).toBe(1);
    expect(empty.stdout).toBe("");
    expect(empty.stderr).toMatch(/:2: prompt_ids: the prompt is empty/);
  });

  it("fails once, before any request runs, on weights that do not match the model's config", async () => {
    // The same bytes, but a header that says q_proj of layer 0 is [32, 128] where the config makes [64, 64].
    const lying = join(root, "lying-shapes");
    mkdirSync(lying, { recursive: true });
    for (const file of ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
      copyFileSync(join(tiny.dir, file), join(lying, file));
    }
    const bytes = readFileSync(join(tiny.dir, "model.safetensors"));
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8"));
    header["model.layers.0.self_attn.q_proj.weight"].shape = [32, 128];
    const text = JSON.stringify(header);
    const padded = Buffer.from(text.padEnd(Math.ceil(text.length / 8) * 8, " "));
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(padded.length));
    writeFileSync(
      join(lying, "model.safetensors"),
      Buffer.concat([length, padded, bytes.subarray(8 + headerLength)]),
    );
    const lines = Array.from({ length: 3 }, (_, i) => ({
      id: i,
      prompt: "hi",
      adapter: null,
      max_tokens: 2,
    }));
    // A later --model takes the place of the tiny model's.
    const run = await generate(lines, "--model", lying);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toContain(
      "tensor model.layers.0.self_attn.q_proj.weight has shape [32, 128], expected [64, 64]",
    );
    expect(run.stderr.match(/has shape \[32, 128\]/g)).toHaveLength(1);
  });

  it("reads a file that starts with a UTF-8 byte order mark", async () => {
    const file = join(root, "bom.jsonl");
    const line = { id: "bom", prompt_ids: [5, 6, 7, 8, 9], adapter: null, max_tokens: 2 };
    writeFileSync(file, `\uFEFF${JSON.stringify(line)}\n`);
    // Refused for its length, so the line was read as a request, and no engine starts.
    const run = await luminetInProcess(registerGenerate, [
      "generate",
      "--model",
      tiny.dir,
      "--batch",
      file,
      "--max-context",
      "4",
    ]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      "request bom: its prompt has 5 tokens and leaves no room in the 4-token context",
    );
  });

  it("caps the context at the model's own: Mistral's sliding window, whatever --max-context says", async () => {
    const mistral = join(root, "mistral");
    cpSync(tiny.dir, mistral, { recursive: true });
    const config = JSON.parse(readFileSync(join(tiny.dir, "config.json"), "utf8"));
    writeFileSync(
      join(mistral, "config.json"),
      JSON.stringify({
        ...config,
        architectures: ["MistralForCausalLM"],
        model_type: "mistral",
        sliding_window: 8,
      }),
    );
    const line = {
      id: "long",
      prompt_ids: Array.from({ length: 20 }, (_, i) => i + 1),
      adapter: null,
      max_tokens: 2,
    };
    const file = join(root, "mistral.jsonl");
    writeFileSync(file, JSON.stringify(line));
    for (const flags of [[], ["--max-context", "100000"]]) {
      const run = await luminetInProcess(registerGenerate, [
        "generate",
        "--model",
        mistral,
        "--batch",
        file,
        ...flags,
      ]);
      expect(run.code).toBe(1);
      expect(run.stdout).toBe("");
      expect(run.stderr).toContain(
        "request long: its prompt has 20 tokens and leaves no room in the 8-token context (the model's own context",
      );
    }
  });
});
