// Turns one row of logits into the next token of one sequence: penalties, temperature, top-k / top-p,
// a seeded draw, and the logprobs OpenAI's API reports. One Sampler per sequence; it remembers the tokens
// it chose, which the penalties need.
//
// Order, as vLLM and Hugging Face apply them: repetition penalty (prompt + generated), then frequency
// and presence penalties (generated only, OpenAI's definition) and logit_bias, then temperature, then
// min-p, then top-k and top-p over what min-p kept (vLLM's order; Hugging Face cuts min-p last).
// Reported logprobs are the log-softmax of the logits after penalties and temperature, before top-k /
// top-p truncation: the distribution the token is drawn from, without the renormalization over the kept
// set (which would give -inf to every cut token). With temperature 0 (greedy) no temperature is applied.
import { CANDIDATES, type DecodeCandidates, type DecodeChoice } from "./decode-row.ts";
import { PenaltyList } from "./penalty-list.ts";
import { Prng } from "./prng.ts";

export interface SamplingParams {
  /** 0 = greedy (argmax; ties go to the lowest token id). */
  temperature: number;
  /** Nucleus mass in (0, 1]; 1 = off. */
  topP: number;
  /** Keep only the k most likely tokens; 0 (or less) = off. */
  topK: number;
  /** Keep only tokens at least this fraction as likely as the most likely one, in [0, 1]; 0 = off. */
  minP: number;
  /** Same seed and inputs → same tokens; null = a fresh random seed. */
  seed: number | null;
  presencePenalty: number;
  frequencyPenalty: number;
  /** Hugging Face's: > 1 discourages every token seen in prompt or output; 1 = off. */
  repetitionPenalty: number;
  /** OpenAI's logit_bias: added to each listed token's logit (−100 … 100); absent or empty = none. */
  logitBias?: ReadonlyMap<number, number>;
  /** How many alternatives to report with each token (0–20); null = logprobs not requested. */
  topLogprobs: number | null;
}

export const GREEDY: SamplingParams = {
  temperature: 0,
  topP: 1,
  topK: 0,
  minP: 0,
  seed: null,
  presencePenalty: 0,
  frequencyPenalty: 0,
  repetitionPenalty: 1,
  topLogprobs: null,
};

/**
 * Greedy with nothing to adjust or report: one pass over the logits (NaN counts as -inf; ties go to the
 * lowest id), no copy, no softmax.
 */
function plainArgmax(input: Float32Array): SampledToken {
  let best = -1;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < input.length; i++) {
    const l = input[i]!;
    if (l > max) {
      max = l;
      best = i;
    }
  }
  if (best < 0) throw new RangeError("sampler: every logit is -inf or NaN");
  if (max === Number.POSITIVE_INFINITY) throw new RangeError(`sampler: logit of token ${best} is +inf`);
  return { token: best, logprob: Number.NaN, top: [] };
}

/** Whether a draw keeps fewer than all `vocab` tokens (top-k, top-p, min-p). */
function truncates(p: SamplingParams, vocab: number): boolean {
  return (p.topK > 0 && p.topK < vocab) || p.topP < 1 || p.minP > 0;
}

function isPenalized(p: SamplingParams): boolean {
  return (
    p.repetitionPenalty !== 1 ||
    p.presencePenalty !== 0 ||
    p.frequencyPenalty !== 0 ||
    (p.logitBias?.size ?? 0) > 0
  );
}

/** OpenAI's range for a logit_bias value. */
export const MAX_LOGIT_BIAS = 100;

/** OpenAI's limit on top_logprobs. */
export const MAX_TOP_LOGPROBS = 20;

export interface SampledToken {
  token: number;
  /** NaN for a greedy pick when logprobs were not requested: nothing reads it, and it costs a softmax. */
  logprob: number;
  /** The topLogprobs most likely tokens, most likely first (ties: lowest id first). */
  top: { token: number; logprob: number }[];
}

// exp(z) for z ≤ 0, three times faster than Math.exp in V8, which dominates a 32k-vocabulary step: a
// table of exp(-k/256) times a cubic for the remainder r ∈ (-1/256, 0] (relative error < 1e-11, far
// below the float32 the result is stored in). Below -EXP_CUTOFF it returns 0: exp(-40) ≈ 4e-18, so even
// 10^5 such tokens move a sum that is ≥ 1 by less than float32 resolution.
const EXP_STEPS = 256;
const EXP_CUTOFF = 40;
const EXP_TABLE = Float64Array.from({ length: EXP_CUTOFF * EXP_STEPS + 1 }, (_, k) =>
  Math.exp(-k / EXP_STEPS),
);

