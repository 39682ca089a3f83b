// A context-free grammar in the EBNF that vLLM's structured outputs take (`grammar`, xgrammar's dialect of
// llama.cpp's GBNF): `name ::= alternatives` rules, `root` the whole output; string literals, character
// classes (`[a-z]`, `[^"\n]`), `.` for any character, groups, `|`, `*`, `+`, `?` and `{m}`, `{m,}`,
// `{m,n}`; `#` comments. A rule ends where the next `name ::=` begins, so rules may span lines.
// Lookahead assertions and xgrammar's macros are refused, never ignored.
import {
  type Expr,
  GrammarError,
  MAX_REPEAT,
  type ParsedGrammar,
  type RuleText,
  readCharacter,
  where,
} from "./grammar-rules.ts";
import { complementRanges, MAX_CODE_POINT, normalizeRanges } from "./regex-syntax.ts";

/** Whether the text is written in this syntax: some line starts a rule with ::=. */
export function isEbnf(text: string): boolean {
  return /^[ \t]*[A-Za-z_][A-Za-z0-9_-]*[ \t]*::=/m.test(text);
}

export function parseEbnf(text: string): ParsedGrammar {
  return { rules: new EbnfParser(text).rules(), start: "root" };
}

class EbnfParser {
  private at = 0;

  constructor(private readonly text: string) {}

  rules(): RuleText[] {
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
      return { kind: "chars", ranges: [0, MAX_CODE_POINT] };
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
    const merged = normalizeRanges(ranges);
    const result = negated ? complementRanges(merged) : merged;
    if (result.length === 0) this.fail("the character class matches no character");
    return { kind: "chars", ranges: result };
  }

  /** One character of a string or class, an escape read. */
  private character(): number {
    const read = readCharacter(this.text, this.at);
    if (typeof read === "string") this.fail(read);
    this.at = read.next;
    return read.code;
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
