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
  it("counts every request once per phase and fetches each adapter from the blob store once per worker at most", async () => {
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
      for (const phase of [run.cold, run.warm]) {
        const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
        expect(sum(phase.routes)).toBe(40);
        expect(sum(phase.arrivals)).toBe(40);
        expect(phase.in_memory_share).toBeGreaterThanOrEqual(phase.in_slot_share);
        expect(phase.tokens_per_s).toBeGreaterThan(0);
        expect(phase.ttft_ms.p99).toBeGreaterThanOrEqual(phase.ttft_ms.p50);
      }
      // Cold: every adapter drawn starts in the blob store.
      expect((run.cold.loads_per_1000_by_tier.blob * 40) / 1000).toBeGreaterThanOrEqual(distinct);
      expect(run.cold.arrivals.none).toBeGreaterThan(0);
      // A fetch lands on disk, which the workers keep (1 GiB): no adapter is fetched twice by one worker.
      const fetched =
        ((run.cold.loads_per_1000_by_tier.blob + run.warm.loads_per_1000_by_tier.blob) * 40) / 1000;
      expect(fetched).toBeLessThanOrEqual(2 * 6);
    }
    expect(result.setup).toMatchObject({ workers: 2, requests: 40 });
  }, 90_000);
});
