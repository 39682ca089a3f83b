// The KV cache of the running batch: per layer, key and value tensors [B, kvHeads, P, headDim] whose row b
// holds sequence b's keys in positions [0, length_b) (GroupQueryAttention's right-padded layout, with
// ragged lengths given by seqlens_k). A decode step's presents become the next step's pasts as they are;
// the cache is rebuilt only when the batch's membership changes (a prefilled sequence joins, one leaves).
import { Tensor } from "onnxruntime-node";
import type { ComputeDtype } from "./device.ts";

type KvData = Float32Array | Uint16Array;

/** One sequence's or one batch's cache: keys and values per layer. */
export interface KvTensors {
  keys: Tensor[];
  values: Tensor[];
}

export interface KvShape {
  layers: number;
  kvHeads: number;
  headDim: number;
  dtype: ComputeDtype;
}

/** A cache source for a rebuild: row `row` of `tensors`, holding `length` positions. */
export interface KvRowSource {
  tensors: KvTensors;
  row: number;
  length: number;
}

export function emptyKv(shape: KvShape, batch: number): KvTensors {
  const make = () => {
    const data = shape.dtype === "float32" ? new Float32Array(0) : new Uint16Array(0);
    return new Tensor(shape.dtype, data, [batch, shape.kvHeads, 0, shape.headDim]);
  };
  return {
    keys: Array.from({ length: shape.layers }, make),
    values: Array.from({ length: shape.layers }, make),
  };
}

/** Gathers rows from any mix of caches into one batch cache, padded to the longest row. Host memory. */
export function gatherKvRows(shape: KvShape, sources: KvRowSource[]): KvTensors {
  const capacity = Math.max(0, ...sources.map((s) => s.length));
  const gather = (pick: (t: KvTensors) => Tensor[]) =>
    Array.from({ length: shape.layers }, (_, layer) => {
      const size = sources.length * shape.kvHeads * capacity * shape.headDim;
      const data: KvData = shape.dtype === "float32" ? new Float32Array(size) : new Uint16Array(size);
      sources.forEach((source, b) => {
        const tensor = pick(source.tensors)[layer]!;
        const srcData = tensor.data as KvData;
        const srcCapacity = tensor.dims[2]!;
        const span = source.length * shape.headDim;
        for (let h = 0; h < shape.kvHeads; h++) {
          const from = (source.row * shape.kvHeads + h) * srcCapacity * shape.headDim;
          const to = (b * shape.kvHeads + h) * capacity * shape.headDim;
          data.set(srcData.subarray(from, from + span), to);
        }
      });
      return new Tensor(shape.dtype, data, [sources.length, shape.kvHeads, capacity, shape.headDim]);
    });
  return { keys: gather((t) => t.keys), values: gather((t) => t.values) };
}
