// The syntax of a JSON Schema `pattern` (ECMAScript regular expressions, no flags) as a tree that
// string-automaton.ts turns into an automaton. What an automaton can keep is taken: characters, classes,
// escapes, groups, alternation, every quantifier (lazy ones too: laziness changes which match a search
// finds, never whether one exists), `^`, `$` and lookaheads. Backreferences, lookbehinds and word
// boundaries need more than a finite automaton and are refused with what was found named.

/** Code point ranges, sorted and merged: [lo0, hi0, lo1, hi1, ...], both ends included. */
export type CharRanges = readonly number[];

export type RegexNode =
  | { t: "chars"; ranges: CharRanges }
  | { t: "seq"; items: RegexNode[] }
  | { t: "alt"; options: RegexNode[] }
  /** max is Infinity when unbounded. */
  | { t: "repeat"; body: RegexNode; min: number; max: number }
  | { t: "start" }
  | { t: "end" }
  | { t: "look"; body: RegexNode; negate: boolean };

/** A pattern this syntax does not take; the message says what and where. */
export class RegexSyntaxError extends Error {
  override readonly name = "RegexSyntaxError";
}

/** Largest count a quantifier may give ({n,m}): the automaton holds a state per repetition. */
export const MAX_REPEAT = 1_000;

export const MAX_CODE_POINT = 0x10ffff;

/** Sorts and merges ranges given as pairs. */
export function normalizeRanges(pairs: readonly number[]): CharRanges {
  const list: [number, number][] = [];
  for (let i = 0; i < pairs.length; i += 2) list.push([pairs[i]!, pairs[i + 1]!]);
  list.sort((a, b) => a[0] - b[0]);
  const out: number[] = [];
  for (const [lo, hi] of list) {
    if (out.length > 0 && lo <= out[out.length - 1]! + 1) {
      out[out.length - 1] = Math.max(out[out.length - 1]!, hi);
    } else out.push(lo, hi);
  }
  return out;
}

/** Every code point not in `ranges`. */
export function complementRanges(ranges: CharRanges): CharRanges {
  const out: number[] = [];
  let next = 0;
  for (let i = 0; i < ranges.length; i += 2) {
    if (ranges[i]! > next) out.push(next, ranges[i]! - 1);
    next = ranges[i + 1]! + 1;
  }
  if (next <= MAX_CODE_POINT) out.push(next, MAX_CODE_POINT);
  return out;
}

const single = (c: number): CharRanges => [c, c];
const DIGITS: CharRanges = [0x30, 0x39];
const WORD: CharRanges = normalizeRanges([0x30, 0x39, 0x41, 0x5a, 0x5f, 0x5f, 0x61, 0x7a]);
// ECMAScript's WhiteSpace and LineTerminator.
const SPACE: CharRanges = normalizeRanges([
  0x09, 0x0d, 0x20, 0x20, 0xa0, 0xa0, 0x1680, 0x1680, 0x2000, 0x200a, 0x2028, 0x2029, 0x202f, 0x202f, 0x205f,
  0x205f, 0x3000, 0x3000, 0xfeff, 0xfeff,
]);
/** `.`: anything but a line terminator. */
const DOT: CharRanges = complementRanges(normalizeRanges([0x0a, 0x0a, 0x0d, 0x0d, 0x2028, 0x2029]));
/** `.` with the s flag. */
const ANY: CharRanges = [0, MAX_CODE_POINT];

const CLASS_ESCAPES: Record<string, CharRanges> = {
  d: DIGITS,
  D: complementRanges(DIGITS),
  w: WORD,
  W: complementRanges(WORD),
  s: SPACE,
  S: complementRanges(SPACE),
};
const CONTROL_ESCAPES: Record<string, number> = { t: 0x09, n: 0x0a, v: 0x0b, f: 0x0c, r: 0x0d };

/** Flags a whole-match regex may carry (Lark's `/…/i` and `/…/s`); a JSON Schema pattern has none. */
export interface RegexFlags {
  /** i: a letter matches in either case. */
  ignoreCase?: boolean;
  /** s: `.` matches line terminators too. */
  dotAll?: boolean;
}

export function parseRegex(source: string, flags: RegexFlags = {}): RegexNode {
  return new Parser(source, flags).parse();
}

/** Most code points of a class whose case variants are looked up one by one (beyond: ASCII and Latin). */
const CASE_LOOKUP_LIMIT = 20_000;
const LATIN_END = 0x24f;

