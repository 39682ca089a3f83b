// The fleet benchmark's parts: the Zipf draw it sends, and a small run of both routers on real workers
// whose counts must add up (every request routed once, every adapter fetched from the blob store at least
// once per run, the baseline never told where adapters live).
import { describe, expect, it } from "vitest";
import { runFleetBench, zipfSequence } from "../../scripts/bench-fleet.ts";
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

describe("runFleetBench", () => {
  it("routes every request once and fetches each adapter it serves from the blob store", async () => {
    const result = await runFleetBench({
      workers: 2,
      slots: 2,
      adapters: 6,
      requests: 40,
      concurrency: 4,
      tokens: 2,
    });
    const distinct = new Set(zipfSequence(6, 1, 40, new Prng(5, 0))).size;
    for (const run of [result.residency, result.baseline]) {
      expect(Object.values(run.routes).reduce((a, b) => a + b, 0)).toBe(40);
      expect((run.loads_per_1000_by_tier.blob * 40) / 1000).toBeGreaterThanOrEqual(distinct);
      expect(run.tokens_per_s).toBeGreaterThan(0);
      expect(run.ttft_ms.p99).toBeGreaterThanOrEqual(run.ttft_ms.p50);
    }
    expect(result.setup).toMatchObject({ workers: 2, requests: 40 });
  }, 60_000);
});
