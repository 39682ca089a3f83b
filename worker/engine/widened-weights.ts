// F16/BF16 checkpoint tensors widened to float32 once, into a safetensors file beside the cached graphs,
// for graphs that compute in float32 (CPU). A Cast on an initializer would be folded at session load into
// a float32 copy per session, and the engine holds one session per graph variant; a widened file is
// memory-mapped instead, one copy in the page cache for every session. Widening is exact.
import { createHash } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { openWeights, type WeightIndex, writeSafetensors } from "./safetensors.ts";

/**
 * The index of `weights`' F16/BF16 tensors as float32, in `folder` (written there when missing; its name
 * hashes the source tensors and files), or null when every tensor is already float32 or not a float.
 */
export function widenedWeights(weights: WeightIndex, folder: string): WeightIndex | null {
  const narrow = weights
    .names()
    .filter((n) => ["F16", "BF16"].includes(weights.info(n).dtype))
    .sort();
  if (narrow.length === 0) return null;
  const sources = narrow.map((n) => {
    const t = weights.info(n);
    const st = statSync(t.file);
    return [n, t.relativeFile, t.dtype, t.offset, t.byteLength, st.size, st.mtimeMs];
  });
  const hash = createHash("sha256").update(JSON.stringify(sources)).digest("hex");
  const baseName = `.luminet-f32-${hash.slice(0, 24)}`;
  if (!existsSync(join(folder, `${baseName}.safetensors`))) {
    // One tensor in memory at a time; the file appears only once complete.
    writeSafetensors(
      join(folder, `${baseName}.safetensors`),
      narrow.map((name) => ({
        name,
        dtype: "F32",
        shape: weights.info(name).shape,
        data: () => [weights.readFloat32(name)],
      })),
    );
  }
  return openWeights(folder, baseName);
}
