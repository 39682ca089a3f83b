// A string schema's `pattern` and `format` as one deterministic automaton over characters, built once per
// pattern: the JSON grammar moves a string's state by each character written and refuses one that leads to
// a state from which no string could end it, so a pattern never leaves the model stuck. A JSON Schema
// pattern is a search (it may match anywhere unless `^`/`$` anchor it); the terms keep that meaning.
import {
  MAX_CODE_POINT,
  parseRegex,
  type RegexFlags,
  type RegexNode,
  RegexSyntaxError,
} from "./regex-syntax.ts";
import { boundaries, type Term, TermBudgetError, Terms } from "./regex-terms.ts";
import { WRITABLE } from "./utf8-reader.ts";

/**
 * Most states one automaton may have, and most steps of work (derivatives, terms of unions) building it
 * may take. The gateway builds it too, to check a schema before accepting the request, so these bound
 * what one request's pattern can cost: about 0.1 s at worst on this project's CPUs. Every format takes
 * under 15,000 steps.
 */
export const MAX_AUTOMATON_STATES = 4_000;
export const MAX_WORK = 200_000;

export class PatternError extends Error {
  override readonly name = "PatternError";
}

export interface StringAutomaton {
  /**
   * Per state, its moves: [lo, hi, target, lo, hi, target, ...] ascending, only to live states (from which
   * an accepted end is reachable). A character not in any range cannot come next.
   */
  moves: Int32Array[];
  /** Per state: whether the string may end here. */
  accepting: Uint8Array;
  /** Per state: fewest characters still needed to reach an accepting state. */
  minRemaining: Int32Array;
  /** Per state: most characters that can still come before an end (Infinity past a loop). */
  maxRemaining: Float64Array;
  /**
   * Fewest and most characters the whole string may have, from a leading length lookahead such as
   * `^(?=.{1,253}$)`: counted beside the automaton, as minLength and maxLength are, rather than multiplying
   * its states by every length.
   */
  minLength: number;
  maxLength: number;
}

/** An automaton before its length window is known. */
type Moves = Omit<StringAutomaton, "minLength" | "maxLength">;

/** Whether the automaton takes `text` whole (its length window included). */
export function matchesWhole(automaton: StringAutomaton, text: string): boolean {
  let state = 0;
  let chars = 0;
  for (const c of text) {
    state = nextState(automaton, state, c.codePointAt(0)!);
    if (state < 0) return false;
    chars++;
  }
  return automaton.accepting[state] === 1 && chars >= automaton.minLength && chars <= automaton.maxLength;
}

/** The state a character leads to, or -1 when it cannot come next. */
export function nextState(automaton: StringAutomaton, state: number, c: number): number {
  const moves = automaton.moves[state]!;
  let lo = 0;
  let hi = moves.length / 3 - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (c < moves[3 * mid]!) hi = mid - 1;
    else if (c > moves[3 * mid + 1]!) lo = mid + 1;
    else return moves[3 * mid + 2]!;
  }
  return -1;
}

/**
 * Whether a string of `chars` characters so far, now in `state`, can still end with a length from min to
 * max.
 */
export function lengthFits(
  automaton: StringAutomaton,
  state: number,
  chars: number,
  min: number,
  max: number,
): boolean {
  return chars + automaton.minRemaining[state]! <= max && chars + automaton.maxRemaining[state]! >= min;
}

/**
 * Whether some writable character from lo to hi (a UTF-8 character whose first bytes are known) leads to a
 * state that `ok` accepts.
 */
export function someMoveInRange(
  automaton: StringAutomaton,
  state: number,
  lo: number,
  hi: number,
  ok: (target: number) => boolean,
): boolean {
  const moves = automaton.moves[state]!;
  for (let i = 0; i < moves.length; i += 3) {
    const from = Math.max(lo, moves[i]!);
    const to = Math.min(hi, moves[i + 1]!);
    if (from <= to && firstWritable(from, to) >= 0 && ok(moves[i + 2]!)) return true;
  }
  return false;
}

