// A sequence in JSON mode or with a JSON schema: before each draw, every token whose bytes could not continue
// the JSON value (json-grammar.ts) gets a logit of -inf, so the sampler — temperature, top-p, penalties,
// logprobs and all — draws only among tokens that keep the output valid; the sequence ends when the value
// is complete.
// Special tokens, stop tokens among them, are masked throughout. This needs the whole row of logits each step (the sequence has no
// decode choice), and costs a pass over the vocabulary per step, most tokens refused by their first byte.
import { JsonGrammar } from "./json-grammar.ts";
import type { SchemaNode } from "./json-schema.ts";
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

export class JsonMode {
  private readonly grammar: JsonGrammar;
  private masked = new Float32Array(0);
  /** The tokens allowed inside the string being written, kept while it goes on (openStringSerial). */
  private inString: { serial: number; allowed: Int32Array } | null = null;

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
    const serial = this.grammar.openStringSerial;
    if (serial !== null && this.inString?.serial === serial) {
      for (const id of this.inString.allowed) out[id] = logits[id]!;
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
    if (serial !== null) {
      const allowed = new Int32Array(count);
      for (let id = 0, at = 0; id < ok.length; id++) if (ok[id] === 1) allowed[at++] = id;
      this.inString = { serial, allowed };
    }
    return out;
  }

  /** 1 for each id below `size` that may come next: neither refused by the grammar nor blocked. */
  private allowedTokens(size: number): Uint8Array {
    const vocabulary = vocabularyOf(this.tokenizer, size);
    const ok = new Uint8Array(size);
    // Inside a string most tokens are plain characters, taken while the string has room: only the others
    // are tried. Elsewhere few bytes may come, and a walk of the vocabulary's trie tries each shared prefix
    // once and leaves a refused one's tokens untried.
    const room = this.grammar.plainStringRoom;
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
          const next = grammar.after(b);
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