function expOfNonPositive(z: number): number {
  if (!(z >= -EXP_CUTOFF)) return 0;
  const k = (-z * EXP_STEPS) | 0;
  const r = z + k / EXP_STEPS;
  return EXP_TABLE[k]! * (1 + r * (1 + r * (0.5 + r / 6)));
}

function check(ok: boolean, message: string): void {
  if (!ok) throw new RangeError(`sampling parameters: ${message}`);
}

function validate(p: SamplingParams): void {
  check(
    Number.isFinite(p.temperature) && p.temperature >= 0,
    `temperature must be ≥ 0, got ${p.temperature}`,
  );
  check(Number.isFinite(p.topP) && p.topP > 0 && p.topP <= 1, `top_p must be in (0, 1], got ${p.topP}`);
  check(Number.isSafeInteger(p.topK), `top_k must be an integer, got ${p.topK}`);
  check(Number.isFinite(p.minP) && p.minP >= 0 && p.minP <= 1, `min_p must be in [0, 1], got ${p.minP}`);
  check(p.seed === null || Number.isSafeInteger(p.seed), `seed must be an integer, got ${p.seed}`);
  check(Number.isFinite(p.presencePenalty), `presence_penalty must be finite, got ${p.presencePenalty}`);
  check(Number.isFinite(p.frequencyPenalty), `frequency_penalty must be finite, got ${p.frequencyPenalty}`);
  check(
    Number.isFinite(p.repetitionPenalty) && p.repetitionPenalty > 0,
    `repetition_penalty must be > 0, got ${p.repetitionPenalty}`,
  );
  for (const [token, bias] of p.logitBias ?? []) {
    check(Number.isSafeInteger(token) && token >= 0, `logit_bias token must be an id ≥ 0, got ${token}`);
    check(
      Number.isFinite(bias) && Math.abs(bias) <= MAX_LOGIT_BIAS,
      `logit_bias for token ${token} must be in -${MAX_LOGIT_BIAS}..${MAX_LOGIT_BIAS}, got ${bias}`,
    );
  }
  check(
    p.topLogprobs === null ||
      (Number.isSafeInteger(p.topLogprobs) && p.topLogprobs >= 0 && p.topLogprobs <= MAX_TOP_LOGPROBS),
    `top_logprobs must be an integer in 0..${MAX_TOP_LOGPROBS}, got ${p.topLogprobs}`,
  );
}

export class Sampler {
  private readonly params: SamplingParams;
  private readonly rng: Prng;
  /** The penalties, applied here (sample) or by an engine (decodeChoice); null without penalties. */
  private readonly penaltyList: PenaltyList | null;
  // Per-vocabulary scratch, allocated on the first call and reused: processed logits, their exps, and
  // the index heap of top-k / top-p.
  private logits = new Float32Array(0);
  private exps = new Float32Array(0);
  private heap = new Int32Array(0);

  constructor(params: SamplingParams, promptTokens: readonly number[]) {
    validate(params);
    this.params = { ...params };
    this.rng = new Prng(params.seed);
    this.penaltyList = isPenalized(params) ? new PenaltyList(params, promptTokens) : null;
  }

  /**
   * True when this sequence's next token is the argmax of its raw logits and nothing else is reported
   * (greedy, no logprobs, no penalties): sample() then only scans the row.
   */
  private get takesArgmax(): boolean {
    const p = this.params;
    return p.temperature === 0 && p.topLogprobs === null && !isPenalized(p);
  }

  /**
   * How an engine may settle this sequence's next token without sending its whole row: its argmax (greedy
   * without logprobs), or its CANDIDATES largest logits where a draw from them can be the draw from the row
   * (top-k within them, or top-p, whose cover sampleCandidates checks); both of the row after this
   * sequence's penalties, which the choice then carries. Null when it needs the row.
   */
  get decodeChoice(): DecodeChoice | null {
    const kind = this.choiceKind;
    if (kind === null) return null;
    const penalties = this.penaltyList ? { penalties: this.penaltyList.snapshot() } : {};
    if (kind === "argmax") return { kind, ...penalties };
    const p = this.params;
    // Exactly when sampleCandidates may refuse: a draw not held within the candidates by a top_k, or one
    // whose top_p is a share of min_p's kept mass, which may reach past them (top_k or not).
    const heldByTopK = p.topK > 0 && p.topK <= CANDIDATES;
    const mayNeedRow = p.temperature > 0 && (!heldByTopK || (p.minP > 0 && p.topP < 1));
    return { kind, temperature: p.temperature, mayNeedRow, ...penalties };
  }

  private get choiceKind(): DecodeChoice["kind"] | null {
    const p = this.params;
    if (p.temperature === 0) return p.topLogprobs === null ? "argmax" : "candidates";
    // top_logprobs (≤ MAX_TOP_LOGPROBS) always lies within the candidates.
    const truncated = (p.topK > 0 && p.topK <= CANDIDATES) || p.topP < 1 || p.minP > 0;
    return truncated ? "candidates" : null;
  }

