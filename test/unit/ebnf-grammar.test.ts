// vLLM's `grammar` structured output: the EBNF compiler reads xgrammar's dialect of GBNF and refuses what
// it cannot serve with a message naming where, and the pushdown recognizer accepts exactly the grammar's
// strings — checked against independent recognizers (RegExp for regular grammars, a counter for balanced
// brackets) over random strings.
import { describe, expect, it } from "vitest";
import { compileGrammar } from "../../worker/engine/grammar-compiler.ts";
import { GrammarError } from "../../worker/engine/grammar-rules.ts";
import { acceptsWhole, advance, type StackSet, startOf } from "../../worker/engine/grammar-stacks.ts";
import { Prng } from "../../worker/engine/prng.ts";

/** The recognizer's set after `text`, or null where it refuses a character. */
function read(grammarText: string, text: string): StackSet | null {
  const grammar = compileGrammar(grammarText);
  let set: StackSet | null = startOf(grammar);
  for (const c of text) {
    set = advance(grammar, set, c.codePointAt(0)!);
    if (!set) return null;
  }
  return set;
}

const accepts = (grammarText: string, text: string) => acceptsWhole(compileGrammar(grammarText), text);

/** Random strings over `alphabet`, lengths 0 to `longest`. */
function randomStrings(alphabet: string[], count: number, longest: number, seed: number): string[] {
  const prng = new Prng(seed, 0);
  return Array.from({ length: count }, () => {
    const length = Math.floor(prng.nextFloat() * (longest + 1));
    return Array.from({ length }, () => alphabet[Math.floor(prng.nextFloat() * alphabet.length)]!).join("");
  });
}

// vLLM's documentation's example.
const SQL = `
root ::= select_statement

select_statement ::= "SELECT " column " from " table " where " condition

column ::= "col_1 " | "col_2 "

table ::= "table_1 " | "table_2 "

condition ::= column "= " number

number ::= "1 " | "2 "
`;

