// A context-free grammar in the EBNF that vLLM's structured outputs take (`grammar`, xgrammar's dialect of
// llama.cpp's GBNF): `name ::= alternatives` rules, `root` the whole output; string literals, character
// classes (`[a-z]`, `[^"\n]`), `.` for any character, groups, `|`, `*`, `+`, `?` and `{m}`, `{m,}`,
// `{m,n}`; `#` comments. A rule ends where the next `name ::=` begins, so rules may span lines.
//
// It compiles to flat alternatives whose elements are a character class or another rule, the form the
// pushdown recognizer (grammar-stacks.ts) walks: groups and repetitions become rules of their own (`x*` is
// `r ::= x r | ""`, which the recognizer runs as a loop, not a growing stack). Checked here, so a request
// is refused before anything runs: every rule used is defined, each rule can end, and none is left-recursive
// (`expr ::= expr "+" term` never consumes a character before calling itself; write `term ("+" term)*`).
// Lookahead assertions and xgrammar's macros are refused, never ignored.

/** A grammar the compiler refuses: the message names the rule or the line and column. */
export class GrammarError extends Error {}

/** Marks the end of an alternative in `Grammar.elements`. */
export const END = -1;

export interface Grammar {
  /**
   * Every alternative's elements, each alternative ended by END: a rule's index (≥ 0), or a character
   * class as -2 - its index in `classes`.
   */
  elements: Int32Array;
  /** Per rule, where each of its alternatives starts in `elements`; rule 0 is root. */
  alternatives: Int32Array[];
  /** Character classes as sorted, disjoint [first, last] code point pairs. */
  classes: Int32Array[];
  /** Per position in `elements`: the fewest characters from there to its alternative's end. */
  fewestToEnd: Int32Array;
  /** Rule names, for messages (generated ones say where they come from). */
  names: string[];
}

/** Longest grammar text accepted. */
export const MAX_GRAMMAR_CHARS = 65_536;
/** Most elements a compiled grammar may hold (repetitions counted as written out). */
const MAX_ELEMENTS = 200_000;
/** The largest bound of a `{m,n}` repetition. */
const MAX_REPEAT = 10_000;
const LAST_CODE_POINT = 0x10ffff;

/** The grammar of `text`, compiled and checked; the same text again is served from a cache. */
export function compileGrammar(text: string): Grammar {
  const known = cache.get(text);
  if (known) {
    cache.delete(text);
    cache.set(text, known);
    return known;
  }
  if (text.length > MAX_GRAMMAR_CHARS) {
    throw new GrammarError(`a grammar may have at most ${MAX_GRAMMAR_CHARS} characters`);
  }
  let grammar: Grammar;
  try {
    grammar = new Compiler(new Parser(text).rules(), text).grammar();
  } catch (error) {
    // The parser and the checks recurse as deep as the grammar nests.
    if (error instanceof RangeError) throw new GrammarError("the grammar nests too deeply");
    throw error;
  }
  cache.set(text, grammar);
  if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return grammar;
}

const cache = new Map<string, Grammar>();
const CACHE_SIZE = 64;

// The parsed form: an expression tree per rule.
type Expr =
  | { kind: "chars"; ranges: number[] }
  | { kind: "literal"; codes: number[] }
  | { kind: "ref"; name: string; offset: number }
  | { kind: "seq"; items: Expr[] }
  | { kind: "alt"; options: Expr[] }
  | { kind: "repeat"; item: Expr; min: number; max: number };

interface RuleText {
  name: string;
  body: Expr;
  /** Where its name is written in the text. */
  offset: number;
}

class Parser {
  private at = 0;

  constructor(private readonly text: string) {}

