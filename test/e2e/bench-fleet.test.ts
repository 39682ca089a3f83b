// `luminet bench fleet` at its smallest: 2 worker processes on the run's NATS, 6 adapters, 40 requests per
// phase. Its counts must add up — every request routed once and counted once by the worker it reached,
// every adapter drawn in the cold phase fetched from the blob store — not how good the routing was.
import { describe, expect, inject, it } from "vitest";
import { runFleetBench, zipfSequence } from "../../scripts/bench-fleet.ts";
import { Prng } from "../../worker/engine/prng.ts";

describe("runFleetBench", () => {
  it("counts every request once per phase and fetches each adapter from the blob store once per worker at most", async () => {
    const result = await runFleetBench({
      natsUrl: inject("natsUrl"),
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
