import { describe, expect, it } from "vitest";
import { prefillBatches } from "../../worker/engine/prefill-batches.ts";

describe("prefillBatches", () => {
  it("puts prompts of similar lengths in one batch, longest first", () => {
    expect(prefillBatches([40, 44, 42, 41])).toEqual([[1, 2, 3, 0]]);
  });

  it("runs a prompt much longer than the rest on its own instead of padding them to it", () => {
    expect(prefillBatches([10, 300, 12, 11])).toEqual([[1], [2, 3, 0]]);
  });

  it("keeps every batch's padded positions within a quarter of its real tokens", () => {
    const lengths = [5, 9, 17, 33, 64, 65, 120, 7, 8, 30, 31, 200];
    const batches = prefillBatches(lengths);
    expect(batches.flat().sort((a, b) => a - b)).toEqual(lengths.map((_, i) => i));
    for (const batch of batches) {
      const real = batch.reduce((sum, i) => sum + lengths[i]!, 0);
      const padded = batch.length * Math.max(...batch.map((i) => lengths[i]!));
      expect(padded).toBeLessThanOrEqual(1.25 * real);
    }
    expect(batches.length).toBeLessThan(lengths.length);
  });

  it("keeps every prompt in one batch for an engine that does not pad (CUDA runs a batch ragged)", () => {
    expect(prefillBatches([10, 300, 12, 11], false)).toEqual([[0, 1, 2, 3]]);
  });

  it("gives nothing for no prompts", () => {
    expect(prefillBatches([])).toEqual([]);
    expect(prefillBatches([], false)).toEqual([]);
  });
});