describe("EBNF grammars", () => {
  it("read vLLM's SQL example: its sixteen statements and nothing else", () => {
    const statements = ["col_1 ", "col_2 "].flatMap((c) =>
      ["table_1 ", "table_2 "].flatMap((t) =>
        ["col_1 ", "col_2 "].flatMap((w) =>
          ["1 ", "2 "].map((n) => `SELECT ${c} from ${t} where ${w}= ${n}`),
        ),
      ),
    );
    expect(new Set(statements).size).toBe(16);
    for (const s of statements) expect(accepts(SQL, s), s).toBe(true);
    expect(accepts(SQL, "SELECT col_1  from table_3  where col_1 = 1 ")).toBe(false);
    expect(accepts(SQL, "SELECT col_1  from table_1  where col_1 = 1")).toBe(false);
    expect(read(SQL, "SELECT col_3")).toBeNull();
    // Nothing can follow a whole statement.
    const whole = read(SQL, statements[0]!)!;
    expect(whole.accepted).toBe(true);
    expect(whole.stacks).toHaveLength(0);
    expect(startOf(compileGrammar(SQL)).fewest).toBe(statements[0]!.length);
  });

  // Regular grammars beside the RegExp that means the same, on random strings and on some that match.
  for (const [grammar, regex, alphabet, matching] of [
    ['root ::= [a-c]+ ("x" | "yz")', /^[a-c]+(?:x|yz)$/u, ["a", "b", "c", "x", "y", "z"], ["ax", "cbayz"]],
    ['root ::= "a"{2,4} "b"{3} "c"{1,}', /^a{2,4}b{3}c+$/u, ["a", "b", "c"], ["aabbbc", "aaaabbbccc"]],
    ['root ::= ("ab" | "c")* "d"?', /^(?:ab|c)*d?$/u, ["a", "b", "c", "d"], ["", "abcd", "cc"]],
    [
      'root ::= [^0-9"]+ "\\"" [0-9]? # a comment\n',
      /^[^0-9"]+"[0-9]?$/u,
      ["a", "1", '"', "é", "☃"],
      ['☃é"1'],
    ],
    [
      'root ::= "\\x41" "\\u00e9" [\\t\\n] . "\\\\"',
      /^Aé[\t\n][\s\S]\\$/u,
      ["A", "é", "\t", "x"],
      ["Aé\t\n\\", "Aé\nx\\"],
    ],
  ] as [string, RegExp, string[], string[]][]) {
    it(`accept what the same regex matches: ${JSON.stringify(grammar)}`, () => {
      for (const s of matching)
        expect(regex.test(s), `the test's own example ${JSON.stringify(s)}`).toBe(true);
      for (const s of [...matching, ...randomStrings(alphabet, 3000, 9, grammar.length)]) {
        expect(accepts(grammar, s), JSON.stringify(s)).toBe(regex.test(s));
      }
    });
  }

  it("recognize what no regex can: balanced brackets, and arithmetic with nested groups", () => {
    const brackets = 'root ::= pair*\npair ::= "(" pair* ")" | "[" pair* "]"';
    const balanced = (s: string) => {
      const open: string[] = [];
      for (const c of s) {
        if (c === "(" || c === "[") open.push(c);
        else if (open.pop() !== (c === ")" ? "(" : "[")) return false;
      }
      return open.length === 0;
    };
    let yes = 0;
    for (const s of randomStrings(["(", ")", "[", "]"], 4000, 12, 3)) {
      expect(accepts(brackets, s), s).toBe(balanced(s));
      if (balanced(s)) yes++;
    }
    expect(yes).toBeGreaterThan(20);
    const arithmetic = `
      root ::= expr
      expr ::= term (("+" | "-") term)*
      term ::= factor (("*" | "/") factor)*
      factor ::= number | "(" expr ")"
      number ::= [0-9]+
    `;
    expect(accepts(arithmetic, "1+(2*(3-4))/56")).toBe(true);
    expect(accepts(arithmetic, "((7))")).toBe(true);
    expect(accepts(arithmetic, "1+(2*3")).toBe(false);
    expect(read(arithmetic, "1+)")).toBeNull();
    // Two characters still close "((1": the recognizer knows the fewest to the end.
    expect(read(arithmetic, "((1")!.fewest).toBe(2);
  });

  it("run a repetition as a loop: ten thousand rounds leave the stack as deep as one", () => {
    const grammar = 'root ::= ("ab" | "c")* "."';
    const once = read(grammar, "ab")!;
    const often = read(grammar, "ab".repeat(10_000))!;
    expect(Math.max(...often.stacks.map((s) => s.depth))).toBe(Math.max(...once.stacks.map((s) => s.depth)));
    // The same stacks, interned: the same set.
    expect(often).toBe(once);
  });

  it("serve a large alternation, and fail a grammar whose open parses double with each character", () => {
    const words = Array.from({ length: 6_000 }, (_, i) => `"w${i}"`).join(" | ");
    const grammar = `root ::= ${words}`;
    expect(startOf(compileGrammar(grammar)).stacks).toHaveLength(6_000);
    expect(accepts(grammar, "w5999")).toBe(true);
    expect(accepts(grammar, "w6000")).toBe(false);
    // After n "a"s every sequence of n closings is still open: 2^n stacks.
    const doubling = 'root ::= x\nx ::= "a" x "b" | "a" x "c" | "d"';
    expect(accepts(doubling, "aadcb")).toBe(true);
    expect(() => read(doubling, "a".repeat(20))).toThrow(/more than 100000 parses are open at once/);
  });

  it("take rules across lines as GBNF writes them, alternatives after | and inside groups", () => {
    const gbnf = `root ::= answer
answer ::= "yes"
  | "no"
  | (
      "maybe" [ ]? [0-9]
    )
`;
    for (const s of ["yes", "no", "maybe 3", "maybe3"]) expect(accepts(gbnf, s), s).toBe(true);
    expect(accepts(gbnf, "maybe")).toBe(false);
  });

  for (const [grammar, message] of [
    ['root ::= item\nitem ::= "a" | other', /line 2, column 16: rule other is used but not defined/],
    ['answer ::= "a"', /no root rule/],
    ['root ::= root "+" "1" | "1"', /rule root calls itself before reading any character/],
    ['root ::= list\nlist ::= (list ",")? "x"', /calls itself before reading any character \(list → list/],
    ['root ::= "a" root', /rule root can never end/],
    ['root ::= ("a"?)*', /repeats something that can match nothing/],
    ["root ::= 'a'", /line 1, column 10: strings are written in double quotes/],
    ['root ::= "abc', /the string is not closed/],
    ["root ::= [^\\x00-\\U0010FFFF]", /matches no character/],
    ["root ::= [b-a]", /a range's last character comes before its first/],
    ['root ::= "a" (= "b")', /lookahead assertions/],
    ['root ::= TagDispatch("a")', /macros such as TagDispatch/],
    ['root ::= "a"{5,2}', /the least count is above the most/],
    ['root ::= "a"{20000}', /at most 10000/],
    ['root ::= "a"\nroot ::= "b"', /line 2, column 1: rule root is defined twice/],
    ['root ::= "\\q"', /unknown escape \\q/],
    ["root ::= ".concat("(".repeat(50_000), '"a"', ")".repeat(50_000)), /at most 65536 characters/],
    ["root ::= ".concat("(".repeat(30_000), '"a"', ")".repeat(30_000)), /nests too deeply/],
  ] as [string, RegExp][]) {
    it(`refuse, saying why: ${JSON.stringify(grammar.slice(0, 40))}`, () => {
      expect(() => compileGrammar(grammar)).toThrow(GrammarError);
      expect(() => compileGrammar(grammar)).toThrow(message);
    });
  }
});
