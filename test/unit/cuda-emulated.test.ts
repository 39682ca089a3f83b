// The native CUDA backend's own code — its kernels, cuBLAS calls, CUDA graph capture and adapter slot
// writes — run on the CPU emulator (npm run build:cuda -- --emulate; CI builds it wherever the CUDA headers
// are installed) through the GPU machine's correctness script: the checks a GPU run makes, on every CI run.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runCudaCheck, summaryLines } from "../../scripts/cuda-check.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { CUDA_EMULATED_ADDON_PATH, type CudaAddon } from "../../worker/engine/cuda/native.ts";
import { spawnLuminet } from "../support/luminet-command.ts";

describe.skipIf(!existsSync(CUDA_EMULATED_ADDON_PATH))("the CUDA backend on the CPU emulator", () => {
  it("gives the CPU engine's logits and tokens: alone, in a mixed-adapter batch, with and without CUDA graphs", async () => {
    const addon = createRequire(import.meta.url)(CUDA_EMULATED_ADDON_PATH) as CudaAddon;
    const report = await runCudaCheck(addon);
    expect(report.device).toBe("CPU emulation");
    expect(summaryLines(report).filter((line) => !line.startsWith("PASS"))).toEqual([]);
    expect(report.pass).toBe(true);
    expect(report.checks.greedy_alone_vs_batch!.same).toBe("10/10");
    // fp16 against the CPU engine's fp32: close, and not bit-identical (the emulator really computes in fp16).
    expect(report.checks.prefill_logits!.relative).toBeGreaterThan(0);
    expect(report.checks.prefill_logits!.relative).toBeLessThan(2e-3);
  }, 180_000);

  it("serves `luminet generate --device cuda` with the CPU's greedy tokens, adapters and base rows mixed", async () => {
    const root = mkdtempSync(join(tmpdir(), "luminet-cuda-generate-"));
    try {
      const { dir } = initTinyModel(join(root, "model"), { shape: "tiny", adapters: 2, rank: 8, seed: 5 });
      const batch = join(root, "batch.jsonl");
      const lines = [
        { id: "a", prompt: "hello world", adapter: join(dir, "adapters", "adapter-0"), max_tokens: 6 },
        { id: "b", prompt: "the cat sat", adapter: null, max_tokens: 5 },
        { id: "c", prompt: "hello world", adapter: join(dir, "adapters", "adapter-1"), max_tokens: 6 },
      ];
      writeFileSync(batch, lines.map((l) => JSON.stringify(l)).join("\n"));
      const args = ["generate", "--model", dir, "--batch", batch, "--device"];
      const cpu = await spawnLuminet([...args, "cpu"]);
      // Threads run last to first between barriers here: a kernel race would change the tokens.
      const cuda = await spawnLuminet([...args, "cuda"], {
        LUMINET_CUDA_ADDON: CUDA_EMULATED_ADDON_PATH,
        LUMINET_CUDA_EMULATION_ORDER: "reverse",
      });
      expect(cuda.stderr).toBe("");
      expect(cuda.code).toBe(0);
      expect(cpu.code).toBe(0);
      const outputs = cuda.stdout
        .trim()
        .split("\n")
        .map((l) => JSON.parse(l) as { id: string; token_ids: number[] });
      expect(outputs.map((o) => o.id).sort()).toEqual(["a", "b", "c"]);
      expect(outputs.every((o) => o.token_ids.length > 0)).toBe(true);
      expect(cuda.stdout).toBe(cpu.stdout);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, 120_000);
});
