// The engine opens one onnxruntime session per graph variant. On CPU those sessions must not prepack the
// base weights (each would hold its own copy, as large as the weights: memory growing with the variant
// count); they read the weights memory-mapped from the safetensors file, one copy for all of them. And the
// thread pool of one must not spin on the cores while the next session runs.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, describe, expect, it } from "vitest";
import { sessionOptions } from "../../worker/engine/device.ts";
import { Graph } from "../../worker/engine/graph.ts";
import { DataType } from "../../worker/engine/onnx-proto.ts";

const dir = mkdtempSync(join(tmpdir(), "luminet-session-options-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("engine session options", () => {
  it("leave the weights unpacked on CPU unless asked, and stop every session's spinning when a run ends", () => {
    expect(sessionOptions("cpu", 2).extra).toEqual({
      session: { force_spinning_stop: "1", disable_prepacking: "1" },
    });
    expect(sessionOptions("cpu", 2, true).extra).toEqual({ session: { force_spinning_stop: "1" } });
    for (const device of ["webgpu", "cuda"] as const) {
      expect(sessionOptions(device, 2).extra).toEqual({ session: { force_spinning_stop: "1" } });
    }
  });

  it("compute the same Gemm over an external, memory-mapped weight with and without prepacking", async () => {
    // [out 24, in 40] at an odd offset, as a Linear weight inside a safetensors file.
    const inFeatures = 40;
    const outFeatures = 24;
    const w = Float32Array.from({ length: outFeatures * inFeatures }, (_, i) => ((i * 37) % 101) / 50 - 1);
    const file = new Uint8Array(3 + w.byteLength);
    file.set(new Uint8Array(w.buffer), 3);
    writeFileSync(join(dir, "weights.bin"), file);
    const g = new Graph();
    const x = g.input("x", DataType.FLOAT, ["tokens", inFeatures]);
    const weight = g.initializer({
      name: "w",
      dataType: DataType.FLOAT,
      dims: [outFeatures, inFeatures],
      external: { location: "weights.bin", offset: 3, length: w.byteLength },
    });
    g.op("Gemm", [x, weight], { transB: 1 }, "y");
    g.output("y", DataType.FLOAT, ["tokens", outFeatures]);
    const path = join(dir, "gemm.onnx");
    writeFileSync(path, g.encode([{ domain: "", version: 21 }]));

    const rows = 9;
    const input = Float32Array.from({ length: rows * inFeatures }, (_, i) => ((i * 13) % 17) / 8 - 1);
    const expected = new Float32Array(rows * outFeatures);
    for (let r = 0; r < rows; r++)
      for (let o = 0; o < outFeatures; o++)
        for (let i = 0; i < inFeatures; i++)
          expected[r * outFeatures + o]! += input[r * inFeatures + i]! * w[o * inFeatures + i]!;
    for (const prepack of [false, true]) {
      const session = await ort.InferenceSession.create(path, sessionOptions("cpu", 1, prepack));
      const out = await session.run({ x: new ort.Tensor("float32", input, [rows, inFeatures]) });
      const y = out.y!.data as Float32Array;
      for (let i = 0; i < expected.length; i++) expect(y[i]).toBeCloseTo(expected[i]!, 4);
      await session.release();
    }
  });
});
