// The correctness oracle for LoRA: a copy of a model folder whose weights are merged, W + scale·B·A, so the
// plain base graph on it computes what the adapter banks should compute. (A lora bias has no place in a
// merged Llama: compare such adapters with the reference forward instead.)
import { copyFileSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { LoadedAdapter } from "../../worker/adapters/peft.ts";
import { weightName } from "../../worker/engine/model-config.ts";
import { openWeights, writeSafetensors } from "../../worker/engine/safetensors.ts";

export function writeMergedModel(modelDir: string, adapter: LoadedAdapter, outDir: string): string {
  mkdirSync(outDir, { recursive: true });
  for (const file of readdirSync(modelDir))
    if (file.endsWith(".json")) copyFileSync(join(modelDir, file), join(outDir, file));
  const weights = openWeights(modelDir);
  const modules = new Map(adapter.modules.map((m) => [weightName(m.layer, m.kind), m]));
  const tensors = weights.names().map((name) => {
    const data = weights.readFloat32(name);
    const m = modules.get(name);
    if (m) {
      if (m.scaledBias) throw new Error(`${name}: a lora bias cannot be merged into a bias-free Linear`);
      for (let o = 0; o < m.outFeatures; o++) {
        for (let i = 0; i < m.inFeatures; i++) {
          let sum = 0;
          for (let r = 0; r < m.rank; r++)
            sum += m.scaledBT[r * m.outFeatures + o]! * m.a[r * m.inFeatures + i]!;
          data[o * m.inFeatures + i]! += sum;
        }
      }
    }
    return { name, dtype: "F32" as const, shape: weights.info(name).shape, data };
  });
  writeSafetensors(join(outDir, "model.safetensors"), tensors);
  return outDir;
}
