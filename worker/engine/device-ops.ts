// Device-resident state for GPU providers, where tensors stay in GPU buffers between runs
// (`preferredOutputLocation: "gpu-buffer"`) and the host never reads them: small helper sessions that
// write LoRA bank rows (ScatterND) and regather the batch KV cache (Gather + Slice/Pad + Concat) on the
// device. onnxruntime-node cannot download a GPU tensor, so everything here stays on the device.
import { InferenceSession, Tensor } from "onnxruntime-node";
import type { BankSpec, BankStore } from "./bank-store.ts";
import { type ComputeDtype, type Device, sessionOptions } from "./device.ts";
import { float32ToFloat16 } from "./dtype.ts";
import { Graph } from "./graph.ts";
import type { KvRowSource, KvShape, KvTensors } from "./kv-cache.ts";
import { DataType } from "./onnx-proto.ts";

const OPSET = [{ domain: "", version: 18 }];

function elemType(dtype: ComputeDtype): DataType {
  return dtype === "float32" ? DataType.FLOAT : DataType.FLOAT16;
}

/** Where outputs stay: GPU buffers on a GPU; on CPU (tests of this code path) ordinary host tensors. */
export function residentLocation(device: Device): "gpu-buffer" | "cpu" {
  return device === "cpu" ? "cpu" : "gpu-buffer";
}

async function deviceSession(device: Device, graph: Graph): Promise<InferenceSession> {
  return InferenceSession.create(graph.encode(OPSET), {
    ...sessionOptions(device, 1),
    preferredOutputLocation: residentLocation(device),
  });
}

function zeros(dtype: ComputeDtype, dims: number[]): Tensor {
  const size = dims.reduce((a, b) => a * b, 1);
  return new Tensor(dtype, dtype === "float32" ? new Float32Array(size) : new Uint16Array(size), dims);
}

/** Bank rows written on the device: out = ScatterND(bank, rows, values); the old buffer is freed. */
export class DeviceBankStore implements BankStore {
  private readonly banks = new Map<string, { tensor: Tensor; width: number }>();

  private constructor(
    private readonly scatter: InferenceSession,
    private readonly dtype: ComputeDtype,
  ) {}

  static async create(device: Device, layout: BankSpec[], dtype: ComputeDtype): Promise<DeviceBankStore> {
    const g = new Graph();
    const bank = g.input("bank", elemType(dtype), ["rows", "width"]);
    const rows = g.input("rows", DataType.INT64, ["n", 1]);
    const values = g.input("values", elemType(dtype), ["n", "width"]);
    g.op("ScatterND", [bank, rows, values], {}, "out");
    g.output("out", elemType(dtype), ["rows", "width"]);
    const store = new DeviceBankStore(await deviceSession(device, g), dtype);
    for (const spec of layout) {
      // The first scatter uploads the zero bank and leaves it on the device.
      const tensor = await store.runScatter(
        zeros(dtype, [spec.rows, spec.width]),
        0,
        zeros(dtype, [1, spec.width]),
      );
      store.banks.set(spec.name, { tensor, width: spec.width });
    }
    return store;
  }

  async writeRows(name: string, firstRow: number, rowCount: number, values: Float32Array): Promise<void> {
    const bank = this.banks.get(name);
    if (!bank) throw new Error(`no LoRA bank named ${name}`);
    if (rowCount === 0) return;
    // onnxruntime refuses tensors over shared memory (parsed adapters are): slice() makes a plain copy.
    const data = this.dtype === "float32" ? values.slice() : float32ToFloat16(values);
    const updated = await this.runScatter(
      bank.tensor,
      firstRow,
      new Tensor(this.dtype, data, [rowCount, bank.width]),
    );
    bank.tensor.dispose();
    bank.tensor = updated;
  }

  tensors(): Record<string, Tensor> {
    return Object.fromEntries([...this.banks].map(([name, bank]) => [name, bank.tensor]));
  }

  rowsView(): Tensor {
    throw new Error("bank rows on a device cannot be viewed from the host: use segments or masked rows");
  }

  private async runScatter(bank: Tensor, firstRow: number, values: Tensor): Promise<Tensor> {
    const n = values.dims[0]!;
    const rows = new Tensor(
      "int64",
      BigInt64Array.from({ length: n }, (_, i) => BigInt(firstRow + i)),
      [n, 1],
    );
    const out = await this.scatter.run({ bank, rows, values });
    return out.out!;
  }
}

/** Regathers batch KV rows on the device: per source group Gather rows, fit the length, then Concat. */
export class DeviceKvOps {
  private constructor(
    private readonly gatherFit: InferenceSession,
    private readonly concat: InferenceSession,
    readonly location: "gpu-buffer" | "cpu",
  ) {}

  static async create(device: Device, dtype: ComputeDtype): Promise<DeviceKvOps> {
    const t = elemType(dtype);
    const g = new Graph();
    const x = g.input("x", t, ["b", "h", "p", "d"]);
    const rows = g.input("rows", DataType.INT64, ["n"]);
    const ends = g.input("ends", DataType.INT64, [1]);
    const pads = g.input("pads", DataType.INT64, [8]);
    const picked = g.op("Gather", [x, rows], { axis: 0 });
    const cut = g.op("Slice", [picked, g.constInt64([0]), ends, g.constInt64([2])]);
    g.op("Pad", [cut, pads], { mode: "constant" }, "out");
    g.output("out", t, ["n", "h", "c", "d"]);
    const c = new Graph();
    const a = c.input("a", t, ["m", "h", "c", "d"]);
    const b = c.input("b", t, ["n", "h", "c", "d"]);
    c.op("Concat", [a, b], { axis: 0 }, "out");
    c.output("out", t, ["mn", "h", "c", "d"]);
    return new DeviceKvOps(
      await deviceSession(device, g),
      await deviceSession(device, c),
      residentLocation(device),
    );
  }

  async gather(shape: KvShape, sources: KvRowSource[]): Promise<KvTensors> {
    const capacity = Math.max(0, ...sources.map((s) => s.length));
    const groups: { tensors: KvTensors; rows: number[] }[] = [];
    for (const source of sources) {
      const last = groups[groups.length - 1];
      if (last && last.tensors === source.tensors) last.rows.push(source.row);
      else groups.push({ tensors: source.tensors, rows: [source.row] });
    }
    const one = async (pick: (t: KvTensors) => Tensor): Promise<Tensor> => {
      let acc: Tensor | null = null;
      for (const group of groups) {
        const x = pick(group.tensors);
        const kept = Math.min(x.dims[2]!, capacity);
        const out = await this.gatherFit.run({
          x,
          rows: new Tensor("int64", BigInt64Array.from(group.rows, BigInt), [group.rows.length]),
          ends: new Tensor("int64", BigInt64Array.of(BigInt(kept)), [1]),
          pads: new Tensor(
            "int64",
            BigInt64Array.of(0n, 0n, 0n, 0n, 0n, 0n, BigInt(capacity - kept), 0n),
            [8],
          ),
        });
        const part = out.out!;
        if (!acc) {
          acc = part;
          continue;
        }
        const joined: Tensor = (await this.concat.run({ a: acc, b: part })).out!;
        acc.dispose();
        part.dispose();
        acc = joined;
      }
      return acc ?? zeros(shape.dtype, [0, shape.kvHeads, 0, shape.headDim]);
    };
    const keys: Tensor[] = [];
    const values: Tensor[] = [];
    for (let l = 0; l < shape.layers; l++) {
      keys.push(await one((t) => t.keys[l]!));
      values.push(await one((t) => t.values[l]!));
    }
    return { keys, values };
  }
}
