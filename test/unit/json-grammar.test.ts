// Structured output's grammar. JSON mode: it takes every JSON object byte by byte and is complete exactly at
// its end, refuses what is not one, and agrees with JSON.parse on thousands of near-valid strings, both ways.
// JSON schemas: the subset compiles or is refused with the keyword named, valid instances are taken and
// invalid ones refused, and every value a random walk through the grammar completes is valid. The fewest
// bytes that complete a value are exactly the length of its shortest completion.
import { describe, expect, it } from "vitest";
import {
  JsonGrammar,
  MAX_EXPONENT_DIGITS,
  MAX_PARSES,
  MAX_WHITESPACE_RUN,
} from "../../worker/engine/json-grammar.ts";
import {
  ANY_OBJECT,
  compileJsonSchema,
  JsonSchemaError,
  type SchemaNode,
} from "../../worker/engine/json-schema.ts";
import { MAX_DIGITS } from "../../worker/engine/number-range.ts";
import { Prng } from "../../worker/engine/prng.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

/** Feeds the text a byte at a time: how many bytes were taken, and whether the object was complete after. */
function feed(
  text: string,
  grammar = new JsonGrammar(),
): { taken: number; complete: boolean; completeEarly: boolean } {
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
  '{\n"name": "Zoë 😀",\n"list": [ 1 , 2 ],\t"nested": {"deep": [[[]]]}\n}',
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
    const done = new JsonGrammar();
    done.push(bytes("{}"));
    expect(done.accepts(bytes(" "))).toBe(false);
    expect(done.accepts(bytes("\n"))).toBe(false);
  });

  it("refuses broken UTF-8 in strings", () => {
    // Overlong forms, a surrogate, past U+10FFFF, a missing or stray continuation byte.
    const broken = [
      [0xc0, 0x80],
      [0xe0, 0x80, 0x80],
      [0xed, 0xa0, 0x80],
      [0xf0, 0x80, 0x80, 0x80],
      [0xf4, 0x90, 0x80, 0x80],
      [0xf5, 0x80, 0x80, 0x80],
      [0xe2, 0x28],
      [0x80],
    ];
    for (const bad of broken) {
      const grammar = new JsonGrammar();
      grammar.push(bytes('{"a":"'));
      expect(grammar.accepts(Uint8Array.from(bad)), String(bad)).toBe(false);
    }
    // Agrees with a strict UTF-8 decoder on random byte strings of leads, continuations and ASCII.
    const prng = new Prng(8, 0);
    const pool = [
      0x41, 0x7a, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc2, 0xdf, 0xe0, 0xed, 0xef, 0xf0, 0xf4, 0xf5,
    ];
    const decoder = new TextDecoder("utf-8", { fatal: true });
    for (let n = 0; n < 3000; n++) {
      const run = Uint8Array.from(
        { length: 1 + Math.floor(prng.nextFloat() * 6) },
        () => pool[Math.floor(prng.nextFloat() * pool.length)]!,
      );
      let decodes = true;
      try {
        decoder.decode(run);
      } catch {
        decodes = false;
      }
      const text = new Uint8Array([...bytes('{"a":"'), ...run, ...bytes('"}')]);
      const grammar = new JsonGrammar();
      const whole = grammar.accepts(text);
      expect(whole, String(run)).toBe(decodes);
    }
  });

  it("caps a run of whitespace and the digits of a number's parts", () => {
    const grammar = new JsonGrammar();
    grammar.push(bytes("{"));
    expect(grammar.accepts(bytes(" ".repeat(MAX_WHITESPACE_RUN)))).toBe(true);
    expect(grammar.accepts(bytes(" ".repeat(MAX_WHITESPACE_RUN + 1)))).toBe(false);
    grammar.push(bytes('"n":'));
    const digits = "1".repeat(MAX_DIGITS);
    const exponent = "9".repeat(MAX_EXPONENT_DIGITS);
    expect(grammar.accepts(bytes(`-${digits}.${digits}e-${exponent}}`))).toBe(true);
    expect(grammar.accepts(bytes(`${digits}1`))).toBe(false);
    expect(grammar.accepts(bytes(`1.${digits}1`))).toBe(false);
    // An exponent's digits are fewer: every number written is one a double holds, never infinity.
    expect(grammar.accepts(bytes(`1e+${exponent}9`))).toBe(false);
    expect(Number.isFinite(JSON.parse(`-${"9".repeat(MAX_DIGITS)}.9e+${exponent}`))).toBe(true);
  });

  it("leaves its state as it was when push refuses", () => {
    const grammar = new JsonGrammar();
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
      // JSON.parse allows whitespace around the object and in runs, and exponents of any length (reading
      // the long ones as infinity), which the grammar does not.
      if (object && (text !== text.trim() || /[ \t\n\r]{2,}/.test(text))) continue;
      if (object && /[eE][+-]?\d{3}/.test(text)) continue;
      if (object) parsed++;
      const { complete, completeEarly } = feed(text);
      expect(complete && !completeEarly, text).toBe(object);
    }
    expect(parsed).toBeGreaterThan(100);
  });
});

