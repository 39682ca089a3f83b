// Structured output by regex (vLLM's `regex` and `choice`): the mask allows exactly the tokens whose bytes
// keep the output a prefix of some match, stop tokens exactly where the output matches, and with a token
// budget every random walk ends matched within it.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { Prng } from "../../worker/engine/prng.ts";
import { RegexMode } from "../../worker/engine/regex-mode.ts";
import {
  choiceRegex,
  compileFullMatch,
  matchesWhole,
  PatternError,
} from "../../worker/engine/string-automaton.ts";
import { loadTokenizer, type Tokenizer } from "../../worker/engine/tokenizer.ts";

let root: string;
let tokenizer: Tokenizer;
let vocab: number;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-regex-mode-"));
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

describe("the regex mask", () => {
  const CHOICES = ["positive", "negative", "neutral", "neg", "naïve ☃ (snow)"];

  it("allows exactly the tokens that keep the output a prefix of a choice, and a stop token on a whole one", () => {
    const automaton = compileFullMatch(choiceRegex(CHOICES));
    const choices = CHOICES.map(bytesOf);
    const eos = tokenizer.eosTokenIds;
    const prng = new Prng(5, 0);
    const logits = new Float32Array(vocab);
    for (let run = 0; run < 12; run++) {
      const mode = new RegexMode(tokenizer, automaton, eos, () => true);
      let output = new Uint8Array(0);
      for (;;) {
        const row = mode.mask(logits);
        for (let id = 0; id < vocab; id++) {
          const bytes = tokenizer.isSpecial(id) ? null : tokenizer.tokenBytes(id);
          const extended = bytes && bytes.length > 0 ? Uint8Array.of(...output, ...bytes) : null;
          const expected = eos.includes(id)
            ? choices.some((c) => c.length === output.length && startsWith(c, output))
            : extended !== null && choices.some((c) => startsWith(c, extended));
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
      expect(CHOICES).toContain(new TextDecoder().decode(output));
    }
  });

  it("ends by itself where nothing can follow the match", () => {
    const mode = new RegexMode(tokenizer, compileFullMatch(choiceRegex(["yes", "no"])), [], () => true);
    for (const token of tokenizer.encode("yes", { addSpecialTokens: false })) {
      expect(mode.complete).toBe(false);
      mode.take(token);
    }
    expect(mode.complete).toBe(true);
  });

  it("holds the stop tokens off while min_tokens does, and refuses a token the regex cannot take", () => {
    const eos = tokenizer.eosTokenIds;
    let mayStop = false;
    const mode = new RegexMode(tokenizer, compileFullMatch("\\d+"), eos, () => mayStop);
    mode.take(tokenizer.encode("7", { addSpecialTokens: false })[0]!);
    const logits = new Float32Array(vocab);
    expect(eos.every((id) => mode.mask(logits)[id] === Number.NEGATIVE_INFINITY)).toBe(true);
    mayStop = true;
    expect(eos.every((id) => mode.mask(logits)[id] === 0)).toBe(true);
    expect(() => mode.take(tokenizer.encode("x", { addSpecialTokens: false })[0]!)).toThrow(RangeError);
  });

  for (const pattern of [
    "\\d{3}-[a-z]{2,5}( ok)?",
    "(ab|cd)*e",
    "[A-Z][a-z]+, [A-Z]{2} \\d{5}",
    "é+ ?[α-ω]{1,3}",
  ]) {
    it(`ends every random walk matched within its budget: ${pattern}`, () => {
      const automaton = compileFullMatch(pattern);
      const whole = new RegExp(`^(?:${pattern})$`, "u");
      const eos = tokenizer.eosTokenIds;
      const prng = new Prng(7, 0);
      const logits = new Float32Array(vocab);
      for (let run = 0; run < 20; run++) {
        const budget = 14 + Math.floor(prng.nextFloat() * 10);
        const mode = new RegexMode(tokenizer, automaton, eos, () => true);
        const tokens: number[] = [];
        for (let left = budget; left > 0; left--) {
          const token = drawAllowed(mode.mask(logits, left), prng);
          if (eos.includes(token)) break;
          mode.take(token);
          tokens.push(token);
          if (mode.complete) break;
        }
        const text = tokenizer.decode(tokens, { skipSpecialTokens: true });
        expect(text, `run ${run}, budget ${budget}`).toMatch(whole);
      }
    });
  }
});

describe("whole-output regexes", () => {
  it("match the whole output, anchors or not, where a JSON Schema pattern searches", () => {
    const accepts = (pattern: string, text: string) => matchesWhole(compileFullMatch(pattern), text);
    expect(accepts("b", "b")).toBe(true);
    expect(accepts("b", "abc")).toBe(false);
    expect(accepts("^b$", "b")).toBe(true);
    expect(accepts("a|bc", "bc")).toBe(true);
    expect(accepts("a|bc", "abc")).toBe(false);
  });

  it("escape every choice, so a choice is itself and nothing more", () => {
    const regex = choiceRegex(["a.b", "(x)", "1+1", "c\\d"]);
    for (const choice of ["a.b", "(x)", "1+1", "c\\d"]) {
      expect(new RegExp(`^(?:${regex})$`, "u").test(choice)).toBe(true);
    }
    expect(new RegExp(`^(?:${regex})$`, "u").test("aXb")).toBe(false);
  });

  it("refuse what cannot be written, naming the regex", () => {
    expect(() => compileFullMatch("a(?=b)")).toThrow(PatternError);
    expect(() => compileFullMatch("[")).toThrow(/regex "\["/);
  });
});
