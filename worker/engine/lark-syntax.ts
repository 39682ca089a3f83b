// A context-free grammar in Lark's syntax, as vLLM's guidance backend and OpenAI's grammar-constrained
// custom tools take it: `name: alternatives` rules (lowercase, `start` the whole output) and `NAME: ...`
// terminals (uppercase); "strings" (`"select"i` ignoring case), /regexes/ (flags i and s), "a".."z" ranges, groups,
// [optional] parts, `?`, `*`, `+`, `~ n` and `~ n..m`; `//` and `#` comments; alternatives continue on a
// line that starts with `|`. `%import common.NAME` (or `common (A, B)`) takes Lark's common terminals,
// `%ignore X` lets X (whitespace, mostly) stand before any terminal of a rule and at the end of the output.
//
// Each terminal, string or regex a rule uses is one lexeme, read as a lexer reads it: the longest match,
// never ending where its next character could continue it, so `NAME NAME` needs something between the two
// names, as in Lark (per lexeme, as Lark's Earley parser lexes; llguidance, which OpenAI's custom tools run
// on, takes the longest match of all the terminals possible at a place instead). A terminal is regular: made
// of strings, regexes and other terminals, never of itself or of a rule. Aliases (`-> name`), rule
// modifiers (`?rule`, `!rule`) and priorities (`.2`) shape Lark's parse tree, not its strings, and are read
// and ignored. Templates, `%declare`/`%override`/`%extend`, other regex flags and llguidance's extensions
// (`%json`, `@rule`, `<|token|>`) are refused.
import {
  type Expr,
  GrammarError,
  MAX_REPEAT,
  type ParsedGrammar,
  type RuleText,
  readCharacter,
  where,
} from "./grammar-rules.ts";
import { parseRegex, type RegexNode, RegexSyntaxError } from "./regex-syntax.ts";

export function parseLark(text: string): ParsedGrammar {
  return { rules: new LarkParser(text).grammar(), start: "start" };
}

/** The rule every lexeme of a rule may follow when the grammar has %ignore. */
const IGNORED = "__ignored";
/** Where a rule's lexeme begins, until the grammar is read whole (a name no grammar can write). */
const LEXEME_SLOT = "\0lexeme";

/**
 * Lark's common terminals (lark/grammars/common.lark), written out here; `%import common.NAME` takes
 * one and what it uses.
 */
const COMMON = String.raw`
DIGIT: "0".."9"
HEXDIGIT: "a".."f" | "A".."F" | DIGIT
INT: DIGIT+
SIGNED_INT: ["+" | "-"] INT
DECIMAL: INT "." INT? | "." INT
_EXP: ("e" | "E") SIGNED_INT
FLOAT: INT _EXP | DECIMAL _EXP?
SIGNED_FLOAT: ["+" | "-"] FLOAT
NUMBER: FLOAT | INT
SIGNED_NUMBER: ["+" | "-"] NUMBER
ESCAPED_STRING: /"(?:[^"\\\n]|\\[^\n])*"/
LCASE_LETTER: "a".."z"
UCASE_LETTER: "A".."Z"
LETTER: UCASE_LETTER | LCASE_LETTER
WORD: LETTER+
CNAME: ("_" | LETTER) ("_" | LETTER | DIGIT)*
WS_INLINE: (" " | "\t")+
WS: /[ \t\f\r\n]+/
CR: "\r"
LF: "\n"
NEWLINE: (CR? LF)+
SH_COMMENT: /#[^\n]*/
CPP_COMMENT: /\/\/[^\n]*/
C_COMMENT: /\/\*(?:[^*]|\*+[^*\/])*\*+\//
SQL_COMMENT: /--[^\n]*/
`;

let common: Map<string, RuleText> | null = null;

function commonTerminals(): Map<string, RuleText> {
  common ??= new Map(new LarkParser(COMMON).definitions().map((r) => [r.name, r]));
  return common;
}

class LarkParser {
  private at = 0;
  /** Nesting of ( and [: inside them a line break is a space. */
  private depth = 0;
  /** Defining a terminal: its literals are part of one lexeme, not lexemes of their own. */
  private inTerminal = false;
  private readonly ignored: Expr[] = [];
  private readonly imported: RuleText[] = [];

  constructor(private readonly text: string) {}

