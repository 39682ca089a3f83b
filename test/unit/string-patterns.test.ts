// Strict string schemas' `pattern` and `format`: the automaton matches exactly what the platform's own
// RegExp finds (a search, anchors and lookaheads included) on thousands of strings; each format takes its
// standard's examples and refuses near misses (every day of four years against the calendar); inside JSON
// the grammar follows the pattern through escapes and multi-byte characters, never strands a random walk,
// and every string it completes matches; what an automaton cannot keep is refused with the reason.
import { describe, expect, it } from "vitest";
import { JsonGrammar } from "../../worker/engine/json-grammar.ts";
import { compileJsonSchema, JsonSchemaError } from "../../worker/engine/json-schema.ts";
import { Prng } from "../../worker/engine/prng.ts";
import {
  compilePatterns,
  MAX_AUTOMATON_STATES,
  MAX_WORK,
  nextState,
  type StringAutomaton,
} from "../../worker/engine/string-automaton.ts";
import { FORMAT_PATTERNS } from "../../worker/engine/string-formats.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

/** Whether the automaton ends in an accepting state after the whole string. */
function matches(automaton: StringAutomaton, text: string): boolean {
  if ([...text].length < automaton.minLength || [...text].length > automaton.maxLength) return false;
  let state = 0;
  for (const char of text) {
    state = nextState(automaton, state, char.codePointAt(0)!);
    if (state < 0) return false;
  }
  return automaton.accepting[state] === 1;
}

/** A schema with one string property `s` of the given keywords. */
function grammarFor(keywords: Record<string, unknown>): JsonGrammar {
  const schema = { type: "object", properties: { s: { type: "string", ...keywords } }, required: ["s"] };
  return new JsonGrammar(compileJsonSchema(schema));
}

/** Whether the grammar takes the JSON text whole and is complete after it. */
function takes(grammar: JsonGrammar, text: string): boolean {
  for (const b of bytes(text)) {
    if (!grammar.accepts(Uint8Array.of(b))) return false;
    grammar.push(Uint8Array.of(b));
  }
  return grammar.complete;
}

/** Patterns, each with a string it matches. */
const PATTERNS: [string, string][] = [
  ["abc", "xabcx"],
  ["^abc", "abcd"],
  ["abc$", "xabc"],
  ["^a(b|cd)*e$", "abcdbe"],
  ["^[a-c]{2,4}$", "cab"],
  ["x[^x]?y", "axyb"],
  ["^(?:ab|a)(?:bc|c)$", "abc"],
  ["^\\d{3}-\\d{2,}$", "123-456"],
  ["^(?=.*b)[ab]{3}$", "aab"],
  ["^(?!.*bb)[ab]*$", "abab"],
  ["^a(?=b)", "ab"],
  ["^(a|b)+?c", "abc"],
  ["a{2}|b{3}", "xaa"],
  ["^(?:a|$)", ""],
  ["^\\w+\\s\\W$", "ab -"],
  ["^[.][\\]a-]*$", ".]a-"],
  ["c(?!a)", "cb"],
  ["^.{2}$", "ab"],
  ["(?:^a|b)c", "xbc"],
  ["^\\x61\\u0062[\\d\\-]", "ab-"],
];
/** Pieces of the test strings: the patterns' own characters and runs, and a few others. */
const PIECES = [..."abcdexy- 09.]\n", "ab", "bc", "abc", "bb", "aa", "cd", "abe", "xy", "xay", "12", "123"];