  rules(): RuleText[] {
    if (!this.text.includes("::=")) {
      throw new GrammarError(
        "the grammar is not EBNF as vLLM's xgrammar reads it (rules written name ::= ..., the output being root); Lark grammars are not supported",
      );
    }
    const rules: RuleText[] = [];
    this.skipBlank();
    while (this.at < this.text.length) {
      const offset = this.at;
      const name = this.name();
      if (name === null) this.fail("expected a rule name (name ::= ...)");
      this.skipBlank();
      if (!this.text.startsWith("::=", this.at)) this.fail(`expected ::= after the rule name ${name}`);
      this.at += 3;
      rules.push({ name, body: this.alternatives(), offset });
      this.skipBlank();
    }
    if (rules.length === 0) throw new GrammarError("the grammar has no rules: write root ::= ...");
    return rules;
  }

  private alternatives(): Expr {
    const options = [this.sequence()];
    for (;;) {
      this.skipBlank();
      if (this.text[this.at] !== "|") break;
      this.at++;
      options.push(this.sequence());
    }
    return options.length === 1 ? options[0]! : { kind: "alt", options };
  }

  private sequence(): Expr {
    const items: Expr[] = [];
    for (;;) {
      this.skipBlank();
      const c = this.text[this.at];
      if (c === undefined || c === "|" || c === ")" || this.atRuleStart()) break;
      items.push(this.repetition(this.primary()));
    }
    return items.length === 1 ? items[0]! : { kind: "seq", items };
  }

  private primary(): Expr {
    const c = this.text[this.at]!;
    if (c === '"') return this.literal();
    if (c === "[") return this.charClass();
    if (c === ".") {
      this.at++;
      return { kind: "chars", ranges: [0, LAST_CODE_POINT] };
    }
    if (c === "(") {
      if (this.text[this.at + 1] === "=") this.fail("lookahead assertions (= ...) are not supported");
      this.at++;
      const inner = this.alternatives();
      this.skipBlank();
      if (this.text[this.at] !== ")") this.fail("expected ) to close the group");
      this.at++;
      return inner;
    }
    const start = this.at;
    const name = this.name();
    if (name === null) {
      if (c === "'") this.fail("strings are written in double quotes");
      this.fail(`unexpected ${JSON.stringify(c)}`);
    }
    // xgrammar's macros, e.g. TagDispatch(...), call a name with no space before the parenthesis.
    if (this.text[this.at] === "(") this.fail(`macros such as ${name}(...) are not supported`);
    return { kind: "ref", name, offset: start };
  }

