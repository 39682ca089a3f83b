// The GPU machine's correctness script (scripts/cuda-check.ts) run here over the addon's contract in
// TypeScript: every check passes for an addon that keeps the contract, and the checks catch one that
// does not (adapters dropped whenever a step holds more than one row).
import { describe, expect, it } from "vitest";
import { runCudaCheck, summaryLines } from "../../scripts/cuda-check.ts";
import type { CudaAddon, NativeCudaModel } from "../../worker/engine/cuda/native.ts";
import { referenceCudaAddon } from "../support/reference-cuda-addon.ts";

describe("the CUDA correctness check", () => {
  it("passes every check for an addon that keeps the contract", async () => {
    const report = await runCudaCheck(referenceCudaAddon());
    expect(summaryLines(report).filter((line) => !line.startsWith("PASS"))).toEqual([]);
    expect(Object.keys(report.checks)).toEqual([
      "prefill_logits",
      "decode_logits",
      "greedy_vs_cpu",
      "greedy_alone_vs_batch",
      "batch_vs_alone_logits",
      "device_argmax",
      "cuda_graphs",
    ]);
    expect(report.pass).toBe(true);
    expect(report.checks.prefill_logits!.relative).toBeLessThan(1e-5);
    expect(report.checks.greedy_alone_vs_batch!.same).toBe("10/10");
  }, 120_000);

  it("fails when a batched step loses the rows' adapters", async () => {
    const reference = referenceCudaAddon();
    const broken: CudaAddon = {
      deviceCount: () => 1,
      CudaModel: class {
        constructor(spec: ConstructorParameters<CudaAddon["CudaModel"]>[0]) {
          const model: NativeCudaModel = new reference.CudaModel(spec);
          const step = model.step.bind(model);
          model.step = (s) => step(s.tokens.length > 1 ? { ...s, slots: new Int32Array(s.slots.length) } : s);
          // biome-ignore lint/correctness/noConstructorReturn: the addon's constructor yields the model itself.
          return model;
        }
      } as unknown as CudaAddon["CudaModel"],
    };
    const report = await runCudaCheck(broken);
    expect(report.pass).toBe(false);
    expect(report.checks.prefill_logits!.pass).toBe(false);
    expect(report.checks.batch_vs_alone_logits!.pass).toBe(false);
    expect(summaryLines(report).some((line) => line.startsWith("FAIL prefill_logits: max_abs_diff"))).toBe(
      true,
    );
  }, 120_000);
});
