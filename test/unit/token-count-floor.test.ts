// The fewest tokens a text can encode to, read off its length: never more than encoding it gives, for
// every kind of text (words, one long word, special tokens' strings, any Unicode, lone surrogates), also
// under a normalizer that shrinks text (NFKC); and no floor at all for a tokenizer that can make text
// vanish. Admission refuses, before tokenizing it, a prompt whose floor fills the context.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { utf8Length } from "../../core/utf8-length.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { Prng } from "../../worker/engine/prng.ts";
import { tokenCountFloor } from "../../worker/engine/token-count-floor.ts";
import { tokenizerFromFiles } from "../../worker/engine/tokenizer.ts";
import { FakeWorker } from "../support/fake-worker.ts";
import { BASE, CONTEXT, createGatewayHarness } from "../support/gateway-harness.ts";

let root: string;
let tokenizerJson: Record<string, unknown>;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-token-floor-"));
  const { dir } = initTinyModel(join(root, "model"), { shape: "tiny", adapters: 0, rank: 4, seed: 3 });
  tokenizerJson = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

function texts(): string[] {
  const prng = new Prng(7);
  const anyChar = () => {
    const roll = prng.nextFloat();
    // ASCII, two- and three-byte characters, astral ones (surrogate pairs), a lone surrogate.
    if (roll < 0.4) return String.fromCharCode(32 + Math.floor(prng.nextFloat() * 95));
    if (roll < 0.6) return String.fromCharCode(0xa0 + Math.floor(prng.nextFloat() * 0x700));
    if (roll < 0.8) return String.fromCharCode(0x4e00 + Math.floor(prng.nextFloat() * 0x5000));
    if (roll < 0.97) return String.fromCodePoint(0x1d400 + Math.floor(prng.nextFloat() * 0x400));
    return "\ud800";
  };
  return [
    "",
    "a".repeat(5_000),
    "hello world ".repeat(400),
    "<|eot_id|>".repeat(300),
    "<|reserved_special_token_0|>".repeat(200),
    " ".repeat(3_000),
    "𝐀𝐁𝐂".repeat(500),
    Array.from({ length: 4_000 }, anyChar).join(""),
  ];
}

describe("tokenCountFloor", () => {
  it("never says more tokens than encoding gives, and says most of a long prompt", () => {
    const tokenizer = tokenizerFromFiles({ tokenizerJson });
    for (const text of texts()) {
      const encoded = tokenizer.encode(text, { addSpecialTokens: false }).length;
      expect(tokenizer.fewestTokens(text), text.slice(0, 20)).toBeLessThanOrEqual(encoded);
    }
    expect(tokenizer.fewestTokens("a".repeat(100_000))).toBeGreaterThan(1_000);
  });

  it("divides by four more under a normalizer that shrinks characters, and holds there too", () => {
    const nfkc = { ...tokenizerJson, normalizer: { type: "NFKC" } };
    const tokenizer = tokenizerFromFiles({ tokenizerJson: nfkc });
    const plain = tokenCountFloor(tokenizerJson);
    const text = "𝐀".repeat(4_000);
    expect(tokenizer.fewestTokens(text)).toBe(Math.floor(plain(text) / 4));
    for (const one of texts()) {
      expect(tokenizer.fewestTokens(one)).toBeLessThanOrEqual(
        tokenizer.encode(one, { addSpecialTokens: false }).length,
      );
    }
  });

  it("gives no floor where text can vanish before it is split into tokens", () => {
    const vanishing = [
      { normalizer: { type: "StripAccents" } },
      { normalizer: { type: "Replace", pattern: { Regex: "\\s+" }, content: "" } },
      { normalizer: { type: "Sequence", normalizers: [{ type: "NFC" }, { type: "Strip" }] } },
      { pre_tokenizer: { type: "Whitespace" } },
      { pre_tokenizer: { type: "Split", pattern: { String: " " }, behavior: "Removed" } },
      { model: { ...(tokenizerJson.model as object), fuse_unk: true, unk_token: "<unk>" } },
      { model: { type: "WordPiece", vocab: { a: 0 } } },
    ];
    for (const change of vanishing) {
      expect(
        tokenCountFloor({ ...tokenizerJson, ...change })("x".repeat(10_000)),
        JSON.stringify(change),
      ).toBe(0);
    }
    const kept = { normalizer: { type: "Replace", pattern: { String: " " }, content: "▁" } };
    expect(tokenCountFloor({ ...tokenizerJson, ...kept })("x".repeat(10_000))).toBeGreaterThan(0);
  });
});

