// The KV cache of the running batch: per layer, key and value tensors [B, kvHeads, P, headDim] whose row b
// holds sequence b's keys in positions [0, length_b) (GroupQueryAttention's right-padded layout, with
// ragged lengths given by seqlens_k). P is the cache's capacity: positions past a row's length are never
// read. A host cache stays in buffers the engine owns: each decode step fetches only the new token's rows
// (the graph's step outputs) and writes them in place, since onnxruntime-node would copy whole presents
// into fresh buffers. A device-resident cache instead takes each step's presents as the next pasts. The
// cache is rebuilt when the batch's membership changes (a prefilled sequence joins, one leaves) or a host
// cache runs out of capacity.
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

/** Capacity grows in steps of this many positions, so a host cache is rebuilt once per 64 decode steps. */
const CAPACITY_STEP = 64;

/** The capacity a host cache gets when its longest row must take `needed` positions. */
export function kvCapacity(needed: number, maxContext: number): number {
  return Math.min(maxContext, Math.ceil(needed / CAPACITY_STEP) * CAPACITY_STEP);
}

/**
 * Gathers rows from any mix of caches into one batch cache of `capacity` positions (default: the longest
 * row). Host memory.
 */
export function gatherKvRows(
  shape: KvShape,
  sources: KvRowSource[],
  capacity = Math.max(0, ...sources.map((s) => s.length)),
): KvTensors {
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

/** Writes each row's step key and value ([B, kvHeads, 1, headDim]) into `cache` at position `positions[b]`. */
export function writeStepRows(shape: KvShape, cache: KvTensors, step: KvTensors, positions: number[]): void {
  const write = (caches: Tensor[], steps: Tensor[]) => {
    for (let layer = 0; layer < shape.layers; layer++) {
      const target = caches[layer]!;
      const data = target.data as KvData;
      const rows = steps[layer]!.data as KvData;
      const capacity = target.dims[2]!;
      positions.forEach((position, b) => {
        for (let h = 0; h < shape.kvHeads; h++) {
          const from = (b * shape.kvHeads + h) * shape.headDim;
          const to = ((b * shape.kvHeads + h) * capacity + position) * shape.headDim;
          data.set(rows.subarray(from, from + shape.headDim), to);
        }
      });
    }
  };
  write(cache.keys, step.keys);
  write(cache.values, step.values);
}