const PERSON = {
  type: "object",
  properties: {
    name: { type: "string", minLength: 1, maxLength: 5, description: "annotations are ignored" },
    age: { type: "integer" },
    nickname: { type: "string" },
    tags: { type: "array", items: { enum: ["a", "b", 3] }, maxItems: 2 },
    score: { type: ["number", "null"] },
    kind: { const: "person" },
    tree: { $ref: "#/$defs/tree" },
  },
  required: ["name", "age", "tags", "score", "kind", "tree"],
  additionalProperties: false,
  $defs: {
    tree: {
      type: "object",
      properties: {
        value: { type: "boolean" },
        children: { type: "array", items: { $ref: "#/$defs/tree" } },
      },
      required: ["value", "children"],
    },
  },
};
const leaf = '{"value":true,"children":[]}';
const person = (fields: string) => `{${fields}}`;
const base = `"name":"Ann","age":41,"tags":["a",3],"score":null,"kind":"person","tree":${leaf}`;

/** A validator for the subset, written from the schema's meaning, to check what the grammar completes. */
function valid(schema: Record<string, unknown>, value: unknown, root = schema): boolean {
  if (schema.$ref) {
    const name = String(schema.$ref).split("/").at(-1)!;
    return valid((root.$defs as Record<string, Record<string, unknown>>)[name]!, value, root);
  }
  if ("const" in schema) return JSON.stringify(value) === JSON.stringify(schema.const);
  if (schema.enum) return (schema.enum as unknown[]).some((e) => JSON.stringify(e) === JSON.stringify(value));
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  return types.some((type) => {
    switch (type) {
      case "object": {
        if (typeof value !== "object" || value === null || Array.isArray(value)) return false;
        const properties = (schema.properties ?? {}) as Record<string, Record<string, unknown>>;
        const keys = Object.keys(value);
        const order = Object.keys(properties);
        if (keys.some((k) => !(k in properties))) return false;
        if (keys.some((k, i) => i > 0 && order.indexOf(k) < order.indexOf(keys[i - 1]!))) return false;
        if (((schema.required ?? []) as string[]).some((k) => !(k in value))) return false;
        return keys.every((k) => valid(properties[k]!, (value as Record<string, unknown>)[k], root));
      }
      case "array":
        return (
          Array.isArray(value) &&
          value.length <= ((schema.maxItems as number) ?? Infinity) &&
          value.every((item) => valid(schema.items as Record<string, unknown>, item, root))
        );
      case "string": {
        if (typeof value !== "string") return false;
        const length = [...value].length;
        return (
          length >= ((schema.minLength as number) ?? 0) &&
          length <= ((schema.maxLength as number) ?? Infinity)
        );
      }
      case "integer":
        return Number.isInteger(value);
      case "number":
        return typeof value === "number";
      case "boolean":
        return typeof value === "boolean";
      case "null":
        return value === null;
      default:
        return false;
    }
  });
}