describe("a pattern's automaton", () => {
  it("agrees with RegExp on every pattern and thousands of strings", () => {
    const prng = new Prng(11, 0);
    for (const [pattern, example] of PATTERNS) {
      const automaton = compilePatterns([pattern]);
      const regex = new RegExp(pattern, "u");
      expect(regex.test(example), pattern).toBe(true);
      expect(matches(automaton, example), pattern).toBe(true);
      for (let n = 0; n < 600; n++) {
        const length = Math.floor(prng.nextFloat() * 5);
        const text = Array.from({ length }, () => PIECES[Math.floor(prng.nextFloat() * PIECES.length)]).join(
          "",
        );
        expect(matches(automaton, text), `${pattern} on ${JSON.stringify(text)}`).toBe(regex.test(text));
      }
    }
  });

  it("reads characters as code points, one state per emoji", () => {
    const automaton = compilePatterns(["^.é[😀-😂]$"]);
    expect(matches(automaton, "xé😁")).toBe(true);
    expect(matches(automaton, "xé😃")).toBe(false);
    expect(matches(automaton, "xe😁")).toBe(false);
  });

  it("intersects a format with a pattern", () => {
    const automaton = compilePatterns([FORMAT_PATTERNS.uuid!, "^0"]);
    expect(matches(automaton, "0b1c2d3e-aaaa-4bbb-8ccc-0123456789ab")).toBe(true);
    expect(matches(automaton, "1b1c2d3e-aaaa-4bbb-8ccc-0123456789ab")).toBe(false);
  });

  it("counts a leading length lookahead beside the automaton instead of in it", () => {
    const hostname = compilePatterns([FORMAT_PATTERNS.hostname!]);
    expect([hostname.minLength, hostname.maxLength]).toEqual([1, 253]);
    expect(hostname.moves.length).toBeLessThan(400);
    const label = "a".repeat(63);
    expect(matches(hostname, [label, label, label, "a".repeat(61)].join("."))).toBe(true);
    expect(matches(hostname, [label, label, label, "a".repeat(62)].join("."))).toBe(false);
    expect(matches(hostname, `${"a".repeat(64)}.com`)).toBe(false);
  });

  it("refuses what a finite automaton cannot keep, and patterns nothing writable matches", () => {
    for (const [pattern, message] of [
      ["(a)\\1", "backreferences are not supported"],
      ["(?<=a)b", "lookbehind is not supported"],
      ["\\bword", "word boundary"],
      ["\\p{L}", "Unicode property escapes"],
      ["(?:(?=a)a)*", "repeated without limit"],
      ["a?^b", "only where nothing can come before it"],
      ["(?=^a)", "inside a lookahead"],
      ["a{2000}", "a count above 1000"],
      ["(a|b)*a(a|b){12}", `too complex: more than ${MAX_AUTOMATON_STATES} automaton states`],
      // Few states, but terms that grow with every character: the work is bounded too.
      ["^(.{0,100}){0,100}$", `too complex: more than ${MAX_WORK} steps of work`],
      ["[^\\s\\S]", "no string that can be written matches it"],
      ["^\\x01$", "no string that can be written matches it"],
      ["(ab", 'missing ")"'],
      ["a)", 'unmatched ")"'],
      ["*a", "nothing to repeat"],
    ] as const) {
      expect(() => compilePatterns([pattern]), pattern).toThrow(message);
    }
  });
});