/**
 * The ranges with every character's other case added, as a regex with the i flag reads a class (before a
 * negated class is complemented). A class too large to look up whole has its ASCII and Latin letters' cases
 * added; holding that many, it rarely lacks the rest.
 */
export function withCaseVariants(ranges: CharRanges): CharRanges {
  let size = 0;
  for (let i = 0; i < ranges.length; i += 2) size += ranges[i + 1]! - ranges[i]! + 1;
  const extra: number[] = [];
  for (let i = 0; i < ranges.length; i += 2) {
    const last = size > CASE_LOOKUP_LIMIT ? Math.min(ranges[i + 1]!, LATIN_END) : ranges[i + 1]!;
    for (let c = ranges[i]!; c <= last; c++) {
      const text = String.fromCodePoint(c);
      for (const other of [text.toLowerCase(), text.toUpperCase()]) {
        const code = other.codePointAt(0)!;
        if (code !== c && [...other].length === 1) extra.push(code, code);
      }
    }
  }
  return extra.length === 0 ? ranges : normalizeRanges([...ranges, ...extra]);
}

class Parser {
  private at = 0;

  constructor(
    private readonly source: string,
    private readonly flags: RegexFlags,
  ) {}

  /** A class as the flags read it: with each letter's other case under i. */
  private cased(ranges: CharRanges): CharRanges {
    return this.flags.ignoreCase ? withCaseVariants(ranges) : ranges;
  }

  parse(): RegexNode {
    const node = this.disjunction();
    if (this.at < this.source.length) this.fail(`unmatched "${this.source[this.at]}"`);
    return node;
  }

  private fail(message: string): never {
    throw new RegexSyntaxError(`${message} at offset ${this.at}`);
  }

  private peek(offset = 0): string | undefined {
    return this.source[this.at + offset];
  }

  private disjunction(): RegexNode {
    const options = [this.alternative()];
    while (this.peek() === "|") {
      this.at++;
      options.push(this.alternative());
    }
    return options.length === 1 ? options[0]! : { t: "alt", options };
  }

  private alternative(): RegexNode {
    const items: RegexNode[] = [];
    while (this.at < this.source.length && this.peek() !== "|" && this.peek() !== ")") {
      items.push(this.term());
    }
    return items.length === 1 ? items[0]! : { t: "seq", items };
  }

  private term(): RegexNode {
    const c = this.peek()!;
    if (c === "^" || c === "$") {
      this.at++;
      this.noQuantifier(c);
      return { t: c === "^" ? "start" : "end" };
    }
    if (c === "\\" && (this.peek(1) === "b" || this.peek(1) === "B")) {
      this.fail(`\\${this.peek(1)} (a word boundary) is not supported`);
    }
    if (this.source.startsWith("(?=", this.at) || this.source.startsWith("(?!", this.at)) {
      const negate = this.peek(2) === "!";
      this.at += 3;
      const body = this.disjunction();
      this.close();
      this.noQuantifier("a lookahead");
      return { t: "look", body, negate };
    }
    const atom = this.atom();
    return this.quantified(atom);
  }

  private noQuantifier(what: string): void {
    if (this.quantifier() !== null) this.fail(`${what} cannot be repeated`);
  }

  private close(): void {
    if (this.peek() !== ")") this.fail('missing ")"');
    this.at++;
  }

  private atom(): RegexNode {
    const c = this.peek()!;
    switch (c) {
      case ".":
        this.at++;
        return { t: "chars", ranges: this.flags.dotAll ? ANY : DOT };
      case "[":
        return { t: "chars", ranges: this.characterClass() };
      case "(":
        return this.group();
      case "\\":
        return { t: "chars", ranges: this.cased(this.escape(false)) };
      case "*":
      case "+":
      case "?":
        return this.fail(`nothing to repeat before "${c}"`);
      case "{":
        if (this.quantifierAhead()) this.fail('nothing to repeat before "{"');
        break;
      case ")":
        return this.fail('unmatched ")"');
    }
    const code = this.source.codePointAt(this.at)!;
    this.at += code > 0xffff ? 2 : 1;
    return { t: "chars", ranges: this.cased(single(code)) };
  }

  private group(): RegexNode {
    this.at++;
    if (this.peek() === "?") {
      if (this.peek(1) === ":") this.at += 2;
      else if (this.peek(1) === "<" && (this.peek(2) === "=" || this.peek(2) === "!")) {
        this.fail("lookbehind is not supported");
      } else if (this.peek(1) === "<") {
        const end = this.source.indexOf(">", this.at);
        if (end < 0) this.fail("unterminated group name");
        this.at = end + 1;
      } else this.fail(`unknown group "(?${this.peek(1) ?? ""}"`);
    }
    const body = this.disjunction();
    this.close();
    return body;
  }