  /**
   * sample(), from a row's candidates instead of the row: the same token, logprob and top logprobs, and
   * the same draw of the generator. Null (and nothing drawn) when the kept set may reach past the
   * candidates, i.e. top-p's mass is not reached within them: then sample() the row.
   */
  sampleCandidates(c: DecodeCandidates): SampledToken | null {
    const p = this.params;
    if (this.choiceKind !== "candidates") {
      throw new Error("sampler: candidates serve only the sequences decodeChoice sends to them");
    }
    const n = c.tokens.length;
    // sample() draws with index-order cumulation where nothing truncates: only the whole row gives that.
    if (p.temperature > 0 && !truncates(p, c.vocab)) return null;
    const max = c.logits[0]!;
    const invT = p.temperature > 0 ? 1 / p.temperature : 1;
    // log Σ exp((x - max)·invT) over the vocabulary, from the engine's log Σ exp(x·invT).
    const logSum = c.logSumExp - max * invT;
    // As sample() rounds them: processed logits and their exponentials are kept as float32.
    const shifted = (k: number) => (c.logits[k]! - max) * invT;
    const weight = (k: number) => Math.fround(expOfNonPositive(shifted(k)));
    const logprob = (k: number) => Math.fround(shifted(k)) - logSum;
    let chosen = 0;
    if (p.temperature > 0) {
      let limit = p.topK > 0 ? Math.min(p.topK, c.vocab) : c.vocab;
      // top_p is a share of the row's mass, or of min_p's kept tokens' (the most likely weighs 1).
      let keptMass = Math.exp(logSum);
      if (p.minP > 0) {
        let m = 0;
        keptMass = 0;
        while (m < n && weight(m) >= p.minP) keptMass += weight(m++);
        // min_p may keep tokens past the candidates: their mass, or their count, is then unknown here.
        if (m === n && n < c.vocab && (p.topP < 1 || limit > n)) return null;
        limit = Math.min(limit, m);
      }
      const massLimit = p.topP * keptMass;
      let kept = 0;
      let mass = 0;
      while (kept < limit && mass < massLimit && kept < n) mass += weight(kept++);
      if (kept === n && kept < limit && mass < massLimit && n < c.vocab) return null;
      const target = this.rng.nextFloat() * mass;
      let cum = 0;
      for (let k = 0; k < kept; k++) {
        cum += weight(k);
        if (cum > target) {
          chosen = k;
          break;
        }
      }
    }
    const top = Array.from({ length: Math.min(p.topLogprobs ?? 0, n) }, (_, k) => ({
      token: c.tokens[k]!,
      logprob: logprob(k),
    }));
    return this.chose({ token: c.tokens[chosen]!, logprob: logprob(chosen), top });
  }

  /** Records a token an engine picked for this sequence: its argmax, after its penalties (decodeChoice). */
  take(token: number): SampledToken {
    if (this.choiceKind !== "argmax")
      throw new Error("sampler: only a greedy sequence without logprobs takes a pick");
    return this.chose({ token, logprob: Number.NaN, top: [] });
  }

  sample(input: Float32Array): SampledToken {
    const v = input.length;
    if (v === 0) throw new RangeError("sampler: empty logits");
    if (this.logits.length !== v) {
      this.logits = new Float32Array(v);
      this.exps = new Float32Array(v);
    }
    const p = this.params;
    if (this.takesArgmax) return this.chose(plainArgmax(input));
    const x = this.logits;
    for (let i = 0; i < v; i++) {
      const l = input[i]!;
      x[i] = Number.isNaN(l) ? Number.NEGATIVE_INFINITY : l;
    }
    this.penaltyList?.applyTo(x);
    let best = 0;
    for (let i = 1; i < v; i++) if (x[i]! > x[best]!) best = i;
    const max = x[best]!;
    if (max === Number.NEGATIVE_INFINITY || Number.isNaN(max)) {
      throw new RangeError("sampler: every logit is -inf or NaN");
    }
    if (max === Number.POSITIVE_INFINITY) throw new RangeError(`sampler: logit of token ${best} is +inf`);
    // Greedy without logprobs needs no softmax: the exps over the vocabulary are most of a step's sampling.
    if (p.temperature === 0 && p.topLogprobs === null)
      return this.chose({ token: best, logprob: Number.NaN, top: [] });
    // Shifting by the max first keeps tiny temperatures from overflowing; log-softmax is shift-invariant.
    const invT = p.temperature > 0 ? 1 / p.temperature : 1;
    const ex = this.exps;
    let sum = 0;
    for (let i = 0; i < v; i++) {
      const z = (x[i]! - max) * invT;
      x[i] = z;
      const e = expOfNonPositive(z);
      ex[i] = e;
      sum += e;
    }
    const logSum = Math.log(sum);

    let token: number;
    if (p.temperature === 0) token = best;
    else if (truncates(p, v)) token = this.drawTruncated(sum);
    else token = this.drawFull(sum);

    const top: { token: number; logprob: number }[] = [];
    if (p.topLogprobs) {
      for (const t of this.topTokens(p.topLogprobs)) top.push({ token: t, logprob: x[t]! - logSum });
    }
    return this.chose({ token, logprob: x[token]! - logSum, top });
  }

