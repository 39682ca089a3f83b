// Legacy completions' logprobs as OpenAI answers them: parallel arrays whose top_logprobs always hold the
// chosen token, beside the `logprobs` most likely (so up to logprobs + 1 entries; the chosen one alone at 0).
import { describe, expect, it } from "vitest";
import { completionLogprobs } from "../../gateway/logprobs.ts";
import type { TokenLogprob } from "../../schema/wire.ts";

const token = (text: string, logprob: number, top: [string, number][]): TokenLogprob => ({
  token: text,
  logprob,
  bytes: [...Buffer.from(text)],
  token_id: 1,
  top: top.map(([t, l]) => ({ token: t, logprob: l, bytes: [...Buffer.from(t)] })),
});

describe("completionLogprobs", () => {
  it("puts the chosen token into each top_logprobs, once", () => {
    const out = completionLogprobs([
      // Sampled, not the most likely: logprobs 1 answers two entries.
      token("1", -6.5, [["rin", -4.75]]),
      // Greedy: already there.
      token("a", -0.1, [["a", -0.1]]),
      // logprobs 0: the chosen token alone.
      token("b", -2, []),
    ]);
    expect(out.top_logprobs).toEqual([{ rin: -4.75, "1": -6.5 }, { a: -0.1 }, { b: -2 }]);
    expect(out.tokens).toEqual(["1", "a", "b"]);
    expect(out.token_logprobs).toEqual([-6.5, -0.1, -2]);
  });
});