describe("a JSON schema's grammar", () => {
  const grammar = () => new JsonGrammar(compileJsonSchema(PERSON));

  it("takes instances of the schema, optional keys left out or not, pretty-printed or not", () => {
    for (const text of [
      person(base),
      person(base.replace('"age":41,', '"age":-7,"nickname":"Annie \u00e9",')),
      person(base.replace('"tags":["a",3]', '"tags":[]').replace('"score":null', '"score":2.5e3')),
      `{\n"name": "Zoë",\n"age": 0,\n"tags": [ "b" ],\n"score": -1,\n"kind": "person",\n"tree": {"value": false, "children": [${leaf}, ${leaf}]}\n}`,
    ]) {
      expect(valid(PERSON, JSON.parse(text)), text).toBe(true);
      expect(feed(text, grammar()), text).toEqual({
        taken: bytes(text).length,
        complete: true,
        completeEarly: false,
      });
    }
  });

  it("refuses keys out of order, missing or unknown, wrong types, lengths and counts, other enum values", () => {
    for (const text of [
      person(base.replace('"name":"Ann","age":41', '"age":41,"name":"Ann"')),
      person(base.replace('"age":41,', "")),
      person(base.replace('"age":41,', '"age":41,"extra":1,')),
      person(base.replace('"age":41', '"age":41.5')),
      person(base.replace('"age":41', '"age":"41"')),
      person(base.replace('"name":"Ann"', '"name":"Annabel"')),
      person(base.replace('"name":"Ann"', '"name":""')),
      person(base.replace('["a",3]', '["a",3,"b"]')),
      person(base.replace('["a",3]', '["c"]')),
      person(base.replace('"kind":"person"', '"kind":"people"')),
      person(base.replace(leaf, '{"value":true}')),
      person(base.replace(leaf, '{"value":1,"children":[]}')),
    ]) {
      expect(valid(PERSON, JSON.parse(text)), text).toBe(false);
      expect(feed(text, grammar()).complete, text).toBe(false);
    }
  });

  it("completes only valid instances on a random walk through what it allows", () => {
    const prng = new Prng(5, 0);
    const alphabet = [...'{}[]":,-.0123456789eE+ \nabcdefghijklmnoprstuvwxyz'].map((c) => c.charCodeAt(0));
    let completed = 0;
    for (let walk = 0; walk < 120; walk++) {
      const g = grammar();
      const out: number[] = [];
      while (!g.complete && out.length < 2000) {
        const allowed = alphabet.filter((b) => g.accepts(Uint8Array.of(b)));
        expect(allowed.length, String.fromCharCode(...out)).toBeGreaterThan(0);
        // Structure first: the walk leaves strings and numbers soon, so values end.
        const structural = allowed.filter((b) => !/[a-z0-9 \n]/.test(String.fromCharCode(b)));
        const pool = structural.length > 0 && prng.nextFloat() < 0.7 ? structural : allowed;
        const b = pool[Math.floor(prng.nextFloat() * pool.length)]!;
        g.push(Uint8Array.of(b));
        out.push(b);
      }
      if (!g.complete) continue;
      completed++;
      const text = String.fromCharCode(...out);
      expect(valid(PERSON, JSON.parse(text)), text).toBe(true);
    }
    expect(completed).toBeGreaterThan(80);
  });

  it("follows at most MAX_PARSES alternatives, and still completes a valid instance", () => {
    // Two identical alternatives at each of 10 levels: 1,024 parses if none were dropped.
    const $defs: Record<string, unknown> = {};
    let inner: unknown = { type: "integer" };
    for (let level = 0; level < 10; level++) {
      $defs[`l${level}`] = { type: "object", properties: { v: inner }, required: ["v"] };
      const ref = { $ref: `#/$defs/l${level}` };
      inner = { anyOf: [ref, ref] };
    }
    const g = new JsonGrammar(compileJsonSchema({ ...(inner as object), $defs }));
    const text = `${'{"v":'.repeat(10)}7${"}".repeat(10)}`;
    for (const b of bytes(text)) {
      g.push(Uint8Array.of(b));
      expect((g as unknown as { parses: unknown[] }).parses.length).toBeLessThanOrEqual(MAX_PARSES);
    }
    expect(g.complete).toBe(true);
  });

  it("refuses what it cannot keep, naming the keyword", () => {
    const refused: [unknown, string][] = [
      [
        {
          type: "object",
          properties: { a: { type: "array", items: { type: "string" }, uniqueItems: true } },
        },
        'keyword "uniqueItems"',
      ],
      [
        { type: "object", properties: { a: { type: "object", minProperties: 1 } } },
        'keyword "minProperties"',
      ],
      [
        { type: "object", properties: { a: { type: "integer", minimum: 5, maximum: 3 } } },
        "minimum 5 and maximum 3",
      ],
      [{ type: "object", properties: { a: { oneOf: [] } } }, 'keyword "oneOf"'],
      [{ type: "object", additionalProperties: true, properties: {} }, "only false"],
      [{ type: "object", properties: { a: { type: "string" } }, required: ["b"] }, "required"],
      [{ type: "object", properties: { a: { $ref: "#/$defs/missing" } } }, "not defined"],
      [{ type: "object", properties: { a: { $ref: "https://example.com/s.json" } } }, "only"],
      [{ type: "array", items: { type: "string" } }, "the root must be an object"],
      [{ type: "object", properties: { a: { type: "text" } } }, "not a JSON Schema type"],
      [{ type: "object", properties: { a: { type: "array" } } }, 'needs "items"'],
    ];
    for (const [schema, message] of refused) {
      expect(() => compileJsonSchema(schema), JSON.stringify(schema)).toThrow(JsonSchemaError);
      expect(() => compileJsonSchema(schema), JSON.stringify(schema)).toThrow(message);
    }
    // An object schema without properties is any object, or only {} without additional properties.
    expect(feed('{"x":[1]}', new JsonGrammar(compileJsonSchema({ type: "object" }))).complete).toBe(true);
    const empty = new JsonGrammar(compileJsonSchema({ type: "object", additionalProperties: false }));
    expect(feed('{"x":1}', empty).complete).toBe(false);
  });
});

