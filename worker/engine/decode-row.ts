// What a decode gives back for one sequence, and what the batching loop may ask instead of its logits: an
// engine that has the logits on a GPU can pick the token there (argmax) or send only the largest logits
// (candidates), sparing a copy of the whole row; the sampler takes either where it gives what the full
// row would (Sampler.decodeChoice, Sampler.sampleCandidates).

/**
 * Largest logits an engine sends per candidates row: enough for top_k up to this, top_logprobs (≤ 20), and
 * top_p wherever they hold its mass (else the row's logits are fetched: ServingEngine.logitsOf).
 */
export const CANDIDATES = 64;

/**
 * A sequence's penalties as the sampler applies them to its raw logits (sampler.ts), for an engine to apply
 * where the logits are before it picks or sends candidates: per listed token (each once, inside the
 * vocabulary), logit → (logit > 0 ? logit / repetition : logit · repetition) unless repetition is 1, then
 * − presence − frequency, each step's value rounded to float32 as the sampler rounds it.
 */
export interface RowPenalties {
  tokens: Int32Array;
  repetition: Float64Array;
  /** presence_penalty where the sequence chose the token, minus the token's logit_bias. */
  presence: Float64Array;
  /** frequency_penalty × how often the sequence chose the token. */
  frequency: Float64Array;
}

/** The penalties of a step's rows as flat entries: each entry's row, token and values, rows ascending. */
export interface PenaltyEntries {
  rows: Int32Array;
  tokens: Int32Array;
  repetition: Float64Array;
  presence: Float64Array;
  frequency: Float64Array;
}

/** The entries of every row's RowPenalties (index: the row), in row order; undefined where no row has any. */
export function penaltyEntries(perRow: readonly (RowPenalties | undefined)[]): PenaltyEntries | undefined {
  let count = 0;
  for (const penalties of perRow) count += penalties?.tokens.length ?? 0;
  if (count === 0) return undefined;
  const entries: PenaltyEntries = {
    rows: new Int32Array(count),
    tokens: new Int32Array(count),
    repetition: new Float64Array(count),
    presence: new Float64Array(count),
    frequency: new Float64Array(count),
  };
  let at = 0;
  for (const [row, penalties] of perRow.entries()) {
    if (!penalties) continue;
    entries.rows.fill(row, at, at + penalties.tokens.length);
    entries.tokens.set(penalties.tokens, at);
    entries.repetition.set(penalties.repetition, at);
    entries.presence.set(penalties.presence, at);
    entries.frequency.set(penalties.frequency, at);
    at += penalties.tokens.length;
  }
  return entries;
}

/**
 * How a sequence's next token may be settled without its whole row of logits: the argmax or the largest
 * logits of the row after `penalties`, when it has any.
 */
export type DecodeChoice =
  | { kind: "argmax"; penalties?: RowPenalties }
  | {
      kind: "candidates";
      temperature: number;
      /**
       * True where the draw may reach past the candidates (top-p without a top-k inside them): the row
       * may then be asked for after the step (logitsOf), so an engine that cannot keep it sends it too.
       */
      mayNeedRow: boolean;
      penalties?: RowPenalties;
    };

/** A row's largest logits, largest first (ties: lower id first), and log Σ exp(logit / T) over the vocabulary. */
export interface DecodeCandidates {
  tokens: Int32Array;
  logits: Float32Array;
  /** At the temperature the choice gave (≤ 0 counts as 1). */
  logSumExp: number;
  vocab: number;
}

/** One sequence's decode result: its logits, the token the engine picked, or its candidates. */
export type DecodeRow = Float32Array | number | DecodeCandidates;