  private repetition(item: Expr): Expr {
    for (;;) {
      const c = this.text[this.at];
      if (c === "*") item = { kind: "repeat", item, min: 0, max: Infinity };
      else if (c === "+") item = { kind: "repeat", item, min: 1, max: Infinity };
      else if (c === "?") item = { kind: "repeat", item, min: 0, max: 1 };
      else if (c === "{") {
        const bounds = /^\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}/.exec(this.text.slice(this.at, this.at + 32));
        if (!bounds) this.fail("expected {m}, {m,} or {m,n}");
        const min = Number(bounds[1]);
        const max = bounds[2] === undefined ? min : bounds[3] === "" ? Infinity : Number(bounds[3]);
        if (min > max) this.fail(`{${min},${max}}: the least count is above the most`);
        if (min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT)) {
          this.fail(`a repetition's bounds may be at most ${MAX_REPEAT}`);
        }
        item = { kind: "repeat", item, min, max };
        this.at += bounds[0].length - 1;
      } else return item;
      this.at++;
    }
  }

  private literal(): Expr {
    this.at++;
    const codes: number[] = [];
    for (;;) {
      const c = this.text[this.at];
      if (c === undefined || c === "\n") this.fail("the string is not closed");
      if (c === '"') break;
      codes.push(this.character());
    }
    this.at++;
    return { kind: "literal", codes };
  }

  private charClass(): Expr {
    this.at++;
    const negated = this.text[this.at] === "^";
    if (negated) this.at++;
    const ranges: number[] = [];
    while (this.text[this.at] !== "]") {
      if (this.at >= this.text.length) this.fail("the character class is not closed");
      const first = this.character();
      let last = first;
      if (this.text[this.at] === "-" && this.text[this.at + 1] !== "]") {
        this.at++;
        last = this.character();
        if (last < first) this.fail("a range's last character comes before its first");
      }
      ranges.push(first, last);
    }
    this.at++;
    const merged = mergeRanges(ranges);
    const result = negated ? complement(merged) : merged;
    if (result.length === 0) this.fail("the character class matches no character");
    return { kind: "chars", ranges: result };
  }

  /** One character of a string or class, an escape read. */
  private character(): number {
    const c = this.text.codePointAt(this.at)!;
    if (c !== 0x5c) {
      this.at += c > 0xffff ? 2 : 1;
      return c;
    }
    const e = this.text[this.at + 1];
    const hex = (digits: number): number => {
      const h = this.text.slice(this.at + 2, this.at + 2 + digits);
      if (!new RegExp(`^[0-9a-fA-F]{${digits}}$`).test(h)) this.fail(`\\${e} needs ${digits} hex digits`);
      const code = Number.parseInt(h, 16);
      if (code > LAST_CODE_POINT) this.fail(`\\${e}${h} is beyond the last code point`);
      this.at += 2 + digits;
      return code;
    };
    if (e === "x") return hex(2);
    if (e === "u") return hex(4);
    if (e === "U") return hex(8);
    const simple: Record<string, number> = { n: 10, r: 13, t: 9, "0": 0, "\\": 92, '"': 34, "'": 39 };
    const code = simple[e!] ?? ("[]-^/".includes(e ?? "x") ? e!.charCodeAt(0) : undefined);
    if (code === undefined) this.fail(`unknown escape \\${e ?? ""}`);
    this.at += 2;
    return code;
  }

  private name(): string | null {
    const match = /^[A-Za-z_][A-Za-z0-9_-]*/.exec(this.text.slice(this.at, this.at + 256));
    if (!match) return null;
    this.at += match[0].length;
    return match[0];
  }

  /** The next word is a rule name followed by ::=, where a new rule begins. */
  private atRuleStart(): boolean {
    const match = /^[A-Za-z_][A-Za-z0-9_-]*[ \t]*::=/.exec(this.text.slice(this.at, this.at + 300));
    return match !== null;
  }

  /** Spaces, line breaks and # comments. */
  private skipBlank(): void {
    for (;;) {
      const c = this.text[this.at];
      if (c === " " || c === "\t" || c === "\n" || c === "\r") this.at++;
      else if (c === "#") {
        while (this.at < this.text.length && this.text[this.at] !== "\n") this.at++;
      } else return;
    }
  }

  private fail(message: string): never {
    throw new GrammarError(`${where(this.text, this.at)}: ${message}`);
  }
}

/** "line L, column C" of an offset into the text, for messages. */
function where(text: string, offset: number): string {
  const before = text.slice(0, offset).split("\n");
  return `line ${before.length}, column ${before[before.length - 1]!.length + 1}`;
}

/** Sorted, disjoint ranges covering the same code points. */
function mergeRanges(ranges: number[]): number[] {
  const pairs: [number, number][] = [];
  for (let i = 0; i < ranges.length; i += 2) pairs.push([ranges[i]!, ranges[i + 1]!]);
  pairs.sort((a, b) => a[0] - b[0]);
  const out: number[] = [];
  for (const [first, last] of pairs) {
    if (out.length > 0 && first <= out[out.length - 1]! + 1) {
      out[out.length - 1] = Math.max(out[out.length - 1]!, last);
    } else out.push(first, last);
  }
  return out;
}

function complement(ranges: number[]): number[] {
  const out: number[] = [];
  let next = 0;
  for (let i = 0; i < ranges.length; i += 2) {
    if (ranges[i]! > next) out.push(next, ranges[i]! - 1);
    next = ranges[i + 1]! + 1;
  }
  if (next <= LAST_CODE_POINT) out.push(next, LAST_CODE_POINT);
  return out;
}

/** From the parsed rules to flat alternatives, then the checks. */
class Compiler {
  private readonly names: string[] = [];
  private readonly index = new Map<string, number>();
  /** Per rule, its alternatives as element lists. */
  private readonly bodies: number[][][] = [];
  private readonly classes: Int32Array[] = [];
  private readonly classIndex = new Map<string, number>();
  private elementCount = 0;

