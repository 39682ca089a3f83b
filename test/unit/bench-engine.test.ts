// `luminet bench engine` itself, shortened on a one-layer tiny model: on cpu, and on the CUDA engine over
// the CPU emulator, where the GPU run also profiles a step phase by phase. A GPU session has minutes of
// device time: the benchmark must not fail there for a reason this machine could have shown.
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  benchShape,
  type EngineBenchResult,
  reportEngineBench,
  runEngineBench,
} from "../../scripts/bench-engine.ts";
import { initTinyModel, tinyConfigJson } from "../../scripts/tiny-model.ts";
import { CUDA_EMULATED_ADDON_PATH } from "../../worker/engine/cuda/native.ts";
import { parseModelConfig } from "../../worker/engine/model-config.ts";

let root: string;
let modelDir: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "luminet-bench-engine-"));
  // One layer (the benchmark's default on cpu is two): every emulated CUDA step costs about half as much,
  // and setup.layers must be the model's own count.
  modelDir = initTinyModel(join(root, "model"), {
    shape: "tiny",
    layers: 1,
    adapters: 64,
    rank: 16,
    seed: 4,
  }).dir;
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

const short = { context: 24, timedSteps: 2, rounds: 2, threads: 1 };

function expectWellFormed(
  result: EngineBenchResult,
  { rounds, timedSteps } = { rounds: short.rounds, timedSteps: short.timedSteps },
): void {
  expect(result.results.map((r) => r.U)).toEqual([1, 4, 16, 64]);
  for (const r of result.results) {
    expect(r.tokens_per_s).toBeGreaterThan(0);
    expect(r.bound).toBeGreaterThan(0);
    expect(r.bound).toBeLessThanOrEqual(1);
    expect(r.efficiency).toBeCloseTo(r.ratio / r.bound, 3);
    // The headline comes from the run's fastest step; its median is reported beside it (the same step
    // where a run timed one).
    if (rounds * timedSteps === 1) expect(r.step_ms_fastest).toBe(r.step_ms_p50);
    else expect(r.step_ms_fastest!).toBeLessThanOrEqual(r.step_ms_p50);
    // (within the rounding of a sub-millisecond step to hundredths)
    expect(Math.abs(r.tokens_per_s - (64 * 1000) / r.step_ms_fastest!) / r.tokens_per_s).toBeLessThan(0.02);
    expect(r.ratio_p50).toBeGreaterThan(0);
  }
  expect(result.setup.headline_step).toBe("fastest");
  expect(result.setup).toMatchObject({
    layers: 1,
    sequences: 64,
    timed_steps: timedSteps,
    rounds,
    rank: 16,
  });
}

describe("luminet bench engine", () => {
  it("times base-only and U = 1, 4, 16, 64 on cpu and saves what it prints", async () => {
    const result = await runEngineBench({ device: "cpu", modelDir, ...short });
    expectWellFormed(result);
    expect(result.setup.context).toBe(24);
    expect(result.setup.formulation).toBe("segment-views");
    expect(result.phases).toBeUndefined();
    const written = vi.spyOn(process.stdout, "write").mockImplementation(() => true);
    try {
      reportEngineBench(result, false, root);
    } finally {
      written.mockRestore();
    }
    // A tiny model's run is no bench-1b result: it says what it ran, beside the bench-1b file, not over it.
    expect(result.shape).toBe("custom (llama, hidden 64, intermediate 128, 4/2 heads of 16, vocab 512)");
    expect(existsSync(join(root, "engine-cpu.json"))).toBe(false);
    expect(JSON.parse(readFileSync(join(root, "engine-cpu-custom.json"), "utf8"))).toEqual(result);
  }, 120_000);

  it("calls a model of bench-1b's widths bench-1b, whatever its layer count", () => {
    for (const layers of [1, 2, 16]) {
      expect(benchShape(parseModelConfig(tinyConfigJson("bench-1b", layers, "F16")))).toBe("bench-1b");
    }
    expect(benchShape(parseModelConfig(tinyConfigJson("bench-1b", 2, "F32", "qwen2")))).toMatch(
      /^custom \(qwen2,/,
    );
  });

  it("refuses --layers with --model, whose folder has its own", async () => {
    await expect(runEngineBench({ device: "cpu", modelDir, layers: 4, ...short })).rejects.toThrow(
      "--layers sizes the generated bench-1b; a --model folder runs with its own layers",
    );
  });

  it("refuses a context too short for its steps", async () => {
    await expect(runEngineBench({ device: "cpu", modelDir, ...short, context: 12 })).rejects.toThrow(
      /a context of 12 leaves no prompt for 15 decode steps/,
    );
  });

  it.skipIf(!existsSync(CUDA_EMULATED_ADDON_PATH))(
    "on cuda, also profiles one step at base-only and one at each U, and prints the phases",
    async () => {
      const saved = process.env.LUMINET_CUDA_ADDON;
      process.env.LUMINET_CUDA_ADDON = CUDA_EMULATED_ADDON_PATH;
      try {
        const cudaRoofline = { gemmSize: 64, copyBytes: 1 << 20, repeats: 1 };
        // One round, as on a GPU by default, of one timed step per run: each emulated step takes most of a
        // second (the cpu case above shows the fastest of several steps heading its run). A context of 17
        // leaves one prompt token before the 5 × 2 timed and untimed steps and the 5 profiled ones.
        const emulated = { context: 17, timedSteps: 1, rounds: 1 };
        const result = await runEngineBench({
          device: "cuda",
          modelDir,
          ...short,
          ...emulated,
          cudaRoofline,
        });
        expectWellFormed(result, emulated);
        expect(result.setup.context).toBe(17);
        expect(result.setup.formulation).toBe("cuda-sgmv");
        expect(result.phases!.map((p) => p.U)).toEqual([0, 1, 4, 16, 64]);
        expect(result.phases![0]!.ms).not.toHaveProperty("lora");
        for (const { ms } of result.phases!.slice(1)) expect(ms.lora).toBeGreaterThan(0);
        let printed = "";
        const written = vi.spyOn(process.stdout, "write").mockImplementation((chunk) => {
          printed += String(chunk);
          return true;
        });
        try {
          reportEngineBench(result, false, root);
        } finally {
          written.mockRestore();
        }
        expect(printed).toMatch(/device ms per step by phase/);
        expect(printed).toMatch(/\nphase +base +U=1 +U=4 +U=16 +U=64 *\n/);
        expect(printed).toMatch(/\nlora +— +(\d+\.\d{3} +){3}\d+\.\d{3}/);
        expect(printed).toMatch(/\ntotal +(\d+\.\d{3} +){4}\d+\.\d{3}/);
      } finally {
        if (saved === undefined) delete process.env.LUMINET_CUDA_ADDON;
        else process.env.LUMINET_CUDA_ADDON = saved;
      }
    },
    300_000,
  );
});
