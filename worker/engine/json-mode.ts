// A sequence in JSON mode: before each draw, every token whose bytes could not continue one JSON object
// (json-object-grammar.ts) gets a logit of -inf, so the sampler — temperature, top-p, penalties, logprobs
// and all — draws only among tokens that keep the output valid; the sequence ends when the object closes.
// Special tokens, stop tokens among them, are masked throughout. This needs the whole row of logits each step (the sequence has no
// decode choice), and costs a pass over the vocabulary per step, most tokens refused by their first byte.
import { JsonObjectGrammar } from "./json-object-grammar.ts";
import type { Tokenizer } from "./tokenizer.ts";

/**
 * Each token id's bytes, per tokenizer, built on its first JSON-mode sequence; empty for special tokens,
 * which are never text (and the stop tokens among them end a sequence).
 */
const vocabularies = new WeakMap<Tokenizer, Uint8Array[]>();

function vocabularyBytes(tokenizer: Tokenizer, size: number): Uint8Array[] {
  let bytes = vocabularies.get(tokenizer);
  if (!bytes || bytes.length < size) {
    bytes = Array.from({ length: size }, (_, id) =>
      tokenizer.isSpecial(id) ? new Uint8Array(0) : tokenizer.tokenBytes(id),
    );
    vocabularies.set(tokenizer, bytes);
  }
  return bytes;
}

export class JsonMode {
  private readonly grammar = new JsonObjectGrammar();
  private masked = new Float32Array(0);

  constructor(
    private readonly tokenizer: Tokenizer,
    /** Tokens never drawn in JSON mode whatever their bytes: the sequence's stop tokens. */
    private readonly blocked: readonly number[],
  ) {}

  /** The object has closed: the sequence ends. */
  get complete(): boolean {
    return this.grammar.complete;
  }

  /**
   * The logits with every token that cannot come next at -inf (a copy; `logits` is left as it is). Throws
   * when no token of the vocabulary can continue the object.
   */
  mask(logits: Float32Array): Float32Array {
    const vocabulary = vocabularyBytes(this.tokenizer, logits.length);
    if (this.masked.length !== logits.length) this.masked = new Float32Array(logits.length);
    const out = this.masked;
    const first = new Uint8Array(256);
    for (let b = 0; b < 256; b++) first[b] = this.grammar.accepts(Uint8Array.of(b)) ? 1 : 0;
    let allowed = 0;
    for (let id = 0; id < logits.length; id++) {
      const bytes = vocabulary[id]!;
      const ok =
        bytes.length > 0 && first[bytes[0]!] === 1 && (bytes.length === 1 || this.grammar.accepts(bytes));
      out[id] = ok ? logits[id]! : Number.NEGATIVE_INFINITY;
      if (ok) allowed++;
    }
    for (const id of this.blocked) {
      if (id < out.length && out[id] !== Number.NEGATIVE_INFINITY) {
        out[id] = Number.NEGATIVE_INFINITY;
        allowed--;
      }
    }
    if (allowed === 0) throw new RangeError("JSON mode: no token of the vocabulary can continue the object");
    return out;
  }

  /** Takes the drawn token (one mask() allowed). */
  take(token: number): void {
    this.grammar.push(this.tokenizer.tokenBytes(token));
  }
}
