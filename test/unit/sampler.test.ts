// The sampler: greedy and seeded draws, top-k / top-p truncation, OpenAI's and Hugging Face's penalties,
// and the logprobs it reports.
import { describe, expect, it } from "vitest";
import { CANDIDATES, type DecodeCandidates, type RowPenalties } from "../../worker/engine/decode-row.ts";
import { GREEDY, Sampler, type SamplingParams } from "../../worker/engine/sampler.ts";

const params = (p: Partial<SamplingParams>): SamplingParams => ({ ...GREEDY, ...p });
const logits = (values: number[]): Float32Array => Float32Array.from(values);

/** Deterministic pseudo-random logits in [-spread, spread]. */
function noise(n: number, salt: number, spread = 4): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++)
    out[i] = ((Math.sin((i + 1) * 12.9898 + salt * 78.233) * 43758.5453) % 1) * spread;
  return out;
}

function draw(p: SamplingParams, row: Float32Array, n: number, prompt: number[] = []): number[] {
  const s = new Sampler(p, prompt);
  return Array.from({ length: n }, () => s.sample(row).token);
}

function frequencies(tokens: number[], vocab: number): number[] {
  const f = new Array<number>(vocab).fill(0);
  for (const t of tokens) f[t]! += 1 / tokens.length;
  return f;
}

const argmax = (row: Float32Array): number => row.indexOf(Math.max(...row));

