// JSON mode's mask: its shortcuts (plain characters inside a string, a walk of the vocabulary's trie
// elsewhere) allow exactly the tokens a trial of each token's bytes allows, never a special or stop token,
// at every point of outputs for a JSON schema, one with patterned strings and any object. With a budget of
// tokens, the value always completes within it when its shortest completion fits, whatever is drawn.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { JsonGrammar } from "../../worker/engine/json-grammar.ts";
import { JsonMode } from "../../worker/engine/json-mode.ts";
import { ANY_OBJECT, compileJsonSchema, type SchemaNode } from "../../worker/engine/json-schema.ts";
import { Prng } from "../../worker/engine/prng.ts";
import { loadTokenizer, type Tokenizer } from "../../worker/engine/tokenizer.ts";

let root: string;
let tokenizer: Tokenizer;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-json-mode-"));
  tokenizer = loadTokenizer(
    initTinyModel(join(root, "model"), { shape: "tiny", adapters: 0, rank: 4, seed: 2 }).dir,
  );
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

const SCHEMA = compileJsonSchema({
  type: "object",
  properties: {
    title: { type: "string", maxLength: 12 },
    year: { type: "integer" },
    ratings: { type: "array", items: { anyOf: [{ type: "number" }, { type: "null" }] }, maxItems: 4 },
    genre: { enum: ["drama", "comedy"] },
  },
  required: ["title", "year", "ratings", "genre"],
});

const PATTERNED = compileJsonSchema({
  type: "object",
  properties: {
    id: { type: "string", format: "uuid" },
    code: { type: "string", pattern: "^[A-Z][a-z]+ \\d$", maxLength: 8 },
    note: { type: "string", pattern: "^(?!.*xx)" },
  },
  required: ["id", "code", "note"],
});

describe("the JSON mode mask", () => {
  for (const [label, schema] of [
    ["a JSON schema", SCHEMA],
    ["patterned strings", PATTERNED],
    ["any object", ANY_OBJECT],
  ] as [string, SchemaNode][]) {
    it(`allows exactly the tokens whose bytes continue the value, at every step, for ${label}`, () => {
      const prng = new Prng(3, 0);
      const eos = tokenizer.eosTokenIds;
      for (let run = 0; run < 6; run++) {
        const mode = new JsonMode(tokenizer, schema, eos);
        const trial = new JsonGrammar(schema);
        const logits = Float32Array.from({ length: tokenizer.vocabSize }, () => prng.nextFloat() * 8 - 4);
        for (let step = 0; step < 60 && !mode.complete; step++) {
          const masked = mode.mask(logits);
          const allowed: number[] = [];
          for (let id = 0; id < masked.length; id++)
            if (masked[id] !== Number.NEGATIVE_INFINITY) allowed.push(id);
          const expected: number[] = [];
          for (let id = 0; id < tokenizer.vocabSize; id++) {
            if (tokenizer.isSpecial(id) || eos.includes(id)) continue;
            if (trial.accepts(tokenizer.tokenBytes(id))) expected.push(id);
          }
          expect(allowed).toEqual(expected);
          for (const id of allowed) expect(masked[id]).toBe(logits[id]);
          // On to a random allowed token, closing sooner as the run goes on.
          const pick = allowed[Math.floor(prng.nextFloat() * allowed.length)]!;
          mode.take(pick);
          trial.push(tokenizer.tokenBytes(pick));
        }
      }
    });
  }

  const TOOL_CALL = compileJsonSchema({
    type: "object",
    properties: {
      name: { const: "forecast" },
      arguments: {
        type: "object",
        properties: { city: { type: "string", maxLength: 10 }, days: { type: "integer" } },
        required: ["city", "days"],
      },
    },
    required: ["name", "arguments"],
  });

  for (const [label, schema] of [
    ["a JSON schema", SCHEMA],
    ["patterned strings", PATTERNED],
    ["a tool call", TOOL_CALL],
    ["any object", ANY_OBJECT],
  ] as [string, SchemaNode][]) {
    it(`completes the value within a budget of tokens whenever its shortest completion fits, for ${label}`, () => {
      const prng = new Prng(4, 0);
      const eos = tokenizer.eosTokenIds;
      const shortest = new JsonGrammar(schema).fewestBytesToEnd;
      for (const budget of [shortest, shortest + 2, shortest + 12, shortest + 40]) {
        for (let run = 0; run < 3; run++) {
          const mode = new JsonMode(tokenizer, schema, eos);
          const trial = new JsonGrammar(schema);
          let drawn = 0;
          while (!mode.complete) {
            expect(drawn, `budget ${budget}`).toBeLessThan(budget);
            const logits = Float32Array.from({ length: tokenizer.vocabSize }, () => prng.nextFloat() * 8 - 4);
            const masked = mode.mask(logits, budget - drawn);
            const allowed: number[] = [];
            for (let id = 0; id < masked.length; id++)
              if (masked[id] !== Number.NEGATIVE_INFINITY) allowed.push(id);
            for (const id of allowed) expect(trial.accepts(tokenizer.tokenBytes(id))).toBe(true);
            // Half the time the token that leaves the most to write: the mask alone must keep the budget.
            const longest = () =>
              allowed.reduce((a, b) =>
                trial.after(tokenizer.tokenBytes(b))!.fewestBytesToEnd >
                trial.after(tokenizer.tokenBytes(a))!.fewestBytesToEnd
                  ? b
                  : a,
              );
            const pick =
              prng.nextFloat() < 0.5 ? longest() : allowed[Math.floor(prng.nextFloat() * allowed.length)]!;
            mode.take(pick);
            trial.push(tokenizer.tokenBytes(pick));
            drawn++;
          }
        }
      }
    });
  }

  it("allows only the tokens that bring the end closest where the budget is too small to be sure of any completion", () => {
    // A budget of tokens below the bytes the value needs may still be enough where tokens are longer than a
    // byte: the tokens that leave the fewest bytes get there soonest; optional whitespace never does.
    const mode = new JsonMode(tokenizer, SCHEMA, tokenizer.eosTokenIds);
    const logits = new Float32Array(tokenizer.vocabSize);
    const allowedBy = (masked: Float32Array) =>
      [...masked.keys()].filter((id) => masked[id] !== Number.NEGATIVE_INFINITY);
    // Past the object's opening brace, where the grammar takes whitespace as well as the first key.
    const [open] = allowedBy(mode.mask(logits));
    mode.take(open!);
    const trial = new JsonGrammar(SCHEMA);
    trial.push(tokenizer.tokenBytes(open!));
    const free = allowedBy(mode.mask(logits));
    const tight = allowedBy(mode.mask(logits, 2));
    const left = (id: number) => trial.after(tokenizer.tokenBytes(id))!.fewestBytesToEnd;
    const fewest = Math.min(...free.map(left));
    expect(tight.length).toBeGreaterThan(0);
    expect(tight.length).toBeLessThan(free.length);
    for (const id of tight) expect(left(id)).toBe(fewest);
    expect(free.filter((id) => left(id) === fewest)).toEqual(tight);
  });
});
