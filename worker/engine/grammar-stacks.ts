// The pushdown recognizer of a compiled grammar (grammar-compiler.ts), read one character at a time, as
// llama.cpp runs its GBNF: where the output stands is a set of stacks, each a path of positions through
// the rules, its top at the character class the next character must match. A character moves every stack
// whose top class holds it one element on; a rule reference at the top is replaced by each of its
// alternatives (the continuation below them), and a finished alternative returns to the position below.
// A reference that is the last element of its alternative returns nowhere, so `r ::= x r` runs as a loop:
// the stack does not grow with the repetitions. A guard (a lexeme's longest match, grammar-rules.ts GUARD)
// reads nothing: the stacks reached past it wait for a character outside its class, and say so.
//
// Stacks and stack sets are interned per grammar: the same stack is one object, a set is named by its
// stacks, and each set remembers where every character it was asked about leads, so the vocabulary's
// trie walk (grammar-mode.ts) meets most transitions already made.
import { END, type Grammar, GrammarError, GUARD } from "./grammar-rules.ts";
import { normalizeRanges } from "./regex-syntax.ts";

/** One stack: a position in `Grammar.elements` over the rest of the stack (null at the bottom). */
export interface StackNode {
  readonly id: number;
  readonly position: number;
  readonly below: StackNode | null;
  /** The fewest characters that empty this stack. */
  readonly fewest: number;
  readonly depth: number;
  /** Characters the top may not take, though its class holds them: a guard passed on the way here. */
  readonly excluded: Exclusion | null;
}

/** Characters a stack's next one may not be, interned per grammar. */
interface Exclusion {
  readonly id: number;
  /** Sorted, disjoint [first, last] pairs. */
  readonly ranges: Int32Array;
}

/** Where the output stands: the stacks whose top waits for a character, and whether it may end here. */
export interface StackSet {
  readonly id: number;
  /** The stacks, each topped by a character class; sorted by id. */
  readonly stacks: readonly StackNode[];
  /** The output so far is a whole string of the grammar. */
  readonly accepted: boolean;
  /** The fewest characters that complete the output (0 where accepted). */
  readonly fewest: number;
  /** Where each character asked about leads; null where no stack takes it. */
  readonly next: Map<number, StackSet | null>;
}

/** Deepest stack kept: an output nested deeper than this is not followed (the path is dropped). */
const MAX_DEPTH = 2_000;
/**
 * Most stacks one set may hold (a grammar of 10,000 alternative words opens 10,000 at its start): a
 * grammar that ambiguous is refused while it runs.
 */
const MAX_STACKS = 100_000;
/**
 * Interned stacks and sets per grammar before the tables are started afresh (live sets keep their
 * objects): bounds what one grammar holds in a long-running worker to some tens of megabytes.
 */
const MAX_INTERNED = 200_000;

/** Per grammar, its interned stacks, sets and exclusions, and its start. */
interface Interned {
  nodes: Map<string, StackNode>;
  sets: Map<string, StackSet>;
  exclusions: Map<string, Exclusion>;
  start: StackSet | null;
}

const interned = new WeakMap<Grammar, Interned>();
let nextId = 1;

/** The recognizer's start: the stacks of root's alternatives. Throws GrammarError where it is too ambiguous. */
export function startOf(grammar: Grammar): StackSet {
  const tables = tablesOf(grammar);
  if (tables.start) return tables.start;
  const closure = new Closure(grammar, tables);
  for (const alternative of grammar.alternatives[0]!) closure.expand(closure.node(alternative, null), null);
  tables.start = closure.set();
  return tables.start;
}

/**
 * The set after one more character, or null where the grammar refuses it there. Throws GrammarError where
 * the grammar is too ambiguous.
 */
export function advance(grammar: Grammar, from: StackSet, code: number): StackSet | null {
  const known = from.next.get(code);
  if (known !== undefined) return known;
  const closure = new Closure(grammar, tablesOf(grammar));
  for (const stack of from.stacks) {
    if (
      inClass(grammar.classes[-2 - grammar.elements[stack.position]!]!, code) &&
      !(stack.excluded && inClass(stack.excluded.ranges, code))
    ) {
      closure.expand(closure.node(stack.position + 1, stack.below), null);
    }
  }
  const to = closure.empty ? null : closure.set();
  from.next.set(code, to);
  return to;
}

/** Whether `text` is a whole string of the grammar. */
export function acceptsWhole(grammar: Grammar, text: string): boolean {
  let set: StackSet | null = startOf(grammar);
  for (const c of text) {
    set = advance(grammar, set, c.codePointAt(0)!);
    if (!set) return false;
  }
  return set.accepted;
}

/**
 * Whether some stack of the set takes a writable character in [first, last], the code points a
 * multi-byte character whose first bytes are read may become (so first ≥ 0x80, where only surrogates are
 * not writable).
 */
export function takesSomeIn(grammar: Grammar, set: StackSet, first: number, last: number): boolean {
  for (const stack of set.stacks) {
    const ranges = grammar.classes[-2 - grammar.elements[stack.position]!]!;
    for (let i = 0; i < ranges.length; i += 2) {
      const from = Math.max(first, ranges[i]!);
      const to = Math.min(last, ranges[i + 1]!);
      if (from <= to && someOutside(from, to, stack.excluded)) return true;
    }
  }
  return false;
}

