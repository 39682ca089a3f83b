// Grammars in Lark's syntax (vLLM's guidance backend, OpenAI's grammar-constrained custom tools): rules and
// terminals, case-insensitive strings, ranges, regex terminals, Lark's common terminals and %ignore, read
// into the same recognizer as EBNF, and refused with a message naming where when they cannot be served.
import { describe, expect, it } from "vitest";
import { compileGrammar } from "../../worker/engine/grammar-compiler.ts";
import { GrammarError } from "../../worker/engine/grammar-rules.ts";
import { acceptsWhole, advance, type StackSet, startOf } from "../../worker/engine/grammar-stacks.ts";
import { Prng } from "../../worker/engine/prng.ts";

const accepts = (grammarText: string, text: string) => acceptsWhole(compileGrammar(grammarText), text);

// Lark's own JSON example, as its documentation writes it (aliases and ?-rules shape only the tree).
const JSON_LARK = `
?start: value

?value: object
      | array
      | string
      | SIGNED_NUMBER      -> number
      | "true"             -> true
      | "false"            -> false
      | "null"             -> null

array  : "[" [value ("," value)*] "]"
object : "{" [pair ("," pair)*] "}"
pair   : string ":" value

string : ESCAPED_STRING

%import common.ESCAPED_STRING
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
`;

