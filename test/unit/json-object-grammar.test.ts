// JSON mode's grammar: it takes every JSON object byte by byte and is complete exactly at its end, refuses
// what is not one, and agrees with JSON.parse on thousands of near-valid strings, both ways.
import { describe, expect, it } from "vitest";
import { JsonObjectGrammar, MAX_WHITESPACE_RUN } from "../../worker/engine/json-object-grammar.ts";
import { Prng } from "../../worker/engine/prng.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

/** Feeds the text a byte at a time: how many bytes were taken, and whether the object was complete after. */
function feed(text: string): { taken: number; complete: boolean; completeEarly: boolean } {
  const grammar = new JsonObjectGrammar();
  const all = bytes(text);
  let completeEarly = false;
  for (const [i, b] of all.entries()) {
    if (!grammar.accepts(Uint8Array.of(b))) return { taken: i, complete: false, completeEarly };
    grammar.push(Uint8Array.of(b));
    if (grammar.complete && i < all.length - 1) completeEarly = true;
  }
  return { taken: all.length, complete: grammar.complete, completeEarly };
}

const VALID = [
  "{}",
  '{"a":1}',
  '{"a":[1,2.5e-3,-0,0.5,1E+9,true,false,null,"x\\u00e9\\n\\"\\\\\\/"],"b":{"c":{}},"d":[]}',
  '{\n  "name": "Zoë 😀",\n  "list": [ 1 , 2 ],\n\t"nested": {"deep": [[[]]]}\n}',
  '{"": ""}',
  '{"n": -12.5e-10, "m": 123456789}',
];

const INVALID = [
  " {}", // leading whitespace
  "[1]", // a top-level array
  '"s"',
  '{"a" 1}',
  '{"a":01}',
  '{"a":1,}',
  "{,}",
  '{"a":tru}',
  '{"a":"\u0001"}',
  '{"a":1}}',
  '{"a":-}',
  '{"a":1.}',
  '{"a":1e}',
  '{"a":"\\x"}',
  '{"a":"\\u12G4"}',
  "{a:1}",
  '{"a":[1 2]}',
  '{"a":]}',
  '{"a":{]}',
];

describe("the JSON object grammar", () => {
  it("takes every byte of a JSON object and is complete at its last byte only", () => {
    for (const text of VALID) {
      expect(feed(text), text).toEqual({ taken: bytes(text).length, complete: true, completeEarly: false });
    }
  });

  it("refuses what is not one JSON object, and anything after it", () => {
    for (const text of INVALID) expect(feed(text).complete, text).toBe(false);
    const done = new JsonObjectGrammar();
    done.push(bytes("{}"));
    expect(done.accepts(bytes(" "))).toBe(false);
    expect(done.accepts(bytes("\n"))).toBe(false);
  });

  it("refuses broken UTF-8 in strings", () => {
    for (const broken of [[0xc0, 0x80], [0xe2, 0x28], [0xf5, 0x80, 0x80, 0x80], [0x80]]) {
      const grammar = new JsonObjectGrammar();
      grammar.push(bytes('{"a":"'));
      expect(grammar.accepts(Uint8Array.from(broken))).toBe(false);
    }
  });

  it("caps a run of whitespace", () => {
    const grammar = new JsonObjectGrammar();
    grammar.push(bytes("{"));
    expect(grammar.accepts(bytes(" ".repeat(MAX_WHITESPACE_RUN)))).toBe(true);
    expect(grammar.accepts(bytes(" ".repeat(MAX_WHITESPACE_RUN + 1)))).toBe(false);
  });

  it("leaves its state as it was when push refuses", () => {
    const grammar = new JsonObjectGrammar();
    grammar.push(bytes('{"a":'));
    expect(() => grammar.push(bytes("1}x"))).toThrow(RangeError);
    grammar.push(bytes("2}"));
    expect(grammar.complete).toBe(true);
  });

  it("agrees with JSON.parse on near-valid strings: complete exactly when they parse as an object", () => {
    const prng = new Prng(21, 0);
    const pick = <T>(items: readonly T[]) => items[Math.floor(prng.nextFloat() * items.length)]!;
    const alphabet = [
      '"',
      "{",
      "}",
      "[",
      "]",
      ":",
      ",",
      "0",
      "1",
      "-",
      ".",
      "e",
      "+",
      " ",
      "\\",
      "u",
      "a",
      "t",
      "n",
    ];
    let parsed = 0;
    for (let n = 0; n < 4000; n++) {
      let text = pick(VALID);
      // One to three edits: delete, insert or replace a character.
      for (let edits = 1 + Math.floor(prng.nextFloat() * 3); edits > 0; edits--) {
        const at = Math.floor(prng.nextFloat() * (text.length + 1));
        const kind = prng.nextFloat();
        if (kind < 0.33) text = text.slice(0, at) + text.slice(at + 1);
        else if (kind < 0.66) text = text.slice(0, at) + pick(alphabet) + text.slice(at);
        else text = text.slice(0, at) + pick(alphabet) + text.slice(at + 1);
      }
      let object = false;
      try {
        const value: unknown = JSON.parse(text);
        object = typeof value === "object" && value !== null && !Array.isArray(value);
      } catch {}
      // JSON.parse allows whitespace around the object, which the grammar does not.
      if (object && text !== text.trim()) continue;
      if (object) parsed++;
      const { complete, completeEarly } = feed(text);
      expect(complete && !completeEarly, text).toBe(object);
    }
    expect(parsed).toBeGreaterThan(100);
  });
});