  /** Whether a {n}, {n,} or {n,m} quantifier starts here (else "{" is a plain character, as browsers read it). */
  private quantifierAhead(): boolean {
    return /^\{\d+(,\d*)?\}/.test(this.source.slice(this.at, this.at + 24));
  }

  /** Reads a quantifier if one is here: its counts, else null. */
  private quantifier(): { min: number; max: number } | null {
    const c = this.peek();
    let counts: { min: number; max: number } | null = null;
    if (c === "*") counts = { min: 0, max: Number.POSITIVE_INFINITY };
    else if (c === "+") counts = { min: 1, max: Number.POSITIVE_INFINITY };
    else if (c === "?") counts = { min: 0, max: 1 };
    if (counts) this.at++;
    else if (c === "{" && this.quantifierAhead()) {
      const match = /^\{(\d+)(,(\d*))?\}/.exec(this.source.slice(this.at))!;
      this.at += match[0].length;
      const min = Number(match[1]);
      const max =
        match[2] === undefined ? min : match[3] === "" ? Number.POSITIVE_INFINITY : Number(match[3]);
      if (min > max) this.fail("numbers out of order in {} quantifier");
      if (min > MAX_REPEAT || (max !== Number.POSITIVE_INFINITY && max > MAX_REPEAT)) {
        this.fail(`a count above ${MAX_REPEAT} in {} quantifier`);
      }
      counts = { min, max };
    }
    // A lazy quantifier matches the same strings.
    if (counts && this.peek() === "?") this.at++;
    return counts;
  }

  private quantified(atom: RegexNode): RegexNode {
    let node = atom;
    for (let counts = this.quantifier(); counts; counts = this.quantifier()) {
      node = { t: "repeat", body: node, ...counts };
    }
    return node;
  }

  private characterClass(): CharRanges {
    this.at++;
    const negate = this.peek() === "^";
    if (negate) this.at++;
    const pairs: number[] = [];
    while (this.peek() !== "]") {
      if (this.at >= this.source.length) this.fail('missing "]"');
      const lo = this.classAtom();
      if (this.peek() === "-" && this.peek(1) !== "]" && this.peek(1) !== undefined) {
        this.at++;
        const hi = this.classAtom();
        if (lo.length !== 2 || hi.length !== 2 || lo[0] !== lo[1] || hi[0] !== hi[1]) {
          this.fail("a class escape cannot bound a range");
        }
        if (lo[0]! > hi[0]!) this.fail("range out of order in character class");
        pairs.push(lo[0]!, hi[0]!);
      } else pairs.push(...lo);
    }
    this.at++;
    const ranges = this.cased(normalizeRanges(pairs));
    return negate ? complementRanges(ranges) : ranges;
  }

  private classAtom(): CharRanges {
    if (this.peek() === "\\") return this.escape(true);
    const code = this.source.codePointAt(this.at)!;
    this.at += code > 0xffff ? 2 : 1;
    return single(code);
  }

  /** An escape after "\": the characters it stands for. Inside a class, \b is a backspace. */
  private escape(inClass: boolean): CharRanges {
    this.at++;
    const c = this.peek();
    if (c === undefined) this.fail("\\ at end of pattern");
    this.at++;
    if (CLASS_ESCAPES[c]) return CLASS_ESCAPES[c];
    if (CONTROL_ESCAPES[c] !== undefined) return single(CONTROL_ESCAPES[c]);
    if (c === "b" && inClass) return single(0x08);
    if (c === "0" && !/\d/.test(this.peek() ?? "")) return single(0);
    if (/[1-9]/.test(c)) this.fail("backreferences are not supported");
    if (c === "x" || c === "u") {
      const digits = c === "x" ? 2 : 4;
      const hex = this.source.slice(this.at, this.at + digits);
      if (!new RegExp(`^[0-9a-fA-F]{${digits}}$`).test(hex)) this.fail(`malformed \\${c} escape`);
      this.at += digits;
      return single(Number.parseInt(hex, 16));
    }
    if (c === "c" && /[A-Za-z]/.test(this.peek() ?? "")) {
      return single(this.source.charCodeAt(this.at++) % 32);
    }
    if (c === "p" || c === "P") this.fail("Unicode property escapes are not supported");
    if (/[A-Za-z0-9]/.test(c)) this.fail(`unknown escape \\${c}`);
    return single(c.codePointAt(0)!);
  }
}
