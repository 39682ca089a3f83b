// A sequence whose whole output must match a regex (vLLM's structured outputs: `choice`, one of a list of
// strings, is the regex of their alternation): before each draw, every token whose bytes could not continue
// a match gets a logit of -inf, so the sampler draws only among tokens that keep the output matchable. A
// stop token may be drawn once the output matches (and min_tokens allows it); where nothing can follow a
// match, the sequence ends by itself. Near the end of its token budget only tokens after which a match can
// still be reached in time are kept, so the output ends matched rather than cut off. Special tokens are
// never text. Like JSON mode this needs the whole row of logits each step.
//
// The regex's automaton reads characters (string-automaton.ts, compileFullMatch); tokens are bytes, and a
// byte-level vocabulary splits a multi-byte character across tokens, so a token may end inside one: its
// first bytes are taken when some character they can begin leads on.

import { maskByCost } from "./cost-mask.ts";
import { lengthFits, nextState, type StringAutomaton, someMoveInRange } from "./string-automaton.ts";
import { type TokenTrie, type TrieNode, tokenCosts, tokenTrie } from "./token-trie.ts";
import type { Tokenizer } from "./tokenizer.ts";
import { type PartialCharacter, readByte, writable } from "./utf8-reader.ts";

/** Where the output stands: an automaton state, its length in characters, and a character half read. */
interface Cursor extends PartialCharacter {
  state: number;
  chars: number;
}

const START: Cursor = { state: 0, chars: 0, need: 0, bits: 0, least: 0 };

/** Most automaton states whose token table a pattern keeps (each holds two numbers per token). */
const MAX_TABLES = 128;

/**
 * Per vocabulary and automaton, the tables of the states met so far (shared by every sequence): per token,
 * the fewest characters after it to a match (one more for a half-read character), -1 where it is refused.
 */
const tables = new WeakMap<TokenTrie, WeakMap<StringAutomaton, Map<number, Int32Array>>>();

export class RegexMode {
  private cursor: Cursor = START;
  private masked = new Float32Array(0);

  constructor(
    private readonly tokenizer: Tokenizer,
    private readonly automaton: StringAutomaton,
    /** The sequence's stop tokens: drawn only where the output matches and `mayStop` says so. */
    private readonly stopIds: readonly number[],
    /** False while min_tokens holds the stop tokens off. */
    private readonly mayStop: () => boolean,
  ) {}

  /** The output matches and nothing can follow: the sequence ends. */
  get complete(): boolean {
    const { state, chars, need } = this.cursor;
    const { automaton } = this;
    if (need > 0 || automaton.accepting[state] !== 1 || chars < automaton.minLength) return false;
    return automaton.moves[state]!.length === 0 || chars >= automaton.maxLength;
  }

  /** The fewest characters (so at worst bytes, and tokens) that complete a match. */
  get fewestBytesToEnd(): number {
    return this.fewestAfter(this.cursor);
  }

  /**
   * The logits with every token that cannot come next at -inf (a copy). With `budget`, the tokens the
   * sequence may still draw, this one included, a token is kept only if a match can be reached in the
   * tokens left after it; where none can, every token the regex takes is kept. Throws when no token of the
   * vocabulary can continue the output.
   */
  mask(logits: Float32Array, budget = Number.POSITIVE_INFINITY): Float32Array {
    if (this.masked.length !== logits.length) this.masked = new Float32Array(logits.length);
    const cost = this.table(logits.length);
    const whole = this.matched && this.mayStop();
    return maskByCost(logits, this.masked, cost, budget, whole, this.stopIds, "regex");
  }

  /** Takes a drawn token that is not a stop token (one mask() allowed). */
  take(token: number): void {
    let cursor: Cursor | null = this.cursor;
    for (const b of this.tokenizer.tokenBytes(token)) {
      cursor = cursor && this.step(cursor, b);
    }
    if (!cursor) throw new RangeError(`token ${token} does not continue the regex`);
    this.cursor = cursor;
  }

  /** The output so far matches the whole regex. */
  private get matched(): boolean {
    const { state, chars, need } = this.cursor;
    return need === 0 && this.automaton.accepting[state] === 1 && chars >= this.automaton.minLength;
  }

  /**
   * Where every token leaves the output from here. Between characters and without a length window (a
   * leading `(?=.{a,b}$)`), it depends on the state alone, so it is built once per state and kept.
   */
  private table(size: number): Int32Array {
    const trie = tokenTrie(this.tokenizer, size);
    const { cursor, automaton } = this;
    const shareable = cursor.need === 0 && automaton.minLength === 0 && automaton.maxLength === Infinity;
    if (!shareable) return this.walk(trie.root, size, cursor);
    let byAutomaton = tables.get(trie);
    if (!byAutomaton) {
      byAutomaton = new WeakMap();
      tables.set(trie, byAutomaton);
    }
    let byState = byAutomaton.get(automaton);
    if (!byState) {
      byState = new Map();
      byAutomaton.set(automaton, byState);
    }
    let table = byState.get(cursor.state);
    if (!table) {
      table = this.walk(trie.root, size, cursor);
      if (byState.size >= MAX_TABLES) byState.clear();
      byState.set(cursor.state, table);
    }
    return table;
  }

  /** Each token's cost from `from`: the fewest characters after it to a match, -1 where refused. */
  private walk(root: TrieNode, size: number, from: Cursor): Int32Array {
    return tokenCosts(
      root,
      size,
      from,
      (at, b) => this.step(at, b),
      (after) => this.fewestAfter(after),
    );
  }

  /** The fewest characters that complete a match from `at` (one more for a half-read character). */
  private fewestAfter(at: Cursor): number {
    const { automaton } = this;
    return at.need + Math.max(automaton.minRemaining[at.state]!, automaton.minLength - at.chars);
  }

  /** The cursor after one more byte, or null where no match could go on from it. */
  private step(at: Cursor, b: number): Cursor | null {
    const read = readByte(at, b);
    if (read === null) return null;
    if ("code" in read) return this.character(at, read.code);
    const partial = { state: at.state, chars: at.chars, ...read.partial };
    return this.someCharacter(partial, read.first, read.last);
  }

  /** A half-read character, which may become one from `first` to `last`, is kept if one of those leads on. */
  private someCharacter(at: Cursor, first: number, last: number): Cursor | null {
    const { automaton } = this;
    const fits = (target: number) =>
      lengthFits(automaton, target, at.chars + 1, automaton.minLength, automaton.maxLength);
    return someMoveInRange(automaton, at.state, first, last, fits) ? at : null;
  }

  /** The cursor after a whole character, or null where the regex refuses it. */
  private character(at: Cursor, c: number): Cursor | null {
    if (!writable(c)) return null;
    const { automaton } = this;
    const state = nextState(automaton, at.state, c);
    if (state < 0) return null;
    const chars = at.chars + 1;
    if (!lengthFits(automaton, state, chars, automaton.minLength, automaton.maxLength)) return null;
    return { state, chars, need: 0, bits: 0, least: 0 };
  }
}
