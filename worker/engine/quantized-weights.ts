// 4-bit weights for the CPU engine (`--quantize q4`): each projection weight [out, in] (q, k, v, o, gate,
// up, down) and lm_head quantized in blocks of 32 along `in`, one float32 scale per block and the implicit zero point 8
// (values 0..15 stand for -8..7 scales), the layout of onnxruntime's MatMulNBits (bits 4, block_size 32):
// per row, each block's 32 values packed two to a byte, the even one in the low nibble. Written once into a
// safetensors file beside the cached graphs (its name hashes the source tensors), which every graph variant
// maps: about a sixth of float32's bytes (4 bits, and a 4-byte scale per 32 values). The embedding
// gather and the norms stay as they are.
import { createHash } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { openWeights, type WeightIndex, writeSafetensors } from "./safetensors.ts";

export const Q4_BLOCK = 32;
/** Bumped when the packing or the rounding changes, so cached files are rewritten. */
const Q4_FORMAT = 1;

export interface Q4Weight {
  /** [rows, cols / 32, 16] bytes. */
  packed: Uint8Array;
  /** [rows, cols / 32] */
  scales: Float32Array;
}

/** The names the packed bytes and the scales of weight `name` have in the quantized file. */
export const q4Names = (name: string) => ({ packed: `${name}.q4`, scales: `${name}.q4_scales` });

/** Quantizes a row-major [rows, cols] matrix; cols must be a multiple of 32. */
export function quantizeQ4(w: Float32Array, rows: number, cols: number): Q4Weight {
  if (cols % Q4_BLOCK !== 0) throw new RangeError(`q4 needs ${cols} columns to be a multiple of ${Q4_BLOCK}`);
  const blocks = cols / Q4_BLOCK;
  const packed = new Uint8Array((rows * cols) / 2);
  const scales = new Float32Array(rows * blocks);
  for (let b = 0; b < rows * blocks; b++) {
    const start = b * Q4_BLOCK;
    let amax = 0;
    for (let i = 0; i < Q4_BLOCK; i++) amax = Math.max(amax, Math.abs(w[start + i]!));
    // The largest magnitude maps to ±7; an all-zero block keeps scale 0 and codes 8.
    const scale = amax / 7;
    scales[b] = scale;
    const inverse = scale === 0 ? 0 : 1 / scale;
    for (let i = 0; i < Q4_BLOCK; i += 2) {
      const low = Math.round(w[start + i]! * inverse) + 8;
      const high = Math.round(w[start + i + 1]! * inverse) + 8;
      packed[(start + i) / 2] = low | (high << 4);
    }
  }
  return { packed, scales };
}

/** The float32 matrix a quantized weight stands for: what MatMulNBits multiplies by. */
export function dequantizeQ4(q: Q4Weight, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < out.length; i += 2) {
    const scale = Math.fround(q.scales[Math.floor(i / Q4_BLOCK)]!);
    const byte = q.packed[i / 2]!;
    out[i] = ((byte & 0xf) - 8) * scale;
    out[i + 1] = ((byte >> 4) - 8) * scale;
  }
  return out;
}

/**
 * The index of the quantized file for `names` (2-D float weights of `weights`) in `folder`, written there
 * when missing, one weight in memory at a time.
 */
export function quantizedWeights(
  weights: WeightIndex,
  names: readonly string[],
  folder: string,
): WeightIndex {
  const sorted = [...names].sort();
  const sources = sorted.map((n) => {
    const t = weights.info(n);
    const st = statSync(t.file);
    return [n, t.relativeFile, t.dtype, t.offset, t.byteLength, st.size, st.mtimeMs];
  });
  const hash = createHash("sha256")
    .update(JSON.stringify({ format: Q4_FORMAT, sources }))
    .digest("hex");
  const baseName = `.luminet-q4-${hash.slice(0, 24)}`;
  if (!existsSync(join(folder, `${baseName}.safetensors`))) {
    // A weight's packed bytes and scales are written one after the other: quantize it once for both.
    let last: { name: string; q: Q4Weight } | null = null;
    const quantized = (name: string) => {
      if (last?.name !== name) {
        const [rows, cols] = weights.info(name).shape as [number, number];
        last = { name, q: quantizeQ4(weights.readFloat32(name), rows, cols) };
      }
      return last.q;
    };
    writeSafetensors(
      join(folder, `${baseName}.safetensors`),
      sorted.flatMap((name) => {
        const [rows, cols] = weights.info(name).shape as [number, number];
        const names = q4Names(name);
        return [
          {
            name: names.packed,
            dtype: "U8" as const,
            shape: [rows, cols / Q4_BLOCK, Q4_BLOCK / 2],
            data: () => [quantized(name).packed],
          },
          {
            name: names.scales,
            dtype: "F32" as const,
            shape: [rows, cols / Q4_BLOCK],
            data: () => [quantized(name).scales],
          },
        ];
      }),
    );
  }
  return openWeights(folder, baseName);
}