/** Whether some code point of a class is neither a surrogate nor excluded. */
function someOfClassOutside(ranges: Int32Array, excluded: Exclusion): boolean {
  for (let i = 0; i < ranges.length; i += 2)
    if (someOutside(ranges[i]!, ranges[i + 1]!, excluded)) return true;
  return false;
}

/** Whether some code point from `from` to `to` is neither a surrogate nor excluded. */
function someOutside(from: number, to: number, excluded: Exclusion | null): boolean {
  if (!excluded) return !(from >= 0xd800 && to <= 0xdfff);
  const holes = [0xd800, 0xdfff, ...excluded.ranges];
  for (let c = from; c <= to; ) {
    const hole = holeAt(holes, c);
    if (hole < 0) return true;
    c = hole + 1;
  }
  return false;
}

/** The last code point of the hole (a [first, last] pair of `holes`) that holds `c`, or -1. */
function holeAt(holes: readonly number[], c: number): number {
  for (let i = 0; i < holes.length; i += 2) if (c >= holes[i]! && c <= holes[i + 1]!) return holes[i + 1]!;
  return -1;
}

function inClass(ranges: Int32Array, code: number): boolean {
  for (let i = 0; i < ranges.length; i += 2) {
    if (code < ranges[i]!) return false;
    if (code <= ranges[i + 1]!) return true;
  }
  return false;
}

function tablesOf(grammar: Grammar): Interned {
  let tables = interned.get(grammar);
  if (!tables || tables.nodes.size + tables.sets.size > MAX_INTERNED) {
    tables = {
      nodes: new Map(),
      sets: new Map(),
      exclusions: new Map(),
      start: tables?.start ?? null,
    };
    interned.set(grammar, tables);
  }
  return tables;
}

/** The stacks reached from some positions before the next character: rule references expanded, ends popped. */
class Closure {
  private readonly ready = new Map<number, StackNode>();
  private readonly seen = new Set<string>();
  private accepted = false;

  constructor(
    private readonly grammar: Grammar,
    private readonly tables: Interned,
  ) {}

  get empty(): boolean {
    return this.ready.size === 0 && !this.accepted;
  }

  /** The interned stack `position` over `below`; undefined where it would pass the deepest kept. */
  node(position: number, below: StackNode | null, excluded: Exclusion | null = null): StackNode | undefined {
    const depth = (below?.depth ?? 0) + 1;
    if (depth > MAX_DEPTH) return undefined;
    const key = `${position}:${below?.id ?? 0}${excluded ? `!${excluded.id}` : ""}`;
    let node = this.tables.nodes.get(key);
    if (!node) {
      node = {
        id: nextId++,
        position,
        below,
        fewest: this.grammar.fewestToEnd[position]! + (below?.fewest ?? 0),
        depth,
        excluded,
      };
      this.tables.nodes.set(key, node);
    }
    return node;
  }

  /**
   * Follows a stack until its top waits for a character (or it empties: the output may end), the next
   * character kept out of `excluded` where a guard was passed.
   */
  expand(stack: StackNode | null | undefined, excluded: Exclusion | null): void {
    if (stack === undefined) return;
    if (stack === null) {
      this.accepted = true;
      return;
    }
    const key = excluded ? `${stack.id}!${excluded.id}` : `${stack.id}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    const { elements, alternatives, classes } = this.grammar;
    const element = elements[stack.position]!;
    if (element === END) {
      this.expand(stack.below, excluded);
      return;
    }
    if (element >= GUARD) {
      const guarded = this.exclusion(classes[element - GUARD]!, excluded);
      this.expand(this.node(stack.position + 1, stack.below), guarded);
      return;
    }
    if (element < 0) {
      // A class every character of which is excluded leaves nothing this stack could read.
      if (excluded && !someOfClassOutside(classes[-2 - element]!, excluded)) return;
      const ready = excluded ? this.node(stack.position, stack.below, excluded)! : stack;
      this.ready.set(ready.id, ready);
      if (this.ready.size > MAX_STACKS) {
        throw new GrammarError(
          `more than ${MAX_STACKS} parses are open at once; make the grammar less ambiguous`,
        );
      }
      return;
    }
    // A reference in last place returns straight to the stack below (a loop, not a deeper stack).
    const after = stack.position + 1;
    const below = elements[after] === END ? stack.below : this.node(after, stack.below);
    if (below === undefined) return;
    for (const alternative of alternatives[element]!) this.expand(this.node(alternative, below), excluded);
  }

  /** The interned exclusion of the characters in `ranges` and in `also`. */
  private exclusion(ranges: Int32Array, also: Exclusion | null): Exclusion {
    const joined = also ? normalizeRanges([...also.ranges, ...ranges]) : ranges;
    const key = joined.join(",");
    let exclusion = this.tables.exclusions.get(key);
    if (!exclusion) {
      exclusion = { id: nextId++, ranges: Int32Array.from(joined) };
      this.tables.exclusions.set(key, exclusion);
    }
    return exclusion;
  }

  /** The interned set of the stacks reached. */
  set(): StackSet {
    const stacks = [...this.ready.values()].sort((a, b) => a.id - b.id);
    const key = `${this.accepted ? "a" : ""}${stacks.map((s) => s.id).join(",")}`;
    let set = this.tables.sets.get(key);
    if (!set) {
      let fewest = this.accepted ? 0 : Number.POSITIVE_INFINITY;
      for (const s of stacks) fewest = Math.min(fewest, s.fewest);
      set = { id: nextId++, stacks, accepted: this.accepted, fewest, next: new Map() };
      this.tables.sets.set(key, set);
    }
    return set;
  }
}
