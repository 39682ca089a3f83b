// A reasoning model's structured answer (JSON mode, a schema, a required call): the model reasons freely
// first, between its tags, and the answer's grammar (json-mode.ts) holds from the token after the closing
// tag, as vLLM gates structured output on its reasoning parser. The tags are single tokens of the
// vocabulary (Qwen3's, QwQ's, DeepSeek-R1's), so the gate watches token ids, never text.
// The opening tag is forced first where the prompt did not open the block; stop tokens are masked while
// the model reasons (an answer must follow); and the closing tag is forced once only the tokens the answer
// needs are left, so the value can still close within max_tokens.

export interface ReasoningTags {
  /** Forced as the first token; null where the prompt opened the block. */
  open: number | null;
  close: number;
}

export class ReasoningGate {
  private phase: "open" | "reasoning" | "answer";
  private masked = new Float32Array(0);

  constructor(
    private readonly tags: ReasoningTags,
    /** Never drawn while reasoning: the sequence's stop tokens. */
    private readonly blocked: readonly number[],
  ) {
    this.phase = tags.open === null ? "reasoning" : "open";
  }

  /** The closing tag is out: the answer's grammar holds from the next token. */
  get answering(): boolean {
    return this.phase === "answer";
  }

  /**
   * The logits as they may be drawn from before the answer (a copy). `budget`: the tokens the sequence may
   * still draw, this one included; `reserve`: the fewest tokens the answer needs after the closing tag.
   */
  mask(logits: Float32Array, budget: number, reserve: number): Float32Array {
    if (this.masked.length !== logits.length) this.masked = new Float32Array(logits.length);
    const out = this.masked;
    // One more reasoning token must leave room for the closing tag and the answer after it.
    const forced = this.phase === "open" ? this.tags.open : budget - 2 < reserve ? this.tags.close : null;
    if (forced !== null) {
      if (forced >= logits.length) throw new RangeError(`reasoning tag ${forced} is outside the vocabulary`);
      out.fill(Number.NEGATIVE_INFINITY);
      out[forced] = 0;
      return out;
    }
    out.set(logits);
    for (const id of this.blocked) if (id < out.length) out[id] = Number.NEGATIVE_INFINITY;
    return out;
  }

  /** Takes the drawn token (one mask() allowed). */
  take(token: number): void {
    if (this.phase === "open") this.phase = "reasoning";
    else if (token === this.tags.close) this.phase = "answer";
  }
}