describe("choosing a token", () => {
  it("is greedy at temperature 0, ties going to the lowest id", () => {
    expect(new Sampler(GREEDY, []).sample(logits([0.1, 2, -1, 1.5])).token).toBe(1);
    expect(new Sampler(GREEDY, []).sample(logits([1, 3, 0, 3, 3])).token).toBe(1);
    const row = noise(32000, 1);
    expect(new Sampler(GREEDY, []).sample(row).token).toBe(argmax(row));
  });

  it("skips the softmax for a greedy pick nobody asked logprobs of, picking the same token", () => {
    const row = noise(32000, 7);
    row[5] = Number.NaN;
    const withLogprobs = new Sampler(params({ topLogprobs: 0 }), []).sample(row);
    const without = new Sampler(GREEDY, []).sample(row);
    expect(without.token).toBe(withLogprobs.token);
    expect(Number.isFinite(withLogprobs.logprob)).toBe(true);
    expect(without).toEqual({ token: withLogprobs.token, logprob: Number.NaN, top: [] });
    // Penalties still apply on that path: the repeated best token loses to the runner-up.
    const repeated = new Sampler(params({ repetitionPenalty: 1e6 }), [without.token]).sample(row);
    expect(repeated.token).not.toBe(without.token);
    expect(Number.isNaN(repeated.logprob)).toBe(true);
    expect(() => new Sampler(GREEDY, []).sample(logits([Number.NaN, Number.NaN]))).toThrow(/-inf or NaN/);
  });

  it("takes an engine's pick where it is the argmax of the row after the sequence's penalties", () => {
    for (const p of [{}, { repetitionPenalty: 1.1 }, { presencePenalty: 0.5 }]) {
      const greedy = new Sampler(params(p), [3]);
      expect(greedy.decodeChoice?.kind).toBe("argmax");
      expect(greedy.take(7)).toEqual({ token: 7, logprob: Number.NaN, top: [] });
    }
    expect(new Sampler(GREEDY, [3]).decodeChoice).toEqual({ kind: "argmax" });
    for (const p of [{ temperature: 0.5 }, { topLogprobs: 0 }]) {
      const sampler = new Sampler(params(p), [3]);
      expect(sampler.decodeChoice?.kind).not.toBe("argmax");
      expect(() => sampler.take(7)).toThrow(/only a greedy sequence/);
    }
  });

  it("draws the same tokens from the same seed, and other tokens from another seed", () => {
    const row = noise(1000, 2, 1);
    const a = draw(params({ temperature: 1, seed: 42 }), row, 64);
    expect(draw(params({ temperature: 1, seed: 42 }), row, 64)).toEqual(a);
    expect(draw(params({ temperature: 1, seed: 43 }), row, 64)).not.toEqual(a);
    expect(draw(params({ temperature: 1, seed: null }), row, 64)).not.toEqual(a);
    expect(new Set(a).size).toBeGreaterThan(10);
  });

  it("draws with the softmax's probabilities, sharpened by temperature", () => {
    const row = logits([Math.log(0.5), Math.log(0.3), Math.log(0.2)]);
    const f1 = frequencies(draw(params({ temperature: 1, seed: 1 }), row, 20000), 3);
    for (const [i, p] of [0.5, 0.3, 0.2].entries()) expect(Math.abs(f1[i]! - p)).toBeLessThan(0.015);
    // Temperature 0.5 squares the probabilities before renormalizing: 25 : 9 : 4.
    const fHalf = frequencies(draw(params({ temperature: 0.5, seed: 2 }), row, 20000), 3);
    for (const [i, p] of [25 / 38, 9 / 38, 4 / 38].entries())
      expect(Math.abs(fHalf[i]! - p)).toBeLessThan(0.015);
  });

  it("with top_k = 1 is greedy whatever the temperature and seed", () => {
    for (let salt = 0; salt < 5; salt++) {
      const row = noise(32000, salt);
      expect(draw(params({ temperature: 1.5, topK: 1, seed: salt }), row, 5)).toEqual(
        Array(5).fill(argmax(row)),
      );
    }
  });

  it("with a tiny top_p is greedy", () => {
    const row = noise(32000, 9);
    expect(draw(params({ temperature: 2, topP: 1e-6, seed: 9 }), row, 5)).toEqual(Array(5).fill(argmax(row)));
  });

  it("keeps exactly the k most likely tokens with top_k", () => {
    const row = logits([1, 5, 2, 4, 3, 0]);
    const tokens = draw(params({ temperature: 1, topK: 3, seed: 3 }), row, 3000);
    expect([...new Set(tokens)].sort()).toEqual([1, 3, 4]);
  });

  it("keeps the smallest most-likely set reaching top_p, renormalized", () => {
    const row = logits([Math.log(0.15), Math.log(0.5), Math.log(0.05), Math.log(0.3)]);
    // 0.5 < 0.75, then 0.5 + 0.3 ≥ 0.75: tokens 1 and 3, drawn 5 : 3.
    const f = frequencies(draw(params({ temperature: 1, topP: 0.75, seed: 4 }), row, 20000), 4);
    expect(f[0]).toBe(0);
    expect(f[2]).toBe(0);
    expect(Math.abs(f[1]! - 0.625)).toBeLessThan(0.015);
    // top_k and top_p together: the tighter one wins.
    const both = draw(params({ temperature: 1, topP: 0.99, topK: 2, seed: 5 }), row, 2000);
    expect([...new Set(both)].sort()).toEqual([1, 3]);
  });

  it("keeps with min_p the tokens at least that fraction as likely as the best, renormalized", () => {
    // Probabilities 0.4, 0.3, 0.15, 0.1, 0.05: min_p 0.3 keeps ≥ 0.12, tokens 0-2, drawn 8 : 6 : 3.
    const row = logits([0.4, 0.3, 0.15, 0.1, 0.05].map(Math.log));
    const f = frequencies(draw(params({ temperature: 1, minP: 0.3, seed: 8 }), row, 20000), 5);
    expect(f[3]).toBe(0);
    expect(f[4]).toBe(0);
    expect(Math.abs(f[0]! - 8 / 17)).toBeLessThan(0.015);
    expect(Math.abs(f[2]! - 3 / 17)).toBeLessThan(0.015);
    // top_p is a share of what min_p kept (vLLM's order): 0.75 of 0.85 is reached by tokens 0 and 1 (0.7);
    // as a share of the whole row (Hugging Face's order) it would keep token 2 as well.
    const both = draw(params({ temperature: 1, minP: 0.3, topP: 0.75, seed: 9 }), row, 3000);
    expect([...new Set(both)].sort()).toEqual([0, 1]);
    // Temperature sharpens before min_p cuts: at 0.5 the ratios square, 0.15/0.4 → 0.14, under 0.3.
    const sharp = draw(params({ temperature: 0.5, minP: 0.3, seed: 10 }), row, 3000);
    expect([...new Set(sharp)].sort()).toEqual([0, 1]);
  });

  it("cuts a flat 32k row with min_p at exactly its floor", () => {
    const row = noise(32000, 12, 2);
    const max = Math.max(...row);
    const kept = new Set([...row.keys()].filter((i) => Math.exp(row[i]! - max) >= 0.5));
    expect(kept.size).toBeGreaterThan(2000);
    const tokens = draw(params({ temperature: 1, minP: 0.5, seed: 11 }), row, 400);
    for (const t of tokens) expect(kept.has(t)).toBe(true);
    expect(new Set(tokens).size).toBeGreaterThan(300);
  });

  it("finds the nucleus of a flat 32k distribution", () => {
    const row = noise(32000, 11, 0.01);
    const tokens = draw(params({ temperature: 1, topP: 0.5, seed: 6 }), row, 50);
    const sorted = [...row].map((l, i) => [l, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
    let mass = 0;
    const total = row.reduce((s, l) => s + Math.exp(l), 0);
    const nucleus = new Set<number>();
    // A hair more than top_p, so float rounding at the nucleus edge cannot matter.
    for (const [l, i] of sorted) {
      if (mass >= 0.5005 * total) break;
      nucleus.add(i);
      mass += Math.exp(l);
    }
    expect(nucleus.size).toBeGreaterThan(10000);
    for (const t of tokens) expect(nucleus.has(t)).toBe(true);
  });

  it("never picks a NaN logit and leaves the caller's logits untouched", () => {
    const row = logits([Number.NaN, 1, 0.5]);
    expect(draw(params({ temperature: 1, seed: 7 }), row, 200)).not.toContain(0);
    expect(Number.isNaN(row[0]!)).toBe(true);
    expect(row[1]).toBe(1);
  });
});

describe("penalties", () => {
  it("presence penalty pushes away from tokens already generated", () => {
    const row = logits([2, 1.9, 0]);
    expect(draw(GREEDY, row, 3)).toEqual([0, 0, 0]);
    // Presence is paid once, however often: 1.5 vs 1.9, then 1.5 vs 1.4.
    expect(draw(params({ presencePenalty: 0.5 }), row, 3)).toEqual([0, 1, 0]);
  });

  it("frequency penalty grows with each repetition", () => {
    // token 0: 3, 2.4, 1.8 …; token 1: 2, 1.4 …
    expect(draw(params({ frequencyPenalty: 0.6 }), logits([3, 2, 0]), 4)).toEqual([0, 0, 1, 0]);
  });

  it("presence and frequency penalties ignore the prompt", () => {
    expect(draw(params({ presencePenalty: 1, frequencyPenalty: 1 }), logits([2, 1.5]), 1, [0, 0, 0])).toEqual(
      [0],
    );
  });

  it("repetition penalty divides positive and multiplies negative logits of prompt and output tokens", () => {
    expect(draw(params({ repetitionPenalty: 1.5 }), logits([2, 1.5]), 1, [0])).toEqual([1]);
    expect(draw(params({ repetitionPenalty: 1.5 }), logits([-1, -1.2]), 1, [0])).toEqual([1]);
    expect(draw(params({ repetitionPenalty: 1.2 }), logits([2, 1.8]), 2)).toEqual([0, 1]);
  });
});

describe("logit_bias", () => {
  const bias = (entries: [number, number][]) => params({ logitBias: new Map(entries) });

  it("adds to the listed tokens' logits: +100 forces a token, -100 bans one", () => {
    const row = logits([3, 2, 1, 0]);
    expect(draw(bias([[3, 100]]), row, 3)).toEqual([3, 3, 3]);
    expect(draw(bias([[0, -100]]), row, 1)).toEqual([1]);
    // 1 + 1.5 = 2.5 beats 2 but not 3.
    expect(draw(bias([[2, 1.5]]), row, 1)).toEqual([0]);
    expect(draw(bias([[2, 2.5]]), row, 1)).toEqual([2]);
  });

  it("shows in the reported logprobs, which are of the biased distribution", () => {
    const row = logits([1, 1]);
    const token = new Sampler({ ...bias([[1, Math.log(3)]]), topLogprobs: 2 }, []).sample(row);
    expect(token.token).toBe(1);
    expect(token.logprob).toBeCloseTo(Math.log(0.75), 5);
    expect(token.top.map((t) => t.token)).toEqual([1, 0]);
  });

  it("adds to the penalties of a chosen token, and leaves an unseen token out of the repetition penalty", () => {
    // token 0: 3 + 0.5, then 3 + 0.5 - 1 (frequency) - 0 …; token 1: 2.8.
    expect(draw({ ...bias([[0, 0.5]]), frequencyPenalty: 1 }, logits([3, 2.8]), 3)).toEqual([0, 1, 0]);
    // Repetition 2 halves only the seen token 1 (prompt): 2 → 1; the biased, unseen token 0 keeps 1 + 0.5.
    expect(draw({ ...bias([[0, 0.5]]), repetitionPenalty: 2 }, logits([1, 2]), 1, [1])).toEqual([0]);
    // Once chosen, token 0 is seen: 1 / 2 + 0.5 = 1 against token 1's 1; ties go to the lower id.
    expect(draw({ ...bias([[0, 0.5]]), repetitionPenalty: 2 }, logits([1, 2]), 2, [1])).toEqual([0, 0]);
    expect(draw({ ...bias([[0, 0.4]]), repetitionPenalty: 2 }, logits([1, 2]), 2, [1])).toEqual([0, 1]);
  });
});

describe("logprobs", () => {
  it("exponentiate to a distribution that sums to one", () => {
    const row = noise(20, 3);
    const s = new Sampler(params({ temperature: 0.7, seed: 1, topLogprobs: 20 }), []);
    const out = s.sample(row);
    expect(out.top).toHaveLength(20);
    expect(out.top.reduce((sum, t) => sum + Math.exp(t.logprob), 0)).toBeCloseTo(1, 6);
    expect(out.top.find((t) => t.token === out.token)!.logprob).toBeCloseTo(out.logprob, 12);
  });

  it("are the log-softmax after penalties and temperature, best first with ties by id", () => {
    const row = logits([1, 3, 3, 0, 2]);
    const s = new Sampler(params({ temperature: 2, seed: 1, topLogprobs: 3, repetitionPenalty: 1.5 }), [4]);
    const out = s.sample(row);
    // Processed logits: [1, 3, 3, 0, 2/1.5] / 2.
    const z = [0.5, 1.5, 1.5, 0, 2 / 3];
    const lse = Math.log(z.reduce((a, v) => a + Math.exp(v), 0));
    expect(out.top.map((t) => t.token)).toEqual([1, 2, 4]);
    for (const t of out.top) expect(t.logprob).toBeCloseTo(z[t.token]! - lse, 6);
    expect(out.logprob).toBeCloseTo(z[out.token]! - lse, 6);
  });

  it("are reported for greedy choices at temperature 1", () => {
    const out = new Sampler(params({ topLogprobs: 2 }), []).sample(logits([0, Math.log(3)]));
    expect(out.token).toBe(1);
    expect(out.logprob).toBeCloseTo(Math.log(0.75), 6);
    expect(out.top.map((t) => t.token)).toEqual([1, 0]);
  });

  it("leave top empty unless asked", () => {
    expect(new Sampler(GREEDY, []).sample(noise(50, 1)).top).toEqual([]);
    expect(new Sampler(params({ topLogprobs: 0 }), []).sample(noise(50, 1)).top).toEqual([]);
  });
});

describe("parameters", () => {
  it("are validated with the offending value named", () => {
    const bad: [Partial<SamplingParams>, string][] = [
      [{ temperature: -1 }, "temperature must be ≥ 0, got -1"],
      [{ topP: 0 }, "top_p must be in (0, 1], got 0"],
      [{ topK: 1.5 }, "top_k must be an integer"],
      [{ minP: 1.5 }, "min_p must be in [0, 1], got 1.5"],
      [{ minP: Number.NaN }, "min_p must be in [0, 1], got NaN"],
      [{ topLogprobs: 21 }, "top_logprobs must be an integer in 0..20, got 21"],
      [{ repetitionPenalty: 0 }, "repetition_penalty must be > 0"],
      [{ seed: 0.5 }, "seed must be an integer"],
      [{ logitBias: new Map([[3, 101]]) }, "logit_bias for token 3 must be in -100..100, got 101"],
      [{ logitBias: new Map([[-1, 1]]) }, "logit_bias token must be an id ≥ 0, got -1"],
    ];
    for (const [p, message] of bad) expect(() => new Sampler(params(p), [])).toThrow(message);
  });
});

/** What an engine sends for a row: its CANDIDATES largest logits (ties: lower id first) and log Σ exp(x/T). */
function candidatesOf(row: Float32Array, temperature: number): DecodeCandidates {
  const order = [...row.keys()].sort((a, b) => row[b]! - row[a]! || a - b).slice(0, CANDIDATES);
  const invT = temperature > 0 ? 1 / temperature : 1;
  const max = row[order[0]!]!;
  let sum = 0;
  for (const l of row) sum += Math.exp((l - max) * invT);
  return {
    tokens: Int32Array.from(order),
    logits: Float32Array.from(order, (t) => row[t]!),
    logSumExp: max * invT + Math.log(sum),
    vocab: row.length,
  };
}

describe("drawing from an engine's candidates", () => {
  it("gives what sampling the whole row gives: tokens, logprobs, top logprobs and the generator's draws", () => {
    // A peaked row (a real model's shape), so top-p's mass lies within the candidates.
    const row = noise(32000, 11, 4);
    for (let i = 0; i < 40; i++) row[i * 97] = 14 - i * 0.2;
    // Each with whether the draw may need the row after all: only top-p without a top-k inside the candidates.
    const cases: [Partial<SamplingParams>, boolean][] = [
      [{ temperature: 0.8, topP: 0.9, seed: 5 }, true],
      [{ temperature: 1.3, topK: 20, seed: 6, topLogprobs: 5 }, false],
      [{ temperature: 0.5, topK: 64, topP: 0.95, seed: 7 }, false],
      [{ temperature: 0, topLogprobs: 3 }, false],
      // min_p whose kept tokens lie within the candidates, alone and with top-p and top-k.
      [{ temperature: 0.9, minP: 0.05, seed: 8 }, true],
      [{ temperature: 1.2, minP: 0.02, topP: 0.9, seed: 9, topLogprobs: 2 }, true],
      [{ temperature: 0.7, minP: 0.1, topK: 10, seed: 10 }, false],
    ];
    for (const [p, mayNeedRow] of cases) {
      const whole = new Sampler(params(p), [1, 2]);
      const sparse = new Sampler(params(p), [1, 2]);
      const choice = sparse.decodeChoice;
      expect(choice).toEqual({ kind: "candidates", temperature: p.temperature, mayNeedRow });
      for (let step = 0; step < 12; step++) {
        const want = whole.sample(row);
        const got = sparse.sampleCandidates(candidatesOf(row, p.temperature!))!;
        expect(got.token).toBe(want.token);
        expect(got.logprob).toBeCloseTo(want.logprob, 5);
        expect(got.top.map((t) => t.token)).toEqual(want.top.map((t) => t.token));
        for (const [k, t] of got.top.entries()) expect(t.logprob).toBeCloseTo(want.top[k]!.logprob, 5);
      }
    }
  });

  it("refuses what the candidates cannot settle, drawing nothing, so the row's own draw stays the same", () => {
    const flat = noise(32000, 3, 1);
    const p = params({ temperature: 1, topP: 0.9, seed: 9 });
    const sparse = new Sampler(p, []);
    expect(sparse.sampleCandidates(candidatesOf(flat, 1))).toBeNull();
    expect(sparse.sample(flat).token).toBe(new Sampler(p, []).sample(flat).token);
    // min_p keeping more tokens than the candidates: with top_p their mass is unknown, and so is their
    // number without a top_k within the candidates; a top_k within them settles it.
    for (const q of [{ minP: 0.2 }, { minP: 0.2, topP: 0.95, topK: 8 }]) {
      const refused = new Sampler(params({ temperature: 1, seed: 3, ...q }), []);
      // What may be refused asks the engine to keep its row (else logitsOf finds none: a failed request).
      expect(refused.decodeChoice).toMatchObject({ kind: "candidates", mayNeedRow: true });
      expect(refused.sampleCandidates(candidatesOf(flat, 1))).toBeNull();
    }
    const settled = params({ temperature: 1, seed: 3, minP: 0.2, topK: 8 });
    expect(new Sampler(settled, []).sampleCandidates(candidatesOf(flat, 1))!.token).toBe(
      new Sampler(settled, []).sample(flat).token,
    );
    // Who needs the row: penalties, a full-vocabulary draw, a top_k beyond the candidates.
    for (const q of [
      { temperature: 0.7, presencePenalty: 0.5 },
      { temperature: 0.7 },
      { temperature: 0.7, topK: CANDIDATES + 1 },
    ]) {
      expect(new Sampler(params(q), []).decodeChoice).toBeNull();
    }
    expect(new Sampler(GREEDY, []).decodeChoice).toEqual({ kind: "argmax" });
  });

  it("carries its penalties, which an engine applies to the row before its picks and candidates", () => {
    const row = noise(32000, 13, 4);
    for (let i = 0; i < 40; i++) row[i * 97] = 14 - i * 0.2;
    // Long enough that the penalty entries outgrow their first arrays.
    const prompt = [0, 97, 194, 5, 6, ...Array.from({ length: 200 }, (_, i) => 1000 + i)];
    const cases: Partial<SamplingParams>[] = [
      { temperature: 0.8, topP: 0.9, seed: 5, frequencyPenalty: 0.7, presencePenalty: 0.4 },
      { temperature: 1.1, topK: 16, seed: 6, repetitionPenalty: 1.3, topLogprobs: 4 },
      { temperature: 0, repetitionPenalty: 2, presencePenalty: -0.5, frequencyPenalty: 1.5 },
      { temperature: 0, topLogprobs: 2, frequencyPenalty: 3 },
    ];
    for (const p of cases) {
      const whole = new Sampler(params(p), prompt);
      const sparse = new Sampler(params(p), prompt);
      const tokens = new Set<number>();
      for (let step = 0; step < 16; step++) {
        const choice = sparse.decodeChoice!;
        expect(choice.penalties).toBeDefined();
        const penalized = applyPenalties(row, choice.penalties!);
        const want = whole.sample(row);
        const got =
          choice.kind === "argmax"
            ? sparse.take(argmaxOf(penalized))
            : sparse.sampleCandidates(candidatesOf(penalized, p.temperature!))!;
        expect(got.token).toBe(want.token);
        if (!Number.isNaN(want.logprob)) expect(got.logprob).toBeCloseTo(want.logprob, 5);
        expect(got.top.map((t) => t.token)).toEqual(want.top.map((t) => t.token));
        tokens.add(got.token);
      }
      // The penalties mattered: a row this peaked would otherwise give its top token every time.
      expect(tokens.size).toBeGreaterThan(1);
    }
  });
});

/** RowPenalties as an engine applies them: each value rounded to float32 as Sampler.sample rounds it. */
function applyPenalties(row: Float32Array, penalties: RowPenalties): Float32Array {
  const out = Float32Array.from(row);
  for (const [i, t] of penalties.tokens.entries()) {
    const repetition = penalties.repetition[i]!;
    if (repetition !== 1) out[t] = out[t]! > 0 ? out[t]! / repetition : out[t]! * repetition;
    out[t] = out[t]! - penalties.presence[i]! - penalties.frequency[i]!;
  }
  return out;
}

function argmaxOf(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}
