// Generation through the worker's scheduler with many sampling settings at once, and the comparison that says an
// engine's decode choices (picks, candidates) draw what host sampling of whole rows draws.
import { expect } from "vitest";
import { type Generated, SlotGeneration } from "../../scripts/slot-generation.ts";
import { GREEDY, type SamplingParams } from "../../worker/engine/sampler.ts";
import type { Tokenizer } from "../../worker/engine/tokenizer.ts";
import type { SchedulerEngine } from "../../worker/scheduler.ts";

/**
 * Sampling settings that between them take every decode choice: top-k, top-p (whose mass over the tiny
 * model's flat logits lies past the candidates, so its rows are fetched), logprobs, greedy, penalized picks
 * and candidates (PENALIZED, logit_bias among them), and a draw over the whole vocabulary that needs its row.
 */
export const SAMPLING_MIX: Partial<SamplingParams>[] = [
  { temperature: 0.9, topK: 5, seed: 1 },
  { temperature: 1, topP: 0.8, seed: 2 },
  { temperature: 0.7, topK: 40, topP: 0.95, seed: 3, topLogprobs: 2 },
  {},
  { temperature: 0, topLogprobs: 3 },
  // The tiny model seldom repeats a token within six, so these reward repeats (a repetition penalty below
  // 1, negative presence).
  { temperature: 0, repetitionPenalty: 0.3, frequencyPenalty: 0.5 },
  { temperature: 0.9, topK: 8, seed: 5, presencePenalty: -4, repetitionPenalty: 1.2 },
  { temperature: 0, topLogprobs: 2, frequencyPenalty: 1, presencePenalty: -6 },
  { temperature: 0.8, frequencyPenalty: 0.5, presencePenalty: 0.3, seed: 4 },
  // A bias that wins the first pick, then gives way as the frequency penalty grows (bias and penalties on
  // one token), and a banned token beside a favoured one in a top-k draw.
  {
    temperature: 0,
    logitBias: new Map([
      [65, 6],
      [66, 5.5],
    ]),
    frequencyPenalty: 1,
    repetitionPenalty: 1.1,
  },
  {
    temperature: 0.8,
    topK: 4,
    seed: 6,
    topLogprobs: 2,
    logitBias: new Map([
      [70, 2],
      [71, -100],
    ]),
  },
  // min-p, whose kept tokens decide whether the candidates suffice.
  { temperature: 0.9, minP: 0.6, seed: 7, topLogprobs: 1 },
];

/** The entries of SAMPLING_MIX whose penalties pick or settle on the engine (not on a whole row). */
export const PENALIZED = [5, 6, 7, 9, 10];

/** SAMPLING_MIX without its penalties and biases: what the penalized entries would draw without them. */
export const UNPENALIZED = SAMPLING_MIX.map(
  ({ repetitionPenalty: _r, frequencyPenalty: _f, presencePenalty: _p, logitBias: _b, ...rest }) => rest,
);

/** One request per sampling setting, batched together: request i gets prompt(i), slot i % 2, 6 tokens. */
export function generateEach(
  engine: SchedulerEngine,
  tokenizer: Tokenizer,
  sampling: Partial<SamplingParams>[],
  prompt: (i: number) => number[],
): Promise<Generated[]> {
  const generation = new SlotGeneration(engine, tokenizer, {
    slots: 1,
    maxBatch: sampling.length,
    maxContext: 64,
    stepTokens: 64,
  });
  return Promise.all(
    sampling.map((p, i) =>
      generation.generate({
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
export function expectSameDraws(got: Generated[], want: Generated[]): void {
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