  /** Remembers the token for the penalties of the next steps. */
  private chose(result: SampledToken): SampledToken {
    this.penaltyList?.chose(result.token);
    return result;
  }

  private drawFull(sum: number): number {
    const e = this.exps;
    const target = this.rng.nextFloat() * sum;
    let cum = 0;
    let last = 0;
    for (let i = 0; i < e.length; i++) {
      const w = e[i]!;
      if (w === 0) continue;
      cum += w;
      last = i;
      if (cum > target) return i;
    }
    return last;
  }

  /**
   * Min-p, top-k and top-p without sorting the vocabulary. Every token with probability ≥ τ forms a prefix
   * of the sorted order, so once that set holds k tokens or top_p of the mass it contains the kept set; τ
   * starts where the set can hold at most a thousand tokens and drops until that holds, but never below
   * min_p's floor (the most likely token weighs 1, so min_p is a weight). Only the candidates are then
   * ordered, through a heap popped until k are taken or their mass reaches top_p of what min_p kept.
   */
  private drawTruncated(sum: number): number {
    const p = this.params;
    const e = this.exps;
    const v = e.length;
    if (this.heap.length !== v) this.heap = new Int32Array(v);
    const h = this.heap;
    const k = p.topK > 0 ? Math.min(p.topK, v) : v;
    const floor = p.minP;
    let keptMass = sum;
    if (floor > 0) {
      keptMass = 0;
      for (let i = 0; i < v; i++) if (e[i]! >= floor) keptMass += e[i]!;
    }
    const massLimit = p.topP * keptMass;
    let tau = Math.max(sum * 1e-3, floor);
    let n = 0;
    for (;;) {
      n = 0;
      let mass = 0;
      for (let i = 0; i < v; i++) {
        const w = e[i]!;
        if (w >= tau) {
          h[n++] = i;
          mass += w;
        }
      }
      if (n >= k || mass >= massLimit || tau <= floor) break;
      tau = Math.max(floor, tau > sum * 1e-30 ? tau / 64 : 0);
    }
    for (let i = (n >> 1) - 1; i >= 0; i--) this.siftDown(i, n);
    let size = n;
    let kept = 0;
    let mass = 0;
    // Popped ids collect at the tail of the candidates, the most likely last.
    while (kept < k && mass < massLimit && size > 0) {
      const id = h[0]!;
      size--;
      h[0] = h[size]!;
      h[size] = id;
      this.siftDown(0, size);
      mass += e[id]!;
      kept++;
    }
    const target = this.rng.nextFloat() * mass;
    let cum = 0;
    for (let j = n - 1; j >= size; j--) {
      const id = h[j]!;
      cum += e[id]!;
      if (cum > target) return id;
    }
    return h[n - 1]!;
  }

  private siftDown(start: number, size: number): void {
    const h = this.heap;
    const x = this.logits;
    let i = start;
    const id = h[i]!;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= size) break;
      const r = c + 1;
      if (r < size) {
        const a = h[c]!;
        const b = h[r]!;
        if (x[b]! > x[a]! || (x[b] === x[a] && b < a)) c = r;
      }
      const cid = h[c]!;
      if (x[cid]! > x[id]! || (x[cid] === x[id] && cid < id)) {
        h[i] = cid;
        i = c;
      } else break;
    }
    h[i] = id;
  }

  /** The n highest processed logits, best first, ties to the lower id; one pass with a tiny sorted list. */
  private topTokens(n: number): number[] {
    const x = this.logits;
    const out: number[] = [];
    for (let i = 0; i < x.length; i++) {
      const l = x[i]!;
      if (out.length === n) {
        if (l <= x[out[n - 1]!]!) continue;
        out.pop();
      }
      // Insertion from the tail; equal logits keep their earlier (lower) id ahead.
      let j = out.length;
      out.push(i);
      while (j > 0 && x[out[j - 1]!]! < l) {
        out[j] = out[j - 1]!;
        j--;
      }
      out[j] = i;
    }
    return out;
  }
}
