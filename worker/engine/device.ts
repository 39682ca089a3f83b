// The execution devices the engine runs on, and what each needs. CPU and WebGPU run through
// onnxruntime-node: CPU is always there; WebGPU (Dawn over Vulkan) is bundled but needs a real Vulkan
// driver. CUDA is the native backend (worker/engine/cuda/), an addon built by `npm run build:cuda`.
import type { InferenceSession } from "onnxruntime-node";
import { type CudaAddon, CudaUnavailableError, loadCudaAddon } from "./cuda/native.ts";
import { Graph } from "./graph.ts";
import { DataType } from "./onnx-proto.ts";

export type Device = "cpu" | "webgpu" | "cuda";
export type ComputeDtype = "float32" | "float16";

export class DeviceError extends Error {}

export function parseDevice(name: string): Device {
  if (name === "cpu" || name === "webgpu" || name === "cuda") return name;
  throw new DeviceError(`unknown device "${name}": use cpu, webgpu or cuda`);
}

/** CPU computes in fp32 (no fast fp16 MatMul there); GPUs in fp16 (half the bytes a decode step reads). */
export function computeDtypeFor(device: Device): ComputeDtype {
  return device === "cpu" ? "float32" : "float16";
}

/** The native CUDA addon (the built one unless given), or a CudaUnavailableError when it is not built or sees no GPU. */
export function usableCudaAddon(addon: CudaAddon = loadCudaAddon()): CudaAddon {
  if (addon.deviceCount() === 0) {
    throw new CudaUnavailableError(
      "the CUDA backend is built but no CUDA device is visible (deviceCount() is 0): check nvidia-smi and CUDA_VISIBLE_DEVICES",
    );
  }
  return addon;
}

/** Opens (and closes) a one-node session on WebGPU: onnxruntime asks Dawn for an adapter as it opens one. */
async function openWebGpuSession(): Promise<void> {
  // Loaded here: the CLI reads this file for parseDevice, and most commands never open a session.
  const { InferenceSession } = await import("onnxruntime-node");
  const g = new Graph();
  g.op("Identity", [g.input("x", DataType.FLOAT, [1])], {}, "y");
  g.output("y", DataType.FLOAT, [1]);
  const session = await InferenceSession.create(g.encode([{ domain: "", version: 18 }]), {
    executionProviders: [{ name: "webgpu" }],
    logSeverityLevel: 3,
  });
  await session.release();
}

/**
 * Resolves where WebGPU runs; else a DeviceError that says so in Luminet's words. Without an adapter,
 * onnxruntime's own error is an assertion from its C++ source (webgpu_context.cc) that names no flag.
 */
export async function usableWebGpu(open: () => Promise<void> = openWebGpuSession): Promise<void> {
  try {
    await open();
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    const why = /Failed to get a WebGPU adapter: (.*)/.exec(message)?.[1]?.trim() ?? message;
    throw new DeviceError(
      `--device webgpu: onnxruntime finds no WebGPU adapter (${why}). WebGPU runs on Dawn over Vulkan and needs a real Vulkan driver (an NVIDIA GPU; Debian's software Vulkan is refused): install one, or use --device cpu (or --device cuda on an NVIDIA GPU)`,
    );
  }
}

/** Throws an error that says what to do when a device cannot work in this installation. */
export async function assertDeviceUsable(device: Device): Promise<void> {
  if (device === "cuda") usableCudaAddon();
  if (device === "webgpu") await usableWebGpu();
}

/**
 * LUMINET_ORT_PROFILE=<prefix> writes onnxruntime's per-node timing profile for every session (one JSON file
 * each, when the engine closes). The multi-LoRA nodes are named "lora/…" (graph-builder.ts): summing their
 * kernel time per run against the rest measures the LoRA work apart from the machine's noise, which a step's
 * wall time does not on a shared VM (docs/BENCHMARKS.md, "Span-masked decode steps").
 *
 * On CPU, `prepackWeights` lets each session repack every constant Gemm weight into MLAS's layout: a copy
 * as large as the weights, per session. The engine holds one session per graph variant, so by default
 * nothing is prepacked and the weights stay memory-mapped from the safetensors files: one copy in the page
 * cache, shared by every variant. The cost is MLAS packing B inside each Gemm call instead, about a
 * fixed time per weight byte: a 64-row Gemm takes ~18 % longer, an 8-row one ~60 %, a one-row one none
 * (docs/BENCHMARKS.md, engine memory).
 *
 * Every session has its own intra-op thread pool, whose workers spin for a while after a run ends. The
 * engine runs one session per graph variant, and a run right after another session's ran ~15 % slower
 * while that session's workers still spun on the same cores (bench-1b, 2 threads: two base sessions
 * alternated, and base-only alternated with a 16-adapter variant). `force_spinning_stop` ends the spinning
 * when a run returns (workers still spin between a run's own kernels), which removed that cost.
 */
export function sessionOptions(
  device: Device,
  threads: number,
  prepackWeights = false,
): InferenceSession.SessionOptions {
  const profile = process.env.LUMINET_ORT_PROFILE;
  const unpacked = device === "cpu" && !prepackWeights;
  const common: InferenceSession.SessionOptions = {
    graphOptimizationLevel: "all",
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    logSeverityLevel: 3,
    extra: { session: { force_spinning_stop: "1", ...(unpacked ? { disable_prepacking: "1" } : {}) } },
    ...(profile ? { enableProfiling: true, profileFilePrefix: profile } : {}),
  };
  switch (device) {
    case "cpu":
      return { ...common, executionProviders: ["cpu"] };
    case "webgpu":
      return { ...common, executionProviders: [{ name: "webgpu" }] };
    case "cuda":
      return { ...common, executionProviders: [{ name: "cuda", deviceId: 0 }] };
  }
}
