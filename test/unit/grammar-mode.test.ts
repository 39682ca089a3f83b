// Structured output by grammar (vLLM's `grammar`): the mask allows exactly the tokens whose bytes keep the
// output a prefix of some string of the grammar, stop tokens exactly where the output is whole, and with a
// token budget every random walk ends with a whole string within it — also for grammars no regex can say.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { compileGrammar } from "../../worker/engine/grammar-compiler.ts";
import { GrammarMode } from "../../worker/engine/grammar-mode.ts";
import { acceptsWhole } from "../../worker/engine/grammar-stacks.ts";
import { Prng } from "../../worker/engine/prng.ts";
import { loadTokenizer, type Tokenizer } from "../../worker/engine/tokenizer.ts";

let root: string;
let tokenizer: Tokenizer;
let vocab: number;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-grammar-mode-"));
  tokenizer = loadTokenizer(
    initTinyModel(join(root, "model"), { shape: "tiny", adapters: 0, rank: 4, seed: 2 }).dir,
  );
  vocab = tokenizer.vocabSize;
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

const bytesOf = (text: string) => new TextEncoder().encode(text);

function startsWith(whole: Uint8Array, prefix: Uint8Array): boolean {
  return prefix.length <= whole.length && prefix.every((b, i) => whole[i] === b);
}

/** A random allowed id of a masked row. */
function drawAllowed(row: Float32Array, prng: Prng): number {
  const allowed = [...row.keys()].filter((id) => row[id] !== Number.NEGATIVE_INFINITY);
  expect(allowed.length).toBeGreaterThan(0);
  return allowed[Math.floor(prng.nextFloat() * allowed.length)]!;
}

/** Whether the recognizer, independently of the mask, takes `text` whole. */
const isWhole = (grammarText: string, text: string) => acceptsWhole(compileGrammar(grammarText), text);

