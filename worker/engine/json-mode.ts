// A sequence in JSON mode or with a JSON schema: before each draw, every token whose bytes could not continue
// the JSON value (json-grammar.ts) gets a logit of -inf, so the sampler — temperature, top-p, penalties,
// logprobs and all — draws only among tokens that keep the output valid; the sequence ends when the value
// is complete. Near the end of its token budget only tokens after which the value can still be completed in
// time are kept, so it closes rather than being cut off.
// Special tokens, stop tokens among them, are masked throughout. This needs the whole row of logits each step (the sequence has no
// decode choice), and costs a pass over the vocabulary per step, most tokens refused by their first byte.
import { JsonGrammar } from "./json-grammar.ts";
import type { SchemaNode } from "./json-schema.ts";
import { NoTokenLeftError } from "./no-token-left.ts";
import { lengthFits, nextState, type StringAutomaton } from "./string-automaton.ts";
import { type TokenTrie, type TrieNode, tokenTrie } from "./token-trie.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** A tokenizer's vocabulary as JSON mode reads it, built on its first JSON-mode sequence. */
interface Vocabulary extends TokenTrie {
  /** 1 where every byte is a plain string character (printable ASCII but `"` and `\`). */
  plain: Uint8Array;
  /** The ids of tokens with a byte that is not plain (tried in full inside a patterned string). */
  notPlain: Int32Array;
  /**
   * Per string automaton and state, where each plain token leaves it (-1: refused): built once a state is
   * first met, then shared by every sequence with that pattern (patternTable).
   */
  patternTables: WeakMap<StringAutomaton, Map<number, Int32Array>>;
}

const vocabularies = new WeakMap<TokenTrie, Vocabulary>();

const isPlain = (b: number) => b >= 0x20 && b <= 0x7e && b !== 0x22 && b !== 0x5c;

function vocabularyOf(tokenizer: Tokenizer, size: number): Vocabulary {
  const trie = tokenTrie(tokenizer, size);
  let vocabulary = vocabularies.get(trie);
  if (!vocabulary) {
    const { bytes } = trie;
    const plain = Uint8Array.from(bytes, (b) => (b.length > 0 && b.every(isPlain) ? 1 : 0));
    const notPlain = Int32Array.from(bytes.flatMap((b, id) => (b.length > 0 && plain[id] === 0 ? [id] : [])));
    vocabulary = { ...trie, plain, notPlain, patternTables: new WeakMap() };
    vocabularies.set(trie, vocabulary);
  }
  return vocabulary;
}

/** Most allowed-token lists kept for the string being written: one per pattern state met in it. */
const MAX_KEPT_LISTS = 64;

/** A cost as an int32: Infinity (nothing can complete the value) becomes the largest. */
const clamp = (cost: number) => Math.min(cost, 0x7fffffff);

/** Most states whose token tables are kept per pattern (each holds an int per token of the vocabulary). */
const MAX_PATTERN_TABLES = 128;

/**
 * Where each plain token leaves the automaton from `state`, by id (-1: refused, or not plain), walking the
 * vocabulary's trie so tokens that share their first bytes move the automaton once.
 */
function patternTable(vocabulary: Vocabulary, automaton: StringAutomaton, state: number): Int32Array {
  let tables = vocabulary.patternTables.get(automaton);
  if (!tables) {
    tables = new Map();
    vocabulary.patternTables.set(automaton, tables);
  }
  let table = tables.get(state);
  if (table) return table;
  table = new Int32Array(vocabulary.bytes.length).fill(-1);
  const filled = table;
  const walk = (node: TrieNode, at: number) => {
    for (const [b, child] of node.children) {
      if (!isPlain(b)) continue;
      const next = nextState(automaton, at, b);
      if (next < 0) continue;
      for (const id of child.tokens) filled[id] = next;
      walk(child, next);
    }
  };
  walk(vocabulary.root, state);
  if (tables.size >= MAX_PATTERN_TABLES) tables.clear();
  tables.set(state, table);
  return table;
}

/** Past any cost: a token the grammar refuses. */
const REFUSED = -1;

/** The tokens allowed inside the string being written, and the most bytes any of them leaves to write. */
interface KeptList {
  ids: Int32Array;
  worst: number;
}

