// Compiles a grammar — EBNF (ebnf-syntax.ts) or Lark (lark-syntax.ts) — to flat alternatives whose elements
// are a character class or another rule, the form the pushdown recognizer (grammar-stacks.ts) walks:
// groups and repetitions become rules of their own (`x*` is `r ::= x r | ""`, which the recognizer runs as
// a loop, not a growing stack), a lexeme's automaton a rule per state, guarded so that it ends only where
// its longest match does. Checked here, so a request is
// refused before anything runs: every rule used is defined, each rule can end, and none is left-recursive
// (`expr ::= expr "+" term` never consumes a character before calling itself; write `term ("+" term)*`).
import { isEbnf, parseEbnf } from "./ebnf-syntax.ts";
import {
  END,
  type Expr,
  type Grammar,
  GrammarError,
  GUARD,
  type ParsedGrammar,
  type RuleText,
  where,
} from "./grammar-rules.ts";
import { parseLark } from "./lark-syntax.ts";
import { normalizeRanges, type RegexNode } from "./regex-syntax.ts";
import { compileNode, PatternError } from "./string-automaton.ts";

/** Longest grammar text accepted. */
export const MAX_GRAMMAR_CHARS = 65_536;
/** Most elements a compiled grammar may hold (repetitions counted as written out). */
const MAX_ELEMENTS = 200_000;

/** A grammar's syntax; "detect": EBNF where a line starts a rule with `::=`, else Lark (as vLLM reads it). */
export type GrammarSyntax = "ebnf" | "lark" | "detect";

/** The grammar of `text`, compiled and checked; the same text again is served from a cache. */
export function compileGrammar(text: string, syntax: GrammarSyntax = "detect"): Grammar {
  const key = `${syntax}:${text}`;
  const known = cache.get(key);
  if (known) {
    cache.delete(key);
    cache.set(key, known);
    return known;
  }
  if (text.length > MAX_GRAMMAR_CHARS) {
    throw new GrammarError(`a grammar may have at most ${MAX_GRAMMAR_CHARS} characters`);
  }
  let grammar: Grammar;
  try {
    const ebnf = syntax === "ebnf" || (syntax === "detect" && isEbnf(text));
    grammar = new Compiler(ebnf ? parseEbnf(text) : parseLark(text), text).grammar();
  } catch (error) {
    // The parser and the checks recurse as deep as the grammar nests.
    if (error instanceof RangeError) throw new GrammarError("the grammar nests too deeply");
    throw error;
  }
  cache.set(key, grammar);
  if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return grammar;
}

const cache = new Map<string, Grammar>();
const CACHE_SIZE = 64;

/** From the parsed rules to flat alternatives, then the checks. */
class Compiler {
  private readonly names: string[] = [];
  private readonly index = new Map<string, number>();
  /** Per rule, its alternatives as element lists. */
  private readonly bodies: number[][][] = [];
  private readonly classes: Int32Array[] = [];
  private readonly classIndex = new Map<string, number>();
  private elementCount = 0;

  /** Per lexeme met (the same terminal is one node wherever it is used), its start state's rule. */
  private readonly lexemes = new Map<RegexNode, number>();
  private readonly parsed: RuleText[];

  constructor(
    grammar: ParsedGrammar,
    private readonly text: string,
  ) {
    this.parsed = grammar.rules;
    this.start = grammar.start;
  }

  private readonly start: string;

