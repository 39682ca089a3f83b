// Where onnxruntime finds no WebGPU adapter (no Vulkan driver), `--device webgpu` stops at once with a
// message naming the flag and what is missing, as `--device cuda` does without its addon: before the engine
// opens its graphs, and before `bench engine` spends minutes generating bench-1b. onnxruntime's session
// creation is made to fail here as it does on such a machine, so the test means the same on a GPU host.
import { describe, expect, it, vi } from "vitest";
import { runEngineBench } from "../../scripts/bench-engine.ts";
import { assertDeviceUsable, DeviceError, usableWebGpu } from "../../worker/engine/device.ts";
import { Engine } from "../../worker/engine/engine.ts";

const NO_ADAPTER =
  "/onnxruntime_src/onnxruntime/core/providers/webgpu/webgpu_context.cc:136 onnxruntime::webgpu::WebGpuContext::Initialize(const onnxruntime::webgpu::WebGpuContextConfig&)::<lambda()> adapter_result.status == wgpu::RequestAdapterStatus::Success was false. Failed to get a WebGPU adapter: No supported adapters";

vi.mock("onnxruntime-node", async (original) => {
  const ort = await original<typeof import("onnxruntime-node")>();
  const create: typeof ort.InferenceSession.create = (...args: unknown[]) => {
    const options = args.find((a) => typeof a === "object" && a !== null && "executionProviders" in a) as
      | { executionProviders?: unknown[] }
      | undefined;
    if (JSON.stringify(options?.executionProviders ?? []).includes("webgpu")) {
      return Promise.reject(new Error(NO_ADAPTER));
    }
    return (ort.InferenceSession.create as (...a: unknown[]) => ReturnType<typeof create>)(...args);
  };
  return { ...ort, InferenceSession: { ...ort.InferenceSession, create } };
});

// Generating a model would be the failure this test guards against: make it one that shows at once.
vi.mock("../../scripts/tiny-model.ts", async (original) => ({
  ...(await original<typeof import("../../scripts/tiny-model.ts")>()),
  initTinyModel: () => {
    throw new Error("bench-1b generation started");
  },
}));

const expectClearWebGpuError = (error: unknown) => {
  expect(error).toBeInstanceOf(DeviceError);
  const message = (error as Error).message;
  expect(message).toContain("--device webgpu");
  expect(message).toContain("No supported adapters");
  expect(message).toContain("needs a real Vulkan driver");
  expect(message).not.toContain("webgpu_context.cc");
};

describe("--device webgpu without a WebGPU adapter", () => {
  it("says which flag and what the machine lacks, not onnxruntime's C++ assertion", async () => {
    expectClearWebGpuError(await usableWebGpu(() => Promise.reject(new Error(NO_ADAPTER))).catch((e) => e));
    expectClearWebGpuError(await assertDeviceUsable("webgpu").catch((e) => e));
    await expect(usableWebGpu(async () => {})).resolves.toBeUndefined();
  });

  it("stops the engine (generate, worker) before it reads the model", async () => {
    const error = await Engine.create({
      modelDir: "/no/such/model",
      device: "webgpu",
      maxContext: 64,
      slots: 1,
      maxRank: 4,
      maxAdaptersPerStep: 1,
      maxBatch: 1,
    }).catch((e) => e);
    expectClearWebGpuError(error);
  });

  it("stops bench engine before it generates bench-1b", async () => {
    const log = vi.fn();
    expectClearWebGpuError(await runEngineBench({ device: "webgpu", layers: 1, log }).catch((e) => e));
    expect(log).not.toHaveBeenCalled();
  });
});
