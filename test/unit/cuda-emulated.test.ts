// The native CUDA backend's own code — its kernels, cuBLAS calls, CUDA graph capture and adapter slot
// writes — run on the CPU emulator (npm run build:cuda -- --emulate; CI builds it wherever the CUDA headers
// are installed) through the GPU machine's correctness script: the checks a GPU run makes, on every CI run.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, expect, it } from "vitest";
import { runCudaCheck, summaryLines } from "../../scripts/cuda-check.ts";
import { CUDA_EMULATED_ADDON_PATH, type CudaAddon } from "../../worker/engine/cuda/native.ts";

describe.skipIf(!existsSync(CUDA_EMULATED_ADDON_PATH))("the CUDA backend on the CPU emulator", () => {
  it("gives the CPU engine's logits and tokens: alone, in a mixed-adapter batch, with and without CUDA graphs", async () => {
    const addon = createRequire(import.meta.url)(CUDA_EMULATED_ADDON_PATH) as CudaAddon;
    const report = await runCudaCheck(addon);
    expect(report.device).toBe("CPU emulation");
    expect(summaryLines(report).filter((line) => !line.startsWith("PASS"))).toEqual([]);
    expect(report.pass).toBe(true);
    // fp16 against the CPU engine's fp32: close, and not bit-identical (the emulator really computes in fp16).
    expect(report.checks.prefill_logits!.relative).toBeGreaterThan(0);
    expect(report.checks.prefill_logits!.relative).toBeLessThan(2e-3);
  }, 180_000);
});
