// The native CUDA backend's own code — its kernels, cuBLAS calls, CUDA graph capture and adapter slot
// writes — run on the CPU emulator (npm run build:cuda -- --emulate; CI builds it wherever the CUDA headers
// are installed) through the GPU machine's correctness script: the checks a GPU run makes, on every CI run.
// The cases run side by side: the script's check is one thread's work, the rest mostly child processes.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "vitest";
import { runCudaCheck, summaryLines } from "../../scripts/cuda-check.ts";
import { initTinyModel } from "../../scripts/tiny-model.ts";
import { CUDA_EMULATED_ADDON_PATH, type CudaAddon } from "../../worker/engine/cuda/native.ts";
import { spawnLuminet } from "../support/luminet-command.ts";

describe.skipIf(!existsSync(CUDA_EMULATED_ADDON_PATH))("the CUDA backend on the CPU emulator", () => {
  it.concurrent("gives the CPU engine's logits and tokens: alone, in a mixed-adapter batch, with and without CUDA graphs", async ({
    expect,
  }) => {
    const addon = createRequire(import.meta.url)(CUDA_EMULATED_ADDON_PATH) as CudaAddon;
    const report = await runCudaCheck(addon);
    expect(report.device).toBe("CPU emulation");
    expect(summaryLines(report).filter((line) => !line.startsWith("PASS"))).toEqual([]);
    expect(report.pass).toBe(true);
    expect(report.checks.greedy_alone_vs_batch!.same).toBe("10/10");
    // fp16 against the CPU engine's fp32: close, and not bit-identical (the emulator really computes in fp16).
    // Across adapter seeds the prefill's largest difference measured 0.07–0.3 % of the logit spread.
    expect(report.checks.prefill_logits!.relative).toBeGreaterThan(0);
    expect(report.checks.prefill_logits!.relative).toBeLessThan(5e-3);
  }, 180_000);

  it.concurrent("serves `luminet generate --device cuda` with the CPU's greedy tokens, adapters, base rows and JSON mixed", async ({
    expect,
  }) => {
    const root = mkdtempSync(join(tmpdir(), "luminet-cuda-generate-"));
    try {
      const { dir } = initTinyModel(join(root, "model"), { shape: "tiny", adapters: 2, rank: 8, seed: 5 });
      const batch = join(root, "batch.jsonl");
      const lines = [
        { id: "a", prompt: "hello world", adapter: join(dir, "adapters", "adapter-0"), max_tokens: 6 },
        { id: "b", prompt: "the cat sat", adapter: null, max_tokens: 5 },
        { id: "c", prompt: "hello world", adapter: join(dir, "adapters", "adapter-1"), max_tokens: 6 },
        // Structured output: the whole row comes back from the device for the host's grammar mask.
        {
          id: "d",
          prompt: "as JSON",
          adapter: join(dir, "adapters", "adapter-1"),
          max_tokens: 24,
          response_format: {
            type: "json_schema",
            json_schema: {
              schema: {
                type: "object",
                properties: { w: { type: "string", maxLength: 3 } },
                required: ["w"],
              },
            },
          },
        },
      ];
      writeFileSync(batch, lines.map((l) => JSON.stringify(l)).join("\n"));
      const args = ["generate", "--model", dir, "--batch", batch, "--device"];
      const [cpu, cuda] = await Promise.all([
        spawnLuminet([...args, "cpu"]),
        // Threads run last to first between barriers here: a kernel race would change the tokens.
        spawnLuminet([...args, "cuda"], {
          LUMINET_CUDA_ADDON: CUDA_EMULATED_ADDON_PATH,
          LUMINET_CUDA_EMULATION_ORDER: "reverse",
        }),
      ]);
      // Nothing on stderr but the run's summary.
      expect(cuda.stderr).toMatch(/^generate: 4 requests in [\d.]+ s, \d+ tokens generated [^\n]*\n$/);
      expect(cuda.code).toBe(0);
      expect(cpu.code).toBe(0);
      const outputs = cuda.stdout
        .trim()
        .split("\n")
        .map(
          (l) => JSON.parse(l) as { id: string; token_ids: number[]; text: string; finish_reason: string },
        );
      expect(outputs.map((o) => o.id).sort()).toEqual(["a", "b", "c", "d"]);
      const structured = outputs.find((o) => o.id === "d")!;
      expect(structured.finish_reason).toBe("stop");
      expect(Object.keys(JSON.parse(structured.text))).toEqual(["w"]);
      expect(outputs.every((o) => o.token_ids.length > 0)).toBe(true);
      expect(cuda.stdout).toBe(cpu.stdout);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  }, 120_000);

  it.concurrent("returns the largest logits with ties to the lower id, and each row's log-sum-exp at its temperature", async ({
    expect,
  }) => {
    const { CudaModel } = createRequire(import.meta.url)(CUDA_EMULATED_ADDON_PATH) as CudaAddon;
    const [hidden, vocab, headDim] = [64, 300, 16];
    const model = new CudaModel({
      layers: 1,
      hidden,
      intermediate: 128,
      heads: 4,
      kvHeads: 2,
      headDim,
      vocab,
      rmsNormEps: 1e-5,
      qkvBias: false,
      qkNorm: false,
      ropeScale: 1,
      tieWordEmbeddings: true,
      invFreq: new Float32Array(headDim / 2).fill(0.1),
      maxContext: 8,
      cacheRows: 1,
      maxStepTokens: 4,
      slots: 0,
      maxRank: 1,
      cudaGraphs: false,
      device: 0,
    });
    const values = (n: number, f: (i: number) => number) =>
      new Uint8Array(Float32Array.from({ length: n }, (_, i) => f(i)).buffer);
    const wave = (i: number) => Math.sin(i * 1.7) * 0.1;
    // Two groups of equal embeddings, v and -v: whichever scores higher ties 100 or 200 tokens at the top.
    model.setWeight(
      "embed",
      values(vocab * hidden, (i) => (Math.floor(i / hidden) < 100 ? -1 : 1) * (1 + (i % hidden) / hidden)),
      "F32",
      0,
    );
    model.setWeight(
      "final_norm",
      values(hidden, () => 1),
      "F32",
      0,
    );
    model.setWeight(
      "layers.0.attn_norm",
      values(hidden, () => 1),
      "F32",
      0,
    );
    model.setWeight(
      "layers.0.mlp_norm",
      values(hidden, () => 1),
      "F32",
      0,
    );
    model.setWeight("layers.0.qkv", values(128 * hidden, wave), "F32", 0);
    model.setWeight("layers.0.o", values(hidden * 64, wave), "F32", 0);
    model.setWeight("layers.0.gate_up", values(256 * hidden, wave), "F32", 0);
    model.setWeight("layers.0.down", values(hidden * 128, wave), "F32", 0);
    const step = {
      tokens: Int32Array.of(5, 150),
      cacheRows: Int32Array.of(0, 0),
      positions: Int32Array.of(0, 1),
      slots: Int32Array.of(0, 0),
      logitRows: Int32Array.of(0, 1),
      returnLogits: true,
      candidates: 64,
      temperatures: Float32Array.of(0.5, 0),
    };
    const result = await model.step(step);
    const { tokens, logits, logSumExp } = result.candidates!;
    for (const [row, temperature] of [0.5, 1].entries()) {
      const full = result.logits!.subarray(row * vocab, (row + 1) * vocab);
      const order = [...full.keys()].sort((a, b) => full[b]! - full[a]! || a - b).slice(0, 64);
      expect(new Set(order.map((t) => full[t])).size).toBe(1);
      expect([...tokens.subarray(row * 64, (row + 1) * 64)]).toEqual(order);
      expect([...logits.subarray(row * 64, (row + 1) * 64)]).toEqual(order.map((t) => full[t]!));
      const max = full[order[0]!]!;
      const sum = full.reduce((acc, l) => acc + Math.exp((l - max) / temperature), 0);
      expect(logSumExp[row]).toBeCloseTo(max / temperature + Math.log(sum), 3);
    }
    expect([...model.logitsOf(1)]).toEqual([...result.logits!.subarray(vocab)]);

    // Penalties move the picks and candidates, computed from a penalized copy; the raw logits stay as they were.
    const penalties = {
      rows: Int32Array.of(0, 0, 1, 1),
      tokens: Int32Array.of(tokens[0]!, 7, tokens[64]!, tokens[65]!),
      repetition: Float64Array.of(2, 1, 4, 0.5),
      presence: Float64Array.of(0.25, 0, 0, -0.1),
      frequency: Float64Array.of(0.5, 1, 0, 0),
    };
    const penalized = await model.step({ ...step, penalties });
    expect([...penalized.logits!]).toEqual([...result.logits!]);
    for (const row of [0, 1]) {
      const x = Float32Array.from(result.logits!.subarray(row * vocab, (row + 1) * vocab));
      for (const [i, t] of penalties.tokens.entries()) {
        if (penalties.rows[i] !== row) continue;
        const r = penalties.repetition[i]!;
        if (r !== 1) x[t] = x[t]! > 0 ? x[t]! / r : x[t]! * r;
        x[t] = x[t]! - penalties.presence[i]! - penalties.frequency[i]!;
      }
      const order = [...x.keys()].sort((a, b) => x[b]! - x[a]! || a - b);
      expect(penalized.argmax[row]).toBe(order[0]);
      expect(penalized.argmax[row]).not.toBe(result.argmax[row]);
      const got = penalized.candidates!;
      expect([...got.tokens.subarray(row * 64, (row + 1) * 64)]).toEqual(order.slice(0, 64));
      expect([...got.logits.subarray(row * 64, (row + 1) * 64)]).toEqual(
        order.slice(0, 64).map((t) => x[t]!),
      );
    }
    const refused = (change: Partial<typeof penalties>) =>
      model.step({ ...step, penalties: { ...penalties, ...change } });
    await expect(refused({ tokens: Int32Array.of(7, 7, 1, 2) })).rejects.toThrow(
      /lists a penalty token twice/,
    );
    await expect(refused({ tokens: Int32Array.of(1, 2, 3, vocab) })).rejects.toThrow(
      /penalty token 300 out of range/,
    );
    await expect(refused({ rows: Int32Array.of(0, 0, 1, 2) })).rejects.toThrow(/penalty row 2 out of range/);
    await expect(refused({ rows: Int32Array.of(0, 1, 0, 1) })).rejects.toThrow(/grouped by row/);
    await expect(refused({ presence: Float64Array.of(0) })).rejects.toThrow(/one entry each/);
    await expect(refused({ repetition: Float64Array.of(1, 1, 0, 1) })).rejects.toThrow(/must be > 0/);
    model.close();
  });
});
