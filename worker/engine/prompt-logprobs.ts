// A prompt token's logprob, as evaluation harnesses read it (lm-eval-harness scores a continuation by the
// sum of its tokens' logprobs given the context, and checks each was the greedy choice): the log-softmax of
// the raw logits at the position before it, without temperature, penalties or bias (vLLM's
// prompt_logprobs and OpenAI's echo are the model's own distribution), with its rank among the vocabulary
// and the `top` most likely tokens there.
import { MAX_TOP_LOGPROBS } from "./sampler.ts";

/** How low a logprob the wire carries: the floor for a token the model gives no chance at all (OpenAI's). */
export const LOGPROB_FLOOR = -9999;

export interface PromptTokenLogprob {
  token: number;
  logprob: number;
  /** 1 for the most likely token; ties share the better rank. */
  rank: number;
  /** The most likely tokens, most likely first (ties: lower id first). */
  top: { token: number; logprob: number }[];
}

/** `target`'s logprob under `logits` (one position's row), its rank and the `top` most likely tokens. */
export function promptTokenLogprob(logits: Float32Array, target: number, top: number): PromptTokenLogprob {
  if (!Number.isInteger(target) || target < 0 || target >= logits.length) {
    throw new RangeError(`token ${target} is outside a row of ${logits.length} logits`);
  }
  // As many alternatives as a generated token's top_logprobs may list (vLLM's default max_logprobs too).
  if (!Number.isInteger(top) || top < 0 || top > MAX_TOP_LOGPROBS) {
    throw new RangeError(`top must be an integer in 0..${MAX_TOP_LOGPROBS}, got ${top}`);
  }
  // NaN counts as -inf: such a token has no chance, and it must not poison the sum.
  const at = (i: number) => {
    const l = logits[i]!;
    return Number.isNaN(l) ? Number.NEGATIVE_INFINITY : l;
  };
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, at(i));
  if (max === Number.POSITIVE_INFINITY) throw new RangeError("a logit is +inf");
  if (max === Number.NEGATIVE_INFINITY) throw new RangeError("every logit is -inf or NaN");
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(at(i) - max);
  const logSum = max + Math.log(sum);
  const logprobOf = (i: number) => Math.max(LOGPROB_FLOOR, Math.min(0, at(i) - logSum));

  const own = at(target);
  let rank = 1;
  // The `top` best so far, best first: an insertion into a list of at most 20.
  const best: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    const l = at(i);
    if (l > own) rank++;
    if (top === 0 || (best.length === top && !(l > at(best[top - 1]!)))) continue;
    let j = Math.min(best.length, top - 1);
    while (j > 0 && l > at(best[j - 1]!)) j--;
    best.splice(j, 0, i);
    if (best.length > top) best.pop();
  }
  return {
    token: target,
    logprob: logprobOf(target),
    rank,
    top: best.map((token) => ({ token, logprob: logprobOf(token) })),
  };
}
