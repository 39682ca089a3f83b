// A reasoning model's structured answer (JSON mode, a schema, a required call): the model reasons freely
// first, between its tags, and the answer's grammar (json-mode.ts) holds from the token after the closing
// tag, as vLLM gates structured output on its reasoning parser. The tags are single tokens of the
// vocabulary (Qwen3's, QwQ's, DeepSeek-R1's), so the gate watches token ids, never text.
// The opening tag is forced first where the prompt did not open the block, and the closing tag once only
// the tokens the answer needs are left, so the value can still close within max_tokens; in between the
// sequence draws any token but a stop token (an answer must follow), which SequenceOutput masks.

export interface ReasoningTags {
  /** Forced as the first token; null where the prompt opened the block. */
  open: number | null;
  close: number;
}

export class ReasoningGate {
  private phase: "open" | "reasoning" | "answer";

  constructor(private readonly tags: ReasoningTags) {
    this.phase = tags.open === null ? "reasoning" : "open";
  }

  /** The closing tag is out: the answer's grammar holds from the next token. */
  get answering(): boolean {
    return this.phase === "answer";
  }

  /**
   * The token this draw must be, or null: any token but a stop token. `budget`: the tokens the sequence
   * may still draw, this one included; `reserve`: the fewest tokens the answer needs after the closing tag.
   */
  forced(budget: number, reserve: number): number | null {
    if (this.phase === "open") return this.tags.open;
    // One more reasoning token must leave room for the closing tag and the answer after it.
    return budget - 2 < reserve ? this.tags.close : null;
  }

  /** Takes the drawn token. */
  take(token: number): void {
    if (this.phase === "open") this.phase = "reasoning";
    else if (token === this.tags.close) this.phase = "answer";
  }
}