describe("formats", () => {
  const EXAMPLES: Record<string, { valid: string[]; invalid: string[] }> = {
    "date-time": {
      valid: ["1985-04-12T23:20:50.52Z", "1996-12-19T16:39:57-08:00", "2024-02-29T00:00:00+14:00"],
      invalid: [
        "1985-04-12 23:20:50Z",
        "1985-04-12T23:20:50",
        "1985-13-12T23:20:50Z",
        "2023-02-29T00:00:00Z",
      ],
    },
    date: { valid: ["2000-02-29", "1999-12-31"], invalid: ["1900-02-29", "2024-04-31", "24-01-01"] },
    time: { valid: ["23:59:59Z", "08:30:00.5+01:00"], invalid: ["24:00:00Z", "08:30Z", "08:30:00"] },
    duration: {
      valid: ["P3Y6M4DT12H30M5S", "PT1M", "P1W", "P1M", "PT36H"],
      invalid: ["P", "PT", "P1Y1D", "P1W1D", "1Y", "PT1H1S"],
    },
    email: {
      valid: ["ann@example.com", "a.b+c@mail.example.co"],
      invalid: ["ann@", "@example.com", "ann..b@example.com", "ann@example", "ann@-x.com"],
    },
    hostname: { valid: ["example.com", "a-b.c", "localhost"], invalid: ["-a.com", "a_b.com", "a..b", ""] },
    ipv4: {
      valid: ["192.168.0.1", "0.0.0.0", "255.255.255.255"],
      invalid: ["256.1.1.1", "1.2.3", "01.2.3.4"],
    },
    ipv6: {
      valid: ["::1", "::", "2001:db8::8a2e:370:7334", "fe80:0:0:0:0:0:0:1"],
      invalid: [":::1", "1::2::3", "2001:db8:::1", "12345::1", "1:2:3:4:5:6:7:8:9"],
    },
    uuid: {
      valid: ["123e4567-e89b-12d3-a456-426614174000", "00000000-0000-0000-0000-000000000000"],
      invalid: ["123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400g"],
    },
  };

  for (const [format, { valid, invalid }] of Object.entries(EXAMPLES)) {
    it(`${format} takes its standard's examples and refuses near misses`, () => {
      const automaton = compilePatterns([FORMAT_PATTERNS[format]!]);
      for (const text of valid) expect(matches(automaton, text), text).toBe(true);
      for (const text of invalid) expect(matches(automaton, text), text).toBe(false);
    });
  }

  it("has a format for each of OpenAI's", () => {
    expect(Object.keys(FORMAT_PATTERNS).sort()).toEqual(
      ["date", "date-time", "duration", "email", "hostname", "ipv4", "ipv6", "time", "uuid"].sort(),
    );
  });

  it("date takes exactly the calendar's days, leap years included", () => {
    const automaton = compilePatterns([FORMAT_PATTERNS.date!]);
    for (const year of [1900, 2000, 2023, 2024]) {
      for (let month = 0; month <= 13; month++) {
        for (let day = 0; day <= 32; day++) {
          const text = `${year}-${String(month).padStart(2, "0")}-${String(day).padStart(2, "0")}`;
          const date = new Date(Date.UTC(year, month - 1, day));
          const real =
            month >= 1 && month <= 12 && date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
          expect(matches(automaton, text), text).toBe(real);
        }
      }
    }
  });
});