describe("Lark grammars", () => {
  it("read Lark's JSON example: what JSON.parse takes, whitespace wherever %ignore allows it", () => {
    const valid = [
      '{"a": [1, -2.5e3, true, null], "b": {}}',
      " [ 1 ,\n\t2 ] ",
      '"\\u00e9 \\" ok"',
      "-0.5",
      '{"nested": [[[]], {"x": false}]}',
    ];
    const invalid = ['{"a" 1}', "[1,]", "{,}", "tru", '{"a": [1, 2}', "[1 2]", "'single'"];
    for (const text of valid) {
      expect(() => JSON.parse(text), text).not.toThrow();
      expect(accepts(JSON_LARK, text), text).toBe(true);
    }
    for (const text of invalid) {
      expect(() => JSON.parse(text), text).toThrow();
      expect(accepts(JSON_LARK, text), text).toBe(false);
    }
  });

  it("take rules, terminals, case-insensitive strings, ranges, optional parts and counted repetitions", () => {
    const sql = `
      // a SELECT, as a SQL adapter answers
      start: "SELECT"i _WS cols _WS "FROM"i _WS NAME (_WS "LIMIT"i _WS DIGIT~1..3)? ";"
      cols: "*"
          | NAME ("," NAME)*   # one or more columns
      NAME: /[a-z_][a-z0-9_]*/
      _WS: " "+
      %import common.DIGIT
    `;
    for (const text of ["select * from users;", "SELECT id,name FROM t1 LIMIT 10;", "SeLeCt a FrOm b;"]) {
      expect(accepts(sql, text), text).toBe(true);
    }
    for (const text of [
      "SELECT 1 FROM t;",
      "SELECT * FROM t LIMIT 1000;",
      "SELECT * FROM t",
      "SELECT * FROMt;",
    ]) {
      expect(accepts(sql, text), text).toBe(false);
    }
    const codes = 'start: ("a".."f" | DIGIT) ~ 2..4 [":" LETTER]\n%import common (DIGIT, LETTER)';
    expect(accepts(codes, "a1f")).toBe(true);
    expect(accepts(codes, "a1:Z")).toBe(true);
    expect(accepts(codes, "g1")).toBe(false);
    expect(accepts(codes, "abcde")).toBe(false);
    expect(accepts("start: NUM\n%import common.SIGNED_NUMBER -> NUM", "+1.5E-3")).toBe(true);
    // Written on Windows: alternatives continue after a CRLF too.
    const crlf = 'start: "a"\r\n     | "b" // either\r\n     | "c"\r\n';
    for (const text of ["a", "b", "c"]) expect(accepts(crlf, text), text).toBe(true);
  });

  it("read a regex terminal as the same RegExp does, on random strings", () => {
    const grammar = 'start: ID ("." ID)*\nID: /[a-z][a-z0-9]{0,3}/';
    const regex = /^[a-z][a-z0-9]{0,3}(?:\.[a-z][a-z0-9]{0,3})*$/u;
    const prng = new Prng(9, 0);
    const alphabet = ["a", "b", "7", "."];
    let matched = 0;
    for (let i = 0; i < 3000; i++) {
      const length = Math.floor(prng.nextFloat() * 10);
      const text = Array.from({ length }, () => alphabet[Math.floor(prng.nextFloat() * 4)]!).join("");
      expect(accepts(grammar, text), text).toBe(regex.test(text));
      if (regex.test(text)) matched++;
    }
    expect(matched).toBeGreaterThan(100);
  });

  it("read a regex terminal's i and s flags as Python's re does", () => {
    const keyword = 'start: /select/i _SP /[a-c]+/i\n_SP: " "';
    for (const text of ["select abc", "SELECT ABC", "SeLeCt aBc"])
      expect(accepts(keyword, text), text).toBe(true);
    expect(accepts(keyword, "select abd")).toBe(false);
    // A negated class under i refuses the other case too.
    expect(accepts("start: /[^a]/i", "b")).toBe(true);
    expect(accepts("start: /[^a]/i", "A")).toBe(false);
    expect(accepts("start: /a.b/", "a\nb")).toBe(false);
    expect(accepts("start: /a.b/s", "a\nb")).toBe(true);
    expect(accepts("start: /a.b/is", "A\nB")).toBe(true);
  });

  it("read each lexeme as Lark's lexer does, the longest match: two numbers need something between them", () => {
    const pair = "start: INT INT\n%import common.INT\n%import common.WS\n%ignore WS";
    expect(accepts(pair, "1 2")).toBe(true);
    expect(accepts(pair, "12 345")).toBe(true);
    // One character at a time, "12" could be 1 then 2; a lexer reads it as one INT, and so here.
    expect(accepts(pair, "12")).toBe(false);
    const words = 'start: NAME NAME\nNAME: /[a-z]+/\n%ignore " "';
    expect(accepts(words, "ab cd")).toBe(true);
    expect(accepts(words, "abcd")).toBe(false);
    // A lexeme ends by itself where nothing could continue it: a keyword, then a name.
    expect(accepts('start: "if" NAME\nNAME: /[a-z]+/', "ifx")).toBe(true);
    expect(accepts("start: NUM UNIT?\nNUM: /[0-9]+/\nUNIT: /[a-z]+/", "12kg")).toBe(true);
    // A terminal made of terminals is one lexeme: spaces that %ignore allows between lexemes stay out of it.
    const ids =
      'start: ID ("," ID)*\nID: LETTER (LETTER | DIGIT)*\n%import common (LETTER, DIGIT)\n%ignore " "';
    expect(accepts(ids, "a1 , b2,c")).toBe(true);
    expect(accepts(ids, "a 1")).toBe(false);
  });

  it("never let a lexeme end early while the output is read: no end after 12 of INT INT", () => {
    const grammar = compileGrammar('start: INT INT\n%import common.INT\n%ignore " "');
    const setAfter = (text: string) => {
      let set: StackSet | null = startOf(grammar);
      for (const c of text) set = set && advance(grammar, set, c.codePointAt(0)!);
      return set;
    };
    // After "1": another digit (the same INT) or a space; never the end.
    expect(setAfter("1")!.accepted).toBe(false);
    expect(setAfter("12")).not.toBeNull();
    expect(setAfter("12")!.accepted).toBe(false);
    expect(setAfter("12 3")!.accepted).toBe(true);
    expect(setAfter("12 3x")).toBeNull();
  });

  for (const [grammar, message] of [
    ['start: item\nitem: "a" | other', /line 2, column 13: rule other is used but not defined/],
    ['answer: "a"', /no start rule/],
    [
      'start: expr\nexpr: expr "+" term | term\nterm: "1"',
      /rule expr calls itself before reading any character/,
    ],
    ["start: 'a'", /line 1, column 8: strings are written in double quotes/],
    ['start: _sep{"a", ","}', /templates such as _sep\{\.\.\.\} are not supported/],
    ['start: "a"\n%declare B', /%declare is not supported/],
    ['start: "a"\n%import mylib.X', /only Lark's common terminals can be imported/],
    ['start: "a"\n%import common.NOPE', /common has no terminal NOPE/],
    ["start: /abc/m", /regex flag m \(\/abc\/m\) is not supported; i and s are/],
    ["start: /(a)\\1/", /line 1, column 8: .*backreference/i],
    ["start: /abc", /the regex is not closed/],
    ["start: @sub", /@rule references are not supported/],
    ['start: "a".."zz"', /a range is written between single characters/],
    ['start: "a" ~ 3..1', /the least count is above the most/],
    ['start: A\nA: "a" A?', /line 2, column 8: terminal A refers to itself/],
    ['start: A\nA: "a" b\nb: "c"', /line 2, column 8: a terminal is made of .* not of rule b/],
    ["start: FOO", /line 1, column 8: terminal FOO is used but not defined/],
    ['start: A\nA: "a"\nA: "b"', /line 3, column 1: terminal A is defined twice/],
  ] as [string, RegExp][]) {
    it(`refuse, saying why: ${JSON.stringify(grammar.slice(0, 40))}`, () => {
      expect(() => compileGrammar(grammar)).toThrow(GrammarError);
      expect(() => compileGrammar(grammar)).toThrow(message);
    });
  }
});