export class JsonMode {
  private readonly grammar: JsonGrammar;
  private masked = new Float32Array(0);
  /** Per token, the fewest bytes that would complete the value after it, or REFUSED. */
  private costs = new Int32Array(0);
  /** The tokens allowed inside the string being written (openString), by pattern state, while it goes on. */
  private inString = new Map<number, KeptList>();
  private inStringSerial = -1;

  constructor(
    private readonly tokenizer: Tokenizer,
    schema: SchemaNode,
    /** Tokens never drawn in JSON mode whatever their bytes: the sequence's stop tokens. */
    private readonly blocked: readonly number[],
  ) {
    this.grammar = new JsonGrammar(schema);
  }

  /** The value is complete: the sequence ends. */
  get complete(): boolean {
    return this.grammar.complete;
  }

  /** The fewest bytes that complete the value, so the fewest tokens of a byte-level vocabulary at worst. */
  get fewestBytesToEnd(): number {
    return this.grammar.fewestBytesToEnd;
  }

  /**
   * The logits with every token that cannot come next at -inf (a copy; `logits` is left as it is). With
   * `budget`, the tokens the sequence may still draw, this one included, a token is allowed only if the
   * value can still be completed in the tokens left after it (one byte a token at worst, which a
   * byte-level vocabulary always offers): a value nearing max_tokens is steered to close rather than cut
   * off. Where the budget is already too small for that, only the tokens that leave the fewest bytes to
   * end: longer tokens may still close it in time, and optional whitespace never will. Throws when no token
   * the request allows can continue the value (NoTokenLeftError).
   */
  mask(logits: Float32Array, budget = Number.POSITIVE_INFINITY): Float32Array {
    if (this.masked.length !== logits.length) this.masked = new Float32Array(logits.length);
    const out = this.masked;
    out.fill(Number.NEGATIVE_INFINITY);
    // The tokens after this one. Once even the longest token cannot bring the bytes the value needs
    // within them, exact costs are not worth their time: bounds pick the tokens that bring the end closest.
    const vocabulary = vocabularyOf(this.tokenizer, logits.length);
    const need = clamp(this.grammar.fewestBytesToEnd);
    const spare = budget - 1;
    const hopeless = need - vocabulary.longest > spare;
    const open = this.grammar.openString;
    if (open && open.serial !== this.inStringSerial) {
      this.inString.clear();
      this.inStringSerial = open.serial;
    }
    const kept = open ? this.inString.get(open.state) : undefined;
    if (kept && kept.worst <= spare) {
      const { ids } = kept;
      for (let i = 0; i < ids.length; i++) out[ids[i]!] = logits[ids[i]!]!;
      return out;
    }
    const costs = this.tokenCosts(
      vocabulary,
      logits.length,
      need,
      hopeless ? Number.POSITIVE_INFINITY : spare,
    );
    let allowed = 0;
    let within = 0;
    let fewest = Number.POSITIVE_INFINITY;
    let atFewest = 0;
    for (let id = 0; id < costs.length; id++) {
      const cost = costs[id]!;
      if (cost === REFUSED) continue;
      allowed++;
      if (cost <= spare) within++;
      if (cost < fewest) {
        fewest = cost;
        atFewest = 1;
      } else if (cost === fewest) atFewest++;
    }
    if (allowed === 0) {
      throw new NoTokenLeftError(
        "JSON mode: no token the request allows can continue the value (check stop_token_ids, allowed_token_ids and bad_words against the format)",
      );
    }
    // Within the budget if any token is; else those that bring the end closest.
    const limit = within > 0 ? spare : fewest;
    const ids = new Int32Array(within > 0 ? within : atFewest);
    let worst = 0;
    for (let id = 0, at = 0; id < costs.length; id++) {
      const cost = costs[id]!;
      if (cost === REFUSED || cost > limit) continue;
      out[id] = logits[id]!;
      ids[at++] = id;
      worst = Math.max(worst, cost);
    }
    if (open && within > 0 && this.inString.size < MAX_KEPT_LISTS)
      this.inString.set(open.state, { ids, worst });
    return out;
  }