  grammar(): Grammar {
    const start = this.parsed.find((r) => r.name === this.start);
    if (!start) {
      throw new GrammarError(`the grammar has no ${this.start} rule: the whole output is ${this.start}`);
    }
    // The start first, then the others in order, so a rule's index is known before any body refers to it.
    for (const rule of [start, ...this.parsed.filter((r) => r !== start)]) {
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
        case "lexeme": {
          // A fixed string (or one class per character, "select"i) can end only at its last character,
          // where it moves on nothing: its classes go in the row itself, with no automaton and no guard.
          const chain = classChain(e.node);
          if (chain) for (const ranges of chain) out.push(this.charClass(ranges));
          else out.push(this.element(e, owner));
          return;
        }
        default:
          out.push(this.element(e, owner));
      }
    };
    add(expr);
    this.written(out.length + 1);
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
      case "lexeme":
        // A fixed string is its classes in a row, as a literal is (sequenceOf says why it needs no guard).
        if (classChain(expr.node)) return this.helperRule(owner, [this.sequenceOf(expr, owner)]);
        return this.lexemeRule(expr.node, expr.what, owner);
    }
  }

  /**
   * A lexeme's automaton as rules, one per state: `s ::= [range] t | ... | end`, each move's target in last
   * place, so reading runs as a loop. Where the state accepts, `end` lets the lexeme end: a guard that
   * refuses the characters the state moves on (longest match), or nothing where it moves on none.
   */
  private lexemeRule(node: RegexNode, what: string, owner: string): number {
    const known = this.lexemes.get(node);
    if (known !== undefined) return known;
    let automaton: ReturnType<typeof compileNode>;
    try {
      automaton = compileNode(node, what);
    } catch (error) {
      if (error instanceof PatternError) throw new GrammarError(`rule ${owner}: ${error.message}`);
      throw error;
    }
    if (automaton.minLength > 0 || automaton.maxLength !== Number.POSITIVE_INFINITY) {
      throw new GrammarError(
        `rule ${owner}: a regex's length lookahead such as (?=.{1,9}$) is not supported`,
      );
    }
    const states = automaton.moves.map(() => this.helperRule(owner, []));
    for (const [state, moves] of automaton.moves.entries()) {
      const alternatives: number[][] = [];
      const onward: number[] = [];
      for (let i = 0; i < moves.length; i += 3) {
        alternatives.push([this.charClass([moves[i]!, moves[i + 1]!]), states[moves[i + 2]!]!]);
        onward.push(moves[i]!, moves[i + 1]!);
      }
      if (automaton.accepting[state] === 1) {
        alternatives.push(onward.length === 0 ? [] : [this.guard(onward)]);
      }
      this.bodies[states[state]!] = alternatives;
      this.written(3 * alternatives.length);
    }
    this.lexemes.set(node, states[0]!);
    return states[0]!;
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
    this.written(body.length + 2 * (max === Infinity ? 2 : max - min));
    return this.helperRule(owner, [body]);
  }

  /** Counts elements written out; refuses a grammar past MAX_ELEMENTS. */
  private written(elements: number): void {
    this.elementCount += elements;
    if (this.elementCount > MAX_ELEMENTS) {
      throw new GrammarError(`the grammar is too large: more than ${MAX_ELEMENTS} elements written out`);
    }
  }

  /** A guard refusing the characters in `ranges` (sorted [lo, hi] pairs). */
  private guard(ranges: readonly number[]): number {
    return GUARD + (-2 - this.charClass(normalizeRanges(ranges)));
  }

  private charClass(ranges: readonly number[]): number {
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
    const cost = (e: number): number => elementCost(e, fewest);
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
          if (e >= GUARD) continue;
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
              'write left recursion as a repetition: term ("+" term)* rather than expr "+" term',
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
          const costs = alternative.map((e) => elementCost(e, fewest));
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

/** The fewest characters an element reads: one for a class, none for a guard, a rule's fewest. */
function elementCost(element: number, fewest: readonly number[]): number {
  if (element < 0) return 1;
  return element >= GUARD ? 0 : fewest[element]!;
}

/** The classes of a regex that is one class per character in a row, or null. */
function classChain(node: RegexNode): (readonly number[])[] | null {
  if (node.t === "chars") return [node.ranges];
  if (node.t !== "seq" || node.items.length === 0) return null;
  const chain: (readonly number[])[] = [];
  for (const item of node.items) {
    if (item.t !== "chars") return null;
    chain.push(item.ranges);
  }
  return chain;
}
