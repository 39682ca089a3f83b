// Each token's own bytes and its logprob text: byte-level (the tiny model's GPT-2 style vocabulary) and
// SentencePiece-style byte fallback (a small tokenizer.json in Llama 2's layout), and the fallback for
// decoders whose mapping is not known.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { tokenText } from "../../worker/engine/token-bytes.ts";
import { loadTokenizer, type Tokenizer, tokenizerFromFiles } from "../../worker/engine/tokenizer.ts";

const utf8 = new TextEncoder();
const joined = (tok: Tokenizer, ids: number[]) => Buffer.concat(ids.map((id) => tok.tokenBytes(id)));

describe("byte-level token bytes (the tiny model)", () => {
  let dir: string;
  let tok: Tokenizer;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "luminet-token-bytes-"));
    initTinyModel(dir, { shape: "tiny", adapters: 0, rank: 4, seed: 0 });
    tok = loadTokenizer(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each([
    "Hello, world! The capital of France is Paris.",
    "emoji 😀👍🏽 and 中文字符，日本語のテキスト",
    "  café naïve\n\ttabs",
  ])("gives tokens whose bytes join into the text's UTF-8: %j", (text) => {
    const ids = tok.encode(text, { addSpecialTokens: false });
    expect(joined(tok, ids)).toEqual(Buffer.from(utf8.encode(text)));
  });

  it("gives a token inside a character its raw byte, which a decode of it alone loses", () => {
    // 😀 is F0 9F 98 80; with this vocabulary each of its bytes is a token of its own.
    const ids = tok.encode("😀", { addSpecialTokens: false });
    expect(ids).toHaveLength(4);
    expect(ids.map((id) => [...tok.tokenBytes(id)])).toEqual([[0xf0], [0x9f], [0x98], [0x80]]);
    expect(tok.decode([ids[0]!])).toBe("\uFFFD");
    expect(ids.map((id) => tokenText(tok.tokenBytes(id)))).toEqual([
      "bytes:\\xf0",
      "bytes:\\x9f",
      "bytes:\\x98",
      "bytes:\\x80",
    ]);
  });

  it("gives a word token its leading space, and a special token its text as written", () => {
    const [the] = tok.encode(" the", { addSpecialTokens: false });
    expect(tokenText(tok.tokenBytes(the!))).toBe(" the");
    expect(tokenText(tok.tokenBytes(tok.bosTokenId!))).toBe("<|begin_of_text|>");
    expect(tok.tokenBytes(tok.vocabSize + 5)).toEqual(new Uint8Array(0));
  });
});

/** A SentencePiece-style BPE in Llama 2's tokenizer.json layout: "▁" for spaces, <0xNN> byte fallback. */
function sentencePieceTokenizer(): Tokenizer {
  const pieces = ["<unk>", "<s>", "</s>"];
  for (let b = 0; b < 256; b++) pieces.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
  pieces.push("▁", "h", "e", "l", "o", "he", "ll", "hell", "hello", "▁hello");
  const vocab = Object.fromEntries(pieces.map((p, id) => [p, id]));
  return tokenizerFromFiles({
    tokenizerJson: {
      version: "1.0",
      added_tokens: [
        {
          id: 0,
          content: "<unk>",
          single_word: false,
          lstrip: false,
          rstrip: false,
          normalized: false,
          special: true,
        },
        {
          id: 1,
          content: "<s>",
          single_word: false,
          lstrip: false,
          rstrip: false,
          normalized: false,
          special: true,
        },
        {
          id: 2,
          content: "</s>",
          single_word: false,
          lstrip: false,
          rstrip: false,
          normalized: false,
          special: true,
        },
      ],
      normalizer: {
        type: "Sequence",
        normalizers: [
          { type: "Prepend", prepend: "▁" },
          { type: "Replace", pattern: { String: " " }, content: "▁" },
        ],
      },
      pre_tokenizer: null,
      post_processor: null,
      decoder: {
        type: "Sequence",
        decoders: [
          { type: "Replace", pattern: { String: "▁" }, content: " " },
          { type: "ByteFallback" },
          { type: "Fuse" },
          { type: "Strip", content: " ", start: 1, stop: 0 },
        ],
      },
      model: {
        type: "BPE",
        dropout: null,
        unk_token: "<unk>",
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: true,
        byte_fallback: true,
        ignore_merges: false,
        vocab,
        merges: ["h e", "l l", "he ll", "hell o", "▁ hello"],
      },
    },
    tokenizerConfig: { bos_token: "<s>", eos_token: "</s>" },
  });
}

describe("SentencePiece-style token bytes (byte fallback)", () => {
  const tok = sentencePieceTokenizer();

  it("turns <0xNN> tokens into their byte and ▁ into a space", () => {
    const ids = tok.encode("hello 中", { addSpecialTokens: false });
    expect(ids.map((id) => tokenText(tok.tokenBytes(id)))).toEqual([
      " hello",
      " ",
      "bytes:\\xe4",
      "bytes:\\xb8",
      "bytes:\\xad",
    ]);
    // The decode strips the text's first space; the first token still owns it.
    expect(tok.decode(ids)).toBe("hello 中");
    expect(joined(tok, ids)).toEqual(Buffer.from(utf8.encode(" hello 中")));
  });
});

describe("tokenizers whose decoder is not mapped here", () => {
  it("fall back to the UTF-8 of the id decoded alone", () => {
    const tok = tokenizerFromFiles({
      tokenizerJson: {
        version: "1.0",
        added_tokens: [],
        normalizer: null,
        pre_tokenizer: { type: "Whitespace" },
        post_processor: null,
        decoder: { type: "WordPiece", prefix: "##", cleanup: false },
        model: {
          type: "WordPiece",
          unk_token: "[UNK]",
          continuing_subword_prefix: "##",
          max_input_chars_per_word: 100,
          vocab: { "[UNK]": 0, hello: 1, "##s": 2, é: 3 },
        },
      },
    });
    const ids = tok.encode("hellos é", { addSpecialTokens: false });
    expect(ids).toEqual([1, 2, 3]);
    expect(ids.map((id) => tokenText(tok.tokenBytes(id)))).toEqual(ids.map((id) => tok.decode([id])));
  });
});

describe("tokenText", () => {
  it("is the text of whole UTF-8, else OpenAI's bytes: form", () => {
    expect(tokenText(utf8.encode(" café"))).toBe(" café");
    expect(tokenText(Uint8Array.of(0x20, 0xe4, 0xb8))).toBe("bytes:\\x20\\xe4\\xb8");
    expect(tokenText(new Uint8Array(0))).toBe("");
  });
});
