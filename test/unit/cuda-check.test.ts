// The GPU machine's correctness script (scripts/cuda-check.ts) catches an addon that breaks the contract:
// the native code on the CPU emulator with its rows' adapters dropped whenever a step holds more than one
// row, or with the sequences' penalties dropped. That the same script passes the unbroken emulated addon
// is test/unit/cuda-emulated.test.ts's case. The two checks run side by side: each is one thread's work
// (the emulator's steps on a libuv thread, the CPU engine on one onnxruntime thread) and shares nothing.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { describe, it } from "vitest";
import { runCudaCheck, summaryLines } from "../../scripts/cuda-check.ts";
import { CUDA_EMULATED_ADDON_PATH, type CudaAddon } from "../../worker/engine/cuda/native.ts";
import { interceptSteps } from "../support/intercepted-cuda-addon.ts";

describe.skipIf(!existsSync(CUDA_EMULATED_ADDON_PATH))("the CUDA correctness check", () => {
  it.concurrent("fails when a batched step loses the rows' adapters", async ({ expect }) => {
    const emulated = createRequire(import.meta.url)(CUDA_EMULATED_ADDON_PATH) as CudaAddon;
    const broken = interceptSteps(emulated, (s) =>
      s.tokens.length > 1 ? { ...s, slots: new Int32Array(s.slots.length) } : s,
    );
    const report = await runCudaCheck(broken);
    expect(Object.keys(report.checks)).toEqual([
      "prefill_logits",
      "decode_logits",
      "greedy_vs_cpu",
      "greedy_alone_vs_batch",
      "batch_vs_alone_logits",
      "device_argmax",
      "cuda_graphs",
      "chunked_prefill",
      "prefix_cache",
      "device_sampling",
    ]);
    expect(report.pass).toBe(false);
    expect(report.checks.prefill_logits!.pass).toBe(false);
    expect(report.checks.batch_vs_alone_logits!.pass).toBe(false);
    expect(report.checks.chunked_prefill!.pass).toBe(false);
    expect(report.checks.prefix_cache!.pass).toBe(false);
    expect(summaryLines(report).some((line) => line.startsWith("FAIL prefill_logits: max_abs_diff"))).toBe(
      true,
    );
  }, 180_000);

  it.concurrent("fails when the device picks without the sequences' penalties", async ({ expect }) => {
    const emulated = createRequire(import.meta.url)(CUDA_EMULATED_ADDON_PATH) as CudaAddon;
    const broken = interceptSteps(emulated, ({ penalties: _dropped, ...s }) => s);
    const report = await runCudaCheck(broken);
    expect(report.checks.device_sampling!.pass).toBe(false);
    expect(report.checks.device_argmax!.pass).toBe(true);
  }, 180_000);
});