  constructor(
    private readonly parsed: RuleText[],
    private readonly text: string,
  ) {}

  grammar(): Grammar {
    const root = this.parsed.find((r) => r.name === "root");
    if (!root) throw new GrammarError("the grammar has no root rule: the output is root (root ::= ...)");
    // root first, then the others in order, so a rule's index is known before any body refers to it.
    for (const rule of [root, ...this.parsed.filter((r) => r !== root)]) {
      if (this.index.has(rule.name)) {
        throw new GrammarError(`${where(this.text, rule.offset)}: rule ${rule.name} is defined twice`);
      }
      this.newRule(rule.name);
    }
    for (const rule of this.parsed)
      this.bodies[this.index.get(rule.name)!] = this.alternativesOf(rule.body, rule.name);
    const fewest = this.fewestCharacters();
    this.checkLeftRecursion(fewest);
    return this.flatten(fewest);
  }

  private newRule(name: string): number {
    const id = this.names.length;
    this.names.push(name);
    this.index.set(name, id);
    this.bodies.push([]);
    return id;
  }

  /** A generated rule's index, its alternatives given. */
  private helperRule(owner: string, alternatives: number[][]): number {
    const id = this.newRule(`${owner}#${this.names.length}`);
    this.bodies[id] = alternatives;
    return id;
  }

  private alternativesOf(expr: Expr, owner: string): number[][] {
    if (expr.kind === "alt") return expr.options.map((o) => this.sequenceOf(o, owner));
    return [this.sequenceOf(expr, owner)];
  }

  private sequenceOf(expr: Expr, owner: string): number[] {
    const out: number[] = [];
    const add = (e: Expr): void => {
      switch (e.kind) {
        case "seq":
          for (const item of e.items) add(item);
          return;
        case "literal":
          for (const code of e.codes) out.push(this.charClass([code, code]));
          return;
        case "chars":
          out.push(this.charClass(e.ranges));
          return;
        default:
          out.push(this.element(e, owner));
      }
    };
    add(expr);
    this.elementCount += out.length + 1;
    if (this.elementCount > MAX_ELEMENTS) {
      throw new GrammarError(`the grammar is too large: more than ${MAX_ELEMENTS} elements written out`);
    }
    return out;
  }

  /** One element standing for `expr`: a class, a rule, or a generated rule. */
  private element(expr: Expr, owner: string): number {
    switch (expr.kind) {
      case "chars":
        return this.charClass(expr.ranges);
      case "ref": {
        const id = this.index.get(expr.name);
        if (id === undefined) {
          throw new GrammarError(
            `${where(this.text, expr.offset)}: rule ${expr.name} is used but not defined`,
          );
        }
        return id;
      }
      case "literal":
        if (expr.codes.length === 1) return this.charClass([expr.codes[0]!, expr.codes[0]!]);
        return this.helperRule(owner, [this.sequenceOf(expr, owner)]);
      case "seq":
        return this.helperRule(owner, [this.sequenceOf(expr, owner)]);
      case "alt":
        return this.helperRule(owner, this.alternativesOf(expr, owner));
      case "repeat":
        return this.repeat(this.element(expr.item, owner), expr.min, expr.max, owner);
    }
  }

  /**
   * x{min,max} as one rule: min copies of x, then `r ::= x r | ""` when unbounded, else a chain of
   * max - min optional copies, each ending in the next (`o1 ::= x o2 | ""`), which the recognizer runs
   * without growing its stack.
   */
  private repeat(x: number, min: number, max: number, owner: string): number {
    let tail: number[] = [];
    if (max === Infinity) {
      const loop = this.helperRule(owner, []);
      this.bodies[loop] = [[x, loop], []];
      tail = [loop];
    } else {
      for (let i = 0; i < max - min; i++) tail = [this.helperRule(owner, [[x, ...tail], []])];
    }
    const body = [...Array<number>(min).fill(x), ...tail];
    this.elementCount += body.length + 2 * (max === Infinity ? 2 : max - min);
    if (this.elementCount > MAX_ELEMENTS) {
      throw new GrammarError(`the grammar is too large: more than ${MAX_ELEMENTS} elements written out`);
    }
    return this.helperRule(owner, [body]);
  }