  /**
   * Per id below `size`, the fewest bytes that would complete the value after it (capped to an int32), or
   * REFUSED where the grammar refuses it or it is blocked; `need` is that count now. `spare` (the tokens
   * after this one) only says where exact costs are worth their time: a cost that cannot exceed it may be
   * an upper bound.
   */
  private tokenCosts(vocabulary: Vocabulary, size: number, need: number, spare: number): Int32Array {
    if (this.costs.length !== size) this.costs = new Int32Array(size);
    const costs = this.costs.fill(REFUSED);
    const costAfter = (bytes: Uint8Array): number => {
      const next = this.grammar.after(bytes);
      return next ? clamp(next.fewestBytesToEnd) : REFUSED;
    };
    // Inside a string most tokens are plain characters, taken while the string has room: only the others
    // are tried. Inside a patterned string a plain token is taken when the state it leaves the pattern in
    // (patternTable, built once per state) can still end within the length limits; the others are tried.
    // Elsewhere few bytes may come, and a walk of the vocabulary's trie tries each shared prefix once and
    // leaves a refused one's tokens untried.
    const room = this.grammar.plainStringRoom;
    const cursor = this.grammar.patternCursor;
    if (room > 0 || cursor) {
      const first = new Uint8Array(256);
      for (let b = 0; b < 256; b++) first[b] = this.grammar.accepts(Uint8Array.of(b)) ? 1 : 0;
      // Plain characters never add to what a string with no pattern needs: the parses' worst cost bounds
      // the cost after any of them. A token with no quote stays in the string and adds at most the rest of
      // a character or escape it leaves open (four hex digits after "\u"). Where such a bound is within the
      // budget, the token needs no cost of its own.
      const worst = clamp(this.grammar.fewestBytesToEndAtWorst);
      const tryFully = (id: number) => {
        const bytes = vocabulary.bytes[id]!;
        if (bytes.length === 0 || first[bytes[0]!] !== 1) return;
        if (worst + 4 <= spare && !cursor && !bytes.includes(0x22)) {
          if (this.grammar.accepts(bytes)) costs[id] = worst + 4;
        } else costs[id] = costAfter(bytes);
      };
      if (cursor) {
        // One parse: the pattern's part of the cost moves with the state and length a token leaves.
        const { automaton, chars, min, max } = cursor;
        const table = patternTable(vocabulary, automaton, cursor.state);
        const rest = need - Math.max(automaton.minRemaining[cursor.state]!, min - chars);
        for (let id = 0; id < size; id++) {
          const next = table[id]!;
          if (next < 0) continue;
          const length = chars + vocabulary.bytes[id]!.length;
          if (length <= max && lengthFits(automaton, next, length, min, max)) {
            costs[id] = rest + Math.max(automaton.minRemaining[next]!, min - length);
          }
        }
        for (const id of vocabulary.notPlain) if (id < size) tryFully(id);
      } else {
        // Past the budget, with one parse, a plain token of n characters ends n of those the string still
        // lacks; with more, each is tried.
        const shortfall = this.grammar.plainStringShortfall;
        for (let id = 0; id < size; id++) {
          if (vocabulary.plain[id] === 1) {
            if (vocabulary.bytes[id]!.length > room) continue;
            costs[id] =
              worst <= spare
                ? worst
                : shortfall !== null
                  ? worst - Math.min(vocabulary.bytes[id]!.length, shortfall)
                  : costAfter(vocabulary.bytes[id]!);
          } else tryFully(id);
        }
      }
    } else {
      const walk = (node: TrieNode, grammar: JsonGrammar) => {
        for (const [b, child] of node.children) {
          const next = grammar.after(Uint8Array.of(b));
          if (!next) continue;
          if (child.tokens.length > 0) {
            const cost = clamp(next.fewestBytesToEnd);
            for (const id of child.tokens) if (id < size) costs[id] = cost;
          }
          walk(child, next);
        }
      };
      walk(vocabulary.root, this.grammar);
    }
    for (const id of this.blocked) if (id < size) costs[id] = REFUSED;
    return costs;
  }

  /** Takes the drawn token (one mask() allowed). */
  take(token: number): void {
    this.grammar.push(this.tokenizer.tokenBytes(token));
  }
}
