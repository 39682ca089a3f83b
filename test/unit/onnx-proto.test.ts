// The hand-written ONNX encoder, checked by the only reader that matters: onnxruntime loads what it
// writes and computes the expected numbers.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, describe, expect, it } from "vitest";
import { floatAttr, Graph } from "../../worker/engine/graph.ts";
import { DataType, encodeModel } from "../../worker/engine/onnx-proto.ts";

const dir = mkdtempSync(join(tmpdir(), "luminet-onnx-proto-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cpu: ort.InferenceSession.SessionOptions = { executionProviders: ["cpu"] };

describe("onnx-proto", () => {
  it("writes a model whose external weight, attributes and symbolic dims onnxruntime reads back", async () => {
    // A [2, 3] float weight at an odd offset inside a larger file, as in a safetensors file.
    const w = Float32Array.of(1, 2, 3, 4, 5, 6);
    const file = new Uint8Array(7 + w.byteLength + 5);
    file.set(new Uint8Array(w.buffer), 7);
    writeFileSync(join(dir, "weights.bin"), file);

    const g = new Graph();
    const x = g.input("x", DataType.FLOAT, ["tokens", 3]);
    const weight = g.initializer({
      name: "w",
      dataType: DataType.FLOAT,
      dims: [2, 3],
      external: { location: "weights.bin", offset: 7, length: w.byteLength },
    });
    const y = g.op("Gemm", [x, weight], { transB: 1, alpha: floatAttr(2) }); // [T, 2] = 2 * x wᵀ
    const leaky = g.op("LeakyRelu", [y], { alpha: 0.5 });
    const both = g.op("Concat", [leaky, g.op("Transpose", [leaky], { perm: [0, 1] })], { axis: -1 });
    g.op("Reshape", [both, g.constInt64([-1])], {}, "out");
    g.output("out", DataType.FLOAT, ["flat"]);
    const path = join(dir, "model.onnx");
    writeFileSync(path, g.encode([{ domain: "", version: 21 }]));

    const session = await ort.InferenceSession.create(path, cpu);
    expect(session.inputMetadata[0]).toMatchObject({ name: "x", type: "float32", shape: ["tokens", 3] });
    const out = await session.run({
      x: new ort.Tensor("float32", Float32Array.of(1, 0, -1, 0, 1, 0), [2, 3]),
    });
    // Row 0: 2*(1-3, 4-6) = (-4, -4) → leaky (-2, -2); row 1: 2*(2, 5) = (4, 10).
    expect(Array.from(out.out!.data as Float32Array)).toEqual([-2, -2, -2, -2, 4, 10, 4, 10]);
    await session.release();
  });

  it("encodes int64 initializers including negative values", async () => {
    const g = new Graph();
    const x = g.input("x", DataType.INT64, [3]);
    g.op("Add", [x, g.constInt64([-1, 2 ** 40, -(2 ** 40)])], {}, "y");
    g.output("y", DataType.INT64, [3]);
    const session = await ort.InferenceSession.create(g.encode([{ domain: "", version: 21 }]), cpu);
    const out = await session.run({ x: new ort.Tensor("int64", BigInt64Array.of(1n, 1n, 1n), [3]) });
    expect(Array.from(out.y!.data as BigInt64Array)).toEqual([0n, 2n ** 40n + 1n, 1n - 2n ** 40n]);
    await session.release();
  });

  it("refuses a tensor with both inline and external data, and a value defined twice", () => {
    const model = (raw: boolean) =>
      encodeModel({
        irVersion: 10,
        opsetImports: [{ domain: "", version: 21 }],
        producerName: "test",
        producerVersion: "0",
        graph: {
          name: "g",
          nodes: [],
          inputs: [],
          outputs: [],
          initializers: [
            {
              name: "t",
              dataType: DataType.FLOAT,
              dims: [1],
              ...(raw ? { rawData: new Uint8Array(4) } : {}),
              external: { location: "w.bin", offset: 0, length: 4 },
            },
          ],
        },
      });
    expect(() => model(true)).toThrow(/tensor t has both raw data and external data/);
    expect(model(false).length).toBeGreaterThan(0);
    const g = new Graph();
    g.input("x", DataType.FLOAT, [1]);
    expect(() => g.op("Relu", ["x"], {}, "x")).toThrow(/graph value x is defined twice/);
  });
});