  private charClass(ranges: number[]): number {
    const key = ranges.join(",");
    let id = this.classIndex.get(key);
    if (id === undefined) {
      id = this.classes.length;
      this.classes.push(Int32Array.from(ranges));
      this.classIndex.set(key, id);
    }
    return -2 - id;
  }

  /** Per rule, the fewest characters of any string it matches; a rule that can never end is refused. */
  private fewestCharacters(): number[] {
    const fewest = this.bodies.map(() => Infinity);
    const cost = (e: number): number => (e < 0 ? 1 : fewest[e]!);
    for (let changed = true; changed; ) {
      changed = false;
      for (const [rule, alternatives] of this.bodies.entries()) {
        for (const alternative of alternatives) {
          const total = alternative.reduce((sum, e) => sum + cost(e), 0);
          if (total < fewest[rule]!) {
            fewest[rule] = total;
            changed = true;
          }
        }
      }
    }
    const endless = fewest.indexOf(Infinity);
    if (endless >= 0) {
      throw new GrammarError(
        `rule ${this.described(endless)} can never end: every alternative calls a rule that cannot end`,
      );
    }
    return fewest;
  }

  /**
   * Refuses a rule that can call itself before any character is read (through rules that may match
   * nothing): the recognizer would expand it forever.
   */
  private checkLeftRecursion(fewest: number[]): void {
    // Per rule, the rules it may call at its start.
    const first = this.bodies.map((alternatives) => {
      const called = new Set<number>();
      for (const alternative of alternatives) {
        for (const e of alternative) {
          if (e < 0) break;
          called.add(e);
          if (fewest[e]! > 0) break;
        }
      }
      return [...called];
    });
    // Depth-first over that relation; a rule met again on the path is a cycle.
    const state = new Uint8Array(this.bodies.length); // 0 unseen, 1 on the path, 2 done
    const path: number[] = [];
    const visit = (rule: number): void => {
      state[rule] = 1;
      path.push(rule);
      for (const next of first[rule]!) {
        if (state[next] === 1) {
          const onCycle = path.slice(path.indexOf(next));
          if (onCycle.every((r) => this.names[r]!.includes("#"))) {
            throw new GrammarError(
              `rule ${this.described(next)} repeats something that can match nothing, e.g. ("a"?)*: repeat only what reads a character`,
            );
          }
          const cycle = onCycle.map((r) => this.described(r));
          throw new GrammarError(
            `rule ${cycle[0]} calls itself before reading any character (${[...cycle, cycle[0]].join(" → ")}): ` +
              'write left recursion as a repetition: expr ::= term ("+" term)*',
          );
        }
        if (state[next] === 0) visit(next);
      }
      path.pop();
      state[rule] = 2;
    };
    for (let rule = 0; rule < this.bodies.length; rule++) if (state[rule] === 0) visit(rule);
  }

  /** A rule's name for messages: a generated rule is named by the rule it was written in. */
  private described(rule: number): string {
    const name = this.names[rule]!;
    const hash = name.indexOf("#");
    return hash < 0 ? name : `${name.slice(0, hash)} (a group or repetition in it)`;
  }

  private flatten(fewest: number[]): Grammar {
    const elements: number[] = [];
    const toEnd: number[] = [];
    const alternatives = this.bodies.map((body) =>
      Int32Array.from(
        body.map((alternative) => {
          const start = elements.length;
          let rest = 0;
          const costs = alternative.map((e) => (e < 0 ? 1 : fewest[e]!));
          const after: number[] = [];
          for (let i = alternative.length - 1; i >= 0; i--) {
            rest += costs[i]!;
            after[i] = rest;
          }
          elements.push(...alternative, END);
          toEnd.push(...after, 0);
          return start;
        }),
      ),
    );
    return {
      elements: Int32Array.from(elements),
      alternatives,
      classes: this.classes,
      fewestToEnd: Int32Array.from(toEnd),
      names: this.names,
    };
  }
}
