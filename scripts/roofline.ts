// The machine's two ceilings, measured through the same onnxruntime-node settings the engine uses: the
// peak MatMul rate P (FLOP/s) and the memory bandwidth BW (bytes/s, a large elementwise copy counting
// bytes read plus written). The engine benchmark's bound is a roofline over these two numbers.
import { InferenceSession, Tensor } from "onnxruntime-node";
import { type ComputeDtype, type Device, sessionOptions } from "../worker/engine/device.ts";
import { float32ToFloat16 } from "../worker/engine/dtype.ts";
import { Graph } from "../worker/engine/graph.ts";
import { DataType } from "../worker/engine/onnx-proto.ts";

export interface Roofline {
  flopsPerSecond: number;
  bytesPerSecond: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function randomTensor(dtype: ComputeDtype, dims: number[]): Tensor {
  const size = dims.reduce((a, b) => a * b, 1);
  const f32 = Float32Array.from({ length: size }, () => Math.random() - 0.5);
  return new Tensor(dtype, dtype === "float32" ? f32 : float32ToFloat16(f32), dims);
}

async function timeRuns(run: () => Promise<void>, repeats: number): Promise<number> {
  await run();
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    await run();
    times.push((performance.now() - start) / 1000);
  }
  return median(times);
}

export async function measureRoofline(
  device: Device,
  dtype: ComputeDtype,
  threads: number,
): Promise<Roofline> {
  const t = dtype === "float32" ? DataType.FLOAT : DataType.FLOAT16;
  const onDevice = device !== "cpu";
  const options = sessionOptions(device, threads);

  // Peak rate: one large MatMul; only a scalar comes back, so the timing includes the device's finish.
  const [m, k, n] = onDevice ? [4096, 4096, 4096] : [256, 2048, 8192];
  const mm = new Graph();
  const a = mm.input("a", t, [m, k]);
  const b = mm.input("b", t, [k, n]);
  const product = mm.op("MatMul", [a, b]);
  mm.op("ReduceMax", [mm.op("Cast", [product], { to: DataType.FLOAT })], { keepdims: 0 }, "out");
  mm.output("out", DataType.FLOAT, []);
  const matmul = await InferenceSession.create(mm.encode([{ domain: "", version: 18 }]), options);
  const feeds = { a: randomTensor(dtype, [m, k]), b: randomTensor(dtype, [k, n]) };
  const matmulSeconds = await timeRuns(async () => {
    await matmul.run(feeds);
  }, 5);
  await matmul.release();

  const bytesPerSecond = onDevice ? await deviceCopyRate(dtype, options) : hostCopyRate();
  return {
    flopsPerSecond: (2 * m * k * n) / matmulSeconds,
    bytesPerSecond,
  };
}

/** Host memory: a 512 MB memcpy (TypedArray.set), counting bytes read plus written. */
function hostCopyRate(): number {
  const bytes = 512 * 1024 * 1024;
  const source = new Uint8Array(bytes).fill(1);
  const target = new Uint8Array(bytes);
  const times: number[] = [];
  for (let i = 0; i < 6; i++) {
    const start = performance.now();
    target.set(source);
    times.push((performance.now() - start) / 1000);
  }
  return (2 * bytes) / median(times.slice(1));
}

/**
 * Device memory: y = x + 1 over 512 MB (fp16) that stays on the device; a one-element slice comes back so
 * each timing includes the device's finish. Counts bytes read plus written.
 */
async function deviceCopyRate(
  dtype: ComputeDtype,
  options: InferenceSession.SessionOptions,
): Promise<number> {
  const t = dtype === "float32" ? DataType.FLOAT : DataType.FLOAT16;
  const elements = 256 * 1024 * 1024;
  const g = new Graph();
  const x = g.input("x", t, [elements]);
  const one = g.op("CastLike", [g.constInt64([1], []), x]);
  const y = g.op("Add", [x, one], {}, "y");
  g.output(y, t, [elements]);
  g.op("Slice", [y, g.constInt64([0]), g.constInt64([1])], {}, "probe");
  g.output("probe", t, [1]);
  const copy = await InferenceSession.create(g.encode([{ domain: "", version: 18 }]), {
    ...options,
    preferredOutputLocation: { y: "gpu-buffer", probe: "cpu" },
  });
  // Put x on the device first so the timed runs move device memory only.
  const staged = await copy.run({ x: randomTensor(dtype, [elements]) });
  const input = staged.y!;
  const seconds = await timeRuns(async () => {
    const out = await copy.run({ x: input });
    out.y!.dispose();
  }, 7);
  await copy.release();
  input.dispose();
  const bytesPerValue = dtype === "float32" ? 4 : 2;
  return (2 * elements * bytesPerValue) / seconds;
}
