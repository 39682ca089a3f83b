// A sequence whose whole output must be a string of a context-free grammar (vLLM's structured outputs
// `grammar`, grammar-compiler.ts): before each draw, every token whose bytes could not continue such a string
// gets a logit of -inf. A stop token may be drawn once the output is a whole string of the grammar (and
// min_tokens allows it); where nothing can follow, the sequence ends by itself. Near the end of its token
// budget only tokens after which the output can still be completed in time are kept. As regex-mode.ts
// does for a regex, with the grammar's pushdown recognizer (grammar-stacks.ts) in place of an automaton.
//
// Which tokens a set of stacks allows depends on the set alone (between characters), so the table is
// built once per set by walking the vocabulary's trie and kept; a grammar's outputs pass through few
// distinct sets where its nesting repeats.
import { maskByCost } from "./cost-mask.ts";
import type { Grammar } from "./grammar-rules.ts";
import { advance, type StackSet, startOf, takesSomeIn } from "./grammar-stacks.ts";
import { type TokenTrie, type TrieNode, tokenCosts, tokenTrie } from "./token-trie.ts";
import type { Tokenizer } from "./tokenizer.ts";
import { BETWEEN_CHARACTERS, type PartialCharacter, readByte, writable } from "./utf8-reader.ts";

/** Where the output stands: the recognizer's stacks, and a character half read. */
interface Cursor {
  set: StackSet;
  partial: PartialCharacter;
}

/** Most stack sets whose token table is kept per vocabulary (each holds a number per token). */
const MAX_TABLES = 128;

/** Per vocabulary, per stack set met so far: each token's cost after it, -1 where it is refused. */
const tables = new WeakMap<TokenTrie, Map<StackSet, Int32Array>>();

export class GrammarMode {
  private cursor: Cursor;
  private masked = new Float32Array(0);

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly grammar: Grammar,
    /** The sequence's stop tokens: drawn only where the output is whole and `mayStop` says so. */
    private readonly stopIds: readonly number[],
    /** False while min_tokens holds the stop tokens off. */
    private readonly mayStop: () => boolean,
  ) {
    this.cursor = { set: startOf(grammar), partial: BETWEEN_CHARACTERS };
  }

  /** The output is a whole string of the grammar and nothing can follow: the sequence ends. */
  get complete(): boolean {
    return this.whole && this.cursor.set.stacks.length === 0;
  }

  /** The fewest characters (so at worst bytes, and tokens) that complete the output. */
  get fewestBytesToEnd(): number {
    return fewestAfter(this.cursor);
  }

  /**
   * The logits with every token that cannot come next at -inf (a copy). With `budget`, the tokens the
   * sequence may still draw, this one included, a token is kept only if the output can be completed in
   * the tokens left after it; where none can, every token the grammar takes is kept. Throws when no token
   * of the vocabulary can continue the output.
   */
  mask(logits: Float32Array, budget = Number.POSITIVE_INFINITY): Float32Array {
    if (this.masked.length !== logits.length) this.masked = new Float32Array(logits.length);
    const cost = this.table(logits.length);
    const whole = this.whole && this.mayStop();
    return maskByCost(logits, this.masked, cost, budget, whole, this.stopIds, "grammar");
  }

  /** Takes a drawn token that is not a stop token (one mask() allowed). */
  take(token: number): void {
    let cursor: Cursor | null = this.cursor;
    for (const b of this.tokenizer.tokenBytes(token)) cursor = cursor && this.step(cursor, b);
    if (!cursor) throw new RangeError(`token ${token} does not continue the grammar`);
    this.cursor = cursor;
  }

  /** The output so far is a whole string of the grammar. */
  private get whole(): boolean {
    return this.cursor.partial.need === 0 && this.cursor.set.accepted;
  }

  /** Each token's cost from here: built once per stack set between characters and kept. */
  private table(size: number): Int32Array {
    const trie = tokenTrie(this.tokenizer, size);
    const { cursor } = this;
    if (cursor.partial.need > 0) return this.walk(trie.root, size, cursor);
    let bySet = tables.get(trie);
    if (!bySet) {
      bySet = new Map();
      tables.set(trie, bySet);
    }
    let table = bySet.get(cursor.set);
    if (!table) {
      table = this.walk(trie.root, size, cursor);
      if (bySet.size >= MAX_TABLES) bySet.delete(bySet.keys().next().value!);
      bySet.set(cursor.set, table);
    }
    return table;
  }

  /**
   * Each token's cost from `from`: the fewest characters after it that complete the output (one more for a
   * half-read character), -1 where refused.
   */
  private walk(root: TrieNode, size: number, from: Cursor): Int32Array {
    return tokenCosts(root, size, from, (at, b) => this.step(at, b), fewestAfter);
  }

  /** The cursor after one more byte, or null where the grammar refuses it. */
  private step(at: Cursor, b: number): Cursor | null {
    const read = readByte(at.partial, b);
    if (read === null) return null;
    if ("code" in read) {
      if (!writable(read.code)) return null;
      const set = advance(this.grammar, at.set, read.code);
      return set && { set, partial: BETWEEN_CHARACTERS };
    }
    return takesSomeIn(this.grammar, at.set, read.first, read.last)
      ? { set: at.set, partial: read.partial }
      : null;
  }
}

/** The fewest characters that complete the output from `at`. */
function fewestAfter(at: Cursor): number {
  return at.partial.need + at.set.fewest;
}