/** Each pattern's automaton, kept for the next schema that names it (schemas are compiled per request). */
const cache = new Map<string, StringAutomaton>();
const CACHE_SIZE = 256;

/**
 * The automaton of strings that match every one of `patterns` (ECMAScript syntax, searched as JSON
 * Schema reads `pattern`). Throws PatternError naming what is not supported, or when no writable string
 * can match.
 */
export function compilePatterns(patterns: readonly string[]): StringAutomaton {
  const what = `pattern ${patterns.map((p) => JSON.stringify(p)).join(" and ")}`;
  return cached(`search:${JSON.stringify(patterns)}`, what, () =>
    build(
      patterns.map((pattern) => parseRegex(pattern)),
      "search",
    ),
  );
}

/**
 * The automaton of strings that `pattern` matches whole, from their first character to their last (as
 * vLLM's structured outputs read a regex: `^` and `$` are implied). Throws as compilePatterns does.
 */
export function compileFullMatch(pattern: string, flags: RegexFlags = {}): StringAutomaton {
  const flagged = `${flags.ignoreCase ? "i" : ""}${flags.dotAll ? "s" : ""}`;
  return cached(
    `whole/${flagged}:${pattern}`,
    `regex ${JSON.stringify(pattern)}${flagged ? ` (flags ${flagged})` : ""}`,
    () => build([parseRegex(pattern, flags)], "whole"),
  );
}

/**
 * The automaton of the strings a regex already parsed matches whole (a Lark terminal, written as one by
 * lark-syntax.ts). Throws as compileFullMatch does, naming the regex `what`; its caller keeps it.
 */
export function compileNode(node: RegexNode, what: string): StringAutomaton {
  return checked(what, () => build([node], "whole"));
}

