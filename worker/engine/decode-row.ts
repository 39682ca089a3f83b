// What a decode gives back for one sequence, and what the batching loop may ask instead of its logits: an
// engine that has the logits on a GPU can pick the token there (argmax) or send only the largest logits
// (candidates), sparing a copy of the whole row; the sampler takes either where it gives what the full
// row would (Sampler.takesArgmax, Sampler.takesCandidates).

/**
 * Largest logits an engine sends per candidates row: enough for top_k up to this, top_logprobs (≤ 20), and
 * top_p wherever they hold its mass (else the row's logits are fetched: ServingEngine.logitsOf).
 */
export const CANDIDATES = 64;

/** How a sequence's next token may be settled without its whole row of logits. */
export type DecodeChoice = { kind: "argmax" } | { kind: "candidates"; temperature: number };

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