describe("recursion at the root", () => {
  it('reads "$ref": "#" as the whole schema, as OpenAI\'s and zod\'s recursive schemas write it', () => {
    const list = {
      type: "object",
      properties: { v: { type: "string" }, next: { anyOf: [{ $ref: "#" }, { type: "null" }] } },
      required: ["v", "next"],
      additionalProperties: false,
    };
    const complete = (text: string) => feed(text, new JsonGrammar(compileJsonSchema(list))).complete;
    expect(complete('{"v":"a","next":{"v":"b","next":{"v":"c","next":null}}}')).toBe(true);
    expect(complete('{"v":"a","next":{"x":1}}')).toBe(false);
    expect(complete('{"v":"a","next":{"v":"b"}}')).toBe(false);
  });

  it("refuses a recursion that cannot end: no value satisfies it", () => {
    const endless = {
      type: "object",
      properties: { a: { $ref: "#/$defs/A" } },
      required: ["a"],
      $defs: { A: { type: "object", properties: { a: { $ref: "#/$defs/A" } }, required: ["a"] } },
    };
    expect(() => compileJsonSchema(endless)).toThrow("no value satisfies it");
    expect(() => compileJsonSchema({ ...endless, required: [] })).not.toThrow();
  });
});

describe("keywords beside const, enum and anyOf", () => {
  const takes = (schema: Record<string, unknown>, value: unknown) =>
    feed(
      JSON.stringify({ v: value }),
      new JsonGrammar(
        compileJsonSchema({
          type: "object",
          properties: { v: schema },
          required: ["v"],
          additionalProperties: false,
        }),
      ),
    ).complete;

  it("keeps of the values const and enum list those of the type beside them, as a validator reads both", () => {
    expect(takes({ type: "string", enum: ["a", 1] }, "a")).toBe(true);
    expect(takes({ type: "string", enum: ["a", 1] }, 1)).toBe(false);
    expect(takes({ type: "number", enum: [1, 2.5, "x"] }, 1)).toBe(true);
    expect(takes({ type: ["integer", "null"], enum: [1, 2.5, null] }, 2.5)).toBe(false);
    expect(takes({ enum: ["a", "b"], const: "b" }, "a")).toBe(false);
    expect(takes({ enum: ["a", "b"], const: "b" }, "b")).toBe(true);
  });

  it("keeps of anyOf's branches what is of the type beside it", () => {
    const either = { type: "string", anyOf: [{ type: "string", maxLength: 2 }, { type: "integer" }] };
    expect(takes(either, "ab")).toBe(true);
    expect(takes(either, "abc")).toBe(false);
    expect(takes(either, 71171)).toBe(false);
    expect(takes({ type: "integer", anyOf: [{}, { const: "x" }] }, 5)).toBe(true);
    expect(takes({ type: "integer", anyOf: [{}, { const: "x" }] }, "x")).toBe(false);
  });

  it("refuses what no value satisfies, and constraints that would be ignored beside them", () => {
    const refused: [Record<string, unknown>, string][] = [
      [{ type: "string", const: 3 }, "no value const lists is of the schema's type"],
      [{ enum: ["a"], const: "b" }, "no value const lists"],
      [
        { type: "string", enum: ["a", "bbbbbb"], maxLength: 2 },
        'keyword "maxLength" cannot stand beside enum',
      ],
      [
        { type: "string", maxLength: 2, anyOf: [{ type: "string" }] },
        'keyword "maxLength" cannot stand beside anyOf',
      ],
      [{ type: "boolean", anyOf: [{ type: "string" }, { type: "integer" }] }, "no branch of anyOf"],
    ];
    for (const [schema, message] of refused) {
      expect(() => takes(schema, null), JSON.stringify(schema)).toThrow(message);
    }
  });
});

