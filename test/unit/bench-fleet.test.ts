// The fleet benchmark's Zipf draw (the run itself, on worker processes: test/e2e/bench-fleet.test.ts).
import { describe, expect, it } from "vitest";
import { zipfSequence } from "../../scripts/bench-fleet.ts";
import { Prng } from "../../worker/engine/prng.ts";

describe("zipfSequence", () => {
  it("draws index k about 1/(k+1) as often as index 0, the same for the same seed", () => {
    const draws = zipfSequence(50, 1, 20_000, new Prng(1, 0));
    const count = (k: number) => draws.filter((d) => d === k).length;
    expect(count(1) / count(0)).toBeGreaterThan(0.4);
    expect(count(1) / count(0)).toBeLessThan(0.6);
    expect(count(9) / count(0)).toBeGreaterThan(0.05);
    expect(count(9) / count(0)).toBeLessThan(0.15);
    expect(Math.min(...draws)).toBe(0);
    expect(Math.max(...draws)).toBeLessThan(50);
    expect(zipfSequence(50, 1, 100, new Prng(1, 0))).toEqual(draws.slice(0, 100));
  });
});
