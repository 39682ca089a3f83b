// A sequence's presence, frequency and repetition penalties and its logit_bias as entries (RowPenalties),
// kept up to date token by token: the one definition the sampler applies to a row itself and sends to an
// engine that applies them where the logits are. A bias rides in the presence term (presence − bias), so
// every engine applies it without a kernel of its own. Rebuilding the entries from the seen tokens every
// step cost ~20 ms per 64-row step with 2,000-token prompts, more than a GPU step.
import type { RowPenalties } from "./decode-row.ts";

export interface PenaltyParams {
  presencePenalty: number;
  frequencyPenalty: number;
  repetitionPenalty: number;
  logitBias?: ReadonlyMap<number, number>;
}

export class PenaltyList {
  /** Entry index of each listed token. */
  private readonly index = new Map<number, number>();
  private tokens = new Int32Array(64);
  private repetition = new Float64Array(64);
  private presence = new Float64Array(64);
  private frequency = new Float64Array(64);
  /** How often the sequence chose each listed token. */
  private chosen = new Int32Array(64);
  private size = 0;

  /** `prompt`: the tokens the repetition penalty applies to from the start. */
  constructor(
    private readonly params: PenaltyParams,
    prompt: Iterable<number>,
  ) {
    for (const [token, bias] of params.logitBias ?? []) this.presence[this.entry(token, false)] = -bias;
    if (params.repetitionPenalty !== 1) for (const t of prompt) this.entry(t, true);
  }

  /** The sequence chose `token`. */
  chose(token: number): void {
    const p = this.params;
    const counted = p.presencePenalty !== 0 || p.frequencyPenalty !== 0;
    if (p.repetitionPenalty === 1 && !counted) return;
    const i = this.entry(token, true);
    this.chosen[i]! += 1;
    if (counted) {
      this.presence[i] = p.presencePenalty - (p.logitBias?.get(token) ?? 0);
      this.frequency[i] = p.frequencyPenalty * this.chosen[i]!;
    }
  }

  /**
   * Applies the entries to a row of logits in place, each step rounded to float32 by the row: what
   * Sampler.sample does, and what an engine's penalty kernel must match. Tokens past the row are skipped.
   */
  applyTo(logits: Float32Array): void {
    for (let i = 0; i < this.size; i++) {
      const t = this.tokens[i]!;
      if (t >= logits.length) continue;
      const repetition = this.repetition[i]!;
      if (repetition !== 1) logits[t] = logits[t]! > 0 ? logits[t]! / repetition : logits[t]! * repetition;
      logits[t] = logits[t]! - this.presence[i]! - this.frequency[i]!;
    }
  }

  /** A copy of the entries (the list goes on changing; the copy may cross to an engine thread). */
  snapshot(): RowPenalties {
    return {
      tokens: this.tokens.slice(0, this.size),
      repetition: this.repetition.slice(0, this.size),
      presence: this.presence.slice(0, this.size),
      frequency: this.frequency.slice(0, this.size),
    };
  }

  /** The entry of `token`; `seen` (in the prompt or chosen) makes the repetition penalty apply to it. */
  private entry(token: number, seen: boolean): number {
    const known = this.index.get(token);
    if (known !== undefined) {
      if (seen) this.repetition[known] = this.params.repetitionPenalty;
      return known;
    }
    if (this.size === this.tokens.length) this.grow();
    const i = this.size++;
    this.tokens[i] = token;
    this.repetition[i] = seen ? this.params.repetitionPenalty : 1;
    this.presence[i] = 0;
    this.frequency[i] = 0;
    this.chosen[i] = 0;
    this.index.set(token, i);
    return i;
  }

  private grow(): void {
    const capacity = this.tokens.length * 2;
    const grown = <T extends Int32Array | Float64Array>(old: T, make: (n: number) => T): T => {
      const next = make(capacity);
      next.set(old);
      return next;
    };
    this.tokens = grown(this.tokens, (n) => new Int32Array(n));
    this.repetition = grown(this.repetition, (n) => new Float64Array(n));
    this.presence = grown(this.presence, (n) => new Float64Array(n));
    this.frequency = grown(this.frequency, (n) => new Float64Array(n));
    this.chosen = grown(this.chosen, (n) => new Int32Array(n));
  }
}