describe("numeric ranges in the grammar", () => {
  const ranged = () =>
    new JsonGrammar(
      compileJsonSchema({
        type: "object",
        properties: {
          guests: { type: "integer", minimum: 1, maximum: 8 },
          price: { type: "number", exclusiveMinimum: 0, multipleOf: 0.01 },
        },
        required: ["guests", "price"],
      }),
    );

  it("takes numbers in range and refuses the byte where one leaves it", () => {
    expect(feed('{"guests":8,"price":0.01}', ranged()).complete).toBe(true);
    expect(feed('{"guests":3,"price":12.5}', ranged()).complete).toBe(true);
    for (const [text, taken] of [
      ['{"guests":9', 10],
      ['{"guests":0', 10],
      ['{"guests":12', 11],
      ['{"guests":-', 10],
      ['{"guests":2,"price":0.015', 24],
      ['{"guests":2,"price":1e2', 21],
      ['{"guests":2,"price":-', 20],
    ] as const) {
      expect(feed(text, ranged()).taken, text).toBe(taken);
    }
    // 0 itself is out (exclusive), but "0." can still become 0.01.
    expect(feed('{"guests":2,"price":0}', ranged()).complete).toBe(false);
    expect(feed('{"guests":2,"price":0.0', ranged()).taken).toBe(23);
  });

  it("completes only numbers in range on a random walk", () => {
    const prng = new Prng(9, 0);
    const alphabet = [...'{}":,-.0123456789eEgpruestic'].map((c) => c.charCodeAt(0));
    let completed = 0;
    for (let walk = 0; walk < 150; walk++) {
      const g = ranged();
      const out: number[] = [];
      while (!g.complete && out.length < 200) {
        const allowed = alphabet.filter((b) => g.accepts(Uint8Array.of(b)));
        expect(allowed.length, String.fromCharCode(...out)).toBeGreaterThan(0);
        const b = allowed[Math.floor(prng.nextFloat() * allowed.length)]!;
        g.push(Uint8Array.of(b));
        out.push(b);
      }
      if (!g.complete) continue;
      completed++;
      const text = String.fromCharCode(...out);
      const { guests, price } = JSON.parse(text) as { guests: number; price: number };
      expect(Number.isInteger(guests) && guests >= 1 && guests <= 8).toBe(true);
      expect(price).toBeGreaterThan(0);
      // A multiple of 0.01: no non-zero digit past the second decimal, read from the text itself.
      expect(/"price":\d+(\.\d{0,2}0*)?\}/.test(text), text).toBe(true);
    }
    expect(completed).toBeGreaterThan(100);
  });
});

describe("numeric formats", () => {
  const schemaOf = (property: Record<string, unknown>) =>
    compileJsonSchema({ type: "object", properties: { n: property }, required: ["n"] });

  it("keeps int32, uint32, int64 and uint64 as bounds, beside the schema's own", () => {
    const int32 = () => new JsonGrammar(schemaOf({ type: "integer", format: "int32" }));
    expect(feed('{"n":2147483647}', int32()).complete).toBe(true);
    expect(feed('{"n":-2147483648}', int32()).complete).toBe(true);
    expect(feed('{"n":2147483648}', int32()).complete).toBe(false);
    const uint32 = () => new JsonGrammar(schemaOf({ type: "integer", format: "uint32", maximum: 10 }));
    expect(feed('{"n":10}', uint32()).complete).toBe(true);
    expect(feed('{"n":11}', uint32()).complete).toBe(false);
    // "-0" is 0, so only the digit after the minus is refused.
    expect(feed('{"n":-1', uint32()).taken).toBe(6);
    const int64 = () => new JsonGrammar(schemaOf({ type: "integer", format: "int64" }));
    expect(feed('{"n":9223372036854775000}', int64()).complete).toBe(true);
    expect(feed('{"n":9223372036854775808}', int64()).complete).toBe(false);
    expect(feed('{"n":99999999999999999999}', int64()).complete).toBe(false);
    // float and double take any number; a format a number has not is refused, naming it.
    expect(feed('{"n":1e99}', new JsonGrammar(schemaOf({ type: "number", format: "double" }))).complete).toBe(
      true,
    );
    expect(() => schemaOf({ type: "boolean", format: "date" })).toThrow(
      'keyword "format" applies to string or number or integer values; the type here is boolean',
    );
    expect(() => schemaOf({ type: ["array", "null"], items: {}, minimum: 1 })).toThrow('keyword "minimum"');
    expect(() => schemaOf({ type: "integer", format: "date" })).toThrow(
      'schema.properties.n.format: "date" is not a number format',
    );
  });
});

