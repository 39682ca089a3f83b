// The native CUDA addon where it is built (CI builds it wherever nvcc is installed): it loads, counts
// devices, checks a model spec before touching the GPU, and says plainly when there is no GPU. Its
// kernels run only on a GPU machine: scripts/cuda-check.ts compares them with the CPU engine there.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it, vi } from "vitest";
import { CUDA_ADDON_PATH, type CudaModelSpec } from "../../worker/engine/cuda/native.ts";

function spec(overrides: Partial<CudaModelSpec> = {}): CudaModelSpec {
  return {
    layers: 1,
    hidden: 64,
    intermediate: 128,
    heads: 4,
    kvHeads: 2,
    headDim: 16,
    vocab: 100,
    rmsNormEps: 1e-5,
    qkvBias: false,
    qkNorm: false,
    ropeScale: 1,
    tieWordEmbeddings: true,
    invFreq: new Float32Array(8),
    maxContext: 32,
    cacheRows: 2,
    maxStepTokens: 8,
    slots: 2,
    maxRank: 4,
    cudaGraphs: true,
    device: 0,
    ...overrides,
  };
}

async function freshNative() {
  vi.resetModules();
  return import("../../worker/engine/cuda/native.ts");
}

describe("loading the CUDA addon", () => {
  it("says how to build it when it is missing", async () => {
    vi.stubEnv("LUMINET_CUDA_ADDON", join(CUDA_ADDON_PATH, "..", "no-such-addon.node"));
    try {
      const native = await freshNative();
      expect(() => native.loadCudaAddon()).toThrow(native.CudaUnavailableError);
      expect(() => native.loadCudaAddon()).toThrow(/npm run build:cuda/);
    } finally {
      vi.unstubAllEnvs();
    }
  });
});

describe.skipIf(!existsSync(CUDA_ADDON_PATH))("the built CUDA addon", () => {
  it("counts the CUDA devices this process sees", async () => {
    const addon = (await freshNative()).loadCudaAddon();
    const count = addon.deviceCount();
    expect(Number.isInteger(count) && count >= 0).toBe(true);
  });

  it("refuses a spec it cannot run before touching a GPU", async () => {
    const { CudaModel } = (await freshNative()).loadCudaAddon();
    expect(() => new CudaModel(spec({ heads: 6, kvHeads: 4 }))).toThrow(/multiple of kvHeads/);
    expect(() => new CudaModel(spec({ headDim: 12, invFreq: new Float32Array(6) }))).toThrow(/multiple of 8/);
    expect(() => new CudaModel(spec({ invFreq: new Float32Array(3) }))).toThrow(/headDim\/2/);
    const { hidden: _, ...noHidden } = spec();
    expect(() => new CudaModel(noHidden as CudaModelSpec)).toThrow(/hidden must be a number/);
  });

  it("says there is no GPU where there is none", async (context) => {
    const { CudaModel, deviceCount } = (await freshNative()).loadCudaAddon();
    if (deviceCount() > 0) context.skip();
    expect(() => new CudaModel(spec())).toThrow(/no CUDA device visible/);
  });
});
