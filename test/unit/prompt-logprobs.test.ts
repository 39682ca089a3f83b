// A prompt token's logprob, rank and alternatives against a plain float64 log-softmax and a full sort.
import { describe, expect, it } from "vitest";
import { LOGPROB_FLOOR, promptTokenLogprob } from "../../worker/engine/prompt-logprobs.ts";

/** Deterministic logits with repeats (ties), spread over ±8. */
function logitsOf(size: number, seed: number): Float32Array {
  const out = new Float32Array(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    out[i] = Math.round(((x / 2147483648) * 16 - 8) * 4) / 4;
  }
  return out;
}

function naive(logits: Float32Array, target: number, top: number) {
  const values = [...logits];
  const max = Math.max(...values);
  const logSum = max + Math.log(values.reduce((s, l) => s + Math.exp(l - max), 0));
  const order = values.map((l, i) => ({ i, l })).sort((a, b) => b.l - a.l || a.i - b.i);
  return {
    logprob: values[target]! - logSum,
    rank: 1 + values.filter((l) => l > values[target]!).length,
    top: order.slice(0, top).map(({ i, l }) => ({ token: i, logprob: l - logSum })),
  };
}

describe("promptTokenLogprob", () => {
  it("gives the log-softmax, the rank (ties sharing the better one) and the top tokens, lower ids first on ties", () => {
    for (const [size, top] of [
      [50, 0],
      [50, 5],
      [1000, 20],
      [7, 7],
    ] as const) {
      const logits = logitsOf(size, size + top);
      for (const target of [0, 3, size - 1]) {
        const got = promptTokenLogprob(logits, target, top);
        const want = naive(logits, target, top);
        expect(got.token).toBe(target);
        expect(got.logprob).toBeCloseTo(want.logprob, 10);
        expect(got.rank).toBe(want.rank);
        expect(got.top.map((t) => t.token)).toEqual(want.top.map((t) => t.token));
        for (const [k, t] of got.top.entries()) expect(t.logprob).toBeCloseTo(want.top[k]!.logprob, 10);
      }
    }
  });

  it("treats NaN as no chance, floors impossible tokens, and refuses rows or arguments it cannot score", () => {
    const logits = Float32Array.from([1, Number.NaN, 3, Number.NEGATIVE_INFINITY]);
    const nan = promptTokenLogprob(logits, 1, 2);
    expect(nan.logprob).toBe(LOGPROB_FLOOR);
    expect(nan.rank).toBe(3);
    expect(nan.top.map((t) => t.token)).toEqual([2, 0]);
    expect(promptTokenLogprob(logits, 3, 0).logprob).toBe(LOGPROB_FLOOR);
    expect(promptTokenLogprob(logits, 2, 0).logprob).toBeCloseTo(-Math.log(1 + Math.exp(-2)), 12);
    expect(() => promptTokenLogprob(Float32Array.from([Number.NaN, Number.NEGATIVE_INFINITY]), 0, 0)).toThrow(
      "every logit is -inf or NaN",
    );
    expect(() => promptTokenLogprob(Float32Array.from([0, Number.POSITIVE_INFINITY]), 0, 0)).toThrow("+inf");
    expect(() => promptTokenLogprob(logits, 4, 0)).toThrow("outside a row of 4 logits");
    expect(() => promptTokenLogprob(logits, 0, 21)).toThrow("top must be an integer in 0..20");
  });
});
