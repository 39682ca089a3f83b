// Generation through the batching loop with many sampling settings at once, and the comparison that says an
// engine's decode choices (picks, candidates) draw what host sampling of whole rows draws.
import { expect } from "vitest";
import { ContinuousBatcher, type GenerationResult, type StepEngine } from "../../worker/engine/generation.ts";
import { GREEDY, type SamplingParams } from "../../worker/engine/sampler.ts";
import type { Tokenizer } from "../../worker/engine/tokenizer.ts";

/** One request per sampling setting, together in one batcher: request i gets prompt(i), slot i % 2, 6 tokens. */
export function generateEach(
  engine: StepEngine,
  tokenizer: Tokenizer,
  sampling: Partial<SamplingParams>[],
  prompt: (i: number) => number[],
): Promise<GenerationResult[]> {
  const batcher = new ContinuousBatcher(engine, tokenizer, {
    maxBatch: sampling.length,
    maxContext: 64,
    prefillTokenBudget: 64,
  });
  return Promise.all(
    sampling.map((p, i) =>
      batcher.submit({
        id: `r${i}`,
        promptTokens: prompt(i),
        slot: i % 2,
        sampling: { ...GREEDY, ...p },
        maxTokens: 6,
      }),
    ),
  );
}

/** The same tokens, logprobs (to 4 decimals) and top-logprob tokens, request by request. */
export function expectSameDraws(got: GenerationResult[], want: GenerationResult[]): void {
  expect(got.map((r) => r.tokenIds)).toEqual(want.map((r) => r.tokenIds));
  for (const [i, r] of got.entries()) {
    for (const [k, t] of r.tokens.entries()) {
      const wanted = want[i]!.tokens[k]!;
      if (Number.isNaN(wanted.logprob)) expect(Number.isNaN(t.logprob)).toBe(true);
      else expect(t.logprob).toBeCloseTo(wanted.logprob, 4);
      expect(t.top.map((x) => x.token)).toEqual(wanted.top.map((x) => x.token));
    }
  }
}