describe("patterned strings in the JSON grammar", () => {
  it("takes a matching string and refuses one that does not, at the byte where it fails", () => {
    expect(takes(grammarFor({ pattern: "^[A-Z]{3}-\\d+$" }), '{"s":"ABC-12"}')).toBe(true);
    const grammar = grammarFor({ pattern: "^[A-Z]{3}-\\d+$" });
    expect(takes(grammar, '{"s":"AB')).toBe(false);
    expect(grammar.accepts(bytes("-"))).toBe(false);
    expect(grammar.accepts(bytes("C-"))).toBe(true);
    // The string may not end before the pattern is satisfied.
    expect(takes(grammarFor({ pattern: "^[A-Z]{3}-\\d+$" }), '{"s":"ABC-"}')).toBe(false);
  });

  it("follows the pattern through short escapes and multi-byte characters, and refuses \\u escapes", () => {
    expect(takes(grammarFor({ pattern: '^"\\n\\\\/$' }), '{"s":"\\"\\n\\\\\\/"}')).toBe(true);
    expect(takes(grammarFor({ pattern: '^"\\n\\\\/$' }), '{"s":"\\"\\n\\\\/"}')).toBe(true);
    expect(takes(grammarFor({ pattern: "^\\n$" }), '{"s":"\\u000a"}')).toBe(false);
    expect(takes(grammarFor({ pattern: "^[à-ÿ]+😀$" }), '{"s":"éü😀"}')).toBe(true);
    // "é" is C3 A9: the lead byte C3 could start à-ÿ, but Ā (C4 80) is past the class.
    const grammar = grammarFor({ pattern: "^[à-ÿ]+$" });
    expect(takes(grammar, '{"s":"')).toBe(false);
    expect(grammar.accepts(Uint8Array.of(0xc3))).toBe(true);
    expect(grammar.accepts(Uint8Array.of(0xc4))).toBe(false);
    expect(grammar.accepts(Uint8Array.of(0xc3, 0x80))).toBe(false);
    expect(grammar.accepts(Uint8Array.of(0xc3, 0xa9))).toBe(true);
    // A backslash only where an escapable character may come.
    expect(grammarFor({ pattern: "^a" }).accepts(bytes('{"s":"\\'))).toBe(false);
  });

  it("keeps minLength and maxLength beside the pattern, and refuses a schema they leave no string", () => {
    expect(takes(grammarFor({ pattern: "^a+$", maxLength: 3 }), '{"s":"aaa"}')).toBe(true);
    expect(takes(grammarFor({ pattern: "^a+$", maxLength: 3 }), '{"s":"aaaa"}')).toBe(false);
    expect(takes(grammarFor({ pattern: "^a+b?$", minLength: 2 }), '{"s":"a"}')).toBe(false);
    // "ab" then the string must end: no second b, and no a after it.
    const grammar = grammarFor({ pattern: "^a*b?$", maxLength: 2 });
    expect(takes(grammar, '{"s":"ab')).toBe(false);
    expect(grammar.accepts(bytes('"'))).toBe(true);
    expect(() =>
      compileJsonSchema({
        type: "object",
        properties: { s: { type: "string", pattern: "^\\d{5}$", maxLength: 3 } },
      }),
    ).toThrow("no string of the lengths allowed matches the pattern");
  });

  it("never strands a random walk, and every string a walk completes matches", () => {
    const prng = new Prng(7, 0);
    const cases = [
      { format: "email" },
      { format: "date-time" },
      { format: "ipv6" },
      { format: "duration" },
      { pattern: "^(?!.*--)[a-z-]{3,8}$" },
      { pattern: '^[^"]*"[a-z]*$' },
      { pattern: "x", maxLength: 5 },
    ];
    const alphabet = [...'{}":,-.:0123456789abcdefsxzAEFPTWYMDHSZ@+\\/_ '].map((c) => c.charCodeAt(0));
    for (const keywords of cases) {
      const check = new RegExp(
        typeof keywords.format === "string" ? FORMAT_PATTERNS[keywords.format]! : keywords.pattern!,
        "u",
      );
      let completed = 0;
      for (let walk = 0; walk < 40; walk++) {
        const grammar = grammarFor(keywords);
        const out: number[] = [];
        while (!grammar.complete && out.length < 200) {
          const allowed = alphabet.filter((b) => grammar.accepts(Uint8Array.of(b)));
          expect(
            allowed.length,
            `${JSON.stringify(keywords)}: ${String.fromCharCode(...out)}`,
          ).toBeGreaterThan(0);
          // Toward the end as the walk goes on, so strings close.
          const closing = allowed.filter((b) => b === 0x22 || b === 0x7d);
          const pool = closing.length > 0 && prng.nextFloat() < out.length / 60 ? closing : allowed;
          const b = pool[Math.floor(prng.nextFloat() * pool.length)]!;
          grammar.push(Uint8Array.of(b));
          out.push(b);
        }
        if (!grammar.complete) continue;
        completed++;
        const { s } = JSON.parse(String.fromCharCode(...out)) as { s: string };
        expect(check.test(s), `${JSON.stringify(keywords)}: ${s}`).toBe(true);
        if (keywords.maxLength !== undefined) expect(s.length).toBeLessThanOrEqual(keywords.maxLength);
      }
      expect(completed, JSON.stringify(keywords)).toBeGreaterThan(5);
    }
  });

  it("refuses an unknown format and a pattern it cannot keep, naming where", () => {
    const at = (keywords: Record<string, unknown>) => () =>
      compileJsonSchema({ type: "object", properties: { s: { type: "string", ...keywords } } });
    expect(at({ format: "uri" })).toThrow(JsonSchemaError);
    expect(at({ format: "uri" })).toThrow(
      'schema.properties.s.format: "uri" is not supported (date-time, date,',
    );
    expect(at({ pattern: "(?<=a)b" })).toThrow(
      'schema.properties.s: pattern "(?<=a)b": lookbehind is not supported',
    );
    expect(at({ pattern: 3 })).toThrow("schema.properties.s.pattern: expected a string");
  });
});