  /**
   * The grammar's rules, each lexeme read through the terminals (its imports added) and, with %ignore,
   * what may stand before each lexeme.
   */
  grammar(): RuleText[] {
    const definitions = this.definitions();
    const defined = new Set(definitions.map((r) => r.name));
    for (const rule of this.imported) {
      if (defined.has(rule.name)) continue;
      defined.add(rule.name);
      definitions.push(rule);
    }
    const terminals = new Terminals(
      definitions.filter((r) => isTerminalName(r.name)),
      this.text,
    );
    const rules = definitions.filter((r) => !isTerminalName(r.name));
    if (this.ignored.length === 0) {
      return rules.map((rule) => ({ ...rule, body: fillLexemeSlots(rule.body, null, terminals) }));
    }
    const ignored = this.ignored.map((e) => terminals.lexeme(e));
    const ignoredOnce: Expr = ignored.length === 1 ? ignored[0]! : { kind: "alt", options: ignored };
    const filled = rules.map((rule) => {
      const body = fillLexemeSlots(rule.body, ref(IGNORED), terminals);
      // What is ignored may also end the output.
      return {
        ...rule,
        body: rule.name === "start" ? ({ kind: "seq", items: [body, ref(IGNORED)] } as Expr) : body,
      };
    });
    return [
      ...filled,
      { name: IGNORED, body: { kind: "repeat", item: ignoredOnce, min: 0, max: Infinity }, offset: 0 },
    ];
  }

  /** Every rule and terminal defined, directives applied. */
  definitions(): RuleText[] {
    const rules: RuleText[] = [];
    for (;;) {
      this.skipBlank(true);
      if (this.at >= this.text.length) return rules;
      if (this.text[this.at] === "%") this.directive();
      else rules.push(this.definition());
    }
  }

