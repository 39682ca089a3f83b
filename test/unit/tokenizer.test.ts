import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import {
  loadTokenizer,
  StreamingDetokenizer,
  type Tokenizer,
  TokenizerError,
  tokenizerFromFiles,
} from "../../worker/engine/tokenizer.ts";
import { addFimTokens } from "../support/fim-model.ts";

let dir: string;
let tok: Tokenizer;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "luminet-tokenizer-"));
  initTinyModel(dir, { shape: "tiny", adapters: 0, rank: 4, seed: 0 });
  tok = loadTokenizer(dir);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SAMPLES = [
  "Hello, world! The quick brown fox jumps over the lazy dog.",
  "function add(a, b) {\n  return a + b;\n}\n",
  "emoji 😀👍🏽 and flags 🇫🇷",
  "中文字符，日本語のテキスト、한국어",
  "  leading and trailing spaces  ",
  "café naïve résumé",
];

describe("the tiny model's tokenizer", () => {
  it("knows the model's whole vocabulary, its bos and its eos ids", () => {
    expect(tok.vocabSize).toBe(512);
    expect(tok.bosTokenId).toBe(504);
    expect([...tok.eosTokenIds].sort()).toEqual([505, 508]);
    expect(tok.isSpecial(508)).toBe(true);
    expect(tok.isSpecial(65)).toBe(false);
  });

  it.each(SAMPLES)("encodes and decodes %j back to itself", (text) => {
    const ids = tok.encode(text, { addSpecialTokens: false });
    expect(ids.every((id) => id >= 0 && id < 504)).toBe(true);
    expect(tok.decode(ids)).toBe(text);
  });

  it("merges frequent English into multi-byte tokens", () => {
    expect(tok.encode(" the", { addSpecialTokens: false })).toHaveLength(1);
    expect(tok.encode("The capital of France", { addSpecialTokens: false }).length).toBeLessThan(10);
  });

  it("prepends bos when asked for special tokens, and skips it on request when decoding", () => {
    const ids = tok.encode("hi", { addSpecialTokens: true });
    expect(ids[0]).toBe(504);
    expect(tok.encode("hi", { addSpecialTokens: false })).toEqual(ids.slice(1));
    expect(tok.decode(ids)).toBe("<|begin_of_text|>hi");
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe("hi");
  });

  it("encodes special tokens written in text as single ids", () => {
    expect(tok.encode("<|start_header_id|>user<|end_header_id|>", { addSpecialTokens: false })).toEqual([
      506,
      ...tok.encode("user", { addSpecialTokens: false }),
      507,
    ]);
  });

  it("decodes ids outside the vocabulary to nothing", () => {
    expect(tok.decode([])).toBe("");
    expect(tok.decode([512, 9999])).toBe("");
  });

  it("renders the Llama 3 chat template with the generation prompt", () => {
    const messages = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "  Hi there  " },
    ];
    const prompt = tok.applyChatTemplate(messages, { addGenerationPrompt: true });
    expect(prompt).toBe(
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>" +
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    );
    expect(tok.applyChatTemplate(messages, { addGenerationPrompt: false })).toBe(
      prompt.slice(0, -"<|start_header_id|>assistant<|end_header_id|>\n\n".length),
    );
    const ids = tok.encode(prompt, { addSpecialTokens: false });
    expect(ids.filter((id) => id === 504)).toEqual([504]);
    const newlines = tok.encode("\n\n", { addSpecialTokens: false });
    expect(ids.slice(-1 - newlines.length)).toEqual([507, ...newlines]);
  });

  it("finds a code model's fill-in-the-middle tokens, and none in a vocabulary without them", () => {
    expect(tok.fillInTheMiddle).toBeNull();
    const coder = mkdtempSync(join(tmpdir(), "luminet-fim-"));
    try {
      initTinyModel(coder, { shape: "tiny", adapters: 0, rank: 4, seed: 0 });
      const ids = addFimTokens(coder);
      const fim = loadTokenizer(coder);
      expect(fim.fillInTheMiddle).toEqual(ids);
      expect(fim.encode("<|fim_middle|>", { addSpecialTokens: false })).toEqual([ids.middle]);
    } finally {
      rmSync(coder, { recursive: true, force: true });
    }
  });

  it("says when a folder has no tokenizer or no chat template", () => {
    const empty = mkdtempSync(join(tmpdir(), "luminet-notok-"));
    try {
      expect(() => loadTokenizer(empty)).toThrow(TokenizerError);
      writeFileSync(join(empty, "tokenizer.json"), readFileSync(join(dir, "tokenizer.json")));
      const bare = loadTokenizer(empty);
      expect(bare.decode(bare.encode("ok", { addSpecialTokens: false }))).toBe("ok");
      expect(() => bare.applyChatTemplate([{ role: "user", content: "x" }])).toThrow(/has no chat_template/);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});

describe("tokenizerFromFiles", () => {
  it("tokenizes, detects end of sequence and renders the template from in-memory files as from the folder", () => {
    const text = (file: string) => readFileSync(join(dir, file), "utf8");
    const fromFiles = tokenizerFromFiles({
      tokenizerJson: text("tokenizer.json"),
      tokenizerConfig: JSON.parse(text("tokenizer_config.json")),
      generationConfig: text("generation_config.json"),
    });
    for (const sample of SAMPLES) expect(fromFiles.encode(sample)).toEqual(tok.encode(sample));
    expect(fromFiles.eosTokenIds).toEqual(tok.eosTokenIds);
    expect(fromFiles.bosTokenId).toBe(tok.bosTokenId);
    expect(fromFiles.vocabSize).toBe(tok.vocabSize);
    const messages = [{ role: "user", content: "Hi" }];
    expect(fromFiles.applyChatTemplate(messages)).toBe(tok.applyChatTemplate(messages));
  });

  it("takes the chat template from its own file and names the source in errors", () => {
    const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
    const { chat_template: template, ...withoutTemplate } = config;
    const files = { tokenizerJson: readFileSync(join(dir, "tokenizer.json"), "utf8"), source: "bundle:tiny" };
    const separate = tokenizerFromFiles({
      ...files,
      tokenizerConfig: withoutTemplate,
      chatTemplate: template,
    });
    expect(separate.applyChatTemplate([{ role: "user", content: "x" }])).toBe(
      tok.applyChatTemplate([{ role: "user", content: "x" }]),
    );
    const bare = tokenizerFromFiles({ ...files, tokenizerConfig: withoutTemplate });
    expect(() => bare.applyChatTemplate([{ role: "user", content: "x" }])).toThrow(
      "bundle:tiny: tokenizer_config.json has no chat_template",
    );
    expect(() => tokenizerFromFiles({ ...files, tokenizerJson: "{not json" })).toThrow(
      /^bundle:tiny\/tokenizer\.json: /,
    );
  });
});

describe("StreamingDetokenizer", () => {
  function stream(ids: number[], detok = new StreamingDetokenizer(tok)): string[] {
    const deltas = ids.map((id) => detok.push(id));
    deltas.push(detok.flush());
    return deltas;
  }

  it.each(SAMPLES)("streams %j in whole characters that add up to the full decode", (text) => {
    const ids = tok.encode(text, { addSpecialTokens: false });
    const deltas = stream(ids);
    expect(deltas.join("")).toBe(text);
    for (const d of deltas) expect(d).not.toContain("\uFFFD");
  });

  it("holds back the bytes of a character split across byte-level tokens until it is complete", () => {
    // 😀 is F0 9F 98 80, 中 is E4 B8 AD: with this vocabulary each byte is its own token.
    const ids = tok.encode("a😀中", { addSpecialTokens: false });
    expect(ids).toHaveLength(8);
    expect(stream(ids)).toEqual(["a", "", "", "", "😀", "", "", "中", ""]);
  });

  it("emits an incomplete character at the end as U+FFFD on flush", () => {
    const ids = tok.encode("ok😀", { addSpecialTokens: false }).slice(0, -2);
    const deltas = stream(ids);
    expect(deltas.slice(0, -1).join("")).toBe("ok");
    expect(deltas.at(-1)).toBe("\uFFFD");
  });

  it("skips special tokens unless told otherwise", () => {
    const ids = [...tok.encode("done", { addSpecialTokens: false }), 508];
    expect(stream(ids).join("")).toBe("done");
    expect(stream(ids, new StreamingDetokenizer(tok, { skipSpecialTokens: false })).join("")).toBe(
      "done<|eot_id|>",
    );
  });

  it("gives a template that reads tools the tools and the conversation's calls and results", () => {
    const config = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
    // A template in the manner of Llama 3.1's: tools as JSON in the system turn, calls as JSON.
    const template =
      "{% if tools %}<tools>{% for t in tools %}{{ t.function.name }}:{{ t.function.parameters | tojson }};{% endfor %}</tools>{% endif %}" +
      "{% for m in messages %}[{{ m.role }}]{% if m.tool_calls %}{% for c in m.tool_calls %}" +
      "call {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}{% elif m.role == 'tool' %}" +
      "result {{ m.tool_call_id }}: {{ m.content }}{% else %}{{ m.content }}{% endif %}{% endfor %}";
    const withTools = tokenizerFromFiles({
      tokenizerJson: readFileSync(join(dir, "tokenizer.json"), "utf8"),
      tokenizerConfig: { ...config, chat_template: template },
    });
    expect(withTools.templateTakesTools).toBe(true);
    expect(tok.templateTakesTools).toBe(false);
    const tool = { type: "function", function: { name: "clock", parameters: { type: "object" } } };
    const rendered = withTools.applyChatTemplate(
      [
        { role: "user", content: "Time?" },
        {
          role: "assistant",
          content: "",
          tool_calls: [{ id: "c1", type: "function", function: { name: "clock", arguments: { tz: "UTC" } } }],
        },
        { role: "tool", content: "12:00", tool_call_id: "c1" },
      ],
      { tools: [tool] },
    );
    expect(rendered).toBe(
      '<tools>clock:{"type": "object"};</tools>[user]Time?[assistant]call clock {"tz": "UTC"}[tool]result c1: 12:00',
    );
  });
});
