// A sequence in JSON mode or with a JSON schema: before each draw, every token whose bytes could not continue
// the JSON value (json-grammar.ts) gets a logit of -inf, so the sampler — temperature, top-p, penalties,
// logprobs and all — draws only among tokens that keep the output valid; the sequence ends when the value
// is complete.
// Special tokens, stop tokens among them, are masked throughout. This needs the whole row of logits each step (the sequence has no
// decode choice), and costs a pass over the vocabulary per step, most tokens refused by their first byte.
import { JsonGrammar } from "./json-grammar.ts";
import type { SchemaNode } from "./json-schema.ts";
import { lengthFits, nextState, type StringAutomaton } from "./string-automaton.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** A tokenizer's vocabulary as JSON mode reads it, built on its first JSON-mode sequence. */
interface Vocabulary {
  /** Each id's bytes; empty for special tokens, which are never text (stop tokens among them). */
  bytes: Uint8Array[];
  /** 1 where every byte is a plain string character (printable ASCII but `"` and `\`). */
  plain: Uint8Array;
  /** Every token's bytes as a trie, so tokens that share their first bytes are tried on them once. */
  trie: TrieNode;
  /** The ids of tokens with a byte that is not plain (tried in full inside a patterned string). */
  notPlain: Int32Array;
  /**
   * Per string automaton and state, where each plain token leaves it (-1: refused): built once a state is
   * first met, then shared by every sequence with that pattern (patternTable).
   */
  patternTables: WeakMap<StringAutomaton, Map<number, Int32Array>>;
}

interface TrieNode {
  children: Map<number, TrieNode>;
  /** The ids whose bytes end here. */
  tokens: number[];
}

const vocabularies = new WeakMap<Tokenizer, Vocabulary>();

const isPlain = (b: number) => b >= 0x20 && b <= 0x7e && b !== 0x22 && b !== 0x5c;

function vocabularyOf(tokenizer: Tokenizer, size: number): Vocabulary {
  let vocabulary = vocabularies.get(tokenizer);
  if (!vocabulary || vocabulary.bytes.length < size) {
    const bytes = Array.from({ length: size }, (_, id) =>
      tokenizer.isSpecial(id) ? new Uint8Array(0) : tokenizer.tokenBytes(id),
    );
    const plain = Uint8Array.from(bytes, (b) => (b.length > 0 && b.every(isPlain) ? 1 : 0));
    const trie: TrieNode = { children: new Map(), tokens: [] };
    for (const [id, token] of bytes.entries()) {
      let node = trie;
      for (const b of token) {
        let child = node.children.get(b);
        if (!child) {
          child = { children: new Map(), tokens: [] };
          node.children.set(b, child);
        }
        node = child;
      }
      if (node !== trie) node.tokens.push(id);
    }
    const notPlain = Int32Array.from(bytes.flatMap((b, id) => (b.length > 0 && plain[id] === 0 ? [id] : [])));
    vocabulary = { bytes, plain, trie, notPlain, patternTables: new WeakMap() };
    vocabularies.set(tokenizer, vocabulary);
  }
  return vocabulary;
}

/** Most allowed-token lists kept for the string being written: one per pattern state met in it. */
const MAX_KEPT_LISTS = 64;

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
  walk(vocabulary.trie, state);
  if (tables.size >= MAX_PATTERN_TABLES) tables.clear();
  tables.set(state, table);
  return table;
}

export class JsonMode {
  private readonly grammar: JsonGrammar;
  private masked = new Float32Array(0);
  /** The tokens allowed inside the string being written (openString), by pattern state, while it goes on. */
  private inString = new Map<number, Int32Array>();
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

  /**
   * The logits with every token that cannot come next at -inf (a copy; `logits` is left as it is). Throws
   * when no token of the vocabulary can continue the value.
   */
  mask(logits: Float32Array): Float32Array {
    if (this.masked.length !== logits.length) this.masked = new Float32Array(logits.length);
    const out = this.masked;
    out.fill(Number.NEGATIVE_INFINITY);
    const open = this.grammar.openString;
    if (open && open.serial !== this.inStringSerial) {
      this.inString.clear();
      this.inStringSerial = open.serial;
    }
    const kept = open ? this.inString.get(open.state) : undefined;
    if (kept) {
      for (const id of kept) out[id] = logits[id]!;
      return out;
    }
    const ok = this.allowedTokens(logits.length);
    let count = 0;
    for (let id = 0; id < ok.length; id++) {
      if (ok[id] === 0) continue;
      out[id] = logits[id]!;
      count++;
    }
    if (count === 0) throw new RangeError("JSON mode: no token of the vocabulary can continue the value");
    if (open && this.inString.size < MAX_KEPT_LISTS) {
      const allowed = new Int32Array(count);
      for (let id = 0, at = 0; id < ok.length; id++) if (ok[id] === 1) allowed[at++] = id;
      this.inString.set(open.state, allowed);
    }
    return out;
  }

  /** 1 for each id below `size` that may come next: neither refused by the grammar nor blocked. */
  private allowedTokens(size: number): Uint8Array {
    const vocabulary = vocabularyOf(this.tokenizer, size);
    const ok = new Uint8Array(size);
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
      const tryFully = (id: number) => {
        const bytes = vocabulary.bytes[id]!;
        if (bytes.length > 0 && first[bytes[0]!] === 1 && this.grammar.accepts(bytes)) ok[id] = 1;
      };
      if (cursor) {
        const { automaton, chars, min, max } = cursor;
        const table = patternTable(vocabulary, automaton, cursor.state);
        for (let id = 0; id < size; id++) {
          const next = table[id]!;
          if (next < 0) continue;
          const length = chars + vocabulary.bytes[id]!.length;
          if (length <= max && lengthFits(automaton, next, length, min, max)) ok[id] = 1;
        }
        for (const id of vocabulary.notPlain) if (id < size) tryFully(id);
      } else {
        for (let id = 0; id < size; id++) {
          if (vocabulary.plain[id] === 1) {
            if (vocabulary.bytes[id]!.length <= room) ok[id] = 1;
          } else tryFully(id);
        }
      }
    } else {
      const walk = (node: TrieNode, grammar: JsonGrammar) => {
        for (const [b, child] of node.children) {
          const next = grammar.after(Uint8Array.of(b));
          if (!next) continue;
          for (const id of child.tokens) if (id < size) ok[id] = 1;
          walk(child, next);
        }
      };
      walk(vocabulary.trie, this.grammar);
    }
    for (const id of this.blocked) if (id < size) ok[id] = 0;
    return ok;
  }

  /** Takes the drawn token (one mask() allowed). */
  take(token: number): void {
    this.grammar.push(this.tokenizer.tokenBytes(token));
  }
}
