// What both grammar syntaxes (ebnf-syntax.ts, lark-syntax.ts) parse into, and what the compiler
// (grammar-compiler.ts) makes of it for the recognizer (grammar-stacks.ts).
import { type CharRanges, MAX_CODE_POINT, type RegexNode } from "./regex-syntax.ts";

/** A grammar the compiler refuses: the message names the rule or the line and column. */
export class GrammarError extends Error {}

/** Marks the end of an alternative in `Grammar.elements`. */
export const END = -1;

/**
 * An element at GUARD + c or above reads no character: it lets a lexeme end where it stands only if the
 * next character is not in class c, one the lexeme could go on with (the longest match a lexer takes).
 */
export const GUARD = 0x4000_0000;

/** A compiled grammar: flat alternatives whose elements are a character class, a rule or a guard. */
export interface Grammar {
  /**
   * Every alternative's elements, each alternative ended by END: a rule's index (≥ 0, below GUARD), a
   * character class as -2 - its index in `classes`, or a guard as GUARD + a class's index.
   */
  elements: Int32Array;
  /** Per rule, where each of its alternatives starts in `elements`; rule 0 is the start. */
  alternatives: Int32Array[];
  /** Character classes as sorted, disjoint [first, last] code point pairs. */
  classes: Int32Array[];
  /** Per position in `elements`: the fewest characters from there to its alternative's end. */
  fewestToEnd: Int32Array;
  /** Rule names, for messages (generated ones say where they come from). */
  names: string[];
}

/** The parsed form: an expression tree per rule. */
export type Expr =
  | { kind: "chars"; ranges: CharRanges }
  | { kind: "literal"; codes: number[] }
  | { kind: "ref"; name: string; offset: number }
  | { kind: "seq"; items: Expr[] }
  | { kind: "alt"; options: Expr[] }
  | { kind: "repeat"; item: Expr; min: number; max: number }
  /**
   * One lexeme (a Lark terminal, string or regex used in a rule): it matches as a lexer reads, the
   * longest match, so it never ends where its next character could continue it.
   */
  | { kind: "lexeme"; node: RegexNode; what: string };

export interface RuleText {
  name: string;
  body: Expr;
  /** Where its name is written in the text. */
  offset: number;
}

/** A parsed grammar: its rules, and the one the whole output is. */
export interface ParsedGrammar {
  rules: RuleText[];
  start: string;
}

/** The largest bound of a repetition. */
export const MAX_REPEAT = 10_000;

/** "line L, column C" of an offset into the text, for messages. */
export function where(text: string, offset: number): string {
  const before = text.slice(0, offset).split("\n");
  return `line ${before.length}, column ${before[before.length - 1]!.length + 1}`;
}

/**
 * The character at `at` of a string or class, with a backslash escape read (\n \r \t \0 \\ \" \' \[ \]
 * \- \^ \/ \xHH \uHHHH \UHHHHHHHH), and where the next begins; or what is wrong with the escape.
 */
export function readCharacter(text: string, at: number): { code: number; next: number } | string {
  const c = text.codePointAt(at)!;
  if (c !== 0x5c) return { code: c, next: at + (c > 0xffff ? 2 : 1) };
  const e = text[at + 1];
  const digits = e === "x" ? 2 : e === "u" ? 4 : e === "U" ? 8 : 0;
  if (digits > 0) {
    const hex = text.slice(at + 2, at + 2 + digits);
    if (!new RegExp(`^[0-9a-fA-F]{${digits}}$`).test(hex)) return `\\${e} needs ${digits} hex digits`;
    const code = Number.parseInt(hex, 16);
    if (code > MAX_CODE_POINT) return `\\${e}${hex} is beyond the last code point`;
    return { code, next: at + 2 + digits };
  }
  const simple: Record<string, number> = { n: 10, r: 13, t: 9, "0": 0, "\\": 92, '"': 34, "'": 39 };
  const code = simple[e!] ?? ("[]-^/".includes(e ?? "x") ? e!.charCodeAt(0) : undefined);
  if (code === undefined) return `unknown escape \\${e ?? ""}`;
  return { code, next: at + 2 };
}
