// The cost function: exact integer micro-dollars, rounded up once per request, and money formatting.
import { describe, expect, it } from "vitest";
import { costMicros, microsToDollars, PriceInputError } from "../../meter/prices.ts";

const prices = (input: number, output: number) => ({
  inputPriceMicrosPerMillion: input,
  outputPriceMicrosPerMillion: output,
});

describe("costMicros", () => {
  it("is exact when the tokens make whole micro-dollars", () => {
    expect(costMicros(prices(150_000, 600_000), { inputTokens: 2000, outputTokens: 500 })).toBe(600);
    expect(
      costMicros(prices(3_000_000, 15_000_000), { inputTokens: 1_000_000, outputTokens: 1_000_000 }),
    ).toBe(18_000_000);
  });

  it("rounds the request's total up, not each side", () => {
    // 0.5 + 0.5 micro-dollars: rounding each side up would bill 2.
    expect(costMicros(prices(500_000, 500_000), { inputTokens: 1, outputTokens: 1 })).toBe(1);
    // 349.8 → 350, and one millionth over a whole micro-dollar still rounds up.
    expect(costMicros(prices(150_000, 600_000), { inputTokens: 1000, outputTokens: 333 })).toBe(350);
    expect(costMicros(prices(1_000_001, 0), { inputTokens: 1, outputTokens: 0 })).toBe(2);
    expect(costMicros(prices(1, 0), { inputTokens: 1, outputTokens: 0 })).toBe(1);
  });

  it("bills nothing for no tokens or a free base", () => {
    expect(costMicros(prices(150_000, 600_000), { inputTokens: 0, outputTokens: 0 })).toBe(0);
    expect(costMicros(prices(0, 0), { inputTokens: 123_456, outputTokens: 789 })).toBe(0);
  });

  it("stays exact where a float product would round", () => {
    // 2_147_483_647 × 2_147_483_647 = 4_611_686_014_132_420_609 millionths, far past 2^53.
    const max = 2_147_483_647;
    expect(costMicros(prices(max, max), { inputTokens: max, outputTokens: max })).toBe(9_223_372_028_265);
    expect(costMicros(prices(max, 0), { inputTokens: max, outputTokens: 0 })).toBe(4_611_686_014_133);
  });

  it("refuses negative or fractional counts and prices, naming the field", () => {
    expect(() => costMicros(prices(150_000, 600_000), { inputTokens: -1, outputTokens: 0 })).toThrow(
      new PriceInputError("inputTokens must be a non-negative integer, got -1"),
    );
    expect(() => costMicros(prices(150_000, 0.5), { inputTokens: 1, outputTokens: 1 })).toThrow(
      /outputPriceMicrosPerMillion must be a non-negative integer, got 0.5/,
    );
  });
});

describe("costMicros with input from the prefix cache", () => {
  const withCached = (input: number, cached: number | null, output: number) => ({
    ...prices(input, output),
    cachedInputPriceMicrosPerMillion: cached,
  });

  it("bills cached input at the base's cached price, rounded once with the rest", () => {
    // 360 × 0.15 + 640 × 0.075 + 333 × 0.60 = 54 + 48 + 199.8 = 301.8 → 302
    expect(
      costMicros(withCached(150_000, 75_000, 600_000), {
        inputTokens: 1000,
        cachedInputTokens: 640,
        outputTokens: 333,
      }),
    ).toBe(302);
    // A free cache: only the uncached input and the output cost anything.
    expect(
      costMicros(withCached(1_000_000, 0, 0), { inputTokens: 10, cachedInputTokens: 9, outputTokens: 0 }),
    ).toBe(1);
  });

  it("bills cached input at the input price where the base has no cached price", () => {
    const counts = { inputTokens: 1000, cachedInputTokens: 640, outputTokens: 333 };
    expect(costMicros(withCached(150_000, null, 600_000), counts)).toBe(350);
    expect(costMicros(prices(150_000, 600_000), counts)).toBe(350);
  });

  it("refuses more cached tokens than input tokens", () => {
    expect(() => costMicros(prices(1, 1), { inputTokens: 3, cachedInputTokens: 4, outputTokens: 0 })).toThrow(
      new PriceInputError("cachedInputTokens 4 exceeds inputTokens 3"),
    );
  });
});

describe("costMicros at a batch percent", () => {
  it("bills the percent of the exact cost, rounded up once on the total", () => {
    const counts = { inputTokens: 2000, outputTokens: 500 };
    expect(costMicros(prices(150_000, 600_000), counts, 50)).toBe(300);
    expect(costMicros(prices(150_000, 600_000), counts, 100)).toBe(600);
    expect(costMicros(prices(150_000, 600_000), counts, 0)).toBe(0);
    // 349.8 at 50 % is 174.9 → 175: halved before the one rounding, not after (350 / 2).
    expect(costMicros(prices(150_000, 600_000), { inputTokens: 1000, outputTokens: 333 }, 50)).toBe(175);
    // 0.5 micro-dollars at 1 % still bills 1: never 0 for tokens on a priced base.
    expect(costMicros(prices(500_000, 0), { inputTokens: 1, outputTokens: 0 }, 1)).toBe(1);
  });

  it("takes a priority premium up to 1000 %, and refuses a percent outside 0 to 1000 or not whole", () => {
    // 7 × 0.15 + 3 × 0.60 = 2.85 micro-dollars; at 175 % 4.9875 → 5, at 1000 % 28.5 → 29.
    expect(costMicros(prices(150_000, 600_000), { inputTokens: 7, outputTokens: 3 }, 175)).toBe(5);
    expect(costMicros(prices(150_000, 600_000), { inputTokens: 7, outputTokens: 3 }, 1000)).toBe(29);
    for (const percent of [-1, 1001, 50.5]) {
      expect(() => costMicros(prices(1, 1), { inputTokens: 1, outputTokens: 1 }, percent)).toThrow(
        PriceInputError,
      );
    }
  });
});

describe("microsToDollars", () => {
  it("writes micro-dollars as dollars with six exact decimals", () => {
    expect(microsToDollars(0)).toBe("0.000000");
    expect(microsToDollars(27)).toBe("0.000027");
    expect(microsToDollars(1_234_567)).toBe("1.234567");
    expect(microsToDollars(9_007_199_254_740_991)).toBe("9007199254.740991");
  });
});