/** The regex that matches exactly one of `choices`, each taken literally (vLLM's structured outputs `choice`). */
export function choiceRegex(choices: readonly string[]): string {
  return choices.map((choice) => choice.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&")).join("|");
}

function cached(key: string, what: string, make: () => StringAutomaton): StringAutomaton {
  const known = cache.get(key);
  if (known) {
    cache.delete(key);
    cache.set(key, known);
    return known;
  }
  const automaton = checked(what, make);
  cache.set(key, automaton);
  if (cache.size > CACHE_SIZE) cache.delete(cache.keys().next().value!);
  return automaton;
}

/** The automaton `make` builds, its errors and an automaton no string can end named by `what`. */
function checked(what: string, make: () => StringAutomaton): StringAutomaton {
  let automaton: StringAutomaton;
  try {
    automaton = make();
  } catch (error) {
    if (error instanceof RegexSyntaxError || error instanceof PatternError) {
      throw new PatternError(`${what}: ${error.message}`);
    }
    if (error instanceof TermBudgetError) throw new PatternError(`${what}: too complex: ${error.message}`);
    throw error;
  }
  const { moves, minRemaining, maxRemaining, minLength, maxLength } = automaton;
  if (moves.length === 0 || minRemaining[0]! > maxLength || maxRemaining[0]! < minLength) {
    throw new PatternError(`${what}: no string that can be written matches it`);
  }
  return automaton;
}

/** A pattern found anywhere in the string (JSON Schema's `pattern`), or matching the whole of it. */
type Match = "search" | "whole";

function build(patterns: readonly RegexNode[], match: Match): StringAutomaton {
  const terms = new Terms(MAX_WORK);
  let minLength = 0;
  let maxLength = Number.POSITIVE_INFINITY;
  const parts = patterns.map((pattern) => {
    const { window, node } = withoutLengthLookahead(terms, pattern);
    minLength = Math.max(minLength, window.min);
    maxLength = Math.min(maxLength, window.max);
    const matched =
      match === "search" ? searchTerm(terms, node) : new Compiler(terms).compile(node, terms.empty, "start");
    return terms.and(matched, window.chars);
  });
  return { ...explore(terms, terms.and(...parts)), minLength, maxLength };
}

interface LengthWindow {
  min: number;
  max: number;
  /** What every character must be (the lookahead's class, repeated). */
  chars: Term;
}

/**
 * A pattern that begins `^(?=C{a,b}$)`, or `^(?=C{a,b}X$)` with X able to match nothing, read as: every
 * character in C and a length from a to b, then the rest of the pattern. With X that is exact; with one it
 * keeps only strings the lookahead accepts with X empty, some of its strings and never one outside it.
 */
function withoutLengthLookahead(terms: Terms, node: RegexNode): { window: LengthWindow; node: RegexNode } {
  const none = { window: { min: 0, max: Number.POSITIVE_INFINITY, chars: terms.anything }, node };
  if (node.t !== "seq" || node.items[0]?.t !== "start") return none;
  const look = node.items[1];
  if (look?.t !== "look" || look.negate || look.body.t !== "seq") return none;
  const [count, ...after] = look.body.items;
  if (count?.t !== "repeat" || count.body.t !== "chars" || after.at(-1)?.t !== "end") return none;
  if (!after.slice(0, -1).every((item) => canBeEmpty(item) && !hasAssertion(item))) return none;
  return {
    window: { min: count.min, max: count.max, chars: terms.star(terms.chars(count.body.ranges)) },
    node: { t: "seq", items: [node.items[0], ...node.items.slice(2)] },
  };
}

/** The strings in which `pattern` finds a match. */
function searchTerm(terms: Terms, pattern: RegexNode): Term {
  const compiler = new Compiler(terms);
  const rest = terms.anything;
  if (!hasStart(pattern)) return terms.cat(rest, compiler.compile(pattern, rest, "later"));
  // A match at the very start, where ^ holds, or after at least one character, where it cannot.
  return terms.or(
    compiler.compile(pattern, rest, "start"),
    terms.seq(terms.anyChar, rest, compiler.compile(pattern, rest, "later")),
  );
}

function hasStart(node: RegexNode): boolean {
  switch (node.t) {
    case "start":
      return true;
    case "seq":
      return node.items.some(hasStart);
    case "alt":
      return node.options.some(hasStart);
    case "repeat":
    case "look":
      return hasStart(node.body);
    default:
      return false;
  }
}

/** Whether the node holds an assertion (^, $, a lookahead): its meaning depends on what follows it. */
function hasAssertion(node: RegexNode): boolean {
  switch (node.t) {
    case "start":
    case "end":
    case "look":
      return true;
    case "seq":
      return node.items.some(hasAssertion);
    case "alt":
      return node.options.some(hasAssertion);
    case "repeat":
      return hasAssertion(node.body);
    default:
      return false;
  }
}

/** Whether the node can match a character at all, and whether it can match nothing. */
function consumes(node: RegexNode): boolean {
  switch (node.t) {
    case "chars":
      return true;
    case "seq":
      return node.items.some(consumes);
    case "alt":
      return node.options.some(consumes);
    case "repeat":
      return node.max > 0 && consumes(node.body);
    default:
      return false;
  }
}

function canBeEmpty(node: RegexNode): boolean {
  switch (node.t) {
    case "chars":
      return false;
    case "seq":
      return node.items.every(canBeEmpty);
    case "alt":
      return node.options.some(canBeEmpty);
    case "repeat":
      return node.min === 0 || canBeEmpty(node.body);
    default:
      return true;
  }
}

/** Where in the string a node starts: at its very start, surely after it, or either (where ^ is refused). */
type Position = "start" | "later" | "either";

class Compiler {
  constructor(private readonly terms: Terms) {}

  /**
   * The strings that `node` followed by `rest` matches, `rest` standing for everything after the node to
   * the end of the string: assertions read it (`$` asks that it match the empty string, a lookahead is
   * intersected with it).
   */
  compile(node: RegexNode, rest: Term, at: Position, inLookahead = false): Term {
    const { terms } = this;
    switch (node.t) {
      case "chars":
        return terms.cat(terms.chars(node.ranges), rest);
      case "seq":
        return this.sequence(node.items, 0, rest, at, inLookahead);
      case "alt":
        return terms.or(...node.options.map((option) => this.compile(option, rest, at, inLookahead)));
      case "start":
        if (inLookahead) throw new PatternError("^ inside a lookahead is not supported");
        if (at === "either") throw new PatternError("^ is supported only where nothing can come before it");
        return at === "start" ? rest : terms.none;
      case "end":
        return rest.nullable ? terms.empty : terms.none;
      case "look": {
        const body = this.compile(node.body, terms.anything, at, true);
        return terms.and(node.negate ? terms.not(body) : body, rest);
      }
      case "repeat":
        if (!hasAssertion(node.body)) {
          const body = this.compile(node.body, terms.empty, at, inLookahead);
          return terms.cat(terms.repeat(body, node.min, node.max), rest);
        }
        if (node.max === Number.POSITIVE_INFINITY) {
          throw new PatternError(
            "an anchor or lookahead inside a group repeated without limit is not supported",
          );
        }
        return this.repeated(node.body, node.min, node.max, rest, at, inLookahead);
    }
  }

  private sequence(items: RegexNode[], i: number, rest: Term, at: Position, inLookahead: boolean): Term {
    if (i === items.length) return rest;
    const item = items[i]!;
    const after = this.sequence(items, i + 1, rest, advanced(item, at), inLookahead);
    return this.compile(item, after, at, inLookahead);
  }

  /** A bounded repeat of a body with assertions, unrolled so that each copy sees what follows it. */
  private repeated(
    body: RegexNode,
    min: number,
    max: number,
    rest: Term,
    at: Position,
    inLookahead: boolean,
  ): Term {
    if (max === 0) return rest;
    const more = this.repeated(body, Math.max(0, min - 1), max - 1, rest, advanced(body, at), inLookahead);
    const once = this.compile(body, more, at, inLookahead);
    return min > 0 ? once : this.terms.or(rest, once);
  }
}

/** Where the next node starts after `node`, which started at `at`. */
function advanced(node: RegexNode, at: Position): Position {
  if (!consumes(node) || at === "later") return at;
  return canBeEmpty(node) ? "either" : "later";
}

/** Builds every state reachable from `start` over writable characters, keeping only live ones. */
function explore(terms: Terms, start: Term): Moves {
  const index = new Map<Term, number>([[start, 0]]);
  const states: Term[] = [start];
  const rawMoves: number[][] = [];
  for (let s = 0; s < states.length; s++) {
    const term = states[s]!;
    const points = boundaries(term);
    const moves: number[] = [];
    for (let i = 0; i < points.length; i++) {
      const lo = points[i]!;
      const hi = i + 1 < points.length ? points[i + 1]! - 1 : MAX_CODE_POINT;
      const sample = firstWritable(lo, hi);
      if (sample < 0) continue;
      const next = terms.derivative(term, sample);
      if (next.kind === "none") continue;
      let target = index.get(next);
      if (target === undefined) {
        if (states.length >= MAX_AUTOMATON_STATES) {
          throw new PatternError(`too complex: more than ${MAX_AUTOMATON_STATES} automaton states`);
        }
        target = states.length;
        index.set(next, target);
        states.push(next);
      }
      moves.push(lo, hi, target);
    }
    rawMoves.push(moves);
  }
  return prune(
    rawMoves,
    states.map((t) => t.nullable),
  );
}

/** The first writable character from lo to hi, or -1. */
function firstWritable(lo: number, hi: number): number {
  for (let i = 0; i < WRITABLE.length; i += 2) {
    const from = Math.max(lo, WRITABLE[i]!);
    if (from <= Math.min(hi, WRITABLE[i + 1]!)) return from;
  }
  return -1;
}

/**
 * Keeps the states from which an accepting one is reachable (renumbered, the start first; none when the
 * start is not live), with their distances to an end.
 */
function prune(rawMoves: number[][], nullable: boolean[]): Moves {
  const n = rawMoves.length;
  const incoming: number[][] = Array.from({ length: n }, () => []);
  rawMoves.forEach((moves, s) => {
    for (let i = 2; i < moves.length; i += 3) incoming[moves[i]!]!.push(s);
  });
  // Fewest characters to an end, by a breadth-first walk backwards from the accepting states.
  const distance = new Array<number>(n).fill(-1);
  const queue: number[] = [];
  nullable.forEach((ok, s) => {
    if (ok) {
      distance[s] = 0;
      queue.push(s);
    }
  });
  for (let q = 0; q < queue.length; q++) {
    for (const from of incoming[queue[q]!]!) {
      if (distance[from] === -1) {
        distance[from] = distance[queue[q]!]! + 1;
        queue.push(from);
      }
    }
  }
  if (distance[0] === -1) {
    return {
      moves: [],
      accepting: new Uint8Array(0),
      minRemaining: new Int32Array(0),
      maxRemaining: new Float64Array(0),
    };
  }
  const renumber = new Array<number>(n).fill(-1);
  let live = 0;
  for (let s = 0; s < n; s++) if (distance[s]! >= 0) renumber[s] = live++;
  const moves: Int32Array[] = [];
  const accepting = new Uint8Array(live);
  const minRemaining = new Int32Array(live);
  for (let s = 0; s < n; s++) {
    const to = renumber[s]!;
    if (to < 0) continue;
    const kept: number[] = [];
    const raw = rawMoves[s]!;
    for (let i = 0; i < raw.length; i += 3) {
      const target = renumber[raw[i + 2]!]!;
      if (target < 0) continue;
      // Neighbouring ranges that lead to the same state are one range.
      if (kept.length > 0 && kept[kept.length - 1] === target && kept[kept.length - 2]! + 1 === raw[i]!) {
        kept[kept.length - 2] = raw[i + 1]!;
      } else kept.push(raw[i]!, raw[i + 1]!, target);
    }
    moves[to] = Int32Array.from(kept);
    accepting[to] = nullable[s] ? 1 : 0;
    minRemaining[to] = distance[s]!;
  }
  return { moves, accepting, minRemaining, maxRemaining: longestToEnd(moves) };
}

/** Per state, the most characters that can still come before the string ends; Infinity where a loop is reachable. */
function longestToEnd(moves: Int32Array[]): Float64Array {
  const longest = new Float64Array(moves.length).fill(-1);
  const onPath = new Uint8Array(moves.length);
  // Iterative depth-first walk: a pattern such as [a-z]{1000} is a chain of a thousand states.
  const visit = (root: number) => {
    const stack: { state: number; next: number; best: number }[] = [{ state: root, next: 0, best: 0 }];
    onPath[root] = 1;
    while (stack.length > 0) {
      const frame = stack[stack.length - 1]!;
      const own = moves[frame.state]!;
      if (frame.next < own.length) {
        const target = own[frame.next + 2]!;
        frame.next += 3;
        if (onPath[target]) frame.best = Number.POSITIVE_INFINITY;
        else if (longest[target]! >= 0) frame.best = Math.max(frame.best, longest[target]! + 1);
        else {
          onPath[target] = 1;
          stack.push({ state: target, next: 0, best: 0 });
        }
        continue;
      }
      stack.pop();
      onPath[frame.state] = 0;
      longest[frame.state] = frame.best;
      const parent = stack[stack.length - 1];
      if (parent) parent.best = Math.max(parent.best, frame.best + 1);
    }
  };
  for (let s = 0; s < moves.length; s++) if (longest[s]! < 0) visit(s);
  return longest;
}
