// A sequence in JSON mode or with a JSON schema: before each draw, every token whose bytes could not continue
// the JSON value (json-grammar.ts) gets a logit of -inf, so the sampler — temperature, top-p, penalties,
// logprobs and all — draws only among tokens that keep the output valid; the sequence ends when the value
// is complete.
// Special tokens, stop tokens among them, are masked throughout. This needs the whole row of logits each step (the sequence has no
// decode choice), and costs a pass over the vocabulary per step, most tokens refused by their first byte.
import { JsonGrammar, type PatternCursor } from "./json-grammar.ts";
import type { SchemaNode } from "./json-schema.ts";
import { lengthFits, nextState } from "./string-automaton.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** A tokenizer's vocabulary as JSON mode reads it, built on its first JSON-mode sequence. */
interface Vocabulary {
  /** Each id's bytes; empty for special tokens, which are never text (stop tokens among them). */
  bytes: Uint8Array[];
  /** 1 where every byte is a plain string character (printable ASCII but `"` and `\`). */
  plain: Uint8Array;
  /** Every token's bytes as a trie, so tokens that share their first bytes are tried on them once. */
  trie: TrieNode;
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
    vocabulary = { bytes, plain, trie };
    vocabularies.set(tokenizer, vocabulary);
  }
  return vocabulary;
}

/** Most allowed-token lists kept for the string being written: one per pattern state met in it. */
const MAX_KEPT_LISTS = 64;

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
    // are tried. Elsewhere few bytes may come, and a walk of the vocabulary's trie tries each shared prefix
    // once and leaves a refused one's tokens untried; inside a patterned string that walk moves the
    // pattern's automaton alone while bytes are plain characters, and the whole grammar only past them.
    const room = this.grammar.plainStringRoom;
    const cursor = this.grammar.patternCursor;
    if (room > 0) {
      const first = new Uint8Array(256);
      for (let b = 0; b < 256; b++) first[b] = this.grammar.accepts(Uint8Array.of(b)) ? 1 : 0;
      for (let id = 0; id < size; id++) {
        const bytes = vocabulary.bytes[id]!;
        if (bytes.length === 0) continue;
        const plain = vocabulary.plain[id] === 1;
        if (plain ? bytes.length <= room : first[bytes[0]!] === 1 && this.grammar.accepts(bytes)) ok[id] = 1;
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
      if (cursor) this.walkPattern(vocabulary.trie, cursor, cursor.state, cursor.chars, [], ok, walk);
      else walk(vocabulary.trie, this.grammar);
    }
    for (const id of this.blocked) if (id < size) ok[id] = 0;
    return ok;
  }

  /**
   * The trie walk inside a patterned string: plain characters move the pattern's automaton from `state`
   * with `chars` characters written; any other byte hands the path so far to the whole grammar and `walk`.
   */
  private walkPattern(
    node: TrieNode,
    cursor: PatternCursor,
    state: number,
    chars: number,
    path: number[],
    ok: Uint8Array,
    walk: (node: TrieNode, grammar: JsonGrammar) => void,
  ): void {
    const { automaton, min, max } = cursor;
    for (const [b, child] of node.children) {
      path.push(b);
      if (isPlain(b)) {
        const next = chars < max ? nextState(automaton, state, b) : -1;
        if (next >= 0 && lengthFits(automaton, next, chars + 1, min, max)) {
          for (const id of child.tokens) if (id < ok.length) ok[id] = 1;
          this.walkPattern(child, cursor, next, chars + 1, path, ok, walk);
        }
      } else {
        const grammar = this.grammar.after(Uint8Array.from(path));
        if (grammar) {
          for (const id of child.tokens) if (id < ok.length) ok[id] = 1;
          walk(child, grammar);
        }
      }
      path.pop();
    }
  }

  /** Takes the drawn token (one mask() allowed). */
  take(token: number): void {
    this.grammar.push(this.tokenizer.tokenBytes(token));
  }
}