describe("utf8Length", () => {
  it("counts as TextEncoder writes, lone surrogates as U+FFFD", () => {
    for (const text of [...texts(), "\udc00a", "a\ud800", "\ud83d\ude00"]) {
      expect(utf8Length(text)).toBe(new TextEncoder().encode(text).length);
    }
  });
});

describe("admission", () => {
  it("refuses a prompt surely longer than the context before tokenizing it, unless asked to truncate it", async () => {
    const h = await createGatewayHarness();
    const worker = await FakeWorker.start(h.workerBus, { base: BASE });
    try {
      const tokenizer = h.deps.bases.get(BASE)!.tokenizer;
      const encode = vi.spyOn(tokenizer, "encode");
      const long = "a".repeat(200 * CONTEXT);
      const post = (path: string, body: Record<string, unknown>) =>
        h.app.request(path, {
          method: "POST",
          headers: { authorization: `Bearer ${h.keys.acme}`, "content-type": "application/json" },
          body: JSON.stringify({ model: BASE, ...body }),
        });
      const refusals = [
        ["/v1/completions", { prompt: long, max_tokens: 1 }, "prompt"],
        ["/v1/completions", { prompt: ["x", long], max_tokens: 1 }, "prompt"],
        ["/v1/chat/completions", { messages: [{ role: "user", content: long }] }, "messages"],
        ["/v1/responses", { input: long }, "input"],
        ["/tokenize", { prompt: long }, "prompt"],
      ] as const;
      const received = worker.received.length;
      for (const [path, body, param] of refusals) {
        const answer = await post(path, body);
        expect(answer.status, path).toBe(400);
        expect(await answer.json(), path).toMatchObject({
          error: { code: "context_length_exceeded", param, message: expect.stringContaining("at least") },
        });
      }
      expect(worker.received.length).toBe(received);
      expect(encode.mock.calls.filter(([text]) => text.length >= long.length)).toEqual([]);
      // Asked to keep its last tokens, the prompt runs, tokenized from a tail that surely holds them: the
      // same last tokens as the whole text's, without tokenizing all of it.
      encode.mockClear();
      const truncated = await post("/v1/completions", {
        prompt: long,
        max_tokens: 1,
        truncate_prompt_tokens: 8,
      });
      expect(truncated.status).toBe(200);
      const chat = await post("/v1/chat/completions", {
        messages: [{ role: "user", content: long }],
        max_tokens: 1,
        truncate_prompt_tokens: 8,
      });
      expect(chat.status).toBe(200);
      expect(encode.mock.calls.filter(([text]) => text.length >= long.length)).toEqual([]);
      const [completionRan, chatRan] = worker.received.slice(-2).map((r) => r.prompt_token_ids);
      expect(completionRan).toEqual(tokenizer.encode(long, { addSpecialTokens: true }).slice(-8));
      expect(chatRan).toHaveLength(8);
      // Text of words, punctuation and other scripts: the tokens kept are the whole text's last ones.
      const words = ["Luminet", "serves", "adapters,", "héllo", "日本語", "tokens.", "\n", "42", "don't"];
      const prose = Array.from({ length: 40_000 }, (_, i) => words[(i * 7 + (i >> 3)) % words.length]).join(
        " ",
      );
      for (const keep of [1, 50, 200]) {
        const ran = await post("/v1/completions", {
          prompt: prose,
          max_tokens: 1,
          truncate_prompt_tokens: keep,
        });
        expect(ran.status).toBe(200);
        expect(worker.received.at(-1)!.prompt_token_ids).toEqual(
          tokenizer.encode(prose, { addSpecialTokens: true }).slice(-keep),
        );
      }
      // A list of prompts that each might fit is tokenized one at a time: the first that does not fit
      // ends it, and the rest are never tokenized.
      const overlong = "ab ".repeat(CONTEXT);
      encode.mockClear();
      const list = await post("/v1/completions", { prompt: [overlong, overlong, overlong], max_tokens: 1 });
      expect(list.status).toBe(400);
      expect(await list.json()).toMatchObject({ error: { code: "context_length_exceeded" } });
      expect(encode.mock.calls.filter(([text]) => text === overlong)).toHaveLength(1);
    } finally {
      await worker.stop();
      await h.close();
    }
  });
});