describe("the grammar mask", () => {
  // A finite language, so "a prefix of some string of it" can be checked by listing them all.
  const LABELS = `
    root ::= label (" (" confidence ")")?
    label ::= "positive" | "negative" | "neutral" | "naïve ☃"
    confidence ::= "high" | "low"
  `;
  const strings = ["positive", "negative", "neutral", "naïve ☃"].flatMap((l) => [
    l,
    `${l} (high)`,
    `${l} (low)`,
  ]);

  it("allows exactly the tokens that keep the output a prefix of one of its strings, and a stop token on a whole one", () => {
    const grammar = compileGrammar(LABELS);
    const all = strings.map(bytesOf);
    const eos = tokenizer.eosTokenIds;
    const prng = new Prng(5, 0);
    const logits = new Float32Array(vocab);
    const seen = new Set<string>();
    for (let run = 0; run < 24; run++) {
      const mode = new GrammarMode(tokenizer, grammar, eos, () => true);
      let output = new Uint8Array(0);
      for (;;) {
        const row = mode.mask(logits);
        for (let id = 0; id < vocab; id++) {
          const bytes = tokenizer.isSpecial(id) ? null : tokenizer.tokenBytes(id);
          const extended = bytes && bytes.length > 0 ? Uint8Array.of(...output, ...bytes) : null;
          const expected = eos.includes(id)
            ? all.some((c) => c.length === output.length && startsWith(c, output))
            : extended !== null && all.some((c) => startsWith(c, extended));
          if ((row[id] !== Number.NEGATIVE_INFINITY) !== expected) {
            throw new Error(
              `token ${id} after ${JSON.stringify(new TextDecoder().decode(output))}: expected ${expected}`,
            );
          }
        }
        const token = drawAllowed(row, prng);
        if (eos.includes(token)) break;
        mode.take(token);
        output = Uint8Array.of(...output, ...tokenizer.tokenBytes(token));
        if (mode.complete) break;
      }
      const text = new TextDecoder().decode(output);
      expect(strings).toContain(text);
      seen.add(text);
    }
    expect(seen.size).toBeGreaterThan(3);
  });

  it("ends by itself where nothing can follow, and holds stop tokens off while min_tokens does", () => {
    const eos = tokenizer.eosTokenIds;
    const mode = new GrammarMode(tokenizer, compileGrammar('root ::= "yes" | "no"'), eos, () => true);
    for (const token of tokenizer.encode("yes", { addSpecialTokens: false })) {
      expect(mode.complete).toBe(false);
      mode.take(token);
    }
    expect(mode.complete).toBe(true);

    let mayStop = false;
    const digits = new GrammarMode(tokenizer, compileGrammar("root ::= [0-9]+"), eos, () => mayStop);
    digits.take(tokenizer.encode("7", { addSpecialTokens: false })[0]!);
    const logits = new Float32Array(vocab);
    expect(eos.every((id) => digits.mask(logits)[id] === Number.NEGATIVE_INFINITY)).toBe(true);
    mayStop = true;
    expect(eos.every((id) => digits.mask(logits)[id] === 0)).toBe(true);
    expect(digits.complete).toBe(false);
    expect(() => digits.take(tokenizer.encode("x", { addSpecialTokens: false })[0]!)).toThrow(RangeError);
  });

  it("reads a Lark lexeme to its longest match: after 12 of INT INT, no stop token, but a space or a digit", () => {
    const eos = tokenizer.eosTokenIds;
    const grammar = compileGrammar('start: INT INT\n%import common.INT\n%ignore " "');
    const mode = new GrammarMode(tokenizer, grammar, eos, () => true);
    for (const token of tokenizer.encode("12", { addSpecialTokens: false })) mode.take(token);
    const row = mode.mask(new Float32Array(vocab));
    const allowed = (text: string) => {
      const [token] = tokenizer.encode(text, { addSpecialTokens: false });
      return row[token!] !== Number.NEGATIVE_INFINITY;
    };
    expect(eos.every((id) => row[id] === Number.NEGATIVE_INFINITY)).toBe(true);
    expect(allowed(" ")).toBe(true);
    expect(allowed("3")).toBe(true);
    expect(allowed("x")).toBe(false);
  });

  for (const grammar of [
    // Nested brackets: no regex says this.
    'root ::= "[" items? "]"\nitems ::= item ("," item)*\nitem ::= [0-9]{1,3} | "[" items? "]"',
    // Arithmetic, as a calculator adapter answers.
    'root ::= expr\nexpr ::= term (("+" | "-") term)*\nterm ::= [0-9]+ | "(" expr ")"',
    // A small SQL dialect.
    'root ::= "SELECT " cols " FROM " name (" WHERE " name " = " [0-9]+)? ";"\ncols ::= "*" | name (", " name)*\nname ::= [a-z_]{1,8}',
    // Multi-byte characters.
    'root ::= ("é" | "☃" | [α-ω])+ " ok"?',
    // Lark's syntax: JSON with whitespace ignored between tokens.
    'start: value\nvalue: "[" [value ("," value)*] "]" | "{" [ESCAPED_STRING ":" value ("," ESCAPED_STRING ":" value)*] "}" | SIGNED_NUMBER | "true"\n%import common (ESCAPED_STRING, SIGNED_NUMBER, WS)\n%ignore WS',
  ]) {
    it(`ends every random walk whole within its budget: ${JSON.stringify(grammar.slice(0, 40))}`, () => {
      const compiled = compileGrammar(grammar);
      const eos = tokenizer.eosTokenIds;
      const prng = new Prng(11, 0);
      const logits = new Float32Array(vocab);
      for (let run = 0; run < 16; run++) {
        const budget = 12 + Math.floor(prng.nextFloat() * 16);
        const mode = new GrammarMode(tokenizer, compiled, eos, () => true);
        const tokens: number[] = [];
        for (let left = budget; left > 0; left--) {
          const token = drawAllowed(mode.mask(logits, left), prng);
          if (eos.includes(token)) break;
          mode.take(token);
          tokens.push(token);
          if (mode.complete) break;
        }
        const text = tokenizer.decode(tokens, { skipSpecialTokens: true });
        expect(tokens.length).toBeLessThanOrEqual(budget);
        expect(isWhole(grammar, text), `run ${run}, budget ${budget}: ${JSON.stringify(text)}`).toBe(true);
      }
    });
  }
});