describe("the fewest bytes that complete a value", () => {
  const BYTES = [...Array.from({ length: 0x7f - 0x20 }, (_, i) => 0x20 + i), 0x0a];
  const SCHEMAS: [string, SchemaNode][] = [
    ["a schema with optional keys, enums, a union and recursion", compileJsonSchema(PERSON)],
    [
      "arrays with minItems, numeric ranges and patterned strings",
      compileJsonSchema({
        type: "object",
        properties: {
          code: { type: "string", pattern: "^[A-Z]{2}\\d{3}$" },
          pairs: {
            type: "array",
            items: { type: "array", items: { type: "integer" }, minItems: 2 },
            minItems: 3,
          },
          price: { type: "number", minimum: 100, maximum: 250, multipleOf: 0.25 },
          debt: { type: "integer", maximum: -1000 },
          note: { type: "string", minLength: 4, maxLength: 6 },
        },
        required: ["code", "pairs", "price", "debt", "note"],
      }),
    ],
    [
      "only optional keys",
      compileJsonSchema({
        type: "object",
        properties: { long: { type: "string", minLength: 9 }, short: { type: "boolean" } },
        required: [],
      }),
    ],
    ["any object", ANY_OBJECT],
  ];

  for (const [label, schema] of SCHEMAS) {
    it(`is the length of the shortest completion at every point of random walks, for ${label}`, () => {
      // Exact by induction: 0 only when complete, no byte lowers it by more than one, and some byte by one.
      const prng = new Prng(9, 0);
      for (let walk = 0; walk < 12; walk++) {
        const g = new JsonGrammar(schema);
        const wander = Math.floor(prng.nextFloat() * 120);
        let text = "";
        while (!g.complete) {
          const fewest = g.fewestBytesToEnd;
          expect(fewest, text).toBeGreaterThan(0);
          const after = BYTES.flatMap((b) => {
            const next = g.after(Uint8Array.of(b));
            return next ? [{ b, fewest: next.fewestBytesToEnd }] : [];
          });
          for (const a of after)
            expect(a.fewest, text + String.fromCharCode(a.b)).toBeGreaterThanOrEqual(fewest - 1);
          expect(
            after.some((a) => a.fewest === fewest - 1),
            text,
          ).toBe(true);
          // At random (structure more often than not, so that walks go deep) for a while, then along the
          // shortest completion, so that walks end.
          const structural = after.filter((a) => !/[a-z0-9 \n]/i.test(String.fromCharCode(a.b)));
          const pool =
            text.length >= wander
              ? after.filter((a) => a.fewest < fewest)
              : structural.length > 0 && prng.nextFloat() < 0.7
                ? structural
                : after;
          const { b } = pool[Math.floor(prng.nextFloat() * pool.length)]!;
          g.push(Uint8Array.of(b));
          text += String.fromCharCode(b);
        }
        if (g.complete) expect(g.fewestBytesToEnd).toBe(0);
      }
    });
  }

  it("is Infinity where no value can be written", () => {
    // A schema with no instance at all is refused when compiled; one branch of it is not.
    const endless = compileJsonSchema({
      type: "object",
      properties: { next: { anyOf: [{ $ref: "#/$defs/node" }, { type: "null" }] } },
      required: ["next"],
      $defs: { node: { type: "object", properties: { next: { $ref: "#/$defs/node" } }, required: ["next"] } },
    });
    const grammar = new JsonGrammar(endless);
    expect(grammar.fewestBytesToEnd).toBe('{"next":null}'.length);
    grammar.push(bytes('{"next":{'));
    expect(grammar.fewestBytesToEnd).toBe(Number.POSITIVE_INFINITY);
    expect(new JsonGrammar(compileJsonSchema(PERSON)).fewestBytesToEnd).toBe(
      person(`"name":"A","age":0,"tags":[],"score":0,"kind":"person","tree":{"value":true,"children":[]}`)
        .length,
    );
  });
});