  private definition(): RuleText {
    const offset = this.at;
    const match = /^[?!]?(_?[A-Za-z][A-Za-z0-9_]*)(?:\.(-?\d+))?[ \t]*(\{)?/.exec(
      this.text.slice(this.at, this.at + 300),
    );
    if (!match) this.fail("expected a rule (name: ...) or a terminal (NAME: ...)");
    if (match[3]) this.fail(`templates such as ${match[1]}{...} are not supported`);
    this.at += match[0].length;
    if (this.text[this.at] !== ":") this.fail(`expected : after ${match[1]}`);
    this.at++;
    const name = match[1]!;
    this.inTerminal = isTerminalName(name);
    const body = this.alternatives();
    this.inTerminal = false;
    this.endOfStatement();
    return { name, body, offset };
  }

  private directive(): void {
    const line = /^%(\w+)[ \t]*([^\n]*)/.exec(this.text.slice(this.at))!;
    const [, name, rest] = line;
    if (name === "ignore") {
      this.at += line[0].length - rest!.length;
      this.inTerminal = true;
      this.ignored.push(this.alternatives());
      this.inTerminal = false;
      this.endOfStatement();
      return;
    }
    if (name === "import") {
      this.importCommon(rest!.replace(/\s*(\/\/|#).*$/, "").trim());
      this.at += line[0].length;
      return;
    }
    this.fail(`%${name} is not supported`);
  }

  /** `common.NAME`, `common.NAME -> ALIAS` or `common (A, B)`: Lark's common terminals, and what they use. */
  private importCommon(what: string): void {
    const one = /^common\.(\w+)(?:\s*->\s*(\w+))?$/.exec(what);
    const several = /^common\s*\(([\w\s,]+)\)$/.exec(what);
    if (!one && !several) {
      this.fail(`only Lark's common terminals can be imported (%import common.NAME), not ${what}`);
    }
    const names = one
      ? [[one[1]!, one[2] ?? one[1]!]]
      : several![1]!.split(",").map((n) => [n.trim(), n.trim()]);
    const library = commonTerminals();
    for (const [name, alias] of names) {
      const rule = library.get(name!);
      if (!rule) this.fail(`common has no terminal ${name}`);
      this.imported.push({ ...rule, name: alias! });
      for (const used of usedNames(rule.body, library)) {
        if (used !== name) this.imported.push(library.get(used)!);
      }
    }
  }

  private alternatives(): Expr {
    const options = [this.sequence()];
    for (;;) {
      this.skipBlank(this.depth > 0);
      // Alternatives go on where the next line starts with |.
      const next = /^[ \t]*(?:(?:\/\/|#)[^\r\n]*)?\r?\n(?:[ \t]*(?:(?:\/\/|#)[^\r\n]*)?\r?\n)*[ \t]*\|/.exec(
        this.text.slice(this.at, this.at + 4096),
      );
      if (next) this.at += next[0].length - 1;
      if (this.text[this.at] !== "|") break;
      this.at++;
      options.push(this.sequence());
    }
    return options.length === 1 ? options[0]! : { kind: "alt", options };
  }

  private sequence(): Expr {
    const items: Expr[] = [];
    for (;;) {
      this.skipBlank(this.depth > 0);
      const c = this.text[this.at];
      if (c === undefined || c === "|" || c === ")" || c === "]" || c === "\n" || c === "\r") break;
      if (this.text.startsWith("->", this.at)) {
        // An alias names the tree node; it says nothing about the strings.
        this.at += 2;
        this.skipBlank(false);
        if (!/^[A-Za-z_]/.test(this.text[this.at] ?? "")) this.fail("expected a name after ->");
        while (/[A-Za-z0-9_]/.test(this.text[this.at] ?? "")) this.at++;
        continue;
      }
      items.push(this.repetition(this.primary()));
    }
    return items.length === 1 ? items[0]! : { kind: "seq", items };
  }

  private primary(): Expr {
    const c = this.text[this.at]!;
    if (c === "(" || c === "[") {
      this.at++;
      this.depth++;
      const inner = this.alternatives();
      this.skipBlank(true);
      const close = c === "(" ? ")" : "]";
      if (this.text[this.at] !== close) this.fail(`expected ${close}`);
      this.at++;
      this.depth--;
      return c === "(" ? inner : { kind: "repeat", item: inner, min: 0, max: 1 };
    }
    if (c === '"') return this.lexeme(this.literalOrRange());
    if (c === "/") return this.lexeme(this.regex());
    if (c === "@" || c === "<" || c === "%") {
      this.fail(
        `${c === "%" ? "%json" : c === "@" ? "@rule references" : "special tokens <...>"} are not supported`,
      );
    }
    const start = this.at;
    const match = /^_?[A-Za-z][A-Za-z0-9_]*/.exec(this.text.slice(this.at, this.at + 256));
    if (!match) {
      if (c === "'") this.fail("strings are written in double quotes");
      this.fail(`unexpected ${JSON.stringify(c)}`);
    }
    this.at += match[0].length;
    if (this.text[this.at] === "{") this.fail(`templates such as ${match[0]}{...} are not supported`);
    const reference: Expr = { kind: "ref", name: match[0], offset: start };
    return isTerminalName(match[0]) ? this.lexeme(reference) : reference;
  }

  /** A lexeme of a rule, after a slot where %ignore may put something (fillLexemeSlots). */
  private lexeme(expr: Expr): Expr {
    return this.inTerminal ? expr : { kind: "seq", items: [ref(LEXEME_SLOT), expr] };
  }

  private repetition(item: Expr): Expr {
    for (;;) {
      this.skipBlank(false);
      const c = this.text[this.at];
      if (c === "*") item = { kind: "repeat", item, min: 0, max: Infinity };
      else if (c === "+") item = { kind: "repeat", item, min: 1, max: Infinity };
      else if (c === "?") item = { kind: "repeat", item, min: 0, max: 1 };
      else if (c === "~") {
        const bounds = /^~[ \t]*(\d+)(?:[ \t]*\.\.[ \t]*(\d+))?/.exec(this.text.slice(this.at, this.at + 40));
        if (!bounds) this.fail("expected ~ n or ~ n..m");
        const min = Number(bounds[1]);
        const max = bounds[2] === undefined ? min : Number(bounds[2]);
        if (min > max) this.fail(`~ ${min}..${max}: the least count is above the most`);
        if (max > MAX_REPEAT) this.fail(`a repetition's bounds may be at most ${MAX_REPEAT}`);
        item = { kind: "repeat", item, min, max };
        this.at += bounds[0].length - 1;
      } else return item;
      this.at++;
    }
  }

  /** "text", "text"i (any case), or "a".."z" (a range of single characters). */
  private literalOrRange(): Expr {
    const first = this.string();
    if (this.text[this.at] === "i" && !/[A-Za-z0-9_]/.test(this.text[this.at + 1] ?? "")) {
      this.at++;
      return { kind: "seq", items: first.map(anyCase) };
    }
    if (!this.text.startsWith("..", this.at)) return { kind: "literal", codes: first };
    this.at += 2;
    if (this.text[this.at] !== '"') this.fail('expected a string after .. ("a".."z")');
    const last = this.string();
    if (first.length !== 1 || last.length !== 1)
      this.fail('a range is written between single characters, "a".."z"');
    if (last[0]! < first[0]!) this.fail("a range's last character comes before its first");
    return { kind: "chars", ranges: [first[0]!, last[0]!] };
  }

  private string(): number[] {
    this.at++;
    const codes: number[] = [];
    for (;;) {
      const c = this.text[this.at];
      if (c === undefined || c === "\n") this.fail("the string is not closed");
      if (c === '"') break;
      const read = readCharacter(this.text, this.at);
      if (typeof read === "string") this.fail(read);
      codes.push(read.code);
      this.at = read.next;
    }
    this.at++;
    return codes;
  }

  /**
   * /pattern/flags as a lexeme (ECMAScript syntax, which Python's re shares for common patterns); the flags
   * i (either case) and s (`.` takes line breaks) are read, others refused.
   */
  private regex(): Expr {
    const start = this.at;
    this.at++;
    let pattern = "";
    for (;;) {
      const c = this.text[this.at];
      if (c === undefined || c === "\n") this.fail("the regex is not closed");
      if (c === "/") break;
      if (c === "\\" && this.text[this.at + 1] === "/") {
        pattern += "/";
        this.at += 2;
        continue;
      }
      pattern += c;
      this.at++;
      if (c === "\\") {
        pattern += this.text[this.at] ?? "";
        this.at++;
      }
    }
    this.at++;
    const flags = /^[a-z]*/.exec(this.text.slice(this.at))![0];
    const unsupported = flags.replace(/[is]/g, "");
    if (unsupported !== "")
      this.fail(`regex flag ${unsupported[0]} (/${pattern}/${flags}) is not supported; i and s are`);
    this.at += flags.length;
    try {
      const read = { ignoreCase: flags.includes("i"), dotAll: flags.includes("s") };
      return { kind: "lexeme", node: parseRegex(pattern, read), what: `regex /${pattern}/${flags}` };
    } catch (error) {
      if (error instanceof RegexSyntaxError) {
        throw new GrammarError(`${where(this.text, start)}: regex /${pattern}/: ${error.message}`);
      }
      throw error;
    }
  }

  /** A definition ends at a line break (or the end). */
  private endOfStatement(): void {
    this.skipBlank(false);
    if (this.at < this.text.length && this.text[this.at] !== "\n" && this.text[this.at] !== "\r") {
      this.fail(`unexpected ${JSON.stringify(this.text[this.at])}`);
    }
  }

  /** Spaces and comments, and line breaks where `lines` says they are blank too. */
  private skipBlank(lines: boolean): void {
    for (;;) {
      const c = this.text[this.at];
      if (c === " " || c === "\t" || (lines && (c === "\n" || c === "\r"))) this.at++;
      else if (c === "#" || (c === "/" && this.text[this.at + 1] === "/")) {
        while (this.at < this.text.length && this.text[this.at] !== "\n") this.at++;
      } else return;
    }
  }

  private fail(message: string): never {
    throw new GrammarError(`${where(this.text, this.at)}: ${message}`);
  }
}

/** Lark names terminals in uppercase (a leading _ hides one from the tree). */
function isTerminalName(name: string): boolean {
  return /^_?[A-Z][A-Z0-9_]*$/.test(name);
}

function ref(name: string): Expr {
  return { kind: "ref", name, offset: 0 };
}

/**
 * A rule's body with each lexeme read through the terminals and its slot filled: by the ignored rule, or by
 * nothing.
 */
function fillLexemeSlots(expr: Expr, filler: Expr | null, terminals: Terminals): Expr {
  switch (expr.kind) {
    case "seq": {
      const [slot, written] = expr.items;
      if (expr.items.length === 2 && slot!.kind === "ref" && slot!.name === LEXEME_SLOT) {
        const lexeme = terminals.lexeme(written!);
        return filler ? { kind: "seq", items: [filler, lexeme] } : lexeme;
      }
      return { kind: "seq", items: expr.items.map((e) => fillLexemeSlots(e, filler, terminals)) };
    }
    case "alt":
      return { kind: "alt", options: expr.options.map((e) => fillLexemeSlots(e, filler, terminals)) };
    case "repeat":
      return { ...expr, item: fillLexemeSlots(expr.item, filler, terminals) };
    default:
      return expr;
  }
}

/**
 * A grammar's terminals, each read once into the regex it stands for (the terminals it uses written in);
 * the same terminal is the same regex wherever it is used, so it compiles to one automaton.
 */
class Terminals {
  private readonly bodies = new Map<string, RuleText>();
  private readonly regexes = new Map<string, RegexNode>();
  private readonly reading = new Set<string>();

  constructor(
    definitions: RuleText[],
    private readonly text: string,
  ) {
    for (const definition of definitions) {
      if (this.bodies.has(definition.name)) {
        throw new GrammarError(
          `${where(text, definition.offset)}: terminal ${definition.name} is defined twice`,
        );
      }
      this.bodies.set(definition.name, definition);
    }
    // Every terminal must read as a regex, used or not, as Lark compiles them all.
    for (const definition of definitions) this.terminal(definition.name, definition.offset);
  }

  /** What a rule writes as one lexeme (a terminal, a string, a range, a regex). */
  lexeme(written: Expr): Expr {
    const what =
      written.kind === "ref"
        ? `terminal ${written.name}`
        : written.kind === "lexeme"
          ? written.what
          : written.kind === "literal"
            ? `string ${JSON.stringify(String.fromCodePoint(...written.codes))}`
            : "string";
    return { kind: "lexeme", node: this.regexOf(written), what };
  }

  private regexOf(expr: Expr): RegexNode {
    switch (expr.kind) {
      case "chars":
        return { t: "chars", ranges: expr.ranges };
      case "literal":
        return { t: "seq", items: expr.codes.map((c) => ({ t: "chars", ranges: [c, c] }) as RegexNode) };
      case "seq":
        return { t: "seq", items: expr.items.map((e) => this.regexOf(e)) };
      case "alt":
        return { t: "alt", options: expr.options.map((e) => this.regexOf(e)) };
      case "repeat":
        return { t: "repeat", body: this.regexOf(expr.item), min: expr.min, max: expr.max };
      case "lexeme":
        return expr.node;
      case "ref":
        return this.terminal(expr.name, expr.offset);
    }
  }

  private terminal(name: string, offset: number): RegexNode {
    const known = this.regexes.get(name);
    if (known) return known;
    // Only for a message: `where` reads the text up to the offset.
    const at = () => where(this.text, offset);
    if (!isTerminalName(name)) {
      throw new GrammarError(
        `${at()}: a terminal is made of strings, regexes and other terminals, not of rule ${name}`,
      );
    }
    const definition = this.bodies.get(name);
    if (!definition) throw new GrammarError(`${at()}: terminal ${name} is used but not defined`);
    if (this.reading.has(name)) {
      throw new GrammarError(
        `${at()}: terminal ${name} refers to itself; a terminal is a regular expression: ` +
          "write the repetition with * or +, or make it a rule (lowercase)",
      );
    }
    this.reading.add(name);
    const regex = this.regexOf(definition.body);
    this.reading.delete(name);
    this.regexes.set(name, regex);
    return regex;
  }
}

/** A letter in either case (a literal's i flag). */
function anyCase(code: number): Expr {
  const c = String.fromCodePoint(code);
  const other = [c.toLowerCase(), c.toUpperCase()]
    .filter((x) => [...x].length === 1)
    .map((x) => x.codePointAt(0)!)
    .filter((x) => x !== code);
  const codes = [...new Set([code, ...other])].sort((a, b) => a - b);
  return { kind: "chars", ranges: codes.flatMap((x) => [x, x]) };
}

/** The library's names `expr` uses, and what they use in turn. */
function usedNames(expr: Expr, library: Map<string, RuleText>, found = new Set<string>()): Set<string> {
  const visit = (e: Expr): void => {
    if (e.kind === "ref" && library.has(e.name) && !found.has(e.name)) {
      found.add(e.name);
      visit(library.get(e.name)!.body);
    } else if (e.kind === "seq") e.items.forEach(visit);
    else if (e.kind === "alt") e.options.forEach(visit);
    else if (e.kind === "repeat") visit(e.item);
  };
  visit(expr);
  return found;
}
